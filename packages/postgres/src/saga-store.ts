/**
 * The PostgreSQL `SagaStore`: instances (`herald_sagas`) and timelines (`herald_saga_timeline`)
 * in the schema of the `PostgresUnitOfWork`, so a saga transition — the instance's new revision,
 * its timeline entries, the inbox record of the message that caused it, the messages it sends
 * (outbox) and its timers (scheduled messages) — commits in one local transaction.
 *
 * Writes (`load`, `save`, `appendTimeline`) go through `tx.native`, the unit of work's client,
 * inside its transaction. Reads outside a transaction (`get`, `list`, `timeline`,
 * `countByStatus`) use the store's pool and see committed data.
 *
 * `save` with `expectedRevision` 0 inserts (`ON CONFLICT DO NOTHING`: a concurrent insert of the
 * same (saga, key) waits on the unique index, then finds the conflict); otherwise it updates
 * only the row still at `expectedRevision` (a concurrent update waits for the row lock, then
 * re-checks the revision and finds it moved). Either way the loser gets `SagaConcurrencyError`
 * and writes nothing. The row lock taken by `save` is held to the commit, so one instance's
 * timeline entries are written, and numbered, one transition after the other.
 *
 * Listing cursors are `seq` (fixed when the instance is first saved); timelines are ordered by
 * their own `seq`.
 */
import type { Transaction } from '@herald/core';
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
import { checkListOptions, checkSave, decodeCursor, encodeCursor, parseStoredInstance as parseInstance, parseStoredTimelineEntry } from '@herald/eventsourcing/internal';
import type pg from 'pg';
import { type PgDatabase, type PgDatabaseSource, resolveDatabase } from './database.ts';
import { ensureMigrated } from './migrations.ts';
import { SAGA_COMPONENT } from './schema.ts';

export type PostgresSagaStoreOptions = PgDatabaseSource;

/** Opens a saga store (migrates its tables on first use). Give it the unit of work's `database`. */
export function createPostgresSagaStore(options: PostgresSagaStoreOptions): PostgresSagaStore {
  return new PostgresSagaStore(options);
}

export class PostgresSagaStore implements SagaStore<pg.PoolClient> {
  readonly name = 'postgres';
  readonly database: PgDatabase;
  readonly #owned: boolean;

  constructor(options: PostgresSagaStoreOptions) {
    const { database, owned } = resolveDatabase(options);
    this.database = database;
    this.#owned = owned;
  }

  /** Creates the saga tables if needed (every method does it on first use). */
  migrate(): Promise<void> {
    return ensureMigrated(this.database, [SAGA_COMPONENT]);
  }

  async load(tx: Transaction<pg.PoolClient>, saga: string, key: string): Promise<SagaInstance | undefined> {
    await this.migrate();
    const r = await tx.native.query<{ body: string }>('SELECT body FROM herald_sagas WHERE saga = $1 AND key = $2', [saga, key]);
    const row = r.rows[0];
    return row ? parseInstance(row.body, `saga "${saga}" instance "${key}"`) : undefined;
  }

  async save(tx: Transaction<pg.PoolClient>, instance: SagaInstance, expectedRevision: number): Promise<void> {
    checkSave(instance, expectedRevision);
    await this.migrate();
    const client = tx.native;
    const { saga, key } = instance;
    const body = JSON.stringify(instance);
    const r =
      expectedRevision === 0
        ? await client.query(
            `INSERT INTO herald_sagas (saga, key, instance_id, status, revision, body, started_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (saga, key) DO NOTHING`,
            [saga, key, instance.id, instance.status, instance.revision, body, instance.startedAt, instance.updatedAt],
          )
        : await client.query(
            'UPDATE herald_sagas SET instance_id = $1, status = $2, revision = $3, body = $4, updated_at = $5 WHERE saga = $6 AND key = $7 AND revision = $8',
            [instance.id, instance.status, instance.revision, body, instance.updatedAt, saga, key, expectedRevision],
          );
    if (r.rowCount === 1) return;
    const actual = await client.query<{ revision: number }>('SELECT revision FROM herald_sagas WHERE saga = $1 AND key = $2', [saga, key]);
    throw new SagaConcurrencyError(saga, key, expectedRevision, actual.rows[0]?.revision ?? 0);
  }

  async appendTimeline(tx: Transaction<pg.PoolClient>, saga: string, key: string, instanceId: string, entries: readonly SagaTimelineEntry[]): Promise<void> {
    if (entries.length === 0) return;
    await this.migrate();
    await tx.native.query(
      `INSERT INTO herald_saga_timeline (saga, key, instance_id, entry)
       SELECT $1, $2, $3, e FROM unnest($4::text[]) WITH ORDINALITY AS t(e, n) ORDER BY n`,
      [saga, key, instanceId, entries.map((e) => JSON.stringify(e))],
    );
  }

  async get(saga: string, key: string): Promise<SagaInstance | undefined> {
    await this.migrate();
    const r = await this.database.query<{ body: string }>('SELECT body FROM herald_sagas WHERE saga = $1 AND key = $2', [saga, key]);
    const row = r.rows[0];
    return row ? parseInstance(row.body, `saga "${saga}" instance "${key}"`) : undefined;
  }

  async list(options: SagaListOptions = {}): Promise<SagaPage<SagaInstance>> {
    const limit = checkListOptions(options);
    const after = decodeCursor(options.cursor);
    await this.migrate();
    const where = ['seq > $1'];
    const args: Array<string | number> = [after];
    if (options.saga !== undefined) {
      args.push(options.saga);
      where.push(`saga = $${args.length}`);
    }
    if (options.status !== undefined) {
      args.push(options.status);
      where.push(`status = $${args.length}`);
    }
    args.push(limit + 1);
    const r = await this.database.query<{ seq: string; saga: string; key: string; body: string }>(
      `SELECT seq, saga, key, body FROM herald_sagas WHERE ${where.join(' AND ')} ORDER BY seq LIMIT $${args.length}`,
      args,
    );
    const page = r.rows.slice(0, limit);
    return {
      items: page.map((x) => parseInstance(x.body, `saga "${x.saga}" instance "${x.key}"`)),
      next: r.rows.length > limit ? encodeCursor(Number(page[page.length - 1]!.seq)) : undefined,
    };
  }

  async timeline(saga: string, key: string, options: { readonly cursor?: string; readonly limit?: number } = {}): Promise<SagaPage<StoredSagaTimelineEntry>> {
    const limit = checkListOptions(options.limit !== undefined ? { limit: options.limit } : {});
    const after = decodeCursor(options.cursor);
    await this.migrate();
    const r = await this.database.query<{ seq: string; instance_id: string; entry: string }>(
      'SELECT seq, instance_id, entry FROM herald_saga_timeline WHERE saga = $1 AND key = $2 AND seq > $3 ORDER BY seq LIMIT $4',
      [saga, key, after, limit + 1],
    );
    const page = r.rows.slice(0, limit);
    return {
      items: page.map((x) => ({ ...parseStoredTimelineEntry(x.entry, `saga "${saga}" instance "${key}" timeline entry ${x.seq}`), seq: Number(x.seq), instanceId: x.instance_id })),
      next: r.rows.length > limit ? encodeCursor(Number(page[page.length - 1]!.seq)) : undefined,
    };
  }

  async countByStatus(): Promise<readonly SagaStatusCount[]> {
    await this.migrate();
    const r = await this.database.query<{ saga: string; status: SagaStatus; count: string }>(
      'SELECT saga, status, count(*)::text AS count FROM herald_sagas GROUP BY saga, status ORDER BY saga, status',
    );
    return r.rows.map((x) => ({ saga: x.saga, status: x.status, count: Number(x.count) }));
  }

  /** Closes the pool when this store opened it. Idempotent. */
  async close(): Promise<void> {
    if (this.#owned) await this.database.close();
  }
}
