/**
 * The reading half of the RabbitMQ transport: one member of a consumer group on one topic.
 *
 * Each (group, partition) is a durable quorum queue with `x-single-active-consumer`. A member
 * consumes the partition queues its view of the group gives it (see `membership.ts`), each on a
 * channel of its own, so that letting go of a partition is a channel close: RabbitMQ then
 * returns the channel's unacknowledged messages to the head of the queue, in their original
 * order, in the same step that activates the next waiting consumer. (`basic.cancel` would not
 * do: it activates the next consumer at once, before the cancelled one's unacked messages come
 * back, and per-key order breaks.)
 *
 * Delivery semantics (the same verbs and failure rules as the log transports):
 * - `ack()` and `reject()` send basic.ack (reject runs after the router stored the dead letter;
 *   no broker dead-letter exchange is involved). Acks go out once per event-loop turn, a
 *   contiguous run as one `multiple` ack; a close or revoke sends them before the channel closes. Settling twice, or after the partition was
 *   revoked or the subscription closed, is a no-op: the message comes back to the next owner.
 * - `nack()` (no delay) hands the message out again from this member, ahead of the messages
 *   not handed out yet, with `attempt` + 1. It stays unacked at the broker meanwhile, so it
 *   keeps its place in the queue: if the partition moves or the process dies, the broker
 *   redelivers it in order. (basic.nack with requeue would not do: RabbitMQ 3.10 quorum queues
 *   append a requeued message at the *back*, and a router that drops its queued deliveries on
 *   close would scramble per-key order for the next owner.) Repeated nacks of one message back
 *   off, 10 ms doubling to 1 s, so a consumer that drops deliveries while closing cannot spin.
 * - `nack({ delayMs })` (delayMs > 0) republishes a copy through the namespace's delay exchange
 *   into a quorum "delay bucket" queue whose message TTL is the smallest bucket ≥ delayMs; on
 *   expiry RabbitMQ dead-letters it (at-least-once) back into this partition queue, at the back,
 *   carrying `x-herald-attempts`; the original is acked once the copy is confirmed. The copy
 *   arrives at or after the delay (bucket rounding: up to 1.5×; the largest bucket caps it) and
 *   may reach another member. It leaves its place in the key's order: this is for
 *   `ordering: 'none'` handlers (the router's only delayed nack of an ordered message is its
 *   retry after a failed dead-letter write). If the copy cannot be published, the message is
 *   kept here (unacked, in its place) and handed out again after the delay instead.
 * - `nack` while the partition is being revoked or the subscription closes is a local no-op:
 *   the channel close returns the message in order.
 * - `extend()` is a no-op: AMQP 0-9-1 has no way to push RabbitMQ's `consumer_timeout`
 *   (30 min by default), past which the broker closes the channel and the partition is lost.
 * - `attempt` = 1 + attempts before a delayed copy + the queue's `x-delivery-count` (times the
 *   broker returned it: a channel closed with it unacked), + 1 per local `nack()` redelivery.
 * - At most `maxInFlight` deliveries are handed out unsettled; each partition channel has
 *   basic.qos prefetch min(maxInFlight, maxUncommittedPerPartition), so at most that many
 *   messages per owned partition are held in memory.
 * - `revoked` aborts when this member lets go of the partition (a peer joined: clean; a lost
 *   channel or connection: `lost`). The broker redelivers unsettled messages to the next owner.
 */
import { setMaxListeners } from 'node:events';
import {
  type Clock,
  type CloudEvent,
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_MAX_UNCOMMITTED_PER_PARTITION,
  type Delivery,
  encodeEnvelope,
  HeraldError,
  isHeraldError,
  type PartitionChange,
  type SubscribeOptions,
  type Subscription,
  type TopicInfo,
} from '@herald/core';
import type { AsyncMessage, Channel, Connection } from 'rabbitmq-client';
import { decodeMessage } from './binding.ts';
import { Membership, ownedBy } from './membership.ts';
import type { Names } from './names.ts';
import { positiveInt } from '@herald/core/internal';

/** What a subscription needs from its transport. */
export interface SubscriptionContext {
  readonly connection: Connection;
  readonly names: Names;
  readonly clock: Clock;
  readonly heartbeatMs: number;
  readonly memberTimeoutMs: number;
  readonly joinSettleMs: number;
  readonly revokeTimeoutMs: number;
  ensureTopic(topic: string): Promise<TopicInfo>;
  /** Declares (once) the group's partition queues and their bindings. */
  ensureGroup(topic: string, group: string, partitions: number): Promise<void>;
  /** Forgets that the group's queues exist (a consume found one missing). */
  forgetGroup(topic: string, group: string): void;
  /** Publishes a delayed copy of `msg` back into `queue` (confirmed). */
  publishDelayed(queue: string, msg: AsyncMessage, attemptsSoFar: number, delayMs: number): Promise<void>;
  readonly onError: (e: unknown) => void;
}

type Phase = 'starting' | 'active' | 'revoking' | 'gone';

interface PartState {
  readonly partition: number;
  readonly queue: string;
  phase: Phase;
  ch: Channel | undefined;
  /** True once `assigned` was reported (so `revoked` is reported too). */
  announced: boolean;
  /** The close was ours and clean (not a lost channel). */
  clean: boolean;
  readonly controller: AbortController;
  buffer: Buffered[];
  bufferHead: number;
  /** Deliveries handed out (queued for the iterator or with the app) and not settled. */
  pending: number;
  readonly delaying: Set<Promise<void>>;
  /** Delivery tags received on the channel, in order, from `outstandingHead` on not yet acked. */
  outstanding: number[];
  outstandingHead: number;
  /** Tags settled for ack and not sent yet; tags acked one by one (out of order). */
  readonly toAck: Set<number>;
  readonly sentAlone: Set<number>;
  ackFlushScheduled: boolean;
  settledWaiters: Array<() => void>;
  readonly gone: Promise<void>;
  markGone: () => void;
}

/** A message received and not yet handed out; `attempt` and `nacks` are set on a local redelivery. */
interface Buffered {
  readonly msg: AsyncMessage;
  readonly attempt?: number;
  readonly nacks?: number;
}

let memberSeq = 0;
const RETRY_MS = 300;

export class RabbitMqSubscription implements Subscription {
  readonly topic: string;
  readonly group: string;
  readonly memberId: string;
  readonly closed: Promise<void>;

  readonly #ctx: SubscriptionContext;
  readonly #o: SubscribeOptions;
  readonly #maxInFlight: number;
  readonly #prefetch: number;
  readonly #parts = new Map<number, PartState>();
  #partitions = 0;
  #membership: Membership | undefined;
  #settled = false;
  readonly #ready: Delivery[] = [];
  #readyHead = 0;
  #waiter: ((r: IteratorResult<Delivery>) => void) | undefined;
  #inFlight = 0;
  #rr = 0;
  #closing = false;
  #done = false;
  #closePromise: Promise<void> | undefined;
  #resolveClosed!: () => void;
  #rejectClosed!: (e: unknown) => void;
  #retryTimer: { cancel(): void } | undefined;
  #dispatchScheduled = false;
  readonly #onConnection = (): void => this.#rejoin();

  constructor(ctx: SubscriptionContext, topic: string, options: SubscribeOptions) {
    this.#ctx = ctx;
    this.#o = options;
    this.topic = topic;
    this.group = options.group;
    this.memberId = options.memberId ?? `m-${process.pid}-${Date.now().toString(36)}-${(memberSeq++).toString(36)}`;
    this.#maxInFlight = positiveInt('maxInFlight', options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT);
    const maxUncommitted = positiveInt('maxUncommittedPerPartition', options.maxUncommittedPerPartition ?? DEFAULT_MAX_UNCOMMITTED_PER_PARTITION);
    // basic.qos prefetch-count is a 16-bit field.
    this.#prefetch = Math.min(this.#maxInFlight, maxUncommitted, 65_535);
    this.closed = new Promise<void>((resolve, reject) => {
      this.#resolveClosed = resolve;
      this.#rejectClosed = reject;
    });
    this.closed.catch(() => {});
    ctx.connection.on('connection', this.#onConnection);
    void this.#start();
  }

  assignment(): readonly number[] {
    const out: number[] = [];
    for (const s of this.#parts.values()) if (s.phase === 'active') out.push(s.partition);
    return out.sort((a, b) => a - b);
  }

  /** Deliveries received per owned partition and not yet acked at the broker (the transport's `lag()` counts them). */
  unackedByPartition(): Map<number, number> {
    const out = new Map<number, number>();
    for (const s of this.#parts.values()) if (s.phase !== 'gone') out.set(s.partition, s.outstanding.length - s.outstandingHead - s.sentAlone.size);
    return out;
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

  /**
   * Draining close, idempotent: stops handing out deliveries, waits up to `timeoutMs`
   * (default 10 000) for unsettled ones, then closes the partition channels — RabbitMQ returns
   * whatever is still unacked to the queues, in order, for the next owner — and says bye to the
   * group. Works while a handler is blocked (its delivery is then abandoned unacked).
   */
  close(options: { timeoutMs?: number } = {}): Promise<void> {
    this.#closePromise ??= this.#close(options.timeoutMs ?? 10_000);
    return this.#closePromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Ends the subscription with a fatal error (closed rejects with it). */
  fail(error: unknown): void {
    this.#ctx.onError(error);
    void this.close({ timeoutMs: 0 }).finally(() => this.#rejectClosed(error));
  }

  // ── joining ──────────────────────────────────────────────────────────────

  async #start(): Promise<void> {
    try {
      const info = await this.#ctx.ensureTopic(this.topic);
      if (this.#closing) return;
      this.#partitions = info.partitions;
      await this.#ctx.ensureGroup(this.topic, this.group, info.partitions);
      if (this.#closing) return;
      this.#membership ??= new Membership({
        connection: this.#ctx.connection,
        exchange: this.#ctx.names.members(this.topic, this.group),
        memberId: this.memberId,
        heartbeatMs: this.#ctx.heartbeatMs,
        timeoutMs: this.#ctx.memberTimeoutMs,
        clock: this.#ctx.clock,
        onChange: () => this.#reconcile(),
        onError: (e) => this.#ctx.onError(e),
      });
      await this.#membership.start();
      if (this.#closing) return;
      // Hear from the members already there before claiming anything.
      await this.#ctx.clock.sleep(this.#ctx.joinSettleMs);
      this.#settled = true;
      this.#reconcile();
    } catch (e) {
      if (this.#closing) return;
      if (isHeraldError(e) && !e.retryable) {
        this.fail(e);
        return;
      }
      this.#ctx.onError(e);
      this.#retryLater(() => void this.#start());
    }
  }

  /** After a reconnect: announce again and take the partitions back. */
  #rejoin(): void {
    if (this.#closing || !this.#membership) return;
    void this.#membership.start().then(
      () => this.#reconcile(),
      (e) => {
        this.#ctx.onError(e);
        this.#retryLater(() => this.#rejoin());
      },
    );
  }

  #retryLater(fn: () => void): void {
    if (this.#closing) return;
    this.#retryTimer?.cancel();
    this.#retryTimer = this.#ctx.clock.setTimer(
      () => {
        this.#retryTimer = undefined;
        if (!this.#closing) fn();
      },
      RETRY_MS,
      { unref: true },
    );
  }

  /** Brings the partitions this member consumes in line with its view of the group. Idempotent. */
  #reconcile(): void {
    if (!this.#settled || this.#closing || !this.#membership) return;
    if (!this.#membership.joined) {
      // The announcement channel is gone (a lost connection is handled by the 'connection' event).
      if (this.#ctx.connection.ready) this.#retryLater(() => this.#rejoin());
      return;
    }
    const target = ownedBy(this.#membership.members(), this.memberId, this.#partitions);
    for (let p = 0; p < this.#partitions; p++) {
      const s = this.#parts.get(p);
      if (target.has(p)) {
        if (!s) void this.#assign(p);
      } else if (s && (s.phase === 'starting' || s.phase === 'active')) {
        void this.#revoke(s);
      }
    }
  }

  // ── partitions ───────────────────────────────────────────────────────────

  async #assign(partition: number): Promise<void> {
    let markGone!: () => void;
    const gone = new Promise<void>((resolve) => {
      markGone = resolve;
    });
    const controller = new AbortController();
    // The router's queued and retrying deliveries of this partition listen on it (bounded by maxInFlight).
    setMaxListeners(0, controller.signal);
    const s: PartState = {
      partition,
      queue: this.#ctx.names.groupQueue(this.topic, this.group, partition),
      phase: 'starting',
      ch: undefined,
      announced: false,
      clean: false,
      controller,
      buffer: [],
      bufferHead: 0,
      pending: 0,
      delaying: new Set(),
      outstanding: [],
      outstandingHead: 0,
      toAck: new Set(),
      sentAlone: new Set(),
      ackFlushScheduled: false,
      settledWaiters: [],
      gone,
      markGone,
    };
    this.#parts.set(partition, s);
    let ch: Channel | undefined;
    try {
      ch = await this.#ctx.connection.acquire({ emitErrorsFromChannel: true });
      s.ch = ch;
      const channel = ch;
      channel.on('error', (e) => this.#ctx.onError(e));
      channel.on('close', () => this.#onChannelClosed(s, channel));
      // The queue was deleted, or the broker cancelled the consumer: the partition is lost.
      channel.on('basic.cancel', () => void channel.close());
      if (s.phase !== 'starting') {
        s.clean = true;
        await channel.close();
        return;
      }
      await channel.basicQos({ prefetchCount: this.#prefetch });
      await channel.basicConsume({ queue: s.queue, noAck: false }, (msg) => this.#onMessage(s, msg));
      if (s.phase !== 'starting') {
        s.clean = true;
        await channel.close();
        return;
      }
      s.phase = 'active';
      s.announced = true;
      this.#notify({ assigned: [partition], revoked: [], lost: false });
      this.#dispatch();
    } catch (e) {
      const notFound = (e as { code?: unknown })?.code === 'NOT_FOUND';
      if (notFound) this.#ctx.forgetGroup(this.topic, this.group);
      if (!this.#closing) this.#ctx.onError(e);
      if (s.phase !== 'gone') {
        s.clean = true;
        if (ch?.active) await ch.close().catch(() => {});
        this.#finalize(s, true);
      }
      if (!this.#closing) this.#retryLater(notFound ? () => void this.#redeclareAndReconcile() : () => this.#reconcile());
    }
  }

  async #redeclareAndReconcile(): Promise<void> {
    try {
      await this.#ctx.ensureGroup(this.topic, this.group, this.#partitions);
      this.#reconcile();
    } catch (e) {
      this.#ctx.onError(e);
      this.#retryLater(() => void this.#redeclareAndReconcile());
    }
  }

  /** Clean revoke: stop handing out, wait for unsettled deliveries (bounded), close the channel. */
  async #revoke(s: PartState): Promise<void> {
    if (s.phase === 'starting') {
      s.phase = 'revoking'; // #assign closes the channel when its current step returns
      return;
    }
    if (s.phase !== 'active') return;
    s.phase = 'revoking';
    s.controller.abort(new HeraldError('HERALD_ERR_LEASE_LOST', `partition ${s.partition} of "${this.topic}" revoked from ${this.memberId}`));
    this.#dropBuffered(s);
    await this.#waitSettled([s], this.#ctx.clock.monotonic() + this.#ctx.revokeTimeoutMs);
    await Promise.allSettled([...s.delaying]);
    s.clean = true;
    this.#flushAcks(s);
    if (s.ch?.active) await s.ch.close().catch(() => {});
    else this.#finalize(s, false);
  }

  #onChannelClosed(s: PartState, ch: Channel): void {
    if (s.ch !== ch || s.phase === 'gone') return;
    const lost = !s.clean;
    this.#finalize(s, lost);
    if (lost && !this.#closing) {
      // A channel error or a server-side cancel: try again (a lost connection waits for 'connection').
      if (this.#ctx.connection.ready) this.#retryLater(() => this.#reconcile());
    }
  }

  /** Forgets a partition: its unsettled deliveries become no-ops, `revoked` is reported if `assigned` was. */
  #finalize(s: PartState, lost: boolean): void {
    if (s.phase === 'gone') return;
    s.phase = 'gone';
    if (!s.controller.signal.aborted) {
      s.controller.abort(
        this.#closing
          ? new HeraldError('HERALD_ERR_CLOSED', 'subscription closed')
          : new HeraldError('HERALD_ERR_LEASE_LOST', `partition ${s.partition} of "${this.topic}" ${lost ? 'lost' : 'revoked'} by ${this.memberId}`),
      );
    }
    this.#removeReady(s.partition);
    s.buffer = [];
    s.bufferHead = 0;
    this.#inFlight -= s.pending;
    s.pending = 0;
    for (const w of s.settledWaiters.splice(0)) w();
    if (this.#parts.get(s.partition) === s) this.#parts.delete(s.partition);
    if (s.announced) this.#notify({ assigned: [], revoked: [s.partition], lost });
    s.markGone();
    this.#scheduleDispatch();
    if (!this.#closing && !lost) this.#reconcile();
  }

  // ── deliveries ───────────────────────────────────────────────────────────

  #onMessage(s: PartState, msg: AsyncMessage): void {
    // Every tag is recorded, even one left unacked (revoking): a multiple ack must never cover it.
    s.outstanding.push(msg.deliveryTag);
    // While revoking, messages stay unacked here: the channel close returns them in order.
    if (s.phase !== 'active' && s.phase !== 'starting') return;
    if (s.phase === 'active' && !this.#closing && this.#inFlight < this.#maxInFlight && s.bufferHead >= s.buffer.length) {
      this.#enqueue(this.#makeDelivery(s, { msg })); // nothing waits before it: hand it out now
      return;
    }
    s.buffer.push({ msg });
    this.#dispatch();
  }

  #scheduleDispatch(): void {
    if (this.#dispatchScheduled || this.#closing) return;
    this.#dispatchScheduled = true;
    queueMicrotask(() => {
      this.#dispatchScheduled = false;
      this.#dispatch();
    });
  }

  /** Hands buffered messages out, round-robin across partitions, up to maxInFlight. */
  #dispatch(): void {
    if (this.#closing) return;
    const parts = [...this.#parts.values()];
    const n = parts.length;
    let idle = 0;
    while (this.#inFlight < this.#maxInFlight && idle < n) {
      const s = parts[this.#rr++ % n]!;
      if (s.phase !== 'active' || s.bufferHead >= s.buffer.length) {
        idle++;
        continue;
      }
      idle = 0;
      const entry = s.buffer[s.bufferHead++]!;
      if (s.bufferHead > 256 && s.bufferHead * 2 > s.buffer.length) {
        s.buffer.splice(0, s.bufferHead);
        s.bufferHead = 0;
      }
      this.#enqueue(this.#makeDelivery(s, entry));
    }
  }

  #makeDelivery(s: PartState, entry: Buffered): Delivery {
    const msg = entry.msg;
    const decoded = decodeMessage(msg);
    const envelope: CloudEvent | null = decoded.envelope;
    const attempt = entry.attempt ?? 1 + decoded.priorAttempts + decoded.deliveryCount;
    const ch = s.ch!;
    const tag = msg.deliveryTag;
    const sub = this;
    let settled = false;
    let raw: string | undefined;
    s.pending++;
    this.#inFlight++;
    const settle = (): boolean => {
      if (settled) return false;
      settled = true;
      if (s.phase === 'gone') return false;
      s.pending--;
      sub.#inFlight--;
      if (s.pending === 0 && s.settledWaiters.length > 0) for (const w of s.settledWaiters.splice(0)) w();
      sub.#scheduleDispatch();
      return true;
    };
    const ack = (): void => {
      if (!settle() || !ch.active) return;
      sub.#ack(s, ch, tag);
    };
    /** Hands the message out again from here after `wait` ms, unless the partition moved on. */
    const redeliverHere = (nacks: number, wait: number): void => {
      const again = (): void => {
        if (s.phase !== 'active' || s.ch !== ch || sub.#closing) return;
        s.buffer.splice(s.bufferHead, 0, { msg, attempt: attempt + 1, nacks });
        sub.#dispatch();
      };
      if (wait <= 0) setImmediate(again);
      else sub.#ctx.clock.setTimer(again, wait, { unref: true });
    };
    return {
      envelope,
      ...(decoded.decodeError ? { decodeError: decoded.decodeError } : {}),
      get raw(): string {
        raw ??= envelope ? encodeEnvelope(envelope) : JSON.stringify(decoded.structured);
        return raw;
      },
      topic: this.topic,
      partition: s.partition,
      key: decoded.key,
      position: typeof msg.messageId === 'string' && msg.messageId !== '' ? msg.messageId : `tag-${tag}`,
      attempt,
      revoked: s.controller.signal,
      ack,
      reject: ack,
      nack(options?: { delayMs?: number }): void {
        if (!settle()) return;
        if (s.phase !== 'active' || sub.#closing || !ch.active) return; // the channel close returns it, in order
        const delayMs = Math.max(0, options?.delayMs ?? 0);
        if (!(delayMs > 0)) {
          // Redelivered here, ahead of what was not handed out yet; it keeps its place in the
          // queue (unacked), so if this member goes away the broker redelivers it in order.
          // Repeated nacks of one message back off (10 ms doubling to 1 s): a consumer that
          // drops deliveries while it closes must not spin.
          const nacks = (entry.nacks ?? 0) + 1;
          redeliverHere(nacks, nacks === 1 ? 0 : Math.min(1000, 10 * 2 ** (nacks - 2)));
          return;
        }
        const p = sub.#redeliverLater(s, ch, msg, attempt, delayMs, () => redeliverHere(1, delayMs));
        s.delaying.add(p);
        void p.finally(() => s.delaying.delete(p));
      },
      extend(): void {},
    };
  }

  async #redeliverLater(s: PartState, ch: Channel, msg: AsyncMessage, attempt: number, delayMs: number, fallback: () => void): Promise<void> {
    try {
      await this.#ctx.publishDelayed(s.queue, msg, attempt, delayMs);
      if (ch.active && s.ch === ch) this.#ack(s, ch, msg.deliveryTag);
    } catch (e) {
      // Not republished: keep it here (unacked) and hand it out again after the delay.
      this.#ctx.onError(e);
      fallback();
    }
  }

  /** Queues an ack; acks are flushed once per event-loop turn (see #flushAcks). */
  #ack(s: PartState, ch: Channel, tag: number): void {
    if (s.ch !== ch) return;
    s.toAck.add(tag);
    if (s.ackFlushScheduled) return;
    s.ackFlushScheduled = true;
    setImmediate(() => {
      s.ackFlushScheduled = false;
      this.#flushAcks(s);
    });
  }

  /**
   * Sends the queued acks of a partition channel: the run of acked tags at the head of the
   * outstanding ones as one basic.ack with `multiple` (ending on a tag not acked before), the
   * rest one by one (a message held by a slow or retrying handler must not hold back the acks
   * of those after it). A tag still outstanding stops the run, so `multiple` never covers it.
   */
  #flushAcks(s: PartState): void {
    const ch = s.ch;
    if (!ch?.active || s.toAck.size === 0) {
      s.toAck.clear();
      return;
    }
    try {
      let last: number | undefined;
      while (s.outstandingHead < s.outstanding.length) {
        const tag = s.outstanding[s.outstandingHead]!;
        if (s.toAck.delete(tag)) last = tag;
        else if (!s.sentAlone.delete(tag)) break;
        s.outstandingHead++;
      }
      if (s.outstandingHead > 1024 && s.outstandingHead * 2 > s.outstanding.length) {
        s.outstanding.splice(0, s.outstandingHead);
        s.outstandingHead = 0;
      }
      if (last !== undefined) ch.basicAck({ deliveryTag: last, multiple: true });
      for (const tag of s.toAck) {
        ch.basicAck({ deliveryTag: tag });
        s.sentAlone.add(tag);
      }
      s.toAck.clear();
    } catch (e) {
      this.#ctx.onError(e);
    }
  }

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

  /** Settles (locally) the not-yet-iterated deliveries of a revoking partition and forgets its buffer. */
  #dropBuffered(s: PartState): void {
    const keep: Delivery[] = [];
    const drop: Delivery[] = [];
    for (let i = this.#readyHead; i < this.#ready.length; i++) {
      const d = this.#ready[i]!;
      (d.partition === s.partition ? drop : keep).push(d);
    }
    this.#ready.length = 0;
    this.#readyHead = 0;
    this.#ready.push(...keep);
    for (const d of drop) d.nack();
    s.buffer = [];
    s.bufferHead = 0;
  }

  /** Removes a gone partition's not-yet-iterated deliveries (their counts are dropped by #finalize). */
  #removeReady(partition: number): void {
    let j = 0;
    for (let i = this.#readyHead; i < this.#ready.length; i++) {
      const d = this.#ready[i]!;
      if (d.partition !== partition) this.#ready[j++] = d;
    }
    this.#ready.length = j;
    this.#readyHead = 0;
  }

  #wakeIterator(): void {
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w({ done: true, value: undefined });
    }
  }

  async #waitSettled(parts: readonly PartState[], deadline: number): Promise<void> {
    while (parts.some((s) => s.pending > 0 && s.phase !== 'gone')) {
      const left = deadline - this.#ctx.clock.monotonic();
      if (left <= 0) return;
      await new Promise<void>((resolve) => {
        const t = this.#ctx.clock.setTimer(resolve, Math.min(left, 50));
        for (const s of parts)
          s.settledWaiters.push(() => {
            t.cancel();
            resolve();
          });
      });
    }
  }

  // ── close ────────────────────────────────────────────────────────────────

  async #close(timeoutMs: number): Promise<void> {
    this.#closing = true;
    this.#retryTimer?.cancel();
    this.#ctx.connection.off('connection', this.#onConnection);
    this.#wakeIterator();
    const parts = [...this.#parts.values()];
    for (const s of parts) this.#dropBuffered(s);
    const deadline = this.#ctx.clock.monotonic() + Math.max(0, timeoutMs);
    await this.#waitSettled(parts, deadline);
    await Promise.race([Promise.allSettled(parts.flatMap((s) => [...s.delaying])), this.#ctx.clock.sleep(Math.max(0, deadline - this.#ctx.clock.monotonic()))]);
    // Closing a channel returns its unacked messages to the queue, in order.
    await Promise.all(
      [...this.#parts.values()].map(async (s) => {
        if (s.phase === 'starting') {
          s.phase = 'revoking'; // #assign closes its channel when its current step returns
          await Promise.race([s.gone, this.#ctx.clock.sleep(Math.max(200, deadline - this.#ctx.clock.monotonic()))]);
          this.#finalize(s, false);
          return;
        }
        s.phase = s.phase === 'gone' ? 'gone' : 'revoking';
        s.clean = true;
        this.#flushAcks(s);
        if (s.ch?.active) await s.ch.close().catch(() => {});
        this.#finalize(s, false);
      }),
    );
    await this.#membership?.stop().catch((e) => this.#ctx.onError(e));
    this.#done = true;
    this.#resolveClosed();
  }

  #notify(change: PartitionChange): void {
    try {
      this.#o.onPartitions?.(change);
    } catch (e) {
      this.#ctx.onError(e);
    }
  }
}

