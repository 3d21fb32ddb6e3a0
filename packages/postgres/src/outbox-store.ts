/**
 * `OutboxStore` on PostgreSQL: what a relay (`createOutboxRelay` in core) reads. Rows are
 * written by `PostgresUnitOfWork` transactions (`tx.publish`) in the same schema.
 *
 * Why a relay never skips a row. Ids cannot come from a sequence alone: a sequence value is
 * taken at insert, but transactions commit out of order, so a relay that read id n+1 and marked
 * it sent would lose row n committed a moment later. Instead a row's id is
 * `txid * 10^6 + n`, where `txid` is `pg_current_xact_id()` of the transaction that wrote it,
 * and `pending` reads only ids below `pg_snapshot_xmin(pg_current_snapshot()) * 10^6` — rows
 * of transactions that have ended. Every transaction still in flight, and every transaction
 * that starts later, has a txid at or above that xmin, so any row that becomes visible later has
 * an id above every id `pending` ever returned: the sent watermark can never pass an unread
 * row, and the order of ids is the order rows become readable. Per key: a transaction that
 * starts after another committed gets a larger txid, so its rows come after; two transactions
 * that overlap are ordered by their txid (the order of their first writes). The same xmin
 * technique as the event store's global reads: docs/explanation/postgres-global-order.md.
 *
 * Cost: a transaction left open anywhere in the cluster (one that wrote something: it has a
 * txid) holds every relay back until it ends — never the writers.
 *
 * "Sent" is a watermark per partition (`herald_outbox_marks`): `markSent(p, upTo)` adds one row
 * when `upTo` is above the partition's newest mark, in one statement that also checks the
 * relay's lease in `herald_leases` (same schema), locking the lease row so a take-over waits
 * for the mark to commit. A relay that lost its partition can never mark; marks never move
 * back. `purgeSent(before, limit)` deletes, per partition, rows up to the newest mark made
 * before `before`, oldest first. `backlog()` counts unsent rows and reports the created_at of
 * the oldest.
 *
 * Wake-ups: `onWrite` listeners are called after every commit of this process that wrote outbox
 * rows, and on the NOTIFY of other processes' commits (one per commit); the relay also polls.
 *
 * After a dump and restore into ANOTHER cluster, transaction ids start lower than the stored
 * ones: drain the outbox before the dump (or restore with `pg_resetwal --epoch` past the old
 * epoch), else new rows would sort below the watermark: opening a store or unit of work on such
 * an outbox fails with `HERALD_ERR_STORAGE` (not retryable). After `close()` every method rejects
 * with `HERALD_ERR_CLOSED`. Every method is safe to call concurrently from many processes.
 */
import { type Clock, HeraldError, type LeaseFence, type OutboxBacklog, type OutboxRecord, type OutboxStore, systemClock } from '@herald/core';
import { nonNegativeInt, positiveInt } from '@herald/core/internal';
import { type PgDatabase, type PgDatabaseSource, resolveDatabase } from './database.ts';
import { FENCE_CTE, fenceParams, notifyLocalWrite, onSchemaWrite, outboxPartitions, ROWS_PER_TX, storedMessage } from './outbox-store-shared.ts';

export type PostgresOutboxStoreOptions = PgDatabaseSource & {
  /** Outbox partitions; must match the schema's if it has one (default: the schema's, else 8). */
  readonly partitions?: number;
  /** `sent_at` of marks (the purge's time base). Default the system clock. */
  readonly clock?: Clock;
  /**
   * How long `pending` waits for committed rows held back by a transaction still in flight
   * (re-reading after 1, 2, 4 … 50 ms) before it returns without them, ms (default 1000); the
   * store then wakes its readers again 20 ms later. So while a long transaction holds rows
   * back, a relay re-reads each such partition about 20 times a second; 0 returns at once (the
   * relay's poll finds the rows later).
   */
  readonly visibilityWaitMs?: number;
};

interface Row {
  id: string;
  topic: string;
  key: string | null;
  envelope: string;
  created_at: string;
}

/** The highest readable id bound: rows of transactions below the snapshot's xmin. */
const SAFE_BOUND = `(pg_snapshot_xmin(pg_current_snapshot())::text::numeric * ${ROWS_PER_TX})`;
const WATERMARK = `coalesce((SELECT max(upto) FROM herald_outbox_marks m WHERE m.partition = $1), -1)`;

/** Opens an outbox store (migrates the schema and fixes the partition count on first use). */
export async function createPostgresOutboxStore(options: PostgresOutboxStoreOptions): Promise<PostgresOutboxStore> {
  const { database, owned } = resolveDatabase(options);
  try {
    const partitions = await outboxPartitions(database, options.partitions);
    return new PostgresOutboxStore(database, owned, partitions, options.clock ?? systemClock, nonNegativeInt('visibilityWaitMs', options.visibilityWaitMs ?? 1000));
  } catch (e) {
    if (owned) await database.close();
    throw e;
  }
}

export class PostgresOutboxStore implements OutboxStore {
  readonly database: PgDatabase;
  readonly partitions: number;
  readonly #owned: boolean;
  readonly #clock: Clock;
  readonly #visibilityWaitMs: number;
  #closed = false;

  /** Use `createPostgresOutboxStore` (it migrates and reads the partition count). */
  constructor(database: PgDatabase, owned: boolean, partitions: number, clock: Clock, visibilityWaitMs = 1000) {
    this.database = database;
    this.#visibilityWaitMs = visibilityWaitMs;
    this.#owned = owned;
    this.partitions = partitions;
    this.#clock = clock;
  }

  async pending(partition: number, limit: number, after?: string): Promise<readonly OutboxRecord[]> {
    this.#open();
    this.#partition(partition);
    positiveInt('limit', limit);
    const from = after === undefined ? '-1' : parseOutboxId(after);
    const deadline = performance.now() + this.#visibilityWaitMs;
    // The newest row already committed (visible) when the call started but still held back by an
    // older transaction in flight: wait (bounded) until it is readable, so a call made after a
    // commit returns that commit's rows — later commits do not prolong the wait.
    let target: bigint | undefined;
    for (let delay = 1; ; delay = Math.min(delay * 2, 50)) {
      const r = await this.database.query<Row & { safe: string; held: string | null }>(
        `WITH b AS MATERIALIZED (SELECT ${SAFE_BOUND} AS safe, ${WATERMARK} AS mark)
         SELECT b.safe::text AS safe, (SELECT max(o.id) FROM herald_outbox o WHERE o.partition = $1 AND o.id >= b.safe)::text AS held,
                r.nid::text AS id, r.topic, r.key, r.envelope, r.created_at
           FROM b LEFT JOIN LATERAL (
             SELECT o.id AS nid, o.topic, o.key, o.envelope, o.created_at FROM herald_outbox o
              WHERE o.partition = $1 AND o.id > greatest($2::numeric, b.mark) AND o.id < b.safe
              ORDER BY o.id LIMIT $3) r ON true
          ORDER BY r.nid`,
        [partition, from, limit],
      );
      const rows = r.rows.filter((x) => x.id !== null);
      const first = r.rows[0]!;
      if (target === undefined && first.held !== null) target = BigInt(first.held);
      if (target !== undefined && rows.length < limit && BigInt(first.safe) <= target) {
        // Committed rows wait behind a transaction still in flight (see the module doc).
        if (performance.now() < deadline) {
          await new Promise((res) => setTimeout(res, delay));
          continue;
        }
        // Give up for now, and wake the readers again soon rather than at their next poll.
        setTimeout(() => {
          if (!this.#closed) notifyLocalWrite(this.database, 'outbox', () => {});
        }, 20).unref();
      }
      return rows.map((x) => ({
        id: x.id,
        partition,
        topic: x.topic,
        message: storedMessage(x.envelope, x.key, `outbox row ${x.id} (partition ${partition}, topic "${x.topic}")`, { id: x.id, partition, topic: x.topic }),
        createdAt: Number(x.created_at),
      }));
    }
  }

  async markSent(partition: number, upTo: string, fence: LeaseFence): Promise<boolean> {
    this.#open();
    this.#partition(partition);
    const id = parseOutboxId(upTo);
    const r = await this.database.query<{ ok: boolean }>(
      `WITH ${FENCE_CTE},
            ins AS (INSERT INTO herald_outbox_marks (partition, upto, sent_at)
                    SELECT $5, $6::numeric, $7 FROM fence
                     WHERE $6::numeric > coalesce((SELECT max(upto) FROM herald_outbox_marks WHERE partition = $5), -1)
                    ON CONFLICT DO NOTHING RETURNING 1)
       SELECT EXISTS (SELECT 1 FROM fence) AS ok, (SELECT count(*) FROM ins) AS n`,
      [...fenceParams(fence), partition, id, this.#clock.now()],
    );
    return r.rows[0]!.ok;
  }

  async backlog(): Promise<OutboxBacklog> {
    this.#open();
    const r = await this.database.query<{ count: string; oldest: string | null }>(
      `SELECT coalesce(sum(c.n), 0)::text AS count, min(c.oldest)::text AS oldest
         FROM generate_series(0, $1 - 1) AS p(partition),
         LATERAL (SELECT count(*) AS n, min(created_at) AS oldest FROM herald_outbox o
                   WHERE o.partition = p.partition
                     AND o.id > coalesce((SELECT max(upto) FROM herald_outbox_marks m WHERE m.partition = p.partition), -1)) c`,
      [this.partitions],
    );
    const row = r.rows[0]!;
    return { count: Number(row.count), oldestCreatedAt: row.oldest === null ? undefined : Number(row.oldest) };
  }

  async purgeSent(sentBefore: number, limit: number): Promise<number> {
    this.#open();
    if (typeof sentBefore !== 'number' || !Number.isFinite(sentBefore)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `sentBefore must be epoch ms (got ${String(sentBefore)})`);
    nonNegativeInt('limit', limit);
    if (limit === 0) return 0;
    // Statement by statement (each is safe alone: only rows at or below a mark are deleted).
    const db = this.database;
    let deleted = 0;
    for (let p = 0; p < this.partitions && deleted < limit; p++) {
      const cut = await db.query<{ cutoff: string | null }>('SELECT max(upto)::text AS cutoff FROM herald_outbox_marks WHERE partition = $1 AND sent_at < $2', [p, sentBefore]);
      const cutoff = cut.rows[0]!.cutoff;
      if (cutoff === null) continue;
      const d = await db.query('DELETE FROM herald_outbox WHERE id IN (SELECT id FROM herald_outbox WHERE partition = $1 AND id <= $2::numeric ORDER BY id LIMIT $3)', [p, cutoff, limit - deleted]);
      deleted += d.rowCount ?? 0;
      // Older marks are no longer needed once their rows are gone; the newest stays as the watermark.
      await db.query(
        'DELETE FROM herald_outbox_marks WHERE partition = $1 AND upto < $2::numeric AND NOT EXISTS (SELECT 1 FROM herald_outbox WHERE partition = $1 AND id <= $2::numeric)',
        [p, cutoff],
      );
    }
    return deleted;
  }

  onWrite(listener: () => void): () => void {
    this.#open();
    return onSchemaWrite(this.database, 'outbox', listener);
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

  #partition(p: number): void {
    if (!Number.isInteger(p) || p < 0 || p >= this.partitions) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `partition must be an integer from 0 to ${this.partitions - 1} (got ${p})`);
  }

  #open(): void {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'PostgreSQL outbox store is closed');
    this.database.assertOpen();
  }
}

/** An outbox id: a decimal string without leading zeros (or "0"), at most 40 digits. */
export function parseOutboxId(id: string): string {
  if (typeof id !== 'string' || !/^(0|[1-9]\d{0,39})$/.test(id)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `an outbox id is a decimal string (got ${JSON.stringify(id)})`);
  return id;
}
