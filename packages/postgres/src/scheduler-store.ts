/**
 * `SchedulerStore` on PostgreSQL: delayed messages (`herald_scheduled`, keyed by id, indexed by
 * deliver_at) that survive restarts, read by core's scheduler runner. Rows are written by
 * `PostgresUnitOfWork` transactions (`tx.schedule`) or by `schedule()` here; an id already
 * stored keeps its first entry (`ON CONFLICT DO NOTHING`). `markFired` deletes the fired rows
 * in one statement that checks the runner's lease in `herald_leases` (same schema), locking the
 * lease row so a take-over waits for it.
 *
 * No order is promised between messages beyond deliverAt, so reads need no visibility bound: a
 * row committed late with an earlier deliverAt is simply due at the next read. Wake-ups as the
 * outbox store's (`onWrite`: in-process at once, other processes by NOTIFY; the runner also
 * polls). Safe to call concurrently from many processes. After `close()` every method rejects
 * with `HERALD_ERR_CLOSED`.
 */
import { type Clock, HeraldError, type LeaseFence, type ScheduledRecord, type ScheduledWrite, type SchedulerStore, systemClock } from '@herald/core';
import { positiveInt } from '@herald/core/internal';
import { type PgDatabase, type PgDatabaseSource, resolveDatabase } from './database.ts';
import {
  checkMaxPayload,
  encodeScheduled,
  ensureOutboxSchema,
  FENCE_CTE,
  fenceParams,
  INSERT_SCHEDULED_SQL,
  notifyLocalWrite,
  onSchemaWrite,
  scheduledParams,
  storedMessage,
  writeChannel,
} from './outbox-store-shared.ts';

export type PostgresSchedulerStoreOptions = PgDatabaseSource & {
  /** created_at of rows. Default the system clock. */
  readonly clock?: Clock;
  /** Largest encoded envelope accepted, bytes (default 1 MiB); 0 disables. */
  readonly maxPayloadBytes?: number;
  /** Errors thrown by `onWrite` listeners (default: a process warning). */
  readonly onError?: (error: unknown) => void;
};

/** Opens a scheduler store on `database` (shared pool) or its own pool; migrates on first use. */
export function createPostgresSchedulerStore(options: PostgresSchedulerStoreOptions): PostgresSchedulerStore {
  return new PostgresSchedulerStore(options);
}

export class PostgresSchedulerStore implements SchedulerStore {
  readonly database: PgDatabase;
  readonly #owned: boolean;
  readonly #clock: Clock;
  readonly #maxPayload: number;
  readonly #onError: (e: unknown) => void;
  #closed = false;

  constructor(options: PostgresSchedulerStoreOptions) {
    this.#maxPayload = checkMaxPayload(options.maxPayloadBytes);
    const { database, owned } = resolveDatabase(options);
    this.database = database;
    this.#owned = owned;
    this.#clock = options.clock ?? systemClock;
    this.#onError = options.onError ?? ((e) => process.emitWarning(`scheduler store: ${e instanceof Error ? e.message : String(e)}`, 'HeraldWarning'));
  }

  async schedule(writes: readonly ScheduledWrite[]): Promise<readonly string[]> {
    await this.#ready();
    if (!Array.isArray(writes)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'schedule takes an array of scheduled writes');
    if (writes.length === 0) return [];
    const rows = writes.map((w) => encodeScheduled(w, this.#maxPayload));
    // Keep the first of repeated ids within one call too (one INSERT cannot touch a row twice).
    const seen = new Set<string>();
    const unique = rows.filter((r) => !seen.has(r.id) && (seen.add(r.id), true));
    // One statement: the rows and the NOTIFY commit together.
    await this.database.query(`WITH ins AS (${INSERT_SCHEDULED_SQL} RETURNING 1) SELECT pg_notify($7, '')`, [
      ...scheduledParams(unique, this.#clock.now()),
      writeChannel('scheduled', this.database.schema),
    ]);
    notifyLocalWrite(this.database, 'scheduled', this.#onError);
    return rows.map((r) => r.id);
  }

  async cancel(id: string): Promise<boolean> {
    if (typeof id !== 'string' || id === '') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `cancel takes a non-empty id (got ${String(id)})`);
    await this.#ready();
    const r = await this.database.query('DELETE FROM herald_scheduled WHERE id = $1', [id]);
    return r.rowCount === 1;
  }

  async due(now: number, limit: number): Promise<readonly ScheduledRecord[]> {
    if (typeof now !== 'number' || !Number.isFinite(now)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `now must be epoch ms (got ${String(now)})`);
    positiveInt('limit', limit);
    await this.#ready();
    const r = await this.database.query<{ id: string; topic: string; key: string | null; envelope: string; deliver_at: string }>(
      'SELECT id, topic, key, envelope, deliver_at FROM herald_scheduled WHERE deliver_at <= $1 ORDER BY deliver_at, id LIMIT $2',
      [Math.floor(now), limit],
    );
    return r.rows.map((x) => ({
      id: x.id,
      topic: x.topic,
      message: storedMessage(x.envelope, x.key, `scheduled message "${x.id}" (topic "${x.topic}")`, { id: x.id, topic: x.topic }),
      deliverAt: Number(x.deliver_at),
    }));
  }

  async markFired(ids: readonly string[], fence: LeaseFence): Promise<boolean> {
    if (!Array.isArray(ids)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'markFired takes an array of ids');
    const params = fenceParams(fence);
    await this.#ready();
    const r = await this.database.query<{ ok: boolean }>(
      `WITH ${FENCE_CTE},
            del AS (DELETE FROM herald_scheduled WHERE id = ANY($5::text[]) AND EXISTS (SELECT 1 FROM fence) RETURNING 1)
       SELECT EXISTS (SELECT 1 FROM fence) AS ok, (SELECT count(*) FROM del) AS n`,
      [...params, ids],
    );
    return r.rows[0]!.ok;
  }

  async nextDue(): Promise<number | undefined> {
    await this.#ready();
    const r = await this.database.query<{ t: string | null }>('SELECT min(deliver_at)::text AS t FROM herald_scheduled');
    const t = r.rows[0]!.t;
    if (t === null) return undefined;
    const at = Number(t);
    // The caller arms a timer for `at` once this resolves; if the clock passed `at` while the
    // query ran, that timer is born due (on a manual clock it would wait for the next advance):
    // wake the readers once, after the caller's continuation ran.
    setImmediate(() => {
      if (!this.#closed && at <= this.#clock.now()) notifyLocalWrite(this.database, 'scheduled', this.#onError);
    });
    return at;
  }

  async pendingCount(): Promise<number> {
    await this.#ready();
    const r = await this.database.query<{ n: string }>('SELECT count(*)::text AS n FROM herald_scheduled');
    return Number(r.rows[0]!.n);
  }

  onWrite(listener: () => void): () => void {
    this.#open();
    return onSchemaWrite(this.database, 'scheduled', listener);
  }

  /** Idempotent. Closes the pool only when this store opened it. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#owned) await this.database.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #ready(): Promise<void> {
    this.#open();
    await ensureOutboxSchema(this.database);
  }

  #open(): void {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'PostgreSQL scheduler store is closed');
    this.database.assertOpen();
  }
}
