/**
 * The event store API: streams of events with optimistic concurrency, the global log `$all`,
 * categories, catch-up subscriptions with stored checkpoints, stream metadata, soft delete
 * and tombstones. Implemented in memory here (`InMemoryEventStore`) and on SQLite in
 * `@herald/sqlite` (`createSqliteEventStore`); both pass `describeEventStoreContract` from
 * `@herald/testkit` unmodified.
 *
 * Numbers and positions (decided once, for every backend):
 * - A **stream version** is a `number`: the first event of a stream is version 1, a stream
 *   with no events has version 0. Versions never go back and never repeat, not even after a
 *   soft delete (a soft-deleted stream continues from its last version).
 * - A **global position** is a `bigint`: the place of an event in `$all`, starting at 1n and
 *   strictly increasing in commit order. `0n` means "before the first event" (start a
 *   subscription there). Positions are never reused; tombstoning a stream leaves holes.
 *   Readers that resume "after position p" never skip an event: positions become visible in
 *   order (in memory appends are synchronous; SQLite serializes writers).
 *
 * Events map to CloudEvents (`toCloudEvent`): `type`, `id`, `time` (recorded time), `data`,
 * `dataschema` (the schema version), `subject` (the stream id), `sequence` (the global
 * position), `correlationid`, `causationid`, and the event's string/number/boolean metadata
 * as extensions, so an event-sourced service can publish its events through an outbox.
 */
import type { CloudEvent } from '@herald/core';

/** What an appended event carries. `id` defaults to a new UUID v7: give your own for idempotent retries. */
export interface NewEvent<Type extends string = string, Data = unknown> {
  readonly type: Type;
  /** JSON data (validated against the catalog's schema when the store has a catalog). */
  readonly data: Data;
  /**
   * Unique in the store (it becomes the CloudEvents id, unique per source). A retried append
   * with the same ids is a no-op (see `appendToStream`); reusing an id for another event is an error.
   */
  readonly id?: string;
  /** Schema version of `data`; default: the catalog's newest version of `type`, or 1. */
  readonly schemaVersion?: number;
  readonly correlationId?: string;
  readonly causationId?: string;
  /** Extra metadata; kept with the event and mapped to CloudEvents extensions when publishable. */
  readonly metadata?: Readonly<Record<string, string | number | boolean>>;
}

/** An event as stored and read back (after upcasting). */
export interface RecordedEvent<Type extends string = string, Data = unknown> {
  readonly streamId: string;
  /** Version of the event in its stream (1-based). */
  readonly streamVersion: number;
  /** Position in `$all` (1-based bigint). */
  readonly position: bigint;
  readonly id: string;
  readonly type: Type;
  /** Schema version of `data` as returned (after upcasting). */
  readonly schemaVersion: number;
  readonly data: Data;
  /** When the store recorded it, epoch ms (from the store's injected clock). */
  readonly recordedAt: number;
  readonly correlationId?: string;
  readonly causationId?: string;
  readonly metadata?: Readonly<Record<string, string | number | boolean>>;
  /** Present when upcasters changed the event: the type and schema version actually stored. */
  readonly stored?: { readonly type: string; readonly schemaVersion: number };
}

/**
 * - `'any'`: no check.
 * - `'no_stream'`: the stream has no events (or was soft-deleted).
 * - `'stream_exists'`: the stream has at least one event and is not soft-deleted.
 * - a number: the stream's current version is exactly that (0 = no events yet).
 */
export type ExpectedVersion = 'any' | 'no_stream' | 'stream_exists' | number;

export interface AppendOptions {
  /** Default `'any'`. */
  readonly expectedVersion?: ExpectedVersion;
}

export interface AppendResult {
  /** The stream's version after the append (for an exact retry: the version of its last event). */
  readonly streamVersion: number;
  /** Global position of the append's first event. */
  readonly firstPosition: bigint;
  /** Global position of the append's last event. For an empty append: the stream's last event's position (0n if none). */
  readonly position: bigint;
  /** True when every event was already stored by an earlier identical append (nothing was written). */
  readonly idempotent: boolean;
}

export type ReadDirection = 'forward' | 'backward';

export interface ReadStreamOptions {
  /** Default `'forward'`. */
  readonly direction?: ReadDirection;
  /** Forward: the first version to return (default 1). Backward: the highest version to return (default the last). Inclusive. */
  readonly fromVersion?: number;
  /** Forward: the last version to return. Backward: the lowest. Inclusive. Default: no limit. */
  readonly toVersion?: number;
  /** At most this many events (default `DEFAULT_MAX_COUNT`, at most `MAX_READ_COUNT`). */
  readonly maxCount?: number;
}

export interface ReadStreamResult<E extends RecordedEvent = RecordedEvent> {
  readonly streamId: string;
  readonly events: readonly E[];
  /** The stream's current version (last event ever appended, also when soft-deleted or truncated); 0 when it never had events. */
  readonly streamVersion: number;
  /** Global position of the stream's last event (0n when none). */
  readonly streamPosition: bigint;
  /** False when the stream has no events or is soft-deleted. */
  readonly streamExists: boolean;
  /** The first version a read may return (from `truncateBefore` and soft delete; maxCount/maxAge hide more). */
  readonly truncateBefore: number;
  /** The version to continue from with the same direction, or undefined when the read reached the end. */
  readonly nextVersion: number | undefined;
}

export interface ReadAllOptions {
  /** Forward: return events with a position strictly greater (default 0n = from the start). */
  readonly after?: bigint;
  /** Backward: return events with a position strictly smaller (default: from the end). */
  readonly before?: bigint;
  /** Default `'forward'`. */
  readonly direction?: ReadDirection;
  /** Only streams of this category: the part of the stream id before its first `-` (`'order'` or `'order-'`). */
  readonly category?: string;
  /** At most this many events (default `DEFAULT_MAX_COUNT`, at most `MAX_READ_COUNT`). */
  readonly maxCount?: number;
}

export interface ReadAllResult<E extends RecordedEvent = RecordedEvent> {
  readonly events: readonly E[];
  /**
   * The cursor: continue with `after: position` (forward) or `before: position` (backward).
   * Forward, it is at least the position of the last event returned; when the read reached
   * the end it is the head of `$all` at the time of the read (so a filtered reader that
   * caught up knows it has seen everything up to the head).
   */
  readonly position: bigint;
  /** True when the read reached the end (forward: the head; backward: the start). */
  readonly isEnd: boolean;
}

/** Stream metadata; every field optional. `setStreamMetadata` replaces the whole object. */
export interface StreamMetadata {
  /** Reads return at most the newest `maxCount` events of the stream. */
  readonly maxCount?: number;
  /** Reads leave out events recorded more than `maxAgeMs` ago (by the store's clock). */
  readonly maxAgeMs?: number;
  /** Reads leave out events with a version below this. */
  readonly truncateBefore?: number;
  /** Free-form JSON for the application. */
  readonly custom?: Readonly<Record<string, unknown>>;
}

export type StreamState = 'live' | 'soft_deleted' | 'tombstoned' | 'none';

export interface StreamInfo {
  readonly streamId: string;
  readonly state: StreamState;
  readonly streamVersion: number;
  readonly metadata: StreamMetadata;
}

export interface DeleteStreamOptions {
  /** Default `'any'`. Checked like an append's. */
  readonly expectedVersion?: ExpectedVersion;
}

export interface SubscribeOptions {
  /** Start after this position (default 0n: from the first event). Ignored when `checkpoint` has a stored position. */
  readonly after?: bigint;
  /** Name of a stored checkpoint: start after it, and `commit()` stores the position there. */
  readonly checkpoint?: string;
  /** Only events of this category (see `ReadAllOptions.category`). */
  readonly category?: string;
  /** Events read per round (default 256, at most `MAX_READ_COUNT`); also the bound of events held in memory. */
  readonly batchSize?: number;
  /** How often to look for appends made by other processes, ms (SQLite; default 5). */
  readonly pollMs?: number;
  /** Aborting closes the subscription. */
  readonly signal?: AbortSignal;
}

/**
 * A catch-up subscription: history first, then live, through ONE code path — every round reads
 * `$all` (or the category) after the last position it yielded; when it finds nothing it waits
 * for an append (in-process at once, other processes within `pollMs`) and reads again. Nothing
 * is pushed, so there is no switch to get wrong: no gap and no duplicate where history ends.
 *
 * Iterate it with `for await`. Pull-based: at most `batchSize` events are held in memory.
 * Breaking out of the loop closes it. A read that fails ends the iteration with that error.
 */
export interface EventSubscription extends AsyncIterable<RecordedEvent> {
  /** Position of the last event yielded (or the start position). */
  readonly position: bigint;
  /**
   * Stores `position` (default: the last yielded) in the subscription's checkpoint. Throws
   * `HERALD_ERR_INVALID_ARGUMENT` when the subscription has no checkpoint name. Idempotent.
   */
  commit(position?: bigint): Promise<void>;
  /** Stops the subscription: a pending `next()` resolves as done. Idempotent. */
  close(): Promise<void>;
  /** Resolves when the subscription has stopped (rejects never). */
  readonly closed: Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Named positions for subscriptions and projections. */
export interface CheckpointStore {
  /** The stored position, or undefined. */
  get(name: string): Promise<bigint | undefined>;
  /** Stores `position` for `name` (overwrites). */
  set(name: string, position: bigint): Promise<void>;
}

/**
 * An event store. Failure rules common to every method:
 * - bad arguments (empty stream id, bad maxCount, an event that is not `{ type, data }`, data
 *   that is not JSON) → `HERALD_ERR_INVALID_ARGUMENT`, before anything is stored;
 * - with an event catalog: data failing its schema → `HERALD_ERR_SCHEMA_INVALID`, an event type
 *   the catalog does not know → `HERALD_ERR_UNKNOWN_EVENT_TYPE`, before anything is stored;
 *   a stored event the catalog cannot read → `HERALD_ERR_UNKNOWN_STORED_EVENT` (see `EventCatalog`);
 * - a tombstoned stream → `HERALD_ERR_STREAM_DELETED` for reads, appends and metadata writes;
 * - the backend failing (busy, I/O) → `HERALD_ERR_STORAGE` (retryable);
 * - after `close()` → `HERALD_ERR_CLOSED`.
 * Every method is safe to call concurrently.
 */
export interface EventStore {
  /**
   * Appends `events` to `streamId` atomically: all are stored, at consecutive versions and
   * consecutive-in-commit-order global positions, or none is.
   *
   * - `expectedVersion` mismatch → `HERALD_ERR_CONCURRENCY` (`ConcurrencyError` with
   *   `expectedVersion` and `actualVersion`); nothing stored.
   * - Idempotency: if every event id is already in the stream, at consecutive versions in the
   *   same order, with the same types, and `expectedVersion` agrees with where they were
   *   written, the append is a no-op that returns the ORIGINAL versions and positions
   *   (`idempotent: true`). If only some ids are stored, or elsewhere, or in another stream
   *   (ids are unique in a store) → `HERALD_ERR_IDEMPOTENCY_CONFLICT`. Ids repeated within one
   *   append → `HERALD_ERR_INVALID_ARGUMENT`.
   * - An empty append only checks `expectedVersion`.
   *
   * Backends may commit several concurrent appends in one transaction (group commit): one
   * append failing never fails the others.
   */
  appendToStream(streamId: string, events: readonly NewEvent[], options?: AppendOptions): Promise<AppendResult>;

  /** Reads one stream (bounded page). A stream that never existed reads as empty, version 0. */
  readStream(streamId: string, options?: ReadStreamOptions): Promise<ReadStreamResult>;

  /** Reads `$all`, or one category, by global position (bounded page). */
  readAll(options?: ReadAllOptions): Promise<ReadAllResult>;

  /** A catch-up subscription to `$all` or a category. */
  subscribe(options?: SubscribeOptions): EventSubscription;

  /** The position of the last event appended (0n when none). */
  headPosition(): Promise<bigint>;

  /** State, version and metadata of a stream (state `'none'` when it never existed). Never throws STREAM_DELETED. */
  getStream(streamId: string): Promise<StreamInfo>;

  /** Replaces the stream's metadata. Works on streams with no events yet. */
  setStreamMetadata(streamId: string, metadata: StreamMetadata): Promise<void>;

  /**
   * Soft delete: the stream reads as empty and `streamExists` is false; its events stay in
   * `$all`. Appending again revives it, continuing from its last version (expect `'no_stream'`
   * or the exact version). Deleting a stream with no events is a no-op.
   */
  deleteStream(streamId: string, options?: DeleteStreamOptions): Promise<void>;

  /** Hard delete, forever: the stream's events are removed (also from `$all`); any later use → `HERALD_ERR_STREAM_DELETED`. */
  tombstoneStream(streamId: string, options?: DeleteStreamOptions): Promise<void>;

  readonly checkpoints: CheckpointStore;

  /** Waits for appends in flight, stops subscriptions; later calls fail `HERALD_ERR_CLOSED`. Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Default page size of every read. */
export const DEFAULT_MAX_COUNT = 1000;
/** Largest page any read returns. */
export const MAX_READ_COUNT = 10_000;
/** Default batch of a subscription round. */
export const DEFAULT_SUBSCRIPTION_BATCH = 256;

/** The CloudEvents form of a recorded event (for an outbox relay). */
export type RecordedCloudEvent = CloudEvent;
