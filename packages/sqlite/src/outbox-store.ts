/**
 * `OutboxStore` on the Herald SQLite file: what a relay (`createOutboxRelay` in core) reads.
 * Rows are written by `SqliteUnitOfWork` transactions (`tx.publish`) and by event-store appends
 * routed to the outbox, in the same file.
 *
 * Ids are AUTOINCREMENT integers assigned under the write lock, so within a partition they grow
 * in commit order, across processes, and are never reused after a purge. "Sent" is a watermark
 * per partition: `markSent(p, upTo)` records one row (`herald_outbox_sent`), and a row is sent
 * when its id is at most the greatest mark of its partition — one write per call instead of an
 * UPDATE per row. `markSent` checks the relay's lease (`herald_leases`, same file) in the same
 * `BEGIN IMMEDIATE` transaction: a relay that lost its partition can never mark anything.
 * Marks never move the watermark back. The `markSent` calls made in one turn of the event loop
 * (a relay's partitions confirm their publishes together) share one transaction, each fenced
 * on its own; if that transaction fails, all of them reject (HERALD_ERR_STORAGE, retryable).
 *
 * `purgeSent(before, limit)` deletes, per partition, rows up to the newest mark recorded before
 * `before` (the rows known sent by then), oldest first, at most `limit` in all.
 * `backlog()` counts unsent rows through the (partition, id) index and reports the created_at of
 * the first unsent row of each partition (the oldest by commit order).
 *
 * The store may share a connection with a transport or lease store (its transactions are short
 * and synchronous), but not the unit of work's (a transaction held across awaits there would
 * make its reads see uncommitted rows). Every method is safe to call concurrently from many
 * processes. After `close()` every method rejects with `HERALD_ERR_CLOSED`.
 */
import { type Clock, HeraldError, type LeaseFence, type OutboxBacklog, type OutboxRecord, type OutboxStore, systemClock } from '@herald/core';
import { positiveInt, nonNegativeInt } from '@herald/core/internal';
import type { DatabaseSource } from './database.ts';
import { fenceHolds, FileStore, outboxPartitions, storedMessage } from './outbox-writer.ts';

export type SqliteOutboxStoreOptions = DatabaseSource & {
  /** Outbox partitions; must match the file's if it has one (default: the file's, else 8). */
  readonly partitions?: number;
  /** `sent_at` of marks (the purge's time base). Default the system clock. */
  readonly clock?: Clock;
};

type Row = [number, string, string | null, string, number];

/** Opens an outbox store on the file (`path`) or on a shared `database`. */
export function createSqliteOutboxStore(options: SqliteOutboxStoreOptions): SqliteOutboxStore {
  return new SqliteOutboxStore(options);
}

export class SqliteOutboxStore extends FileStore implements OutboxStore {
  readonly partitions: number;
  readonly #clock: Clock;
  readonly #marks: Array<{ partition: number; id: number; fence: LeaseFence; resolve: (ok: boolean) => void; reject: (e: unknown) => void }> = [];

  constructor(options: SqliteOutboxStoreOptions) {
    let partitions = 0;
    super(options, 'outbox', 'SQLite outbox store', (database) => {
      partitions = outboxPartitions(database, options.partitions);
    });
    this.partitions = partitions;
    this.#clock = options.clock ?? systemClock;
  }

  async pending(partition: number, limit: number, after?: string): Promise<readonly OutboxRecord[]> {
    this.assertOpen();
    this.#partition(partition);
    positiveInt('limit', limit);
    const from = after === undefined ? 0 : parseId(after);
    const db = this.database;
    const rows = db.read(
      () =>
        db
          .statement(
            `SELECT id, topic, key, envelope, created_at FROM herald_outbox
             WHERE partition = ? AND id > max(?, coalesce((SELECT max(upto) FROM herald_outbox_sent WHERE partition = ?), 0))
             ORDER BY id LIMIT ?`,
          )
          .raw(true)
          .all(partition, from, partition, limit) as Row[],
    );
    return rows.map((r) => ({
      id: String(r[0]),
      partition,
      topic: r[1],
      message: storedMessage(r[3], r[2], `outbox row ${r[0]} (partition ${partition}, topic "${r[1]}")`, { id: String(r[0]), partition, topic: r[1] }),
      createdAt: r[4],
    }));
  }

  async markSent(partition: number, upTo: string, fence: LeaseFence): Promise<boolean> {
    this.assertOpen();
    this.#partition(partition);
    const id = parseId(upTo);
    return new Promise<boolean>((resolve, reject) => {
      this.#marks.push({ partition, id, fence, resolve, reject });
      if (this.#marks.length === 1) setImmediate(() => void this.#flushMarks());
    });
  }

  /** The marks of one turn (a relay's partitions finish their publishes together) in ONE write transaction, each fenced on its own. */
  async #flushMarks(): Promise<void> {
    const marks = this.#marks.splice(0);
    const db = this.database;
    let results: boolean[];
    try {
      if (db.closed) throw new HeraldError('HERALD_ERR_CLOSED', 'SQLite outbox store is closed');
      results = await db.immediateAsync(() => {
        const now = this.#clock.now();
        const insert = db.statement(
          `INSERT INTO herald_outbox_sent (partition, upto, sent_at)
           SELECT ?, ?, ? WHERE ? > coalesce((SELECT max(upto) FROM herald_outbox_sent WHERE partition = ?), 0)`,
        );
        return marks.map((m) => {
          if (!fenceHolds(db, m.fence)) return false;
          insert.run(m.partition, m.id, now, m.id, m.partition);
          return true;
        });
      });
    } catch (e) {
      for (const m of marks) m.reject(e);
      return;
    }
    marks.forEach((m, i) => m.resolve(results[i]!));
  }

  async backlog(): Promise<OutboxBacklog> {
    this.assertOpen();
    const db = this.database;
    return db.read(() => {
      let count = 0;
      let oldest: number | undefined;
      for (let p = 0; p < this.partitions; p++) {
        const mark = (db.statement('SELECT coalesce(max(upto), 0) FROM herald_outbox_sent WHERE partition = ?').pluck().get(p) as number) ?? 0;
        count += db.statement('SELECT count(*) FROM herald_outbox WHERE partition = ? AND id > ?').pluck().get(p, mark) as number;
        const first = db.statement('SELECT created_at FROM herald_outbox WHERE partition = ? AND id > ? ORDER BY id LIMIT 1').pluck().get(p, mark) as number | undefined;
        if (first !== undefined && (oldest === undefined || first < oldest)) oldest = first;
      }
      return { count, oldestCreatedAt: oldest };
    });
  }

  async purgeSent(sentBefore: number, limit: number): Promise<number> {
    this.assertOpen();
    if (typeof sentBefore !== 'number' || !Number.isFinite(sentBefore)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `sentBefore must be epoch ms (got ${String(sentBefore)})`);
    nonNegativeInt('limit', limit);
    const db = this.database;
    return db.immediateAsync(() => {
      let deleted = 0;
      for (let p = 0; p < this.partitions && deleted < limit; p++) {
        const cutoff = db.statement('SELECT max(upto) FROM herald_outbox_sent WHERE partition = ? AND sent_at < ?').pluck().get(p, sentBefore) as number | null;
        if (cutoff === null || cutoff === undefined) continue;
        deleted += db
          .statement('DELETE FROM herald_outbox WHERE id IN (SELECT id FROM herald_outbox WHERE partition = ? AND id <= ? ORDER BY id LIMIT ?)')
          .run(p, cutoff, limit - deleted).changes;
        const left = db.statement('SELECT 1 FROM herald_outbox WHERE partition = ? AND id <= ? LIMIT 1').pluck().get(p, cutoff);
        // Older marks are no longer needed once their rows are gone; the newest stays as the watermark.
        if (left === undefined) db.statement('DELETE FROM herald_outbox_sent WHERE partition = ? AND upto < ?').run(p, cutoff);
      }
      return deleted;
    });
  }

  #partition(p: number): void {
    if (!Number.isInteger(p) || p < 0 || p >= this.partitions) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `partition must be an integer from 0 to ${this.partitions - 1} (got ${p})`);
  }
}

/** An outbox id (a decimal string of a positive safe integer, or "0"). */
export function parseId(id: string): number {
  const n = typeof id === 'string' && /^\d{1,16}$/.test(id) ? Number(id) : Number.NaN;
  if (!Number.isSafeInteger(n)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `an outbox id is a decimal string (got ${JSON.stringify(id)})`);
  return n;
}
