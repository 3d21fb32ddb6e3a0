// The PostgreSQL event store beyond the contract: two processes (two pools) appending to the
// same streams at once (the guarded write aborts itself and the batch is decided again: no
// lost or duplicated version), the first-write rule of the position reservation, snapshots
// through the command handler, time travel, and a retried append after an ambiguous failure.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { isHeraldError } from '@herald/core';
import { createCommandHandler, type Decider, loadState, stateAt } from '@herald/eventsourcing';
import { serverSkipReason } from '@herald/testkit';
import { PgDatabase } from './database.ts';
import { createPostgresEventStore } from './event-store.ts';
import { PostgresSnapshotStore } from './event-store-snapshots.ts';
import { dropSchema, freshConnection, PG_PORT } from './test-helpers.ts';

const skip = await serverSkipReason('PostgreSQL', PG_PORT);
const schemas: string[] = [];
after(async () => {
  for (const s of schemas) await dropSchema(s).catch(() => {});
});
function connection(): ReturnType<typeof freshConnection> {
  const c = freshConnection();
  schemas.push(c.schema!);
  return c;
}

type Ev = { type: 'added'; data: { n: number } };
const counter: Decider<{ n: number }, { total: number; count: number }, Ev> = {
  initialState: () => ({ total: 0, count: 0 }),
  decide: (c) => ({ type: 'added', data: { n: c.n } }),
  evolve: (s, e) => ({ total: s.total + e.data.n, count: s.count + 1 }),
};

describe('postgres event store', { skip }, () => {
  it('two processes appending to the same streams at once: every version once, nothing lost', { timeout: 60_000 }, async () => {
    const c = connection();
    const dbs = [new PgDatabase(c), new PgDatabase(c)];
    const stores = dbs.map((database) => createPostgresEventStore({ database }));
    try {
      const LOOPS = Math.ceil(Number(process.env.HERALD_PG_RACE_APPENDS ?? 150) / 8);
      await Promise.all(
        stores.map((store, w) =>
          Promise.all(
            Array.from({ length: 8 }, async (_, k) => {
              for (let i = 0; i < LOOPS; i++) await store.appendToStream(`race-${i % 3}`, [{ type: 'x', data: { w, k, i }, id: `w${w}-k${k}-${i}` }]);
            }),
          ),
        ),
      );
      const total = stores.length * 8 * LOOPS;
      let seen = 0;
      for (let s = 0; s < 3; s++) {
        const r = await stores[0]!.readStream(`race-${s}`, { maxCount: 10_000 });
        assert.deepEqual(r.events.map((e) => e.streamVersion), Array.from({ length: r.events.length }, (_, i) => i + 1), `race-${s}: versions 1..n, each once`);
        seen += r.events.length;
      }
      assert.equal(seen, total, 'every append stored once');
      const all = await stores[1]!.readAll({ maxCount: 10_000 });
      assert.equal(all.events.length, total);
      for (let i = 1; i < all.events.length; i++) assert.ok(all.events[i]!.position > all.events[i - 1]!.position);
      console.log(`# races decided again: ${stores.map((s) => s.stats.raceRetries).join(' + ')}`);
    } finally {
      for (const s of stores) await s.close();
      for (const d of dbs) await d.close();
    }
  });

  it('appendInTransaction refuses a transaction that already wrote (the reservation must come first); nothing stored', async () => {
    const database = new PgDatabase(connection());
    const store = createPostgresEventStore({ database });
    try {
      await store.appendToStream('warm', [{ type: 'x', data: 1 }]);
      const client = await database.pool.connect();
      try {
        await client.query('BEGIN');
        await client.query(`INSERT INTO herald_es_checkpoints (name, position, updated_at) VALUES ('other-write', 1, 0)`);
        await assert.rejects(
          () => store.appendInTransaction(client, 'late', [{ type: 'x', data: 2 }]),
          (e: unknown) => isHeraldError(e, 'HERALD_ERR_STORAGE') && /reserved before the transaction's first write/.test((e as Error).message),
        );
        await client.query('ROLLBACK');
      } finally {
        client.release();
      }
      assert.equal((await store.readStream('late')).events.length, 0);
      assert.equal(await store.headPosition(), 1n);
    } finally {
      await store.close();
      await database.close();
    }
  });

  it('snapshots: saved by the policy, used on load, never moved back; time travel by version and time', async () => {
    const database = new PgDatabase(connection());
    let now = 1_000_000;
    const clock = { now: () => now, monotonic: () => now, setTimer: (fn: () => void, ms: number) => { const t = setTimeout(fn, ms); return { cancel: () => clearTimeout(t) }; }, sleep: (ms: number) => new Promise<void>((r) => setTimeout(r, ms)) };
    const store = createPostgresEventStore({ database, clock: clock as never });
    const snaps = new PostgresSnapshotStore({ database });
    try {
      const handle = createCommandHandler(store, counter, { snapshots: { store: snaps, policy: { every: 10 } } });
      for (let i = 1; i <= 25; i++) {
        now += 1000;
        await handle('counter-1', { n: i });
      }
      const snap = await snaps.load('counter-1');
      assert.deepEqual([snap?.streamVersion, snap?.state], [20, { total: 210, count: 20 }]);
      await snaps.save({ ...snap!, streamVersion: 5, state: { total: -1, count: -1 } });
      assert.equal((await snaps.load('counter-1'))?.streamVersion, 20, 'an older snapshot does not replace a newer one');
      const loaded = await loadState(store, 'counter-1', counter, { store: snaps, policy: { every: 10 } });
      assert.deepEqual([loaded.snapshotVersion, loaded.eventsApplied, loaded.state], [20, 5, { total: 325, count: 25 }]);
      const atV3 = await stateAt(store, 'counter-1', counter, { version: 3 });
      assert.deepEqual(atV3.state, { total: 6, count: 3 });
      const atT = await stateAt(store, 'counter-1', counter, { time: 1_000_000 + 4500 });
      assert.deepEqual(atT.state, { total: 10, count: 4 }, 'the state as of a time: events recorded up to it');
      await snaps.delete('counter-1');
      assert.equal(await snaps.load('counter-1'), undefined);
    } finally {
      await store.close();
      await database.close();
    }
  });
});
