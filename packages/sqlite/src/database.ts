/**
 * One SQLite database file shared by Herald's embedded backend: the partitioned log, the
 * consumer-group offsets, the leases and the dead letters live in the same file, so a fenced
 * write can check its lease in the same transaction as the write itself.
 *
 * Several OS processes may open the same file. The file runs in WAL mode (readers never block
 * the writer); every write transaction is `BEGIN IMMEDIATE`, so it takes the write lock before
 * it reads anything and never fails half-way with `SQLITE_BUSY_SNAPSHOT`. A writer that finds
 * the lock taken waits up to `busyTimeoutMs`, then fails with `HERALD_ERR_STORAGE` (retryable).
 * Asynchronous writers (`immediateAsync`: publish, offset commits, leases, dead letters) wait
 * without blocking the event loop: they try the lock, and retry on a short timer while another
 * connection holds it. Synchronous writers (`immediate`: topic creation, subscribe, migrations)
 * block in SQLite's own busy handler.
 *
 * Schema versions are kept in a `herald_meta` table rather than `PRAGMA user_version`: the
 * design puts a service's own tables (and its outbox) in the same file, and the service's
 * migration tool may well own `user_version`. Migrations are idempotent and run under the
 * write lock, so processes opening the file at the same time apply them once. A file whose
 * schema is newer than this code is refused with `HERALD_ERR_INVALID_ARGUMENT`.
 *
 * Not safe to share across worker threads (better-sqlite3 connections are per thread). Every
 * method is synchronous; transactions never span an `await`.
 */
import Database from 'better-sqlite3';
import { HeraldError, isHeraldError } from '@herald/core';
import { SAGA_COMPONENT, SAGA_MIGRATIONS, SAGA_SCHEMA_VERSION } from './saga-store-schema.ts';

export type SqliteSynchronous = 'NORMAL' | 'FULL';

export interface OpenDatabaseOptions {
  /** Path of the database file (created if missing). `':memory:'` works for one connection only. */
  readonly path: string;
  /**
   * `'NORMAL'` (default): a committed transaction survives a crash of the process; after a
   * power loss or OS crash the last transactions may be rolled back (never corrupted).
   * `'FULL'`: every commit is fsynced and survives power loss too.
   */
  readonly synchronous?: SqliteSynchronous;
  /** How long a writer waits for the write lock held by another connection, ms (default 5000). 0 fails at once. */
  readonly busyTimeoutMs?: number;
}

/** `tryImmediate` could not take the write lock. */
export const BUSY: unique symbol = Symbol('herald.sqlite.busy');

/** The schema version this code writes and understands. */
export const SCHEMA_VERSION = 1;
const SCHEMA_COMPONENT = 'herald';

/** Migration n (1-based) takes the schema from version n-1 to n. Each must be idempotent. */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE IF NOT EXISTS herald_topics (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    partitions INTEGER NOT NULL,
    created_at INTEGER NOT NULL
  );
  -- next offset to assign, one row per (topic, partition); offsets never go back even when every record was deleted
  CREATE TABLE IF NOT EXISTS herald_partitions (
    topic_id INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic_id, partition)
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS herald_log (
    topic_id INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    key TEXT,
    appended_at INTEGER NOT NULL,
    envelope TEXT NOT NULL,
    PRIMARY KEY (topic_id, partition, offset)
  ) WITHOUT ROWID;
  -- committed offset per (topic, group, partition); -1 = registered, nothing committed yet
  CREATE TABLE IF NOT EXISTS herald_offsets (
    topic_id INTEGER NOT NULL,
    grp TEXT NOT NULL,
    partition INTEGER NOT NULL,
    committed INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (topic_id, grp, partition)
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS herald_offsets_by_partition ON herald_offsets (topic_id, partition, committed);
  -- records a group never read because the hard size cap deleted them
  CREATE TABLE IF NOT EXISTS herald_retention_dropped (
    topic_id INTEGER NOT NULL,
    grp TEXT NOT NULL,
    dropped INTEGER NOT NULL,
    PRIMARY KEY (topic_id, grp)
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS herald_leases (
    scope TEXT NOT NULL,
    resource TEXT NOT NULL,
    owner TEXT,
    epoch INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (scope, resource)
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS herald_members (
    scope TEXT NOT NULL,
    member TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (scope, member)
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS herald_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    key TEXT,
    handler TEXT NOT NULL,
    event_id TEXT,
    type TEXT,
    status TEXT NOT NULL CHECK (status IN ('dead', 'parked', 'redrive')),
    parked_behind TEXT,
    envelope TEXT,
    raw TEXT NOT NULL,
    position TEXT NOT NULL,
    error_code TEXT,
    error_message TEXT NOT NULL,
    error_stack TEXT,
    attempts INTEGER NOT NULL,
    first_failed_at INTEGER NOT NULL,
    last_failed_at INTEGER NOT NULL
  );
  CREATE INDEX IF NOT EXISTS herald_dead_letters_by_key ON herald_dead_letters (grp, topic, key, id);
  CREATE INDEX IF NOT EXISTS herald_dead_letters_by_status ON herald_dead_letters (status, grp, topic, partition, id);
  CREATE TABLE IF NOT EXISTS herald_parked_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    partition INTEGER NOT NULL,
    draining INTEGER NOT NULL DEFAULT 0,
    parked_by INTEGER, -- the dead letter that parked the key: later messages are parked behind it
    UNIQUE (grp, topic, key)
  );
  `,
];

/** The event store's schema version (component `herald_eventstore` in `herald_meta`). */
export const EVENT_STORE_SCHEMA_VERSION = 1;
const EVENT_STORE_COMPONENT = 'herald_eventstore';

/**
 * Event store migrations (component `herald_eventstore`), same rules as `MIGRATIONS`.
 * A global position is one more than the last ever assigned: max(position), or the high-water
 * mark a tombstone leaves in `herald_es_head` (deleting the newest events must not make their
 * positions come back).
 */
const EVENT_STORE_MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE IF NOT EXISTS herald_es_events (
    position INTEGER PRIMARY KEY,
    stream_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    data TEXT NOT NULL,
    metadata TEXT,
    correlation_id TEXT,
    causation_id TEXT,
    recorded_at INTEGER NOT NULL,
    category TEXT NOT NULL
  );
  CREATE UNIQUE INDEX IF NOT EXISTS herald_es_events_by_stream ON herald_es_events (stream_id, version);
  CREATE UNIQUE INDEX IF NOT EXISTS herald_es_events_by_id ON herald_es_events (event_id); -- ids are unique in a store (one CloudEvents source)
  CREATE INDEX IF NOT EXISTS herald_es_events_by_category ON herald_es_events (category, position);
  CREATE TABLE IF NOT EXISTS herald_es_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_position INTEGER NOT NULL
  );
  INSERT OR IGNORE INTO herald_es_head (id, next_position) VALUES (1, 1);
  -- only streams with metadata, a soft delete or a tombstone have a row; state 0 live, 1 soft-deleted, 2 tombstoned
  CREATE TABLE IF NOT EXISTS herald_es_streams (
    stream_id TEXT PRIMARY KEY,
    state INTEGER NOT NULL DEFAULT 0,
    soft_deleted_before INTEGER NOT NULL DEFAULT 0,
    metadata TEXT
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS herald_es_checkpoints (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS herald_es_snapshots (
    stream_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    truncate_before INTEGER NOT NULL,
    state TEXT NOT NULL,
    saved_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  -- projections: checkpoint (position) committed with the read model's writes; a rebuild fills generation+1 tables, then swaps
  CREATE TABLE IF NOT EXISTS herald_es_projections (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    position INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    status TEXT NOT NULL,
    rebuild_position INTEGER,
    tables TEXT NOT NULL,
    error TEXT,
    updated_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  `,
];

/** The outbox/inbox/scheduler schema version (component `herald_outbox` in `herald_meta`). */
export const OUTBOX_SCHEMA_VERSION = 2;
const OUTBOX_COMPONENT = 'herald_outbox';

/**
 * Outbox, inbox and scheduled-message migrations (component `herald_outbox`), same rules as
 * `MIGRATIONS`. Outbox ids are AUTOINCREMENT (never reused after a purge) and assigned under the
 * write lock, so they grow in commit order across processes. A row is sent when its id is at
 * most its partition's greatest `herald_outbox_sent.upto` (one row per markSent, not one
 * UPDATE per row); purging deletes rows and marks below the newest mark older than the cutoff.
 * Version 2 adds `herald_inbox.duration_ms` (the handler attempt's duration, null when unknown).
 */
const OUTBOX_MIGRATIONS: readonly Migration[] = [
  `
  CREATE TABLE IF NOT EXISTS herald_outbox_settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    partitions INTEGER NOT NULL
  );
  CREATE TABLE IF NOT EXISTS herald_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    partition INTEGER NOT NULL,
    topic TEXT NOT NULL,
    key TEXT,
    envelope TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  CREATE INDEX IF NOT EXISTS herald_outbox_by_partition ON herald_outbox (partition); -- (partition, id): the rowid is the id
  CREATE TABLE IF NOT EXISTS herald_outbox_sent (
    partition INTEGER NOT NULL,
    upto INTEGER NOT NULL,
    sent_at INTEGER NOT NULL,
    PRIMARY KEY (partition, upto)
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS herald_inbox (
    grp TEXT NOT NULL,
    handler TEXT NOT NULL,
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    handled_at INTEGER NOT NULL,
    PRIMARY KEY (grp, handler, source, id)
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS herald_inbox_by_time ON herald_inbox (handled_at);
  CREATE TABLE IF NOT EXISTS herald_scheduled (
    id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    key TEXT,
    envelope TEXT NOT NULL,
    deliver_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS herald_scheduled_by_time ON herald_scheduled (deliver_at, id);
  `,
  (db) => addColumnIfMissing(db, 'herald_inbox', 'duration_ms', 'INTEGER'),
];

/** A migration: SQL, or a function for a step SQLite has no idempotent statement for (ADD COLUMN). */
type Migration = string | ((db: Database.Database) => void);

/** `ALTER TABLE … ADD COLUMN`, guarded: SQLite has no `ADD COLUMN IF NOT EXISTS`. */
function addColumnIfMissing(db: Database.Database, table: string, column: string, type: string): void {
  const columns = db.prepare(`SELECT name FROM pragma_table_info(?)`).all(table) as { name: string }[];
  if (!columns.some((c) => c.name === column)) db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${type}`);
}

/** Every schema component this code migrates, in order. */
const COMPONENTS: ReadonlyArray<{ readonly name: string; readonly version: number; readonly migrations: readonly Migration[] }> = [
  { name: SCHEMA_COMPONENT, version: SCHEMA_VERSION, migrations: MIGRATIONS },
  { name: EVENT_STORE_COMPONENT, version: EVENT_STORE_SCHEMA_VERSION, migrations: EVENT_STORE_MIGRATIONS },
  { name: OUTBOX_COMPONENT, version: OUTBOX_SCHEMA_VERSION, migrations: OUTBOX_MIGRATIONS },
  { name: SAGA_COMPONENT, version: SAGA_SCHEMA_VERSION, migrations: SAGA_MIGRATIONS },
];

/**
 * An open Herald database: the better-sqlite3 connection plus the write-transaction helper
 * every Herald store on this file goes through.
 */
export class SqliteDatabase {
  /** The raw connection. Use `immediate()` for writes. */
  readonly db: Database.Database;
  readonly path: string;
  readonly synchronous: SqliteSynchronous;
  readonly busyTimeoutMs: number;
  readonly #runner: Database.Transaction<(fn: () => unknown) => unknown>;
  readonly #statements = new Map<string, Database.Statement>();
  #writeTransactions = 0;
  #closed = false;

  constructor(options: OpenDatabaseOptions) {
    const synchronous = options.synchronous ?? 'NORMAL';
    if (synchronous !== 'NORMAL' && synchronous !== 'FULL') {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `synchronous must be 'NORMAL' or 'FULL' (got ${JSON.stringify(synchronous)})`);
    }
    const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    if (!Number.isInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `busyTimeoutMs must be a non-negative integer (got ${busyTimeoutMs})`);
    }
    if (typeof options.path !== 'string' || options.path.length === 0) {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'a database path is required');
    }
    this.path = options.path;
    this.synchronous = synchronous;
    this.busyTimeoutMs = busyTimeoutMs;
    let db: Database.Database;
    try {
      db = new Database(options.path, { timeout: busyTimeoutMs });
    } catch (cause) {
      throw storageError(`cannot open SQLite database "${options.path}"`, cause);
    }
    this.db = db;
    try {
      db.pragma(`busy_timeout = ${busyTimeoutMs}`);
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      if (String(mode).toLowerCase() !== 'wal' && options.path !== ':memory:') {
        throw new HeraldError('HERALD_ERR_STORAGE', `cannot switch "${options.path}" to WAL mode (journal_mode is ${String(mode)})`, { retryable: false });
      }
      db.pragma(`synchronous = ${synchronous}`);
      db.pragma('temp_store = MEMORY');
      db.pragma('cache_size = -16000');
      db.function('herald_icontains', { deterministic: true }, (haystack: unknown, needle: unknown) =>
        typeof haystack === 'string' && typeof needle === 'string' && haystack.toLowerCase().includes(needle.toLowerCase()) ? 1 : 0,
      );
      this.#runner = db.transaction((fn: () => unknown) => fn());
      this.#migrate();
    } catch (e) {
      db.close();
      if (isHeraldError(e)) throw e;
      throw storageError(`cannot prepare SQLite database "${options.path}"`, e);
    }
  }

  /** A prepared statement for `sql`, cached per connection. */
  statement(sql: string): Database.Statement {
    let st = this.#statements.get(sql);
    if (!st) {
      this.assertOpen();
      st = this.db.prepare(sql);
      this.#statements.set(sql, st);
    }
    return st;
  }

  /** Write transactions run through `immediate()` on this connection so far. */
  get writeTransactions(): number {
    return this.#writeTransactions;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Runs `fn` in a `BEGIN IMMEDIATE` transaction (a savepoint when already inside one) and
   * returns its result; commits when it returns, rolls back when it throws. `fn` must be
   * synchronous. SQLite failures (busy past the timeout, I/O) become `HERALD_ERR_STORAGE`;
   * Herald errors thrown by `fn` pass through unchanged.
   */
  immediate<T>(fn: () => T): T {
    this.assertOpen();
    const outer = !this.db.inTransaction;
    try {
      const value = this.#runner.immediate(fn) as T;
      if (outer) this.#writeTransactions++;
      return value;
    } catch (e) {
      if (isHeraldError(e)) throw e;
      throw storageError('SQLite write transaction failed', e);
    }
  }

  /**
   * `immediate()` for asynchronous callers: when another connection holds the write lock, waits
   * for it on a timer (1 ms, growing to 8 ms) instead of blocking the event loop, up to
   * `busyTimeoutMs`; then `HERALD_ERR_STORAGE` (retryable). `fn` runs once, when the lock is held.
   * The retry timer is real time (it paces I/O, it is not part of Herald's semantics).
   */
  async immediateAsync<T>(fn: () => T): Promise<T> {
    const first = this.tryImmediate(fn);
    if (first !== BUSY) return first;
    const deadline = performance.now() + this.busyTimeoutMs;
    for (let delay = 1; ; delay = Math.min(8, delay * 2)) {
      if (performance.now() >= deadline) {
        throw new HeraldError('HERALD_ERR_STORAGE', `SQLite write lock on "${this.path}" stayed busy for ${this.busyTimeoutMs} ms`, { details: { sqliteCode: 'SQLITE_BUSY' } });
      }
      await new Promise((r) => setTimeout(r, delay));
      const r = this.tryImmediate(fn);
      if (r !== BUSY) return r;
    }
  }

  /** Runs `fn` in a write transaction if the write lock is free now; `BUSY` when another connection holds it. */
  tryImmediate<T>(fn: () => T): T | typeof BUSY {
    this.assertOpen();
    if (this.db.inTransaction) return this.immediate(fn);
    // PRAGMA busy_timeout takes effect when the statement is prepared, not when it runs: a
    // cached prepared statement would be a no-op (and BEGIN would block for the full timeout).
    this.db.pragma('busy_timeout = 0');
    let began = false;
    try {
      const value = this.#runner.immediate(() => {
        began = true;
        return fn();
      }) as T;
      this.#writeTransactions++;
      return value;
    } catch (e) {
      if (isHeraldError(e)) throw e;
      // Only a refused BEGIN is retried: `fn` has not run.
      if (!began && (e as { code?: unknown })?.code === 'SQLITE_BUSY') return BUSY;
      throw storageError('SQLite write transaction failed', e);
    } finally {
      if (this.db.open) this.db.pragma(`busy_timeout = ${this.busyTimeoutMs}`);
    }
  }

  /** Runs a read (no transaction needed for one statement); wraps SQLite failures like `immediate`. */
  read<T>(fn: () => T): T {
    this.assertOpen();
    try {
      return fn();
    } catch (e) {
      if (isHeraldError(e)) throw e;
      throw storageError('SQLite read failed', e);
    }
  }

  assertOpen(): void {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', `SQLite database "${this.path}" is closed`);
  }

  /** Closes the connection. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.db.close();
  }

  /** The schema version stored in the file (0 for a file Herald has not initialised). */
  schemaVersion(component: string = SCHEMA_COMPONENT): number {
    const hasMeta = this.db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'herald_meta'`).get();
    if (!hasMeta) return 0;
    const row = this.db.prepare(`SELECT version FROM herald_meta WHERE component = ?`).get(component) as { version: number } | undefined;
    return row?.version ?? 0;
  }

  #migrate(): void {
    const check = (c: (typeof COMPONENTS)[number], v: number): void => {
      if (v > c.version) {
        throw new HeraldError(
          'HERALD_ERR_INVALID_ARGUMENT',
          `database "${this.path}" has ${c.name === SCHEMA_COMPONENT ? 'Herald' : `Herald ${c.name}`} schema version ${v}, newer than this @herald/sqlite understands (${c.version}); upgrade @herald/sqlite in every process that opens the file`,
          { details: { path: this.path, component: c.name, found: v, supported: c.version } },
        );
      }
    };
    const stale = COMPONENTS.filter((c) => {
      const seen = this.schemaVersion(c.name);
      check(c, seen);
      return seen !== c.version;
    });
    if (stale.length === 0) return;
    this.immediate(() => {
      this.db.exec(`CREATE TABLE IF NOT EXISTS herald_meta (component TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID`);
      for (const c of stale) {
        const current = this.schemaVersion(c.name); // another process may have migrated meanwhile
        check(c, current);
        for (let v = current; v < c.version; v++) {
          const m = c.migrations[v]!;
          if (typeof m === 'string') this.db.exec(m);
          else m(this.db);
        }
        this.db
          .prepare(`INSERT INTO herald_meta (component, version) VALUES (?, ?) ON CONFLICT (component) DO UPDATE SET version = excluded.version`)
          .run(c.name, c.version);
      }
    });
  }
}

/** Opens (creating and migrating if needed) a Herald database file. */
export function openDatabase(options: OpenDatabaseOptions): SqliteDatabase {
  return new SqliteDatabase(options);
}

/** Wraps a SQLite failure as a retryable `HERALD_ERR_STORAGE`. */
export function storageError(message: string, cause: unknown): HeraldError {
  const code = typeof cause === 'object' && cause !== null && typeof (cause as { code?: unknown }).code === 'string' ? (cause as { code: string }).code : undefined;
  const text = cause instanceof Error ? cause.message : String(cause);
  return new HeraldError('HERALD_ERR_STORAGE', `${message}: ${code ? `${code}: ` : ''}${text}`, { cause, details: code ? { sqliteCode: code } : {} });
}

/** A database given by the caller (shared, not closed by the user) or opened from a path (owned). */
export type DatabaseSource = { readonly database: SqliteDatabase } | ({ readonly path: string } & Omit<OpenDatabaseOptions, 'path'>);

/** Resolves a `DatabaseSource`; `owned` says whether the caller must close it. */
export function resolveDatabase(source: DatabaseSource): { database: SqliteDatabase; owned: boolean } {
  if ('database' in source && source.database !== undefined) {
    if (!(source.database instanceof SqliteDatabase)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', '`database` must be a SqliteDatabase from openDatabase()');
    return { database: source.database, owned: false };
  }
  return { database: openDatabase(source as OpenDatabaseOptions), owned: true };
}
