// Must show: global readers never skip an event although transactions commit out of order.
// 1. Transaction A takes position n and stays open; transaction B takes n+1 and commits. A reader
//    (readAll and a live subscription) must not deliver n+1 before n commits, and must deliver n
//    then n+1 once A commits — while a naive "position > last seen" query already sees n+1.
// 2. 16 appenders, each its own pool (so their transactions interleave and commit out of order),
//    and one subscriber: every event delivered exactly once, in position order.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { RecordedEvent } from '@herald/eventsourcing';
import { assertDelivered, serverSkipReason, waitFor } from '@herald/testkit';
import { PgDatabase } from './database.ts';
import { createPostgresEventStore, type PostgresEventStore } from './event-store.ts';
import { dropSchema, freshConnection, PG_PORT } from './test-helpers.ts';

const skip = await serverSkipReason('PostgreSQL', PG_PORT);
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

function collect(store: PostgresEventStore, into: RecordedEvent[]): { stop: () => Promise<void> } {
  const sub = store.subscribe({ after: 0n, batchSize: 64 });
  const done = (async () => {
    for await (const e of sub) into.push(e);
  })();
  return {
    stop: async () => {
      await sub.close();
      await done;
    },
  };
}

describe('postgres global order under out-of-order commits', { skip }, () => {
  it('a reader does not deliver n+1 while the transaction holding n is open, and delivers n then n+1 when it commits', { timeout: 30_000 }, async () => {
    const connection = freshConnection();
    const writerDb = new PgDatabase(connection);
    const readerDb = new PgDatabase(connection);
    cleanups.push(async () => {
      await writerDb.close();
      await readerDb.close();
      await dropSchema(connection.schema!);
    });
    const writer = createPostgresEventStore({ database: writerDb });
    const reader = createPostgresEventStore({ database: readerDb, visibilityWaitMs: 200, pollMs: 20 });
    cleanups.push(() => writer.close());
    cleanups.push(() => reader.close());
    await writer.appendToStream('warm-1', [{ type: 'warm', data: 0 }]);
    const base = await writer.headPosition();

    const got: RecordedEvent[] = [];
    const sub = collect(reader, got);
    await waitFor(() => got.length === 1, { timeoutMs: 5000 });

    const a = await writerDb.pool.connect();
    const b = await writerDb.pool.connect();
    try {
      await a.query('BEGIN');
      const ra = await writer.appendInTransaction(a, 'order-a', [{ type: 'placed', data: { who: 'A' } }]);
      await b.query('BEGIN');
      const rb = await writer.appendInTransaction(b, 'order-b', [{ type: 'placed', data: { who: 'B' } }]);
      assert.equal(ra.position, base + 1n, 'A took position n');
      assert.equal(rb.position, base + 2n, 'B took position n+1');
      await b.query('COMMIT');

      // The hazard is real: a naive reader already sees n+1 and not n.
      const naive = await readerDb.query<{ position: string }>('SELECT position FROM herald_es_events WHERE position > $1 ORDER BY position', [base.toString()]);
      assert.deepEqual(naive.rows.map((r) => BigInt(r.position)), [rb.position], 'a plain query sees n+1 while n is still in flight');

      const page = await reader.readAll({ after: base });
      assert.deepEqual(page.events.map((e) => e.position), [], 'readAll returns nothing past n-1 while A is open');
      assert.ok(page.position < ra.position, `its cursor stays below n (got ${page.position})`);
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(got.map((e) => e.position), [base], 'the subscription delivered nothing past n-1 while A is open');

      await a.query('COMMIT');
      await waitFor(() => got.length === 3, { timeoutMs: 5000 });
      assert.deepEqual(got.map((e) => e.position), [base, ra.position, rb.position], 'then n, then n+1');
      assert.deepEqual(got.slice(1).map((e) => (e.data as { who: string }).who), ['A', 'B']);
      const again = await reader.readAll({ after: base });
      assert.deepEqual(again.events.map((e) => e.position), [ra.position, rb.position]);
    } finally {
      a.release();
      b.release();
      await sub.stop();
    }
  });

  it('16 concurrent appenders (own pools) and a subscriber: every event exactly once, in order', { timeout: 60_000 }, async () => {
    const APPENDERS = 16;
    const PER = Number(process.env.HERALD_PG_ORDER_EVENTS ?? 150);
    const connection = freshConnection({ max: 1 }); // 17 pools: keep within the server's max_connections beside other suites
    const dbs = Array.from({ length: APPENDERS + 1 }, () => new PgDatabase(connection));
    cleanups.push(async () => {
      for (const d of dbs) await d.close();
      await dropSchema(connection.schema!);
    });
    const stores = dbs.map((database) => createPostgresEventStore({ database, pollMs: 50 }));
    cleanups.push(async () => {
      for (const s of stores) await s.close();
    });
    const reader = stores[APPENDERS]!;
    await reader.ready();
    const got: RecordedEvent[] = [];
    const sub = collect(reader, got);
    const expected: string[] = [];
    await Promise.all(
      stores.slice(0, APPENDERS).map(async (store, w) => {
        for (let i = 0; i < PER; i++) {
          const id = `w${w}-${i}`;
          expected.push(id);
          // Mixed sizes; a few at once per appender so batches interleave.
          if (i % 3 === 0) await store.appendToStream(`s${w}-${i % 7}`, [{ type: 'e', data: i, id }]);
          else void store.appendToStream(`s${w}-${i % 7}`, [{ type: 'e', data: i, id }]);
        }
      }),
    );
    for (const s of stores.slice(0, APPENDERS)) await s.close();
    await waitFor(() => got.length >= expected.length, { timeoutMs: 30_000 });
    await new Promise((r) => setTimeout(r, 200)); // anything extra would show now
    await sub.stop();
    assertDelivered(expected, got.map((e) => e.id), { label: 'subscriber' });
    for (let i = 1; i < got.length; i++) assert.ok(got[i]!.position > got[i - 1]!.position, `positions increase (${got[i - 1]!.position} then ${got[i]!.position})`);
    const stats = stores.slice(0, APPENDERS).reduce((n, s) => n + s.stats.appendTransactions, 0);
    assert.ok(stats < expected.length, `appends were group-committed (${stats} transactions for ${expected.length} appends)`);
  });
});
