/**
 * The Redis Streams transport: a partitioned log in Redis, read by offset.
 *
 * Layout (keys.ts): one stream per (topic, partition), `herald:<topic>:<p>`; the partition
 * count is fixed in `herald:<topic>:meta`, created with HSETNX by whoever comes first. Every
 * entry is written with the id `0-*`, so Redis numbers a partition's entries 0-1, 0-2, … and
 * the stream id's sequence IS the offset: the delivery `position` and the publish receipt's
 * `position` are that number as a decimal string. Fields: `e` (the envelope, JSON structured
 * format), `k` (the partition key, when there is one) and `t` (the publisher's wall clock in epoch ms
 * when the entry was sent: the append time consumer lag reports, lag.ts).
 *
 * Consuming (ackModel 'offset'): a group's position is one committed offset per partition, in
 * `herald:<topic>:groups:<p>`. Members of a group divide partitions through fenced leases (the
 * Redis LeaseStore and core's PartitionBalancer): one reader per (group, partition), so keys
 * stay in order. Reading is XRANGE after the position; acks become low-watermark commits
 * through core's LogSubscription (in-flight bounds, nack redelivery, revocation, draining
 * close), written by a Lua script that checks the lease owner and epoch first (fencing): a
 * member that lost its lease cannot move the group's position. Redis consumer groups (XGROUP,
 * XREADGROUP, XACK, XAUTOCLAIM) are not used: with one reader per partition their pending
 * lists would only duplicate the committed offset, and redelivering claimed entries in log
 * order would need the same bookkeeping LogSubscription already does.
 *
 * Wake-ups: a second connection per transport runs `XREAD BLOCK` over the partitions local
 * readers keep up with, from the last offset seen, plus a private doorbell stream that
 * interrupts it when the set changes; an append by any process (or any other client) wakes
 * the reader at once. What it reads, and what this transport publishes, fills a bounded tail
 * window per partition, so readers that keep up get new entries without another round trip.
 * A reader never queries Redis for a partition known to end at its position.
 *
 * Publishing: each message is encoded once and checked against `maxPayloadBytes` before
 * anything is sent; a batch with one oversize message is refused whole
 * (`HERALD_ERR_PAYLOAD_TOO_LARGE`). All `publish()` calls made in the same turn of the event
 * loop go out as ONE pipeline of XADDs (a pipeline, not MULTI: each XADD is atomic on its own,
 * a pipeline keeps them in order on the connection, and MULTI would add a QUEUED reply per
 * command and hold the server for the whole batch without giving the Transport contract
 * anything it asks for). A `publish()` resolves once Redis answered every one of its XADDs; if
 * any failed it rejects with `HERALD_ERR_STORAGE`, and some of its messages may be stored
 * (at-least-once: a retry may duplicate). Per-key order holds for publishes awaited one after
 * another; with several publishes of one key in flight at once, a connection failure can lose
 * an earlier one while a later one is stored. The publish queue is bounded by
 * `maxQueuedMessages`; publishers beyond it wait (FIFO).
 *
 * Durability: an acknowledged publish is as durable as the Redis server's persistence
 * (`capabilities.durability`, docs/reference/durability.md).
 *
 * Retention (off by default: streams grow until trimmed): `maxAgeMs` deletes entries older
 * than that, never past the slowest registered group's committed offset;
 * `maxEntriesPerPartition` is a hard cap that may delete entries some group has not read,
 * counted per group (`retentionDropped`). Both trim with XTRIM MINID in one Lua script per
 * partition, every `intervalMs`, over every topic of the prefix. A group is registered on its
 * first `subscribe()`; `forgetGroup` unregisters it.
 *
 * Failures: while Redis is unreachable, commands wait in ioredis's offline queue and reject
 * with `HERALD_ERR_STORAGE` after the connection's retry budget (connection.ts); commits are
 * not queued (they are retried at the next ack or close). ioredis reconnects by itself;
 * subscriptions keep their leases if they renew in time, otherwise the partitions are revoked
 * and re-acquired, and reading resumes from the committed offset. When the server that
 * answers after a reconnect is another one (new `run_id`: a restart or a failover), it may
 * have lost acknowledged writes and its streams then reuse the lost offsets: every local
 * reader goes back to its group's committed offset (duplicates possible, nothing skipped),
 * and a commit whose entry is gone or replaced is refused (see #rewindAll).
 *
 * `close()` is idempotent and draining: queued publishes are sent, subscriptions are closed
 * (draining and committing, up to `timeoutMs`), then the connections are closed (the command
 * connection only if the transport opened it).
 *
 * Standalone Redis (or a primary with replicas) only: several keys of a topic meet in one
 * script, and no Redis Cluster hash tags are used.
 */
import { createHash, randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import {
  type Clock,
  type CloudEvent,
  DEFAULT_PARTITIONS,
  type Delivery,
  type EnsureTopicOptions,
  encodeEnvelope,
  ensureEnvelope,
  HeraldError,
  isHeraldError,
  type LeaseFence,
  type LeaseGrant,
  type LogRecord,
  type LogSource,
  LogSubscription,
  type LagSource,
  type LogTransportTuning,
  type OutgoingMessage,
  type PartitionLag,
  partitionForKey,
  type PublishReceipt,
  type SubscribeOptions,
  type Subscription,
  systemClock,
  TOPIC_NAME_RE,
  type TopicInfo,
  type Transport,
  type TransportCapabilities,
} from '@herald/core';
import { DeferredSubscription, nonNegativeInt, nonNegativeNumber, partitionCount, positiveInt, positiveNumber, RoundRobin, tooLarge } from '@herald/core/internal';
import type { Redis } from 'ioredis';
import { connect, disconnect, type RedisConnection, storageError } from './connection.ts';
import { DEFAULT_PREFIX, entryId, type KeySpace, keySpace, leaseToken, logScope, offsetOf } from './keys.ts';
import { readLag } from './lag.ts';
import { RedisLeaseStore } from './lease-store.ts';
import { COMMIT, ENSURE_TOPIC, HEAD, REGISTER, RETENTION } from './scripts.ts';

export interface RedisRetentionOptions {
  /** Delete entries older than this (ms), never past the slowest registered group. Absent: keep them. */
  readonly maxAgeMs?: number;
  /** Hard cap of entries per partition; may delete entries a group has not read (counted per group). Absent: no cap. */
  readonly maxEntriesPerPartition?: number;
  /** How often retention runs, ms (default 1000). Age is resolved to about this period. */
  readonly intervalMs?: number;
}

/** Partitions of implicit topics, payload bound, partition leases and commit delay: as the log transports. */
export interface RedisTransportOptions extends Pick<LogTransportTuning, 'defaultPartitions' | 'maxPayloadBytes' | 'leaseMs' | 'heartbeatMs' | 'commitIntervalMs'> {
  /** An ioredis client for commands (not closed by the transport); the wake-up connection is its `duplicate()`. */
  readonly client?: Redis;
  /** Where to connect when the transport opens its own connections (default 127.0.0.1:6379). */
  readonly connection?: RedisConnection;
  /** Key prefix (default 'herald'): streams are `<prefix>:<topic>:<partition>`. */
  readonly prefix?: string;
  /** Entries read per XRANGE at least (default 256); smaller asks are served from the read-ahead. */
  readonly fetchBatch?: number;
  /** Safety-net poll of each subscription, ms (default 100); wake-ups normally come from XREAD BLOCK. */
  readonly pollMs?: number;
  /** Longest single XREAD BLOCK of the wake-up connection, ms (default 1000). */
  readonly blockMs?: number;
  /** Most XADDs in one pipeline (default 4096). */
  readonly maxBatchMessages?: number;
  /** Bound of the publish queue in messages (default 65 536); publishers wait beyond it. */
  readonly maxQueuedMessages?: number;
  readonly retention?: RedisRetentionOptions;
  /** Failures the transport handled itself (wake-up connection, retention runs); for logs. */
  readonly onError?: (error: unknown) => void;
  readonly clock?: Clock;
}

export interface RedisTransportStats {
  /** Pipelines of XADDs sent by publish. */
  readonly publishPipelines: number;
  /** `publish()` calls that were answered. */
  readonly publishCalls: number;
  /** Messages Redis acknowledged. */
  readonly publishedMessages: number;
  /** Messages waiting in the publish queue or in flight now. */
  readonly queuedMessages: number;
  /** XRANGE queries made by readers. */
  readonly fetches: number;
  /** XREAD BLOCK calls made by the wake-up connection. */
  readonly wakeReads: number;
}

interface PartState {
  /** Highest offset known to exist (-1: none seen). */
  seen: number;
  /** When defined: no entry above it existed at the last read, and no news arrived since. */
  confirmed: number | undefined;
  /** When `confirmed` was last established (ms, performance.now()); it is trusted for CONFIRMED_TTL_MS only. */
  confirmedAt: number;
  /** The wake-up connection watches this partition (a local reader read it, and readers keep up). */
  armed: boolean;
  /**
   * The tail window: the newest entries this transport read with XREAD or published itself,
   * covering every offset in (tailFrom, tailFrom + tail.length] — readers that keep up are
   * served from it without a round trip. At most 2 × fetchBatch entries.
   */
  tail: LogRecord[];
  tailFrom: number;
  /** Highest offset served to a local reader. */
  readTo: number;
}

interface TopicState {
  readonly name: string;
  readonly partitions: number;
  readonly rr: RoundRobin;
  readonly streams: readonly string[];
  readonly parts: PartState[];
  readonly listeners: Set<() => void>;
}

interface PendingPublish {
  readonly topic: TopicState;
  readonly partitions: Int32Array;
  readonly keys: (string | undefined)[];
  readonly bodies: string[];
  readonly resolve: (r: readonly PublishReceipt[]) => void;
  readonly reject: (e: unknown) => void;
}

const MIB = 1024 * 1024;
const EMPTY: readonly LogRecord[] = Object.freeze([]);
let memberSeq = 0;

/** Opens a Redis Streams transport. */
export function createRedisTransport(options: RedisTransportOptions = {}): RedisTransport {
  return new RedisTransport(options);
}

export class RedisTransport implements Transport, LagSource {
  readonly name = 'redis';
  readonly capabilities: TransportCapabilities;
  /** The command connection (publish, read, commit, leases). */
  readonly redis: Redis;
  /** The lease store this transport's subscriptions divide partitions with (same connection and prefix). */
  readonly leases: RedisLeaseStore;
  readonly keys: KeySpace;

  readonly #owned: boolean;
  readonly #watcher: Redis;
  readonly #clock: Clock;
  readonly #defaultPartitions: number;
  readonly #maxPayload: number;
  readonly #leaseMs: number;
  readonly #heartbeatMs: number | undefined;
  readonly #fetchBatch: number;
  readonly #tailMax: number;
  readonly #commitIntervalMs: number | undefined;
  readonly #pollMs: number;
  readonly #blockMs: number;
  readonly #maxBatch: number;
  readonly #maxQueued: number;
  readonly #maxAgeMs: number | undefined;
  readonly #cap: number | undefined;
  readonly #onError: ((e: unknown) => void) | undefined;
  readonly #topics = new Map<string, Promise<TopicState>>();
  readonly #topicStates = new Map<string, TopicState>();
  readonly #streamIndex = new Map<string, { t: TopicState; p: number }>();
  readonly #subs = new Set<RedisSubscription>();
  readonly #queue: PendingPublish[] = [];
  #queued = 0;
  readonly #roomWaiters: Array<{ n: number; go: () => void }> = [];
  #flushScheduled = false;
  readonly #inFlight = new Set<Promise<void>>();
  #retentionTimer: { cancel(): void } | undefined;
  #closed = false;
  #closePromise: Promise<void> | undefined;
  #watching = false;
  /** Streams of the XREAD in flight on the wake-up connection. */
  #watchingNow: Set<string> | undefined;
  /** The XREAD in flight was already interrupted (doorbell rung). */
  #rungFor: Set<string> | undefined;
  /** This transport's doorbell stream, and the last doorbell id the wake-up connection saw. */
  readonly #doorbell: string;
  #doorbellSeen = '0-0';
  #doorbellExpiresAt = 0;
  #checking = false;
  #checkAgain = false;
  #runId: string | undefined;
  #commitGate: Promise<void> = Promise.resolve();
  #openCommitGate: (() => void) | undefined;
  readonly #onClose = (): void => this.#holdCommits();
  readonly #onReady = (): void => void this.#identifyServer();
  #stats = { publishPipelines: 0, publishCalls: 0, publishedMessages: 0, fetches: 0, wakeReads: 0 };

  constructor(options: RedisTransportOptions = {}) {
    if (options.client && options.connection !== undefined) {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'createRedisTransport takes `client` or `connection`, not both');
    }
    this.#clock = options.clock ?? systemClock;
    this.#defaultPartitions = partitionCount(options.defaultPartitions ?? DEFAULT_PARTITIONS);
    this.#maxPayload = nonNegativeInt('maxPayloadBytes', options.maxPayloadBytes ?? MIB);
    this.#leaseMs = positiveNumber('leaseMs', options.leaseMs ?? 10_000);
    this.#heartbeatMs = options.heartbeatMs === undefined ? undefined : positiveNumber('heartbeatMs', options.heartbeatMs);
    this.#fetchBatch = positiveInt('fetchBatch', options.fetchBatch ?? 256);
    this.#tailMax = 2 * this.#fetchBatch;
    this.#commitIntervalMs = options.commitIntervalMs;
    this.#pollMs = positiveNumber('pollMs', options.pollMs ?? 100);
    this.#blockMs = positiveInt('blockMs', options.blockMs ?? 1000);
    this.#maxBatch = positiveInt('maxBatchMessages', options.maxBatchMessages ?? 4096);
    this.#maxQueued = positiveInt('maxQueuedMessages', options.maxQueuedMessages ?? 65_536);
    const r = options.retention ?? {};
    this.#maxAgeMs = r.maxAgeMs === undefined ? undefined : nonNegativeNumber('retention.maxAgeMs', r.maxAgeMs);
    this.#cap = r.maxEntriesPerPartition === undefined ? undefined : positiveInt('retention.maxEntriesPerPartition', r.maxEntriesPerPartition);
    const retentionIntervalMs = positiveNumber('retention.intervalMs', r.intervalMs ?? 1000);
    this.#onError = options.onError;

    this.keys = keySpace(options.prefix ?? DEFAULT_PREFIX);
    this.redis = options.client ?? connect(options.connection, 'herald');
    this.#owned = options.client === undefined;
    this.#watcher = this.redis.duplicate({ connectionName: 'herald-wakeup', lazyConnect: true });
    this.#doorbell = this.keys.doorbell(randomUUID());
    // ioredis emits 'error' on connection failures and reconnects by itself; failed commands reject.
    this.#watcher.on('error', () => {});
    if (this.#owned) this.redis.on('error', () => {});
    // Which server answers: a new run_id after a reconnect (restart, failover) may mean lost
    // writes, so readers go back to the committed offsets (see #rewindAll). Commits wait for it.
    this.redis.on('close', this.#onClose);
    this.redis.on('ready', this.#onReady);
    if (this.redis.status === 'ready') void this.#identifyServer();
    else this.#holdCommits();
    this.leases = new RedisLeaseStore({ client: this.redis, prefix: this.keys.prefix });
    this.capabilities = Object.freeze({
      ackModel: 'offset',
      assignment: 'lease',
      consumerGroups: true,
      persistent: true,
      replay: true,
      nativeDelay: false,
      maxPayloadBytes: this.#maxPayload === 0 ? Number.POSITIVE_INFINITY : this.#maxPayload,
      multiProcess: true,
      ackDeadlineMs: 0,
      durability: REDIS_DURABILITY,
    });

    if (this.#maxAgeMs !== undefined || this.#cap !== undefined) {
      const tick = (): void => {
        if (this.#closed) return;
        void this.runRetention()
          .catch((e) => this.#onError?.(e))
          .finally(() => {
            if (!this.#closed) this.#retentionTimer = this.#clock.setTimer(tick, retentionIntervalMs, { unref: true });
          });
      };
      this.#retentionTimer = this.#clock.setTimer(tick, retentionIntervalMs, { unref: true });
    }
  }

  /** Creates the topic if needed (HSETNX of its partition count); an existing one with another count is `HERALD_ERR_TOPIC_MISMATCH`. */
  async ensureTopic(topic: string, options: EnsureTopicOptions = {}): Promise<TopicInfo> {
    this.#open();
    const t = await this.#topic(topic, options.partitions);
    return { topic, partitions: t.partitions };
  }

  /**
   * Queues `messages` for the next pipeline and resolves with their receipts (input order) once
   * Redis acknowledged each XADD. Safe to call concurrently. Validation and size errors are
   * thrown before anything is queued.
   */
  async publish(topic: string, messages: readonly OutgoingMessage[]): Promise<readonly PublishReceipt[]> {
    this.#open();
    if (!Array.isArray(messages)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'publish takes an array of messages');
    checkTopicName(topic);
    const count = messages.length;
    if (count === 0) return [];
    const keys: (string | undefined)[] = new Array(count);
    const bodies: string[] = new Array(count);
    const max = this.#maxPayload;
    for (let i = 0; i < count; i++) {
      const m = messages[i]!;
      if (typeof m !== 'object' || m === null || typeof m.envelope !== 'object' || m.envelope === null) {
        throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `message ${i} to "${topic}" has no envelope`);
      }
      const env: CloudEvent = ensureEnvelope(m.envelope);
      const body = encode(env, topic);
      // UTF-8 takes at most 3 bytes per UTF-16 unit: only long strings need counting.
      if (max > 0 && body.length * 3 > max) {
        const size = Buffer.byteLength(body, 'utf8');
        if (size > max) throw tooLarge(topic, env.id, size, max);
      }
      const key = m.key ?? env.partitionkey;
      if (key !== undefined && typeof key !== 'string') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `message ${i} to "${topic}": key must be a string`);
      keys[i] = key;
      bodies[i] = body;
    }
    const t = await this.#topic(topic);
    const partitions = new Int32Array(count);
    for (let i = 0; i < count; i++) {
      const key = keys[i];
      partitions[i] = key === undefined ? t.rr.next(t.partitions) : partitionForKey(key, t.partitions);
    }
    // Reserve room in the queue (FIFO behind earlier waiters).
    if (this.#roomWaiters.length === 0 && (this.#queued === 0 || this.#queued + count <= this.#maxQueued)) this.#queued += count;
    else await new Promise<void>((go) => this.#roomWaiters.push({ n: count, go }));
    return new Promise<readonly PublishReceipt[]>((resolve, reject) => {
      this.#queue.push({ topic: t, partitions, keys, bodies, resolve, reject });
      this.#scheduleFlush();
    });
  }

  subscribe(topic: string, options: SubscribeOptions): Subscription {
    this.#open();
    if (typeof options?.group !== 'string' || options.group.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'subscribe needs a group');
    checkTopicName(topic);
    const sub = new RedisSubscription(this.#subscriptionHost(), topic, options);
    this.#subs.add(sub);
    void sub.closed.then(
      () => this.#subs.delete(sub),
      () => this.#subs.delete(sub),
    );
    return sub;
  }

  /**
   * Applies retention to every topic of the prefix now (it also runs every `intervalMs` when
   * retention is configured). One Lua script per partition. Returns the entries deleted.
   */
  async runRetention(): Promise<{ deleted: number }> {
    this.#open();
    if (this.#maxAgeMs === undefined && this.#cap === undefined) return { deleted: 0 };
    let deleted = 0;
    const topics = await this.#call(() => this.redis.smembers(this.keys.topics()), 'retention');
    for (const name of topics) {
      const partitions = Number(await this.#call(() => this.redis.hget(this.keys.meta(name), 'partitions'), 'retention'));
      if (!Number.isInteger(partitions) || partitions < 1) continue;
      const results = await Promise.all(
        Array.from({ length: partitions }, (_, p) =>
          this.#call(
            () =>
              RETENTION.run(
                this.redis,
                [this.keys.stream(name, p), this.keys.groups(name, p), this.keys.marks(name, p), this.keys.dropped(name)],
                [this.#maxAgeMs ?? -1, this.#cap ?? -1],
              ),
            'retention',
          ),
        ),
      );
      for (const r of results) deleted += Number((r as [number])[0] ?? 0);
    }
    return { deleted };
  }

  /** Entries of `topic` the hard cap deleted before `group` committed them; without `group`, the sum over groups. */
  async retentionDropped(topic: string, group?: string): Promise<number> {
    this.#open();
    checkTopicName(topic);
    if (group !== undefined) return Number((await this.#call(() => this.redis.hget(this.keys.dropped(topic), group), 'retentionDropped')) ?? 0);
    const all = await this.#call(() => this.redis.hvals(this.keys.dropped(topic)), 'retentionDropped');
    return all.reduce((s, v) => s + Number(v), 0);
  }

  /**
   * Forgets `group` on `topic`: its committed offsets and dropped counts are deleted, so
   * retention stops waiting for it. A member still running re-creates its offsets at its next
   * commit. Returns whether the group was known.
   */
  async forgetGroup(topic: string, group: string): Promise<boolean> {
    this.#open();
    const t = await this.#topic(topic);
    const pipe = this.redis.pipeline();
    for (let p = 0; p < t.partitions; p++) pipe.hdel(this.keys.groups(topic, p), group);
    pipe.hdel(this.keys.dropped(topic), group);
    const res = await this.#call(() => pipe.exec(), 'forgetGroup');
    return (res ?? []).slice(0, t.partitions).some(([, n]) => Number(n) > 0);
  }

  /**
   * Consumer lag (`LagSource`) per (topic, group, partition) of every group registered under
   * the prefix — every process's, including groups with no member left — narrowed by `group`
   * and `topic`; an unknown group or topic gives []. `messages` counts the entries after the
   * group's committed offset (delivered but unacked ones too), `oldestUnhandledAt` is the oldest
   * one's `t` field (its publisher's clock, lag.ts). A read only: one Lua script per topic, all
   * in flight together (plus SMEMBERS of the topic set without a `topic` filter). Rejects with
   * `HERALD_ERR_STORAGE` when Redis fails, `HERALD_ERR_CLOSED` once closed,
   * `HERALD_ERR_INVALID_ARGUMENT` for a malformed filter. Safe to call concurrently.
   */
  async lag(filter: { readonly group?: string; readonly topic?: string } = {}): Promise<readonly PartitionLag[]> {
    this.#open();
    if (typeof filter !== 'object' || filter === null) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'lag takes an optional filter object { group?, topic? }');
    const { group, topic } = filter;
    if (group !== undefined && (typeof group !== 'string' || group.length === 0)) {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `lag filter: group must be a non-empty string (got ${JSON.stringify(group)})`);
    }
    if (topic !== undefined) checkTopicName(topic);
    const topics = topic !== undefined ? [topic] : await this.#call(() => this.redis.smembers(this.keys.topics()), 'read consumer lag');
    return this.#call(() => readLag(this.redis, this.keys, topics, group), 'read consumer lag');
  }

  /** Counters for tests, benchmarks and metrics. */
  stats(): RedisTransportStats {
    return { ...this.#stats, queuedMessages: this.#queued };
  }

  close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.#closePromise) {
      this.#closed = true;
      this.#retentionTimer?.cancel();
      this.#closePromise = this.#close(options);
    }
    return this.#closePromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(options: { timeoutMs?: number }): Promise<void> {
    // Accepted publishes are sent first.
    while (this.#queue.length > 0 || this.#roomWaiters.length > 0 || this.#inFlight.size > 0) {
      if (this.#queue.length > 0) this.#flush();
      if (this.#inFlight.size > 0) await Promise.race(this.#inFlight);
      else await new Promise<void>((r) => setImmediate(r));
    }
    await Promise.all([...this.#subs].map((s) => s.close(options)));
    this.redis.off('close', this.#onClose);
    this.redis.off('ready', this.#onReady);
    this.#watcher.disconnect();
    if (this.#doorbellExpiresAt > 0) await this.redis.unlink(this.#doorbell).catch(() => {});
    if (this.#owned) await disconnect(this.redis);
  }

  // ── publishing ──────────────────────────────────────────────────────────

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      while (this.#queue.length > 0) this.#flush();
    });
  }

  /** Sends one pipeline: whole publish calls, up to `maxBatchMessages` XADDs (at least one call). */
  #flush(): void {
    let n = 0;
    let take = 0;
    while (take < this.#queue.length) {
      const size = this.#queue[take]!.bodies.length;
      if (take > 0 && n + size > this.#maxBatch) break;
      n += size;
      take++;
    }
    const batch = this.#queue.splice(0, take);
    const pipe = this.redis.pipeline();
    // The append time lag() reports: an explicit `0-*` id holds no time, so the entry carries it.
    const at = String(this.#clock.now());
    for (const b of batch) {
      const streams = b.topic.streams;
      for (let i = 0; i < b.bodies.length; i++) {
        const key = b.keys[i];
        const stream = streams[b.partitions[i]!]!;
        if (key === undefined) pipe.xadd(stream, '0-*', 'e', b.bodies[i]!, 't', at);
        else pipe.xadd(stream, '0-*', 'k', key, 'e', b.bodies[i]!, 't', at);
      }
    }
    this.#stats.publishPipelines++;
    const done = pipe.exec().then(
      (results) => this.#settle(batch, results, undefined),
      (e: unknown) => this.#settle(batch, null, e),
    );
    this.#inFlight.add(done);
    void done.finally(() => this.#inFlight.delete(done));
  }

  #settle(batch: readonly PendingPublish[], results: [Error | null, unknown][] | null, failure: unknown): void {
    let at = 0;
    let n = 0;
    for (const b of batch) {
      const count = b.bodies.length;
      n += count;
      let error: unknown = failure;
      const receipts: PublishReceipt[] = new Array(count);
      for (let i = 0; i < count; i++) {
        const r = results?.[at + i];
        const p = b.partitions[i]!;
        if (!r) {
          error ??= new Error('no reply');
          continue;
        }
        if (r[0]) {
          error ??= r[0];
          continue;
        }
        const offset = offsetOf(String(r[1]));
        if (offset === undefined) {
          error ??= new Error(`unexpected entry id ${String(r[1])}`);
          continue;
        }
        const st = b.topic.parts[p]!;
        this.#addTail(st, offset - 1, [{ offset, key: b.keys[i], raw: b.bodies[i]! }]);
        this.#news(b.topic, p, offset);
        receipts[i] = { topic: b.topic.name, partition: p, position: String(offset) };
      }
      at += count;
      if (error === undefined) {
        this.#stats.publishCalls++;
        this.#stats.publishedMessages += count;
        b.resolve(receipts);
      } else b.reject(storageError(error, `publish to "${b.topic.name}"`));
    }
    this.#queued -= n;
    this.#admitWaiters();
  }

  #admitWaiters(): void {
    while (this.#roomWaiters.length > 0) {
      const w = this.#roomWaiters[0]!;
      if (this.#queued > 0 && this.#queued + w.n > this.#maxQueued) break;
      this.#roomWaiters.shift();
      this.#queued += w.n; // reserved now; the waiter enqueues in its continuation
      w.go();
    }
  }

  // ── topics ──────────────────────────────────────────────────────────────

  #topic(name: string, partitions?: number): Promise<TopicState> {
    checkTopicName(name);
    if (partitions !== undefined) partitionCount(partitions);
    let p = this.#topics.get(name);
    if (!p) {
      const wanted = partitions ?? this.#defaultPartitions;
      p = this.#call(() => ENSURE_TOPIC.run(this.redis, [this.keys.meta(name), this.keys.topics()], [name, wanted]), `ensure topic "${name}"`).then((stored) => {
        const n = Number(stored);
        if (!Number.isInteger(n) || n < 1) throw new HeraldError('HERALD_ERR_CORRUPT_RECORD', `topic "${name}": stored partition count ${JSON.stringify(stored)} is not a positive integer`);
        return this.#topicState(name, n);
      });
      this.#topics.set(name, p);
      p.catch(() => {
        if (this.#topics.get(name) === p) this.#topics.delete(name);
      });
    }
    return p.then((t) => {
      if (partitions !== undefined && partitions !== t.partitions) {
        throw new HeraldError('HERALD_ERR_TOPIC_MISMATCH', `topic "${name}" has ${t.partitions} partitions, not ${partitions}`, {
          details: { topic: name, partitions: t.partitions, requested: partitions },
        });
      }
      return t;
    });
  }

  #topicState(name: string, partitions: number): TopicState {
    const existing = this.#topicStates.get(name);
    if (existing) return existing;
    const t: TopicState = {
      name,
      partitions,
      rr: new RoundRobin(),
      streams: Array.from({ length: partitions }, (_, p) => this.keys.stream(name, p)),
      parts: Array.from({ length: partitions }, () => ({ seen: -1, confirmed: undefined, confirmedAt: 0, armed: false, tail: [], tailFrom: 0, readTo: -1 })),
      listeners: new Set(),
    };
    this.#topicStates.set(name, t);
    for (let p = 0; p < partitions; p++) this.#streamIndex.set(t.streams[p]!, { t, p });
    return t;
  }

  // ── reading ─────────────────────────────────────────────────────────────

  /** Something above `offset`'s predecessor exists on (t, p): readers must look again. */
  #news(t: TopicState, p: number, offset: number): void {
    const st = t.parts[p]!;
    if (offset <= st.seen) return;
    st.seen = offset;
    st.confirmed = undefined;
    for (const l of t.listeners) l();
  }

  /**
   * Up to `limit` entries of (t, p) after `after`: from the tail window when it covers `after`,
   * nothing when the partition is known to end at or before `after`, else one XRANGE.
   */
  async #query(t: TopicState, p: number, after: number, limit: number): Promise<readonly LogRecord[]> {
    const st = t.parts[p]!;
    const tailTo = st.tailFrom + st.tail.length;
    if (st.tail.length > 0 && after >= st.tailFrom && after < tailTo) {
      const start = after - st.tailFrom;
      const out = st.tail.slice(start, start + limit);
      this.#served(t, p, out[out.length - 1]!.offset);
      return out;
    }
    // "Nothing after `confirmed`" is trusted briefly only: if a wake-up from the XREAD watcher is
    // ever missed, the partition is read again within CONFIRMED_TTL_MS instead of never.
    if (st.confirmed !== undefined && after >= st.confirmed && performance.now() - st.confirmedAt < CONFIRMED_TTL_MS) return EMPTY;
    this.#stats.fetches++;
    const stream = t.streams[p]!;
    let reply: [string, string[]][];
    try {
      reply = (await this.redis.xrange(stream, after < 1 ? '-' : `(${entryId(after)}`, '+', 'COUNT', limit)) as [string, string[]][];
    } catch (e) {
      throw storageError(e, `read ${stream}`);
    }
    const records: LogRecord[] = new Array(reply.length);
    for (let i = 0; i < reply.length; i++) records[i] = toRecord(stream, reply[i]!);
    const end = records.length > 0 ? Math.max(after, records[records.length - 1]!.offset) : after;
    // News that arrived while the query ran and lies beyond what it returned forbids confirming.
    const covered = st.seen <= end;
    // Extend the window only: a lagging reader must not evict the tail the others read.
    if (records.length > 0 && (st.tail.length === 0 || after === st.tailFrom + st.tail.length)) this.#addTail(st, after, records);
    this.#news(t, p, end);
    if (covered) {
      st.confirmed = records.length < limit ? end : undefined;
      st.confirmedAt = performance.now();
    }
    this.#served(t, p, end);
    return records;
  }

  /** A local reader got entries up to `offset`: it keeps up, so the partition is watched. */
  #served(t: TopicState, p: number, offset: number): void {
    const st = t.parts[p]!;
    if (offset > st.readTo) st.readTo = offset;
    if (!st.armed) {
      st.armed = true;
      this.#armed(t.streams[p]!);
    }
  }

  /** Adds entries covering (from, last] to the tail window (a gap starts a new window); keeps the newest `tailMax`. */
  #addTail(st: PartState, from: number, records: readonly LogRecord[]): void {
    if (st.tail.length === 0 || from !== st.tailFrom + st.tail.length) {
      st.tail = [];
      st.tailFrom = from;
    }
    for (const r of records) {
      if (r.offset !== st.tailFrom + st.tail.length + 1) {
        // Not contiguous (trimmed or deleted entries): the window restarts at this entry.
        st.tail = [];
        st.tailFrom = r.offset - 1;
      }
      st.tail.push(r);
    }
    const excess = st.tail.length - this.#tailMax;
    if (excess > 0) {
      st.tail.splice(0, excess);
      st.tailFrom += excess;
    }
  }

  /** A partition became watched: make sure the XREAD in flight includes it (else ring the doorbell). */
  #armed(stream: string): void {
    const now = this.#watchingNow;
    if (!this.#watching || now === undefined || now.has(stream) || this.#rungFor === now) return;
    this.#rungFor = now;
    this.#ring();
  }

  /**
   * Ends the wake-up connection's XREAD early so the next one includes newly armed partitions:
   * every XREAD also watches this transport's private doorbell stream, and an XADD to it
   * (MAXLEN 1, expiring when unused) returns the XREAD at once. Unlike CLIENT UNBLOCK this
   * needs no connection id, works when the XREAD has not reached the server yet (it returns
   * as soon as it does), and survives reconnects.
   */
  #ring(): void {
    this.redis.xadd(this.#doorbell, 'MAXLEN', '1', '*', 'r', '1').catch(() => {});
    const now = Date.now();
    if (now > this.#doorbellExpiresAt - 30_000) {
      this.#doorbellExpiresAt = now + 60_000;
      this.redis.pexpire(this.#doorbell, 60_000).catch(() => {});
    }
  }

  #startWatching(): void {
    if (this.#watching || this.#closed) return;
    this.#watching = true;
    if (this.#watcher.status === 'wait') this.#watcher.connect().catch(() => {});
    void this.#watchLoop();
  }

  /**
   * The wake-up loop: XREAD BLOCK (COUNT fetchBatch) over the doorbell and the armed
   * partitions, each from its last seen offset. What it returns goes into the partitions' tail
   * windows, so readers that keep up get new entries without another round trip. A partition
   * whose readers fall behind (half a window unread) is disarmed until a reader reads it
   * again: the loop never spins on, nor buffers for, a reader that cannot read now.
   */
  async #watchLoop(): Promise<void> {
    let failures = 0;
    while (!this.#closed) {
      const keys: string[] = [this.#doorbell];
      const ids: string[] = [this.#doorbellSeen];
      const from = new Map<string, number>();
      for (const t of this.#topicStates.values()) {
        if (t.listeners.size === 0) continue;
        for (let p = 0; p < t.partitions; p++) {
          const st = t.parts[p]!;
          if (!st.armed) continue;
          keys.push(t.streams[p]!);
          ids.push(st.seen < 1 ? '0-0' : entryId(st.seen));
          from.set(t.streams[p]!, Math.max(0, st.seen));
        }
      }
      this.#watchingNow = new Set(keys);
      let res: [string, [string, string[]][]][] | null;
      try {
        this.#stats.wakeReads++;
        res = (await this.#watcher.xread('COUNT', this.#fetchBatch, 'BLOCK', this.#blockMs, 'STREAMS', ...keys, ...ids)) as [string, [string, string[]][]][] | null;
        failures = 0;
      } catch (e) {
        this.#watchingNow = undefined;
        if (this.#closed) return;
        this.#onError?.(storageError(e, 'wake-up XREAD'));
        await sleep(Math.min(1000, 50 * ++failures));
        continue;
      }
      this.#watchingNow = undefined;
      if (!res) continue;
      for (const [key, entries] of res) {
        if (entries.length === 0) continue;
        if (key === this.#doorbell) {
          this.#doorbellSeen = String(entries[entries.length - 1]![0]);
          continue;
        }
        const where = this.#streamIndex.get(String(key));
        if (!where) continue;
        const { t, p } = where;
        const st = t.parts[p]!;
        let records: LogRecord[];
        try {
          records = entries.map((e) => toRecord(String(key), e));
        } catch (e) {
          // Readers meet the same entry with XRANGE and report it; stop watching here.
          st.armed = false;
          for (const l of t.listeners) l();
          continue;
        }
        const last = records[records.length - 1]!.offset;
        if (last <= st.seen) continue;
        const seenBefore = st.seen;
        this.#addTail(st, from.get(String(key)) ?? last - records.length, records);
        this.#news(t, p, last);
        // A short answer means nothing newer existed when it ran.
        if (records.length < this.#fetchBatch && seenBefore <= last) {
          st.confirmed = last;
          st.confirmedAt = performance.now();
        }
        if (st.tailFrom + st.tail.length - Math.max(st.readTo, st.tailFrom) >= this.#tailMax / 2) st.armed = false;
      }
    }
  }

  #holdCommits(): void {
    if (this.#openCommitGate) return;
    this.#commitGate = new Promise<void>((resolve) => {
      this.#openCommitGate = resolve;
    });
  }

  /** On every (re)connect: reads the server's run_id; a different one than before rewinds every reader. */
  async #identifyServer(): Promise<void> {
    try {
      const info = await this.redis.info('server');
      const runId = /run_id:(\w+)/.exec(info)?.[1];
      const before = this.#runId;
      this.#runId = runId;
      if (before !== undefined && runId !== before) await this.#rewindAll(`the Redis server changed (run_id ${before} → ${runId}: restarted or failed over)`);
    } catch (e) {
      this.#onError?.(storageError(e, 'identify the server'));
    } finally {
      if (this.redis.status === 'ready' && this.#openCommitGate) {
        const open = this.#openCommitGate;
        this.#openCommitGate = undefined;
        open();
      }
    }
  }

  /**
   * The server may have lost acknowledged writes (it restarted or failed over, or a commit
   * found its offset beyond a log's end or at an entry other than the one read): stream ids
   * restart after the last surviving entry, so new entries reuse lost offsets, and a reader
   * that kept its position would skip them. Every local reader therefore goes back to its
   * group's committed offset as stored in Redis (always at or below the surviving end: it was
   * written after the entries), and this transport forgets what it had seen. Duplicates of
   * the uncommitted window are possible; nothing is skipped. Reported through `onError`.
   */
  async #rewindAll(reason: string): Promise<void> {
    if (this.#checking) {
      this.#checkAgain = true;
      return;
    }
    this.#checking = true;
    try {
      do {
        this.#checkAgain = false;
        this.#onError?.(new HeraldError('HERALD_ERR_STORAGE', `redis: ${reason}; readers go back to their committed offsets (duplicates possible, nothing skipped)`));
        for (const t of [...this.#topicStates.values()]) {
          if (this.#closed) return;
          const heads = await Promise.all(t.streams.map((stream) => this.#call(() => HEAD.run(this.redis, [stream], []), 'read head')));
          for (let p = 0; p < t.partitions; p++) {
            const st = t.parts[p]!;
            const head = Number(heads[p]);
            st.seen = head;
            st.confirmed = undefined;
            st.tail = [];
            st.tailFrom = 0;
            st.readTo = Math.min(st.readTo, head);
            st.armed = false;
          }
          // The topic's metadata and the groups' registrations may be gone too.
          await this.#call(() => ENSURE_TOPIC.run(this.redis, [this.keys.meta(t.name), this.keys.topics()], [t.name, t.partitions]), 'restore topic');
          for (const sub of [...this.#subs]) {
            if (sub.topic !== t.name) continue;
            await this.#call(() => Promise.all(t.streams.map((stream, p) => REGISTER.run(this.redis, [stream, this.keys.groups(t.name, p)], [sub.group, 'earliest']))), 'register group');
            await sub.rewind();
          }
          for (const l of t.listeners) l();
        }
        // The XREAD in flight (re-sent by ioredis) waits on stale ids: make the loop rebuild it.
        if (this.#watchingNow) {
          this.#rungFor = this.#watchingNow;
          this.#ring();
        }
      } while (this.#checkAgain && !this.#closed);
    } catch (e) {
      this.#onError?.(e);
    } finally {
      this.#checking = false;
    }
  }

  #subscriptionHost(): SubscriptionHost {
    return {
      clock: this.#clock,
      closed: () => this.#closed,
      topic: (name) => this.#topic(name),
      register: async (t, group, startFrom) => {
        await Promise.all(
          t.streams.map((stream, p) =>
            this.#call(() => REGISTER.run(this.redis, [stream, this.keys.groups(t.name, p)], [group, startFrom === 'latest' ? 'latest' : 'earliest']), `register group "${group}"`),
          ),
        );
      },
      source: (t, group) => this.#source(t, group),
      leases: this.leases,
      leaseMs: this.#leaseMs,
      heartbeatMs: this.#heartbeatMs,
      pollMs: this.#pollMs,
      commitIntervalMs: this.#commitIntervalMs,
    };
  }

  #source(t: TopicState, group: string): LogSource & { reset(partition: number): void } {
    const readAhead = new ReadAhead(t.partitions, this.#fetchBatch, (p, after, limit) => this.#query(t, p, after, limit));
    const scope = logScope(t.name, group);
    // What each partition's reader was given, until committed: the commit proves it still is the entry at that offset.
    const served: Map<number, string>[] = Array.from({ length: t.partitions }, () => new Map());
    return {
      reset: (p) => {
        readAhead.reset(p);
        served[p]!.clear();
      },
      partitions: t.partitions,
      committed: async (p) => {
        served[p]!.clear();
        const v = await this.#call(() => this.redis.hget(this.keys.groups(t.name, p), group), 'read committed offset');
        return v === null ? -1 : Number(v);
      },
      head: async (p) => {
        const committed = await this.#call(() => this.redis.hget(this.keys.groups(t.name, p), group), 'read committed offset');
        if (committed !== null && Number(committed) >= 0) return Number(committed);
        return Number(await this.#call(() => HEAD.run(this.redis, [t.streams[p]!], []), 'read head'));
      },
      fetch: async (p, after, limit) => {
        const rows = await readAhead.fetch(p, after, limit);
        const m = served[p]!;
        for (const r of rows) m.set(r.offset, r.raw ?? '');
        return rows;
      },
      commit: async (p, offset, fence) => {
        // Never from ioredis's offline queue: after a reconnect, only once the server is identified.
        if (this.redis.status !== 'ready') throw new HeraldError('HERALD_ERR_STORAGE', `redis: not connected; the commit of ${t.streams[p]} waits for the next ack or close`);
        await this.#commitGate;
        // Checked against this partition's lease, whatever scope the caller's fence names.
        const f: LeaseFence | undefined = fence ? { scope, resource: String(p), owner: fence.owner, epoch: fence.epoch } : undefined;
        const raw = served[p]!.get(offset);
        const r = (await this.#call(
          () =>
            COMMIT.run(
              this.redis,
              [this.keys.lease(scope, String(p)), this.keys.epoch(scope, String(p)), this.keys.groups(t.name, p), t.streams[p]!],
              [f ? leaseToken(f.epoch, f.owner) : '', group, String(offset), raw === undefined ? '' : createHash('sha1').update(raw).digest('hex')],
            ),
          'commit',
        )) as [number, string?];
        const code = Number(r[0]);
        if (code === 2 || code === 3) {
          void this.#rewindAll(`commit of ${t.streams[p]} at ${offset} refused: ${code === 2 ? `beyond the log's end (${r[1]})` : 'another entry is at that offset now'}, the server lost acknowledged writes`);
          throw new HeraldError('HERALD_ERR_STORAGE', `commit refused: ${t.streams[p]} no longer holds the entry read at offset ${offset}; re-reading from the committed offset`, {
            details: { topic: t.name, partition: p, offset },
          });
        }
        if (code !== 1) {
          throw new HeraldError('HERALD_ERR_LEASE_LOST', `commit refused: lease ${scope}/${p} epoch ${f!.epoch} of "${f!.owner}" is no longer current (now ${JSON.stringify(r[1] ?? '')})`, {
            details: { ...f, current: r[1] ?? null },
          });
        }
        const m = served[p]!;
        for (const k of m.keys()) {
          if (k > offset) break;
          m.delete(k);
        }
      },
      onAppend: (listener) => {
        t.listeners.add(listener);
        this.#startWatching();
        // Partitions armed while the topic had no listener are not in the XREAD in flight.
        for (let p = 0; p < t.partitions; p++) if (t.parts[p]!.armed) this.#armed(t.streams[p]!);
        return () => {
          t.listeners.delete(listener);
        };
      },
    };
  }

  async #call<T>(fn: () => Promise<T>, what: string): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw storageError(e, what);
    }
  }

  #open(): void {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'redis transport is closed');
  }
}

/** What a subscription needs from its transport. */
interface SubscriptionHost {
  readonly clock: Clock;
  closed(): boolean;
  topic(name: string): Promise<TopicState>;
  register(t: TopicState, group: string, startFrom: SubscribeOptions['startFrom']): Promise<void>;
  source(t: TopicState, group: string): LogSource & { reset(partition: number): void };
  readonly leases: RedisLeaseStore;
  readonly leaseMs: number;
  readonly heartbeatMs: number | undefined;
  readonly pollMs: number;
  readonly commitIntervalMs: number | undefined;
}

/**
 * A subscription whose topic metadata is read from Redis first: `subscribe()` is synchronous,
 * so the LogSubscription is created once the topic's partition count is known and the group
 * is registered. Until then it owns no partitions; iteration waits. If Redis is unreachable
 * it keeps trying (reporting each failure to `onError`) until it succeeds or is closed.
 */
class RedisSubscription extends DeferredSubscription<LogSubscription> {
  readonly #host: SubscriptionHost;
  readonly #options: SubscribeOptions;
  #source: { reset(partition: number): void } | undefined;
  #partitions: number | undefined;
  #wake: (() => void) | undefined;

  constructor(host: SubscriptionHost, topic: string, options: SubscribeOptions) {
    const memberId = options.memberId ?? `m-${hostname()}-${process.pid}-${Date.now().toString(36)}-${(memberSeq++).toString(36)}`;
    super(topic, options.group, memberId, () => this.#init(), () => this.#wake?.());
    this.#host = host;
    this.#options = options;
  }

  /**
   * Re-reads every owned partition from the group's committed offset (the log may have gone
   * back): each is dropped as lost — unsettled deliveries are abandoned, nothing more is
   * committed — and taken again under the same lease, from the offset stored in Redis.
   */
  async rewind(): Promise<void> {
    const inner = this.inner;
    if (!inner || this.closing) return;
    for (let p = 0; p < (this.#partitions ?? 0); p++) this.#source?.reset(p);
    for (const p of inner.assignment()) {
      const grant = inner.fence(p) as LeaseGrant | undefined;
      await inner.revoke(p, true);
      if (grant && !this.closing) await inner.assign(p, grant);
    }
  }

  /** Builds the LogSubscription once the topic is known, retrying with back-off while Redis is unreachable. */
  async #init(): Promise<LogSubscription | undefined> {
    const o = this.#options;
    let failures = 0;
    for (;;) {
      if (this.closing) return undefined;
      if (this.#host.closed()) throw new HeraldError('HERALD_ERR_CLOSED', 'redis transport is closed');
      try {
        const t = await this.#host.topic(this.topic);
        await this.#host.register(t, this.group, o.startFrom);
        if (this.closing) return undefined;
        const h = this.#host;
        const source = h.source(t, this.group);
        this.#source = source;
        this.#partitions = t.partitions;
        return new LogSubscription({
          ...o,
          memberId: this.memberId,
          topic: this.topic,
          source,
          clock: h.clock,
          ownership: { kind: 'lease', store: h.leases, leaseMs: h.leaseMs, ...(h.heartbeatMs !== undefined ? { heartbeatMs: h.heartbeatMs } : {}) },
          pollMs: h.pollMs,
          ...(h.commitIntervalMs !== undefined ? { commitIntervalMs: h.commitIntervalMs } : {}),
        });
      } catch (e) {
        o.onError?.(e);
        if (isHeraldError(e) && !e.retryable) throw e;
        await new Promise<void>((resolve) => {
          const timer = this.#host.clock.setTimer(resolve, Math.min(2000, 100 * 2 ** Math.min(5, failures++)), { unref: true });
          this.#wake = () => {
            timer.cancel();
            resolve();
          };
        });
        this.#wake = undefined;
      }
    }
  }
}

/**
 * Per-partition read-ahead for one subscription. The reader often asks for a handful of
 * entries (one ack frees one slot); each query reads at least `batch` and the rest is served
 * from memory. Safe because a partition's entries after a given offset never change (append
 * only; retention only deletes old ones, and re-reading a deleted entry once more is harmless
 * under at-least-once).
 */
class ReadAhead {
  readonly #windows: Array<{ rows: readonly LogRecord[]; at: number } | undefined>;
  readonly #batch: number;
  readonly #query: (p: number, after: number, limit: number) => Promise<readonly LogRecord[]>;

  constructor(partitions: number, batch: number, query: (p: number, after: number, limit: number) => Promise<readonly LogRecord[]>) {
    this.#windows = new Array(partitions);
    this.#batch = batch;
    this.#query = query;
  }

  /** Forgets what was read ahead on `p` (after the log went back). */
  reset(p: number): void {
    this.#windows[p] = undefined;
  }

  async fetch(p: number, after: number, limit: number): Promise<readonly LogRecord[]> {
    let w = this.#windows[p];
    if (w) {
      // Skip what the reader has passed; the window is valid only if it resumes right after `after`.
      while (w.at < w.rows.length && w.rows[w.at]!.offset <= after) w.at++;
      if (w.at === 0 || w.at >= w.rows.length || w.rows[w.at - 1]!.offset !== after) w = this.#windows[p] = undefined;
    }
    if (!w) {
      const rows = await this.#query(p, after, Math.max(limit, this.#batch));
      if (rows.length <= limit) return rows;
      w = this.#windows[p] = { rows, at: 0 };
    }
    const out = w.rows.slice(w.at, w.at + limit);
    w.at += out.length;
    if (w.at >= w.rows.length) this.#windows[p] = undefined;
    return out;
  }
}

/** How long a partition known to have nothing newer is answered from memory before Redis is asked again, ms. */
const CONFIRMED_TTL_MS = 250;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function toRecord(stream: string, entry: [string, string[]]): LogRecord {
  const id = String(entry[0]);
  const offset = offsetOf(id);
  if (offset === undefined) {
    throw new HeraldError('HERALD_ERR_CORRUPT_RECORD', `stream ${stream} holds an entry id Herald did not write (${id}); Herald streams are written only with ids 0-<offset>`, {
      details: { stream, id },
    });
  }
  const fields = entry[1] ?? [];
  let raw = '';
  let key: string | undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const f = fields[i];
    if (f === 'e') raw = String(fields[i + 1]);
    else if (f === 'k') key = String(fields[i + 1]);
  }
  return { offset, key, raw };
}

export const REDIS_DURABILITY =
  "Redis Streams: an acknowledged publish is in the server's memory and as durable as its persistence. " +
  'AOF appendfsync always: fsynced before the reply, survives a process crash, an OS crash and a power loss. ' +
  'AOF appendfsync everysec (the usual AOF setting): written to the OS before the reply, so it normally survives a Redis process crash; ' +
  'an OS crash or power loss loses about the last second (up to ~2 s when the disk is slow, and a process crash in that slow-disk window can too). ' +
  'RDB snapshots only: everything since the last snapshot. No persistence: everything on restart. ' +
  'Replication is asynchronous: a failover can lose the last acknowledged writes.';

function encode(env: CloudEvent, topic: string): string {
  try {
    return encodeEnvelope(env);
  } catch (cause) {
    if (isHeraldError(cause)) throw cause;
    throw new HeraldError('HERALD_ERR_ENVELOPE_INVALID', `envelope "${String(env.id)}" to "${topic}" cannot be encoded as JSON: ${(cause as Error).message}`, {
      cause,
      details: { topic, id: env.id },
    });
  }
}

function checkTopicName(name: string): void {
  if (typeof name !== 'string' || !TOPIC_NAME_RE.test(name)) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `topic name must be 1–200 of letters, digits, '.', '_', '-' (got ${JSON.stringify(name)})`);
  }
}

