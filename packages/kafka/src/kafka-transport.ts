/**
 * The Kafka transport (kafkajs 2.2). Topics have a fixed partition count; Herald places keys
 * itself with core `partitionForKey` (murmur2, which is also what kafkajs' DefaultPartitioner
 * and Java's default partitioner compute) and sends each record to an explicit partition.
 * Events travel in the CloudEvents Kafka binding, binary mode (see binding.ts).
 *
 * Failure semantics:
 * - `publish` validates and size-checks the whole batch first (nothing is sent if one message
 *   is invalid or larger than `maxPayloadBytes`, measured on the JSON structured format), then
 *   sends it with `acks: -1` (every in-sync replica). It resolves once Kafka acknowledged every
 *   record; on rejection some records may have been written (at-least-once: a retry may
 *   duplicate). Safe to call concurrently; records of one call keep their order per partition.
 * - `ensureTopic` creates the topic with CreateTopics when the cluster has a controller that
 *   accepts it; an existing topic with another partition count is `HERALD_ERR_TOPIC_MISMATCH`.
 *   On a broker without CreateTopics (the librdkafka mock) the topic is auto-created by a
 *   metadata request with the broker's default count, and a different requested count is
 *   `HERALD_ERR_TOPIC_MISMATCH` naming why.
 * - `subscribe` returns at once; the member joins the Kafka consumer group in the background
 *   (see KafkaSubscription for delivery semantics).
 * - `close` is idempotent: it closes every subscription (draining, committing what was acked,
 *   leaving the group), then the producer and admin connections. After it, `publish` rejects
 *   and `subscribe` throws `HERALD_ERR_CLOSED`.
 */
import kafkajs from 'kafkajs';
import type { Admin, Kafka as KafkaClient, KafkaConfig, Producer, RetryOptions } from 'kafkajs';
import {
  type Clock,
  DEFAULT_PARTITIONS,
  type EnsureTopicOptions,
  encodeEnvelope,
  type LagSource,
  type PartitionLag,
  encodedSize,
  ensureEnvelope,
  HeraldError,
  type OutgoingMessage,
  partitionForKey,
  type PublishReceipt,
  type SubscribeOptions,
  type Subscription,
  systemClock,
  type TopicInfo,
  TOPIC_NAME_RE,
  type Transport,
  type TransportCapabilities,
} from '@herald/core';
import { RoundRobin, tooLarge } from '@herald/core/internal';
import { encodeBinary } from './binding.ts';
import { KafkaLagReader } from './kafka-lag.ts';
import { KafkaSubscription, type KafkaConsumerTuning } from './kafka-subscription.ts';

const { Kafka, logLevel: LogLevel, Partitioners } = kafkajs;

/** Default largest envelope (JSON structured bytes): under Kafka's default `message.max.bytes` (1 048 588) with room for headers. */
export const DEFAULT_KAFKA_MAX_PAYLOAD_BYTES = 1_000_000;

export interface KafkaTransportOptions {
  /** Bootstrap brokers, `host:port`. */
  readonly brokers: readonly string[];
  /** kafkajs client id (default `herald`). */
  readonly clientId?: string;
  /** Partitions of topics Herald creates without an explicit count (default 8). */
  readonly defaultPartitions?: number;
  /** Replication factor of topics Herald creates (default -1: the broker's `default.replication.factor`). */
  readonly replicationFactor?: number;
  /** Largest envelope in bytes of its JSON structured encoding (default 1 000 000). */
  readonly maxPayloadBytes?: number;
  /** Consumer-group timings and fetch tuning for every subscription (see KafkaConsumerTuning for defaults). */
  readonly consumer?: KafkaConsumerTuning;
  /** Per-request timeout of produce calls, ms (default 30 000). */
  readonly produceTimeoutMs?: number;
  /** kafkajs retry policy for connections and requests (default: 100 ms initial, 5 retries). */
  readonly retry?: RetryOptions;
  /** Passed to kafkajs as is (ssl, sasl, connectionTimeout, requestTimeout…). */
  readonly kafka?: Partial<Omit<KafkaConfig, 'brokers' | 'clientId' | 'retry' | 'logLevel' | 'logCreator'>>;
  /** kafkajs log level (default: errors only). Use 'info' or 'debug' to diagnose group behaviour. */
  readonly logLevel?: 'nothing' | 'error' | 'warn' | 'info' | 'debug';
  readonly clock?: Clock;
}

export function createKafkaTransport(options: KafkaTransportOptions): KafkaTransport {
  return new KafkaTransport(options);
}

export class KafkaTransport implements Transport, LagSource {
  readonly name = 'kafka';
  readonly capabilities: TransportCapabilities;
  readonly #o: KafkaTransportOptions;
  readonly #kafka: KafkaClient;
  readonly #clock: Clock;
  readonly #defaultPartitions: number;
  readonly #maxPayload: number;
  readonly #topics = new Map<string, number>();
  readonly #topicPending = new Map<string, Promise<number>>();
  readonly #rr = new Map<string, RoundRobin>();
  readonly #subs = new Set<KafkaSubscription>();
  /** group → topics it subscribed through this transport (kept after its members close: their lag is still reported). */
  readonly #groups = new Map<string, Set<string>>();
  readonly #lag: KafkaLagReader;
  #producer: Promise<Producer> | undefined;
  #admin: Promise<Admin> | undefined;
  #canCreateTopics: Promise<boolean> | undefined;
  #closed = false;
  #closePromise: Promise<void> | undefined;

  constructor(options: KafkaTransportOptions) {
    if (!Array.isArray(options.brokers) || options.brokers.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'kafka transport needs at least one broker');
    this.#o = options;
    this.#clock = options.clock ?? systemClock;
    this.#defaultPartitions = options.defaultPartitions ?? DEFAULT_PARTITIONS;
    checkPartitions(this.#defaultPartitions);
    this.#maxPayload = options.maxPayloadBytes ?? DEFAULT_KAFKA_MAX_PAYLOAD_BYTES;
    if (!(this.#maxPayload > 0)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `maxPayloadBytes must be positive (got ${this.#maxPayload})`);
    const level = { nothing: LogLevel.NOTHING, error: LogLevel.ERROR, warn: LogLevel.WARN, info: LogLevel.INFO, debug: LogLevel.DEBUG }[options.logLevel ?? 'nothing'];
    this.#kafka = new Kafka({
      ...(options.kafka ?? {}),
      clientId: options.clientId ?? 'herald',
      brokers: [...options.brokers],
      logLevel: level,
      retry: options.retry ?? { initialRetryTime: 100, retries: 5, maxRetryTime: 2000 },
    });
    this.#lag = new KafkaLagReader(this.#kafka, () => this.#groups);
    this.capabilities = Object.freeze({
      ackModel: 'offset',
      assignment: 'broker',
      consumerGroups: true,
      persistent: true,
      replay: true,
      nativeDelay: false,
      maxPayloadBytes: this.#maxPayload,
      multiProcess: true,
      ackDeadlineMs: 0,
      durability:
        'acks=all: acknowledged once every in-sync replica has the record (how many is the topic’s replication factor and min.insync.replicas); flushed to disk by the OS, per Kafka’s log.flush defaults. The librdkafka mock keeps records in memory only.',
    });
  }

  /** The kafkajs client (for admin tasks Herald does not wrap). */
  get client(): KafkaClient {
    return this.#kafka;
  }

  async ensureTopic(topic: string, options: EnsureTopicOptions = {}): Promise<TopicInfo> {
    this.#open();
    checkTopic(topic);
    if (options.partitions !== undefined) checkPartitions(options.partitions);
    const partitions = await this.#ensure(topic, options.partitions, true);
    return { topic, partitions };
  }

  async publish(topic: string, messages: readonly OutgoingMessage[]): Promise<readonly PublishReceipt[]> {
    this.#open();
    checkTopic(topic);
    // Refuse bad input before anything is sent: a malformed envelope, an oversize one.
    const encoded = messages.map((m) => {
      const env = ensureEnvelope(m.envelope);
      const size = encodedSize(encodeEnvelope(env));
      if (size > this.#maxPayload) throw tooLarge(topic, env.id, size, this.#maxPayload);
      return encodeBinary(env);
    });
    if (messages.length === 0) return [];
    const n = await this.#ensure(topic, undefined, false);
    let rr = this.#rr.get(topic);
    if (!rr) this.#rr.set(topic, (rr = new RoundRobin()));
    const partitions: number[] = new Array(messages.length);
    const records = messages.map((m, i) => {
      const key = m.key ?? m.envelope.partitionkey;
      const p = key === undefined ? rr.next(n) : partitionForKey(key, n);
      partitions[i] = p;
      const e = encoded[i]!;
      return { key: key ?? null, value: e.value, headers: e.headers, partition: p };
    });
    const producer = await this.#producerReady();
    this.#open();
    const result = await producer.send({ topic, messages: records, acks: -1, timeout: this.#o.produceTimeoutMs ?? 30_000 });
    // kafkajs sends one record set per partition, in input order; baseOffset is its first record.
    const base = new Map<number, number>();
    for (const r of result) {
      if (r.topicName === topic && r.baseOffset !== undefined) base.set(r.partition, Number(r.baseOffset));
    }
    const seen = new Map<number, number>();
    return partitions.map((p) => {
      const k = seen.get(p) ?? 0;
      seen.set(p, k + 1);
      const b = base.get(p);
      if (b === undefined) throw new HeraldError('HERALD_ERR_STORAGE', `Kafka acknowledged no offset for ${topic}[${p}]`);
      return { topic, partition: p, position: String(b + k) };
    });
  }

  subscribe(topic: string, options: SubscribeOptions): Subscription {
    this.#open();
    checkTopic(topic);
    if (!options.group) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'subscribe needs a group');
    const sub = new KafkaSubscription({
      ...options,
      topic,
      kafka: this.#kafka,
      clock: this.#clock,
      tuning: this.#o.consumer ?? {},
      ensureTopic: () => this.#ensure(topic, undefined, false),
    });
    this.#subs.add(sub);
    let topics = this.#groups.get(options.group);
    if (!topics) this.#groups.set(options.group, (topics = new Set()));
    topics.add(topic);
    void sub.closed.then(
      () => this.#subs.delete(sub),
      () => this.#subs.delete(sub),
    );
    return sub;
  }

  /**
   * Consumer lag per (topic, group, partition), read from the brokers without joining a group (see kafka-lag.ts):
   * every consumer group the brokers list and this transport's own groups; `{ group }` / `{ topic }` narrow it.
   * Read only, safe to call concurrently (concurrent calls with one filter share one read). A broker failure
   * rejects with HERALD_ERR_STORAGE; after `close()` it rejects with HERALD_ERR_CLOSED.
   */
  async lag(filter: { readonly group?: string; readonly topic?: string } = {}): Promise<readonly PartitionLag[]> {
    this.#open();
    return this.#lag.read(filter);
  }

  close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.#closePromise) {
      this.#closed = true;
      this.#closePromise = (async () => {
        await Promise.all([...this.#subs].map((s) => s.close(options).catch(() => {})));
        const producer = this.#producer;
        const admin = this.#admin;
        await Promise.all([
          producer?.then((p) => p.disconnect()).catch(() => {}),
          admin?.then((a) => a.disconnect()).catch(() => {}),
          this.#lag.close(),
        ]);
      })();
    }
    return this.#closePromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ── topics ───────────────────────────────────────────────────────────────

  /** The topic's partition count, creating it (with `wanted` or the default count) when absent. */
  #ensure(topic: string, wanted: number | undefined, fresh: boolean): Promise<number> {
    const known = this.#topics.get(topic);
    if (known !== undefined && !fresh) return Promise.resolve(this.#check(topic, known, wanted));
    let p = this.#topicPending.get(topic);
    if (!p) {
      p = this.#describeOrCreate(topic, wanted).finally(() => this.#topicPending.delete(topic));
      this.#topicPending.set(topic, p);
    }
    return p.then((n) => this.#check(topic, n, wanted));
  }

  #check(topic: string, actual: number, wanted: number | undefined): number {
    if (wanted !== undefined && wanted !== actual) {
      throw new HeraldError('HERALD_ERR_TOPIC_MISMATCH', `topic "${topic}" has ${actual} partitions, not ${wanted}`, { details: { topic, partitions: actual, wanted } });
    }
    return actual;
  }

  async #describeOrCreate(topic: string, wanted: number | undefined): Promise<number> {
    const admin = await this.#adminReady();
    const existing = await this.#partitionCount(admin, topic, false);
    if (existing !== undefined) {
      this.#topics.set(topic, existing);
      return existing;
    }
    const count = wanted ?? this.#defaultPartitions;
    if (await this.#createTopicsSupported(admin)) {
      await admin.createTopics({
        topics: [{ topic, numPartitions: count, replicationFactor: this.#o.replicationFactor ?? -1 }],
        waitForLeaders: true,
      });
    }
    // Without CreateTopics (the librdkafka mock), a metadata request auto-creates the topic with the broker's default count.
    const deadline = this.#clock.monotonic() + 10_000;
    for (;;) {
      const n = await this.#partitionCount(admin, topic, true);
      if (n !== undefined) {
        this.#topics.set(topic, n);
        if (n !== count && wanted !== undefined && !(await this.#createTopicsSupported(admin))) {
          throw new HeraldError(
            'HERALD_ERR_TOPIC_MISMATCH',
            `topic "${topic}" was auto-created by the broker with ${n} partitions, not ${wanted}: this broker does not accept CreateTopics (the librdkafka mock cluster), so the count cannot be chosen`,
            { details: { topic, partitions: n, wanted } },
          );
        }
        return n;
      }
      if (this.#clock.monotonic() > deadline) throw new HeraldError('HERALD_ERR_STORAGE', `topic "${topic}" did not appear in the cluster metadata within 10 s`);
      await this.#clock.sleep(50);
    }
  }

  async #partitionCount(admin: Admin, topic: string, create: boolean): Promise<number | undefined> {
    if (!create) {
      const topics = await admin.listTopics();
      if (!topics.includes(topic)) return undefined;
    }
    try {
      const md = await admin.fetchTopicMetadata({ topics: [topic] });
      const t = md.topics.find((x) => x.name === topic);
      return t && t.partitions.length > 0 ? t.partitions.length : undefined;
    } catch (e) {
      if ((e as { type?: string }).type === 'UNKNOWN_TOPIC_OR_PARTITION' || (e as { type?: string }).type === 'LEADER_NOT_AVAILABLE') return undefined;
      throw e;
    }
  }

  /** Whether CreateTopics can be sent: the metadata names a controller that is one of the brokers. */
  #createTopicsSupported(admin: Admin): Promise<boolean> {
    this.#canCreateTopics ??= admin.describeCluster().then(
      (c) => c.brokers.some((b) => b.nodeId === c.controller),
      (e: unknown) => {
        this.#canCreateTopics = undefined;
        throw e;
      },
    );
    return this.#canCreateTopics;
  }

  // ── clients ──────────────────────────────────────────────────────────────

  #producerReady(): Promise<Producer> {
    this.#producer ??= (async () => {
      const p = this.#kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: false });
      await p.connect();
      return p;
    })().catch((e: unknown) => {
      this.#producer = undefined;
      throw e;
    });
    return this.#producer;
  }

  #adminReady(): Promise<Admin> {
    this.#admin ??= (async () => {
      const a = this.#kafka.admin();
      await a.connect();
      return a;
    })().catch((e: unknown) => {
      this.#admin = undefined;
      throw e;
    });
    return this.#admin;
  }

  #open(): void {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'kafka transport is closed');
  }
}

function checkTopic(name: string): void {
  if (typeof name !== 'string' || !TOPIC_NAME_RE.test(name)) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `topic name must be 1–200 of letters, digits, '.', '_', '-' (got ${JSON.stringify(name)})`);
  }
}

function checkPartitions(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > 4096) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `partitions must be an integer from 1 to 4096 (got ${n})`);
}
