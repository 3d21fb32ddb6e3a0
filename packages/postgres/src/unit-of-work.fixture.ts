/**
 * The `UnitOfWorkHarness` the outbox, inbox and scheduler contracts run on PostgreSQL (tests
 * only, not exported): a unit of work on one pool, and the outbox, scheduler and lease stores on
 * a second pool to the same fresh schema, as a relay process would open them. `reopen()` opens
 * the same again, as another process would. `close()` drops the schema once every harness of it
 * closed.
 */
import type { Clock } from '@herald/core';
import type { UnitOfWorkFactory, UnitOfWorkHarness } from '@herald/testkit';
import type pg from 'pg';
import { type PgConnectionOptions, PgDatabase } from './database.ts';
import { PostgresLeaseStore } from './lease-store.ts';
import { createPostgresOutboxStore } from './outbox-store.ts';
import { createPostgresSchedulerStore } from './scheduler-store.ts';
import { dropSchema, freshConnection } from './test-helpers.ts';
import { createPostgresUnitOfWork } from './unit-of-work.ts';

async function open(connection: PgConnectionOptions, clock: Clock, onClosed: () => Promise<void>): Promise<UnitOfWorkHarness<pg.PoolClient>> {
  const uowDb = new PgDatabase(connection);
  const db = new PgDatabase(connection);
  const uow = createPostgresUnitOfWork({ database: uowDb, clock });
  await uow.partitions();
  await uowDb.query('CREATE TABLE IF NOT EXISTS kv (k text PRIMARY KEY, v text NOT NULL)');
  const outbox = await createPostgresOutboxStore({ database: db, clock });
  const scheduler = createPostgresSchedulerStore({ database: db, clock });
  const leases = new PostgresLeaseStore({ database: db, clock });
  let closed = false;
  return {
    uow,
    outbox,
    scheduler,
    leases,
    put: async (tx, key, value) => {
      await tx.native.query('INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v', [key, value]);
    },
    get: async (key) => (await db.query<{ v: string }>('SELECT v FROM kv WHERE k = $1', [key])).rows[0]?.v,
    reopen: async () => open(connection, clock, async () => {}),
    close: async () => {
      if (closed) return;
      closed = true;
      await uow.close();
      await Promise.all([outbox.close(), scheduler.close(), leases.close()]);
      await Promise.all([uowDb.close(), db.close()]);
      await onClosed();
    },
  };
}

export const postgresUnitOfWorkFactory: UnitOfWorkFactory<pg.PoolClient> = async ({ clock }) => {
  const connection = freshConnection();
  return open(connection, clock, () => dropSchema(connection.schema!));
};
