// The testkit's universal contracts, run unmodified against the PostgreSQL backend on the
// shared server: leases, dead letters and the transport, one fresh schema per scenario (dropped
// at the end of the file).
import { after, describe } from 'node:test';
import { describeDeadLetterContract, describeLeaseStoreContract, ManualClock, serverSkipReason } from '@herald/testkit';
import { PgDatabase } from './database.ts';
import { PostgresDeadLetterStore } from './dead-letter-store.ts';
import { PostgresLeaseStore } from './lease-store.ts';
import { dropSchema, freshConnection, PG_PORT } from './test-helpers.ts';

const skip = await serverSkipReason('PostgreSQL', PG_PORT);
const schemas: string[] = [];
after(async () => {
  for (const s of schemas) await dropSchema(s).catch(() => {});
});

function fresh(): PgDatabase {
  const c = freshConnection();
  schemas.push(c.schema!);
  return new PgDatabase(c);
}

describe('postgres', { skip }, () => {
  describeLeaseStoreContract('postgres (manual clock)', async () => {
    const clock = new ManualClock();
    const database = fresh();
    const store = new PostgresLeaseStore({ database, clock });
    return { store, clock, cleanup: async () => { await store.close(); await database.close(); } };
  });

  describeLeaseStoreContract('postgres (real time)', async () => {
    const database = fresh();
    const store = new PostgresLeaseStore({ database });
    return { store, cleanup: async () => { await store.close(); await database.close(); } };
  });

  describeDeadLetterContract('postgres', async () => {
    const database = fresh();
    const store = new PostgresDeadLetterStore({ database });
    return { store, cleanup: async () => { await store.close(); await database.close(); } };
  });
});
