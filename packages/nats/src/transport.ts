/**
 * The NATS JetStream transport.
 *
 * Layout: one stream per topic (`<PREFIX>_<topic>`, subjects `<prefix>.<topic>.*`), one subject
 * per partition (`<prefix>.<topic>.<partition>`). The partition count is fixed when the stream is
 * created and stored in the stream's description (`herald topic "<topic>", partitions=<n>`; NATS
 * 2.9 has no stream metadata): a stream's configuration is created atomically, so two processes
 * creating one topic agree on its count, and a mismatch is `HERALD_ERR_TOPIC_MISMATCH`.
 *
 * Wire format: the CloudEvents JSON structured format as the message body (so `Delivery.raw`
 * is exactly the stored bytes, and `maxPayloadBytes` measures what is sent), with headers
 * `Content-Type: application/cloudevents+json`, `Nats-Msg-Id: <envelope id>` (JetStream
 * de-duplicates a re-published id within the stream's `duplicate_window`, default 2 min) and
 * `Herald-Key: <partition key as a JSON string>` when there is one.
 *
 * Publishing: every message of a batch is validated and encoded first; one bad or oversize
 * message refuses the whole batch before anything is sent (`HERALD_ERR_ENVELOPE_INVALID`,
 * `HERALD_ERR_PAYLOAD_TOO_LARGE`). The batch is then pipelined on one connection (in order, so
 * JetStream assigns growing sequences in input order) and `publish` resolves when every
 * message's PubAck arrived — i.e. once the stream leader stored it (and, with replicas > 1, a
 * quorum of replicas has it). On rejection (`HERALD_ERR_STORAGE`, or `HERALD_ERR_CLOSED`) some
 * messages may have been stored; retrying is safe within the duplicate window: already stored
 * ids are acknowledged as duplicates at their first position, not stored twice (a retried
 * message may then sit after later messages of its batch that did get through).
 *
 * Reading (ackModel 'offset'): members of a group divide partitions with fenced leases in a
 * NATS KV bucket (`NatsLeaseStore`) and the core `PartitionBalancer`; core's `LogSubscription`
 * does in-flight bounds, nack redelivery, revocation and draining close. A partition's position
 * is its stream sequence. Each lease epoch reads through its own durable pull consumer
 * (AckExplicit, filter = the partition's subject, `<group>-<partition>-<epoch>-<nonce>`):
 * a new owner reads the ack floor of the previous epoch's consumer, creates its own starting
 * right after it, then deletes the old one. So a new owner always resumes in log order from the
 * group's committed position (a shared consumer would hand it new messages before the dead
 * owner's pending ones came back), and a stale owner's late acks go to a deleted consumer:
 * fencing holds at the broker too. Acks are sent at commit time (the low watermark of acked
 * deliveries), message by message up to it, the last one confirmed (an ack-ack request); a
 * confirmation refused because the lease moved on is `HERALD_ERR_LEASE_LOST`.
 *
 * Pulling: one pull request at a time per owned partition, at most `fetchBatch` messages, and
 * only while fewer than 2 × `fetchBatch` wait in memory. Every delivery of a consumer takes the
 * next delivery sequence; a jump (or, after a pull dropped at a reconnect or failed, a server
 * count ahead of what arrived) means a message was lost in transit and would only come back
 * after `ack_wait`, behind later ones: the partition is then re-read from its committed
 * position under the same lease (a clean revoke, a new consumer) — duplicates, never a gap.
 *
 * Close: `close()` is idempotent and draining: subscriptions are closed (commit what was acked,
 * release leases, up to `timeoutMs`), then the connection is closed if the transport opened it.
 */
import { randomUUID } from 'node:crypto';
import {
  type Clock,
  type CloudEvent,
  DEFAULT_MAX_UNCOMMITTED_PER_PARTITION,
  DEFAULT_PARTITIONS,
  type Delivery,
  type EnsureTopicOptions,
  encodeEnvelope,
  encodedSize,
  ensureEnvelope,
  HeraldError,
  isHeraldError,
  type LagSource,
  type LeaseFence,
  type LeaseGrant,
  type LogRecord,
  type LogSource,
  LogSubscription,
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
import { DeferredSubscription, partitionCount, positiveInt, RoundRobin, tooLarge } from '@herald/core/internal';
import {
  AckPolicy,
  type Consumer,
  type ConsumerMessages,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamClient,
  JetStreamApiError,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  type StreamInfo,
  StorageType,
} from '@nats-io/jetstream';
import { connect, type ConnectionOptions, headers, type NatsConnection } from '@nats-io/transport-node';
import { type NatsTopicStats, readLag, readTopics } from './lag.ts';
import { NatsLeaseStore, openLeaseBucket } from './lease-store.ts';
import { consumerPrefix, parseConsumerName, streamName, subjectOf, subjectsOf } from './names.ts';

export interface NatsTransportOptions {
  /** An open connection, shared (not closed by the transport). Give `connection` or `servers`. */
  readonly connection?: NatsConnection;
  /** Servers to connect to (default `127.0.0.1:4222`); on a cluster, list several. */
  readonly servers?: string | string[];
  /**
   * Extra connection options. Defaults: `noAsyncTraces: true`, reconnect forever
   * (`maxReconnectAttempts: -1`), `reconnectTimeWait: 250` ms.
   */
  readonly connectOptions?: Partial<ConnectionOptions>;
  /** Subject prefix (default `herald`); streams are named `<PREFIX>_<topic>`. */
  readonly prefix?: string;
  /** Partitions for topics created implicitly (default 8). */
  readonly defaultPartitions?: number;
  /** Stream replicas for topics this transport creates (default 1; 3 on a cluster). Also used for the lease bucket. */
  readonly replicas?: number;
  /** 'file' (default: survives a broker restart) or 'memory' stream storage. */
  readonly storage?: 'file' | 'memory';
  /** JetStream de-duplication window of `Nats-Msg-Id` (= envelope id), ms (default 120 000). */
  readonly duplicateWindowMs?: number;
  /** Largest encoded envelope in bytes (default and maximum: the server's max_payload minus 4 KiB for headers). */
  readonly maxPayloadBytes?: number;
  /** How long a publish waits for its PubAck, ms (default 5000). */
  readonly publishTimeoutMs?: number;
  /** KV bucket of the partition leases (default `herald_leases`). */
  readonly leaseBucket?: string;
  /** Partition lease time to live, ms (default 10 000). */
  readonly leaseMs?: number;
  /** Lease renewal / rebalance period, ms (default leaseMs / 3). */
  readonly heartbeatMs?: number;
  /**
   * The consumers' ack_wait, ms (default 300 000, the router's default in-place retry limit):
   * a message held that long unacked (a long handler, in-place retries) is re-sent by the server
   * and ignored here. Herald never relies on it (a new owner reads through a new consumer), so
   * long is better: on 2.9 a re-sent message also holds the reported ack floor back until the
   * consumer has nothing pending. Also `capabilities.ackDeadlineMs`: the router `extend()`s
   * (JetStream `working()`) running handlers every ackWaitMs / 2.
   */
  readonly ackWaitMs?: number;
  /** The consumers' max_deliver (default -1: unlimited; Herald redelivers itself, see the module doc). */
  readonly maxDeliver?: number;
  /** Messages per pull request (default 256); at most twice this many wait in memory per partition. */
  readonly fetchBatch?: number;
  /** How long one pull request waits on the server, ms (default 5000, min 1000); a lost request is noticed after 2 missed heartbeats (≤ 1 s each). */
  readonly fetchExpiresMs?: number;
  /** Delay before a moved watermark is committed (acked), ms (default 10). */
  readonly commitIntervalMs?: number;
  readonly clock?: Clock;
}

interface TopicMeta {
  readonly topic: string;
  readonly stream: string;
  readonly partitions: number;
  readonly rr: RoundRobin;
}

interface Ctx {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly leases: NatsLeaseStore;
  readonly prefix: string;
  readonly ackWaitMs: number;
  readonly maxDeliver: number;
  readonly fetchBatch: number;
  readonly fetchExpiresMs: number;
  /** Whether the server reads `+TERM <reason>` (2.11+); 2.9 ignores a term that carries a reason, leaving the message pending. */
  readonly termReason: boolean;
  readonly clock: Clock;
}

const HEADER_RESERVE = 4096;
const ACK = new TextEncoder().encode('+ACK');
const KEY_HEADER = 'Herald-Key';
const STREAM_NOT_FOUND = 10059;
const STREAM_NAME_IN_USE = 10058;
const CONSUMER_NOT_FOUND = 10014;

/** Connects (unless given a connection), opens the lease bucket and returns the transport. */
export async function createNatsTransport(options: NatsTransportOptions = {}): Promise<NatsTransport> {
  const owns = options.connection === undefined;
  const nc =
    options.connection ??
    (await connect({
      servers: options.servers ?? '127.0.0.1:4222',
      noAsyncTraces: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      ...(options.connectOptions ?? {}),
    }).catch((e: unknown) => {
      throw new HeraldError('HERALD_ERR_STORAGE', `cannot connect to NATS at ${String(options.servers ?? '127.0.0.1:4222')}: ${(e as Error).message}`, { cause: e });
    }));
  try {
    const jsm = await jetstreamManager(nc);
    const leaseMs = options.leaseMs ?? 10_000;
    const kv = await openLeaseBucket(nc, {
      ...(options.leaseBucket !== undefined ? { bucket: options.leaseBucket } : {}),
      replicas: options.replicas ?? 1,
      storage: options.storage ?? 'file',
      // A lease request lost in a broker restart must not outlive the lease it renews.
      timeoutMs: Math.max(250, Math.floor(leaseMs / 3)),
    });
    const clock = options.clock ?? systemClock;
    const leases = new NatsLeaseStore(nc, kv, false, clock);
    return new NatsTransport(options, nc, jsm, leases, owns);
  } catch (e) {
    if (owns) await nc.close().catch(() => {});
    if (isHeraldError(e)) throw e;
    throw new HeraldError('HERALD_ERR_STORAGE', `NATS JetStream is not usable: ${(e as Error).message}`, { cause: e });
  }
}

export class NatsTransport implements Transport, LagSource {
  readonly name = 'nats';
  readonly capabilities: TransportCapabilities;
  /** The lease store the transport's subscriptions divide partitions with. */
  readonly leases: NatsLeaseStore;
  /** The connection (shared with the caller when it was given). */
  readonly connection: NatsConnection;

  readonly #ctx: Ctx;
  readonly #owns: boolean;
  readonly #defaultPartitions: number;
  readonly #replicas: number;
  readonly #storage: 'file' | 'memory';
  readonly #duplicateWindowMs: number;
  readonly #maxPayload: number;
  readonly #serverMax: number;
  readonly #publishTimeoutMs: number;
  readonly #leaseMs: number;
  readonly #heartbeatMs: number | undefined;
  readonly #commitIntervalMs: number | undefined;
  readonly #topics = new Map<string, Promise<TopicMeta>>();
  readonly #subs = new Set<DeferredSubscription<NatsLogSubscription>>();
  readonly #sources = new Set<PartitionSource>();
  #closed = false;
  #closePromise: Promise<void> | undefined;

  /** Use `createNatsTransport`. */
  constructor(options: NatsTransportOptions, nc: NatsConnection, jsm: JetStreamManager, leases: NatsLeaseStore, ownsConnection: boolean) {
    this.connection = nc;
    this.leases = leases;
    this.#owns = ownsConnection;
    this.#defaultPartitions = partitionCount(options.defaultPartitions ?? DEFAULT_PARTITIONS);
    this.#replicas = positiveInt('replicas', options.replicas ?? 1);
    this.#storage = options.storage ?? 'file';
    this.#duplicateWindowMs = positiveInt('duplicateWindowMs', options.duplicateWindowMs ?? 120_000);
    this.#serverMax = nc.info?.max_payload ?? 1024 * 1024;
    const cap = this.#serverMax - HEADER_RESERVE;
    this.#maxPayload = Math.min(cap, positiveInt('maxPayloadBytes', options.maxPayloadBytes ?? cap));
    this.#publishTimeoutMs = positiveInt('publishTimeoutMs', options.publishTimeoutMs ?? 5000);
    this.#leaseMs = positiveInt('leaseMs', options.leaseMs ?? 10_000);
    this.#heartbeatMs = options.heartbeatMs === undefined ? undefined : positiveInt('heartbeatMs', options.heartbeatMs);
    this.#commitIntervalMs = options.commitIntervalMs;
    const fetchExpiresMs = options.fetchExpiresMs ?? 5000;
    if (!(Number.isInteger(fetchExpiresMs) && fetchExpiresMs >= 1000)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `fetchExpiresMs must be an integer >= 1000 (got ${fetchExpiresMs})`);
    const ackWaitMs = positiveInt('ackWaitMs', options.ackWaitMs ?? 300_000);
    this.#ctx = {
      nc,
      js: jetstream(nc, { timeout: this.#publishTimeoutMs }),
      jsm,
      leases,
      prefix: checkPrefix(options.prefix ?? 'herald'),
      ackWaitMs,
      maxDeliver: options.maxDeliver ?? -1,
      fetchBatch: positiveInt('fetchBatch', options.fetchBatch ?? 256),
      fetchExpiresMs,
      termReason: versionAtLeast(nc.info?.version ?? '0.0.0', 2, 11),
      clock: options.clock ?? systemClock,
    };
    const replicated = this.#replicas > 1 ? `R${this.#replicas}: the PubAck comes once a quorum of replicas stored it, so it survives the loss of a minority of nodes; ` : 'R1: ';
    this.capabilities = Object.freeze({
      ackModel: 'offset',
      assignment: 'lease',
      consumerGroups: true,
      persistent: this.#storage === 'file',
      replay: true,
      nativeDelay: false,
      maxPayloadBytes: this.#maxPayload,
      multiProcess: true,
      ackDeadlineMs: ackWaitMs,
      durability:
        this.#storage === 'file'
          ? `NATS JetStream file storage, ${replicated}an acknowledged publish is in the stream's files (written, not fsynced: the server syncs on an interval, 2 min by default; sync_interval, configurable from 2.10, can be 'always') — it survives a broker process crash or restart; an OS crash or power loss of ${this.#replicas > 1 ? 'a majority of the nodes at once' : 'the node'} may lose the last unsynced writes`
          : `NATS JetStream memory storage, ${replicated}an acknowledged publish lives in broker memory only: a broker restart ${this.#replicas > 1 ? 'of a majority of nodes ' : ''}loses it`,
    });
    void this.#watchStatus();
  }

  async ensureTopic(topic: string, options: EnsureTopicOptions = {}): Promise<TopicInfo> {
    this.#open();
    const t = await this.#meta(topic, options.partitions);
    return { topic, partitions: t.partitions };
  }

  async publish(topic: string, messages: readonly OutgoingMessage[]): Promise<readonly PublishReceipt[]> {
    this.#open();
    const t = await this.#meta(topic);
    if (messages.length === 0) return [];
    // Refuse bad input before anything is sent.
    const prepared = new Array<{ subject: string; partition: number; body: string; id: string; key: string | undefined }>(messages.length);
    for (let i = 0; i < messages.length; i++) {
      const m = messages[i]!;
      const env = ensureEnvelope(m.envelope);
      const body = encode(env, topic);
      const size = encodedSize(body);
      if (size > this.#maxPayload) throw tooLarge(topic, env.id, size, this.#maxPayload);
      const key = m.key ?? env.partitionkey;
      const headerBytes = 96 + Buffer.byteLength(env.id) + (key === undefined ? 0 : 16 + Buffer.byteLength(JSON.stringify(key)));
      if (size + headerBytes > this.#serverMax) throw tooLarge(topic, env.id, size + headerBytes, this.#serverMax - headerBytes);
      prepared[i] = { subject: '', partition: -1, body, id: env.id, key };
    }
    for (const p of prepared) {
      p.partition = p.key === undefined ? t.rr.next(t.partitions) : partitionForKey(p.key, t.partitions);
      p.subject = subjectOf(this.#ctx.prefix, topic, p.partition);
    }
    this.#open();
    const acks = prepared.map((p) => {
      const h = headers();
      h.set('Content-Type', 'application/cloudevents+json');
      if (p.key !== undefined) h.set(KEY_HEADER, JSON.stringify(p.key));
      return this.#ctx.js.publish(p.subject, p.body, { msgID: p.id, headers: h, timeout: this.#publishTimeoutMs });
    });
    const results = await Promise.allSettled(acks);
    const receipts: PublishReceipt[] = new Array(prepared.length);
    let failed: { i: number; reason: unknown } | undefined;
    let failures = 0;
    for (let i = 0; i < results.length; i++) {
      const r = results[i]!;
      if (r.status === 'fulfilled') receipts[i] = { topic, partition: prepared[i]!.partition, position: String(r.value.seq) };
      else {
        failures++;
        failed ??= { i, reason: r.reason };
      }
    }
    if (failed) {
      if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'NATS transport closed while publishing', { cause: failed.reason });
      throw new HeraldError('HERALD_ERR_STORAGE', `publish to "${topic}": ${failures} of ${prepared.length} message(s) not acknowledged by JetStream (first: "${prepared[failed.i]!.id}": ${(failed.reason as Error)?.message ?? String(failed.reason)}); retrying is safe within the duplicate window`, {
        cause: failed.reason,
        details: { topic, failed: failures, of: prepared.length },
      });
    }
    return receipts;
  }

  subscribe(topic: string, options: SubscribeOptions): Subscription {
    this.#open();
    if (!options.group) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'subscribe needs a group');
    checkTopic(topic);
    const memberId = options.memberId ?? `m-${process.pid}-${randomUUID().slice(0, 8)}`;
    const sub = new DeferredSubscription<NatsLogSubscription>(topic, options.group, memberId, async () => {
      const meta = await this.#meta(topic);
      if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'NATS transport is closed');
      const source = new PartitionSource(this.#ctx, meta, options.group, memberId, options.onError);
      this.#sources.add(source);
      const inner = new NatsLogSubscription(source, {
        ...options,
        memberId,
        topic,
        source,
        clock: this.#ctx.clock,
        ownership: { kind: 'lease', store: this.leases, leaseMs: this.#leaseMs, ...(this.#heartbeatMs !== undefined ? { heartbeatMs: this.#heartbeatMs } : {}) },
        fetchBatch: this.#ctx.fetchBatch,
        pollMs: 100,
        ...(this.#commitIntervalMs !== undefined ? { commitIntervalMs: this.#commitIntervalMs } : {}),
      });
      void inner.closed.finally(() => this.#sources.delete(source)).catch(() => {});
      return inner;
    });
    this.#subs.add(sub);
    void sub.closed.finally(() => this.#subs.delete(sub)).catch(() => {});
    return sub;
  }

  /**
   * Consumer lag per (topic, group, partition) (`LagSource`), read from JetStream: every Herald
   * stream under this transport's prefix and every group's durable consumers on it (other
   * processes' too, and groups with no member left). `messages` is the group's consumer's
   * `num_pending` + `num_ack_pending`, the age the stored time of the first message after its
   * ack floor (see lag.ts). A read only, safe to call concurrently: nothing is created, pulled
   * or acked. A backend failure rejects with `HERALD_ERR_STORAGE`; a closed transport with
   * `HERALD_ERR_CLOSED`; a bad filter with `HERALD_ERR_INVALID_ARGUMENT`.
   */
  async lag(filter: { readonly group?: string; readonly topic?: string } = {}): Promise<readonly PartitionLag[]> {
    this.#open();
    try {
      return await readLag(this.#ctx.jsm, this.#ctx.prefix, filter);
    } catch (e) {
      if (this.#closed && !isHeraldError(e)) throw new HeraldError('HERALD_ERR_CLOSED', 'NATS transport closed while reading consumer lag', { cause: e });
      throw storageError('reading consumer lag', e);
    }
  }
  /**
   * Every Herald topic under this transport's prefix (other processes' too), or the one `filter`
   * names, with its partition count, the messages ever published to it (the stream's last
   * sequence) and the messages stored now per partition (see `readTopics` in lag.ts). A read
   * only, safe to call concurrently: no stream or consumer is created. Rejects like `lag()`; a
   * `{ topic }` whose stream Herald did not create is `HERALD_ERR_TOPIC_MISMATCH`.
   */
  async topics(filter: { readonly topic?: string } = {}): Promise<readonly NatsTopicStats[]> {
    this.#open();
    try {
      return await readTopics(this.#ctx.jsm, this.#ctx.prefix, filter);
    } catch (e) {
      if (this.#closed && !isHeraldError(e)) throw new HeraldError('HERALD_ERR_CLOSED', 'NATS transport closed while reading topics', { cause: e });
      throw storageError('reading topics', e);
    }
  }


  /**
   * Drops every pull request in flight and issues new ones (done by itself after a reconnect).
   * Messages the server sent to a dropped request are lost in transit; the subscription notices
   * the gap in delivery sequences and re-reads the partition from its committed position. For
   * tests of exactly that.
   */
  resetPulls(): void {
    for (const src of this.#sources) src.restartPulls();
  }

  close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.#closePromise) {
      this.#closed = true;
      this.#closePromise = (async () => {
        await Promise.all([...this.#subs].map((s) => s.close(options).catch(() => {})));
        await this.leases.close();
        if (this.#owns) await this.connection.close().catch(() => {});
      })();
    }
    return this.#closePromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ── internals ──────────────────────────────────────────────────────────

  #open(): void {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'NATS transport is closed');
  }

  /** After a reconnect, pull requests in flight are gone: re-issue them at once. */
  async #watchStatus(): Promise<void> {
    try {
      for await (const s of this.connection.status()) {
        if (s.type === 'reconnect') for (const src of this.#sources) src.restartPulls();
      }
    } catch {
      // the status iterator ends with the connection
    }
  }

  #meta(topic: string, wanted?: number): Promise<TopicMeta> {
    checkTopic(topic);
    if (wanted !== undefined) partitionCount(wanted);
    let p = this.#topics.get(topic);
    if (!p) {
      p = this.#loadOrCreate(topic, wanted);
      this.#topics.set(topic, p);
      p.catch(() => this.#topics.delete(topic));
    }
    return p.then((t) => {
      if (wanted !== undefined && wanted !== t.partitions) {
        throw new HeraldError('HERALD_ERR_TOPIC_MISMATCH', `topic "${topic}" has ${t.partitions} partitions, not ${wanted}`, { details: { topic, partitions: t.partitions, requested: wanted } });
      }
      return t;
    });
  }

  async #loadOrCreate(topic: string, wanted: number | undefined): Promise<TopicMeta> {
    const stream = streamName(this.#ctx.prefix, topic);
    let info: StreamInfo | undefined;
    try {
      info = await this.#ctx.jsm.streams.info(stream);
    } catch (e) {
      if (!(e instanceof JetStreamApiError && e.code === STREAM_NOT_FOUND)) throw storageError(`reading stream ${stream}`, e);
    }
    if (!info) {
      const n = wanted ?? this.#defaultPartitions;
      try {
        info = await this.#ctx.jsm.streams.add({
          name: stream,
          subjects: [subjectsOf(this.#ctx.prefix, topic)],
          description: `herald topic ${JSON.stringify(topic)}, partitions=${n}`,
          storage: this.#storage === 'memory' ? StorageType.Memory : StorageType.File,
          num_replicas: this.#replicas,
          retention: RetentionPolicy.Limits,
          discard: DiscardPolicy.Old,
          duplicate_window: this.#duplicateWindowMs * 1_000_000,
        });
      } catch (e) {
        // Another process created it first (maybe with another count): read what it made.
        if (!(e instanceof JetStreamApiError && e.code === STREAM_NAME_IN_USE)) throw storageError(`creating stream ${stream}`, e);
        info = await this.#ctx.jsm.streams.info(stream).catch((e2: unknown) => {
          throw storageError(`reading stream ${stream}`, e2);
        });
      }
    }
    const m = /partitions=(\d+)/.exec(info.config.description ?? '');
    const subject = subjectsOf(this.#ctx.prefix, topic);
    if (!m || !info.config.subjects?.includes(subject)) {
      throw new HeraldError('HERALD_ERR_TOPIC_MISMATCH', `stream ${stream} exists but was not created by Herald for topic "${topic}" (description ${JSON.stringify(info.config.description ?? '')}, subjects ${JSON.stringify(info.config.subjects)})`, {
        details: { topic, stream },
      });
    }
    return { topic, stream, partitions: Number(m[1]), rr: new RoundRobin() };
  }
}

// ── subscriptions ──────────────────────────────────────────────────────────

/**
 * Core's LogSubscription, told which lease each partition is read under (the source names its
 * consumer by epoch) and stopping the partition's pulls once it is revoked or closed.
 * Deliveries map `extend()` to JetStream `working()` and `reject(reason)` to `term(reason)` at
 * commit time.
 */
class NatsLogSubscription extends LogSubscription {
  readonly #source: PartitionSource;
  readonly #resyncing = new Set<number>();
  #closeP: Promise<void> | undefined;
  #closing = false;

  constructor(source: PartitionSource, options: ConstructorParameters<typeof LogSubscription>[0]) {
    super(options);
    this.#source = source;
    source.onGap = (p) => void this.#resync(p);
  }

  /**
   * Re-reads `partition` from the committed position under the same lease: a clean revoke
   * (drain, commit the watermark) and a fresh assignment, which opens a new consumer at the
   * ack floor. Skipped when the lease moved meanwhile.
   */
  async #resync(partition: number): Promise<void> {
    const grant = this.#source.grants.get(partition);
    if (!grant || this.#closing || this.#resyncing.has(partition)) return;
    this.#resyncing.add(partition);
    try {
      const state = this.#source.state(partition);
      await super.revoke(partition, false);
      if (state) this.#source.stop(state);
      if (this.#closing || this.#source.grants.get(partition) !== grant) return;
      if (!(await this.#source.leaseValid(grant))) {
        this.#source.grants.delete(partition);
        return;
      }
      if (this.#closing || this.#source.grants.get(partition) !== grant) return;
      await this.assign(partition, grant);
    } finally {
      this.#resyncing.delete(partition);
    }
  }

  override async assign(partition: number, grant?: LeaseGrant): Promise<void> {
    if (grant) this.#source.grants.set(partition, grant);
    return super.assign(partition, grant);
  }

  override async revoke(partition: number, lost: boolean): Promise<void> {
    const state = this.#source.state(partition);
    if (lost) this.#source.grants.delete(partition);
    await super.revoke(partition, lost);
    if (!this.assignment().includes(partition)) {
      this.#source.grants.delete(partition);
      if (state) this.#source.stop(state);
    }
  }

  override close(options: { timeoutMs?: number } = {}): Promise<void> {
    this.#closing = true;
    this.#closeP ??= super.close(options).finally(() => this.#source.stopAll());
    return this.#closeP;
  }

  override [Symbol.asyncIterator](): AsyncIterator<Delivery> {
    const inner = super[Symbol.asyncIterator]();
    const source = this.#source;
    return {
      next: async () => {
        const r = await inner.next();
        return r.done ? r : { done: false, value: wrapDelivery(r.value, source) };
      },
      return: async () => ({ done: true, value: undefined }),
    };
  }
}

function wrapDelivery(d: Delivery, source: PartitionSource): Delivery {
  const seq = Number(d.position);
  let settled = false;
  return {
    envelope: d.envelope,
    ...(d.decodeError ? { decodeError: d.decodeError } : {}),
    get raw(): string {
      return d.raw;
    },
    topic: d.topic,
    partition: d.partition,
    key: d.key,
    position: d.position,
    attempt: d.attempt,
    revoked: d.revoked,
    ...(d.fence ? { fence: d.fence } : {}),
    ack(): void {
      settled = true;
      d.ack();
    },
    nack(options?: { delayMs?: number }): void {
      settled = true;
      d.nack(options);
    },
    reject(reason: string): void {
      if (!settled) source.term(d.partition, seq, reason);
      settled = true;
      d.reject(reason);
    },
    extend(): void {
      if (!settled) source.working(d.partition, seq);
      d.extend();
    },
  };
}

// ── the partitions of one subscription ─────────────────────────────────────

interface PartState {
  readonly partition: number;
  readonly grant: LeaseGrant | undefined;
  /** Earlier epochs' consumers of (group, partition), deleted once this epoch's exists. */
  readonly predecessors: string[];
  consumer: Consumer | undefined;
  opening: Promise<void> | undefined;
  /** Pulled, not yet handed to the LogSubscription. */
  buffer: JsMsg[];
  bufHead: number;
  /** Handed out, not yet acked at the server; by stream sequence, ascending. */
  readonly held: Map<number, JsMsg>;
  readonly terms: Map<number, string>;
  /** Highest stream sequence acked at the server. */
  committed: number;
  iter: ConsumerMessages | undefined;
  pulling: boolean;
  roomWaiter: (() => void) | undefined;
  stopped: boolean;
  /** Consumer delivery sequence of the last message pulled: every delivery takes the next one. */
  lastDseq: number;
  /** A delivery went missing in transit: pulling stopped; the partition is being re-read. */
  gap: boolean;
  /** The pull request in flight was dropped on purpose (reconnect): its messages may be lost. */
  dropped: boolean;
}

/**
 * The `LogSource` of one subscription: per owned partition, this epoch's durable consumer,
 * a bounded pull loop feeding a buffer, and the acks that carry commits to the server.
 */
class PartitionSource implements LogSource {
  readonly partitions: number;
  readonly grants = new Map<number, LeaseGrant>();
  readonly #ctx: Ctx;
  readonly #meta: TopicMeta;
  readonly #group: string;
  readonly #memberId: string;
  readonly #onError: ((e: unknown) => void) | undefined;
  readonly #parts = new Map<number, PartState>();
  readonly #listeners = new Set<() => void>();
  readonly #highWater: number;
  #closed = false;
  /** Set by the subscription: re-read `partition` from its committed position. */
  onGap: ((partition: number) => void) | undefined;

  constructor(ctx: Ctx, meta: TopicMeta, group: string, memberId: string, onError: ((e: unknown) => void) | undefined) {
    this.#ctx = ctx;
    this.#meta = meta;
    this.partitions = meta.partitions;
    this.#group = group;
    this.#memberId = memberId;
    this.#onError = onError;
    this.#highWater = ctx.fetchBatch * 2;
  }

  state(partition: number): PartState | undefined {
    return this.#parts.get(partition);
  }

  /** The previous epochs' ack floor: the group's committed position on `partition` (-1 when the group never read it). */
  async committed(partition: number): Promise<number> {
    const grant = this.grants.get(partition);
    return this.#retrying(partition, grant, async () => {
      const prefix = consumerPrefix(this.#group, partition);
      const found: Array<{ name: string; epoch: number; created: number; floor: number }> = [];
      for await (const ci of this.#ctx.jsm.consumers.list(this.#meta.stream)) {
        const parsed = parseConsumerName(ci.name, prefix);
        // NATS 2.9 reports an ack floor of 0 until the first ack: a consumer that acked nothing
        // is still at the position it was created at.
        const floor = ci.ack_floor.consumer_seq > 0 ? ci.ack_floor.stream_seq : Math.max(0, (ci.config.opt_start_seq ?? 1) - 1);
        if (parsed) found.push({ name: ci.name, epoch: parsed.epoch, created: Date.parse(ci.created), floor });
      }
      found.sort((a, b) => a.epoch - b.epoch || a.created - b.created);
      const latest = found[found.length - 1];
      if (latest && grant && latest.epoch > grant.epoch) {
        throw new HeraldError('HERALD_ERR_LEASE_LOST', `partition ${partition} of "${this.#meta.topic}" is read by a newer lease epoch (${latest.epoch} > ${grant.epoch})`);
      }
      this.#stopState(this.#parts.get(partition));
      this.#parts.set(partition, {
        partition,
        grant,
        predecessors: found.map((f) => f.name),
        consumer: undefined,
        opening: undefined,
        buffer: [],
        bufHead: 0,
        held: new Map(),
        terms: new Map(),
        committed: latest ? latest.floor : 0,
        iter: undefined,
        pulling: false,
        roomWaiter: undefined,
        stopped: false,
        lastDseq: 0,
        gap: false,
        dropped: false,
      });
      return latest ? latest.floor : -1;
    });
  }

  /** The stream's last sequence: a 'latest' group starts after it. */
  async head(partition: number): Promise<number> {
    return this.#retrying(partition, this.grants.get(partition), async () => (await this.#ctx.jsm.streams.info(this.#meta.stream)).state.last_seq);
  }

  fetch(partition: number, after: number, limit: number): readonly LogRecord[] {
    const st = this.#parts.get(partition);
    if (!st || st.stopped) return [];
    if (!st.consumer) {
      if (!st.opening) {
        st.opening = this.#openConsumer(st, after).then(
          () => {
            st.opening = undefined;
            this.#startPulling(st);
            this.#wake();
          },
          (e: unknown) => {
            st.opening = undefined;
            if (!st.stopped) this.#onError?.(e);
          },
        );
      }
      return [];
    }
    const out: LogRecord[] = [];
    while (st.bufHead < st.buffer.length && out.length < limit) {
      const m = st.buffer[st.bufHead++]!;
      const seq = m.seq;
      if (seq <= st.committed) {
        m.ack(); // re-sent after ack_wait although already committed (an ack was lost): ack again
        continue;
      }
      if (st.held.has(seq)) continue; // re-sent after ack_wait while still held: ignore
      if (seq <= after) {
        // Neither held nor committed, yet behind the read position: it was lost in transit and
        // came back after ack_wait, after later messages were handed out.
        this.#lostInTransit(st, `message ${seq} came back after ${after} was read`);
        break;
      }
      st.held.set(seq, m);
      const key = m.headers?.has(KEY_HEADER) ? decodeKey(m.headers.get(KEY_HEADER)) : undefined;
      out.push({ offset: seq, key, raw: m.string() });
    }
    if (st.bufHead === st.buffer.length) {
      st.buffer = [];
      st.bufHead = 0;
    } else if (st.bufHead > 1024) {
      st.buffer = st.buffer.slice(st.bufHead);
      st.bufHead = 0;
    }
    if (st.roomWaiter && st.buffer.length - st.bufHead <= this.#highWater - Math.min(this.#ctx.fetchBatch, this.#highWater / 2)) {
      const w = st.roomWaiter;
      st.roomWaiter = undefined;
      w();
    }
    return out;
  }

  /**
   * Acks every held message up to `offset` (term for rejected ones), the last one confirmed.
   * If the confirmation fails and the lease is no longer ours: `HERALD_ERR_LEASE_LOST`. If the
   * lease is still ours (a disconnect), the acks were queued by the client and sent on
   * reconnect; any that got lost come back after ack_wait and are acked on sight.
   */
  async commit(partition: number, offset: number, fence: LeaseFence | undefined): Promise<void> {
    const st = this.#parts.get(partition);
    if (!st || st.stopped) {
      if (fence) throw new HeraldError('HERALD_ERR_LEASE_LOST', `partition ${partition} of "${this.#meta.topic}" is no longer read here`);
      return;
    }
    let last: JsMsg | undefined;
    let lastTerm = false;
    for (const [seq, m] of st.held) {
      if (seq > offset) break;
      if (last) {
        if (lastTerm) this.#term(last, st.terms.get(last.seq));
        else last.ack();
      }
      st.held.delete(seq);
      last = m;
      lastTerm = st.terms.has(seq);
    }
    if (offset > st.committed) st.committed = offset;
    if (!last) return;
    if (lastTerm) {
      this.#term(last, st.terms.get(last.seq));
      for (const s of st.terms.keys()) if (s <= offset) st.terms.delete(s);
      return;
    }
    for (const s of st.terms.keys()) if (s <= offset) st.terms.delete(s);
    try {
      // ackAck as a plain request: JsMsg.ackAck captures an async stack trace per call
      // (its request ignores noAsyncTraces), a measurable cost at one confirmation per commit.
      await this.#ctx.nc.request((last as JsMsg & { readonly reply: string }).reply, ACK, { timeout: 2000 });
    } catch (e) {
      if (fence && !(await this.#ctx.leases.validate(fence).catch(() => true))) {
        throw new HeraldError('HERALD_ERR_LEASE_LOST', `commit of ${this.#meta.topic}[${partition}] at ${offset} refused: the lease (epoch ${fence.epoch}) moved on`, { cause: e });
      }
      this.#onError?.(new HeraldError('HERALD_ERR_STORAGE', `commit of ${this.#meta.topic}[${partition}] at ${offset} not confirmed (acks are re-sent on redelivery): ${(e as Error).message}`, { cause: e }));
    }
  }

  onAppend(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** A delivery is still being worked on: push out its ack_wait. */
  working(partition: number, seq: number): void {
    this.#parts.get(partition)?.held.get(seq)?.working();
  }

  /** A delivery was rejected (dead-lettered): term it with the reason when committed. */
  term(partition: number, seq: number, reason: string): void {
    const st = this.#parts.get(partition);
    if (st?.held.has(seq)) st.terms.set(seq, reason.slice(0, 1024));
  }

  #term(m: JsMsg, reason: string | undefined): void {
    if (this.#ctx.termReason) m.term(reason);
    else m.term();
  }

  /** Stops a partition's pulls (revoked or closed); nothing more is acked for it. */
  stop(st: PartState): void {
    this.#stopState(st);
    if (this.#parts.get(st.partition) === st) this.#parts.delete(st.partition);
  }

  stopAll(): void {
    this.#closed = true;
    for (const st of [...this.#parts.values()]) this.stop(st);
  }

  /** Re-issues every pull request (after a reconnect the server forgot them). */
  restartPulls(): void {
    for (const st of this.#parts.values()) {
      st.dropped = true;
      void st.iter?.close();
    }
  }

  /**
   * A delivery of this epoch's consumer never reached us (a pull request dropped by a
   * reconnect, a consumer leader change): what follows it must not be handed out before it.
   * Stop pulling and let the subscription re-read the partition from its committed position
   * (duplicates after the gap; order and completeness kept).
   */
  #lostInTransit(st: PartState, why: string): void {
    if (st.gap || st.stopped) return;
    st.gap = true;
    st.buffer = [];
    st.bufHead = 0;
    void st.iter?.close();
    this.#onError?.(new HeraldError('HERALD_ERR_STORAGE', `${this.#meta.topic}[${st.partition}]: a delivery was lost in transit (${why}); re-reading from the committed position`, { details: { topic: this.#meta.topic, partition: st.partition } }));
    this.onGap?.(st.partition);
  }

  async #checkDelivered(st: PartState): Promise<void> {
    try {
      const info = await st.consumer!.info(false);
      if (info.delivered.consumer_seq > st.lastDseq) this.#lostInTransit(st, `the server delivered up to ${info.delivered.consumer_seq}, ${st.lastDseq} arrived`);
    } catch (e) {
      if (!st.stopped) this.#onError?.(storageError(`reading consumer of ${this.#meta.stream}[${st.partition}]`, e));
    }
  }

  /** Whether `grant` is still the current lease (false when unknown). */
  async leaseValid(grant: LeaseGrant): Promise<boolean> {
    return this.#ctx.leases.validate(grant).catch(() => false);
  }

  #stopState(st: PartState | undefined): void {
    if (!st || st.stopped) return;
    st.stopped = true;
    void st.iter?.close();
    st.roomWaiter?.();
    st.buffer = [];
    st.bufHead = 0;
  }

  #wake(): void {
    for (const l of this.#listeners) l();
  }

  /** Runs `fn` until it succeeds, while `grant` is still this member's lease on `partition`. */
  async #retrying<T>(partition: number, grant: LeaseGrant | undefined, fn: () => Promise<T>): Promise<T> {
    let delay = 50;
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        if (isHeraldError(e, 'HERALD_ERR_LEASE_LOST') || this.#closed || this.grants.get(partition) !== grant) throw e;
        this.#onError?.(e);
        await this.#ctx.clock.sleep(delay);
        delay = Math.min(1000, delay * 2);
        if (this.#closed || this.grants.get(partition) !== grant) throw e;
      }
    }
  }

  /** Creates this epoch's consumer right after `after`, then deletes the earlier epochs' ones. */
  async #openConsumer(st: PartState, after: number): Promise<void> {
    const { jsm, js } = this.#ctx;
    const stream = this.#meta.stream;
    const epoch = st.grant?.epoch ?? 0;
    const name = `${consumerPrefix(this.#group, st.partition)}${epoch}-${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    await jsm.consumers.add(stream, {
      durable_name: name,
      description: `herald group ${JSON.stringify(this.#group).slice(0, 200)} partition ${st.partition} epoch ${epoch} member ${this.#memberId}`,
      ack_policy: AckPolicy.Explicit,
      filter_subject: subjectOf(this.#ctx.prefix, this.#meta.topic, st.partition),
      ...(after >= 0 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: after + 1 } : { deliver_policy: DeliverPolicy.All }),
      ack_wait: this.#ctx.ackWaitMs * 1_000_000,
      max_deliver: this.#ctx.maxDeliver,
      max_ack_pending: DEFAULT_MAX_UNCOMMITTED_PER_PARTITION * 4 + this.#highWater * 2,
    });
    if (st.stopped) return;
    st.consumer = await js.consumers.get(stream, name);
    for (const old of st.predecessors) {
      await jsm.consumers.delete(stream, old).catch((e: unknown) => {
        if (!(e instanceof JetStreamApiError && e.code === CONSUMER_NOT_FOUND)) this.#onError?.(e);
      });
    }
  }

  #startPulling(st: PartState): void {
    if (st.pulling || st.stopped) return;
    st.pulling = true;
    void this.#pull(st).finally(() => {
      st.pulling = false;
    });
  }

  /** Pull requests, one at a time, while the buffer has room; re-issued after errors and reconnects. */
  async #pull(st: PartState): Promise<void> {
    const batch = this.#ctx.fetchBatch;
    let delay = 50;
    while (!st.stopped && !st.gap) {
      const room = this.#highWater - (st.buffer.length - st.bufHead);
      if (room < Math.min(batch, this.#highWater / 2)) {
        await new Promise<void>((resolve) => {
          st.roomWaiter = resolve;
        });
        continue;
      }
      let failed = false;
      st.dropped = false;
      try {
        const requested = Math.min(room, batch);
        const iter = await st.consumer!.fetch({ max_messages: requested, expires: this.#ctx.fetchExpiresMs, idle_heartbeat: Math.min(1000, this.#ctx.fetchExpiresMs / 2) });
        st.iter = iter;
        if (st.stopped) {
          void iter.close();
          break;
        }
        for await (const m of iter) {
          if (st.stopped || st.gap) break;
          const dseq = m.info.deliverySequence;
          if (dseq !== st.lastDseq + 1) {
            this.#lostInTransit(st, `consumer delivery sequence jumped from ${st.lastDseq} to ${dseq}`);
            break;
          }
          st.lastDseq = dseq;
          st.buffer.push(m);
          this.#wake();
        }
        delay = 50;
      } catch (e) {
        failed = true;
        if (st.stopped) break;
        this.#onError?.(storageError(`pulling ${this.#meta.stream}[${st.partition}]`, e));
        await this.#ctx.clock.sleep(delay);
        delay = Math.min(1000, delay * 2);
      } finally {
        st.iter = undefined;
      }
      // A request dropped at a reconnect or failed (missed heartbeats after a leader change,
      // an error) may have had messages in flight that never arrived; with nothing after them,
      // no sequence jump would show it. Ask the server how far it delivered. (A request that
      // simply expired ended with the server's own status, after all it sent.)
      if ((failed || st.dropped) && !st.stopped && !st.gap) await this.#checkDelivered(st);
    }
  }
}

// ── helpers ────────────────────────────────────────────────────────────────

function encode(env: CloudEvent, topic: string): string {
  try {
    return encodeEnvelope(env);
  } catch (cause) {
    if (isHeraldError(cause)) throw cause;
    throw new HeraldError('HERALD_ERR_ENVELOPE_INVALID', `envelope "${String(env.id)}" to "${topic}" cannot be encoded as JSON: ${(cause as Error).message}`, { cause, details: { topic, id: env.id } });
  }
}

function storageError(what: string, cause: unknown): HeraldError {
  if (isHeraldError(cause)) return cause;
  return new HeraldError('HERALD_ERR_STORAGE', `NATS: ${what} failed: ${(cause as Error)?.message ?? String(cause)}`, { cause });
}

/** Keys travel as JSON strings: a header value cannot hold CR or LF, and JSON also keeps lone surrogates and edge spaces exact. */
function decodeKey(v: string): string {
  try {
    const k: unknown = JSON.parse(v);
    return typeof k === 'string' ? k : v;
  } catch {
    return v;
  }
}

function versionAtLeast(version: string, major: number, minor: number): boolean {
  const [a = 0, b = 0] = version.split('.').map((x) => Number.parseInt(x, 10));
  return a > major || (a === major && b >= minor);
}

function checkTopic(topic: string): void {
  if (typeof topic !== 'string' || !TOPIC_NAME_RE.test(topic)) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `topic name must be 1–200 of letters, digits, '.', '_', '-' (got ${JSON.stringify(topic)})`);
  }
}

function checkPrefix(prefix: string): string {
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(prefix)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `prefix must be 1–32 of letters, digits, '_', '-' (got ${JSON.stringify(prefix)})`);
  return prefix;
}

