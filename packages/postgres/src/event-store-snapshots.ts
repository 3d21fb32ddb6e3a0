/**
 * Snapshots in the event store's schema (`herald_es_snapshots`, one row per stream: the newest).
 * The state is stored as JSON: give the command handler `toSnapshot`/`fromSnapshot` for states
 * JSON cannot hold. `save` never moves a snapshot back to an older version (two writers racing)
 * and is a statement of its own — a snapshot is a cache, not part of the append. An unreadable
 * stored state reads as no snapshot.
 */
import { HeraldError } from '@herald/core';
import type { Snapshot, SnapshotStore } from '@herald/eventsourcing';
import { type PgDatabase, type PgDatabaseSource, resolveDatabase } from './database.ts';
import { ensureMigrated } from './migrations.ts';
import { EVENT_STORE_COMPONENT } from './schema.ts';

export class PostgresSnapshotStore implements SnapshotStore {
  readonly database: PgDatabase;
  readonly #owned: boolean;
  readonly #ready: Promise<void>;

  constructor(source: PgDatabaseSource) {
    const { database, owned } = resolveDatabase(source);
    this.database = database;
    this.#owned = owned;
    this.#ready = ensureMigrated(database, [EVENT_STORE_COMPONENT]);
    this.#ready.catch(() => {});
  }

  async load(streamId: string): Promise<Snapshot | undefined> {
    await this.#ready;
    const r = await this.database.query<{ version: number; schema_version: number; truncate_before: number; state: string; saved_at: string }>(
      'SELECT version, schema_version, truncate_before, state, saved_at FROM herald_es_snapshots WHERE stream_id = $1',
      [streamId],
    );
    const row = r.rows[0];
    if (!row) return undefined;
    let state: unknown;
    try {
      state = JSON.parse(row.state);
    } catch {
      return undefined; // a cache: an unreadable one is as good as none
    }
    return { streamId, streamVersion: row.version, schemaVersion: row.schema_version, truncateBefore: row.truncate_before, state, savedAt: Number(row.saved_at) };
  }

  async save(snapshot: Snapshot): Promise<void> {
    let json: string | undefined;
    try {
      json = JSON.stringify(snapshot.state);
    } catch (cause) {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `the snapshot state of "${snapshot.streamId}" is not JSON: ${(cause as Error).message}`, { cause });
    }
    if (json === undefined) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `the snapshot state of "${snapshot.streamId}" is not JSON`);
    await this.#ready;
    await this.database.query(
      `INSERT INTO herald_es_snapshots (stream_id, version, schema_version, truncate_before, state, saved_at) VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, schema_version = excluded.schema_version, truncate_before = excluded.truncate_before, state = excluded.state, saved_at = excluded.saved_at
       WHERE excluded.version >= herald_es_snapshots.version`,
      [snapshot.streamId, snapshot.streamVersion, snapshot.schemaVersion, snapshot.truncateBefore, json, Math.trunc(snapshot.savedAt)],
    );
  }

  async delete(streamId: string): Promise<void> {
    await this.#ready;
    await this.database.query('DELETE FROM herald_es_snapshots WHERE stream_id = $1', [streamId]);
  }

  /** Closes the pool if this store opened it. */
  async close(): Promise<void> {
    if (this.#owned) await this.database.close();
  }
}
