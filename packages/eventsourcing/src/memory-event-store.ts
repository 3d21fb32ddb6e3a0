/**
 * The in-memory event store: the reference implementation of `EventStore` for tests and
 * development. Same semantics as the SQLite store (both pass the same contract), including
 * JSON round-tripping of data (a read never returns the caller's objects) and bigint positions.
 *
 * Appends are applied synchronously when called (after catalog validation, which may await),
 * so there is nothing to group-commit; inline projections registered with
 * `addInlineProjection` run inside the append and can veto it by throwing.
 * Not durable; the whole log stays in memory.
 */
import { traced } from '@herald/core/internal';
import { channels, type Clock, HeraldError, systemClock } from '@herald/core';
import {
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
  decodeRow,
  exactRetry,
  prepareEvents,
  type PreparedEvent,
  type StoredRow,
  visibility,
} from './backend.ts';
import type { EventCatalog } from './catalog.ts';
import { closedError, streamDeleted } from './errors.ts';
import { CatchUpSubscription } from './subscription.ts';
import type {
  AppendOptions,
  AppendResult,
  CheckpointStore,
  DeleteStreamOptions,
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
  SubscribeOptions,
} from './types.ts';

export interface InMemoryEventStoreOptions {
  /** Recorded times, maxAge (default the system clock). */
  readonly clock?: Clock;
  /** Validates appends and upcasts reads (see `EventCatalog`). */
  readonly catalog?: EventCatalog;
  /**
   * Another in-memory store whose data this one shares: a second view of the same log, for
   * instance with another catalog (what reopening a database file with new code is for SQLite).
   */
  readonly sharedWith?: InMemoryEventStore;
}

/**
 * A hook run inside every append, after the append's checks passed and before it is visible.
 * `position` is the append's last position. Throwing fails that append (nothing is stored).
 * Returns what to do once it is committed.
 */
export type InlineHook = (events: readonly RecordedEvent[], position: bigint) => (() => void) | void;

/** Synchronous `readAll` for Herald's in-memory projections (not public API). */
export const READ_ALL_SYNC: unique symbol = Symbol('herald.memory.readAllSync');

interface Stream {
  readonly id: string;
  /** rows[version - 1]; emptied when tombstoned. */
  rows: StoredRow[];
  metadata: StreamMetadata;
  state: 'live' | 'soft_deleted' | 'tombstoned';
  softDeletedBefore: number;
}

/** The data several views (`sharedWith`) have in common. */
class Shared {
  /** $all: log[position - 1]; undefined where a tombstoned stream's event was. */
  readonly log: Array<StoredRow | undefined> = [];
  readonly streams = new Map<string, Stream>();
  readonly categories = new Map<string, StoredRow[]>();
  readonly listeners = new Set<() => void>();
  readonly inline = new Set<InlineHook>();
  readonly checkpoints = new Map<string, bigint>();
  /** Every stored event id (ids are unique in a store). */
  readonly ids = new Map<string, StoredRow>();
}

export class InMemoryEventStore implements EventStore {
  readonly #clock: Clock;
  readonly #catalog: EventCatalog | undefined;
  readonly #shared: Shared;
  readonly #log: Array<StoredRow | undefined>;
  readonly #streams: Map<string, Stream>;
  readonly #categories: Map<string, StoredRow[]>;
  readonly #listeners: Set<() => void>;
  readonly #inline: Set<InlineHook>;
  readonly #checkpointMap: Map<string, bigint>;
  readonly #subs = new Set<CatchUpSubscription>();
  #closed = false;

  readonly checkpoints: CheckpointStore = {
    get: async (name) => {
      this.#open();
      return this.#checkpointMap.get(checkName(name));
    },
    set: async (name, position) => {
      this.#open();
      if (typeof position !== 'bigint' || position < 0n) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `a checkpoint is a non-negative bigint (got ${String(position)})`);
      this.#checkpointMap.set(checkName(name), position);
    },
  };

  constructor(options: InMemoryEventStoreOptions = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#catalog = options.catalog;
    this.#shared = options.sharedWith ? options.sharedWith.#shared : new Shared();
    this.#log = this.#shared.log;
    this.#streams = this.#shared.streams;
    this.#categories = this.#shared.categories;
    this.#listeners = this.#shared.listeners;
    this.#inline = this.#shared.inline;
    this.#checkpointMap = this.#shared.checkpoints;
  }

  get catalog(): EventCatalog | undefined {
    return this.#catalog;
  }

  async appendToStream(streamId: string, events: readonly NewEvent[], options: AppendOptions = {}): Promise<AppendResult> {
    // Traced through `herald:append` (a straight call when nothing subscribes).
    return traced(channels.append, () => ({ store: 'memory', streamId, count: events.length }), () => this.#appendToStream(streamId, events, options));
  }

  async #appendToStream(streamId: string, events: readonly NewEvent[], options: AppendOptions): Promise<AppendResult> {
    this.#open();
    checkStreamId(streamId);
    const expected = checkExpectedVersion(options?.expectedVersion);
    const prepared = prepareEvents(streamId, events, this.#catalog, this.#clock.now());
    const ready = Array.isArray(prepared) ? prepared : await prepared;
    this.#open();
    return this.#append(streamId, ready, expected);
  }

  #append(streamId: string, events: readonly PreparedEvent[], expected: ReturnType<typeof checkExpectedVersion>): AppendResult {
    const s = this.#streams.get(streamId);
    if (s?.state === 'tombstoned') throw streamDeleted(streamId);
    const version = s ? s.rows.length : 0;
    const state = s ? s.state : 'none';
    if (events.length > 0) {
      const found = events.map((e) => {
        const r = this.#shared.ids.get(e.id);
        return r && { streamId: r.streamId, version: r.streamVersion, position: r.position, type: r.type };
      });
      const retry = exactRetry(streamId, events, found, expected);
      if (retry) return retry;
    }
    checkExpected(streamId, expected, version, state);
    if (events.length === 0) {
      const last = s?.rows[s.rows.length - 1];
      return { streamVersion: version, firstPosition: last?.position ?? 0n, position: last?.position ?? 0n, idempotent: false };
    }
    const now = this.#clock.now();
    const first = BigInt(this.#log.length + 1);
    const rows: StoredRow[] = events.map((e, i) => ({ ...e, streamId, streamVersion: version + i + 1, position: first + BigInt(i), recordedAt: now }));
    const after: Array<() => void> = [];
    if (this.#inline.size > 0) {
      const recorded = rows.map((r) => decodeRow(r, this.#catalog)).filter((e): e is RecordedEvent => e !== undefined);
      for (const hook of this.#inline) {
        const done = hook(recorded, rows[rows.length - 1]!.position);
        if (done) after.push(done);
      }
    }
    let stream = s;
    if (!stream) {
      stream = { id: streamId, rows: [], metadata: {}, state: 'live', softDeletedBefore: 0 };
      this.#streams.set(streamId, stream);
    }
    stream.state = 'live';
    const cat = categoryOf(streamId);
    let catRows = this.#categories.get(cat);
    if (!catRows) this.#categories.set(cat, (catRows = []));
    for (const r of rows) {
      stream.rows.push(r);
      this.#shared.ids.set(r.id, r);
      this.#log.push(r);
      catRows.push(r);
    }
    for (const f of after) f();
    for (const l of this.#listeners) l();
    return { streamVersion: version + rows.length, firstPosition: first, position: rows[rows.length - 1]!.position, idempotent: false };
  }

  async readStream(streamId: string, options: ReadStreamOptions = {}): Promise<ReadStreamResult> {
    this.#open();
    checkStreamId(streamId);
    const direction = checkDirection(options.direction);
    const maxCount = checkMaxCount(options.maxCount);
    const fromVersion = checkVersionArg('fromVersion', options.fromVersion);
    const toVersion = checkVersionArg('toVersion', options.toVersion);
    const s = this.#streams.get(streamId);
    if (s?.state === 'tombstoned') throw streamDeleted(streamId);
    const last = s ? s.rows.length : 0;
    const vis = visibility(s?.metadata ?? {}, s?.softDeletedBefore ?? 0, last, this.#clock.now());
    const events: RecordedEvent[] = [];
    let nextVersion: number | undefined;
    if (direction === 'forward') {
      let v = Math.max(fromVersion ?? 1, vis.minVersion);
      const end = Math.min(last, toVersion ?? last);
      for (; v <= end && events.length < maxCount; v++) {
        const r = s!.rows[v - 1]!;
        if (r.recordedAt < vis.minRecordedAt) continue;
        const e = decodeRow(r, this.#catalog);
        if (e) events.push(e);
      }
      nextVersion = v <= end ? v : undefined;
    } else {
      let v = Math.min(fromVersion ?? last, last);
      const end = Math.max(toVersion ?? 1, vis.minVersion);
      for (; v >= end && events.length < maxCount; v--) {
        const r = s!.rows[v - 1]!;
        if (r.recordedAt < vis.minRecordedAt) continue;
        const e = decodeRow(r, this.#catalog);
        if (e) events.push(e);
      }
      nextVersion = v >= end ? v : undefined;
    }
    return {
      streamId,
      events,
      streamVersion: last,
      streamPosition: last > 0 ? s!.rows[last - 1]!.position : 0n,
      streamExists: last > 0 && s!.state === 'live',
      truncateBefore: vis.truncateBefore,
      nextVersion,
    };
  }

  async readAll(options: ReadAllOptions = {}): Promise<ReadAllResult> {
    this.#open();
    return this.#readAll(options);
  }

  #readAll(options: ReadAllOptions): ReadAllResult {
    const direction = checkDirection(options.direction);
    const maxCount = checkMaxCount(options.maxCount);
    const category = checkCategory(options.category);
    const after = checkPositionArg('after', options.after) ?? 0n;
    const head = BigInt(this.#log.length);
    const before = checkPositionArg('before', options.before) ?? head + 1n;
    const events: RecordedEvent[] = [];
    const source: ReadonlyArray<StoredRow | undefined> = category === undefined ? this.#log : (this.#categories.get(category) ?? []);
    // Index of the first row with position > after (forward) / last with position < before (backward).
    const positionAt = (i: number): bigint => (category === undefined ? BigInt(i + 1) : source[i]!.position);
    if (direction === 'forward') {
      let i = category === undefined ? Number(after < head ? after : head) : lowerBound(source as StoredRow[], after + 1n);
      let last = after;
      for (; i < source.length && events.length < maxCount; i++) {
        const r = source[i];
        last = positionAt(i);
        if (r === undefined || (r as { deleted?: boolean }).deleted) continue;
        const e = decodeRow(r, this.#catalog);
        if (e) events.push(e);
      }
      const isEnd = i >= source.length;
      return { events, position: isEnd ? (head > after ? head : after) : last, isEnd };
    }
    let i = category === undefined ? Number((before - 1n < head ? before - 1n : head)) - 1 : lowerBound(source as StoredRow[], before) - 1;
    let last = before;
    for (; i >= 0 && events.length < maxCount; i--) {
      const r = source[i];
      last = positionAt(i);
      if (r === undefined || (r as { deleted?: boolean }).deleted) continue;
      const e = decodeRow(r, this.#catalog);
      if (e) events.push(e);
    }
    const isEnd = i < 0;
    return { events, position: isEnd ? 0n : last, isEnd };
  }

  [READ_ALL_SYNC](options: ReadAllOptions): ReadAllResult {
    this.#open();
    return this.#readAll(options);
  }

  subscribe(options: SubscribeOptions = {}): EventSubscription {
    this.#open();
    const sub = new CatchUpSubscription(
      {
        read: async (after, limit, category) => {
          this.#open();
          return this.#readAll({ after, maxCount: limit, ...(category !== undefined ? { category } : {}) });
        },
        onAppend: (l) => {
          this.#listeners.add(l);
          return () => this.#listeners.delete(l);
        },
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
    return BigInt(this.#log.length);
  }

  async getStream(streamId: string): Promise<StreamInfo> {
    this.#open();
    checkStreamId(streamId);
    const s = this.#streams.get(streamId);
    if (!s) return { streamId, state: 'none', streamVersion: 0, metadata: {} };
    return { streamId, state: s.state, streamVersion: s.state === 'tombstoned' ? 0 : s.rows.length, metadata: { ...s.metadata } };
  }

  async setStreamMetadata(streamId: string, metadata: StreamMetadata): Promise<void> {
    this.#open();
    checkStreamId(streamId);
    const meta = checkMetadata(metadata);
    let s = this.#streams.get(streamId);
    if (s?.state === 'tombstoned') throw streamDeleted(streamId);
    if (!s) {
      s = { id: streamId, rows: [], metadata: {}, state: 'live', softDeletedBefore: 0 };
      this.#streams.set(streamId, s);
    }
    s.metadata = meta;
  }

  async deleteStream(streamId: string, options: DeleteStreamOptions = {}): Promise<void> {
    this.#open();
    checkStreamId(streamId);
    const expected = checkExpectedVersion(options.expectedVersion);
    const s = this.#streams.get(streamId);
    if (s?.state === 'tombstoned') throw streamDeleted(streamId);
    checkExpected(streamId, expected, s?.rows.length ?? 0, s?.state ?? 'none');
    if (!s || s.rows.length === 0) return;
    s.state = 'soft_deleted';
    s.softDeletedBefore = s.rows.length + 1;
  }

  async tombstoneStream(streamId: string, options: DeleteStreamOptions = {}): Promise<void> {
    this.#open();
    checkStreamId(streamId);
    const expected = checkExpectedVersion(options.expectedVersion);
    let s = this.#streams.get(streamId);
    if (s?.state === 'tombstoned') throw streamDeleted(streamId);
    checkExpected(streamId, expected, s?.rows.length ?? 0, s?.state ?? 'none');
    if (!s) {
      s = { id: streamId, rows: [], metadata: {}, state: 'live', softDeletedBefore: 0 };
      this.#streams.set(streamId, s);
    }
    for (const r of s.rows) {
      this.#shared.ids.delete(r.id);
      this.#log[Number(r.position) - 1] = undefined;
      (r as { deleted?: boolean }).deleted = true;
    }
    if (s.rows.length > 0) {
      const cat = categoryOf(streamId);
      const rows = this.#categories.get(cat);
      if (rows) this.#categories.set(cat, rows.filter((r) => r.streamId !== streamId));
    }
    s.rows = [];
    s.state = 'tombstoned';
  }

  /** Registers a hook run inside every append (inline projections). Returns the function that removes it. */
  addInlineHook(hook: InlineHook): () => void {
    this.#inline.add(hook);
    return () => this.#inline.delete(hook);
  }

  /** Registers a listener called after every append. Returns the function that removes it. */
  onAppend(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#subs].map((s) => s.close()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #open(): void {
    if (this.#closed) throw closedError('in-memory event store');
  }
}

function checkName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `a checkpoint name must be a non-empty string (got ${String(name)})`);
  return name;
}

/** First index whose row position is >= p. */
function lowerBound(rows: readonly StoredRow[], p: bigint): number {
  let lo = 0;
  let hi = rows.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (rows[mid]!.position < p) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
