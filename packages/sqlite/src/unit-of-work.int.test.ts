// SQLite unit of work, outbox store and scheduler store beyond the contracts: group commit with
// a savepoint per callback, async callbacks holding the write lock, inbox under the write lock,
// the sent watermark and its purge, fencing against herald_leases, bad input, the file's fixed
// partition count, and event-store appends routed to the outbox atomically.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createEnvelope, isHeraldError, type LeaseFence, partitionForKey } from '@herald/core';
import { ConcurrencyError } from '@herald/eventsourcing';
import { openDatabase } from './database.ts';
import { createSqliteEventStore } from './event-store.ts';
import { SqliteLeaseStore } from './lease-store.ts';
import { createSqliteOutboxStore } from './outbox-store.ts';
import { createSqliteSchedulerStore } from './scheduler-store.ts';
import { tempDbPath, waitFor } from './test-helpers.ts';
import { createSqliteUnitOfWork } from './unit-of-work.ts';

const cleanups: Array<() => void> = [];
after(() => {
  for (const c of cleanups) c();
});
function freshPath(): string {
  const { path, cleanup } = tempDbPath();
  cleanups.push(cleanup);
  return path;
}

const env = (n: number, key?: string) => createEnvelope({ type: 'order.placed', source: 'uow-test', id: `e-${n}`, data: { n }, ...(key ? { partitionkey: key } : {}) });

function setup(partitions = 4) {
  const path = freshPath();
  const uow = createSqliteUnitOfWork({ path, outboxPartitions: partitions });
  uow.database.db.exec('CREATE TABLE orders (id TEXT PRIMARY KEY, total INTEGER NOT NULL)');
  const db = openDatabase({ path });
  const outbox = createSqliteOutboxStore({ database: db });
  const leases = new SqliteLeaseStore({ database: db });
  return {
    path,
    uow,
    outbox,
    leases,
    db,
    async close() {
      await uow.close();
      await outbox.close();
      await leases.close();
      db.close();
    },
  };
}

describe('SQLite unit of work', () => {
  it('commits business rows and outbox rows together; concurrent callers share one transaction and a failing one rolls back alone', async () => {
    const s = setup();
    const before = s.uow.transactions;
    const calls = Array.from({ length: 20 }, (_, i) =>
      s.uow.withTransaction((tx) => {
        tx.native.prepare('INSERT INTO orders (id, total) VALUES (?, ?)').run(`o${i}`, i);
        tx.publish('orders', { envelope: env(i, `k${i % 3}`) });
        if (i === 7) throw new Error('boom 7');
        return i;
      }),
    );
    const results = await Promise.allSettled(calls);
    assert.equal(s.uow.transactions - before, 1, '20 callers, one transaction');
    assert.ok(results[7]!.status === 'rejected' && (results[7] as PromiseRejectedResult).reason.message === 'boom 7', 'the callback error is rethrown unchanged');
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 19);
    const orders = s.db.db.prepare('SELECT id FROM orders ORDER BY total').pluck().all();
    assert.equal(orders.length, 19);
    assert.ok(!orders.includes('o7'));
    const rows = (await Promise.all([0, 1, 2, 3].map((p) => s.outbox.pending(p, 100)))).flat();
    assert.equal(rows.length, 19);
    assert.ok(!rows.some((r) => r.message.envelope.id === 'e-7'), 'the failed callback left no outbox row');
    for (const r of rows) assert.equal(r.partition, partitionForKey(r.message.envelope.partitionkey as string, 4));
    for (const p of [0, 1, 2, 3]) {
      const ids = (await s.outbox.pending(p, 100)).map((r) => Number(r.id));
      assert.deepEqual(ids, [...ids].sort((a, b) => a - b), 'ids grow within a partition');
    }
    // per key, in write order
    const k0 = rows.filter((r) => r.message.envelope.partitionkey === 'k0').map((r) => (r.message.envelope.data as { n: number }).n);
    assert.deepEqual(k0, [0, 3, 6, 9, 12, 15, 18]);
    await s.close();
  });

  it('an async callback holds the write lock across awaits; other connections wait; afterCommit and onWrite fire only after commit', async () => {
    const s = setup();
    const events: string[] = [];
    const off = s.outbox.onWrite(() => events.push('wake'));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let entered = false;
    const tx1 = s.uow.withTransaction(async (tx) => {
      tx.publish('orders', { envelope: env(1, 'a') });
      tx.afterCommit(() => events.push('after-commit'));
      entered = true;
      await gate;
      events.push('callback-end');
    });
    const failed = s.uow.withTransaction(async (tx) => {
      tx.publish('orders', { envelope: env(2, 'a') });
      tx.afterCommit(() => events.push('never'));
      throw new Error('no');
    });
    await waitFor(() => entered, 'the first callback to run');
    await new Promise((r) => setTimeout(r, 20));
    assert.ok(s.uow.database.db.inTransaction, 'BEGIN IMMEDIATE is held while the callback awaits');
    // Another connection cannot write meanwhile (busy), and sees nothing uncommitted.
    s.db.db.pragma('busy_timeout = 0');
    assert.throws(() => s.db.db.exec('BEGIN IMMEDIATE'), (e) => (e as { code?: string }).code === 'SQLITE_BUSY');
    s.db.db.pragma('busy_timeout = 5000');
    assert.equal((await s.outbox.backlog()).count, 0);
    release();
    await tx1;
    await assert.rejects(failed, /no/);
    assert.deepEqual(events, ['callback-end', 'after-commit', 'wake']);
    const b = await s.outbox.backlog();
    assert.equal(b.count, 1);
    assert.equal(typeof b.oldestCreatedAt, 'number');
    off();
    await s.close();
  });

  it('tx is unusable after its callback; bad input is typed and writes nothing', async () => {
    const s = setup();
    let kept: Parameters<Parameters<typeof s.uow.withTransaction>[0]>[0] | undefined;
    await s.uow.withTransaction((tx) => {
      kept = tx;
    });
    assert.throws(() => kept!.publish('orders', { envelope: env(1) }), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
    const cases: Array<[string, (tx: NonNullable<typeof kept>) => void, string]> = [
      ['bad topic', (tx) => tx.publish('no spaces', { envelope: env(2) }), 'HERALD_ERR_INVALID_ARGUMENT'],
      ['no envelope', (tx) => tx.publish('orders', {} as never), 'HERALD_ERR_INVALID_ARGUMENT'],
      ['bad envelope', (tx) => tx.publish('orders', { envelope: { id: 'x', type: 't' } as never }), 'HERALD_ERR_ENVELOPE_INVALID'],
      ['bad key', (tx) => tx.publish('orders', { envelope: env(3), key: 5 as never }), 'HERALD_ERR_INVALID_ARGUMENT'],
      ['bad deliverAt', (tx) => tx.schedule({ topic: 'orders', message: { envelope: env(4) }, deliverAt: Number.NaN }), 'HERALD_ERR_INVALID_ARGUMENT'],
    ];
    for (const [what, fn, code] of cases) {
      await assert.rejects(
        s.uow.withTransaction((tx) => {
          tx.native.prepare('INSERT INTO orders (id, total) VALUES (?, 1)').run(what);
          fn(tx);
        }),
        (e) => isHeraldError(e, code as never),
        what,
      );
    }
    const small = createSqliteUnitOfWork({ path: s.path, maxPayloadBytes: 200 });
    await assert.rejects(
      small.withTransaction((tx) => tx.publish('orders', { envelope: createEnvelope({ type: 't', source: 's', data: 'x'.repeat(300) }) })),
      (e) => isHeraldError(e, 'HERALD_ERR_PAYLOAD_TOO_LARGE'),
    );
    await small.close();
    assert.equal(s.db.db.prepare('SELECT count(*) FROM orders').pluck().get(), 0);
    assert.equal((await s.outbox.backlog()).count, 0);
    assert.throws(() => createSqliteUnitOfWork({ path: s.path, outboxPartitions: 16 }), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && /4 partitions/.test(e.message));
    assert.throws(() => createSqliteUnitOfWork({ path: s.path, maxBatch: 0 }), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
    await s.close();
    await assert.rejects(s.uow.withTransaction(() => 1), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
  });

  it('maxBatch bounds the callbacks per transaction; an afterCommit that throws goes to onError and its caller still resolves', async () => {
    const s = setup();
    const errors: unknown[] = [];
    const uow = createSqliteUnitOfWork({ path: s.path, maxBatch: 4, onError: (e) => errors.push(e) });
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        uow.withTransaction((tx) => {
          tx.publish('orders', { envelope: env(100 + i, 'm') });
          if (i === 5) tx.afterCommit(() => { throw new Error('after-commit boom'); });
          return i;
        }),
      ),
    );
    assert.deepEqual(results, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(uow.transactions, 3, '10 callers, at most 4 per transaction');
    assert.equal(errors.length, 1);
    assert.match((errors[0] as Error).message, /after-commit boom/);
    assert.equal((await s.outbox.backlog()).count, 10);
    await uow.close();
    await s.close();
  });

  it('inbox: the handler runs once per key; a failed handler records nothing; purge by age', async () => {
    const s = setup();
    let now = 1_000;
    const uow = createSqliteUnitOfWork({ path: s.path, clock: { now: () => now, monotonic: () => now, setTimer: () => ({ cancel() {} }), sleep: async () => {} } });
    const key = { group: 'g', handler: 'h', source: 'src', id: 'm1' };
    let runs = 0;
    const handle = () =>
      uow.withInbox(key, (tx) => {
        runs++;
        tx.native.prepare('INSERT INTO orders (id, total) VALUES (?, ?)').run(`from-${runs}`, runs);
        return 'ok';
      });
    const [a, b] = await Promise.all([handle(), handle()]);
    assert.deepEqual(a, { duplicate: false, value: 'ok' });
    assert.deepEqual(b, { duplicate: true });
    assert.equal(runs, 1);
    assert.equal(await uow.inboxHas(key), true);
    const other = { ...key, id: 'm2' };
    await assert.rejects(uow.withInbox(other, () => Promise.reject(new Error('handler failed'))), /handler failed/);
    assert.equal(await uow.inboxHas(other), false, 'a failed handler leaves no inbox record');
    assert.deepEqual(await uow.withInbox(other, () => 2), { duplicate: false, value: 2 });
    assert.equal(await uow.inboxHas({ ...key, handler: 'h2' }), false, 'the handler is part of the key');
    now = 5_000;
    await uow.withInbox({ ...key, id: 'm3' }, () => 3);
    assert.equal(await uow.purgeInbox(2_000), 2);
    assert.equal(await uow.inboxHas(key), false);
    assert.equal(await uow.inboxHas({ ...key, id: 'm3' }), true);
    await assert.rejects(uow.withInbox({ ...key, id: '' }, () => 1), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
    await uow.close();
    await s.close();
  });
});

describe('SQLite outbox store', () => {
  it('marks sent by watermark under a fenced lease; pending skips sent rows; purge deletes rows sent before the cutoff', async () => {
    const s = setup(1);
    for (let i = 0; i < 10; i++) await s.uow.withTransaction((tx) => tx.publish('t', { envelope: env(i, 'k') }));
    const rows = await s.outbox.pending(0, 100);
    assert.equal(rows.length, 10);
    assert.deepEqual((await s.outbox.pending(0, 3, rows[4]!.id)).map((r) => r.id), rows.slice(5, 8).map((r) => r.id), 'after + limit');
    const grant = (await s.leases.acquire('outbox:default', '0', 'relay-a', 10_000))!;
    assert.equal(await s.outbox.markSent(0, rows[3]!.id, grant), true);
    assert.deepEqual((await s.outbox.pending(0, 100)).map((r) => r.id), rows.slice(4).map((r) => r.id));
    assert.equal(await s.outbox.markSent(0, rows[1]!.id, grant), true, 'an older mark is accepted and changes nothing');
    assert.equal((await s.outbox.pending(0, 100)).length, 6);
    const stale: LeaseFence = { ...grant, epoch: grant.epoch - 1 };
    assert.equal(await s.outbox.markSent(0, rows[9]!.id, stale), false, 'fenced out');
    assert.equal(await s.outbox.markSent(0, rows[9]!.id, { ...grant, owner: 'relay-b' }), false);
    assert.equal((await s.outbox.backlog()).count, 6);
    // purge: nothing was sent before the first mark's time
    assert.equal(await s.outbox.purgeSent(0, 100), 0);
    const purged = await s.outbox.purgeSent(Date.now() + 1, 2);
    assert.equal(purged, 2, 'bounded by limit');
    assert.equal(await s.outbox.purgeSent(Date.now() + 1, 100), 2);
    assert.equal(s.db.db.prepare('SELECT count(*) FROM herald_outbox').pluck().get(), 6);
    assert.equal((await s.outbox.pending(0, 100)).length, 6, 'purging keeps the watermark');
    assert.equal(await s.outbox.markSent(0, rows[9]!.id, grant), true);
    assert.deepEqual(await s.outbox.backlog(), { count: 0, oldestCreatedAt: undefined });
    // ids are never reused after a purge
    await s.outbox.purgeSent(Date.now() + 1, 100);
    await s.uow.withTransaction((tx) => tx.publish('t', { envelope: env(99, 'k') }));
    const [next] = await s.outbox.pending(0, 10);
    assert.ok(Number(next!.id) > Number(rows[9]!.id));
    await assert.rejects(s.outbox.pending(1, 10), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
    await assert.rejects(s.outbox.pending(0, 10, 'x'), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
    await s.close();
  });

  it('a row whose envelope cannot be read is HERALD_ERR_CORRUPT_RECORD naming it', async () => {
    const s = setup(1);
    await s.uow.withTransaction((tx) => tx.publish('t', { envelope: env(1, 'k') }));
    s.db.db.prepare("UPDATE herald_outbox SET envelope = '{not json'").run();
    await assert.rejects(s.outbox.pending(0, 10), (e) => isHeraldError(e, 'HERALD_ERR_CORRUPT_RECORD') && /outbox row \d+/.test(e.message));
    await s.close();
  });
});

describe('SQLite scheduler store', () => {
  it('schedules durably (first id wins), in a transaction or alone; due in deliverAt order; fenced markFired; cancel', async () => {
    const s = setup();
    const sched = createSqliteSchedulerStore({ database: s.db });
    let woke = 0;
    sched.onWrite(() => woke++);
    const id = await s.uow.withTransaction((tx) => {
      tx.schedule({ topic: 't', message: { envelope: env(1) }, deliverAt: 3000, id: 'timer-1' });
      tx.schedule({ topic: 't', message: { envelope: env(2) }, deliverAt: 1, id: 'timer-1' });
      return tx.schedule({ topic: 't', message: { envelope: env(3) }, deliverAt: 2000 });
    });
    assert.equal(id, 'e-3', 'default id: the envelope id');
    assert.deepEqual(await sched.schedule([{ topic: 'u', message: { envelope: env(4), key: 'kk' }, deliverAt: 1000 }]), ['e-4']);
    assert.ok(woke >= 2);
    await assert.rejects(
      s.uow.withTransaction((tx) => {
        tx.schedule({ topic: 't', message: { envelope: env(5) }, deliverAt: 10 });
        throw new Error('rolled back');
      }),
    );
    assert.equal(await sched.pendingCount(), 3);
    assert.equal(await sched.nextDue(), 1000);
    const due = await sched.due(2500, 10);
    assert.deepEqual(due.map((d) => [d.id, d.topic, d.deliverAt, d.message.key]), [['e-4', 'u', 1000, 'kk'], ['e-3', 't', 2000, undefined]]);
    const grant = (await s.leases.acquire('scheduler:default', '0', 'me', 10_000))!;
    assert.equal(await sched.markFired(['e-4'], { ...grant, epoch: grant.epoch + 1 }), false);
    assert.equal(await sched.markFired(['e-4'], grant), true);
    assert.equal(await sched.pendingCount(), 2);
    await s.uow.withTransaction((tx) => tx.cancelScheduled('e-3'));
    assert.equal(await sched.cancel('timer-1'), true);
    assert.equal(await sched.cancel('timer-1'), false);
    assert.equal(await sched.nextDue(), undefined);
    await sched.close();
    await assert.rejects(sched.due(1, 1), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
    await s.close();
  });
});

describe('event-store append → outbox', () => {
  it('routed events are written to the outbox in the append transaction; a refused append writes no row', async () => {
    const path = freshPath();
    const uow = createSqliteUnitOfWork({ path, outboxPartitions: 2 });
    const store = createSqliteEventStore({
      path,
      outbox: {
        unitOfWork: uow,
        route: (e) =>
          e.type === 'internal'
            ? undefined
            : { topic: e.type === 'misrouted' ? 'bad topic' : 'accounts', message: { envelope: createEnvelope({ type: `account.${e.type}`, source: 'bank', id: e.id, data: e.data, partitionkey: e.streamId }) } },
      },
    });
    const outbox = createSqliteOutboxStore({ path });
    let woken = 0;
    outbox.onWrite(() => woken++);
    await store.appendToStream('acct-1', [{ type: 'opened', data: { n: 1 } }, { type: 'internal', data: {} }]);
    const [ok, stale, other] = await Promise.allSettled([
      store.appendToStream('acct-1', [{ type: 'deposited', data: { n: 2 } }], { expectedVersion: 2 }),
      store.appendToStream('acct-1', [{ type: 'deposited', data: { n: 3 } }], { expectedVersion: 1 }),
      store.appendToStream('acct-2', [{ type: 'opened', data: { n: 4 } }]),
    ]);
    assert.equal(ok.status, 'fulfilled');
    assert.ok(stale.status === 'rejected' && stale.reason instanceof ConcurrencyError);
    assert.equal(other.status, 'fulfilled');
    await assert.rejects(
      store.appendToStream('acct-3', [{ type: 'opened', data: { n: 5 } }, { type: 'misrouted', data: {} }]),
      (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && /topic/.test(e.message),
    );
    const rows = [...(await outbox.pending(0, 100)), ...(await outbox.pending(1, 100))];
    const ns = rows.map((r) => (r.message.envelope.data as { n: number }).n).sort();
    assert.deepEqual(ns, [1, 2, 4], 'one row per routed committed event; none for the refused appends');
    assert.equal((await store.readStream('acct-3')).events.length, 0);
    await new Promise((r) => setImmediate(r));
    assert.ok(woken >= 1, 'relays in this process are woken');
    const elsewhere = freshPath();
    const uow2 = createSqliteUnitOfWork({ path: elsewhere });
    assert.throws(
      () => createSqliteEventStore({ path, outbox: { unitOfWork: uow2, route: () => undefined } }),
      (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && /same|file/.test(e.message),
    );
    await uow2.close();
    await store.close();
    await outbox.close();
    await uow.close();
  });
});
