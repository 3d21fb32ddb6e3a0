/**
 * The Transport: publish batches to a partitioned topic, subscribe as a consumer group.
 *
 * Failure rules every implementation keeps (the contract suite in @herald/testkit checks them):
 * - `publish` is safe to call concurrently. It resolves only when the messages are as durable
 *   as `capabilities.durability` says; on rejection none, some or all may have been stored
 *   (at-least-once: retrying may duplicate). Oversize messages are refused before anything
 *   is sent, with `HERALD_ERR_PAYLOAD_TOO_LARGE`.
 * - Delivery verbs (`ack`, `nack`, `reject`, `extend`) never block and are idempotent: the
 *   first settling verb wins, later ones are no-ops. Settling after the partition was revoked
 *   is a no-op (the message will be redelivered to the new owner).
 * - Within a partition, deliveries come in log order. Per-key scheduling is the router's job,
 *   never the adapter's.
 * - `close()` is idempotent and draining: it stops fetching, waits (up to `timeoutMs`) for
 *   unsettled deliveries, commits what was acked, releases leases. Deliveries still unsettled
 *   at the deadline are abandoned unacked and will be redelivered.
 */
import type { CloudEvent } from './envelope.ts';
import type { LeaseFence } from './lease.ts';
import type { HeraldError } from './errors.ts';

export interface TransportCapabilities {
  /** 'offset': acks become low-watermark commits per partition. 'message': each message acked alone. */
  readonly ackModel: 'offset' | 'message';
  /** Who divides partitions among a group's members. */
  readonly assignment: 'broker' | 'lease' | 'local';
  /** Several groups each get every message; members of a group share them. */
  readonly consumerGroups: boolean;
  /** Messages survive a restart of the process (or broker). */
  readonly persistent: boolean;
  /** A new group can read from the start of retained history. */
  readonly replay: boolean;
  /** The broker can delay a delivery itself. */
  readonly nativeDelay: boolean;
  /** Largest encoded envelope (bytes of the JSON structured format) a publish accepts. */
  readonly maxPayloadBytes: number;
  /** Several OS processes can share one group (the multi-process scenarios need it). */
  readonly multiProcess: boolean;
  /** If the broker requires extend() before a deadline, that deadline in ms; 0 when none. */
  readonly ackDeadlineMs: number;
  /** What an acknowledged publish survives, in words (see docs/reference/durability.md). */
  readonly durability: string;
}

export interface OutgoingMessage {
  readonly envelope: CloudEvent;
  /** Partition key; defaults to `envelope.partitionkey`. No key: round-robin. */
  readonly key?: string;
}

export interface PublishReceipt {
  readonly topic: string;
  readonly partition: number;
  /** Opaque, transport-specific position (a log offset as a decimal string on log transports). */
  readonly position: string;
}

export interface TopicInfo {
  readonly topic: string;
  readonly partitions: number;
}

export interface EnsureTopicOptions {
  /** Partition count for a new topic (default: the transport's `defaultPartitions`). Fixed once created. */
  readonly partitions?: number;
}

export interface PartitionChange {
  readonly assigned: readonly number[];
  readonly revoked: readonly number[];
  /** True when revocation was forced (lease lost, connection lost) rather than a clean rebalance. */
  readonly lost: boolean;
}

export interface SubscribeOptions {
  /** Consumer group name: each group gets every message; members of a group share partitions. */
  readonly group: string;
  /** Unsettled deliveries at most, across partitions (default 1024). Fetching pauses at the bound. */
  readonly maxInFlight?: number;
  /** Per partition, delivered-but-not-committed messages at most (default 4096); the partition pauses at the bound. */
  readonly maxUncommittedPerPartition?: number;
  /** Where a group with no committed position starts (default 'earliest' where `replay`). */
  readonly startFrom?: 'earliest' | 'latest';
  /** Called when partitions are assigned to or taken from this member. */
  readonly onPartitions?: (change: PartitionChange) => void;
  /** Member id for leases and logs (default: a random id). */
  readonly memberId?: string;
  /** Errors the subscription handled itself (a fenced commit refused, a store call failed); for logs. */
  readonly onError?: (error: unknown) => void;
}

export interface Delivery {
  /** The envelope, or null when the stored bytes could not be decoded (`decodeError` says why). */
  readonly envelope: CloudEvent | null;
  readonly decodeError?: HeraldError;
  /** The stored bytes (JSON structured format) as read, for dead letters. */
  readonly raw: string;
  readonly topic: string;
  readonly partition: number;
  readonly key: string | undefined;
  /** Opaque position in the partition. */
  readonly position: string;
  /** 1 on first delivery, +1 on each redelivery the transport knows of. */
  readonly attempt: number;
  /** Aborted when this member no longer owns the partition: drop queued work, expect redelivery elsewhere. */
  readonly revoked: AbortSignal;
  /** The lease this delivery was read under (lease-assigned transports only); dead-letter writes pass it on for fencing. */
  readonly fence?: LeaseFence;
  /** Done: commit (offset model: once every earlier message of the partition is done too). */
  ack(): void;
  /** Not done: redeliver after `delayMs` (default 0). */
  nack(options?: { delayMs?: number }): void;
  /** Give up on this message at the transport (the router has stored it as a dead letter first). */
  reject(reason: string): void;
  /** Still working: push out the broker's redelivery deadline, if any. */
  extend(): void;
}

export interface Subscription extends AsyncIterable<Delivery> {
  readonly topic: string;
  readonly group: string;
  readonly memberId: string;
  /** Partitions this member currently owns. */
  assignment(): readonly number[];
  /** The lease `partition` is read under, while owned (lease-assigned transports only). */
  fence?(partition: number): LeaseFence | undefined;
  /** Resolves once the subscription is closed (by close() or a fatal error, which it rejects with). */
  readonly closed: Promise<void>;
  /** Idempotent draining close; see the module doc. */
  close(options?: { timeoutMs?: number }): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Tuning shared by the table-backed log transports (SQLite, PostgreSQL): partitions of implicit
 * topics, payload bound, partition leases, fetching, commits and the group-commit publish queue.
 */
export interface LogTransportTuning {
  /** Partitions for topics created implicitly (default 8). */
  readonly defaultPartitions?: number;
  /** Largest encoded envelope in bytes (default 1 MiB); 0 disables the check. */
  readonly maxPayloadBytes?: number;
  /** Partition lease time to live, ms (default 10 000). */
  readonly leaseMs?: number;
  /** Lease renewal / rebalance period, ms (default leaseMs / 3). */
  readonly heartbeatMs?: number;
  /** Records read per fetch (default 256). */
  readonly fetchBatch?: number;
  /** Delay before a moved watermark is committed, ms (default 10). */
  readonly commitIntervalMs?: number;
  /** Most messages written by one group commit (default 4096). */
  readonly maxBatchMessages?: number;
  /** Bound of the publish queue in messages (default 65 536); publishers wait beyond it. */
  readonly maxQueuedMessages?: number;
}

export interface Transport {
  readonly name: string;
  readonly capabilities: TransportCapabilities;
  /** Creates the topic if needed; an existing topic with another partition count is `HERALD_ERR_TOPIC_MISMATCH`. */
  ensureTopic(topic: string, options?: EnsureTopicOptions): Promise<TopicInfo>;
  /** Publishes a batch (creating the topic with default partitions if needed); receipts in input order. */
  publish(topic: string, messages: readonly OutgoingMessage[]): Promise<readonly PublishReceipt[]>;
  subscribe(topic: string, options: SubscribeOptions): Subscription;
  /** Idempotent: closes every subscription (draining, up to `timeoutMs`) then the connection. */
  close(options?: { timeoutMs?: number }): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export const DEFAULT_MAX_IN_FLIGHT = 1024;
export const DEFAULT_MAX_UNCOMMITTED_PER_PARTITION = 4096;
export const DEFAULT_PARTITIONS = 8;

/** Topic names: 1–200 characters of letters, digits, '.', '_', '-'. */
export const TOPIC_NAME_RE = /^[A-Za-z0-9._-]{1,200}$/;
