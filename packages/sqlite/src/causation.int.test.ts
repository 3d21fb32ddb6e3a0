import assert from 'node:assert/strict';
import { test } from 'node:test';
import { z } from 'zod';
import { type CausationNode, createConsumer, createPublisher, defineCommand, defineEvent, PermanentError, recordHandling } from '@herald/core';
import { waitFor } from '@herald/testkit';
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
    await ctx.transaction(() => undefined);
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
  const charge = place!.children[0]!.children[0]!;
  const failure = charge.handlers.find((h) => h.from === 'dead letter')!;
  assert.deepEqual([failure.group, failure.handler, failure.error, failure.attempts], ['bank', 'payment.requested', 'card declined', 1]);
  assert.ok(charge.where.some((w) => w.startsWith('dead letter #')));
  await transport.close();
  await deadLetters.close();
  await uow.close();
});
