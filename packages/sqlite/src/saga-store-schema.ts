/**
 * The saga store's schema (component `herald_sagas` in `herald_meta`), migrated with the rest of
 * the file by `SqliteDatabase` (same rules: each migration idempotent, applied under the write
 * lock). A leaf module: `database.ts` imports it, it imports nothing.
 *
 * `herald_sagas.seq` (AUTOINCREMENT, never reused) orders listings (oldest started first) and is
 * their cursor; `revision` is the optimistic-concurrency check; `body` is the instance as JSON.
 * `herald_saga_timeline.seq` orders an instance's history and is its cursor.
 */
export const SAGA_SCHEMA_VERSION = 1;
export const SAGA_COMPONENT = 'herald_sagas';

export const SAGA_MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE IF NOT EXISTS herald_sagas (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    saga TEXT NOT NULL,
    key TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    status TEXT NOT NULL,
    revision INTEGER NOT NULL,
    body TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (saga, key)
  );
  CREATE INDEX IF NOT EXISTS herald_sagas_by_status ON herald_sagas (status, seq);
  CREATE INDEX IF NOT EXISTS herald_sagas_by_saga_status ON herald_sagas (saga, status, seq);
  CREATE TABLE IF NOT EXISTS herald_saga_timeline (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    saga TEXT NOT NULL,
    key TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    entry TEXT NOT NULL
  );
  CREATE INDEX IF NOT EXISTS herald_saga_timeline_by_instance ON herald_saga_timeline (saga, key, seq);
  `,
];
