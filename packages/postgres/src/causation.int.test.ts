// The causation graph of a correlation id read from PostgreSQL (127.0.0.1:5432, database `test`,
// one fresh schema per test): event store, transport log, inbox (with durations), dead letters.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { z } from 'zod';
import { buildCausationGraph, type CausationNode, createConsumer, createPublisher, defineCommand, defineEvent, PermanentError } from '@herald/core';
import { serverSkipReason, sleep, waitFor } from '@herald/testkit';
import { readPostgresCausation } from './causation.ts';
import { PostgresDeadLetterStore } from './dead-letter-store.ts';
import { createPostgresEventStore } from './event-store.ts';
import { freshDatabase, PG_PORT } from './test-helpers.ts';
import { createPostgresTransport } from './transport.ts';
import { createPostgresUnitOfWork } from './unit-of-work.ts';

const skip = await serverSkipReason('PostgreSQL', PG_PORT);
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

describe('postgres causation', { skip }, () => {
  it('the graph of a correlation id: the stored event, the message it caused, the inbox handler with its duration, the failed handler with its error', async () => {
    const { database, cleanup } = freshDatabase({ max: 6 });
    cleanups.push(cleanup);
    const correlation = `corr-${randomUUID()}`;
    const Confirm = defineCommand('order.confirm', z.object({ orderId: z.string() }), { topic: 'commands', keyField: 'orderId' });
    const Charge = defineEvent('payment.requested', z.object({ orderId: z.string() }), { topic: 'payments', keyField: 'orderId' });
    const eventStore = createPostgresEventStore({ database });
    const transport = createPostgresTransport({ database, pollMs: 5 });
    const deadLetters = new PostgresDeadLetterStore({ database });
    const uow = createPostgresUnitOfWork({ database });
    const publisher = createPublisher({ transport, source: 'shop' });
    const orders = createConsumer({ transport, group: 'orders', deadLetters, unitOfWork: uow });
    orders.handle(Confirm, async (cmd, ctx) => {
      await ctx.transaction(() => sleep(30)); // ≥ 30 ms inside its inbox transaction
      await publisher.publish(Charge, cmd, { causedBy: ctx.envelope });
    });
    const bank = createConsumer({ transport, group: 'bank', deadLetters });
    bank.handle(Charge, () => {
      throw new PermanentError('card declined');
    });
    for (const c of [orders, bank]) await c.start();

    // The root: an event in the store; the command it caused goes through the transport.
    await eventStore.appendToStream('order-1', [{ id: `placed-${correlation}`, type: 'OrderPlaced', data: { orderId: 'o-1' }, correlationId: correlation }]);
    await publisher.publish(Confirm, { orderId: 'o-1' }, { id: `confirm-${correlation}`, correlationid: correlation, causationid: `placed-${correlation}` });
    await publisher.publish(Confirm, { orderId: 'o-2' }, { id: `other-${correlation}` }); // its own correlation: not in the graph
    await waitFor(async () => (await deadLetters.count({ group: 'bank' })) === 2, { timeoutMs: 10_000 });
    for (const c of [orders, bank]) await c.close();

    const { messages, handlings } = await readPostgresCausation(database, correlation);
    const g = buildCausationGraph(correlation, messages, handlings);
    assert.equal(g.size, 3);
    assert.deepEqual(g.missing, []);
    const flat = (n: CausationNode, depth = 0): string[] => [`${'  '.repeat(depth)}${n.type}${n.failed ? ' FAILED' : ''}`, ...n.children.flatMap((c) => flat(c, depth + 1))];
    assert.deepEqual(g.roots.flatMap((r) => flat(r)), ['OrderPlaced', '  order.confirm', '    payment.requested FAILED']);
    const [placed] = g.roots;
    assert.deepEqual(placed!.where, ['stream order-1@1']);
    const confirm = placed!.children[0]!;
    assert.equal(confirm.id, `confirm-${correlation}`);
    assert.equal(confirm.source, 'shop');
    assert.ok(confirm.where.some((w) => w.startsWith('topic commands/')), confirm.where.join());
    assert.deepEqual(confirm.handlers.map((h) => [h.from, h.group, h.handler, h.failed]), [['inbox', 'orders', 'order.confirm', false]]);
    const duration = confirm.handlers[0]!.durationMs;
    assert.ok(duration !== undefined && duration >= 30 && duration < 5000, `inbox duration ${duration} ms covers the handler's 30 ms`);
    const charge = confirm.children[0]!;
    assert.ok(charge.where.some((w) => w.startsWith('topic payments/')) && charge.where.some((w) => w.startsWith('dead letter #')), charge.where.join());
    const failure = charge.handlers.find((h) => h.from === 'dead letter')!;
    assert.deepEqual([failure.group, failure.handler, failure.failed, failure.error, failure.attempts], ['bank', 'payment.requested', true, 'card declined', 1]);

    // Bounded per source: one row of each.
    const one = await readPostgresCausation(database, correlation, { limit: 1 });
    assert.ok(one.messages.filter((m) => m.where.startsWith('topic ')).length === 1);
    await assert.rejects(readPostgresCausation(database, correlation, { limit: 0 }), { code: 'HERALD_ERR_INVALID_ARGUMENT' });
    await transport.close();
    await deadLetters.close();
    await uow.close();
    await eventStore.close();
  });

  it('a schema with only the transport (no event store, no inbox) reads what it has', async () => {
    const { database, cleanup } = freshDatabase();
    cleanups.push(cleanup);
    const transport = createPostgresTransport({ database });
    const Ping = defineEvent('ping', z.object({ n: z.number() }), { topic: 'pings' });
    await createPublisher({ transport, source: 'test' }).publish(Ping, { n: 1 }, { id: 'p-1' });
    await transport.close();
    const exists = await database.query<{ ok: boolean }>(`SELECT to_regclass('herald_inbox') IS NOT NULL AND to_regclass('herald_es_events') IS NOT NULL AS ok`);
    assert.equal(exists.rows[0]!.ok, false, 'the schema has no inbox or event store');
    const { messages, handlings } = await readPostgresCausation(database, 'p-1');
    assert.deepEqual(messages.map((m) => [m.id, m.type]), [['p-1', 'ping']]);
    assert.deepEqual(handlings, []);
  });
});
