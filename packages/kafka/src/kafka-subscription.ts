/**
 * One member of a Kafka consumer group (one kafkajs consumer), read as a Herald Subscription.
 * The broker's group coordinator assigns partitions (eager rebalance protocol, kafkajs'
 * round-robin assigner); Herald turns acks into per-partition low-watermark commits with the
 * core OffsetTracker.
 *
 * Delivery semantics (as core's LogSubscription):
 * - Within a partition, deliveries come in offset order. `ack`/`reject` mark the offset done;
 *   once it and every earlier delivered offset of the partition are done, `offset + 1` is
 *   committed (`commitOffsets`, batched every `commitIntervalMs`). Verbs never block, and the
 *   first settling verb wins; later ones, and any verb after the partition was revoked or the
 *   subscription closed, are no-ops.
 * - `nack({ delayMs })` redelivers in process after the delay with `attempt + 1`: the offset
 *   stays uncommitted meanwhile (the watermark holds), so if this member dies or loses the
 *   partition the message is read again by the next owner (attempt 1 there). No retry topic:
 *   Herald only nacks for handlers declared `ordering: 'none'`, whose backoff is bounded.
 * - Backpressure: at most `maxInFlight` unsettled deliveries across partitions, and at most
 *   `maxUncommittedPerPartition` delivered offsets above a partition's committed position. A
 *   partition at a bound is paused (kafkajs `pause`), and the rest of its fetched batch is left
 *   unresolved; it is resumed, and re-fetched from the first offset not delivered, as soon as
 *   room is made.
 * - Rebalance: when the coordinator starts a rebalance, this member commits what is acked at
 *   once (a real broker accepts commits of the current generation while preparing a
 *   rebalance; the librdkafka mock refuses them). When the new assignment arrives, partitions
 *   it kept go on where they were (fetches restart at the committed offset; offsets already
 *   delivered are skipped), partitions it lost are revoked: their `revoked` signal aborts,
 *   their queued deliveries are dropped and their later acks are not committed, so the next
 *   owner reads them again (at-least-once). `lost` is reported when the member was expelled
 *   (its member id changed) or its consumer crashed.
 * - `startFrom: 'latest'` applies to partitions without a committed offset: they start at the log end as of the
 *   first fetch after the join (kafkajs resolves it there). Such partitions are shown (`assignment()`,
 *   `onPartitions`) only once that fetch has returned, so a record published after the subscription shows a
 *   partition is always read.
 * - A consumer crash is a loss of every partition (`lost: true`). kafkajs restarts the consumer
 *   after retriable errors; after a non-retriable one the subscription rejoins with a fresh
 *   kafkajs consumer (backoff 200 ms doubling, ≤ 5 s), and fails (`closed` rejects) after 5
 *   crashes in a row without a successful join.
 * - `close({ timeoutMs })` stops delivering, waits for unsettled deliveries up to the
 *   deadline, commits what was acked, then leaves the group (LeaveGroup, so the others
 *   rebalance at once). Unsettled deliveries are abandoned unacked and redelivered.
 */
import { setMaxListeners } from 'node:events';
import kafkajs from 'kafkajs';
import type { Consumer, EachBatchPayload, Kafka as KafkaClient, KafkaMessage, PartitionAssigner } from 'kafkajs';
import {
  type Clock,
  type CloudEvent,
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_MAX_UNCOMMITTED_PER_PARTITION,
  type Delivery,
  encodeEnvelope,
  HeraldError,
  isHeraldError,
  OffsetTracker,
  type PartitionChange,
  type SubscribeOptions,
  type Subscription,
} from '@herald/core';
import { decodeRecord } from './binding.ts';
import { positiveInt } from '@herald/core/internal';

/** Consumer-group timings and fetch tuning. Defaults suit a production cluster. */
export interface KafkaConsumerTuning {
  /** Group session timeout, ms (default 30 000). The broker expels a member silent this long. */
  readonly sessionTimeoutMs?: number;
  /** How long the coordinator waits for members to rejoin during a rebalance, ms (default 60 000). */
  readonly rebalanceTimeoutMs?: number;
  /** Heartbeat period, ms (default 3 000; keep it below a third of the session timeout). Rebalances are noticed at the next heartbeat. */
  readonly heartbeatIntervalMs?: number;
  /** Fetch long-poll: how long the broker may hold a fetch with no data, ms (default 500). Also bounds how fast a resumed partition is fetched again. */
  readonly maxWaitTimeMs?: number;
  /** Delay before a moved watermark is committed, ms (default 20). */
  readonly commitIntervalMs?: number;
  /** Partitions whose fetched batches kafkajs hands over concurrently (default 8). */
  readonly partitionsConsumedConcurrently?: number;
  /** Bytes per partition per fetch (default 1 MiB). */
  readonly maxBytesPerPartition?: number;
  /**
   * How long the group leader waits, once it has the members, before it sends the assignment (SyncGroup), ms
   * (default 0). For coordinators that refuse a follower's SyncGroup arriving after the leader's — the librdkafka
   * mock cluster answers it INVALID_REQUEST, which costs that member a rejoin. Only groups of two or more wait.
   */
  readonly leaderSyncDelayMs?: number;
}

export interface KafkaSubscriptionOptions extends SubscribeOptions {
  readonly topic: string;
  readonly kafka: KafkaClient;
  readonly clock: Clock;
  readonly tuning: KafkaConsumerTuning;
  /** Resolves with the topic's partition count, creating the topic if needed. */
  readonly ensureTopic: () => Promise<number>;
}

interface PartitionState {
  readonly partition: number;
  readonly controller: AbortController;
  /** Created at the first fetched batch (from its fetch offset). */
  tracker: OffsetTracker | undefined;
  /** Unsettled deliveries of this partition. */
  pending: number;
  /** Paused by this subscription for backpressure. */
  paused: boolean;
  settledWaiters: Array<() => void>;
}

let memberSeq = 0;
const MAX_RESTARTS = 5;

export class KafkaSubscription implements Subscription {
  readonly topic: string;
  readonly group: string;
  readonly memberId: string;
  readonly closed: Promise<void>;

  readonly #o: KafkaSubscriptionOptions;
  readonly #clock: Clock;
  readonly #maxInFlight: number;
  readonly #maxUncommitted: number;
  readonly #commitIntervalMs: number;
  readonly #parts = new Map<number, PartitionState>();
  readonly #ready: Delivery[] = [];
  #readyHead = 0;
  #inFlight = 0;
  #waiter: ((r: IteratorResult<Delivery>) => void) | undefined;
  #closing = false;
  #done = false;
  #resolveClosed!: () => void;
  #rejectClosed!: (e: unknown) => void;
  #consumer: Consumer | undefined;
  #started: Promise<void>;
  #kafkaMemberId: string | undefined;
  #commitTimer: { cancel(): void } | undefined;
  /** kafkajs' commit of the current generation without its retrier (from an eachBatch payload; bound to the consumer group). */
  #committer: EachBatchPayload['commitOffsetsIfNecessary'] | undefined;
  #committing: Promise<void> | undefined;
  #closePromise: Promise<void> | undefined;
  /**
   * `startFrom: 'latest'`: partitions assigned at the last join whose start position kafkajs has not fixed yet (it
   * asks the broker for the log end in the first fetch after a join). They are shown (assignment(), onPartitions)
   * only after that fetch, so that whatever is published once they are shown is read.
   */
  #held: { readonly partitions: readonly number[]; readonly fetching: Set<number> } | undefined;

  constructor(options: KafkaSubscriptionOptions) {
    this.#o = options;
    this.topic = options.topic;
    this.group = options.group;
    this.memberId = options.memberId ?? `m-${process.pid}-${Date.now().toString(36)}-${(memberSeq++).toString(36)}`;
    this.#clock = options.clock;
    this.#maxInFlight = positiveInt('maxInFlight', options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT);
    this.#maxUncommitted = positiveInt('maxUncommittedPerPartition', options.maxUncommittedPerPartition ?? DEFAULT_MAX_UNCOMMITTED_PER_PARTITION);
    this.#commitIntervalMs = options.tuning.commitIntervalMs ?? 20;
    this.closed = new Promise<void>((resolve, reject) => {
      this.#resolveClosed = resolve;
      this.#rejectClosed = reject;
    });
    this.closed.catch(() => {});
    this.#started = this.#start().catch((e: unknown) => this.fail(e));
  }

  assignment(): readonly number[] {
    return [...this.#parts.keys()].sort((a, b) => a - b);
  }

  [Symbol.asyncIterator](): AsyncIterator<Delivery> {
    return {
      next: () => {
        if (this.#readyHead < this.#ready.length) return Promise.resolve({ done: false, value: this.#takeReady() });
        if (this.#closing || this.#done) return Promise.resolve({ done: true, value: undefined });
        return new Promise((resolve) => {
          this.#waiter = resolve;
        });
      },
      return: async () => ({ done: true, value: undefined }),
    };
  }

  close(options: { timeoutMs?: number } = {}): Promise<void> {
    this.#closePromise ??= this.#close(options.timeoutMs ?? 10_000);
    return this.#closePromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Ends the subscription with a fatal error (`closed` rejects with it). */
  fail(error: unknown): void {
    this.#o.onError?.(error);
    void this.close({ timeoutMs: 0 }).finally(() => this.#rejectClosed(error));
  }

  // ── lifecycle ────────────────────────────────────────────────────────────

  async #start(): Promise<void> {
    this.#partitionCount = await this.#o.ensureTopic();
    await this.#startConsumer();
  }

  #partitionCount = 1;
  /** Crashes since the last successful join; past MAX_RESTARTS the subscription fails. */
  #crashes = 0;

  /** Creates, connects and runs a kafkajs consumer: one member of the group. */
  async #startConsumer(): Promise<void> {
    if (this.#closing) return;
    const t = this.#o.tuning;
    const syncDelayMs = t.leaderSyncDelayMs ?? 0;
    const consumer = this.#o.kafka.consumer({
      ...(syncDelayMs > 0 ? { partitionAssigners: [delayedAssigner(kafkajs.PartitionAssigners.roundRobin, syncDelayMs, this.#clock)] } : {}),
      groupId: this.group,
      sessionTimeout: t.sessionTimeoutMs ?? 30_000,
      rebalanceTimeout: t.rebalanceTimeoutMs ?? 60_000,
      heartbeatInterval: t.heartbeatIntervalMs ?? 3_000,
      maxWaitTimeInMs: t.maxWaitTimeMs ?? 500,
      maxBytesPerPartition: t.maxBytesPerPartition ?? 1024 * 1024,
      allowAutoTopicCreation: false,
      retry: { initialRetryTime: 100, retries: 5, maxRetryTime: 2000, restartOnFailure: async () => !this.#closing },
    });
    this.#consumer = consumer;
    this.#committer = undefined;
    const { GROUP_JOIN, REBALANCING, CRASH, FETCH_START, FETCH } = consumer.events;
    consumer.on(GROUP_JOIN, (e) => {
      if (this.#consumer === consumer) this.#onJoin(e.payload.memberId, e.payload.memberAssignment[this.topic] ?? []);
    });
    consumer.on(REBALANCING, () => {
      if (this.#consumer === consumer) this.#onRebalancing();
    });
    // A fetch that started after the join has fixed the start position of every assigned partition (kafkajs resolves
    // the offsets of the whole assignment before it sends the Fetch request, and emits FETCH when that returns).
    consumer.on(FETCH_START, (e) => {
      if (this.#consumer === consumer) this.#held?.fetching.add(e.payload.nodeId);
    });
    consumer.on(FETCH, (e) => {
      if (this.#consumer !== consumer || !this.#held?.fetching.has(e.payload.nodeId)) return;
      const { partitions } = this.#held;
      this.#held = undefined;
      this.#show(partitions);
    });
    consumer.on(CRASH, (e) => {
      if (this.#consumer === consumer) this.#onCrash(e.payload.error, e.payload.restart);
    });
    await consumer.connect();
    if (this.#closing) return;
    await consumer.subscribe({ topics: [this.topic], fromBeginning: this.#o.startFrom !== 'latest' });
    if (this.#closing) return;
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: Math.max(1, Math.min(this.#partitionCount, t.partitionsConsumedConcurrently ?? 8)),
      eachBatch: (payload) => this.#onBatch(payload),
    });
  }

  async #close(timeoutMs: number): Promise<void> {
    this.#closing = true;
    this.#wakeIterator();
    for (const p of this.#parts.keys()) this.#dropReady(p);
    const deadline = this.#clock.monotonic() + timeoutMs;
    while ([...this.#parts.values()].some((s) => s.pending > 0) && this.#clock.monotonic() < deadline) {
      await new Promise<void>((resolve) => {
        const t = this.#clock.setTimer(resolve, Math.min(20, Math.max(1, deadline - this.#clock.monotonic())));
        for (const s of this.#parts.values()) {
          s.settledWaiters.push(() => {
            t.cancel();
            resolve();
          });
        }
      });
    }
    this.#held = undefined;
    this.#commitTimer?.cancel();
    this.#commitTimer = undefined;
    await this.#committing;
    await this.#commitNow('close');
    for (const s of this.#parts.values()) s.controller.abort(new HeraldError('HERALD_ERR_CLOSED', 'subscription closed'));
    this.#parts.clear();
    this.#inFlight = 0;
    // Let a start still under way get as far as it gets, then leave the group.
    await Promise.race([this.#started, this.#clock.sleep(100)]);
    try {
      await this.#consumer?.disconnect();
    } catch (e) {
      this.#o.onError?.(e);
    }
    this.#done = true;
    this.#resolveClosed();
  }

  // ── group events ─────────────────────────────────────────────────────────

  #onJoin(kafkaMemberId: string, assigned: readonly number[]): void {
    if (this.#closing) return;
    this.#crashes = 0;
    const lost = this.#kafkaMemberId !== undefined && this.#kafkaMemberId !== kafkaMemberId;
    this.#kafkaMemberId = kafkaMemberId;
    const now = new Set(assigned);
    const revoked = [...this.#parts.keys()].filter((p) => lost || !now.has(p)).sort((a, b) => a - b);
    for (const p of revoked) this.#revoke(p, lost ? 'expelled from the group' : 'rebalanced to another member');
    const added = [...now].filter((p) => !this.#parts.has(p)).sort((a, b) => a - b);
    // 'latest': new partitions are shown once the next fetch has fixed where they start (see #held).
    this.#held = this.#o.startFrom === 'latest' && added.length > 0 ? { partitions: added, fetching: new Set() } : undefined;
    if (this.#held) {
      if (revoked.length > 0) this.#notify({ assigned: [], revoked, lost });
    } else this.#show(added, revoked, lost);
    // Acks of kept partitions that could not be committed during the rebalance go out now, in the new generation.
    if ([...this.#parts.values()].some((s) => s.tracker?.dirty)) this.#scheduleCommit();
    // Partitions this subscription paused stay paused in kafkajs across a rebalance; resume the ones with room.
    this.#resumeWithRoom();
  }

  /** Starts owning `added` (and tells onPartitions, with the partitions just revoked). */
  #show(added: readonly number[], revoked: readonly number[] = [], lost = false): void {
    if (this.#closing) return;
    for (const p of added) {
      const controller = new AbortController();
      // The router's queued and retrying deliveries of this partition listen on it (bounded by maxInFlight).
      setMaxListeners(0, controller.signal);
      this.#parts.set(p, { partition: p, controller, tracker: undefined, pending: 0, paused: false, settledWaiters: [] });
    }
    if (added.length > 0 || revoked.length > 0) this.#notify({ assigned: [...added], revoked: [...revoked], lost });
  }

  #onRebalancing(): void {
    this.#held = undefined; // the next join decides again
    // Commit what is acked before the partitions can move (best effort: refused by the librdkafka mock).
    if (this.#closing || ![...this.#parts.values()].some((s) => s.tracker?.dirty)) return;
    this.#commitTimer?.cancel();
    this.#commitTimer = undefined;
    void this.#commitNow('rebalance');
  }

  #onCrash(error: Error, restart: boolean): void {
    if (this.#closing) return;
    this.#o.onError?.(error);
    const revoked = [...this.#parts.keys()];
    for (const p of revoked) this.#revoke(p, `consumer crashed: ${error.message}`);
    this.#kafkaMemberId = undefined;
    this.#committer = undefined;
    this.#held = undefined;
    if (revoked.length > 0) this.#notify({ assigned: [], revoked, lost: true });
    if (restart) return; // kafkajs restarts it (retriable errors)
    // kafkajs gives up on non-retriable errors (for one, the librdkafka mock answers a follower's SyncGroup that
    // arrives after the leader's with INVALID_REQUEST). Rejoin with a fresh consumer, a few times in a row at most.
    if (++this.#crashes > MAX_RESTARTS) {
      this.fail(new HeraldError('HERALD_ERR_STORAGE', `kafka consumer of group "${this.group}" on "${this.topic}" crashed ${this.#crashes} times without joining: ${error.message}`, { cause: error }));
      return;
    }
    const old = this.#consumer;
    this.#consumer = undefined;
    this.#clock.setTimer(() => {
      void (async () => {
        await old?.disconnect().catch(() => {});
        await this.#startConsumer();
      })().catch((e: unknown) => this.fail(e));
    }, Math.min(5000, 100 * 2 ** this.#crashes));
  }

  #revoke(partition: number, why: string): void {
    const s = this.#parts.get(partition);
    if (!s) return;
    s.controller.abort(new HeraldError('HERALD_ERR_LEASE_LOST', `partition ${partition} of "${this.topic}" revoked from ${this.memberId}: ${why}`));
    this.#parts.delete(partition);
    // kafkajs keeps a partition's pause across rebalances: were it assigned here again, it would never be fetched.
    if (s.paused) this.#resumeInKafka([partition]);
    this.#dropReady(partition);
    this.#inFlight -= s.pending;
    s.pending = 0;
    for (const w of s.settledWaiters.splice(0)) w();
    this.#resumeWithRoom();
  }

  // ── fetching ─────────────────────────────────────────────────────────────

  async #onBatch(payload: EachBatchPayload): Promise<void> {
    const { batch, resolveOffset, pause, isRunning, isStale } = payload;
    this.#committer ??= payload.commitOffsetsIfNecessary;
    if (batch.topic !== this.topic || this.#closing) return;
    const s = this.#parts.get(batch.partition);
    if (!s) return;
    // kafkajs' Batch keeps the offset it fetched from (not in its typings).
    s.tracker ??= new OffsetTracker(Number((batch as unknown as { fetchedOffset: string }).fetchedOffset) - 1);
    const tracker = s.tracker;
    for (const m of batch.messages) {
      if (this.#closing || !isRunning() || isStale() || this.#parts.get(batch.partition) !== s) return;
      const offset = Number(m.offset);
      if (offset <= tracker.lastTracked) {
        // Delivered before this rebalance (fetching restarts at the committed offset).
        resolveOffset(m.offset);
        continue;
      }
      if (!this.#hasRoom(s)) {
        s.paused = true;
        pause();
        // Room may have been made while pausing.
        queueMicrotask(() => this.#resumeWithRoom());
        return;
      }
      tracker.track(offset);
      resolveOffset(m.offset);
      this.#enqueue(this.#makeDelivery(s, m, offset, 1));
    }
  }

  #hasRoom(s: PartitionState): boolean {
    if (this.#inFlight >= this.#maxInFlight) return false;
    const t = s.tracker;
    return !t || t.lastTracked - t.committed < this.#maxUncommitted;
  }

  #resumeWithRoom(): void {
    const consumer = this.#consumer;
    if (!consumer || this.#closing) return;
    const resume: number[] = [];
    for (const s of this.#parts.values()) {
      if (s.paused && this.#hasRoom(s)) {
        s.paused = false;
        resume.push(s.partition);
      }
    }
    if (resume.length > 0) this.#resumeInKafka(resume);
  }

  #resumeInKafka(partitions: number[]): void {
    try {
      this.#consumer?.resume([{ topic: this.topic, partitions }]);
    } catch {
      // The consumer is not running (it crashed or is stopping): a new one starts with nothing paused.
    }
  }

  #makeDelivery(s: PartitionState, m: KafkaMessage, offset: number, attempt: number, prior?: Delivery): Delivery {
    let envelope: CloudEvent | null = prior ? prior.envelope : null;
    let decodeError: HeraldError | undefined = prior?.decodeError;
    let raw: string | undefined;
    if (!prior) {
      try {
        envelope = decodeRecord(m.headers, m.value);
      } catch (e) {
        decodeError = new HeraldError('HERALD_ERR_CORRUPT_RECORD', `record ${offset} of ${this.topic}[${s.partition}] is unreadable: ${isHeraldError(e) || e instanceof Error ? e.message : String(e)}`, {
          cause: e,
          details: { topic: this.topic, partition: s.partition, offset },
        });
        raw = JSON.stringify({ topic: this.topic, partition: s.partition, offset, key: m.key?.toString('base64') ?? null, headers: headersForRaw(m.headers), value_base64: m.value?.toString('base64') ?? null });
      }
    } else raw = prior.raw;
    const key = m.key === null || m.key === undefined ? undefined : m.key.toString('utf8');
    let settled = false;
    const sub = this;
    s.pending++;
    this.#inFlight++;
    const settle = (): boolean => {
      if (settled) return false;
      settled = true;
      if (sub.#parts.get(s.partition) !== s) return false; // revoked, lost or closed: ignore
      s.pending--;
      sub.#inFlight--;
      if (s.pending === 0 && s.settledWaiters.length > 0) for (const w of s.settledWaiters.splice(0)) w();
      return true;
    };
    const ack = (): void => {
      if (!settle()) return;
      if (s.tracker?.ack(offset)) sub.#scheduleCommit();
      sub.#resumeWithRoom();
    };
    const delivery: Delivery = {
      envelope,
      ...(decodeError ? { decodeError } : {}),
      get raw(): string {
        raw ??= encodeEnvelope(envelope!);
        return raw;
      },
      topic: this.topic,
      partition: s.partition,
      key,
      position: String(offset),
      attempt,
      revoked: s.controller.signal,
      ack,
      reject: ack,
      nack(options?: { delayMs?: number }): void {
        if (!settle()) return;
        sub.#resumeWithRoom();
        if (sub.#closing) return; // the next owner will read it
        const delayMs = Math.max(0, options?.delayMs ?? 0);
        const redeliver = (): void => {
          if (sub.#parts.get(s.partition) !== s || sub.#closing) return;
          sub.#enqueue(sub.#makeDelivery(s, m, offset, attempt + 1, delivery));
        };
        if (delayMs === 0) queueMicrotask(redeliver);
        else sub.#clock.setTimer(redeliver, delayMs);
      },
      extend(): void {},
    };
    return delivery;
  }

  // ── the ready queue ──────────────────────────────────────────────────────

  #enqueue(d: Delivery): void {
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w({ done: false, value: d });
    } else this.#ready.push(d);
  }

  #takeReady(): Delivery {
    const d = this.#ready[this.#readyHead++]!;
    if (this.#readyHead > 1024 && this.#readyHead * 2 > this.#ready.length) {
      this.#ready.splice(0, this.#readyHead);
      this.#readyHead = 0;
    }
    return d;
  }

  /** Forgets not-yet-iterated deliveries of `partition` (they stay uncommitted). */
  #dropReady(partition: number): void {
    const keep: Delivery[] = [];
    for (let i = this.#readyHead; i < this.#ready.length; i++) {
      const d = this.#ready[i]!;
      if (d.partition === partition) d.nack();
      else keep.push(d);
    }
    this.#ready.length = 0;
    this.#readyHead = 0;
    this.#ready.push(...keep);
  }

  #wakeIterator(): void {
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w({ done: true, value: undefined });
    }
  }

  // ── commits ──────────────────────────────────────────────────────────────

  #scheduleCommit(): void {
    if (this.#commitTimer || this.#closing) return;
    this.#commitTimer = this.#clock.setTimer(() => {
      this.#commitTimer = undefined;
      if (this.#committing) {
        void this.#committing.then(() => this.#scheduleCommit());
        return;
      }
      void this.#commitNow('interval');
    }, this.#commitIntervalMs);
  }

  /** Commits the watermark of every owned partition that moved. Failures are reported and retried on the next ack or at close. */
  #commitNow(why: string): Promise<void> {
    const run = async (): Promise<void> => {
      const consumer = this.#consumer;
      if (!consumer) return;
      const dirty = [...this.#parts.values()].filter((s) => s.tracker?.dirty);
      if (dirty.length === 0) return;
      const marks = dirty.map((s) => ({ s, offset: s.tracker!.watermark }));
      const partitions = marks.map(({ s, offset }) => ({ partition: s.partition, offset: String(offset + 1) }));
      try {
        // One attempt (no kafkajs retrier): a commit refused during a rebalance must not be replayed later for a
        // partition that has moved meanwhile; a failed commit stays dirty and is retried on the next ack, after the
        // rebalance, or at close.
        if (this.#committer) await this.#committer({ topics: [{ topic: this.topic, partitions }] });
        else await consumer.commitOffsets(partitions.map((p) => ({ topic: this.topic, ...p })));
        for (const { s, offset } of marks) s.tracker!.markCommitted(offset);
        this.#resumeWithRoom();
      } catch (e) {
        this.#o.onError?.(new HeraldError('HERALD_ERR_STORAGE', `offset commit (${why}) of "${this.topic}" for group "${this.group}" failed: ${(e as Error).message}`, { cause: e }));
      }
    };
    const p = (this.#committing ?? Promise.resolve()).then(run);
    this.#committing = p.finally(() => {
      if (this.#committing === q) this.#committing = undefined;
    });
    const q = this.#committing;
    return p;
  }

  #notify(change: PartitionChange): void {
    try {
      this.#o.onPartitions?.(change);
    } catch (e) {
      this.#o.onError?.(e);
    }
  }
}

/** `inner` (same protocol name, so members without the delay agree on it), whose leader waits `delayMs` before assigning a group of two or more. */
function delayedAssigner(inner: PartitionAssigner, delayMs: number, clock: Clock): PartitionAssigner {
  return (config) => {
    const a = inner(config);
    return {
      name: a.name,
      version: a.version,
      protocol: (subscription) => a.protocol(subscription),
      assign: async (group) => {
        if (group.members.length > 1) await clock.sleep(delayMs);
        return a.assign(group);
      },
    };
  };
}

function headersForRaw(h: KafkaMessage['headers']): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h ?? {})) {
    if (v === undefined) continue;
    const one = Array.isArray(v) ? v[v.length - 1] : v;
    if (one !== undefined) out[k] = typeof one === 'string' ? one : one.toString('utf8');
  }
  return out;
}

