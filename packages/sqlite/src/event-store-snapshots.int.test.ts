import assert from 'node:assert/strict';
import { after, it } from 'node:test';
import { createCommandHandler, loadState, type Decider } from '@herald/eventsourcing';
import { createSqliteEventStore } from './event-store.ts';
import { SqliteSnapshotStore } from './event-store-snapshots.ts';
import { tempDbPath } from './test-helpers.ts';

const { path, cleanup } = tempDbPath();
after(cleanup);

type Ev = { type: 'added'; data: { n: number } };
const counter: Decider<{ n: number }, { total: number; count: number }, Ev> = {
  initialState: () => ({ total: 0, count: 0 }),
  decide: (c) => ({ type: 'added', data: { n: c.n } }),
  evolve: (s, e) => ({ total: s.total + e.data.n, count: s.count + 1 }),
};

it('SQLite snapshots: saved by the policy, used on load, never moved back, survive reopening', async () => {
  const store = createSqliteEventStore({ path });
  const snaps = new SqliteSnapshotStore({ database: store.database });
  const handle = createCommandHandler(store, counter, { snapshots: { store: snaps, policy: { every: 10 } } });
  for (let i = 1; i <= 25; i++) await handle('counter-1', { n: i });
  const snap = await snaps.load('counter-1');
  assert.deepEqual([snap?.streamVersion, snap?.state], [20, { total: 210, count: 20 }]);
  await snaps.save({ ...snap!, streamVersion: 5, state: { total: -1, count: -1 } });
  assert.equal((await snaps.load('counter-1'))?.streamVersion, 20, 'an older snapshot does not replace a newer one');
  const loaded = await loadState(store, 'counter-1', counter, { store: snaps, policy: { every: 10 } });
  assert.deepEqual([loaded.snapshotVersion, loaded.eventsApplied, loaded.state], [20, 5, { total: 325, count: 25 }]);
  await store.close();
  const again = createSqliteEventStore({ path });
  const snaps2 = new SqliteSnapshotStore({ database: again.database });
  assert.equal((await snaps2.load('counter-1'))?.streamVersion, 20);
  await snaps2.delete('counter-1');
  assert.equal(await snaps2.load('counter-1'), undefined);
  await again.close();
});
