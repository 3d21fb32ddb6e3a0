import assert from 'node:assert/strict';
import { test } from 'node:test';
import { z } from 'zod';
import { type CausationNode, createConsumer, createPublisher, defineCommand, defineEvent, PermanentError, recordHandling } from '@herald/core';
import { sleep, waitFor } from '@herald/testkit';
import { createSqliteTransport, createSqliteUnitOfWork, openDatabase, SqliteDeadLetterStore, sqliteCausationGraph } from './index.ts';
import { tempDbPath } from './test-helpers.ts';

test('the causation graph of a correlation id from the file: who caused what, which handler took it, which failed and why', async (t) => {
  const { path, cleanup } = tempDbPath();
  t.after(cleanup);
  const Place = defineCommand('order.place', z.object({ orderId: z.string() }), { topic: 'commands', keyField: 'orderId' });
  const Placed = defineEvent('order.placed', z.object({ orderId: z.string() }), { topic: 'orders', keyField: 'orderId' });
  const Charge = defineEvent('payment.requested', z.object({ orderId: z.string() }), { topic: 'payments', keyField: 'orderId' });
  const transport = createSqliteTransport({ path, pollMs: 5 });
  const deadLetters = new SqliteDeadLetterStore({ path });
  const uow = createSqliteUnitOfWork({ path });
  const publisher = createPublisher({ transport, source: 'shop' });
  const recorder = recordHandling();
  const orders = createConsumer({ transport, group: 'orders', deadLetters, unitOfWork: uow });
  orders.handle(Place, async (cmd, ctx) => {
    await ctx.transaction(() => sleep(30)); // a handler that takes ≥ 30 ms in its inbox transaction
    await publisher.publish(Placed, cmd, { causedBy: ctx.envelope });
  });
  const billing = createConsumer({ transport, group: 'billing', deadLetters, unitOfWork: uow });
  billing.handle(Placed, async (e, ctx) => {
    await ctx.transaction(() => undefined);
    await publisher.publish(Charge, e, { causedBy: ctx.envelope });
  });
  const bank = createConsumer({ transport, group: 'bank', deadLetters });
  bank.handle(Charge, () => {
    throw new PermanentError('card declined');
  });
  for (const c of [orders, billing, bank]) await c.start();
  await publisher.publish(Place, { orderId: 'o-1' }, { id: 'cmd-1' });
  await publisher.publish(Place, { orderId: 'o-2' }, { id: 'cmd-2' }); // another correlation, not in the graph
  await waitFor(async () => (await deadLetters.count({ group: 'bank' })) === 2, { timeoutMs: 5000 });
  for (const c of [orders, billing, bank]) await c.close();
  recorder.close();

  const database = openDatabase({ path });
  t.after(() => database.close());
  const g = sqliteCausationGraph(database, 'cmd-1', { extra: recorder.records('cmd-1') });
  assert.equal(g.size, 3);
  assert.deepEqual(g.missing, []);
  const flat = (n: CausationNode, depth = 0): string[] => [`${'  '.repeat(depth)}${n.type}${n.failed ? ' FAILED' : ''}`, ...n.children.flatMap((c) => flat(c, depth + 1))];
  assert.deepEqual(g.roots.flatMap((r) => flat(r)), ['order.place', '  order.placed', '    payment.requested FAILED']);
  const [place] = g.roots;
  assert.equal(place!.id, 'cmd-1');
  assert.equal(place!.source, 'shop');
  assert.ok(place!.where.some((w) => w.startsWith('topic commands/')));
  assert.deepEqual(
    place!.handlers.map((h) => [h.from, h.group, h.handler, h.failed]).sort(),
    [
      ['inbox', 'orders', 'order.place', false],
      ['this process', 'orders', 'order.place', false],
    ],
  );
  assert.ok(place!.handlers.find((h) => h.from === 'this process')!.durationMs! >= 0);
  // Durable: the inbox row keeps the attempt's duration, read back from the file.
  const inboxDuration = place!.handlers.find((h) => h.from === 'inbox')!.durationMs;
  assert.ok(inboxDuration !== undefined && inboxDuration >= 25 && inboxDuration < 5000, `inbox duration ${inboxDuration} ms covers the handler's 30 ms`);
  const charge = place!.children[0]!.children[0]!;
  const failure = charge.handlers.find((h) => h.from === 'dead letter')!;
  assert.deepEqual([failure.group, failure.handler, failure.error, failure.attempts], ['bank', 'payment.requested', 'card declined', 1]);
  assert.ok(charge.where.some((w) => w.startsWith('dead letter #')));
  await transport.close();
  await deadLetters.close();
  await uow.close();
});

test('a file from before inbox durations is upgraded in place: old records read with no duration, new ones with theirs', async (t) => {
  const { path, cleanup } = tempDbPath();
  t.after(cleanup);
  // Make the file an herald_outbox version-1 file: no duration_ms column, one record handled then.
  const old = openDatabase({ path });
  old.db.exec(`ALTER TABLE herald_inbox DROP COLUMN duration_ms; UPDATE herald_meta SET version = 1 WHERE component = 'herald_outbox'`);
  old.db.prepare(`INSERT INTO herald_inbox (grp, handler, source, id, handled_at) VALUES ('g', 'h', 'shop', 'old-1', 1000)`).run();
  old.close();

  const database = openDatabase({ path });
  t.after(() => database.close());
  assert.equal(database.schemaVersion('herald_outbox'), 2);
  const columns = (database.db.prepare(`SELECT name FROM pragma_table_info('herald_inbox')`).all() as { name: string }[]).map((c) => c.name);
  assert.ok(columns.includes('duration_ms'), `herald_inbox columns after the upgrade: ${columns.join(', ')}`);
  openDatabase({ path }).close(); // opening an upgraded file again changes nothing (and does not fail)

  const uow = createSqliteUnitOfWork({ path });
  t.after(() => uow.close());
  assert.deepEqual(await uow.inboxRecord({ group: 'g', handler: 'h', source: 'shop', id: 'old-1' }), { handledAt: 1000, durationMs: undefined });
  await uow.withInbox({ group: 'g', handler: 'h', source: 'shop', id: 'new-1', startedAt: Date.now() - 40 }, () => undefined);
  const fresh = await uow.inboxRecord({ group: 'g', handler: 'h', source: 'shop', id: 'new-1' });
  assert.ok(fresh?.durationMs !== undefined && fresh.durationMs >= 40 && fresh.durationMs < 5000, `new record: ${JSON.stringify(fresh)}`);
});
