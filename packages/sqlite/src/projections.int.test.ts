// SQLite-specific projection behaviour: the rebuild swap seen from another connection, inline
// catch-up of events appended by a process without the projection, rebuild resume after an
// interruption, DDL placeholders and index names across generations.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { waitForPosition, type RecordedEvent } from '@herald/eventsourcing';
import { createSqliteEventStore, type SqliteEventStore } from './event-store.ts';
import { createSqliteProjection, projectionPosition, type SqliteProjectionDefinition } from './projections.ts';
import { tempDbPath } from './test-helpers.ts';

const cleanups: Array<() => unknown> = [];
after(async () => {
  // Stores and projections first (a failed test must not leave a watcher keeping the process alive), files last.
  for (const c of cleanups.reverse()) await c();
});
function opened(store: SqliteEventStore): SqliteEventStore {
  cleanups.push(() => store.close());
  return store;
}
function freshPath(): string {
  const { path, cleanup } = tempDbPath();
  cleanups.push(cleanup);
  return path;
}

function totals(multiplier: number): SqliteProjectionDefinition {
  return {
    name: 'totals',
    tables: {
      totals: 'CREATE TABLE {totals} (stream_id TEXT PRIMARY KEY, total INTEGER NOT NULL); CREATE INDEX {totals}_by_total ON {totals} (total)',
    },
    handle(events: readonly RecordedEvent[], ctx) {
      const up = ctx.statement('INSERT INTO {totals} (stream_id, total) VALUES (?, ?) ON CONFLICT (stream_id) DO UPDATE SET total = total + excluded.total');
      for (const e of events) up.run(e.streamId, (e.data as { n: number }).n * multiplier);
    },
  };
}

async function fill(store: SqliteEventStore, events: number, streams = 20): Promise<number> {
  let sum = 0;
  for (let i = 0; i < events; i += 200) {
    await Promise.all(
      Array.from({ length: streams }, (_, s) => {
        const batch = Array.from({ length: 200 / streams }, (_, j) => ({ type: 'n', data: { n: i + j } }));
        for (const b of batch) sum += b.data.n;
        return store.appendToStream(`acct-${s}`, batch);
      }),
    );
  }
  return sum;
}

describe('SQLite projections', () => {
  it('rebuild: another connection reads the old table until the swap, then the new one — never neither, never a mix', async () => {
    const path = freshPath();
    const store = opened(createSqliteEventStore({ path }));
    const sum = await fill(store, 4000);
    const v1 = createSqliteProjection(store, totals(1), { mode: 'async' });
    await waitForPosition(v1, await store.headPosition(), { timeoutMs: 5000 });
    await v1.close();
    const v2 = createSqliteProjection(store, totals(2), { mode: 'async' });
    const reader = new Database(path, { readonly: true });
    const seen = new Set<number>();
    const errors: unknown[] = [];
    let reading = true;
    const readLoop = (async () => {
      while (reading) {
        try {
          seen.add((reader.prepare('SELECT sum(total) AS s FROM totals').get() as { s: number }).s);
        } catch (e) {
          errors.push(e);
        }
        await new Promise((r) => setImmediate(r));
      }
    })();
    const result = await v2.rebuild({ batchSize: 250 });
    reading = false;
    await readLoop;
    const afterSwap = (reader.prepare('SELECT sum(total) AS s FROM totals').get() as { s: number }).s;
    reader.close();
    assert.deepEqual(errors, [], 'the reader never hit a missing table');
    assert.ok(seen.has(sum), 'the reader saw the old read model during the rebuild');
    assert.ok([...seen].every((x) => x === sum || x === sum * 2), `the old sum or the new one, nothing in between (saw ${[...seen].join(', ')})`);
    assert.equal(afterSwap, sum * 2, 'after the swap, the new read model');
    assert.equal(result.position, await store.headPosition());
    const indexes = store.database.db.prepare(`SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'totals' AND name NOT LIKE 'sqlite_autoindex%'`).pluck().all();
    assert.deepEqual(indexes, ['totals__g1_by_total'], 'the index came with the new generation');
    assert.equal(store.database.db.prepare(`SELECT count(*) FROM sqlite_master WHERE name LIKE 'totals__g%' AND type = 'table'`).pluck().get(), 0, 'no shadow table left');
    // A second rebuild works too (generation 2, fresh index names).
    await v2.rebuild({ batchSize: 1000 });
    assert.equal((store.database.db.prepare('SELECT sum(total) AS s FROM totals').get() as { s: number }).s, sum * 2);
    await v2.close();
    await store.close();
  });

  it('an interrupted rebuild resumes from its stored shadow position', async () => {
    const store = opened(createSqliteEventStore({ path: freshPath() }));
    const sum = await fill(store, 2000);
    const p = createSqliteProjection(store, totals(3), { mode: 'inline' });
    const ac = new AbortController();
    await assert.rejects(
      p.rebuild({
        batchSize: 200,
        signal: ac.signal,
        onProgress: (x) => {
          if (x.events >= 600) ac.abort(new Error('stop'));
        },
      }),
      /stop/,
    );
    assert.equal(p.status(), 'rebuilding');
    const firsts: bigint[] = [];
    const r = await p.rebuild({ batchSize: 200, onProgress: (x) => void firsts.push(x.position) });
    assert.ok(firsts[0]! > 600n, `resumed after the interruption (first batch ended at ${firsts[0]})`);
    assert.equal(r.position, 2000n);
    assert.equal((store.database.db.prepare('SELECT sum(total) AS s FROM totals').get() as { s: number }).s, sum * 3, 'every event once, despite the interruption');
    assert.equal(p.status(), 'live');
    await p.close();
    await store.close();
  });

  it('inline: events appended by a process without the projection are applied by the next batch that has it', async () => {
    const path = freshPath();
    const a = opened(createSqliteEventStore({ path }));
    const b = opened(createSqliteEventStore({ path })); // another process, not registering the projection
    const p = createSqliteProjection(a, totals(1), { mode: 'inline' });
    await b.appendToStream('acct-x', [{ type: 'n', data: { n: 5 } }]);
    assert.equal(projectionPosition(a.database, 'totals'), 0n, 'b did not project');
    const r = await a.appendToStream('acct-y', [{ type: 'n', data: { n: 7 } }]);
    assert.equal(projectionPosition(a.database, 'totals'), r.position);
    const rows = a.database.db.prepare('SELECT stream_id, total FROM totals ORDER BY stream_id').all();
    assert.deepEqual(rows, [
      { stream_id: 'acct-x', total: 5 },
      { stream_id: 'acct-y', total: 7 },
    ]);
    await p.close();
    await a.close();
    await b.close();
  });

  it('refuses bad definitions', () => {
    const store = opened(createSqliteEventStore({ path: freshPath() }));
    assert.throws(() => createSqliteProjection(store, { ...totals(1), tables: { 'bad-name': 'CREATE TABLE {bad-name} (x)' } }, { mode: 'async' }), /identifier/);
    assert.throws(() => createSqliteProjection(store, { ...totals(1), tables: { t: 'CREATE TABLE other (x)' } }, { mode: 'async' }), /must create \{t\}/);
    assert.throws(() => createSqliteProjection(store, totals(1), { mode: 'lazy' as never }), /mode/);
  });
});
