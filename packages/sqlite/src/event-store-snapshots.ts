/**
 * Snapshots in the SQLite file (`herald_es_snapshots`, one row per stream: the newest). The
 * state is stored as JSON: give the command handler `toSnapshot`/`fromSnapshot` for states
 * JSON cannot hold (Maps, Dates, bigints). `save` never moves a snapshot back to an older
 * version (two writers racing), and is a write transaction of its own — a snapshot is a cache,
 * not part of the append.
 */
import { HeraldError } from '@herald/core';
import type { Snapshot, SnapshotStore } from '@herald/eventsourcing';
import { type DatabaseSource, resolveDatabase, type SqliteDatabase } from './database.ts';

export class SqliteSnapshotStore implements SnapshotStore {
  readonly database: SqliteDatabase;
  readonly #owned: boolean;

  constructor(source: DatabaseSource) {
    const { database, owned } = resolveDatabase(source);
    this.database = database;
    this.#owned = owned;
  }

  async load(streamId: string): Promise<Snapshot | undefined> {
    const db = this.database;
    const row = db.read(() => db.statement('SELECT version, schema_version, truncate_before, state, saved_at FROM herald_es_snapshots WHERE stream_id = ?').get(streamId)) as
      | { version: number; schema_version: number; truncate_before: number; state: string; saved_at: number }
      | undefined;
    if (!row) return undefined;
    let state: unknown;
    try {
      state = JSON.parse(row.state);
    } catch (cause) {
      // A snapshot is a cache: an unreadable one is as good as none.
      void cause;
      return undefined;
    }
    return { streamId, streamVersion: row.version, schemaVersion: row.schema_version, truncateBefore: row.truncate_before, state, savedAt: row.saved_at };
  }

  async save(snapshot: Snapshot): Promise<void> {
    let json: string | undefined;
    try {
      json = JSON.stringify(snapshot.state);
    } catch (cause) {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `the snapshot state of "${snapshot.streamId}" is not JSON: ${(cause as Error).message}`, { cause });
    }
    if (json === undefined) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `the snapshot state of "${snapshot.streamId}" is not JSON`);
    const db = this.database;
    await db.immediateAsync(() =>
      db
        .statement(
          `INSERT INTO herald_es_snapshots (stream_id, version, schema_version, truncate_before, state, saved_at) VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, schema_version = excluded.schema_version, truncate_before = excluded.truncate_before, state = excluded.state, saved_at = excluded.saved_at
           WHERE excluded.version >= herald_es_snapshots.version`,
        )
        .run(snapshot.streamId, snapshot.streamVersion, snapshot.schemaVersion, snapshot.truncateBefore, json, snapshot.savedAt),
    );
  }

  async delete(streamId: string): Promise<void> {
    const db = this.database;
    await db.immediateAsync(() => db.statement('DELETE FROM herald_es_snapshots WHERE stream_id = ?').run(streamId));
  }

  /** Closes the database if this store opened it. */
  async close(): Promise<void> {
    if (this.#owned) this.database.close();
  }
}
