/**
 * Event-store append → outbox: when the event store and the outbox share the database file,
 * each appended event that `route` maps to a message is written to the outbox inside the
 * append's own savepoint of the group-commit transaction (an inline hook). A refused append
 * (stale expectedVersion, idempotency conflict, tombstoned stream, a route or message that
 * throws) writes no outbox row; a committed append has all of its rows. Outbox relays in this
 * process are woken after the commit; others find the rows by polling.
 *
 * Routed messages are checked like `tx.publish` (topic name, envelope, key, size). Errors a
 * `route` throws refuse that append only (a `HeraldError` passes through unchanged).
 */
import { type Clock, HeraldError, type OutgoingMessage, systemClock } from '@herald/core';
import type { RecordedEvent } from '@herald/eventsourcing';
import type { SqliteDatabase } from './database.ts';
import type { InlineBatchHook } from './event-store.ts';
import { fileOf, notifyWrite, OutboxWriter, outboxPartitions } from './outbox-writer.ts';

export interface EventStoreOutboxOptions {
  /** The message an appended event causes, or undefined for none. Runs inside the append's transaction: keep it pure. */
  readonly route: (event: RecordedEvent) => { readonly topic: string; readonly message: OutgoingMessage } | undefined;
  /**
   * The unit of work (or outbox store) the relay reads: only checked to be on the same file as
   * the event store (`HERALD_ERR_INVALID_ARGUMENT` otherwise). Optional.
   */
  readonly unitOfWork?: { readonly database: SqliteDatabase };
  readonly store?: { readonly database: SqliteDatabase };
  /** Largest encoded envelope accepted, bytes (default 1 MiB); 0 disables. */
  readonly maxPayloadBytes?: number;
  /** created_at of the rows (default: the system clock). */
  readonly clock?: Clock;
  /** Errors thrown by in-process `onWrite` listeners (default: a process warning). */
  readonly onError?: (error: unknown) => void;
}

/** What `attachEventStoreOutbox` needs of a SQLite event store. */
export interface OutboxHookTarget {
  readonly database: SqliteDatabase;
  addInlineHook(hook: InlineBatchHook): () => void;
}

/** Writes routed appends to the outbox in the append's transaction. Returns the remover. */
export function attachEventStoreOutbox(store: OutboxHookTarget, options: EventStoreOutboxOptions): () => void {
  if (typeof options?.route !== 'function') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'the event store outbox needs a route(event) function');
  const database = store.database;
  const file = fileOf(database);
  for (const other of [options.unitOfWork, options.store]) {
    if (other && fileOf(other.database) !== file) {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `the outbox must be in the event store's file "${file}" (got "${fileOf(other.database)}"): a transaction cannot span two files`);
    }
  }
  const writer = new OutboxWriter(outboxPartitions(database), options.maxPayloadBytes);
  const clock = options.clock ?? systemClock;
  const onError = options.onError ?? ((e: unknown) => process.emitWarning(`event store outbox: ${e instanceof Error ? e.message : String(e)}`, 'HeraldWarning'));
  let wrote = false;
  let wakeScheduled = false;
  return store.addInlineHook({
    begin() {
      wrote = false;
    },
    apply(events) {
      const now = clock.now();
      for (const e of events) {
        const routed = options.route(e);
        if (routed === undefined) continue;
        if (writer.writeOutbox(database, routed.topic, routed.message, now) > 0) wrote = true;
      }
    },
    end() {
      // The batch transaction commits synchronously after this returns: wake relays on the next turn.
      if (!wrote || wakeScheduled) return;
      wakeScheduled = true;
      setImmediate(() => {
        wakeScheduled = false;
        notifyWrite(file, 'outbox', onError);
      });
    },
  });
}
