// The testkit's event-store and projection contracts, run unmodified against the PostgreSQL
// event store on the shared server: one fresh schema per scenario, dropped afterwards;
// `reopen` opens a second pool on the same schema (what another process sees).
import { describe } from 'node:test';
import { describeEventStoreContract, serverSkipReason } from '@herald/testkit';
import { PgDatabase } from './database.ts';
import { createPostgresEventStore } from './event-store.ts';
import { dropSchema, freshConnection, PG_PORT } from './test-helpers.ts';

const skip = await serverSkipReason('PostgreSQL', PG_PORT);

describe('postgres event store', { skip }, () => {
  describeEventStoreContract('postgres', async ({ clock, catalog }) => {
    const connection = freshConnection();
    const database = new PgDatabase(connection);
    const store = createPostgresEventStore({ database, clock, ...(catalog ? { catalog } : {}) });
    const others: PgDatabase[] = [];
    return {
      store,
      reopen: async (o) => {
        const db = new PgDatabase(connection);
        others.push(db);
        return createPostgresEventStore({ database: db, clock, ...o });
      },
      cleanup: async () => {
        await store.close();
        await database.close();
        for (const db of others) await db.close();
        await dropSchema(connection.schema!);
      },
    };
  });
});
