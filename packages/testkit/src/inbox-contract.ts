/**
 * The inbox contract: what every unit of work's inbox (memory, SQLite, PostgreSQL) must do
 * for "a redelivered message has no second effect": the handler's writes and the message's
 * inbox key (group, handler, source, id) commit together; a recorded key skips the callback.
 *
 *   describeInboxContract('sqlite', async ({ clock }) => { … a UnitOfWorkHarness … });
 *
 * See `UnitOfWorkHarness`. The last scenario runs the consumer runtime (memory transport) on
 * the backend's unit of work through `ctx.transaction`.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { type Clock, createConsumer, createEnvelope, type InboxKey, isHeraldError, MemoryDeadLetterStore, MemoryTransport, systemClock } from '@herald/core';
import { sleep, uniqueName, waitFor, withScope, type Scope } from './helpers.ts';
import { ManualClock } from './manual-clock.ts';
import { SETTLE_MS } from './transport-harness.ts';
import { contractMessage, type UnitOfWorkFactory, type UnitOfWorkHarness } from './unit-of-work-harness.ts';

export type InboxScenario = (factory: UnitOfWorkFactory) => Promise<void>;

interface Ctx {
  readonly h: UnitOfWorkHarness;
  readonly scope: Scope;
  readonly clock: Clock;
  readonly run: string;
  key(over?: Partial<InboxKey>): InboxKey;
}

async function run(factory: UnitOfWorkFactory, body: (c: Ctx) => Promise<void>, clock: Clock = systemClock): Promise<void> {
  await withScope(async (scope) => {
    const h = await factory({ clock });
    scope.defer('unit of work close', () => h.close());
    const runId = randomUUID().slice(0, 8);
    const group = uniqueName('g');
    await body({
      h,
      scope,
      clock,
      run: runId,
      key: (over = {}) => ({ group, handler: 'onOrderPlaced', source: 'urn:herald:orders', id: `${runId}-msg-1`, ...over }),
    });
  });
}

// ── scenarios ──────────────────────────────────────────────────────────────

/** The first withInbox runs and records; the same key again skips the callback, returns duplicate, and the first effect stays. */
export const duplicateNotAppliedTwice: InboxScenario = (factory) =>
  run(factory, async (c) => {
    const key = c.key();
    assert.equal(await c.h.uow.inboxHas(key), false);
    const first = await c.h.uow.withInbox(key, async (tx) => {
      await c.h.put(tx, 'balance', '100');
      return 'applied';
    });
    assert.deepEqual(first, { duplicate: false, value: 'applied' });
    assert.equal(await c.h.uow.inboxHas(key), true, 'the key is recorded with the commit');
    let ran = false;
    const second = await c.h.uow.withInbox(key, async (tx) => {
      ran = true;
      await c.h.put(tx, 'balance', '200');
      return 'applied again';
    });
    assert.deepEqual(second, { duplicate: true });
    assert.equal(ran, false, 'the callback does not run for a recorded key');
    assert.equal(await c.h.get('balance'), '100', 'one effect');
  });

/** A callback that throws rolls back its writes and does not record the key: the retry applies. */
export const rollbackDoesNotRecord: InboxScenario = (factory) =>
  run(factory, async (c) => {
    const key = c.key();
    const boom = new Error('handler failed');
    await assert.rejects(
      c.h.uow.withInbox(key, async (tx) => {
        await c.h.put(tx, 'stock', '9');
        throw boom;
      }),
      (e) => e === boom,
    );
    assert.equal(await c.h.uow.inboxHas(key), false, 'a rolled-back transaction records nothing');
    assert.equal(await c.h.get('stock'), undefined);
    const retry = await c.h.uow.withInbox(key, async (tx) => {
      await c.h.put(tx, 'stock', '9');
      return 1;
    });
    assert.equal(retry.duplicate, false, 'the retry runs');
    assert.equal(await c.h.get('stock'), '9');
  });

/** Concurrent attempts with the same key: exactly one effect; the others are duplicates (or fail retryably, never a second effect). */
export const concurrentSameIdOneEffect: InboxScenario = (factory) =>
  run(factory, async (c) => {
    const key = c.key();
    const n = 8;
    const results = await Promise.allSettled(
      Array.from({ length: n }, (_, i) =>
        c.h.uow.withInbox(key, async (tx) => {
          await c.h.put(tx, `effect-${i}`, 'done');
          await sleep(2);
          return i;
        }),
      ),
    );
    const applied = results.filter((r) => r.status === 'fulfilled' && !r.value.duplicate);
    const dups = results.filter((r) => r.status === 'fulfilled' && r.value.duplicate);
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    for (const f of failed) assert.ok(isHeraldError(f.reason) && f.reason.retryable, `a concurrent attempt may only fail retryably (got ${String(f.reason)})`);
    assert.equal(applied.length, 1, `exactly one attempt applies (applied ${applied.length}, duplicates ${dups.length}, failed ${failed.length})`);
    let effects = 0;
    for (let i = 0; i < n; i++) if ((await c.h.get(`effect-${i}`)) !== undefined) effects++;
    assert.equal(effects, 1, 'exactly one effect is committed');
  });

/** The key is (group, handler, source, id): changing any part is a different message. */
export const keyIsGroupHandlerSourceId: InboxScenario = (factory) =>
  run(factory, async (c) => {
    const base = c.key();
    await c.h.uow.withInbox(base, () => 'x');
    for (const over of [{ group: uniqueName('g') }, { handler: 'otherHandler' }, { source: 'urn:herald:other' }, { id: `${c.run}-msg-2` }]) {
      const k = c.key(over);
      assert.equal(await c.h.uow.inboxHas(k), false, `${JSON.stringify(over)} is another key`);
      assert.equal((await c.h.uow.withInbox(k, () => 'y')).duplicate, false, `${JSON.stringify(over)} applies`);
    }
    assert.equal((await c.h.uow.withInbox(base, () => 'z')).duplicate, true);
  });

/** Outbox rows written in an inbox transaction commit with it; a duplicate writes none. */
export const inboxWithOutbox: InboxScenario = (factory) =>
  run(factory, async (c) => {
    const key = c.key();
    const topic = uniqueName('t');
    for (let i = 0; i < 2; i++) {
      await c.h.uow.withInbox(key, async (tx) => {
        await c.h.put(tx, 'reserved', 'yes');
        tx.publish(topic, contractMessage(c.run, 'order-1', i));
      });
    }
    assert.equal((await c.h.outbox.backlog()).count, 1, 'one outbox row: the duplicate published nothing');
  });

/** purgeInbox deletes records older than the given time; a purged key applies again (the documented retention bound). */
export const purgeInboxByAge: InboxScenario = (factory) => {
  const clock = new ManualClock();
  return run(
    factory,
    async (c) => {
      const old = c.key({ id: `${c.run}-old` });
      await c.h.uow.withInbox(old, () => 1);
      const t0 = clock.now();
      await clock.advance(60_000);
      const recent = c.key({ id: `${c.run}-recent` });
      await c.h.uow.withInbox(recent, () => 1);
      assert.equal(await c.h.uow.purgeInbox(t0), 0, 'a record made at t0 is not older than t0');
      assert.equal(await c.h.uow.purgeInbox(t0 + 1), 1, 'the old record');
      assert.equal(await c.h.uow.inboxHas(old), false);
      assert.equal(await c.h.uow.inboxHas(recent), true, 'the recent record stays');
      assert.equal((await c.h.uow.withInbox(old, () => 2)).duplicate, false, 'past retention a redelivery applies again');
    },
    clock,
  );
};

/** Through the consumer runtime: a message delivered twice has one effect; the second is counted in inboxDuplicates and acked. */
export const consumerCountsDuplicates: InboxScenario = (factory) =>
  run(factory, async (c) => {
    const transport = new MemoryTransport();
    c.scope.defer('transport close', () => transport.close());
    const topic = uniqueName('t');
    let calls = 0;
    const consumer = createConsumer({ transport, group: uniqueName('g'), deadLetters: new MemoryDeadLetterStore(), unitOfWork: c.h.uow });
    c.scope.defer('consumer close', () => consumer.close({ timeoutMs: 1000 }));
    consumer.handleEnvelope(
      topic,
      'contract.credited',
      async (envelope, ctx) => {
        calls++;
        const r = await ctx.transaction(async (tx) => {
          const data = envelope.data as { account: string; amount: number };
          await c.h.put(tx, data.account, String(data.amount));
          return data.amount;
        });
        if (!r.duplicate) assert.equal(r.value, 5);
      },
      { name: 'credit' },
    );
    await consumer.start();
    const envelope = createEnvelope({ type: 'contract.credited', source: 'urn:herald:bank', id: `${c.run}-credit`, data: { account: `acct-${c.run}`, amount: 5 }, partitionkey: 'acct' });
    await transport.publish(topic, [{ envelope, key: 'acct' }]);
    await transport.publish(topic, [{ envelope, key: 'acct' }]); // a redelivery, as a broker would
    await waitFor(() => consumer.stats().handled === 2, { timeoutMs: 3000, what: () => `both deliveries handled (stats ${JSON.stringify(consumer.stats())})` });
    await sleep(SETTLE_MS);
    const s = consumer.stats();
    assert.equal(calls, 2, 'the handler ran for both deliveries');
    assert.equal(s.inboxDuplicates, 1, 'the second was a counted duplicate');
    assert.equal(s.deadLettered, 0);
    assert.equal(await c.h.get(`acct-${c.run}`), '5');
    assert.equal(await c.h.uow.inboxHas({ group: consumer.describe().group, handler: 'credit', source: 'urn:herald:bank', id: `${c.run}-credit` }), true, 'the key is (group, handler name, source, id)');
  });

/**
 * A handler taking ~50 ms inside `ctx.transaction` leaves a record whose duration (from the
 * attempt's start, measured to the end of the callback) is ≥ 50 ms and < 5 s; a key without
 * `startedAt` records no duration.
 */
export const inboxRecordsDuration: InboxScenario = (factory) =>
  run(factory, async (c) => {
    const transport = new MemoryTransport();
    c.scope.defer('transport close', () => transport.close());
    const topic = uniqueName('t');
    const group = uniqueName('g');
    const consumer = createConsumer({ transport, group, deadLetters: new MemoryDeadLetterStore(), unitOfWork: c.h.uow });
    c.scope.defer('consumer close', () => consumer.close({ timeoutMs: 1000 }));
    consumer.handleEnvelope(
      topic,
      'contract.slow',
      async (_envelope, ctx) => {
        await ctx.transaction(async (tx) => {
          await c.h.put(tx, `slow-${c.run}`, 'done');
          await sleep(60); // ≥ 50 ms even where a timer fires a millisecond early
        });
      },
      { name: 'slow' },
    );
    await consumer.start();
    const envelope = createEnvelope({ type: 'contract.slow', source: 'urn:herald:slow', id: `${c.run}-slow`, data: {} });
    await transport.publish(topic, [{ envelope }]);
    await waitFor(() => consumer.stats().handled === 1, { timeoutMs: 5000, what: () => `the slow message handled (stats ${JSON.stringify(consumer.stats())})` });
    const record = await c.h.uow.inboxRecord({ group, handler: 'slow', source: 'urn:herald:slow', id: `${c.run}-slow` });
    assert.ok(record, 'the handled message is recorded');
    assert.equal(typeof record.durationMs, 'number', `the record keeps the attempt's duration (got ${JSON.stringify(record)})`);
    assert.ok(record.durationMs! >= 50, `duration ${record.durationMs} ms covers the handler's 50 ms`);
    assert.ok(record.durationMs! < 5000, `duration ${record.durationMs} ms is the attempt's, not an epoch`);
    assert.equal(typeof record.handledAt, 'number');
    const bare = c.key({ id: `${c.run}-bare` });
    await c.h.uow.withInbox(bare, () => 1);
    assert.deepEqual({ ...(await c.h.uow.inboxRecord(bare)), handledAt: 0 }, { handledAt: 0, durationMs: undefined }, 'no startedAt, no duration');
    assert.equal(await c.h.uow.inboxRecord(c.key({ id: `${c.run}-never` })), undefined, 'an unrecorded key has no record');
    await assert.rejects(
      c.h.uow.withInbox(c.key({ id: `${c.run}-bad-start`, startedAt: Number.NaN }), () => 1),
      (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && /startedAt/.test(e.message),
    );
  });

export const inboxScenarios: Readonly<Record<string, InboxScenario>> = {
  'a duplicate id is not applied twice': duplicateNotAppliedTwice,
  'a rollback does not record the id': rollbackDoesNotRecord,
  'concurrent attempts with one id: one effect': concurrentSameIdOneEffect,
  'the key is group, handler, source and id': keyIsGroupHandlerSourceId,
  'outbox rows commit with the inbox record': inboxWithOutbox,
  'purgeInbox by age': purgeInboxByAge,
  'the consumer counts duplicates': consumerCountsDuplicates,
  'a record keeps the handler attempt duration': inboxRecordsDuration,
};

export function describeInboxContract(name: string, factory: UnitOfWorkFactory): void {
  describe(`inbox contract: ${name}`, () => {
    for (const [title, scenario] of Object.entries(inboxScenarios)) it(title, () => scenario(factory));
  });
}
