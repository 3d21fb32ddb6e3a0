/**
 * Where saga instances and their timelines live. A `SagaStore<Native>` writes through the
 * `Transaction<Native>` of its backend's `UnitOfWork`, so an instance's new revision, its
 * timeline entries, the inbox record of the message that caused them, the messages it sends
 * (outbox) and its timers (scheduled messages) commit or roll back together.
 *
 * Failure rules:
 * - `save` with a stale `expectedRevision` throws `SagaConcurrencyError`
 *   (`HERALD_ERR_CONCURRENCY`, retryable) and writes nothing; the caller's transaction then
 *   rolls back. Two instances of one (saga, key) cannot exist.
 * - Writes made in a transaction that rolls back leave nothing behind (instance or timeline).
 * - Reads outside a transaction (`get`, `list`, `timeline`, `countByStatus`) see committed data.
 * - Every list is cursor-paginated: `limit` defaults to `DEFAULT_SAGA_PAGE` and is capped at
 *   `MAX_SAGA_PAGE`; `next` is an opaque cursor, undefined on the last page. Listing while
 *   instances change never repeats or skips an instance that existed for the whole listing.
 * - Bad arguments (an unknown status, a malformed cursor, a limit out of range) are
 *   `HERALD_ERR_INVALID_ARGUMENT`; a stored row that cannot be read back is
 *   `HERALD_ERR_CORRUPT_RECORD`.
 */
import { HeraldError, type HeraldErrorOptions, type Transaction } from '@herald/core';
import { SAGA_STATUSES, type SagaInstance, type SagaStatus, type SagaTimelineEntry } from './saga.ts';

export const DEFAULT_SAGA_PAGE = 100;
export const MAX_SAGA_PAGE = 1000;

export interface SagaListOptions {
  readonly saga?: string;
  readonly status?: SagaStatus;
  readonly cursor?: string;
  /** 1..MAX_SAGA_PAGE (default DEFAULT_SAGA_PAGE). */
  readonly limit?: number;
}

export interface SagaPage<T> {
  readonly items: readonly T[];
  /** Cursor of the next page; undefined on the last. */
  readonly next: string | undefined;
}

/** A timeline entry as stored: `seq` orders one instance's entries (ascending = the order they were written). */
export interface StoredSagaTimelineEntry extends SagaTimelineEntry {
  readonly seq: number;
  readonly instanceId: string;
}

export interface SagaStatusCount {
  readonly saga: string;
  readonly status: SagaStatus;
  readonly count: number;
}

export interface SagaStore<Native = unknown> {
  /** Backend name ('memory', 'sqlite', 'postgres'). */
  readonly name: string;
  /** The instance as this transaction sees it (its own writes included). */
  load(tx: Transaction<Native>, saga: string, key: string): Promise<SagaInstance | undefined>;
  /**
   * Writes `instance` (whose `revision` must be `expectedRevision + 1`) if the stored revision is
   * `expectedRevision` (0: none stored); else `SagaConcurrencyError`.
   */
  save(tx: Transaction<Native>, instance: SagaInstance, expectedRevision: number): Promise<void>;
  /** Appends entries to the instance's timeline, in order. */
  appendTimeline(tx: Transaction<Native>, saga: string, key: string, instanceId: string, entries: readonly SagaTimelineEntry[]): Promise<void>;
  /** Committed instance, or undefined. */
  get(saga: string, key: string): Promise<SagaInstance | undefined>;
  /** Instances, oldest started first, filtered by saga and status. */
  list(options?: SagaListOptions): Promise<SagaPage<SagaInstance>>;
  /** One instance's timeline, oldest first. */
  timeline(saga: string, key: string, options?: { readonly cursor?: string; readonly limit?: number }): Promise<SagaPage<StoredSagaTimelineEntry>>;
  /** Instances per (saga, status) with at least one instance: the `saga_instances` gauge. */
  countByStatus(): Promise<readonly SagaStatusCount[]>;
}

/**
 * `HERALD_ERR_CONCURRENCY` for a saga instance: another transaction saved it first. Retryable:
 * reload, decide again, save again (the saga runtime does, then lets the router retry).
 */
export class SagaConcurrencyError extends HeraldError {
  readonly saga: string;
  readonly key: string;
  readonly expectedRevision: number;
  readonly actualRevision: number;

  constructor(saga: string, key: string, expectedRevision: number, actualRevision: number, options: Omit<HeraldErrorOptions, 'details'> = {}) {
    super('HERALD_ERR_CONCURRENCY', `saga "${saga}" instance "${key}": expected revision ${expectedRevision}, but the stored instance is at revision ${actualRevision}`, {
      ...options,
      details: { saga, key, expectedRevision, actualRevision },
    });
    this.name = 'SagaConcurrencyError';
    this.saga = saga;
    this.key = key;
    this.expectedRevision = expectedRevision;
    this.actualRevision = actualRevision;
  }
}

function invalid(message: string): HeraldError {
  return new HeraldError('HERALD_ERR_INVALID_ARGUMENT', message);
}

/** Checks `save`'s arguments; shared by the backends. */
export function checkSave(instance: SagaInstance, expectedRevision: number): void {
  if (typeof instance !== 'object' || instance === null || typeof instance.saga !== 'string' || typeof instance.key !== 'string' || typeof instance.id !== 'string') {
    throw invalid('save needs a saga instance (from decideSaga)');
  }
  if (!Number.isSafeInteger(expectedRevision) || expectedRevision < 0) throw invalid(`expectedRevision must be a non-negative integer (got ${String(expectedRevision)})`);
  if (instance.revision !== expectedRevision + 1) throw invalid(`saga "${instance.saga}" instance "${instance.key}": revision ${instance.revision} must be expectedRevision + 1 (${expectedRevision + 1})`);
  if (!SAGA_STATUSES.includes(instance.status)) throw invalid(`saga "${instance.saga}" instance "${instance.key}": unknown status ${JSON.stringify(instance.status)}`);
}

/** Checks list options; returns the limit. Shared by the backends. */
export function checkListOptions(o: { readonly status?: SagaStatus; readonly limit?: number; readonly saga?: string }): number {
  if (o.status !== undefined && !SAGA_STATUSES.includes(o.status)) throw invalid(`status must be one of ${SAGA_STATUSES.join(', ')} (got ${JSON.stringify(o.status)})`);
  if (o.saga !== undefined && (typeof o.saga !== 'string' || o.saga.length === 0)) throw invalid(`saga must be a non-empty string (got ${JSON.stringify(o.saga)})`);
  const limit = o.limit ?? DEFAULT_SAGA_PAGE;
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_SAGA_PAGE) throw invalid(`limit must be an integer in 1..${MAX_SAGA_PAGE} (got ${String(limit)})`);
  return limit;
}

/** A cursor is the decimal sequence number of the last item returned. */
export function encodeCursor(seq: number): string {
  return String(seq);
}

/** Decodes a cursor (0 when absent); a malformed one is `HERALD_ERR_INVALID_ARGUMENT`. */
export function decodeCursor(cursor: string | undefined): number {
  if (cursor === undefined) return 0;
  if (typeof cursor !== 'string' || !/^(0|[1-9]\d{0,15})$/.test(cursor) || !Number.isSafeInteger(Number(cursor))) throw invalid(`malformed saga cursor ${JSON.stringify(cursor)}: pass back a page's "next" unchanged`);
  return Number(cursor);
}

function corruptRecord(what: string, cause: unknown): HeraldError {
  return new HeraldError('HERALD_ERR_CORRUPT_RECORD', `${what} could not be read back: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
}

/** Reads a stored instance (JSON) back; anything else is `HERALD_ERR_CORRUPT_RECORD` naming `where`. Shared by the backends. */
export function parseStoredInstance(body: string, where: string): SagaInstance {
  try {
    const v = JSON.parse(body) as SagaInstance;
    if (typeof v !== 'object' || v === null || typeof v.saga !== 'string' || typeof v.key !== 'string' || !Number.isSafeInteger(v.revision)) throw new Error('not a saga instance');
    return v;
  } catch (e) {
    throw corruptRecord(where, e);
  }
}

/** Reads a stored timeline entry (JSON) back; anything else is `HERALD_ERR_CORRUPT_RECORD` naming `where`. Shared by the backends. */
export function parseStoredTimelineEntry(entry: string, where: string): SagaTimelineEntry {
  try {
    return JSON.parse(entry) as SagaTimelineEntry;
  } catch (e) {
    throw corruptRecord(where, e);
  }
}
