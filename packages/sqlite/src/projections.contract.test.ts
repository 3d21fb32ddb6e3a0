// The projection contract against SQLite projections: the read model is a table the harness
// defines; one fresh database file per scenario.
import { after } from 'node:test';
import type { RecordedEvent } from '@herald/eventsourcing';
import { type ContractRow, describeProjectionContract } from '@herald/testkit';
import { createSqliteEventStore } from './event-store.ts';
import { createSqliteProjection, type SqliteProjection } from './projections.ts';
import { tempDbPath } from './test-helpers.ts';

const files: Array<() => void> = [];
after(() => {
  for (const cleanup of files) cleanup();
});

describeProjectionContract('sqlite', async () => {
  const { path, cleanup } = tempDbPath();
  files.push(cleanup);
  const store = createSqliteEventStore({ path });
  const open = new Set<SqliteProjection>();
  return {
    store,
    project: async ({ name, mode, category, multiplier = 1, retry }) => {
      const table = `rm_${name.replace(/[^A-Za-z0-9_]/g, '_')}`;
      const p = createSqliteProjection(
        store,
        {
          name,
          ...(category !== undefined ? { category } : {}),
          tables: { [table]: `CREATE TABLE {${table}} (stream_id TEXT PRIMARY KEY, count INTEGER NOT NULL, total INTEGER NOT NULL, last_version INTEGER NOT NULL)` },
          handle(events: readonly RecordedEvent[], ctx) {
            const up = ctx.statement(
              `INSERT INTO {${table}} (stream_id, count, total, last_version) VALUES (?, 1, ?, ?)
               ON CONFLICT (stream_id) DO UPDATE SET count = count + 1, total = total + excluded.total, last_version = excluded.last_version`,
            );
            for (const e of events) {
              if (e.type !== 'contract.added') continue;
              const d = e.data as { amount: number; fail?: boolean };
              if (d.fail) throw new Error('contract: this event fails on purpose');
              up.run(e.streamId, d.amount * multiplier, e.streamVersion);
            }
          },
        },
        { mode, ...(retry ? { retry } : {}) },
      );
      open.add(p);
      const db = store.database.db;
      return Object.assign(p, {
        read: async (streamId: string) => db.prepare(`SELECT count, total, last_version AS lastVersion FROM "${table}" WHERE stream_id = ?`).get(streamId) as ContractRow | undefined,
        rows: async () => (db.prepare(`SELECT count(*) AS n FROM "${table}"`).get() as { n: number }).n,
      });
    },
    cleanup: async () => {
      for (const p of open) await p.close();
      await store.close();
    },
  };
});
