/**
 * The RabbitMQ transport, on rabbitmq-client 5 (one AMQP connection per transport instance; the
 * client reconnects by itself).
 *
 * Topology, per namespace (default 'herald'; see `names.ts` for the exact names):
 * - a topic is a durable **direct** exchange; a message's routing key is its partition number,
 *   chosen by the core murmur2 partitioner (no key: round-robin per transport instance). Direct
 *   rather than topic exchange: routing is an exact match, which is all partitions need and the
 *   cheapest RabbitMQ routes. Its `alternate-exchange` is a fanout exchange feeding a bounded
 *   durable classic queue (`unroutedMaxLength`, oldest dropped first; classic because it is a
 *   diagnostic holding pen, and quorum queues cost the broker file descriptors) that keeps
 *   messages published while no group queue existed — for inspection; they are never delivered to a group (`replay`
 *   is false). Publishes are `mandatory`: a message neither a group queue nor the alternate
 *   exchange takes (topology deleted under us, or `unroutedMaxLength: 0` and no group yet) comes
 *   back as basic.return and the publish rejects with a typed error instead of vanishing.
 * - the partition count is recorded in the `x-max-length` argument of an empty classic queue
 *   (`…:meta`): declaring it is atomic, a different count fails RabbitMQ's argument-equivalence
 *   check (→ `HERALD_ERR_TOPIC_MISMATCH`), and the current count is read back from that check.
 * - a consumer group is one durable **quorum** queue per partition, bound to the topic exchange
 *   with the partition's routing key, with `x-single-active-consumer`: the broker delivers a
 *   partition to one member at a time, which keeps per-key order. The queues exist from the
 *   group's first subscribe: a new group does not see earlier messages.
 * - delayed redelivery (`nack({ delayMs })`): a headers exchange and quorum "bucket" queues with
 *   a message TTL that dead-letter (at-least-once) back through the default exchange.
 *
 * Failure rules:
 * - `publish` resolves when RabbitMQ confirmed every message (basic.ack after the quorum queue
 *   replicated it to a majority and fsynced it). A broker nack, a lost channel or connection
 *   rejects with `HERALD_ERR_STORAGE` (retryable; some of the batch may have been stored, so a
 *   retry can duplicate); a returned (unroutable) message rejects with `HERALD_ERR_STORAGE`
 *   and `details.reason: 'unroutable'` after the rest of the batch was confirmed. While the
 *   connection is down, publish waits for it up to `publishTimeoutMs`, and as long again for the
 *   confirms (a broker under a resource alarm blocks publishers). Oversize or invalid
 *   envelopes are refused before anything is sent. Safe to call concurrently; messages of one
 *   call go out in order on one channel.
 * - `subscribe` returns at once; the group's queues are declared and the member joins in the
 *   background (errors go to `onError` and are retried, except a non-retryable Herald error,
 *   which ends the subscription: `closed` rejects with it).
 * - `close` is idempotent and draining: subscriptions first (each up to `timeoutMs`), then the
 *   publish channel (pending confirms are awaited) and the connection.
 */
import { randomUUID } from 'node:crypto';
import {
  type Clock,
  DEFAULT_PARTITIONS,
  type EnsureTopicOptions,
  ensureEnvelope,
  HeraldError,
  isHeraldError,
  type LagSource,
  type OutgoingMessage,
  type PartitionLag,
  partitionForKey,
  type PublishReceipt,
  type SubscribeOptions,
  type Subscription,
  systemClock,
  type TimerHandle,
  type TopicInfo,
  TOPIC_NAME_RE,
  type Transport,
  type TransportCapabilities,
} from '@herald/core';
import { RoundRobin, tooLarge } from '@herald/core/internal';
import { type AsyncMessage, type Channel, Connection, type ConnectionOptions, type ReturnedMessage } from 'rabbitmq-client';
import { copyHeaders, encodeMessage, type EncodedMessage } from './binding.ts';
import { decodeGroupRecord, encodeGroupRecord, type GroupRecord, PUBLISHED_AT_HEADER, PULSE_ARGS, PULSE_COUNT_HEADER, pulseQueue, readStream, type ReadOptions, REGISTRY_ARGS, registryQueue, streamOffset } from './lag.ts';
import { NAMESPACE_RE, Names } from './names.ts';
import { RabbitMqSubscription, type SubscriptionContext } from './subscription.ts';

export interface RabbitMqTransportOptions {
  /** AMQP URL (default `amqp://guest:guest@127.0.0.1:5672`). */
  readonly url?: string;
  /**
   * Extra rabbitmq-client connection options (hosts, TLS, heartbeat, retryLow/retryHigh…).
   * `noDelay` defaults to true here (Nagle's algorithm costs ~19 ms of p50 latency).
   */
  readonly connection?: ConnectionOptions;
  /** Prefix of every exchange and queue name: 1–64 of letters, digits, '.', '_', '-' (default 'herald'). */
  readonly namespace?: string;
  /** Partitions of topics created implicitly (default 8). */
  readonly defaultPartitions?: number;
  /** Largest envelope, in bytes of its JSON structured encoding (default 1 MiB; at most RabbitMQ's 128 MiB). */
  readonly maxPayloadBytes?: number;
  /** Messages kept (oldest dropped first) per topic for publishes no group queue took (default 10 000; 0: refuse them as unroutable). */
  readonly unroutedMaxLength?: number;
  /** `x-expires` of group, meta and unrouted queues, ms: RabbitMQ deletes one unused that long, messages and all (default 0: never). */
  readonly queueExpiresMs?: number;
  /** How often a member announces itself to its group, ms (default 500). */
  readonly heartbeatMs?: number;
  /** A member not heard from this long is taken as gone and its partitions move, ms (default 3000). */
  readonly memberTimeoutMs?: number;
  /** How long a joining member listens for the group before taking partitions, ms (default 150). */
  readonly joinSettleMs?: number;
  /** How long a member giving a partition up waits for its unsettled deliveries, ms (default 5000). */
  readonly revokeTimeoutMs?: number;
  /** How long publish waits for a lost connection to come back, and then for its confirms, ms (default 10 000); past it, HERALD_ERR_STORAGE. */
  readonly publishTimeoutMs?: number;
  /**
   * Least time between two consumer-lag markers this transport appends to a partition's pulse
   * stream, ms (default 1000; 0: a marker behind every message). Besides the first message it
   * sends to a partition, a message gets a marker only when the previous one there is at least
   * this old, and a trailing marker counts the messages after it once that long has passed
   * (lag.ts). `lag()` ages are at most this much too old.
   */
  readonly lagMarkIntervalMs?: number;
  readonly clock?: Clock;
  /** Errors the transport handled itself (connection loss, retried setup, returned delayed copies); for logs. */
  readonly onError?: (error: unknown) => void;
}

const MAX_RABBITMQ_MESSAGE = 128 * 1024 * 1024;

/** Delay buckets, ms: 1, 1.5, 2, 3, 5, 7 × 10^k from 10 ms to 7 days. */
export const DELAY_BUCKETS: readonly number[] = (() => {
  const out: number[] = [];
  for (let e = 1; e <= 9; e++) for (const m of [1, 1.5, 2, 3, 5, 7]) out.push(Math.round(m * 10 ** e));
  return out.filter((b) => b <= 7 * 24 * 3600 * 1000);
})();

/** The delay bucket a redelivery after `delayMs` goes through: the smallest ≥ delayMs (capped at the largest). */
export function delayBucket(delayMs: number): number {
  for (const b of DELAY_BUCKETS) if (b >= delayMs) return b;
  return DELAY_BUCKETS[DELAY_BUCKETS.length - 1]!;
}

export function createRabbitMqTransport(options: RabbitMqTransportOptions = {}): RabbitMqTransport {
  return new RabbitMqTransport(options);
}

/** One (topic, partition)'s pulse markers from this transport (lag.ts). */
interface PulseState {
  readonly queue: string;
  readonly topic: string;
  /** Publish time of the message the last marker followed. */
  lastAt: number;
  /** Messages sent since the last marker (the trailing marker counts them). */
  pending: number;
  /** The newest of them. */
  position: string;
  at: number;
  timer: TimerHandle | undefined;
}

interface PreparedMessage {
  readonly encoded: EncodedMessage;
  readonly key: string | undefined;
}

export class RabbitMqTransport implements Transport, LagSource {
  readonly name = 'rabbitmq';
  readonly capabilities: TransportCapabilities;
  /** The underlying rabbitmq-client connection (for tools and tests; do not close it yourself). */
  readonly connection: Connection;
  readonly names: Names;

  readonly #o: RabbitMqTransportOptions;
  readonly #clock: Clock;
  readonly #defaultPartitions: number;
  readonly #maxPayload: number;
  readonly #unroutedMaxLength: number;
  readonly #queueExpiresMs: number;
  readonly #publishTimeoutMs: number;
  readonly #lagMarkIntervalMs: number;
  /** Pulse marker state per topic, indexed by partition. */
  readonly #pulses = new Map<string, Array<PulseState | undefined>>();
  readonly #topics = new Map<string, Promise<TopicInfo>>();
  readonly #groups = new Map<string, Promise<void>>();
  /** Groups this transport declared, and groups read from the namespace's registry stream (see lag.ts). */
  readonly #ownGroups = new Map<string, GroupRecord>();
  readonly #knownGroups = new Map<string, GroupRecord>();
  #registryNext: number | undefined;
  #registryRead: Promise<void> | undefined;
  #registryDeclared: Promise<void> | undefined;
  readonly #delayBuckets = new Map<number, { at: number; p: Promise<void> }>();
  readonly #rr = new Map<string, RoundRobin>();
  readonly #subs = new Set<RabbitMqSubscription>();
  readonly #returned = new Map<string, ReturnedMessage>();
  readonly #declaredQueues = new Set<string>();
  readonly #declaredExchanges = new Set<string>();
  readonly #instance = randomUUID().slice(0, 8);
  #seq = 0;
  #pubChannel: Channel | undefined;
  #pubChannelPending: Promise<Channel> | undefined;
  #closed = false;
  #closePromise: Promise<void> | undefined;
  readonly #ctx: SubscriptionContext;

  constructor(options: RabbitMqTransportOptions = {}) {
    this.#o = options;
    this.#clock = options.clock ?? systemClock;
    const namespace = options.namespace ?? 'herald';
    if (!NAMESPACE_RE.test(namespace)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `namespace must be 1–64 of letters, digits, '.', '_', '-' (got ${JSON.stringify(namespace)})`);
    this.names = new Names(namespace);
    this.#defaultPartitions = checkInt('defaultPartitions', options.defaultPartitions ?? DEFAULT_PARTITIONS, 1, 4096);
    this.#maxPayload = checkInt('maxPayloadBytes', options.maxPayloadBytes ?? 1024 * 1024, 1, MAX_RABBITMQ_MESSAGE);
    this.#unroutedMaxLength = checkInt('unroutedMaxLength', options.unroutedMaxLength ?? 10_000, 0, 2 ** 31 - 1);
    this.#queueExpiresMs = checkInt('queueExpiresMs', options.queueExpiresMs ?? 0, 0, 2 ** 31 - 1);
    const heartbeatMs = checkInt('heartbeatMs', options.heartbeatMs ?? 500, 1, 3_600_000);
    const memberTimeoutMs = checkInt('memberTimeoutMs', options.memberTimeoutMs ?? 3000, heartbeatMs + 1, 3_600_000);
    const publishTimeoutMs = checkInt('publishTimeoutMs', options.publishTimeoutMs ?? 10_000, 1, 3_600_000);
    this.#publishTimeoutMs = publishTimeoutMs;
    this.#lagMarkIntervalMs = checkInt('lagMarkIntervalMs', options.lagMarkIntervalMs ?? 1000, 0, 3_600_000);
    this.capabilities = Object.freeze({
      ackModel: 'message',
      assignment: 'broker',
      consumerGroups: true,
      persistent: true,
      replay: false,
      nativeDelay: true,
      maxPayloadBytes: this.#maxPayload,
      multiProcess: true,
      ackDeadlineMs: 0,
      durability:
        'quorum queues: a publish resolves after RabbitMQ confirmed it, i.e. a majority of the queue replicas wrote and fsynced it (Raft); with one node, that node. Messages published while no group queue exists go to a bounded unrouted queue, never to a group.',
    });
    this.connection = new Connection({
      url: options.url ?? 'amqp://guest:guest@127.0.0.1:5672',
      connectionName: `herald:${namespace}:${process.pid}`,
      retryLow: 250,
      retryHigh: 5000,
      acquireTimeout: publishTimeoutMs,
      ...options.connection,
      noDelay: options.connection?.noDelay ?? true,
    });
    this.connection.on('error', (e: unknown) => this.#onError(e));
    this.#ctx = {
      connection: this.connection,
      names: this.names,
      clock: this.#clock,
      heartbeatMs,
      memberTimeoutMs,
      joinSettleMs: checkInt('joinSettleMs', options.joinSettleMs ?? 150, 0, 3_600_000),
      revokeTimeoutMs: checkInt('revokeTimeoutMs', options.revokeTimeoutMs ?? 5000, 0, 3_600_000),
      ensureTopic: (topic) => this.ensureTopic(topic),
      ensureGroup: (topic, group, partitions) => this.#ensureGroup(topic, group, partitions),
      forgetGroup: (topic, group) => {
        this.#groups.delete(groupKey(topic, group));
        this.#topics.delete(topic);
      },
      publishDelayed: (queue, msg, attempts, delayMs) => this.#publishDelayed(queue, msg, attempts, delayMs),
      onError: (e) => this.#onError(e),
    };
  }

  // ── topics ───────────────────────────────────────────────────────────────

  /**
   * Declares the topic (exchange, alternate exchange and its queue, partition-count record) if
   * needed and returns its partition count. Cached per transport; concurrent calls share one
   * declaration. Errors: `HERALD_ERR_INVALID_ARGUMENT` (name, count), `HERALD_ERR_TOPIC_MISMATCH`,
   * `HERALD_ERR_STORAGE` (broker unreachable or refusing; retryable), `HERALD_ERR_CLOSED`.
   */
  async ensureTopic(topic: string, options: EnsureTopicOptions = {}): Promise<TopicInfo> {
    this.#open();
    if (typeof topic !== 'string' || !TOPIC_NAME_RE.test(topic)) {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `topic name must be 1–200 of letters, digits, '.', '_', '-' (got ${JSON.stringify(topic)})`);
    }
    if (options.partitions !== undefined) checkInt('partitions', options.partitions, 1, 4096);
    let p = this.#topics.get(topic);
    if (!p) {
      p = this.#declareTopic(topic, options.partitions);
      this.#topics.set(topic, p);
      p.catch(() => {
        if (this.#topics.get(topic) === p) this.#topics.delete(topic);
      });
    }
    const info = await p;
    if (options.partitions !== undefined && options.partitions !== info.partitions) {
      throw new HeraldError('HERALD_ERR_TOPIC_MISMATCH', `topic "${topic}" has ${info.partitions} partitions, not ${options.partitions}`, {
        details: { topic, partitions: info.partitions, requested: options.partitions },
      });
    }
    return info;
  }

  async #declareTopic(topic: string, requested: number | undefined): Promise<TopicInfo> {
    const names = this.names;
    let partitions = requested ?? this.#defaultPartitions;
    const meta = names.meta(topic);
    const expires = this.#queueExpiresMs > 0 ? { 'x-expires': this.#queueExpiresMs } : {};
    await this.#withChannel(async ({ ch }) => {
      try {
        await ch.queueDeclare({ queue: meta, durable: true, arguments: { 'x-max-length': partitions, 'x-overflow': 'reject-publish', ...expires } });
      } catch (e) {
        const current = /inequivalent arg 'x-max-length'.*current is '(\d+)'/.exec(String((e as Error)?.message))?.[1];
        if (current === undefined) throw e;
        if (requested !== undefined) {
          throw new HeraldError('HERALD_ERR_TOPIC_MISMATCH', `topic "${topic}" has ${current} partitions, not ${requested}`, { details: { topic, partitions: Number(current), requested } });
        }
        partitions = Number(current);
      }
    });
    this.#declaredQueues.add(meta);
    await this.#withChannel(async (h) => {
      const unrouted = names.unrouted(topic);
      await h.ch.exchangeDeclare({ exchange: unrouted, type: 'fanout', durable: true });
      this.#declaredExchanges.add(unrouted);
      if (this.#unroutedMaxLength > 0) {
        await this.#declareQueue(h, unrouted, { 'x-max-length': this.#unroutedMaxLength, 'x-overflow': 'drop-head', ...expires });
        this.#declaredQueues.add(unrouted);
        await h.ch.queueBind({ queue: unrouted, exchange: unrouted, routingKey: '' });
      }
      const exchange = names.topicExchange(topic);
      await h.ch.exchangeDeclare({ exchange, type: 'direct', durable: true, arguments: { 'alternate-exchange': unrouted } });
      this.#declaredExchanges.add(exchange);
    });
    await this.#declarePulses(topic, partitions);
    return { topic, partitions };
  }

  /**
   * Declares the topic's pulse streams (lag.ts). Not fatal: without them publishing works and
   * `lag()` reports no age (markers to a missing stream are dropped by the default exchange).
   */
  async #declarePulses(topic: string, partitions: number): Promise<void> {
    const exchange = this.names.topicExchange(topic);
    try {
      await this.#withChannel(async (h) => {
        for (let p = 0; p < partitions; p++) {
          const queue = pulseQueue(exchange, p);
          await this.#declareQueue(h, queue, PULSE_ARGS);
          this.#declaredQueues.add(queue);
        }
      });
    } catch (e) {
      this.#onError(e);
    }
  }

  /** Appends the group to the namespace's registry stream, so other processes' lag() find it. Not fatal. */
  async #registerGroup(record: GroupRecord): Promise<void> {
    const queue = registryQueue(this.names.namespace);
    try {
      this.#registryDeclared ??= this.#withChannel(async (h) => {
        await this.#declareQueue(h, queue, REGISTRY_ARGS);
        this.#declaredQueues.add(queue);
      }).catch((e: unknown) => {
        this.#registryDeclared = undefined;
        throw e;
      });
      await this.#registryDeclared;
      const ch = await this.#publishChannel();
      await ch.basicPublish({ exchange: '', routingKey: queue, durable: true }, encodeGroupRecord(record));
    } catch (e) {
      this.#onError(storageError(`could not record group "${record.group}" of "${record.topic}" in the lag registry`, e));
    }
  }

  async #ensureGroup(topic: string, group: string, partitions: number): Promise<void> {
    if (typeof group !== 'string' || group.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'subscribe needs a group');
    const k = groupKey(topic, group);
    let p = this.#groups.get(k);
    if (!p) {
      p = this.#declareGroup(topic, group, partitions);
      this.#groups.set(k, p);
      p.catch(() => {
        if (this.#groups.get(k) === p) this.#groups.delete(k);
      });
    }
    return p;
  }

  async #declareGroup(topic: string, group: string, partitions: number): Promise<void> {
    const exchange = this.names.topicExchange(topic);
    const args = { 'x-queue-type': 'quorum', 'x-single-active-consumer': true, ...(this.#queueExpiresMs > 0 ? { 'x-expires': this.#queueExpiresMs } : {}) };
    const todo = Array.from({ length: partitions }, (_, p) => p);
    // A few channels in parallel: quorum queue declarations are round trips to Raft.
    await Promise.all(
      Array.from({ length: Math.min(8, partitions) }, () =>
        this.#withChannel(async (h) => {
          for (let p = todo.shift(); p !== undefined; p = todo.shift()) {
            const queue = this.names.groupQueue(topic, group, p);
            await this.#declareQueue(h, queue, args);
            this.#declaredQueues.add(queue);
            await h.ch.queueBind({ queue, exchange, routingKey: String(p) });
          }
        }),
      ),
    );
    const record: GroupRecord = { topic, group, partitions };
    this.#ownGroups.set(groupKey(topic, group), record);
    await this.#registerGroup(record);
  }

  /**
   * Declares a queue; one that exists with other arguments is used as it is (reported to
   * onError). The refusal closes the channel, so `h.ch` is replaced by a fresh one.
   */
  async #declareQueue(h: ChannelHolder, queue: string, args: Record<string, unknown>): Promise<void> {
    try {
      await h.ch.queueDeclare({ queue, durable: true, arguments: args });
    } catch (e) {
      if ((e as { code?: unknown })?.code !== 'PRECONDITION_FAILED') throw e;
      this.#onError(new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `queue "${queue}" exists with other arguments than this transport's; using it as it is`, { cause: e }));
      h.ch = await this.#acquire();
      await h.ch.queueDeclare({ queue, passive: true });
    }
  }

  async #acquire(): Promise<Channel> {
    let ch: Channel;
    try {
      ch = await this.connection.acquire({ emitErrorsFromChannel: true });
    } catch (e) {
      throw storageError('could not open an AMQP channel', e);
    }
    ch.on('error', (e) => this.#onError(e));
    return ch;
  }

  /** Runs `fn` on a fresh channel (a refused declaration closes the channel it was made on). */
  async #withChannel<T>(fn: (h: ChannelHolder) => Promise<T>): Promise<T> {
    const h: ChannelHolder = { ch: await this.#acquire() };
    try {
      return await fn(h);
    } catch (e) {
      throw isHeraldError(e) ? e : storageError('RabbitMQ refused a declaration', e);
    } finally {
      if (h.ch.active) await h.ch.close().catch(() => {});
    }
  }

  // ── publish ──────────────────────────────────────────────────────────────

  async publish(topic: string, messages: readonly OutgoingMessage[]): Promise<readonly PublishReceipt[]> {
    this.#open();
    if (!Array.isArray(messages)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'publish takes an array of messages');
    // Refuse bad input before anything is sent: a malformed envelope, an oversize one.
    const prepared: PreparedMessage[] = new Array(messages.length);
    for (let i = 0; i < messages.length; i++) {
      const m = messages[i]!;
      const envelope = ensureEnvelope(m.envelope);
      const key = m.key ?? envelope.partitionkey;
      if (key !== undefined && typeof key !== 'string') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `partition key must be a string (got ${typeof key})`);
      const encoded = encodeMessage(envelope, key);
      if (encoded.structuredSize > this.#maxPayload) throw tooLarge(topic, envelope.id, encoded.structuredSize, this.#maxPayload);
      prepared[i] = { encoded, key };
    }
    const { partitions } = await this.ensureTopic(topic);
    if (prepared.length === 0) return [];
    const exchange = this.names.topicExchange(topic);
    let rr = this.#rr.get(topic);
    if (!rr) this.#rr.set(topic, (rr = new RoundRobin()));
    const receipts: PublishReceipt[] = new Array(prepared.length);
    const ch = await this.#publishChannel();
    const sends: Array<Promise<void>> = new Array(prepared.length);
    const publishedAt = this.#clock.now();
    let pulses = this.#pulses.get(topic);
    if (!pulses || pulses.length !== partitions) this.#pulses.set(topic, (pulses = new Array<PulseState | undefined>(partitions)));
    for (let i = 0; i < prepared.length; i++) {
      const { encoded, key } = prepared[i]!;
      const partition = key === undefined ? rr.next(partitions) : partitionForKey(key, partitions);
      const position = `${this.#instance}.${(this.#seq++).toString(36)}`;
      receipts[i] = { topic, partition, position };
      sends[i] = ch.basicPublish(
        {
          exchange,
          routingKey: String(partition),
          mandatory: true,
          durable: true,
          messageId: position,
          headers: encoded.headers,
          ...(encoded.contentType !== undefined ? { contentType: encoded.contentType } : {}),
          ...(encoded.contentEncoding !== undefined ? { contentEncoding: encoded.contentEncoding } : {}),
        },
        encoded.body,
      );
      // A pulse marker right behind it on the same channel when the partition's last one is an
      // interval old (lag.ts); otherwise counted by the next one. Its confirm is not awaited.
      const pulse = pulses[partition];
      if (pulse === undefined) {
        pulses[partition] = { queue: pulseQueue(exchange, partition), topic, lastAt: publishedAt, pending: 0, position, at: publishedAt, timer: undefined };
        this.#mark(ch, pulses[partition]!.queue, topic, position, publishedAt, 1);
      } else if (publishedAt - pulse.lastAt >= this.#lagMarkIntervalMs) {
        this.#mark(ch, pulse.queue, topic, position, publishedAt, pulse.pending + 1);
        pulse.lastAt = publishedAt;
        pulse.pending = 0;
        pulse.timer?.cancel();
        pulse.timer = undefined;
      } else {
        pulse.pending++;
        pulse.position = position;
        pulse.at = publishedAt;
        pulse.timer ??= this.#clock.setTimer(() => this.#trail(pulse), pulse.lastAt + this.#lagMarkIntervalMs - publishedAt, { unref: true });
      }
    }
    const results = await this.#confirmed(sends, topic);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    // A basic.return comes before the confirm but is emitted a tick later by the client.
    await new Promise<void>((resolve) => setImmediate(resolve));
    const returned: string[] = [];
    for (const r of receipts) {
      const msg = this.#returned.get(r.position);
      if (msg) {
        this.#returned.delete(r.position);
        returned.push(`${r.position} (partition ${r.partition}: ${msg.replyText})`);
      }
    }
    if (failed) {
      if (!ch.active) this.#topics.delete(topic); // e.g. the exchange was deleted: declare again next time
      throw storageError(`publish to "${topic}" was not confirmed (${results.filter((r) => r.status === 'rejected').length} of ${results.length} messages; some may have been stored)`, failed.reason);
    }
    if (returned.length > 0) {
      this.#topics.delete(topic);
      throw new HeraldError('HERALD_ERR_STORAGE', `publish to "${topic}": ${returned.length} message(s) were unroutable (no group queue and no unrouted queue took them): ${returned.slice(0, 5).join(', ')}`, {
        details: { reason: 'unroutable', topic, positions: returned },
      });
    }
    return receipts;
  }

  /** Appends a pulse marker (lag.ts): `count` messages up to and including `position`, the newest sent at `at`. Not awaited. */
  #mark(ch: Channel, queue: string, topic: string, position: string, at: number, count: number): void {
    ch.basicPublish({ exchange: '', routingKey: queue, durable: true, messageId: position, headers: { [PUBLISHED_AT_HEADER]: at, [PULSE_COUNT_HEADER]: count } }, EMPTY).catch((e: unknown) => {
      if (ch.active) this.#onError(storageError(`pulse marker of ${position} on "${topic}" was not confirmed`, e));
    });
  }

  /** The trailing marker of a partition's messages since its last marker (kept for the next one while the channel is down). */
  #trail(pulse: PulseState): void {
    pulse.timer = undefined;
    const ch = this.#pubChannel;
    if (pulse.pending === 0 || !ch?.active) return;
    this.#mark(ch, pulse.queue, pulse.topic, pulse.position, pulse.at, pulse.pending);
    pulse.lastAt = pulse.at;
    pulse.pending = 0;
  }

  /** Settles every send, or rejects the unsettled ones after publishTimeoutMs (a blocked or silent broker). */
  async #confirmed(sends: ReadonlyArray<Promise<void>>, topic: string): Promise<PromiseSettledResult<void>[]> {
    let timer: { cancel(): void } | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = this.#clock.setTimer(
        () => reject(storageError(`publish to "${topic}" was not confirmed within ${this.#publishTimeoutMs} ms (broker blocked or unreachable; some messages may have been stored)`, undefined)),
        this.#publishTimeoutMs,
      );
    });
    timeout.catch(() => {});
    try {
      return await Promise.allSettled(sends.map((p) => Promise.race([p, timeout])));
    } finally {
      timer?.cancel();
    }
  }

  async #publishChannel(): Promise<Channel> {
    if (this.#pubChannel?.active) return this.#pubChannel;
    this.#pubChannelPending ??= (async () => {
      const ch = await this.#acquire();
      ch.on('basic.return', (msg: ReturnedMessage) => {
        if (msg.exchange === this.names.delayExchange()) this.#returned.set(`delay:${String(msg.messageId)}`, msg);
        else if (typeof msg.messageId === 'string') this.#returned.set(msg.messageId, msg);
      });
      try {
        await ch.confirmSelect();
      } catch (e) {
        await ch.close().catch(() => {});
        throw storageError('could not put the publish channel in confirm mode', e);
      }
      this.#pubChannel = ch;
      return ch;
    })().finally(() => {
      this.#pubChannelPending = undefined;
    });
    return this.#pubChannelPending;
  }

  async #ensureDelayBucket(bucket: number): Promise<void> {
    const now = this.#clock.monotonic();
    const cached = this.#delayBuckets.get(bucket);
    // Re-declaring counts as use: it keeps the bucket's x-expires from firing while in use.
    if (cached && now - cached.at < 60_000) return cached.p;
    const exchange = this.names.delayExchange();
    const queue = this.names.delayQueue(bucket);
    const p = this.#withChannel(async (h) => {
      await h.ch.exchangeDeclare({ exchange, type: 'headers', durable: true });
      this.#declaredExchanges.add(exchange);
      await this.#declareQueue(h, queue, {
        'x-queue-type': 'quorum',
        'x-message-ttl': bucket,
        'x-dead-letter-exchange': '',
        'x-dead-letter-strategy': 'at-least-once',
        'x-overflow': 'reject-publish',
        'x-expires': 2 * bucket + 600_000,
      });
      this.#declaredQueues.add(queue);
      await h.ch.queueBind({ queue, exchange, routingKey: '', arguments: { 'x-match': 'all', 'herald-delay': String(bucket) } });
    });
    this.#delayBuckets.set(bucket, { at: now, p });
    p.catch(() => {
      if (this.#delayBuckets.get(bucket)?.p === p) this.#delayBuckets.delete(bucket);
    });
    return p;
  }

  async #publishDelayed(queue: string, msg: AsyncMessage, attemptsSoFar: number, delayMs: number): Promise<void> {
    this.#open();
    const bucket = delayBucket(delayMs);
    await this.#ensureDelayBucket(bucket);
    const ch = await this.#publishChannel();
    const headers = copyHeaders(msg.headers as Record<string, unknown> | undefined, attemptsSoFar);
    headers['herald-delay'] = String(bucket);
    const id = typeof msg.messageId === 'string' ? msg.messageId : `${this.#instance}.d${(this.#seq++).toString(36)}`;
    try {
      await ch.basicPublish(
        {
          exchange: this.names.delayExchange(),
          routingKey: queue,
          mandatory: true,
          durable: true,
          messageId: id,
          headers,
          ...(msg.contentType !== undefined ? { contentType: msg.contentType } : {}),
          ...(msg.contentEncoding !== undefined ? { contentEncoding: msg.contentEncoding } : {}),
        },
        rawBody(msg.body),
      );
    } catch (e) {
      throw storageError(`delayed redelivery to "${queue}" was not confirmed`, e);
    }
    await new Promise<void>((resolve) => setImmediate(resolve));
    const ret = this.#returned.get(`delay:${id}`);
    if (ret) {
      this.#returned.delete(`delay:${id}`);
      this.#delayBuckets.delete(bucket);
      throw new HeraldError('HERALD_ERR_STORAGE', `delayed redelivery to "${queue}" was unroutable (${ret.replyText})`, { details: { reason: 'unroutable', queue, bucket } });
    }
  }

  // ── subscribe ────────────────────────────────────────────────────────────

  /**
   * Joins `options.group` on `topic`. See `subscription.ts` for the delivery semantics.
   * `startFrom` has no effect: a group's queues exist from its first subscribe, which is
   * where every group starts (`replay` is false).
   */
  subscribe(topic: string, options: SubscribeOptions): Subscription {
    this.#open();
    if (!options || typeof options.group !== 'string' || options.group.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'subscribe needs a group');
    if (!TOPIC_NAME_RE.test(topic)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `topic name must be 1–200 of letters, digits, '.', '_', '-' (got ${JSON.stringify(topic)})`);
    const sub = new RabbitMqSubscription(this.#ctx, topic, options);
    this.#subs.add(sub);
    void sub.closed.then(
      () => this.#subs.delete(sub),
      () => this.#subs.delete(sub),
    );
    return sub;
  }

  // ── admin ────────────────────────────────────────────────────────────────

  /**
   * Consumer lag per (topic, group, partition) of every group in the namespace (this process's
   * and, through the registry stream, every other's), narrowed by `filter` (`LagSource`). A read
   * only: passive declares and transient stream readers, no consume of a group queue, no
   * declaration. Per call: one registry read, per group one pipelined round of passive declares,
   * per partition one read of its pulse stream's last chunk and, when it lags, reads of the
   * markers before it (32, then up to 2048 in all), each stopping at a known offset.
   * - `messages`: the queue's ready messages plus this transport's own unacked deliveries
   *   (another process's unacked deliveries are not visible over AMQP).
   * - `oldestUnhandledAt`: publish time (the publisher's clock) of the newest marker at or before
   *   the oldest unhandled message, found by adding up marker counts back from the stream's end:
   *   at most `lagMarkIntervalMs` (of the publisher) older than that message's own time; a
   *   backlog reaching past the markers read is dated by the oldest one read (too young).
   *   `head` / `committed`: positions (message ids) of the newest marker and of the newest marker
   *   before the oldest unhandled message ('-1' when none): markers are sampled, so these are
   *   positions of marked messages only.
   * Errors: `HERALD_ERR_STORAGE` when the broker fails, `HERALD_ERR_CLOSED` after close.
   */
  async lag(filter: { readonly group?: string; readonly topic?: string } = {}): Promise<readonly PartitionLag[]> {
    this.#open();
    await this.#readRegistry();
    const all = new Map<string, GroupRecord>([...this.#knownGroups, ...this.#ownGroups]);
    const wanted = [...all.values()]
      .filter((r) => (filter.group === undefined || r.group === filter.group) && (filter.topic === undefined || r.topic === filter.topic))
      .sort((a, b) => (a.topic === b.topic ? (a.group < b.group ? -1 : 1) : a.topic < b.topic ? -1 : 1));
    if (wanted.length === 0) return [];
    const unacked = new Map<string, number>();
    for (const sub of this.#subs) {
      for (const [p, n] of sub.unackedByPartition()) {
        const k = `${groupKey(sub.topic, sub.group)}\u0000${p}`;
        unacked.set(k, (unacked.get(k) ?? 0) + n);
      }
    }
    const heads = new Map<string, Promise<AsyncMessage | undefined>>();
    const headOf = (queue: string): Promise<AsyncMessage | undefined> => {
      let h = heads.get(queue);
      // The last chunk's entries arrive together: a short quiet ends the read.
      if (!h) heads.set(queue, (h = this.#readPulse(queue, 'last', { take: 100_000, quietMs: 3, waitMs: 40 }).then((ms) => ms[ms.length - 1])));
      return h;
    };
    const perGroup = await Promise.all(
      wanted.map(async (r) => {
        const ready = await this.#readyCounts(r);
        if (!ready) return [];
        const exchange = this.names.topicExchange(r.topic);
        return Promise.all(
          ready.map(async (n, partition): Promise<PartitionLag> => {
            const messages = n + (unacked.get(`${groupKey(r.topic, r.group)}\u0000${partition}`) ?? 0);
            const queue = pulseQueue(exchange, partition);
            const newest = await headOf(queue);
            const headOffset = newest ? streamOffset(newest) : undefined;
            const head = newest ? positionOf(newest) : '-1';
            if (messages === 0) return { topic: r.topic, group: r.group, partition, head, committed: head, messages, oldestUnhandledAt: undefined };
            const { oldest, committed } = headOffset === undefined || !newest ? { oldest: undefined, committed: '-1' } : await this.#markerAtOrBefore(queue, newest, headOffset, messages);
            const at = (oldest?.headers as Record<string, unknown> | undefined)?.[PUBLISHED_AT_HEADER];
            return { topic: r.topic, group: r.group, partition, head, committed, messages, oldestUnhandledAt: typeof at === 'number' ? at : typeof at === 'bigint' ? Number(at) : undefined };
          }),
        );
      }),
    );
    return perGroup.flat();
  }

  /**
   * The newest pulse marker at or before the `n`th newest message of the partition (the oldest
   * unhandled one), and the newest marker before that message: walks back from `newest` (at
   * `end`), adding up marker counts, in windows read up to a known offset (no quiet wait).
   */
  async #markerAtOrBefore(queue: string, newest: AsyncMessage, end: number, n: number): Promise<{ oldest: AsyncMessage | undefined; committed: string }> {
    let after = 0; // messages after the examined marker's own, counted by newer markers
    let exact: AsyncMessage | undefined; // a marker whose own message is the oldest unhandled
    let oldestRead = newest;
    let got: AsyncMessage[] = [newest];
    let hi = end;
    let from = end;
    for (;;) {
      for (let i = got.length - 1; i >= 0; i--) {
        const m = got[i]!;
        const o = streamOffset(m);
        if (o === undefined || o > hi) continue;
        oldestRead = m;
        if (exact) return { oldest: exact, committed: positionOf(m) };
        if (after + 1 > n) return { oldest: m, committed: positionOf(m) };
        if (after + 1 === n) exact = m;
        after += countOf(m);
      }
      const low = streamOffset(oldestRead) ?? 0;
      // Stop at the stream's start (offset 0, or above the offset asked for: retention dropped
      // older markers) or after MAX_MARKERS_READ markers.
      if (low <= 0 || low > from || end - low + 1 >= MAX_MARKERS_READ) break;
      hi = low - 1;
      from = Math.max(0, hi - (end - low + 1 < 32 ? 31 : Math.min(1023, MAX_MARKERS_READ - (end - low + 1) - 1)));
      got = await this.#readPulse(queue, from, { take: hi - from + 1, until: hi, quietMs: 40, waitMs: 40 });
      if (got.length === 0) break;
    }
    return { oldest: exact ?? oldestRead, committed: '-1' };
  }

  /** Ready messages of each of the group's partition queues (passive declares, pipelined); undefined when the group's queues are gone. */
  async #readyCounts(r: GroupRecord): Promise<number[] | undefined> {
    const ch = await this.#acquire();
    try {
      const ok = await Promise.all(Array.from({ length: r.partitions }, (_, p) => ch.queueDeclare({ queue: this.names.groupQueue(r.topic, r.group, p), passive: true })));
      return ok.map((d) => d.messageCount);
    } catch (e) {
      if ((e as { code?: unknown })?.code === 'NOT_FOUND') return undefined;
      throw storageError(`could not read the queues of group "${r.group}" on "${r.topic}"`, e);
    } finally {
      if (ch.active) await ch.close().catch(() => {});
    }
  }

  /** Reads a stream from `offset` on a channel of its own (a missing stream closes it): [] when the stream does not exist. */
  async #readPulse(queue: string, offset: number | 'first' | 'last', o: ReadOptions): Promise<AsyncMessage[]> {
    const ch = await this.#acquire();
    try {
      await ch.basicQos({ prefetchCount: Math.min(o.take, 1000) });
      return await readStream(ch, queue, offset, o);
    } catch (e) {
      if ((e as { code?: unknown })?.code === 'NOT_FOUND') return [];
      throw storageError(`could not read the stream "${queue}"`, e);
    } finally {
      if (ch.active) await ch.close().catch(() => {});
    }
  }

  /** Reads the registry stream from where this transport stopped (one read at a time). */
  #readRegistry(): Promise<void> {
    this.#registryRead ??= (async () => {
      // The last chunk (its entries arrive together) gives the end; then read up to it, no quiet wait.
      const queue = registryQueue(this.names.namespace);
      const tail = await this.#readPulse(queue, 'last', { take: 100_000, quietMs: 3, waitMs: 40 });
      const end = tail.length > 0 ? streamOffset(tail[tail.length - 1]!) : undefined;
      if (end === undefined) return;
      const from = this.#registryNext ?? 0; // below the first offset (retention), a read starts at the first
      if (from > end) return;
      const tailStart = streamOffset(tail[0]!);
      const got = tailStart !== undefined && tailStart <= from ? tail : await this.#readPulse(queue, from, { take: end - from + 1, until: end, quietMs: 40, waitMs: 40 });
      for (const m of got) {
        const o0 = streamOffset(m);
        if (o0 !== undefined && (o0 < from || o0 > end)) continue;
        const r = decodeGroupRecord(m.body);
        if (r) this.#knownGroups.set(groupKey(r.topic, r.group), r);
        const o = streamOffset(m);
        if (o !== undefined) this.#registryNext = o + 1;
      }
    })().finally(() => {
      this.#registryRead = undefined;
    });
    return this.#registryRead;
  }

  /**
   * Deletes a consumer group's partition queues, messages and all (the group starts afresh on
   * its next subscribe). Its members should be closed first. `partitions` defaults to the
   * topic's count.
   */
  async deleteGroup(topic: string, group: string, partitions?: number): Promise<void> {
    this.#open();
    const n = partitions ?? (await this.ensureTopic(topic)).partitions;
    this.#groups.delete(groupKey(topic, group));
    await this.#withChannel(async ({ ch }) => {
      for (let p = 0; p < n; p++) await ch.queueDelete({ queue: this.names.groupQueue(topic, group, p) });
    });
  }

  /** Every queue and exchange name this transport instance declared (for tools and test clean-up). */
  declaredNames(): { queues: string[]; exchanges: string[] } {
    return { queues: [...this.#declaredQueues], exchanges: [...this.#declaredExchanges] };
  }

  // ── close ────────────────────────────────────────────────────────────────

  close(options: { timeoutMs?: number } = {}): Promise<void> {
    this.#closePromise ??= this.#close(options.timeoutMs ?? 10_000);
    return this.#closePromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(timeoutMs: number): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#subs].map((s) => s.close({ timeoutMs })));
    await this.#pubChannelPending?.catch(() => {});
    for (const pulses of this.#pulses.values()) {
      for (const p of pulses) {
        if (p?.timer === undefined) continue;
        p.timer.cancel();
        this.#trail(p);
      }
    }
    await this.#pubChannel?.close().catch(() => {});
    // A connection that never came up is destroyed rather than waited for; so is one whose
    // close (which waits for every channel) does not finish within the time left.
    if (!this.connection.ready) {
      this.connection.unsafeDestroy();
      return;
    }
    let timer: { cancel(): void } | undefined;
    const closed = await Promise.race([
      this.connection.close().then(
        () => true,
        () => true,
      ),
      new Promise<boolean>((resolve) => {
        timer = this.#clock.setTimer(() => resolve(false), Math.max(1000, timeoutMs));
      }),
    ]);
    timer?.cancel();
    if (!closed) this.connection.unsafeDestroy();
  }

  #open(): void {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'rabbitmq transport is closed');
  }

  #onError(e: unknown): void {
    try {
      this.#o.onError?.(e);
    } catch {
      // a throwing log hook must not break the transport
    }
  }
}

interface ChannelHolder {
  ch: Channel;
}

const EMPTY = Buffer.alloc(0);

/** Markers `lag()` reads back from a pulse stream's end at most, per partition. */
const MAX_MARKERS_READ = 2048;

/** Messages a pulse marker accounts for (markers written before sampling carry no count: 1 each). */
function countOf(m: AsyncMessage): number {
  const v = (m.headers as Record<string, unknown> | undefined)?.[PULSE_COUNT_HEADER];
  const n = typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : 1;
  return Number.isInteger(n) && n >= 1 ? n : 1;
}

function positionOf(m: AsyncMessage): string {
  return typeof m.messageId === 'string' && m.messageId !== '' ? m.messageId : '-1';
}

function groupKey(topic: string, group: string): string {
  return `${topic}\u0000${group}`;
}

function storageError(message: string, cause: unknown): HeraldError {
  if (isHeraldError(cause)) return cause;
  const code = (cause as { code?: unknown })?.code;
  const text = (cause as { message?: unknown })?.message;
  if (cause === undefined) return new HeraldError('HERALD_ERR_STORAGE', message);
  return new HeraldError('HERALD_ERR_STORAGE', `${message}: ${typeof text === 'string' ? text : String(cause)}`, { cause, details: { amqpCode: typeof code === 'string' ? code : undefined } });
}

function rawBody(body: unknown): Buffer {
  if (Buffer.isBuffer(body)) return body;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body === undefined || body === null) return Buffer.alloc(0);
  return Buffer.from(JSON.stringify(body), 'utf8');
}

function checkInt(name: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${name} must be an integer from ${min} to ${max} (got ${v})`);
  return v;
}
