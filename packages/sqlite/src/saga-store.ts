/**
 * The SQLite `SagaStore`: instances and timelines in the Herald file, next to the outbox, the
 * inbox and the scheduled messages, so a saga transition commits in the unit of work's one
 * local transaction (`createSqliteUnitOfWork` on the same file).
 *
 * Writes (`load`, `save`, `appendTimeline`) go through `tx.native`, the unit of work's own
 * connection, inside its transaction. Reads outside a transaction (`get`, `list`, `timeline`,
 * `countByStatus`) use the store's own connection, which in WAL mode sees committed data only
 * and never waits for the write lock.
 *
 * `save` checks the stored revision under the write lock (the unit of work's `BEGIN IMMEDIATE`),
 * so two processes sharing the file cannot both move an instance from the same revision.
 */
import { checkListOptions, checkSave, decodeCursor, encodeCursor, parseStoredInstance as parseInstance, parseStoredTimelineEntry } from '@herald/eventsourcing/internal';
import {
  SagaConcurrencyError,
  type SagaInstance,
  type SagaListOptions,
  type SagaPage,
  type SagaStatus,
  type SagaStatusCount,
  type SagaStore,
  type SagaTimelineEntry,
  type StoredSagaTimelineEntry,
} from '@herald/eventsourcing';
import type { Transaction } from '@herald/core';
import type Database from 'better-sqlite3';
import { type DatabaseSource, resolveDatabase, type SqliteDatabase } from './database.ts';

export type SqliteSagaStoreOptions = DatabaseSource;

interface Statements {
  readonly get: Database.Statement;
  readonly revision: Database.Statement;
  readonly insert: Database.Statement;
  readonly update: Database.Statement;
  readonly timeline: Database.Statement;
}

const SQL = {
  get: 'SELECT body FROM herald_sagas WHERE saga = ? AND key = ?',
  revision: 'SELECT revision FROM herald_sagas WHERE saga = ? AND key = ?',
  insert: 'INSERT INTO herald_sagas (saga, key, instance_id, status, revision, body, started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
  update: 'UPDATE herald_sagas SET instance_id = ?, status = ?, revision = ?, body = ?, updated_at = ? WHERE saga = ? AND key = ? AND revision = ?',
  timeline: 'INSERT INTO herald_saga_timeline (saga, key, instance_id, entry) VALUES (?, ?, ?, ?)',
} as const;

/** Prepared statements per connection (the unit of work's native connection is not ours). */
const byConnection = new WeakMap<Database.Database, Statements>();

function statements(db: Database.Database): Statements {
  let s = byConnection.get(db);
  if (!s) {
    s = {
      get: db.prepare(SQL.get),
      revision: db.prepare(SQL.revision),
      insert: db.prepare(SQL.insert),
      update: db.prepare(SQL.update),
      timeline: db.prepare(SQL.timeline),
    };
    byConnection.set(db, s);
  }
  return s;
}

export function createSqliteSagaStore(options: SqliteSagaStoreOptions): SqliteSagaStore {
  return new SqliteSagaStore(options);
}

export class SqliteSagaStore implements SagaStore<Database.Database> {
  readonly name = 'sqlite';
  readonly database: SqliteDatabase;
  readonly #owned: boolean;

  constructor(options: SqliteSagaStoreOptions) {
    const { database, owned } = resolveDatabase(options);
    this.database = database;
    this.#owned = owned;
  }

  async load(tx: Transaction<Database.Database>, saga: string, key: string): Promise<SagaInstance | undefined> {
    const row = statements(tx.native).get.get(saga, key) as { body: string } | undefined;
    return row ? parseInstance(row.body, `saga "${saga}" instance "${key}"`) : undefined;
  }

  async save(tx: Transaction<Database.Database>, instance: SagaInstance, expectedRevision: number): Promise<void> {
    checkSave(instance, expectedRevision);
    const s = statements(tx.native);
    const { saga, key } = instance;
    const body = JSON.stringify(instance);
    if (expectedRevision === 0) {
      const existing = s.revision.get(saga, key) as { revision: number } | undefined;
      if (existing) throw new SagaConcurrencyError(saga, key, 0, existing.revision);
      s.insert.run(saga, key, instance.id, instance.status, instance.revision, body, instance.startedAt, instance.updatedAt);
      return;
    }
    const r = s.update.run(instance.id, instance.status, instance.revision, body, instance.updatedAt, saga, key, expectedRevision);
    if (r.changes === 0) {
      const actual = (s.revision.get(saga, key) as { revision: number } | undefined)?.revision ?? 0;
      throw new SagaConcurrencyError(saga, key, expectedRevision, actual);
    }
  }

  async appendTimeline(tx: Transaction<Database.Database>, saga: string, key: string, instanceId: string, entries: readonly SagaTimelineEntry[]): Promise<void> {
    const s = statements(tx.native);
    for (const e of entries) s.timeline.run(saga, key, instanceId, JSON.stringify(e));
  }

  async get(saga: string, key: string): Promise<SagaInstance | undefined> {
    const row = this.database.read(() => this.database.statement(SQL.get).get(saga, key)) as { body: string } | undefined;
    return row ? parseInstance(row.body, `saga "${saga}" instance "${key}"`) : undefined;
  }

  async list(options: SagaListOptions = {}): Promise<SagaPage<SagaInstance>> {
    const limit = checkListOptions(options);
    const after = decodeCursor(options.cursor);
    const where = ['seq > ?'];
    const args: Array<string | number> = [after];
    if (options.saga !== undefined) {
      where.push('saga = ?');
      args.push(options.saga);
    }
    if (options.status !== undefined) {
      where.push('status = ?');
      args.push(options.status);
    }
    const rows = this.database.read(() =>
      this.database.statement(`SELECT seq, saga, key, body FROM herald_sagas WHERE ${where.join(' AND ')} ORDER BY seq LIMIT ?`).all(...args, limit + 1),
    ) as Array<{ seq: number; saga: string; key: string; body: string }>;
    const page = rows.slice(0, limit);
    return {
      items: page.map((r) => parseInstance(r.body, `saga "${r.saga}" instance "${r.key}"`)),
      next: rows.length > limit ? encodeCursor(page[page.length - 1]!.seq) : undefined,
    };
  }

  async timeline(saga: string, key: string, options: { readonly cursor?: string; readonly limit?: number } = {}): Promise<SagaPage<StoredSagaTimelineEntry>> {
    const limit = checkListOptions(options.limit !== undefined ? { limit: options.limit } : {});
    const after = decodeCursor(options.cursor);
    const rows = this.database.read(() =>
      this.database.statement('SELECT seq, instance_id, entry FROM herald_saga_timeline WHERE saga = ? AND key = ? AND seq > ? ORDER BY seq LIMIT ?').all(saga, key, after, limit + 1),
    ) as Array<{ seq: number; instance_id: string; entry: string }>;
    const page = rows.slice(0, limit);
    return {
      items: page.map((r) => ({ ...parseStoredTimelineEntry(r.entry, `saga "${saga}" instance "${key}" timeline entry ${r.seq}`), seq: r.seq, instanceId: r.instance_id })),
      next: rows.length > limit ? encodeCursor(page[page.length - 1]!.seq) : undefined,
    };
  }

  async countByStatus(): Promise<readonly SagaStatusCount[]> {
    const rows = this.database.read(() => this.database.statement('SELECT saga, status, COUNT(*) AS count FROM herald_sagas GROUP BY saga, status ORDER BY saga, status').all()) as Array<{
      saga: string;
      status: SagaStatus;
      count: number;
    }>;
    return rows.map((r) => ({ saga: r.saga, status: r.status, count: r.count }));
  }

  /** Closes the store's own connection (when it opened it). Idempotent. */
  close(): void {
    if (this.#owned) this.database.close();
  }
}
