// SQLite-specific behaviour of the event store, beyond the contract: group commit (one
// transaction for concurrent appends, a savepoint per append), durability across connections,
// wake-ups from another connection, a corrupt row, the write cache seeing other connections.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { isHeraldError } from '@herald/core';
import { ConcurrencyError, type RecordedEvent } from '@herald/eventsourcing';
import { createSqliteEventStore } from './event-store.ts';
import { tempDbPath, waitFor } from './test-helpers.ts';

const cleanups: Array<() => void> = [];
after(() => {
  for (const c of cleanups) c();
});
function freshPath(): string {
  const { path, cleanup } = tempDbPath();
  cleanups.push(cleanup);
  return path;
}

describe('SQLite event store', () => {
  it('group commit: appends made in one turn share ONE transaction; a conflict rolls back only its own savepoint', async () => {
    const store = createSqliteEventStore({ path: freshPath() });
    await store.appendToStream('acct-1', [{ type: 'opened', data: {} }]);
    const before = store.stats;
    const racers = Array.from({ length: 16 }, (_, i) =>
      store.appendToStream('acct-1', [{ type: 'deposited', data: { i } }, { type: 'noted', data: { i } }], { expectedVersion: 1 }),
    );
    const others = Array.from({ length: 20 }, (_, i) => store.appendToStream(`acct-${i + 2}`, [{ type: 'opened', data: { i } }]));
    const results = await Promise.allSettled([...racers, ...others]);
    const stats = store.stats;
    assert.equal(stats.appendTransactions - before.appendTransactions, 1, '36 appends, one transaction');
    assert.equal(results.slice(0, 16).filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results.slice(0, 16)) if (r.status === 'rejected') assert.ok(r.reason instanceof ConcurrencyError);
    assert.ok(results.slice(16).every((r) => r.status === 'fulfilled'), 'the other streams’ appends committed in the same transaction');
    assert.equal(stats.refused - before.refused, 15);
    const positions = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const all = positions.flatMap((p) => Array.from({ length: Number(p.position - p.firstPosition) + 1 }, (_, i) => p.firstPosition + BigInt(i))).sort((a, b) => (a < b ? -1 : 1));
    assert.deepEqual(all, Array.from({ length: 22 }, (_, i) => BigInt(i + 2)), 'positions stay gap-free: a rolled-back append takes none');
    assert.equal(await store.headPosition(), 23n);
    await store.close();
  });

  it('an exact retry inside a batch with other appends answers from the stored events', async () => {
    const store = createSqliteEventStore({ path: freshPath() });
    const first = await store.appendToStream('s-1', [{ type: 'a', data: 1, id: 'x1' }, { type: 'a', data: 2, id: 'x2' }]);
    const [retry, other, conflict] = await Promise.allSettled([
      store.appendToStream('s-1', [{ type: 'a', data: 1, id: 'x1' }, { type: 'a', data: 2, id: 'x2' }]),
      store.appendToStream('s-2', [{ type: 'b', data: 1 }]),
      store.appendToStream('s-3', [{ type: 'c', data: 1, id: 'x1' }]),
    ]);
    assert.deepEqual(retry.status === 'fulfilled' && retry.value, { ...first, idempotent: true });
    assert.equal(other.status, 'fulfilled');
    assert.ok(conflict.status === 'rejected' && isHeraldError(conflict.reason, 'HERALD_ERR_IDEMPOTENCY_CONFLICT'));
    assert.equal(await store.headPosition(), 3n);
    await store.close();
  });

  it('events, metadata, deletes and checkpoints persist across connections; the write cache sees other connections’ writes', async () => {
    const path = freshPath();
    const a = createSqliteEventStore({ path });
    const b = createSqliteEventStore({ path });
    await a.appendToStream('o-1', [{ type: 'x', data: 1 }]);
    await b.appendToStream('o-1', [{ type: 'x', data: 2 }], { expectedVersion: 1 });
    // a cached version 1 for o-1; b moved it to 2: a must see that.
    await assert.rejects(a.appendToStream('o-1', [{ type: 'x', data: 3 }], { expectedVersion: 1 }), (e) => e instanceof ConcurrencyError && e.actualVersion === 2);
    await b.deleteStream('o-1');
    assert.equal((await a.appendToStream('o-1', [{ type: 'x', data: 3 }], { expectedVersion: 'no_stream' })).streamVersion, 3);
    await a.tombstoneStream('o-2');
    await assert.rejects(b.appendToStream('o-2', [{ type: 'x', data: 1 }]), (e) => isHeraldError(e, 'HERALD_ERR_STREAM_DELETED'));
    await a.checkpoints.set('cp', 2n);
    await a.close();
    await b.close();
    const c = createSqliteEventStore({ path });
    assert.deepEqual((await c.readStream('o-1')).events.map((e) => e.data), [3]);
    assert.equal(await c.checkpoints.get('cp'), 2n);
    assert.equal((await c.getStream('o-2')).state, 'tombstoned');
    await c.close();
  });

  it('a subscription wakes on appends made by another connection (another process) within pollMs', async () => {
    const path = freshPath();
    const reader = createSqliteEventStore({ path, pollMs: 5 });
    const writer = createSqliteEventStore({ path });
    const got: RecordedEvent[] = [];
    const sub = reader.subscribe({});
    const loop = (async () => {
      for await (const e of sub) {
        got.push(e);
        if (got.length === 50) break;
      }
    })();
    for (let i = 0; i < 50; i++) {
      await writer.appendToStream(`w-${i % 3}`, [{ type: 'x', data: i }]);
      if (i % 10 === 0) await new Promise((r) => setTimeout(r, 3));
    }
    await waitFor(() => got.length === 50, 'the reader to see all 50 events', 2000);
    await loop;
    assert.deepEqual(got.map((e) => e.data), Array.from({ length: 50 }, (_, i) => i));
    await reader.close();
    await writer.close();
  });

  it('a corrupt stored row is a typed error naming its stream and position; the rest stays readable', async () => {
    const store = createSqliteEventStore({ path: freshPath() });
    await store.appendToStream('c-1', [{ type: 'x', data: 1 }, { type: 'x', data: 2 }, { type: 'x', data: 3 }]);
    store.database.db.prepare(`UPDATE herald_es_events SET data = '{"broken' WHERE position = 2`).run();
    await assert.rejects(store.readStream('c-1'), (e) => isHeraldError(e, 'HERALD_ERR_CORRUPT_RECORD') && e.details.position === '2' && e.message.includes('c-1'));
    assert.deepEqual((await store.readStream('c-1', { fromVersion: 3 })).events.map((e) => e.data), [3]);
    assert.deepEqual((await store.readAll({ after: 2n })).events.map((e) => e.data), [3]);
    await store.close();
  });

  it('the append queue is bounded: callers beyond maxQueuedEvents wait, and everything is written', async () => {
    const store = createSqliteEventStore({ path: freshPath(), maxQueuedEvents: 10, maxBatchEvents: 4 });
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => store.appendToStream(`q-${i % 5}`, [{ type: 'x', data: i }, { type: 'x', data: i }])));
    assert.equal(results.length, 50);
    assert.equal(await store.headPosition(), 100n);
    assert.ok(store.stats.appendTransactions >= 25, 'at most 4 events per transaction (2 appends)');
    await store.close();
    await assert.rejects(store.appendToStream('q-0', [{ type: 'x', data: 0 }]), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
  });
});
