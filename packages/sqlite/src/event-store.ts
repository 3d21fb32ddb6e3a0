/**
 * The SQLite event store: `EventStore` on the embedded database file, shared by every process
 * that opens it (WAL mode). Passes `describeEventStoreContract` unmodified.
 *
 * Tables (component `herald_eventstore`, see database.ts): `herald_es_events` (one row per
 * event; the global position is the rowid: one more than the last position ever assigned, which
 * `herald_es_head` remembers across tombstones), unique indexes on
 * (stream, version) and on the event id (ids are unique in a store), an index on (category, position); `herald_es_streams`
 * only for streams with metadata, a soft delete or a tombstone.
 *
 * Group commit. Appends are checked and encoded by the caller (catalog validation included),
 * then queued; every append queued while the previous transaction ran, or in the same turn of
 * the event loop, is written by ONE `BEGIN IMMEDIATE` transaction. Inside it each append runs
 * in its own SAVEPOINT (a single-event append without inline projections is one statement and
 * needs none): a stale `expectedVersion`, an idempotency conflict or an inline projection that
 * throws rolls back that append alone and rejects its caller; the others commit. Only a
 * failure of the transaction itself (the write lock stayed busy past `busyTimeoutMs`, I/O)
 * rejects the whole batch with `HERALD_ERR_STORAGE`, nothing of it stored. The expected version
 * is checked under the write lock, so writers in other processes are serialized with it too.
 *
 * Exact retries are found through the event id's unique index: an insert that hits it
 * rolls back to the append's savepoint and the append is answered from the stored events.
 *
 * Readers never skip: positions are assigned under the write lock and become visible in commit
 * order. A forward page reads the head first, then the events up to it, so its cursor is exact
 * without a read transaction. Subscriptions wake at once on appends from this store and within
 * `pollMs` on appends from other connections (`PRAGMA data_version` + the head row).
 *
 * Bounds: at most `maxQueuedEvents` events wait in the append queue (callers beyond it wait,
 * FIFO); at most `maxBatchEvents` per transaction; every read is a bounded page.
 */
import { traced } from '@herald/core/internal';
import { channels, type Clock, HeraldError, isHeraldError, systemClock } from '@herald/core';
import {
  type AppendOptions,
  type AppendResult,
  type CheckpointStore,
  type DeleteStreamOptions,
  type EventCatalog,
  type EventStore,
  type EventSubscription,
  type NewEvent,
  type ReadAllOptions,
  type ReadAllResult,
  type ReadStreamOptions,
  type ReadStreamResult,
  type RecordedEvent,
  type StreamInfo,
  type StreamMetadata,
  type StreamState,
  type SubscribeOptions,
} from '@herald/eventsourcing';
import {
  CatchUpSubscription,
  categoryOf,
  checkCategory,
  checkDirection,
  checkExpected,
  checkExpectedVersion,
  checkMaxCount,
  checkMetadata,
  checkPositionArg,
  checkStreamId,
  checkVersionArg,
  closedError,
  exactRetry,
  finishDecode,
  prepareEvents,
  type PreparedEvent,
  streamDeleted,
  visibility,
} from '@herald/eventsourcing/internal';
import type Database from 'better-sqlite3';
import { openDatabase, type SqliteDatabase, type SqliteSynchronous, storageError } from './database.ts';
import { positiveInt } from '@herald/core/internal';
import { attachEventStoreOutbox, type EventStoreOutboxOptions } from './event-store-outbox.ts';

export interface SqliteEventStoreOptions {
  /** Database file (created if missing). Give `path` or `database`. */
  readonly path?: string;
  /** An already open database (shared with a transport, outbox, read models…); not closed by the store. */
  readonly database?: SqliteDatabase;
  /** With `path`: 'NORMAL' (default) or 'FULL'. */
  readonly synchronous?: SqliteSynchronous;
  /** With `path`: how long a writer waits for another process's write lock, ms (default 5000). */
  readonly busyTimeoutMs?: number;
  /** Recorded times and maxAge (default the system clock). */
  readonly clock?: Clock;
  /** Validates appends and upcasts reads. */
  readonly catalog?: EventCatalog;
  /** How often subscriptions look for appends by other connections, ms (default 5). */
  readonly pollMs?: number;
  /** Most events one group-commit transaction writes (default 4096; an append larger than that goes alone). */
  readonly maxBatchEvents?: number;
  /** Bound of the append queue, in events (default 65 536); callers beyond it wait. */
  readonly maxQueuedEvents?: number;
  /** Writes routed appended events to the outbox in the append's transaction (same file; see event-store-outbox.ts). */
  readonly outbox?: EventStoreOutboxOptions;
}

/**
 * Runs inside the group-commit transaction for inline projections (see projections.ts).
 * `apply` runs inside the append's savepoint: throwing fails that append only.
 */
export interface InlineBatchHook {
  /** Before the first append of a batch; `head` is the last committed position. */
  begin(head: bigint): void;
  apply(events: readonly RecordedEvent[]): void;
  /** After the last append of a batch, still in the transaction; `head` is the new last position. */
  end(head: bigint): void;
}

export interface SqliteEventStoreStats {
  /** Group-commit transactions written. */
  readonly appendTransactions: number;
  /** Appends (calls) committed, failed ones excluded. */
  readonly appends: number;
  /** Events written. */
  readonly events: number;
  /** Appends refused inside a transaction (conflicts, idempotency conflicts, inline failures). */
  readonly refused: number;
}

interface PendingAppend {
  readonly streamId: string;
  readonly events: readonly PreparedEvent[];
  readonly expected: ReturnType<typeof checkExpectedVersion>;
  readonly resolve: (r: AppendResult) => void;
  readonly reject: (e: unknown) => void;
}

type Row = [number, string, number, string, string, number, string, string | null, string | null, string | null, number];

const COLUMNS = 'position, stream_id, version, event_id, type, schema_version, data, metadata, correlation_id, causation_id, recorded_at';

const STATE_LIVE = 0;
const STATE_SOFT = 1;
const STATE_TOMB = 2;
/** Streams remembered by the write cache before it starts over. */
const WRITE_CACHE_STREAMS = 100_000;

/**
 * The last position ever assigned: the newest event's rowid, or the high-water mark kept in
 * `herald_es_head` when tombstoning removed the newest events. Appends do not write the head
 * row (one page less per commit); only a tombstone does.
 */
export function lastPosition(db: SqliteDatabase): number {
  return db
    .statement('SELECT max(coalesce((SELECT max(position) FROM herald_es_events), 0), (SELECT next_position - 1 FROM herald_es_head WHERE id = 1))')
    .pluck()
    .get() as number;
}

/** Synchronous reads for Herald's SQLite projections (not public API). */
export const READ_ALL_SYNC: unique symbol = Symbol('herald.sqlite.readAllSync');

/** Creates a SQLite event store (opening the file when given a path). */
export function createSqliteEventStore(options: SqliteEventStoreOptions): SqliteEventStore {
  return new SqliteEventStore(options);
}

export class SqliteEventStore implements EventStore {
  readonly database: SqliteDatabase;
  readonly catalog: EventCatalog | undefined;
  readonly #ownsDb: boolean;
  readonly #clock: Clock;
  readonly #pollMs: number;
  readonly #maxBatch: number;
  readonly #maxQueued: number;
  readonly #queue: PendingAppend[] = [];
  #queued = 0;
  readonly #roomWaiters: Array<{ n: number; go: () => void }> = [];
  #flushScheduled = false;
  #flushing: Promise<void> | undefined;
  readonly #listeners = new Set<() => void>();
  readonly #subs = new Set<CatchUpSubscription>();
  readonly #inline = new Set<InlineBatchHook>();
  #watchTimer: NodeJS.Timeout | undefined;
  #knownHead = -1;
  #closed = false;
  #closing: Promise<void> | undefined;
  #stats = { appendTransactions: 0, appends: 0, events: 0, refused: 0 };
  readonly #savepoint: Database.Transaction<(fn: () => unknown) => unknown>;
  /**
   * Write-side cache of each stream's row state and last version, used only inside write
   * transactions and valid only while no other connection has committed: every write
   * transaction reads `PRAGMA data_version` first and drops the cache when it moved. It saves
   * the two lookups per append that otherwise cost as much as the insert.
   */
  readonly #wcache = new Map<string, { state: number | undefined; version: number }>();
  #wcacheDataVersion = -1;

  readonly checkpoints: CheckpointStore;

  constructor(options: SqliteEventStoreOptions) {
    if (options.database) {
      this.database = options.database;
      this.#ownsDb = false;
    } else if (typeof options.path === 'string') {
      this.database = openDatabase({
        path: options.path,
        ...(options.synchronous !== undefined ? { synchronous: options.synchronous } : {}),
        ...(options.busyTimeoutMs !== undefined ? { busyTimeoutMs: options.busyTimeoutMs } : {}),
      });
      this.#ownsDb = true;
    } else {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'createSqliteEventStore needs a path or a database');
    }
    this.catalog = options.catalog;
    this.#clock = options.clock ?? systemClock;
    this.#pollMs = positiveInt('pollMs', options.pollMs ?? 5);
    this.#maxBatch = positiveInt('maxBatchEvents', options.maxBatchEvents ?? 4096);
    this.#maxQueued = positiveInt('maxQueuedEvents', options.maxQueuedEvents ?? 65_536);
    this.#savepoint = this.database.db.transaction((fn: () => unknown) => fn());
    if (options.outbox) attachEventStoreOutbox(this, options.outbox);
    const db = this.database;
    this.checkpoints = {
      get: async (name) => {
        this.#open();
        const row = db.read(() => db.statement('SELECT position FROM herald_es_checkpoints WHERE name = ?').get(checkName(name)) as { position: number } | undefined);
        return row === undefined ? undefined : BigInt(row.position);
      },
      set: async (name, position) => {
        this.#open();
        if (typeof position !== 'bigint' || position < 0n) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `a checkpoint is a non-negative bigint (got ${String(position)})`);
        const n = checkName(name);
        await db.immediateAsync(() =>
          db
            .statement('INSERT INTO herald_es_checkpoints (name, position, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at')
            .run(n, position, this.#clock.now()),
        );
      },
    };
  }

  get stats(): SqliteEventStoreStats {
    return { ...this.#stats };
  }

  // ------------------------------------------------------------------------------- appends

  /** See `EventStore.appendToStream`. Safe to call concurrently; concurrent calls share transactions. */
  async appendToStream(streamId: string, events: readonly NewEvent[], options: AppendOptions = {}): Promise<AppendResult> {
    // Traced through `herald:append` (a straight call when nothing subscribes).
    return traced(channels.append, () => ({ store: 'sqlite', streamId, count: events.length }), () => this.#appendToStream(streamId, events, options));
  }

  async #appendToStream(streamId: string, events: readonly NewEvent[], options: AppendOptions): Promise<AppendResult> {
    this.#open();
    checkStreamId(streamId);
    const expected = checkExpectedVersion(options?.expectedVersion);
    const prepared = prepareEvents(streamId, events, this.catalog, this.#clock.now());
    const ready = Array.isArray(prepared) ? prepared : await prepared;
    this.#open();
    const n = Math.max(1, ready.length);
    if (this.#roomWaiters.length === 0 && (this.#queued === 0 || this.#queued + n <= this.#maxQueued)) this.#queued += n;
    else await new Promise<void>((go) => this.#roomWaiters.push({ n, go }));
    return new Promise<AppendResult>((resolve, reject) => {
      this.#queue.push({ streamId, events: ready, expected, resolve, reject });
      this.#scheduleFlush();
    });
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || this.#flushing) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      void this.#flush();
    });
  }

  #flush(): Promise<void> {
    if (this.#flushing) return this.#flushing;
    if (this.#queue.length === 0) return Promise.resolve();
    const run = async (): Promise<void> => {
      while (this.#queue.length > 0) {
        let batch: PendingAppend[] = [];
        let outcomes: Array<AppendResult | { error: unknown }> | undefined;
        let failure: unknown;
        try {
          if (this.database.closed) throw closedError('SQLite event store');
          outcomes = await this.database.immediateAsync(() => {
            batch = this.#take();
            return this.#write(batch);
          });
        } catch (e) {
          failure = e;
          this.#wcacheDataVersion = -1; // rolled back: what the cache learnt may be gone
          if (batch.length === 0) batch = this.#take();
        }
        let n = 0;
        for (const b of batch) n += Math.max(1, b.events.length);
        this.#queued -= n;
        this.#admitWaiters();
        if (outcomes) {
          this.#stats.appendTransactions++;
          let wrote = false;
          for (let i = 0; i < batch.length; i++) {
            const o = outcomes[i]!;
            if ('error' in o) {
              this.#stats.refused++;
              batch[i]!.reject(o.error);
            } else {
              this.#stats.appends++;
              if (!o.idempotent && batch[i]!.events.length > 0) {
                this.#stats.events += batch[i]!.events.length;
                wrote = true;
              }
              batch[i]!.resolve(o);
            }
          }
          if (wrote) this.#notify();
        } else {
          for (const b of batch) b.reject(failure);
        }
        if (this.#queue.length > 0) await new Promise<void>((r) => setImmediate(r));
      }
    };
    this.#flushing = run().finally(() => {
      this.#flushing = undefined;
      if (this.#queue.length > 0) this.#scheduleFlush();
    });
    return this.#flushing;
  }

  #take(): PendingAppend[] {
    let n = 0;
    let take = 0;
    while (take < this.#queue.length) {
      const size = this.#queue[take]!.events.length;
      if (take > 0 && n + size > this.#maxBatch) break;
      n += size;
      take++;
    }
    return this.#queue.splice(0, take);
  }

  #admitWaiters(): void {
    while (this.#roomWaiters.length > 0) {
      const w = this.#roomWaiters[0]!;
      if (this.#queued > 0 && this.#queued + w.n > this.#maxQueued) break;
      this.#roomWaiters.shift();
      this.#queued += w.n;
      w.go();
    }
  }

  /** Inside the write transaction: every append of the batch, each alone in its savepoint. */
  #write(batch: readonly PendingAppend[]): Array<AppendResult | { error: unknown }> {
    const db = this.database;
    this.#validateCache();
    // Statements are cached per connection with their mode: every SQL text here is used with one mode only.
    const start = lastPosition(db) + 1;
    let next = start;
    const now = this.#clock.now();
    const hooks = [...this.#inline];
    for (const h of hooks) h.begin(BigInt(start - 1));
    const out: Array<AppendResult | { error: unknown }> = new Array(batch.length);
    for (let i = 0; i < batch.length; i++) {
      const p = batch[i]!;
      const before = next;
      try {
        const single = p.events.length <= 1 && hooks.length === 0;
        const r = single ? this.#appendOne(p, next, now, hooks) : (this.#savepoint(() => this.#appendOne(p, next, now, hooks)) as { result: AppendResult; next: number });
        next = r.next;
        out[i] = r.result;
      } catch (e) {
        next = before;
        if (e instanceof ExactRetry) out[i] = e.result;
        else if (isHeraldError(e)) out[i] = { error: e };
        else if (isBusyOrIo(e)) throw e; // the transaction itself failed: the whole batch fails
        else out[i] = { error: storageError(`append to stream "${p.streamId}" failed`, e) };
      }
    }
    for (const h of hooks) h.end(BigInt(next - 1));
    return out;
  }

  #appendOne(p: PendingAppend, next: number, now: number, hooks: readonly InlineBatchHook[]): { result: AppendResult; next: number } {
    const db = this.database;
    const { streamId, events, expected } = p;
    const cached = this.#streamForWrite(streamId);
    if (cached.state === STATE_TOMB) throw streamDeleted(streamId);
    const version = cached.version;
    const state: StreamState = cached.state !== undefined ? (cached.state === STATE_SOFT ? 'soft_deleted' : 'live') : version > 0 ? 'live' : 'none';
    if (events.length === 0) {
      checkExpected(streamId, expected, version, state);
      const pos = version > 0 ? this.#positionOf(streamId, version) : 0n;
      return { result: { streamVersion: version, firstPosition: pos, position: pos, idempotent: false }, next };
    }
    try {
      checkExpected(streamId, expected, version, state);
    } catch (conflict) {
      // A stale expected version may be an exact retry of an append that did commit.
      const retry = exactRetry(streamId, events, this.#lookupIds(events), expected);
      if (retry) return { result: retry, next };
      throw conflict;
    }
    const insert = db.statement(
      `INSERT INTO herald_es_events (position, stream_id, version, event_id, type, schema_version, data, metadata, correlation_id, causation_id, recorded_at, category) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const category = categoryOf(streamId);
    const first = next;
    try {
      for (let i = 0; i < events.length; i++) {
        const e = events[i]!;
        insert.run(next + i, streamId, version + i + 1, e.id, e.type, e.schemaVersion, e.data, e.metadata, e.correlationId, e.causationId, now, category);
      }
    } catch (e) {
      if ((e as { code?: unknown })?.code !== 'SQLITE_CONSTRAINT_UNIQUE') throw e;
      // An event id already in the stream: an exact retry or a partial overlap. The savepoint
      // (or the single statement) is undone by the caller; answer from what is stored.
      const found = this.#lookupIds(events);
      const retry = exactRetry(streamId, events, found, expected);
      if (retry) throw new ExactRetry(retry);
      throw e;
    }
    if (cached.state === STATE_SOFT) db.statement('UPDATE herald_es_streams SET state = ? WHERE stream_id = ?').run(STATE_LIVE, streamId);
    if (hooks.length > 0) {
      const recorded: RecordedEvent[] = [];
      for (let i = 0; i < events.length; i++) {
        const e = events[i]!;
        const decoded = this.#decode([first + i, streamId, version + i + 1, e.id, e.type, e.schemaVersion, e.data, e.metadata, e.correlationId, e.causationId, now]);
        if (decoded) recorded.push(decoded);
      }
      for (const h of hooks) h.apply(recorded);
    }
    // Only now (the append can no longer fail) does the cache learn about it.
    if (cached.state === STATE_SOFT) cached.state = STATE_LIVE;
    cached.version = version + events.length;
    return {
      result: { streamVersion: version + events.length, firstPosition: BigInt(first), position: BigInt(first + events.length - 1), idempotent: false },
      next: first + events.length,
    };
  }

  /** Inside a write transaction: drops the write cache if another connection committed since it was filled. */
  #validateCache(): void {
    const dv = this.database.statement('PRAGMA data_version').pluck().get() as number;
    if (dv !== this.#wcacheDataVersion) {
      this.#wcache.clear();
      this.#wcacheDataVersion = dv;
    }
  }

  /** Inside a write transaction: the stream's row state and last version (cached). */
  #streamForWrite(streamId: string): { state: number | undefined; version: number } {
    let c = this.#wcache.get(streamId);
    if (!c) {
      const row = this.database.statement('SELECT state AS cached_state FROM herald_es_streams WHERE stream_id = ?').pluck().get(streamId) as number | undefined;
      c = { state: row, version: this.#lastVersion(streamId) };
      if (this.#wcache.size >= WRITE_CACHE_STREAMS) this.#wcache.clear();
      this.#wcache.set(streamId, c);
    }
    return c;
  }

  #lastVersion(streamId: string): number {
    const r = this.database.statement('SELECT version FROM herald_es_events WHERE stream_id = ? ORDER BY version DESC LIMIT 1').pluck().get(streamId) as number | undefined;
    return r ?? 0;
  }

  #positionOf(streamId: string, version: number): bigint {
    const r = this.database.statement('SELECT position FROM herald_es_events WHERE stream_id = ? AND version = ?').pluck().get(streamId, version) as number | undefined;
    return r === undefined ? 0n : BigInt(r);
  }

  #lookupIds(events: readonly PreparedEvent[]): Array<{ streamId: string; version: number; position: bigint; type: string } | undefined> {
    const st = this.database.statement('SELECT stream_id, version, position, type FROM herald_es_events WHERE event_id = ?');
    return events.map((e) => {
      const r = st.get(e.id) as { stream_id: string; version: number; position: number; type: string } | undefined;
      return r && { streamId: r.stream_id, version: r.version, position: BigInt(r.position), type: r.type };
    });
  }

  // ------------------------------------------------------------------------------- reads

  async readStream(streamId: string, options: ReadStreamOptions = {}): Promise<ReadStreamResult> {
    this.#open();
    checkStreamId(streamId);
    const direction = checkDirection(options.direction);
    const maxCount = checkMaxCount(options.maxCount);
    const fromVersion = checkVersionArg('fromVersion', options.fromVersion);
    const toVersion = checkVersionArg('toVersion', options.toVersion);
    const db = this.database;
    const now = this.#clock.now();
    return db.read(() =>
      this.#readTx(() => {
        const row = db.statement('SELECT state, soft_deleted_before, metadata FROM herald_es_streams WHERE stream_id = ?').get(streamId) as
          | { state: number; soft_deleted_before: number; metadata: string | null }
          | undefined;
        if (row?.state === STATE_TOMB) throw streamDeleted(streamId);
        const last = this.#lastVersion(streamId);
        const meta: StreamMetadata = row?.metadata ? (JSON.parse(row.metadata) as StreamMetadata) : {};
        const vis = visibility(meta, row?.soft_deleted_before ?? 0, last, now);
        const minAt = Number.isFinite(vis.minRecordedAt) ? vis.minRecordedAt : -8.64e15;
        const events: RecordedEvent[] = [];
        let nextVersion: number | undefined;
        if (direction === 'forward') {
          const lo = Math.max(fromVersion ?? 1, vis.minVersion);
          const hi = Math.min(last, toVersion ?? last);
          if (lo <= hi) {
            const rows = db
              .statement(`SELECT ${COLUMNS} FROM herald_es_events WHERE stream_id = ? AND version >= ? AND version <= ? AND recorded_at >= ? ORDER BY version LIMIT ?`)
              .raw(true)
              .all(streamId, lo, hi, minAt, maxCount) as Row[];
            for (const r of rows) {
              const e = this.#decode(r);
              if (e) events.push(e);
            }
            const lastRead = rows.length > 0 ? rows[rows.length - 1]![2] : hi;
            nextVersion = rows.length === maxCount && lastRead < hi ? lastRead + 1 : undefined;
          }
        } else {
          const hi = Math.min(fromVersion ?? last, last);
          const lo = Math.max(toVersion ?? 1, vis.minVersion);
          if (lo <= hi) {
            const rows = db
              .statement(`SELECT ${COLUMNS} FROM herald_es_events WHERE stream_id = ? AND version >= ? AND version <= ? AND recorded_at >= ? ORDER BY version DESC LIMIT ?`)
              .raw(true)
              .all(streamId, lo, hi, minAt, maxCount) as Row[];
            for (const r of rows) {
              const e = this.#decode(r);
              if (e) events.push(e);
            }
            const lastRead = rows.length > 0 ? rows[rows.length - 1]![2] : lo;
            nextVersion = rows.length === maxCount && lastRead > lo ? lastRead - 1 : undefined;
          }
        }
        return {
          streamId,
          events,
          streamVersion: last,
          streamPosition: last > 0 ? this.#positionOf(streamId, last) : 0n,
          streamExists: last > 0 && (row === undefined || row.state === STATE_LIVE),
          truncateBefore: vis.truncateBefore,
          nextVersion,
        };
      }),
    );
  }

  async readAll(options: ReadAllOptions = {}): Promise<ReadAllResult> {
    this.#open();
    return this.#readAll(options);
  }

  #readAll(options: ReadAllOptions): ReadAllResult {
    const direction = checkDirection(options.direction);
    const maxCount = checkMaxCount(options.maxCount);
    const category = checkCategory(options.category);
    const after = checkPositionArg('after', options.after);
    const before = checkPositionArg('before', options.before);
    const db = this.database;
    return db.read(() => {
      // The head first: every position up to it is committed, so the page below is gap-free up to it.
      const head = lastPosition(db);
      const events: RecordedEvent[] = [];
      if (direction === 'forward') {
        const from = after === undefined ? 0 : Number(after);
        const rows = (
          category === undefined
            ? db.statement(`SELECT ${COLUMNS} FROM herald_es_events WHERE position > ? AND position <= ? ORDER BY position LIMIT ?`).raw(true).all(from, head, maxCount)
            : db.statement(`SELECT ${COLUMNS} FROM herald_es_events WHERE category = ? AND position > ? AND position <= ? ORDER BY position LIMIT ?`).raw(true).all(category, from, head, maxCount)
        ) as Row[];
        for (const r of rows) {
          const e = this.#decode(r);
          if (e) events.push(e);
        }
        const isEnd = rows.length < maxCount;
        const position = isEnd ? BigInt(Math.max(head, from)) : BigInt(rows[rows.length - 1]![0]);
        return { events, position, isEnd };
      }
      const below = before === undefined ? head + 1 : Number(before);
      const rows = (
        category === undefined
          ? db.statement(`SELECT ${COLUMNS} FROM herald_es_events WHERE position < ? ORDER BY position DESC LIMIT ?`).raw(true).all(below, maxCount)
          : db.statement(`SELECT ${COLUMNS} FROM herald_es_events WHERE category = ? AND position < ? ORDER BY position DESC LIMIT ?`).raw(true).all(category, below, maxCount)
      ) as Row[];
      for (const r of rows) {
        const e = this.#decode(r);
        if (e) events.push(e);
      }
      const isEnd = rows.length < maxCount;
      return { events, position: isEnd ? 0n : BigInt(rows[rows.length - 1]![0]), isEnd };
    });
  }

  /** Synchronous `readAll` (inside Herald's own write transactions: inline projections, rebuild swaps). */
  [READ_ALL_SYNC](options: ReadAllOptions): ReadAllResult {
    this.#open();
    return this.#readAll(options);
  }

  /** Decodes one row: JSON data, optional metadata, upcasting through the catalog. */
  #decode(r: Row): RecordedEvent | undefined {
    let data: unknown;
    let metadata: Record<string, string | number | boolean> | undefined;
    try {
      data = JSON.parse(r[6]);
      if (r[7] !== null) metadata = JSON.parse(r[7]) as Record<string, string | number | boolean>;
    } catch (cause) {
      throw new HeraldError('HERALD_ERR_CORRUPT_RECORD', `the event at stream "${r[1]}" version ${r[2]} (position ${r[0]}) is not valid JSON`, {
        cause,
        details: { streamId: r[1], streamVersion: r[2], position: String(r[0]) },
      });
    }
    return finishDecode(
      { position: BigInt(r[0]), streamId: r[1], streamVersion: r[2], id: r[3], type: r[4], schemaVersion: r[5], correlationId: r[8], causationId: r[9], recordedAt: r[10] },
      data,
      metadata,
      this.catalog,
    );
  }

  /** Runs `fn` in one read snapshot (a deferred transaction). */
  #readTx<T>(fn: () => T): T {
    if (this.database.db.inTransaction) return fn();
    return this.#savepoint.deferred(fn) as T;
  }

  subscribe(options: SubscribeOptions = {}): EventSubscription {
    this.#open();
    const sub = new CatchUpSubscription(
      {
        read: async (after, limit, category) => {
          this.#open();
          return this.#readAll({ after, maxCount: limit, ...(category !== undefined ? { category } : {}) });
        },
        onAppend: (l) => this.onAppend(l),
        checkpoints: this.checkpoints,
      },
      options,
      (s) => this.#subs.delete(s),
    );
    this.#subs.add(sub);
    return sub;
  }

  async headPosition(): Promise<bigint> {
    this.#open();
    return BigInt(this.#head());
  }

  #head(): number {
    const db = this.database;
    return db.read(() => lastPosition(db));
  }

  // ------------------------------------------------------------------------------- streams

  async getStream(streamId: string): Promise<StreamInfo> {
    this.#open();
    checkStreamId(streamId);
    const db = this.database;
    return db.read(() =>
      this.#readTx(() => {
        const row = db.statement('SELECT state, metadata FROM herald_es_streams WHERE stream_id = ?').get(streamId) as { state: number; metadata: string | null } | undefined;
        const version = this.#lastVersion(streamId);
        const metadata: StreamMetadata = row?.metadata ? (JSON.parse(row.metadata) as StreamMetadata) : {};
        const state: StreamState = row ? (row.state === STATE_TOMB ? 'tombstoned' : row.state === STATE_SOFT ? 'soft_deleted' : 'live') : version > 0 ? 'live' : 'none';
        return { streamId, state, streamVersion: state === 'tombstoned' ? 0 : version, metadata };
      }),
    );
  }

  async setStreamMetadata(streamId: string, metadata: StreamMetadata): Promise<void> {
    this.#open();
    checkStreamId(streamId);
    const meta = checkMetadata(metadata);
    const db = this.database;
    await db.immediateAsync(() => {
      this.#validateCache();
      this.#wcache.delete(streamId);
      const row = db.statement('SELECT state FROM herald_es_streams WHERE stream_id = ?').get(streamId) as { state: number } | undefined;
      if (row?.state === STATE_TOMB) throw streamDeleted(streamId);
      db.statement('INSERT INTO herald_es_streams (stream_id, metadata) VALUES (?, ?) ON CONFLICT (stream_id) DO UPDATE SET metadata = excluded.metadata').run(streamId, JSON.stringify(meta));
    });
  }

  async deleteStream(streamId: string, options: DeleteStreamOptions = {}): Promise<void> {
    this.#open();
    checkStreamId(streamId);
    const expected = checkExpectedVersion(options.expectedVersion);
    const db = this.database;
    await db.immediateAsync(() => {
      this.#validateCache();
      this.#wcache.delete(streamId);
      const row = db.statement('SELECT state FROM herald_es_streams WHERE stream_id = ?').get(streamId) as { state: number } | undefined;
      if (row?.state === STATE_TOMB) throw streamDeleted(streamId);
      const version = this.#lastVersion(streamId);
      checkExpected(streamId, expected, version, row ? (row.state === STATE_SOFT ? 'soft_deleted' : 'live') : version > 0 ? 'live' : 'none');
      if (version === 0) return;
      db.statement(
        'INSERT INTO herald_es_streams (stream_id, state, soft_deleted_before) VALUES (?, ?, ?) ON CONFLICT (stream_id) DO UPDATE SET state = excluded.state, soft_deleted_before = excluded.soft_deleted_before',
      ).run(streamId, STATE_SOFT, version + 1);
    });
  }

  async tombstoneStream(streamId: string, options: DeleteStreamOptions = {}): Promise<void> {
    this.#open();
    checkStreamId(streamId);
    const expected = checkExpectedVersion(options.expectedVersion);
    const db = this.database;
    await db.immediateAsync(() => {
      this.#validateCache();
      this.#wcache.delete(streamId);
      const row = db.statement('SELECT state FROM herald_es_streams WHERE stream_id = ?').get(streamId) as { state: number } | undefined;
      if (row?.state === STATE_TOMB) throw streamDeleted(streamId);
      const version = this.#lastVersion(streamId);
      checkExpected(streamId, expected, version, row ? (row.state === STATE_SOFT ? 'soft_deleted' : 'live') : version > 0 ? 'live' : 'none');
      // Keep the high-water mark: positions of deleted events are never handed out again.
      db.statement('UPDATE herald_es_head SET next_position = ? WHERE id = 1 AND next_position < ?').run(lastPosition(db) + 1, lastPosition(db) + 1);
      db.statement('DELETE FROM herald_es_events WHERE stream_id = ?').run(streamId);
      db.statement('INSERT INTO herald_es_streams (stream_id, state) VALUES (?, ?) ON CONFLICT (stream_id) DO UPDATE SET state = excluded.state').run(streamId, STATE_TOMB);
    });
  }

  // ------------------------------------------------------------------------------- plumbing

  /**
   * Calls `listener` after appends: this store's at once, other connections' within `pollMs`
   * (one `PRAGMA data_version` read per period while anyone listens). Returns the remover.
   */
  onAppend(listener: () => void): () => void {
    this.#listeners.add(listener);
    this.#startWatching();
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /** Registers an inline hook (inline projections). Returns the remover. */
  addInlineHook(hook: InlineBatchHook): () => void {
    this.#inline.add(hook);
    return () => {
      this.#inline.delete(hook);
    };
  }

  #notify(): void {
    for (const l of [...this.#listeners]) l();
  }

  #startWatching(): void {
    if (this.#watchTimer || this.#closed) return;
    let lastVersion = -1;
    const tick = (): void => {
      this.#watchTimer = undefined;
      if (this.#closed || this.database.closed || this.#listeners.size === 0) return;
      try {
        const version = this.database.read(() => this.database.statement('PRAGMA data_version').pluck().get() as number);
        if (version !== lastVersion) {
          lastVersion = version;
          const head = this.#head();
          if (head !== this.#knownHead) {
            this.#knownHead = head;
            this.#notify();
          }
        }
      } catch {
        // busy or I/O: look again next period
      }
      this.#watchTimer = setTimeout(tick, this.#pollMs);
    };
    this.#watchTimer = setTimeout(tick, this.#pollMs);
  }

  /** Writes queued appends, ends subscriptions, closes the database if the store opened it. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    while (this.#queue.length > 0 || this.#roomWaiters.length > 0 || this.#flushing) {
      await (this.#flushing ?? this.#flush());
      await new Promise<void>((r) => setImmediate(r));
    }
    this.#closed = true;
    if (this.#watchTimer) clearTimeout(this.#watchTimer);
    this.#watchTimer = undefined;
    await Promise.all([...this.#subs].map((s) => s.close()));
    if (this.#ownsDb) this.database.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #open(): void {
    if (this.#closed || this.#closing) throw closedError('SQLite event store');
  }
}

/** Thrown inside a savepoint to roll it back and answer the append with the original positions. */
class ExactRetry extends Error {
  constructor(readonly result: AppendResult) {
    super('exact retry');
  }
}

function isBusyOrIo(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_IOERR') || code === 'SQLITE_FULL' || code === 'SQLITE_NOMEM' || code.startsWith('SQLITE_LOCKED'));
}

function checkName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `a checkpoint name must be a non-empty string (got ${String(name)})`);
  return name;
}

