/**
 * `SchedulerStore` on the Herald SQLite file: delayed messages (`herald_scheduled`, keyed by id,
 * indexed by deliver_at) that survive restarts, read by core's scheduler runner. Rows are
 * written by `SqliteUnitOfWork` transactions (`tx.schedule`) or by `schedule()` here; an id
 * already stored keeps its first entry. `markFired` deletes the fired rows after checking the
 * runner's lease (`herald_leases`, same file) in the same `BEGIN IMMEDIATE` transaction.
 *
 * Same connection rules and concurrency as `SqliteOutboxStore`. After `close()` every method
 * rejects with `HERALD_ERR_CLOSED`.
 */
import { type Clock, HeraldError, type LeaseFence, type ScheduledRecord, type ScheduledWrite, type SchedulerStore, systemClock } from '@herald/core';
import { positiveInt } from '@herald/core/internal';
import type { DatabaseSource } from './database.ts';
import { fenceHolds, FileStore, notifyWrite, OutboxWriter, outboxPartitions, storedMessage } from './outbox-writer.ts';

export type SqliteSchedulerStoreOptions = DatabaseSource & {
  /** created_at of rows. Default the system clock. */
  readonly clock?: Clock;
  /** Largest encoded envelope accepted, bytes (default 1 MiB); 0 disables. */
  readonly maxPayloadBytes?: number;
  /** Errors thrown by `onWrite` listeners (default: a process warning). */
  readonly onError?: (error: unknown) => void;
};

type Row = [string, string, string | null, string, number];

/** Opens a scheduler store on the file (`path`) or on a shared `database`. */
export function createSqliteSchedulerStore(options: SqliteSchedulerStoreOptions): SqliteSchedulerStore {
  return new SqliteSchedulerStore(options);
}

export class SqliteSchedulerStore extends FileStore implements SchedulerStore {
  readonly #clock: Clock;
  readonly #writer: OutboxWriter;
  readonly #onError: (e: unknown) => void;

  constructor(options: SqliteSchedulerStoreOptions) {
    let partitions = 0;
    super(options, 'scheduled', 'SQLite scheduler store', (database) => {
      partitions = outboxPartitions(database);
    });
    this.#clock = options.clock ?? systemClock;
    this.#writer = new OutboxWriter(partitions, options.maxPayloadBytes);
    this.#onError = options.onError ?? ((e) => process.emitWarning(`scheduler store: ${e instanceof Error ? e.message : String(e)}`, 'HeraldWarning'));
  }

  async schedule(writes: readonly ScheduledWrite[]): Promise<readonly string[]> {
    this.assertOpen();
    if (!Array.isArray(writes)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'schedule takes an array of scheduled writes');
    if (writes.length === 0) return [];
    const db = this.database;
    const ids = await db.immediateAsync(() => {
      const now = this.#clock.now();
      return writes.map((w) => this.#writer.writeScheduled(db, w, now));
    });
    notifyWrite(this.file, 'scheduled', this.#onError);
    return ids;
  }

  async cancel(id: string): Promise<boolean> {
    this.assertOpen();
    if (typeof id !== 'string' || id === '') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `cancel takes a non-empty id (got ${String(id)})`);
    const db = this.database;
    return db.immediateAsync(() => db.statement('DELETE FROM herald_scheduled WHERE id = ?').run(id).changes === 1);
  }

  async due(now: number, limit: number): Promise<readonly ScheduledRecord[]> {
    this.assertOpen();
    if (typeof now !== 'number' || !Number.isFinite(now)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `now must be epoch ms (got ${String(now)})`);
    positiveInt('limit', limit);
    const db = this.database;
    const rows = db.read(
      () => db.statement('SELECT id, topic, key, envelope, deliver_at FROM herald_scheduled WHERE deliver_at <= ? ORDER BY deliver_at, id LIMIT ?').raw(true).all(now, limit) as Row[],
    );
    return rows.map((r) => ({ id: r[0], topic: r[1], message: storedMessage(r[3], r[2], `scheduled message "${r[0]}" (topic "${r[1]}")`, { id: r[0], topic: r[1] }), deliverAt: r[4] }));
  }

  async markFired(ids: readonly string[], fence: LeaseFence): Promise<boolean> {
    this.assertOpen();
    if (!Array.isArray(ids)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'markFired takes an array of ids');
    const db = this.database;
    return db.immediateAsync(() => {
      if (!fenceHolds(db, fence)) return false;
      const del = db.statement('DELETE FROM herald_scheduled WHERE id = ?');
      for (const id of ids) del.run(id);
      return true;
    });
  }

  async nextDue(): Promise<number | undefined> {
    this.assertOpen();
    const db = this.database;
    const v = db.read(() => db.statement('SELECT min(deliver_at) FROM herald_scheduled').pluck().get() as number | null);
    return v ?? undefined;
  }

  async pendingCount(): Promise<number> {
    this.assertOpen();
    const db = this.database;
    return db.read(() => db.statement('SELECT count(*) FROM herald_scheduled').pluck().get() as number);
  }
}
