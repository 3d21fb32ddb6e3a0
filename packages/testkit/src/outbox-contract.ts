/**
 * The outbox contract: what every unit of work's outbox (memory, SQLite, PostgreSQL) must do,
 * with the core outbox relay on top, for "business writes and the events they cause commit
 * together, and are published at least once, in per-key order".
 *
 *   describeOutboxContract('sqlite', async ({ clock }) => { … a UnitOfWorkHarness … });
 *
 * See `UnitOfWorkHarness` for what the factory returns. Scenarios are exported one by one
 * (`outboxScenarios`) for backends that want to run a few of them alone. Sizes grow with
 * `CONTRACT_STRESS`.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { type Clock, createOutboxRelay, isHeraldError, type OutboxRecord, type OutboxRelay, type OutboxStore, type OutboxRelayOptions, partitionForKey, systemClock, type Transaction, type Transport } from '@herald/core';
import { assertDelivered, assertOrderPerKey, sleep, stressCount, uniqueName, waitFor, withScope, type Scope } from './helpers.ts';
import { ManualClock } from './manual-clock.ts';
import { SETTLE_MS } from './transport-harness.ts';
import { contractMessage, PublishLog, type UnitOfWorkFactory, type UnitOfWorkHarness } from './unit-of-work-harness.ts';

export type OutboxScenario = (factory: UnitOfWorkFactory) => Promise<void>;

const WAIT_MS = 5000;

interface Ctx {
  readonly h: UnitOfWorkHarness;
  readonly scope: Scope;
  readonly clock: Clock;
  readonly run: string;
  readonly log: PublishLog;
  /** A relay name unique to the scenario (lease scope). */
  readonly name: string;
  relay(label: string, over?: Partial<OutboxRelayOptions> & { transport?: Transport; harness?: UnitOfWorkHarness }): OutboxRelay;
  /** Commits one transaction that writes `row` and publishes `messages` for the given keys. */
  commit(row: string, keys: ReadonlyArray<string | undefined>, topic?: string): Promise<string[]>;
}

async function run(factory: UnitOfWorkFactory, body: (c: Ctx) => Promise<void>, clock: Clock = systemClock): Promise<void> {
  await withScope(async (scope) => {
    const h = await factory({ clock });
    scope.defer('unit of work close', () => h.close());
    const backlog = await h.outbox.backlog();
    assert.equal(backlog.count, 0, `the factory must return an empty outbox (it holds ${backlog.count} unsent rows)`);
    const runId = randomUUID().slice(0, 8);
    const log = new PublishLog();
    const name = uniqueName('outbox');
    const topic = uniqueName('t');
    const seq = new Map<string, number>();
    const ctx: Ctx = {
      h,
      scope,
      clock,
      run: runId,
      log,
      name,
      relay(label, over = {}) {
        const { harness, ...rest } = over;
        const relay = createOutboxRelay({
          store: (harness ?? h).outbox,
          leases: (harness ?? h).leases,
          transport: log.transport(label),
          name,
          clock,
          memberId: `${label}-${runId}`,
          pollMs: 50,
          leaseMs: 1500,
          retryInitialDelayMs: 10,
          retryMaxDelayMs: 100,
          ...rest,
        });
        scope.defer(`relay ${label} close`, () => relay.close({ timeoutMs: 1000 }));
        return relay;
      },
      async commit(row, keys, t = topic) {
        const ids: string[] = [];
        await h.uow.withTransaction(async (tx) => {
          await h.put(tx, row, `value of ${row}`);
          const messages = keys.map((k) => {
            const n = seq.get(k ?? '') ?? 0;
            seq.set(k ?? '', n + 1);
            const m = contractMessage(runId, k, n, clock.now());
            ids.push(m.envelope.id);
            return m;
          });
          tx.publish(t, messages);
        });
        return ids;
      },
    };
    await body(ctx);
  });
}

/** Expected ids per key, in commit order. */
function byKey(ids: readonly string[], run: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const id of ids) {
    const key = id.slice(run.length + 1, id.lastIndexOf('-'));
    let l = m.get(key);
    if (!l) m.set(key, (l = []));
    l.push(id);
  }
  return m;
}

// ── scenarios ──────────────────────────────────────────────────────────────

/** Rows committed in many transactions, over two topics, are published once each, in per-key order; the business rows are there; the backlog drains. */
export const commitPublishesInOrder: OutboxScenario = (factory) =>
  run(factory, async (c) => {
    const keys = ['k-a', 'k-b', 'k-c', 'k-d', 'k-e'];
    const txs = 20 * stressCount();
    const expected: string[] = [];
    const topics = [uniqueName('t'), uniqueName('t')];
    const topicOf = new Map<string, string>();
    for (let i = 0; i < txs; i++) {
      const ks = Array.from({ length: 1 + (i % 4) }, (_, j) => keys[(i + j * 3) % keys.length]!);
      const ids = await c.commit(`row-${i}`, ks, topics[i % 2]);
      for (const id of ids) topicOf.set(id, topics[i % 2]!);
      expected.push(...ids);
    }
    const before = await c.h.outbox.backlog();
    assert.equal(before.count, expected.length, 'every committed message is one unsent outbox row');
    const relay = c.relay('a');
    await relay.start();
    await waitFor(() => c.log.entries.length >= expected.length, { timeoutMs: WAIT_MS, what: () => `${expected.length} published (have ${c.log.entries.length})` });
    await waitFor(async () => (await c.h.outbox.backlog()).count === 0, { timeoutMs: WAIT_MS, what: 'the backlog to drain (rows marked sent)' });
    await sleep(SETTLE_MS);
    assertDelivered(expected, c.log.ids(), { label: 'outbox relay' });
    assertOrderPerKey(byKey(expected, c.run), c.log.entries, { label: 'outbox relay' });
    for (const e of c.log.entries) assert.equal(e.topic, topicOf.get(e.id), `${e.id} went to the topic it was written for`);
    for (let i = 0; i < txs; i++) assert.equal(await c.h.get(`row-${i}`), `value of row-${i}`, `business row ${i} committed`);
    const s = relay.stats();
    assert.equal(s.published, expected.length);
    assert.equal(s.resent, 0);
    assert.equal(s.fencedOut, 0);
  });

/** A transaction that throws leaves neither its business row nor its outbox rows; afterCommit never runs; a later commit is published alone. */
export const rollbackPublishesNothing: OutboxScenario = (factory) =>
  run(factory, async (c) => {
    const boom = new Error('rolled back on purpose');
    let afterCommitRan = false;
    await assert.rejects(
      c.h.uow.withTransaction(async (tx) => {
        await c.h.put(tx, 'doomed', 'x');
        tx.publish(uniqueName('t'), [contractMessage(c.run, 'k', 0), contractMessage(c.run, undefined, 1)]);
        tx.afterCommit(() => {
          afterCommitRan = true;
        });
        throw boom;
      }),
      (e) => e === boom,
      'withTransaction rethrows the callback error',
    );
    assert.equal(await c.h.get('doomed'), undefined, 'the business row was rolled back');
    assert.equal((await c.h.outbox.backlog()).count, 0, 'the outbox rows were rolled back');
    for (let p = 0; p < c.h.outbox.partitions; p++) assert.deepEqual(await c.h.outbox.pending(p, 10), [], `partition ${p} holds nothing`);
    assert.equal(afterCommitRan, false, 'afterCommit does not run after a rollback');

    let committedAfter = false;
    const ids = await c.h.uow.withTransaction(async (tx) => {
      await c.h.put(tx, 'kept', 'y');
      const m = contractMessage(c.run, 'k', 7);
      tx.publish(uniqueName('t'), m);
      tx.afterCommit(() => {
        committedAfter = true;
      });
      return [m.envelope.id];
    });
    assert.equal(committedAfter, true, 'afterCommit runs once the transaction committed');
    const relay = c.relay('a');
    await relay.start();
    await waitFor(() => c.log.entries.length >= 1, { timeoutMs: WAIT_MS, what: 'the committed message' });
    await sleep(SETTLE_MS);
    assertDelivered(ids, c.log.ids(), { label: 'after a rollback' });
  });

/** Rows carry the partition of their key; pending reads a partition oldest first, after a given id, bounded. */
export const pendingReadsPartitionInOrder: OutboxScenario = (factory) =>
  run(factory, async (c) => {
    const P = c.h.outbox.partitions;
    assert.ok(Number.isInteger(P) && P >= 1, `partitions is a positive integer (got ${P})`);
    const ids = [...(await c.commit('r1', ['same', 'other', 'same'])), ...(await c.commit('r2', ['same', 'same']))];
    const p = partitionForKey('same', P);
    const rows = await c.h.outbox.pending(p, 100);
    const mine = rows.filter((r) => r.message.envelope.id.includes('-same-'));
    assert.deepEqual(
      mine.map((r) => r.message.envelope.id),
      ids.filter((id) => id.includes('-same-')),
      'a key\'s rows come back in commit order',
    );
    for (const r of rows) assert.equal(r.partition, p);
    assertIncreasing(rows);
    const limited = await c.h.outbox.pending(p, 2);
    assert.equal(limited.length, 2, 'limit bounds the read');
    const after = await c.h.outbox.pending(p, 100, limited[0]!.id);
    assert.deepEqual(
      after.map((r) => r.id),
      rows.slice(1).map((r) => r.id),
      'after skips rows up to and including that id',
    );
    const other = await c.h.outbox.pending(partitionForKey('other', P), 100);
    assert.ok(other.some((r) => r.message.envelope.id.includes('-other-')), 'the other key is in its own partition');
    assert.equal(typeof rows[0]!.createdAt, 'number');
    assert.equal(rows[0]!.message.key, 'same', 'the message key is kept');
  });

function assertIncreasing(rows: readonly OutboxRecord[]): void {
  for (let i = 1; i < rows.length; i++) {
    const a = BigInt(rows[i - 1]!.id);
    const b = BigInt(rows[i]!.id);
    assert.ok(b > a, `ids increase within a partition (${rows[i - 1]!.id} then ${rows[i]!.id})`);
  }
}

/** markSent marks up to an id only under the current lease; a stale or foreign fence writes nothing. */
export const markSentIsFenced: OutboxScenario = (factory) =>
  run(factory, async (c) => {
    const P = c.h.outbox.partitions;
    await c.commit('r', ['fenced', 'fenced', 'fenced']);
    const p = partitionForKey('fenced', P);
    const scope = `outbox:${c.name}`;
    const rows = await c.h.outbox.pending(p, 10);
    assert.equal(rows.length, 3);
    const grant = await c.h.leases.acquire(scope, String(p), 'member-a', 60_000);
    assert.ok(grant, 'lease acquired');
    const foreign = { ...grant, owner: 'member-b' };
    assert.equal(await c.h.outbox.markSent(p, rows[2]!.id, foreign), false, 'a fence of another owner is refused');
    assert.equal(await c.h.outbox.markSent(p, rows[2]!.id, { ...grant, epoch: grant.epoch + 1 }), false, 'a fence of another epoch is refused');
    assert.equal((await c.h.outbox.pending(p, 10)).length, 3, 'nothing was marked by a refused fence');
    assert.equal(await c.h.outbox.markSent(p, rows[1]!.id, grant), true);
    assert.deepEqual(
      (await c.h.outbox.pending(p, 10)).map((r) => r.id),
      [rows[2]!.id],
      'rows up to upTo are marked, the rest stay unsent',
    );
    await c.h.leases.release(grant);
    const next = await c.h.leases.acquire(scope, String(p), 'member-b', 60_000);
    assert.ok(next && next.epoch > grant.epoch, 'the lease changed hands with a new epoch');
    assert.equal(await c.h.outbox.markSent(p, rows[2]!.id, grant), false, 'the old owner is fenced out');
    assert.equal(await c.h.outbox.markSent(p, rows[2]!.id, next), true, 'the new owner marks');
    assert.equal((await c.h.outbox.backlog()).count, 0);
  });

/** Two relays (different members; the second on another connection when the backend can) publish every row once, in per-key order, while partitions rebalance between them. */
export const twoRelaysShareTheOutbox: OutboxScenario = (factory) =>
  run(factory, async (c) => {
    const other = c.h.reopen ? await c.h.reopen() : c.h;
    if (other !== c.h) c.scope.defer('second connection close', () => other.close());
    const keys = Array.from({ length: 8 }, (_, i) => `key-${i}`);
    const expected: string[] = [];
    const write = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) expected.push(...(await c.commit(`row-${expected.length}`, [keys[i % 8]!, keys[(i * 5 + 1) % 8]!])));
    };
    const a = c.relay('a', { leaseMs: 600 });
    await a.start();
    await write(20 * stressCount());
    const b = c.relay('b', { leaseMs: 600, harness: other });
    await b.start();
    // Keep writing while the partitions move from a to b.
    for (let round = 0; round < 6; round++) {
      await write(5 * stressCount());
      await sleep(60);
    }
    await waitFor(() => a.stats().partitions > 0 && b.stats().partitions > 0, { timeoutMs: WAIT_MS, what: () => `both relays to own partitions (a: ${a.stats().partitions}, b: ${b.stats().partitions})` });
    await write(10 * stressCount());
    await waitFor(() => new Set(c.log.ids()).size >= expected.length, { timeoutMs: WAIT_MS, what: () => `${expected.length} published (have ${new Set(c.log.ids()).size})` });
    await waitFor(async () => (await c.h.outbox.backlog()).count === 0, { timeoutMs: WAIT_MS, what: 'the backlog to drain' });
    await sleep(SETTLE_MS);
    assertDelivered(expected, c.log.ids(), { label: 'two relays' });
    assertOrderPerKey(byKey(expected, c.run), c.log.entries, { label: 'two relays' });
    assert.ok(c.log.ids('a').length > 0 && c.log.ids('b').length > 0, `both relays published (a: ${c.log.ids('a').length}, b: ${c.log.ids('b').length})`);
  });

/** A relay closed while its publish is still in flight (as if killed) marks nothing; the next relay resends from the first unconfirmed row: none lost, order kept. */
export const killedRelayIsResent: OutboxScenario = (factory) =>
  run(factory, async (c) => {
    const keys = ['x', 'y', 'z'];
    const expected: string[] = [];
    for (let i = 0; i < 12; i++) expected.push(...(await c.commit(`row-${i}`, [keys[i % 3]!, keys[(i + 1) % 3]!])));
    // Relay a: its second publish call is stored by the broker but never confirmed.
    const a = c.relay('a', { transport: c.log.transport('a', { decide: (call) => (call >= 2 ? 'hang' : 'ok') }), batchSize: 4, maxInFlightPublishes: 1 });
    await a.start();
    await waitFor(() => (c.log.calls.get('a') ?? 0) >= 2, { timeoutMs: WAIT_MS, what: 'relay a to reach its hanging publish' });
    await a.close({ timeoutMs: 50 });
    const unsent = (await c.h.outbox.backlog()).count;
    assert.ok(unsent > 0, 'the hung publish was not marked sent');
    const b = c.relay('b');
    await b.start();
    await waitFor(async () => (await c.h.outbox.backlog()).count === 0, { timeoutMs: WAIT_MS, what: 'relay b to drain the backlog' });
    await sleep(SETTLE_MS);
    const fromA = new Set(c.log.ids('a'));
    const fromB = c.log.ids('b');
    assertDelivered(
      expected.filter((id) => !fromA.has(id) || fromB.includes(id)),
      fromB,
      { label: 'relay b' },
    );
    assertDelivered(expected, c.log.ids(), { allowDuplicates: true, label: 'a and b together' });
    assertOrderPerKey(
      byKey(
        expected.filter((id) => fromB.includes(id)),
        c.run,
      ),
      c.log.entries.filter((e) => e.by === 'b'),
      { label: 'relay b' },
    );
    assert.ok(fromB.some((id) => fromA.has(id)), 'the rows of the unconfirmed publish were published again by b (at least once)');
  });

/** A publish that fails (storing nothing, or storing then failing) is retried after a backoff from the first unconfirmed row: nothing lost, order per key kept. */
export const publishFailureIsRetried: OutboxScenario = (factory) =>
  run(factory, async (c) => {
    const keys = ['p', 'q'];
    const expected: string[] = [];
    for (let i = 0; i < 10; i++) expected.push(...(await c.commit(`row-${i}`, [keys[i % 2]!, keys[(i + 1) % 2]!, 'p'])));
    const errors: unknown[] = [];
    const relay = c.relay('a', {
      transport: c.log.transport('a', { decide: (call) => (call === 2 ? 'fail' : call === 3 ? 'store-then-fail' : 'ok') }),
      batchSize: 5,
      maxInFlightPublishes: 1,
      onError: (e) => errors.push(e),
    });
    await relay.start();
    await waitFor(async () => (await c.h.outbox.backlog()).count === 0, { timeoutMs: WAIT_MS, what: 'the backlog to drain despite two failed publishes' });
    await sleep(SETTLE_MS);
    assertDelivered(expected, c.log.ids(), { allowDuplicates: true, label: 'after failures' });
    assertOrderPerKey(byKey(expected, c.run), c.log.entries, { allowDuplicates: true, label: 'after failures' });
    const s = relay.stats();
    assert.ok(s.failures >= 2, `two failures counted (got ${s.failures})`);
    assert.ok(s.resent >= 1, `the stored-then-failed rows count as resent (got ${s.resent})`);
    assert.ok(s.lastError?.message.includes('fails (test)') || s.lastError?.message.includes('then failed (test)'), 'lastError is the transport error');
    assert.ok(errors.length >= 2, 'onError saw the failures');
  });

/** A commit in this process wakes the relay at once: with polling effectively off, the message still goes out. */
export const wakesUpOnCommit: OutboxScenario = (factory) =>
  run(factory, async (c) => {
    const relay = c.relay('a', { pollMs: 3_600_000 });
    await relay.start();
    await waitFor(() => relay.stats().partitions === c.h.outbox.partitions, { timeoutMs: WAIT_MS, what: 'the relay to own every partition' });
    await sleep(50); // the first drains have found nothing
    const ids = await c.commit('woken', ['w1', 'w2']);
    await waitFor(() => c.log.entries.length >= 2, { timeoutMs: 1000, what: 'the committed messages without a poll (onWrite wake-up)' });
    assertDelivered(ids, c.log.ids());
  });

/** A relay started with polling only (another process's writes) finds rows committed after it started. */
export const pollsForOtherWriters: OutboxScenario = (factory) =>
  run(factory, async (c) => {
    if (!c.h.reopen) {
      // One connection only: stand in for another process with a view of the store whose onWrite never fires.
      const o = c.h.outbox;
      const quiet: OutboxStore = {
        partitions: o.partitions,
        pending: (p, limit, after) => o.pending(p, limit, after),
        markSent: (p, upTo, fence) => o.markSent(p, upTo, fence),
        backlog: () => o.backlog(),
        purgeSent: (before, limit) => o.purgeSent(before, limit),
        onWrite: () => () => {},
      };
      const relay = c.relay('a', { store: quiet, pollMs: 30 });
      await relay.start();
      const ids = await c.commit('polled', ['o1']);
      await waitFor(() => c.log.entries.length >= 1, { timeoutMs: WAIT_MS, what: 'the poll to find the row' });
      assertDelivered(ids, c.log.ids());
      return;
    }
    const other = await c.h.reopen();
    c.scope.defer('second connection close', () => other.close());
    const relay = c.relay('a', { harness: other, pollMs: 30 });
    await relay.start();
    const ids = await c.commit('polled', ['o1', 'o2']);
    await waitFor(() => c.log.entries.length >= 2, { timeoutMs: WAIT_MS, what: 'the relay on another connection to poll the rows' });
    assertDelivered(ids, c.log.ids());
  });

/** backlog() counts unsent rows and gives the createdAt of the oldest (the store's clock); marking drains it. */
export const backlogCountAndAge: OutboxScenario = (factory) => {
  const clock = new ManualClock();
  return run(
    factory,
    async (c) => {
      const t0 = clock.now();
      await c.commit('b1', ['a', 'b', 'c']);
      await clock.advance(1000);
      await c.commit('b2', ['a', 'd']);
      const b = await c.h.outbox.backlog();
      assert.equal(b.count, 5);
      assert.equal(b.oldestCreatedAt, t0, 'oldestCreatedAt is the first commit time');
      const relay = c.relay('r');
      assert.deepEqual(await relay.backlog(), b, 'the relay reports the store backlog');
      await markAll(c, 'owner');
      const after = await c.h.outbox.backlog();
      assert.equal(after.count, 0);
      assert.equal(after.oldestCreatedAt, undefined, 'no unsent row: no age');
    },
    clock,
  );
};

async function markAll(c: Ctx, owner: string): Promise<void> {
  for (let p = 0; p < c.h.outbox.partitions; p++) {
    const rows = await c.h.outbox.pending(p, 1000);
    if (rows.length === 0) continue;
    const grant = await c.h.leases.acquire(`outbox:${c.name}`, String(p), owner, 3_600_000);
    assert.ok(grant, `lease on partition ${p}`);
    assert.equal(await c.h.outbox.markSent(p, rows[rows.length - 1]!.id, grant), true);
  }
}

/** purgeSent deletes rows sent before the given time, at most `limit`, never an unsent row. */
export const purgeSentByAge: OutboxScenario = (factory) => {
  const clock = new ManualClock();
  return run(
    factory,
    async (c) => {
      await c.commit('s', ['a', 'b', 'c', 'd']);
      const t0 = clock.now();
      await markAll(c, 'owner');
      await clock.advance(1000);
      await c.commit('u', ['a']);
      assert.equal(await c.h.outbox.purgeSent(t0, 100), 0, 'rows sent at t0 are not sent before t0');
      assert.equal(await c.h.outbox.purgeSent(t0 + 1, 3), 3, 'limit bounds one purge');
      assert.equal(await c.h.outbox.purgeSent(clock.now() + 10_000, 100), 1, 'the rest of the sent rows');
      assert.equal(await c.h.outbox.purgeSent(clock.now() + 10_000, 100), 0, 'unsent rows are never purged');
      const b = await c.h.outbox.backlog();
      assert.equal(b.count, 1, 'the unsent row is still there');
    },
    clock,
  );
};

/** A relay with a retention policy purges what it sent (here: at once, every 20 ms). */
export const relayPurgesByRetention: OutboxScenario = (factory) =>
  run(factory, async (c) => {
    const ids = await c.commit('r', ['a', 'b', 'c', 'a']);
    const relay = c.relay('a', { retention: { sentRetentionMs: 0, purgeEveryMs: 20 } });
    await relay.start();
    await waitFor(() => relay.stats().purged >= ids.length, { timeoutMs: WAIT_MS, what: () => `${ids.length} purged (have ${relay.stats().purged})` });
    assert.equal(await c.h.outbox.purgeSent(Date.now() + 3_600_000, 100), 0, 'nothing sent is left');
    assertDelivered(ids, c.log.ids());
  });

/** A bad outbox write (invalid topic, a message without an envelope) is HERALD_ERR_INVALID_ARGUMENT; thrown inside the callback, it rolls the transaction back. */
export const badWritesAreTypedErrors: OutboxScenario = (factory) =>
  run(factory, async (c) => {
    for (const [what, write] of [
      ['an invalid topic name', (tx: Transaction) => tx.publish('not a topic!', contractMessage(c.run, 'k', 0))],
      ['a message without an envelope', (tx: Transaction) => tx.publish(uniqueName('t'), [{} as never])],
    ] as const) {
      await assert.rejects(
        c.h.uow.withTransaction(async (tx) => {
          await c.h.put(tx, 'bad-write', 'x');
          write(tx);
        }),
        (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'),
        what,
      );
    }
    assert.equal(await c.h.get('bad-write'), undefined, 'rolled back');
    assert.equal((await c.h.outbox.backlog()).count, 0, 'nothing stored');
  });

/** Bad arguments to the relay are typed errors naming the option. */
export const relayRejectsBadOptions: OutboxScenario = (factory) =>
  run(factory, async (c) => {
    for (const [opt, value] of [
      ['batchSize', 0],
      ['pollMs', -1],
      ['maxInFlightPublishes', 1.5],
    ] as const) {
      assert.throws(
        () => createOutboxRelay({ store: c.h.outbox, leases: c.h.leases, transport: c.log.transport('x'), [opt]: value }),
        (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && e.message.includes(opt),
        opt,
      );
    }
  });

export const outboxScenarios: Readonly<Record<string, OutboxScenario>> = {
  'a commit publishes its rows once each, in per-key order': commitPublishesInOrder,
  'a rollback publishes nothing and leaves no business row': rollbackPublishesNothing,
  'pending reads a partition in id order, after an id, bounded': pendingReadsPartitionInOrder,
  'markSent is fenced by the lease': markSentIsFenced,
  'two relays: every row once, per-key order, while rebalancing': twoRelaysShareTheOutbox,
  'a relay killed mid-publish: the next one resends from the first unconfirmed row': killedRelayIsResent,
  'a failed publish is retried, order kept': publishFailureIsRetried,
  'a commit wakes the relay without polling': wakesUpOnCommit,
  'the poll finds rows of other writers': pollsForOtherWriters,
  'backlog count and age': backlogCountAndAge,
  'purgeSent by age and limit, never unsent rows': purgeSentByAge,
  'the relay purges by retention': relayPurgesByRetention,
  'bad writes are typed errors and roll back': badWritesAreTypedErrors,
  'bad relay options are typed errors': relayRejectsBadOptions,
};

export function describeOutboxContract(name: string, factory: UnitOfWorkFactory): void {
  describe(`outbox contract: ${name}`, () => {
    for (const [title, scenario] of Object.entries(outboxScenarios)) it(title, () => scenario(factory));
  });
}
