// The projection contract against PostgreSQL projections: the read model is a table the harness
// defines, in a fresh schema per scenario (dropped afterwards).
import { describe } from 'node:test';
import type { RecordedEvent } from '@herald/eventsourcing';
import { type ContractRow, describeProjectionContract, serverSkipReason } from '@herald/testkit';
import { PgDatabase } from './database.ts';
import { createPostgresEventStore } from './event-store.ts';
import { createPostgresProjection, type PostgresProjection } from './projections.ts';
import { dropSchema, freshConnection, PG_PORT } from './test-helpers.ts';

const skip = await serverSkipReason('PostgreSQL', PG_PORT);

describe('postgres projections', { skip }, () => {
  describeProjectionContract('postgres', async () => {
    const connection = freshConnection({ max: 6 });
    const database = new PgDatabase(connection);
    const store = createPostgresEventStore({ database });
    await store.ready();
    const open = new Set<PostgresProjection>();
    return {
      store,
      project: async ({ name, mode, category, multiplier = 1, retry }) => {
        const table = `rm_${name.toLowerCase().replace(/[^a-z0-9_]/g, '_')}`;
        const p = await createPostgresProjection(
          store,
          {
            name,
            ...(category !== undefined ? { category } : {}),
            tables: { [table]: `CREATE TABLE {${table}} (stream_id text PRIMARY KEY, count integer NOT NULL, total bigint NOT NULL, last_version integer NOT NULL)` },
            async handle(events: readonly RecordedEvent[], ctx) {
              for (const e of events) {
                if (e.type !== 'contract.added') continue;
                const d = e.data as { amount: number; fail?: boolean };
                if (d.fail) throw new Error('contract: this event fails on purpose');
                await ctx.query(
                  `INSERT INTO {${table}} (stream_id, count, total, last_version) VALUES ($1, 1, $2, $3)
                   ON CONFLICT (stream_id) DO UPDATE SET count = {${table}}.count + 1, total = {${table}}.total + excluded.total, last_version = excluded.last_version`,
                  [e.streamId, d.amount * multiplier, e.streamVersion],
                );
              }
            },
          },
          { mode, ...(retry ? { retry } : {}) },
        );
        open.add(p);
        return Object.assign(p, {
          read: async (streamId: string) =>
            (await database.query<ContractRow>(`SELECT count, total::int AS total, last_version AS "lastVersion" FROM "${table}" WHERE stream_id = $1`, [streamId])).rows[0],
          rows: async () => Number((await database.query<{ n: string }>(`SELECT count(*) AS n FROM "${table}"`)).rows[0]!.n),
        });
      },
      cleanup: async () => {
        for (const p of open) await p.close();
        await store.close();
        await database.close();
        await dropSchema(connection.schema!);
      },
    };
  });
});
