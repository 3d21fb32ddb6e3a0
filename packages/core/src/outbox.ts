/**
 * The outbox, relay side. Rows written by `Transaction.publish` carry
 * `partition = hash(key) mod partitions` of the *outbox* (murmur2, the core partitioner; no
 * key → a partition of the writer's choosing). Relays lease outbox partitions through a
 * `LeaseStore` (not row-level SKIP LOCKED, which breaks per-key order), publish a partition's
 * unsent rows in order with several publishes in flight, mark sent only the unbroken run of
 * confirmed rows, and resend from the first unconfirmed row after a failure.
 *
 * Scheduled messages (`Transaction.schedule`, `publish(…, { deliverAt })`) are a second table
 * read by the scheduler: due rows are published, then marked fired.
 */
import type { LeaseFence } from './lease.ts';
import type { OutgoingMessage } from './transport.ts';
import type { ScheduledWrite } from './unit-of-work.ts';

export interface OutboxRecord {
  /** Monotonic within a partition, as a decimal string (order of commit on SQLite; see the backend's notes). */
  readonly id: string;
  readonly partition: number;
  readonly topic: string;
  readonly message: OutgoingMessage;
  /** Epoch ms the row was written. */
  readonly createdAt: number;
}

export interface OutboxBacklog {
  /** Unsent rows. */
  readonly count: number;
  /** `createdAt` of the oldest unsent row; undefined when none. */
  readonly oldestCreatedAt: number | undefined;
}

/** Storage the relay reads; implemented by each backend next to its `UnitOfWork`. */
export interface OutboxStore {
  /** Outbox partition count, fixed when the store is created. */
  readonly partitions: number;
  /** Unsent rows of `partition` with id greater than `after` (all unsent when undefined), oldest first, at most `limit`. */
  pending(partition: number, limit: number, after?: string): Promise<readonly OutboxRecord[]>;
  /**
   * Marks the rows of `partition` with id ≤ `upTo` sent, only while `fence` is the current lease
   * on that partition. False (nothing written) when fenced out.
   */
  markSent(partition: number, upTo: string, fence: LeaseFence): Promise<boolean>;
  backlog(): Promise<OutboxBacklog>;
  /** Deletes sent rows sent before `sentBefore` (epoch ms), at most `limit`; returns how many. */
  purgeSent(sentBefore: number, limit: number): Promise<number>;
  /** Calls `listener` after each commit in this process that wrote outbox rows (the relay's in-process wake-up). Returns an unsubscribe. */
  onWrite(listener: () => void): () => void;
}

export interface ScheduledRecord {
  readonly id: string;
  readonly topic: string;
  readonly message: OutgoingMessage;
  /** Epoch ms. */
  readonly deliverAt: number;
}

/** Storage the scheduler reads; implemented by each backend next to its `UnitOfWork`. */
export interface SchedulerStore {
  /** Records delayed messages outside any business transaction; an id already stored keeps its first entry. Returns ids in input order. */
  schedule(writes: readonly ScheduledWrite[]): Promise<readonly string[]>;
  /** Removes a scheduled message not yet fired; true when it was there. */
  cancel(id: string): Promise<boolean>;
  /** Unfired messages with `deliverAt ≤ now`, earliest first, at most `limit`. */
  due(now: number, limit: number): Promise<readonly ScheduledRecord[]>;
  /** Marks fired (or deletes) the given ids, only while `fence` is current; false when fenced out. */
  markFired(ids: readonly string[], fence: LeaseFence): Promise<boolean>;
  /** Earliest `deliverAt` among unfired messages; undefined when none. */
  nextDue(): Promise<number | undefined>;
  /** Unfired messages. */
  pendingCount(): Promise<number>;
  /** As `OutboxStore.onWrite`, for schedule writes. */
  onWrite(listener: () => void): () => void;
}
