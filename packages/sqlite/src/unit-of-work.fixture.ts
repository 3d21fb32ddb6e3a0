/**
 * The `UnitOfWorkHarness` the outbox, inbox and scheduler contracts run on SQLite (tests only,
 * not exported): a unit of work on its own connection, and the outbox store, scheduler store
 * and lease store on a second connection to the same file, as a relay process would open them.
 * `reopen()` opens the same again, as another process would.
 */
import type { Clock } from '@herald/core';
import type { UnitOfWorkFactory, UnitOfWorkHarness } from '@herald/testkit';
import type Database from 'better-sqlite3';
import { openDatabase } from './database.ts';
import { SqliteLeaseStore } from './lease-store.ts';
import { createSqliteOutboxStore } from './outbox-store.ts';
import { createSqliteSchedulerStore } from './scheduler-store.ts';
import { tempDbPath } from './test-helpers.ts';
import { createSqliteUnitOfWork } from './unit-of-work.ts';

function open(path: string, clock: Clock, cleanup: () => void): UnitOfWorkHarness<Database.Database> {
  const uow = createSqliteUnitOfWork({ path, clock });
  uow.database.db.exec('CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)');
  const db = openDatabase({ path });
  const outbox = createSqliteOutboxStore({ database: db, clock });
  const scheduler = createSqliteSchedulerStore({ database: db, clock });
  const leases = new SqliteLeaseStore({ database: db, clock });
  let closed = false;
  return {
    uow,
    outbox,
    scheduler,
    leases,
    put: (tx, key, value) => {
      tx.native.prepare('INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)').run(key, value);
    },
    get: async (key) => db.db.prepare('SELECT v FROM kv WHERE k = ?').pluck().get(key) as string | undefined,
    reopen: async () => open(path, clock, () => {}),
    close: async () => {
      if (closed) return;
      closed = true;
      await uow.close();
      await Promise.all([outbox.close(), scheduler.close(), leases.close()]);
      db.close();
      cleanup();
    },
  };
}

export const sqliteUnitOfWorkFactory: UnitOfWorkFactory<Database.Database> = async ({ clock }) => {
  const { path, cleanup } = tempDbPath();
  return open(path, clock, cleanup);
};
