/**
 * The scheduler contract: what every SchedulerStore (memory, SQLite, PostgreSQL) must do,
 * with the core scheduler on top, for delayed publishing: a due message fires once (in the
 * normal case), never before its time on the injected clock, in deliverAt order, durably
 * across a restart; cancel and idempotent ids work.
 *
 *   describeSchedulerContract('sqlite', async ({ clock }) => { … a UnitOfWorkHarness … });
 *
 * Every scenario runs on a `ManualClock` (the factory must use it for its leases). See
 * `UnitOfWorkHarness`.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { createScheduler, isHeraldError, type OutgoingMessage, type Scheduler, type SchedulerOptions, type SchedulerStore } from '@herald/core';
import { assertDelivered, sleep, uniqueName, waitFor, type WaitForOptions, withScope, type Scope } from './helpers.ts';
import { ManualClock } from './manual-clock.ts';
import { SETTLE_MS } from './transport-harness.ts';
import { contractMessage, PublishLog, startOn, type UnitOfWorkFactory, type UnitOfWorkHarness } from './unit-of-work-harness.ts';

export type SchedulerScenario = (factory: UnitOfWorkFactory) => Promise<void>;

const WAIT_MS = 5000;
/** Long enough that no lease expires while a scenario moves the clock. */
const LEASE_MS = 600_000;

interface Ctx {
  readonly h: UnitOfWorkHarness;
  readonly scope: Scope;
  readonly clock: ManualClock;
  readonly log: PublishLog;
  readonly topic: string;
  /** A started scheduler (label = member and transport view). */
  scheduler(label: string, over?: Partial<SchedulerOptions> & { harness?: UnitOfWorkHarness }): Promise<Scheduler>;
  message(n: number, key?: string): OutgoingMessage;
  /** Moves the clock, then lets the scheduler's store calls and publishes settle (real time). */
  advance(ms: number): Promise<void>;
  /**
   * `waitFor`, advancing the clock by 0 on each poll: a timer the scheduler armed, after a slow
   * store call, for a time the clock has already reached fires (time itself does not move).
   */
  waitFor(cond: () => unknown, options: WaitForOptions): Promise<void>;
}

async function run(factory: UnitOfWorkFactory, body: (c: Ctx) => Promise<void>): Promise<void> {
  await withScope(async (scope) => {
    const clock = new ManualClock();
    const h = await factory({ clock });
    scope.defer('unit of work close', () => h.close());
    const pending = await h.scheduler.pendingCount();
    assert.equal(pending, 0, `the factory must return an empty scheduler store (it holds ${pending} messages)`);
    const runId = randomUUID().slice(0, 8);
    const log = new PublishLog();
    const name = uniqueName('scheduler');
    const ctx: Ctx = {
      h,
      scope,
      clock,
      log,
      topic: uniqueName('t'),
      async scheduler(label, over = {}) {
        const { harness, ...rest } = over;
        const s = createScheduler({
          store: (harness ?? h).scheduler,
          leases: (harness ?? h).leases,
          transport: log.transport(label),
          name,
          clock,
          memberId: `${label}-${runId}`,
          leaseMs: LEASE_MS,
          pollMs: 1000,
          ...rest,
        });
        scope.defer(`scheduler ${label} close`, () => s.close({ timeoutMs: 1000 }));
        await startOn(clock, () => s.start());
        return s;
      },
      message: (n, key) => contractMessage(runId, key, n, clock.now()),
      async advance(ms) {
        await clock.advance(ms);
        await sleep(20);
      },
      async waitFor(cond, options) {
        await waitFor(async () => {
          await clock.advance(0);
          return cond();
        }, options);
      },
    };
    await body(ctx);
  });
}

async function schedule(store: SchedulerStore, topic: string, message: OutgoingMessage, deliverAt: number, id?: string): Promise<string> {
  const [got] = await store.schedule([{ topic, message, deliverAt, ...(id !== undefined ? { id } : {}) }]);
  return got!;
}

// ── scenarios ──────────────────────────────────────────────────────────────

/** A message fires once its deliverAt is reached on the clock — not a millisecond before — and only once. */
export const firesOnceNotBefore: SchedulerScenario = (factory) =>
  run(factory, async (c) => {
    const m = c.message(1, 'k');
    const id = await schedule(c.h.scheduler, c.topic, m, c.clock.now() + 1000);
    assert.equal(id, m.envelope.id, 'the id defaults to the envelope id');
    assert.equal(await c.h.scheduler.nextDue(), c.clock.now() + 1000);
    assert.equal(await c.h.scheduler.pendingCount(), 1);
    const s = await c.scheduler('a');
    await c.advance(999);
    await sleep(SETTLE_MS);
    assert.deepEqual(c.log.ids(), [], 'nothing fires before deliverAt');
    await c.advance(1);
    await c.waitFor(() => c.log.entries.length >= 1, { timeoutMs: WAIT_MS, what: 'the due message' });
    assert.equal(c.log.entries[0]!.topic, c.topic);
    await c.waitFor(async () => (await c.h.scheduler.pendingCount()) === 0, { timeoutMs: WAIT_MS, what: 'the message to be marked fired' });
    await c.advance(60_000);
    await sleep(SETTLE_MS);
    assertDelivered([m.envelope.id], c.log.ids(), { label: 'scheduler' });
    assert.equal(await c.h.scheduler.nextDue(), undefined, 'nothing left');
    assert.equal(s.stats().fired, 1);
  });

/** What a scheduler had not fired when it stopped fires from a new scheduler on the same store (on a new connection when the backend can). */
export const survivesRestart: SchedulerScenario = (factory) =>
  run(factory, async (c) => {
    const m = c.message(1);
    await schedule(c.h.scheduler, c.topic, m, c.clock.now() + 5000);
    const first = await c.scheduler('a');
    await c.advance(1000);
    await first.close();
    const other = c.h.reopen ? await c.h.reopen() : c.h;
    if (other !== c.h) c.scope.defer('second connection close', () => other.close());
    assert.equal(await other.scheduler.pendingCount(), 1, 'the schedule is stored');
    await c.scheduler('b', { harness: other });
    await c.advance(3999);
    await sleep(SETTLE_MS);
    assert.deepEqual(c.log.ids(), [], 'not before its time after a restart either');
    await c.advance(1);
    await c.waitFor(() => c.log.entries.length >= 1, { timeoutMs: WAIT_MS, what: 'the message, fired by the new scheduler' });
    assert.deepEqual(c.log.ids('b'), [m.envelope.id]);
  });

/** cancel removes a message not yet fired (true), and is false for an unknown or fired id. */
export const cancelRemoves: SchedulerScenario = (factory) =>
  run(factory, async (c) => {
    const keep = c.message(1);
    const drop = c.message(2);
    await schedule(c.h.scheduler, c.topic, keep, c.clock.now() + 100);
    await schedule(c.h.scheduler, c.topic, drop, c.clock.now() + 50);
    assert.equal(await c.h.scheduler.cancel(drop.envelope.id), true);
    assert.equal(await c.h.scheduler.cancel(drop.envelope.id), false, 'a second cancel finds nothing');
    assert.equal(await c.h.scheduler.cancel('no-such-id'), false);
    assert.equal(await c.h.scheduler.pendingCount(), 1);
    await c.scheduler('a');
    await c.advance(200);
    await c.waitFor(() => c.log.entries.length >= 1, { timeoutMs: WAIT_MS, what: 'the kept message' });
    await c.waitFor(async () => (await c.h.scheduler.pendingCount()) === 0, { timeoutMs: WAIT_MS, what: 'marked fired' });
    assert.equal(await c.h.scheduler.cancel(keep.envelope.id), false, 'a fired message cannot be cancelled');
    await sleep(SETTLE_MS);
    assertDelivered([keep.envelope.id], c.log.ids());
  });

/** Scheduling an id already stored keeps the first entry (its time and message). */
export const sameIdKeepsFirst: SchedulerScenario = (factory) =>
  run(factory, async (c) => {
    const first = c.message(1);
    const second = c.message(2);
    const t = c.clock.now();
    assert.deepEqual(
      await c.h.scheduler.schedule([
        { topic: c.topic, message: first, deliverAt: t + 1000, id: 'timer-1' },
        { topic: c.topic, message: second, deliverAt: t + 10, id: 'timer-1' },
      ]),
      ['timer-1', 'timer-1'],
      'ids in input order',
    );
    assert.equal(await schedule(c.h.scheduler, c.topic, second, t + 10, 'timer-1'), 'timer-1');
    assert.equal(await c.h.scheduler.pendingCount(), 1);
    assert.equal(await c.h.scheduler.nextDue(), t + 1000, 'the first deliverAt is kept');
    await c.scheduler('a');
    await c.advance(500);
    await sleep(SETTLE_MS);
    assert.deepEqual(c.log.ids(), [], 'the second (earlier) time was ignored');
    await c.advance(500);
    await c.waitFor(() => c.log.entries.length >= 1, { timeoutMs: WAIT_MS, what: 'the first message' });
    await sleep(SETTLE_MS);
    assertDelivered([first.envelope.id], c.log.ids());
  });

/** Due messages are published in deliverAt order, whatever order they were scheduled in; `due` reads them so, bounded. */
export const orderedByDeliverAt: SchedulerScenario = (factory) =>
  run(factory, async (c) => {
    const t = c.clock.now();
    const offsets = [500, 100, 400, 200, 300, 50, 450];
    const messages = offsets.map((o, i) => ({ o, m: c.message(i, 'same-key') }));
    await c.h.scheduler.schedule(messages.map(({ o, m }) => ({ topic: c.topic, message: m, deliverAt: t + o })));
    const sorted = [...messages].sort((a, b) => a.o - b.o).map((x) => x.m.envelope.id);
    const due = await c.h.scheduler.due(t + 1000, 3);
    assert.deepEqual(
      due.map((r) => r.id),
      sorted.slice(0, 3),
      'due: earliest first, at most limit',
    );
    assert.equal(due[0]!.deliverAt, t + 50);
    assert.deepEqual(
      (await c.h.scheduler.due(t + 99, 10)).map((r) => r.id),
      sorted.slice(0, 1),
      'due: only what is due at now',
    );
    await c.advance(1000); // everything is due before the scheduler starts: one batch
    await c.scheduler('a', { batchSize: 4 });
    await c.waitFor(() => c.log.entries.length >= offsets.length, { timeoutMs: WAIT_MS, what: 'every message' });
    await sleep(SETTLE_MS);
    assert.deepEqual(c.log.ids(), sorted, 'published in deliverAt order');
  });

/** tx.schedule commits with the transaction (and never after a rollback); tx.cancelScheduled cancels in a transaction. */
export const scheduleInTransaction: SchedulerScenario = (factory) =>
  run(factory, async (c) => {
    const rolled = c.message(1);
    await assert.rejects(
      c.h.uow.withTransaction(async (tx) => {
        await c.h.put(tx, 'order-1', 'placed');
        tx.schedule({ topic: c.topic, message: rolled, deliverAt: c.clock.now() + 10 });
        throw new Error('rollback');
      }),
      /rollback/,
    );
    assert.equal(await c.h.scheduler.pendingCount(), 0, 'a rolled-back schedule is not stored');
    const kept = c.message(2);
    const cancelled = c.message(3);
    const ids = await c.h.uow.withTransaction(async (tx) => {
      await c.h.put(tx, 'order-2', 'placed');
      return [tx.schedule({ topic: c.topic, message: kept, deliverAt: c.clock.now() + 10 }), tx.schedule({ topic: c.topic, message: cancelled, deliverAt: c.clock.now() + 10, id: 'cancel-me' })];
    });
    assert.deepEqual(ids, [kept.envelope.id, 'cancel-me']);
    assert.equal(await c.h.scheduler.pendingCount(), 2);
    await c.h.uow.withTransaction((tx) => tx.cancelScheduled('cancel-me'));
    assert.equal(await c.h.scheduler.pendingCount(), 1, 'cancelled in a transaction');
    await c.scheduler('a');
    await c.advance(10);
    await c.waitFor(() => c.log.entries.length >= 1, { timeoutMs: WAIT_MS, what: 'the committed schedule' });
    await sleep(SETTLE_MS);
    assertDelivered([kept.envelope.id], c.log.ids());
    assert.equal(await c.h.get('order-2'), 'placed');
    assert.equal(await c.h.get('order-1'), undefined);
  });

/** A schedule written in this process wakes a sleeping scheduler: a message due now fires without moving the clock. */
export const wakesUpOnSchedule: SchedulerScenario = (factory) =>
  run(factory, async (c) => {
    await c.scheduler('a', { pollMs: 3_600_000 });
    await c.advance(0);
    const m = c.message(1);
    await schedule(c.h.scheduler, c.topic, m, c.clock.now());
    await waitFor(() => c.log.entries.length >= 1, { timeoutMs: 1000, what: 'the due-now message without a clock advance (onWrite wake-up)' });
    assertDelivered([m.envelope.id], c.log.ids());
    // A later message scheduled while asleep: the wake-up re-arms the timer for it.
    const later = c.message(2);
    await schedule(c.h.scheduler, c.topic, later, c.clock.now() + 300);
    await sleep(20);
    await c.advance(299);
    await sleep(SETTLE_MS);
    assert.equal(c.log.entries.length, 1, 'not before its time');
    await c.advance(1);
    await c.waitFor(() => c.log.entries.length >= 2, { timeoutMs: WAIT_MS, what: 'the later message at its time' });
  });

/** Two schedulers on one store: one holds the lease, each due message is published once. */
export const twoSchedulersFireOnce: SchedulerScenario = (factory) =>
  run(factory, async (c) => {
    const other = c.h.reopen ? await c.h.reopen() : c.h;
    if (other !== c.h) c.scope.defer('second connection close', () => other.close());
    const a = await c.scheduler('a');
    const b = await c.scheduler('b', { harness: other });
    assert.equal(Number(a.stats().leader) + Number(b.stats().leader), 1, 'exactly one scheduler leads');
    const t = c.clock.now();
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const m = c.message(i, `k${i % 3}`);
      ids.push(await schedule(i % 2 ? other.scheduler : c.h.scheduler, c.topic, m, t + 100 + i * 10));
    }
    await c.advance(1000);
    await c.advance(1000); // the follower's poll, too
    await c.waitFor(() => c.log.entries.length >= ids.length, { timeoutMs: WAIT_MS, what: () => `${ids.length} fired (have ${c.log.entries.length})` });
    await sleep(SETTLE_MS);
    assertDelivered(ids, c.log.ids(), { label: 'two schedulers' });
  });

/** A schedule with a bad deliverAt or topic is HERALD_ERR_INVALID_ARGUMENT and stores nothing. */
export const badSchedulesAreTypedErrors: SchedulerScenario = (factory) =>
  run(factory, async (c) => {
    for (const [what, write] of [
      ['deliverAt NaN', { topic: c.topic, message: c.message(1), deliverAt: Number.NaN }],
      ['an invalid topic name', { topic: 'not a topic!', message: c.message(2), deliverAt: c.clock.now() }],
    ] as const) {
      await assert.rejects(c.h.scheduler.schedule([write]), (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'), what);
    }
    assert.equal(await c.h.scheduler.pendingCount(), 0, 'nothing stored');
  });

export const schedulerScenarios: Readonly<Record<string, SchedulerScenario>> = {
  'a due message fires once, not before its time': firesOnceNotBefore,
  'schedules survive a restart': survivesRestart,
  'cancel removes an unfired message': cancelRemoves,
  'the same id scheduled twice keeps the first': sameIdKeepsFirst,
  'due messages fire in deliverAt order': orderedByDeliverAt,
  'tx.schedule and tx.cancelScheduled are transactional': scheduleInTransaction,
  'a schedule wakes the scheduler without polling': wakesUpOnSchedule,
  'two schedulers: each message once': twoSchedulersFireOnce,
  'bad schedules are typed errors': badSchedulesAreTypedErrors,
};

export function describeSchedulerContract(name: string, factory: UnitOfWorkFactory): void {
  describe(`scheduler contract: ${name}`, () => {
    for (const [title, scenario] of Object.entries(schedulerScenarios)) it(title, () => scenario(factory));
  });
}
