/**
 * The PostgreSQL event store: `EventStore` on one schema, shared by every process connected
 * to it. Passes `describeEventStoreContract` unmodified.
 *
 * Tables (component `herald_eventstore`, schema.ts): `herald_es_events` (one row per event,
 * with the id of the transaction that wrote it), unique indexes on (stream, version) and on the
 * event id (ids are unique in a store), an index on (category, position); `herald_es_streams`,
 * one row per stream: its version, last position, state (live, soft-deleted, tombstoned) and
 * metadata — the row every append to the stream checks and moves (the per-row version check).
 *
 * Group commit. Appends are checked and encoded by the caller, then queued; everything queued
 * while earlier batches are written goes into one batch of TWO statements (no explicit
 * transaction):
 * 1. read the streams' rows (and, when callers gave their own event ids, look those ids up);
 * 2. decide each append in order against those versions (expected version, tombstone, exact
 *    retry, partial overlap): a refused append is answered alone, the others go on;
 * 3. one statement reserves the positions (`herald_es_reserve(n)`: the transaction id and
 *    exactly n positions, in one critical section — see below), inserts every event (`unnest`
 *    arrays), moves every stream row only if it still has the version read in step 1 (the
 *    per-row check) and sends ONE `NOTIFY`.
 * If another process moved one of the streams in between (the guard or a unique index does not
 * match), the statement aborts itself and the batch is decided again from step 1 — such a race
 * leaves unused positions behind (holes), never a lost or duplicated event. Queues of 512+
 * events are shared by up to `maxConcurrentBatches` batches written side by side (never two on
 * one stream); smaller queues wait for the running batch. With inline projections a batch is
 * one transaction in which each append runs in its own SAVEPOINT, so a projection that throws
 * fails that append only.
 *
 * Global order. A sequence hands out positions at insert time, but transactions commit out of
 * order: reading "after the last position seen" would skip an event committed late. Readers of
 * `$all` therefore read only rows whose transaction id is below the oldest transaction still
 * in flight (`pg_snapshot_xmin(pg_current_snapshot())`), and positions are reserved together
 * with the transaction id under a short advisory lock, so transaction-id order is position
 * order: nothing that commits later can land below what a reader already returned. Proof and
 * limits in docs/explanation/postgres-global-order.md. A long transaction anywhere in the
 * cluster holds global readers back (never appends or stream reads); `readAll` and
 * `headPosition` wait up to `visibilityWaitMs` for events committed before they were called.
 *
 * Wake-ups: this store's appends wake its subscriptions at once; other processes' appends
 * through LISTEN/NOTIFY (one NOTIFY per group commit) and a poll every `pollMs` as a safety net.
 *
 * Bounds: at most `maxQueuedEvents` events wait in the append queue (callers beyond it wait,
 * FIFO); at most `maxBatchEvents` per transaction; every read is a bounded page.
 */
import { type Clock, HeraldError, isHeraldError, systemClock } from '@herald/core';
import type {
  AppendOptions,
  AppendResult,
  CheckpointStore,
  DeleteStreamOptions,
  EventCatalog,
  EventStore,
  EventSubscription,
  NewEvent,
  ReadAllOptions,
  ReadAllResult,
  ReadStreamOptions,
  ReadStreamResult,
  RecordedEvent,
  StreamInfo,
  StreamMetadata,
  StreamState,
  SubscribeOptions,
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
  decodeRow,
  exactRetry,
  prepareEvents,
  type PreparedEvent,
  streamDeleted,
  visibility,
} from '@herald/eventsourcing/internal';
import { nonNegativeInt, positiveInt } from '@herald/core/internal';
import pg from 'pg';
import { type PgDatabase, type PgDatabaseSource, resolveDatabase, storageError } from './database.ts';
import { Admission } from './admission.ts';
import { ensureMigrated } from './migrations.ts';
import { channelName, notifierOf } from './notifier.ts';
import { EVENT_STORE_COMPONENT } from './schema.ts';

export type PostgresEventStoreOptions = PgDatabaseSource & {
  /** Recorded times and maxAge (default the system clock). */
  readonly clock?: Clock;
  /** Validates appends and upcasts reads. */
  readonly catalog?: EventCatalog;
  /** Safety-net poll for appends by other processes when a NOTIFY was missed, ms (default 250). */
  readonly pollMs?: number;
  /** How long `readAll`/`headPosition` wait for events already committed but held back by an older transaction still in flight, ms (default 5000; 0 never waits). */
  readonly visibilityWaitMs?: number;
  /** Most events one group-commit transaction writes (default 4096; a larger append goes alone). */
  readonly maxBatchEvents?: number;
  /** Bound of the append queue, in events (default 65 536); callers beyond it wait. */
  readonly maxQueuedEvents?: number;
  /** Group-commit batches written at once, each on its own pooled connection (default 4; a queue under 512 events goes whole into one batch and waits for a running one, a larger one is shared between the free writers). */
  readonly maxConcurrentBatches?: number;
};

/**
 * Runs inside the append transaction for inline projections (see projections.ts). `apply` runs
 * inside the append's savepoint: throwing fails that append only.
 */
export interface PgInlineHook {
  /** Before the first append of a batch. */
  begin(client: pg.PoolClient): Promise<void>;
  apply(client: pg.PoolClient, events: readonly RecordedEvent[]): Promise<void>;
  /** After the last append of a batch, still in the transaction; `last` is the batch's last position (0n when it wrote nothing). */
  end(client: pg.PoolClient, last: bigint): Promise<void>;
}

export interface PostgresEventStoreStats {
  readonly appendTransactions: number;
  readonly appends: number;
  readonly events: number;
  readonly refused: number;
  /** Batches decided again because another process moved a stream in between. */
  readonly raceRetries: number;
}

interface PendingAppend {
  readonly streamId: string;
  readonly events: readonly PreparedEvent[];
  readonly expected: ReturnType<typeof checkExpectedVersion>;
  /** Whether the caller chose any event id (only then can an id already be stored). */
  readonly ownIds: boolean;
  readonly resolve: (r: AppendResult) => void;
  readonly reject: (e: unknown) => void;
}

interface StreamRow {
  version: number;
  state: number;
  lastPosition: bigint;
  hasMeta: boolean;
  exists: boolean;
}

type Found = { streamId: string; version: number; position: bigint; type: string } | undefined;

const STATE_LIVE = 0;
const STATE_SOFT = 1;
const STATE_TOMB = 2;
const COLUMNS = 'position, stream_id, version, event_id, type, schema_version, data, metadata, correlation_id, causation_id, recorded_at';
const MAX_RACE_RETRIES = 20;
/** Below twice this many queued events, one writer takes the whole queue. */
const MIN_SHARED_BATCH = 256;


/** The safe head and the visible head in one snapshot (see the module doc). */
const HEADS_SQL = `SELECT greatest(coalesce((SELECT max(position) FROM herald_es_events WHERE tx_id < x.xmin), 0), h.deleted_high) AS safe,
  greatest(coalesce((SELECT max(position) FROM herald_es_events), 0), h.deleted_high) AS visible
  FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) x, herald_es_head h WHERE h.id = 1`;

interface EventRow {
  position: string;
  stream_id: string;
  version: number;
  event_id: string;
  type: string;
  schema_version: number;
  data: string;
  metadata: string | null;
  correlation_id: string | null;
  causation_id: string | null;
  recorded_at: string;
}

/**
 * `readAll` without the visibility wait (not public API): for readers that are woken when the
 * safe head moves anyway (Herald's async projections), so a long transaction elsewhere never
 * blocks them inside a read.
 */
export const READ_ALL_NOW: unique symbol = Symbol('herald.postgres.readAllNow');

/** Creates a PostgreSQL event store (the schema is created and migrated on first use). */
export function createPostgresEventStore(options: PostgresEventStoreOptions): PostgresEventStore {
  return new PostgresEventStore(options);
}

export class PostgresEventStore implements EventStore {
  readonly database: PgDatabase;
  readonly catalog: EventCatalog | undefined;
  readonly checkpoints: CheckpointStore;
  readonly #owned: boolean;
  readonly #clock: Clock;
  readonly #pollMs: number;
  readonly #visibilityWaitMs: number;
  readonly #maxBatch: number;
  readonly #ready: Promise<void>;
  readonly #channel: string;
  readonly #queue: PendingAppend[] = [];
  readonly #admission: Admission;
  #flushScheduled = false;
  #writers = 0;
  #idle: Array<() => void> = [];
  readonly #inFlight = new Set<string>();
  readonly #maxConcurrent: number;
  readonly #listeners = new Set<() => void>();
  readonly #subs = new Set<CatchUpSubscription>();
  readonly #inline = new Set<PgInlineHook>();
  #unlisten: (() => void) | undefined;
  #watchTimer: NodeJS.Timeout | undefined;
  #watching = false;
  #knownSafe = -1n;
  #closed = false;
  #closing: Promise<void> | undefined;
  #stats = { appendTransactions: 0, appends: 0, events: 0, refused: 0, raceRetries: 0 };

  constructor(options: PostgresEventStoreOptions) {
    const { database, owned } = resolveDatabase(options);
    this.database = database;
    this.#owned = owned;
    this.catalog = options.catalog;
    this.#clock = options.clock ?? systemClock;
    this.#pollMs = positiveInt('pollMs', options.pollMs ?? 250);
    this.#visibilityWaitMs = nonNegativeInt('visibilityWaitMs', options.visibilityWaitMs ?? 5000);
    this.#maxBatch = positiveInt('maxBatchEvents', options.maxBatchEvents ?? 4096);
    this.#admission = new Admission(positiveInt('maxQueuedEvents', options.maxQueuedEvents ?? 65_536));
    this.#maxConcurrent = positiveInt('maxConcurrentBatches', options.maxConcurrentBatches ?? 4);
    this.#channel = channelName('es', database.schema);
    this.#ready = ensureMigrated(database, [EVENT_STORE_COMPONENT]);
    this.#ready.catch(() => {}); // surfaced by the first call
    const db = database;
    this.checkpoints = {
      get: async (name) => {
        await this.#enter();
        const r = await db.query<{ position: string }>('SELECT position FROM herald_es_checkpoints WHERE name = $1', [checkName(name)]);
        return r.rows[0] === undefined ? undefined : BigInt(r.rows[0].position);
      },
      set: async (name, position) => {
        await this.#enter();
        if (typeof position !== 'bigint' || position < 0n) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `a checkpoint is a non-negative bigint (got ${String(position)})`);
        await db.query(
          'INSERT INTO herald_es_checkpoints (name, position, updated_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at',
          [checkName(name), position.toString(), this.#clock.now()],
        );
      },
    };
  }

  get stats(): PostgresEventStoreStats {
    return { ...this.#stats };
  }

  /** Resolves once the schema is migrated (rejects with the migration's error). */
  ready(): Promise<void> {
    return this.#ready;
  }

  // ------------------------------------------------------------------------------- appends

  /** See `EventStore.appendToStream`. Safe to call concurrently; concurrent calls share transactions. */
  async appendToStream(streamId: string, events: readonly NewEvent[], options: AppendOptions = {}): Promise<AppendResult> {
    this.#open();
    checkStreamId(streamId);
    const expected = checkExpectedVersion(options?.expectedVersion);
    const prepared = prepareEvents(streamId, events, this.catalog, this.#clock.now());
    const ready = Array.isArray(prepared) ? prepared : await prepared;
    let ownIds = false;
    for (const e of events) if (e.id !== undefined) ownIds = true;
    await this.#enter();
    const n = Math.max(1, ready.length);
    await this.#admission.acquire(n);
    return new Promise<AppendResult>((resolve, reject) => {
      this.#queue.push({ streamId, events: ready, expected, ownIds, resolve, reject });
      this.#scheduleFlush();
    });
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      this.#pump();
    });
  }

  /**
   * Starts batch writers while there is queued work and fewer than `maxConcurrentBatches` run.
   * Each takes the oldest appends whose streams no running batch writes (so appends to one
   * stream are written in call order and never race each other).
   */
  #pump(): void {
    while (this.#writers < this.#maxConcurrent && this.#queue.length > 0) {
      // A large queue is shared between the free writers, so big batches are written side by side
      // (more server cores); a small one goes whole into one batch (fewest commits).
      let events = 0;
      for (const p of this.#queue) events += Math.max(1, p.events.length);
      if (this.#writers > 0 && events < MIN_SHARED_BATCH * 2) return; // small: wait and group it with what comes meanwhile
      const share = events < MIN_SHARED_BATCH * 2 ? events : Math.max(MIN_SHARED_BATCH, Math.ceil(events / (this.#maxConcurrent - this.#writers)));
      const batch = this.#take(share);
      if (batch.length === 0) return; // every queued append waits for a stream in flight
      this.#writers++;
      const run = this.#run(batch).finally(() => {
        this.#writers--;
        for (const b of batch) this.#inFlight.delete(b.streamId);
        if (this.#writers === 0) {
          const idle = this.#idle;
          this.#idle = [];
          for (const r of idle) r();
        }
        if (this.#queue.length > 0) this.#scheduleFlush();
      });
      void run;
    }
  }

  /** Resolves when no batch is queued or running. */
  #flush(): Promise<void> {
    if (this.#writers === 0 && this.#queue.length === 0) return Promise.resolve();
    this.#pump();
    return new Promise<void>((r) => this.#idle.push(r)).then(() => (this.#queue.length > 0 ? this.#flush() : undefined));
  }

  async #run(batch: PendingAppend[]): Promise<void> {
    let outcomes: Array<AppendResult | { error: unknown }> | undefined;
    let failure: unknown;
    try {
      outcomes = await this.#writeBatch(batch);
    } catch (e) {
      failure = e;
    }
    let n = 0;
    for (const b of batch) n += Math.max(1, b.events.length);
    this.#admission.release(n);
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
      if (wrote) this.#localAppend();
    } else {
      for (const b of batch) b.reject(failure);
    }
  }

  /** The next batch: queued appends in order, skipping (with every later append of it) a stream a running batch writes. */
  #take(maxEvents: number): PendingAppend[] {
    let n = 0;
    const out: PendingAppend[] = [];
    const keep: PendingAppend[] = [];
    const blocked = new Set<string>();
    for (const p of this.#queue) {
      const size = p.events.length;
      if (blocked.has(p.streamId) || this.#inFlight.has(p.streamId) || (out.length > 0 && (n + size > this.#maxBatch || n + size > maxEvents))) {
        blocked.add(p.streamId);
        keep.push(p);
        continue;
      }
      n += size;
      out.push(p);
    }
    for (const p of out) this.#inFlight.add(p.streamId);
    this.#queue.length = 0;
    this.#queue.push(...keep);
    return out;
  }


  /** Writes one batch in one transaction, deciding it again after a race with another process. */
  async #writeBatch(batch: readonly PendingAppend[]): Promise<Array<AppendResult | { error: unknown }>> {
    for (let attempt = 0; ; attempt++) {
      if (this.database.closed) throw closedError('PostgreSQL event store');
      try {
        // Without inline projections: two statements, no explicit transaction (the write is one self-checking statement).
        if (this.#inline.size === 0) return await this.database.run(() => this.appendBatchIn(this.database.pool, batch, attempt > 0));
        return await this.database.tx((client) => this.appendBatchIn(client, batch, attempt > 0));
      } catch (e) {
        const code = (e as HeraldError)?.details?.sqlstate ?? (e as { code?: string })?.code;
        // HRE02: a guarded stream row moved; 23505: an event id or (stream, version) stored meanwhile; 40P01: deadlock.
        const retry = code === '40P01' || code === 'HRE02' || code === '23505';
        if (!retry || attempt >= MAX_RACE_RETRIES) throw retry ? storageError(`appends kept racing with another process (${MAX_RACE_RETRIES} attempts)`, e) : e;
        this.#stats.raceRetries++;
      }
    }
  }

  /**
   * Appends inside the caller's open transaction on `client` (a unit of work): BEGIN issued and
   * NOTHING written yet in it — the position reservation must be the transaction's first write
   * (otherwise PostgreSQL refuses it, SQLSTATE HRE01, and nothing is stored). The events become
   * visible when the caller commits; a rollback leaves unused positions (holes). Subscriptions
   * of other stores are woken at commit by the NOTIFY sent in the transaction.
   */
  async appendInTransaction(client: pg.PoolClient, streamId: string, events: readonly NewEvent[], options: AppendOptions = {}): Promise<AppendResult> {
    this.#open();
    checkStreamId(streamId);
    const expected = checkExpectedVersion(options?.expectedVersion);
    const prepared = prepareEvents(streamId, events, this.catalog, this.#clock.now());
    const ready = Array.isArray(prepared) ? prepared : await prepared;
    await this.#enter();
    const [o] = await this.database.run(() => this.appendBatchIn(client, [{ streamId, events: ready, expected, ownIds: true, resolve: () => {}, reject: () => {} }]));
    if (o && 'error' in o) throw o.error;
    return o!;
  }

  /**
   * Decides and writes `batch` inside the caller's open transaction on `client` (BEGIN issued,
   * nothing written yet: the position reservation must be the transaction's first write). Used
   * by the group commit and by tests that hold a transaction open. Returns one outcome per
   * append; throws only when the transaction itself must be rolled back.
   */
  async appendBatchIn(client: pg.PoolClient | pg.Pool, batch: readonly PendingAppend[], lookAllIds = false): Promise<Array<AppendResult | { error: unknown }>> {
    const streamIds = [...new Set(batch.map((b) => b.streamId))];
    const ids: string[] = [];
    for (const b of batch) if (b.ownIds || lookAllIds) for (const e of b.events) ids.push(e.id);
    // 1. The streams' rows and the stored ids, in one plain read (no transaction id yet).
    const r1 = await client.query<{ k: string; a: string; s: string | null; v: number; st: number | null; p: string; t: string | null; m: boolean | null }>(
      `SELECT 's' AS k, stream_id AS a, NULL::text AS s, version AS v, state::int AS st, last_position AS p, NULL::text AS t, metadata IS NOT NULL AS m
         FROM herald_es_streams WHERE stream_id = ANY($1::text[])
       UNION ALL
       SELECT 'e', event_id, stream_id, version, NULL, position, type, NULL FROM herald_es_events WHERE cardinality($2::text[]) > 0 AND event_id = ANY($2::text[])`,
      [streamIds, ids],
    );
    const streams = new Map<string, StreamRow>();
    const stored = new Map<string, NonNullable<Found>>();
    for (const row of r1.rows) {
      if (row.k === 's') streams.set(row.a, { version: row.v, state: row.st ?? 0, lastPosition: BigInt(row.p), hasMeta: row.m === true, exists: true });
      else stored.set(row.a, { streamId: row.s!, version: row.v, position: BigInt(row.p), type: row.t! });
    }
    const original = new Map<string, { version: number; state: number; exists: boolean }>();
    for (const id of streamIds) {
      const s = streams.get(id) ?? { version: 0, state: STATE_LIVE, lastPosition: 0n, hasMeta: false, exists: false };
      streams.set(id, s);
      original.set(id, { version: s.version, state: s.state, exists: s.exists });
    }
    // 2. Decide each append in order. Positions of this batch's writes are known only after step 3.
    const decided: Decision[] = new Array(batch.length);
    const writes: Write[] = [];
    const inBatch = new Map<string, { write: Write; k: number }>(); // ids written earlier in this batch
    let total = 0;
    for (let i = 0; i < batch.length; i++) {
      const p = batch[i]!;
      const s = streams.get(p.streamId)!;
      try {
        if (s.state === STATE_TOMB) throw streamDeleted(p.streamId);
        const state: StreamState = s.state === STATE_SOFT ? 'soft_deleted' : s.version > 0 || s.hasMeta ? 'live' : 'none';
        if (p.events.length === 0) {
          checkExpected(p.streamId, p.expected, s.version, state);
          decided[i] = { kind: 'empty', version: s.version, after: lastWriteTo(writes, p.streamId), position: s.lastPosition };
          continue;
        }
        const found: Found[] = p.events.map((e) => {
          const b = inBatch.get(e.id);
          return b ? { streamId: b.write.streamId, version: b.write.from + b.k + 1, position: -1n, type: e.type } : stored.get(e.id);
        });
        if (found.some((f) => f !== undefined)) {
          const retry = exactRetry(p.streamId, p.events, found, p.expected);
          if (retry) {
            const b = inBatch.get(p.events[0]!.id);
            decided[i] = b ? { kind: 'retryOf', write: b.write, k: b.k, streamVersion: retry.streamVersion, n: p.events.length } : { kind: 'done', result: retry };
            continue;
          }
        }
        checkExpected(p.streamId, p.expected, s.version, state);
        const write: Write = { i, streamId: p.streamId, from: s.version, first: 0n, ok: true };
        writes.push(write);
        decided[i] = { kind: 'write', write };
        for (let k = 0; k < p.events.length; k++) inBatch.set(p.events[k]!.id, { write, k });
        s.version += p.events.length;
        s.state = STATE_LIVE;
        total += p.events.length;
      } catch (e) {
        decided[i] = { kind: 'error', error: isHeraldError(e) ? e : storageError(`append to stream "${p.streamId}" failed`, e) };
      }
    }
    const hooks = client instanceof pg.Pool ? [] : [...this.#inline];
    if (total > 0) {
      const now = this.#clock.now();
      if (hooks.length === 0) {
        // 3 + 4. One statement: the transaction id and the positions (in one critical section),
        // every event, every stream row (guarded), one NOTIFY.
        let rel = 0n;
        for (const w of writes) {
          w.first = rel;
          rel += BigInt(batch[w.i]!.events.length);
        }
        const first = await this.#insert(client, batch, writes, original, now, { reserve: total });
        for (const w of writes) w.first += first;
      } else {
        // 3. The transaction id and the positions, in one critical section.
        const first = BigInt((await client.query<{ first: string }>('SELECT herald_es_reserve($1) AS first', [total])).rows[0]!.first);
        let next = first;
        for (const h of hooks) await h.begin(client as pg.PoolClient);
        // One savepoint per append: a projection that throws fails that append alone.
        for (const w of writes) {
          const p = batch[w.i]!;
          if (!w.ok) continue;
          await client.query('SAVEPOINT herald_append');
          try {
            w.first = 0n;
            await this.#insert(client, batch, [w], original, now, { at: next });
            w.first = next;
            const recorded: RecordedEvent[] = [];
            for (let k = 0; k < p.events.length; k++) {
              const e = p.events[k]!;
              const d = decodeRow({ ...e, streamId: p.streamId, streamVersion: w.from + k + 1, position: next + BigInt(k), recordedAt: now }, this.catalog);
              if (d) recorded.push(d);
            }
            for (const h of hooks) await h.apply(client as pg.PoolClient, recorded);
            await client.query('RELEASE SAVEPOINT herald_append');
            next += BigInt(p.events.length);
            original.set(p.streamId, { version: w.from + p.events.length, state: STATE_LIVE, exists: true });
          } catch (e) {
            await client.query('ROLLBACK TO SAVEPOINT herald_append');
            const code = (e as { code?: string })?.code;
            if (code === 'HRE02' || code === '40P01' || code === '23505') throw e;
            w.ok = false;
            decided[w.i] = { kind: 'error', error: isHeraldError(e) ? e : storageError(`append to stream "${p.streamId}" failed`, e) };
            // Later appends to the same stream were decided on top of this one: they fail too (retryable).
            for (const v of writes) {
              if (v.ok && v.i > w.i && v.streamId === p.streamId) {
                v.ok = false;
                decided[v.i] = { kind: 'error', error: storageError(`append to stream "${p.streamId}" was decided on top of an append that failed in the same batch; retry it`, e) };
              }
            }
          }
        }
        for (const h of hooks) await h.end(client as pg.PoolClient, next > first ? next - 1n : 0n);
        if (next > first) await client.query('SELECT pg_notify($1, $2)', [this.#channel, '']);
      }
    }
    // The answers.
    const out: Array<AppendResult | { error: unknown }> = new Array(batch.length);
    for (let i = 0; i < batch.length; i++) {
      const d = decided[i]!;
      const n = batch[i]!.events.length;
      if (d.kind === 'done') out[i] = d.result;
      else if (d.kind === 'error') out[i] = { error: d.error };
      else if (d.kind === 'write') out[i] = { streamVersion: d.write.from + n, firstPosition: d.write.first, position: d.write.first + BigInt(n) - 1n, idempotent: false };
      else if (d.kind === 'retryOf') {
        out[i] = d.write.ok
          ? { streamVersion: d.streamVersion, firstPosition: d.write.first + BigInt(d.k), position: d.write.first + BigInt(d.k + n - 1), idempotent: true }
          : { error: storageError('the append this one repeats failed in the same batch; retry it', undefined) };
      } else {
        const w = d.after;
        if (!w) out[i] = { streamVersion: d.version, firstPosition: d.position, position: d.position, idempotent: false };
        else if (!w.ok) out[i] = { error: storageError('an append decided before this one failed in the same batch; retry it', undefined) };
        else {
          const last = w.first + BigInt(batch[w.i]!.events.length) - 1n;
          out[i] = { streamVersion: d.version, firstPosition: last, position: last, idempotent: false };
        }
      }
    }
    return out;
  }

  /**
   * ONE statement: inserts the events of `writes` and moves their streams' rows, guarded by the
   * versions read first; with `reserve`, it first reserves the positions (`herald_es_reserve`,
   * before any write of the statement: every write joins its result) and notifies. When the guard
   * does not match it aborts itself (`herald_es_raced()`, SQLSTATE HRE02); an event id or a
   * (stream, version) stored meanwhile aborts it with a unique violation (23505): either way
   * nothing of it is stored and the batch is decided again (plain inserts: no speculative
   * insertion per row). Event positions are `first + w.first + k`; returns `first`.
   */
  async #insert(
    client: pg.PoolClient | pg.Pool,
    batch: readonly PendingAppend[],
    writes: readonly Write[],
    original: Map<string, { version: number; state: number; exists: boolean }>,
    now: number,
    at: { reserve: number } | { at: bigint },
  ): Promise<bigint> {
    const off: string[] = [];
    const sid: string[] = [];
    const ver: number[] = [];
    const eid: string[] = [];
    const typ: string[] = [];
    const sv: number[] = [];
    const dat: string[] = [];
    const met: (string | null)[] = [];
    const cor: (string | null)[] = [];
    const cau: (string | null)[] = [];
    const cat: string[] = [];
    const finalOf = new Map<string, { version: number; last: bigint }>();
    for (const w of writes) {
      if (!w.ok) continue;
      const { i, from, first: start } = w;
      const p = batch[i]!;
      const c = categoryOf(p.streamId);
      for (let k = 0; k < p.events.length; k++) {
        const e = p.events[k]!;
        off.push((start + BigInt(k)).toString());
        sid.push(p.streamId);
        ver.push(from + k + 1);
        eid.push(e.id);
        typ.push(e.type);
        sv.push(e.schemaVersion);
        dat.push(e.data);
        met.push(e.metadata);
        cor.push(e.correlationId);
        cau.push(e.causationId);
        cat.push(c);
      }
      finalOf.set(p.streamId, { version: from + p.events.length, last: start + BigInt(p.events.length) - 1n });
    }
    const updId: string[] = [];
    const updVer: number[] = [];
    const updPos: string[] = [];
    const updOld: number[] = [];
    const updOldState: number[] = [];
    const newId: string[] = [];
    const newVer: number[] = [];
    const newPos: string[] = [];
    for (const [id, f] of finalOf) {
      const o = original.get(id)!;
      if (o.exists) {
        updId.push(id);
        updVer.push(f.version);
        updPos.push(f.last.toString());
        updOld.push(o.version);
        updOldState.push(o.state);
      } else {
        newId.push(id);
        newVer.push(f.version);
        newPos.push(f.last.toString());
      }
    }
    const reserve = 'reserve' in at;
    const r = await client.query<{ first: string }>(
      `WITH r AS MATERIALIZED (SELECT ${reserve ? 'herald_es_reserve($21)' : '$21::bigint'} AS first),
       ins AS (
         INSERT INTO herald_es_events (position, stream_id, version, event_id, type, schema_version, data, metadata, correlation_id, causation_id, recorded_at, category)
         SELECT r.first + u.o, u.s, u.v, u.e, u.t, u.sv, u.d, u.m, u.c, u.ca, $11, u.cat
           FROM r, unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $6::int[], $7::text[], $8::text[], $9::text[], $10::text[], $12::text[])
                AS u(o, s, v, e, t, sv, d, m, c, ca, cat)
         RETURNING 1),
       upd AS (
         UPDATE herald_es_streams s SET version = u.v, last_position = r.first + u.p, state = 0
           FROM r, unnest($13::text[], $14::int[], $15::bigint[], $16::int[], $17::int[]) AS u(id, v, p, old, oldstate)
          WHERE s.stream_id = u.id AND s.version = u.old AND s.state = u.oldstate RETURNING 1),
       cre AS (
         INSERT INTO herald_es_streams (stream_id, version, last_position)
         SELECT u.id, u.v, r.first + u.p FROM r, unnest($18::text[], $19::int[], $20::bigint[]) AS u(id, v, p) ON CONFLICT DO NOTHING RETURNING 1)
       SELECT CASE WHEN (SELECT count(*) FROM ins) = $22 AND (SELECT count(*) FROM upd) = $23 AND (SELECT count(*) FROM cre) = $24
                   THEN (SELECT first FROM r) ELSE herald_es_raced() END AS first
       ${reserve ? ', (SELECT pg_notify($25, $26)) AS notified' : ''}`,
      [
        off,
        sid,
        ver,
        eid,
        typ,
        sv,
        dat,
        met,
        cor,
        cau,
        now,
        cat,
        updId,
        updVer,
        updPos,
        updOld,
        updOldState,
        newId,
        newVer,
        newPos,
        reserve ? at.reserve : at.at.toString(),
        off.length,
        updId.length,
        newId.length,
        ...(reserve ? [this.#channel, ''] : []),
      ],
    );
    return BigInt(r.rows[0]!.first);
  }

  // ------------------------------------------------------------------------------- reads

  async readStream(streamId: string, options: ReadStreamOptions = {}): Promise<ReadStreamResult> {
    this.#open();
    checkStreamId(streamId);
    const direction = checkDirection(options.direction);
    const maxCount = checkMaxCount(options.maxCount);
    const fromVersion = checkVersionArg('fromVersion', options.fromVersion);
    const toVersion = checkVersionArg('toVersion', options.toVersion);
    await this.#enter();
    const now = this.#clock.now();
    const head = await this.database.query<{ version: number; last_position: string; state: number; soft_deleted_before: number; metadata: string | null }>(
      'SELECT version, last_position, state, soft_deleted_before, metadata FROM herald_es_streams WHERE stream_id = $1',
      [streamId],
    );
    const row = head.rows[0];
    if (row?.state === STATE_TOMB) throw streamDeleted(streamId);
    const last = row?.version ?? 0;
    const meta: StreamMetadata = row?.metadata ? (JSON.parse(row.metadata) as StreamMetadata) : {};
    const vis = visibility(meta, row?.soft_deleted_before ?? 0, last, now);
    const minAt = Number.isFinite(vis.minRecordedAt) ? vis.minRecordedAt : -8.64e15;
    const events: RecordedEvent[] = [];
    let nextVersion: number | undefined;
    const forward = direction === 'forward';
    const lo = forward ? Math.max(fromVersion ?? 1, vis.minVersion) : Math.max(toVersion ?? 1, vis.minVersion);
    const hi = forward ? Math.min(last, toVersion ?? last) : Math.min(fromVersion ?? last, last);
    if (lo <= hi) {
      const r = await this.database.query<EventRow>(
        `SELECT ${COLUMNS} FROM herald_es_events WHERE stream_id = $1 AND version >= $2 AND version <= $3 AND recorded_at >= $4 ORDER BY version ${forward ? 'ASC' : 'DESC'} LIMIT $5`,
        [streamId, lo, hi, Math.trunc(minAt), maxCount],
      );
      for (const x of r.rows) {
        const e = this.#decode(x);
        if (e) events.push(e);
      }
      const lastRead = r.rows.length > 0 ? r.rows[r.rows.length - 1]!.version : forward ? hi : lo;
      if (forward) nextVersion = r.rows.length === maxCount && lastRead < hi ? lastRead + 1 : undefined;
      else nextVersion = r.rows.length === maxCount && lastRead > lo ? lastRead - 1 : undefined;
    }
    return {
      streamId,
      events,
      streamVersion: last,
      streamPosition: row ? BigInt(row.last_position) : 0n,
      streamExists: last > 0 && row !== undefined && row.state === STATE_LIVE,
      truncateBefore: vis.truncateBefore,
      nextVersion,
    };
  }

  async readAll(options: ReadAllOptions = {}): Promise<ReadAllResult> {
    this.#open();
    await this.#enter();
    return this.#readAll(options, this.#visibilityWaitMs);
  }

  /**
   * A page of `$all` below the safe head (see the module doc). With `waitMs`, a forward read
   * that reached the end while events committed before it are still held back by an older
   * transaction waits (polling) until they are safe or `waitMs` passed.
   */
  async #readAll(options: ReadAllOptions, waitMs: number): Promise<ReadAllResult> {
    const direction = checkDirection(options.direction);
    const maxCount = checkMaxCount(options.maxCount);
    const category = checkCategory(options.category);
    const after = checkPositionArg('after', options.after);
    const before = checkPositionArg('before', options.before);
    const deadline = Date.now() + waitMs;
    let target: bigint | undefined;
    for (let delay = 1; ; delay = Math.min(delay * 2, 20)) {
      const forward = direction === 'forward';
      const from = forward ? (after ?? 0n) : (before ?? 0n);
      const r = await this.database.query<EventRow & { safe: string; visible: string }>(
        `WITH x AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin),
              h AS MATERIALIZED (${HEADS_SQL})
         SELECT h.safe, h.visible, e.* FROM h LEFT JOIN LATERAL (
           SELECT ${COLUMNS} FROM herald_es_events, x
            WHERE tx_id < x.xmin ${category !== undefined ? 'AND category = $3' : ''}
              AND ${forward ? 'position > $1' : '($1::bigint = 0 OR position < $1)'}
            ORDER BY position ${forward ? 'ASC' : 'DESC'} LIMIT $2) e ON true`,
        [from.toString(), maxCount, ...(category !== undefined ? [category] : [])],
      );
      const first = r.rows[0]!;
      const safe = BigInt(first.safe);
      const visible = BigInt(first.visible);
      const rows = first.position === null ? [] : r.rows;
      const events: RecordedEvent[] = [];
      for (const x of rows) {
        const e = this.#decode(x);
        if (e) events.push(e);
      }
      const isEnd = rows.length < maxCount;
      if (!forward) return { events, position: isEnd ? 0n : BigInt(rows[rows.length - 1]!.position), isEnd };
      target ??= visible;
      if (isEnd && safe < target && Date.now() < deadline) {
        await new Promise((res) => setTimeout(res, delay));
        continue;
      }
      const position = isEnd ? (safe > from ? safe : from) : BigInt(rows[rows.length - 1]!.position);
      return { events, position, isEnd };
    }
  }

  /** See READ_ALL_NOW. */
  async [READ_ALL_NOW](options: ReadAllOptions): Promise<ReadAllResult> {
    this.#open();
    await this.#enter();
    return this.#readAll(options, 0);
  }

  #decode(x: EventRow): RecordedEvent | undefined {
    return decodeRow(
      {
        position: BigInt(x.position),
        streamId: x.stream_id,
        streamVersion: x.version,
        id: x.event_id,
        type: x.type,
        schemaVersion: x.schema_version,
        data: x.data,
        metadata: x.metadata,
        correlationId: x.correlation_id,
        causationId: x.causation_id,
        recordedAt: Number(x.recorded_at),
      },
      this.catalog,
    );
  }

  subscribe(options: SubscribeOptions = {}): EventSubscription {
    this.#open();
    const sub = new CatchUpSubscription(
      {
        // A server that went away (restart, network) is waited out: the subscription resumes by itself.
        read: async (after, limit, category) => {
          for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
            this.#open();
            try {
              await this.#enter();
              return await this.#readAll({ after, maxCount: limit, ...(category !== undefined ? { category } : {}) }, 0);
            } catch (e) {
              if (!isHeraldError(e, 'HERALD_ERR_STORAGE') || !e.retryable || this.#closed) throw e;
              await new Promise((r) => setTimeout(r, delay));
            }
          }
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

  /** The safe head: every event at or below it that will ever commit is visible (waits like `readAll`). */
  async headPosition(): Promise<bigint> {
    this.#open();
    await this.#enter();
    const deadline = Date.now() + this.#visibilityWaitMs;
    let target: bigint | undefined;
    for (let delay = 1; ; delay = Math.min(delay * 2, 20)) {
      const { safe, visible } = await this.#heads();
      target ??= visible;
      if (safe >= target || Date.now() >= deadline) return safe;
      await new Promise((res) => setTimeout(res, delay));
    }
  }

  async #heads(): Promise<{ safe: bigint; visible: bigint }> {
    const r = await this.database.query<{ safe: string; visible: string }>(HEADS_SQL);
    return { safe: BigInt(r.rows[0]!.safe), visible: BigInt(r.rows[0]!.visible) };
  }

  // ------------------------------------------------------------------------------- streams

  async getStream(streamId: string): Promise<StreamInfo> {
    this.#open();
    checkStreamId(streamId);
    await this.#enter();
    const r = await this.database.query<{ version: number; state: number; metadata: string | null }>(
      'SELECT version, state, metadata FROM herald_es_streams WHERE stream_id = $1',
      [streamId],
    );
    const row = r.rows[0];
    const metadata: StreamMetadata = row?.metadata ? (JSON.parse(row.metadata) as StreamMetadata) : {};
    const state: StreamState = row?.state === STATE_TOMB ? 'tombstoned' : streamState(row);
    return { streamId, state, streamVersion: state === 'tombstoned' ? 0 : (row?.version ?? 0), metadata };
  }

  async setStreamMetadata(streamId: string, metadata: StreamMetadata): Promise<void> {
    this.#open();
    checkStreamId(streamId);
    const meta = checkMetadata(metadata);
    await this.#lockedStreamWrite(streamId, async (c) => {
      await c.query(
        'INSERT INTO herald_es_streams (stream_id, metadata) VALUES ($1, $2) ON CONFLICT (stream_id) DO UPDATE SET metadata = excluded.metadata',
        [streamId, JSON.stringify(meta)],
      );
    });
  }

  async deleteStream(streamId: string, options: DeleteStreamOptions = {}): Promise<void> {
    this.#open();
    checkStreamId(streamId);
    const expected = checkExpectedVersion(options.expectedVersion);
    await this.#lockedStreamWrite(streamId, async (c, row) => {
      const version = row?.version ?? 0;
      checkExpected(streamId, expected, version, streamState(row));
      if (version === 0) return;
      await c.query('UPDATE herald_es_streams SET state = $2, soft_deleted_before = $3 WHERE stream_id = $1', [streamId, STATE_SOFT, version + 1]);
    });
  }

  async tombstoneStream(streamId: string, options: DeleteStreamOptions = {}): Promise<void> {
    this.#open();
    checkStreamId(streamId);
    const expected = checkExpectedVersion(options.expectedVersion);
    await this.#lockedStreamWrite(streamId, async (c, row) => {
      checkExpected(streamId, expected, row?.version ?? 0, streamState(row));
      // The head never goes back: remember the highest safe position deleted.
      await c.query(
        `UPDATE herald_es_head SET deleted_high = greatest(deleted_high, coalesce((SELECT max(position) FROM herald_es_events
           WHERE stream_id = $1 AND tx_id < pg_snapshot_xmin(pg_current_snapshot())), 0)) WHERE id = 1`,
        [streamId],
      );
      await c.query('DELETE FROM herald_es_events WHERE stream_id = $1', [streamId]);
      await c.query(
        `INSERT INTO herald_es_streams (stream_id, state) VALUES ($1, $2) ON CONFLICT (stream_id) DO UPDATE SET state = excluded.state`,
        [streamId, STATE_TOMB],
      );
    });
  }

  /** Runs `fn` in a transaction holding the stream's row lock (a tombstoned stream is refused first). Arguments are checked by the caller. */
  async #lockedStreamWrite(streamId: string, fn: (c: pg.PoolClient, row: StreamRowLocked | undefined) => Promise<void>): Promise<void> {
    await this.#enter();
    await this.database.tx(async (c) => {
      const row = await lockStream(c, streamId);
      if (row?.state === STATE_TOMB) throw streamDeleted(streamId);
      await fn(c, row);
    });
  }

  // ------------------------------------------------------------------------------- plumbing

  /**
   * Calls `listener` when the safe head may have moved: after this store's appends at once,
   * after other processes' on their NOTIFY, and on a `pollMs` safety net (every few ms while
   * committed events are held back by an older transaction). Returns the remover.
   */
  onAppend(listener: () => void): () => void {
    this.#listeners.add(listener);
    this.#startWatching();
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /** Registers an inline hook (inline projections). Returns the remover. */
  addInlineHook(hook: PgInlineHook): () => void {
    this.#inline.add(hook);
    return () => {
      this.#inline.delete(hook);
    };
  }

  #localAppend(): void {
    for (const l of [...this.#listeners]) l();
  }

  #startWatching(): void {
    if (this.#watching || this.#closed) return;
    this.#watching = true;
    this.#unlisten = notifierOf(this.database).listen(this.#channel, () => this.#check());
    this.#schedule(this.#pollMs);
  }

  #schedule(ms: number): void {
    if (this.#watchTimer) clearTimeout(this.#watchTimer);
    this.#watchTimer = setTimeout(() => {
      this.#watchTimer = undefined;
      this.#check();
    }, ms);
  }

  #checking = false;
  #checkAgain = false;

  /** Reads the heads; wakes listeners when the safe head moved; polls fast while events are held back. */
  #check(): void {
    if (this.#closed || this.#listeners.size === 0) {
      this.#stopWatching();
      return;
    }
    if (this.#checking) {
      this.#checkAgain = true;
      return;
    }
    this.#checking = true;
    void this.#ready
      .then(() => this.#heads())
      .then(
        ({ safe, visible }) => {
          if (safe !== this.#knownSafe) {
            this.#knownSafe = safe;
            this.#localAppend();
          }
          return visible > safe ? 5 : this.#pollMs;
        },
        () => this.#pollMs, // the server is away: look again later
      )
      .then((next) => {
        this.#checking = false;
        if (this.#closed) return;
        if (this.#checkAgain) {
          this.#checkAgain = false;
          this.#schedule(0);
        } else this.#schedule(next);
      });
  }

  #stopWatching(): void {
    this.#watching = false;
    if (this.#watchTimer) clearTimeout(this.#watchTimer);
    this.#watchTimer = undefined;
    this.#unlisten?.();
    this.#unlisten = undefined;
  }

  /** Writes queued appends, ends subscriptions, closes the pool if the store opened it. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    while (this.#queue.length > 0 || this.#admission.waiting || this.#writers > 0) {
      await this.#flush();
      await new Promise<void>((r) => setImmediate(r));
    }
    this.#closed = true;
    this.#stopWatching();
    await Promise.all([...this.#subs].map((s) => s.close()));
    if (this.#owned) await this.database.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #open(): void {
    if (this.#closed || this.#closing) throw closedError('PostgreSQL event store');
  }

  async #enter(): Promise<void> {
    this.#open();
    await this.#ready;
    this.database.assertOpen();
  }
}

type Write = { readonly i: number; readonly streamId: string; readonly from: number; first: bigint; ok: boolean };

type Decision =
  | { kind: 'done'; result: AppendResult }
  | { kind: 'error'; error: unknown }
  | { kind: 'write'; write: Write }
  | { kind: 'retryOf'; write: Write; k: number; streamVersion: number; n: number }
  | { kind: 'empty'; version: number; position: bigint; after: Write | undefined };

/** The last write of this batch to `streamId` so far. */
function lastWriteTo(writes: readonly Write[], streamId: string): Write | undefined {
  for (let j = writes.length - 1; j >= 0; j--) if (writes[j]!.streamId === streamId) return writes[j];
  return undefined;
}

type StreamRowLocked = { version: number; state: number; metadata: string | null };

async function lockStream(c: pg.PoolClient, streamId: string): Promise<StreamRowLocked | undefined> {
  const r = await c.query<StreamRowLocked>(
    'SELECT version, state, metadata FROM herald_es_streams WHERE stream_id = $1 FOR UPDATE',
    [streamId],
  );
  return r.rows[0];
}

function streamState(row: StreamRowLocked | undefined): StreamState {
  if (!row) return 'none';
  if (row.state === STATE_SOFT) return 'soft_deleted';
  return row.version > 0 || row.metadata !== null ? 'live' : 'none';
}

function checkName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `a checkpoint name must be a non-empty string (got ${String(name)})`);
  return name;
}
