// The testkit's universal contracts, run unmodified against the PostgreSQL backend on the
// shared server: leases, dead letters and the transport, one fresh schema per scenario (dropped
// at the end of the file).
import { after, describe } from 'node:test';
import type { Transport } from '@herald/core';
import { describeDeadLetterContract, describeLeaseStoreContract, describeTransportContract, ManualClock, serverSkipReason } from '@herald/testkit';
import { PgDatabase } from './database.ts';
import { PostgresDeadLetterStore } from './dead-letter-store.ts';
import { PostgresLeaseStore } from './lease-store.ts';
import { createPostgresTransport, PostgresTransport } from './transport.ts';
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

  // Leases short enough that partitions move within the suite's 1–2 s waits.
  const timing = { leaseMs: 600, heartbeatMs: 100, pollMs: 100 } as const;
  const pgt = (t: Transport): PostgresTransport => {
    if (!(t instanceof PostgresTransport)) throw new Error('not a PostgresTransport');
    return t;
  };
  const owned = new Map<Transport, PgDatabase>();
  const open = (database: PgDatabase): PostgresTransport => {
    const t = createPostgresTransport({ database, ...timing });
    owned.set(t, database);
    const close = t.close.bind(t);
    // The harness closes transports; their pools go with them.
    Object.assign(t, { close: async (o?: { timeoutMs?: number }) => { await close(o); await database.close(); } });
    return t;
  };
  describeTransportContract('postgres', {
    create: async () => open(fresh()),
    // Another pool on the same schema: what another process sees.
    createInGroup: async (first) => open(new PgDatabase(pgt(first).database.options)),
    deadLetters: (t) => new PostgresDeadLetterStore({ database: pgt(t).database }),
  });
});
