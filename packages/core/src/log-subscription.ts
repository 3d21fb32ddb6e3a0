/**
 * The shared reading half of every log transport (memory, SQLite, and later PostgreSQL and
 * Redis): per-partition offset tracking, bounded in-flight deliveries, nack redelivery,
 * revocation, draining close. An adapter supplies a `LogSource` (fetch, commit, wake-ups)
 * and an ownership model: leases through the core `PartitionBalancer`, or local assignment
 * by an in-process coordinator.
 *
 * Backpressure: no more than `maxInFlight` unsettled deliveries across partitions, and a
 * partition stops fetching while `maxUncommittedPerPartition` of its delivered messages are
 * above the committed position.
 */
import { setMaxListeners } from 'node:events';
import { type Clock, systemClock } from './clock.ts';
import type { CloudEvent } from './envelope.ts';
import { decodeEnvelope, decodeStoredEnvelope } from './envelope.ts';
import { HeraldError, isHeraldError } from './errors.ts';
import { type LeaseFence, type LeaseGrant, type LeaseStore, PartitionBalancer } from './lease.ts';
import { OffsetTracker } from './offset-tracker.ts';
import {
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_MAX_UNCOMMITTED_PER_PARTITION,
  type Delivery,
  type PartitionChange,
  type SubscribeOptions,
  type Subscription,
} from './transport.ts';
import { positiveInt } from './options.ts';

const RESOLVED: Promise<void> = Promise.resolve();

/** One stored record of a partition. Either `envelope` (by reference) or `raw` (JSON) is set. */
export interface LogRecord {
  readonly offset: number;
  readonly key: string | undefined;
  readonly envelope?: CloudEvent;
  readonly raw?: string;
}

export interface LogSource {
  readonly partitions: number;
  /** The last committed offset of `group` on `partition`; -1 when the group has none. */
  committed(partition: number): Promise<number> | number;
  /** The last offset stored in `partition` (-1 when empty): where a 'latest' group starts. */
  head(partition: number): Promise<number> | number;
  /** Up to `limit` records with offset > `after`, in order. */
  fetch(partition: number, after: number, limit: number): Promise<readonly LogRecord[]> | readonly LogRecord[];
  /**
   * Stores `offset` as the group's committed position on `partition`. With a fence, the write
   * must succeed only if the fence is still current, else throw `HERALD_ERR_LEASE_LOST`.
   */
  commit(partition: number, offset: number, fence: LeaseFence | undefined): Promise<void> | void;
  /** Registers a wake-up for new records; returns an unsubscribe function. */
  onAppend(listener: () => void): () => void;
}

export interface LogSubscriptionOptions extends SubscribeOptions {
  readonly topic: string;
  readonly source: LogSource;
  readonly clock?: Clock;
  /** 'lease': divide partitions through `leases`; 'local': the caller calls assign()/revoke(). */
  readonly ownership: { readonly kind: 'lease'; readonly store: LeaseStore; readonly leaseMs?: number; readonly heartbeatMs?: number } | { readonly kind: 'local' };
  /** Records per fetch (default 256). */
  readonly fetchBatch?: number;
  /** Poll period when no wake-up arrives (cross-process appends), ms (default 50). */
  readonly pollMs?: number;
  /** Delay before a moved watermark is committed, ms; 0 commits at the next tick (default 10). */
  readonly commitIntervalMs?: number;
  /** How long a clean revoke waits for unsettled deliveries of the partition, ms (default 5000). */
  readonly revokeTimeoutMs?: number;
  /**
   * Fully validate every envelope read (default false: the log holds only what Herald validated
   * at publish, so reads get a structural check — a corrupt row is still caught). Set true when
   * other writers can append to the log.
   */
  readonly verifyEnvelopes?: boolean;
}

/** @internal */
export interface PartitionState {
  readonly partition: number;
  readonly controller: AbortController;
  readonly tracker: OffsetTracker;
  fence: LeaseFence | undefined;
  readPos: number;
  /** Unsettled deliveries of this partition. */
  pending: number;
  revoking: boolean;
  fetching: boolean;
  commitTimer: { cancel(): void } | undefined;
  committing: Promise<void> | undefined;
  settledWaiters: Array<() => void>;
}

let memberSeq = 0;

/** Delay before a commit that failed (not fenced) is tried again, ms. */
const COMMIT_RETRY_MS = 250;

export class LogSubscription implements Subscription {
  readonly topic: string;
  readonly group: string;
  readonly memberId: string;
  readonly closed: Promise<void>;

  readonly #o: LogSubscriptionOptions;
  readonly #clock: Clock;
  readonly #maxInFlight: number;
  readonly #maxUncommitted: number;
  readonly #fetchBatch: number;
  readonly #parts = new Map<number, PartitionState>();
  readonly #ready: Delivery[] = [];
  #readyHead = 0;
  #inFlight = 0;
  #waiter: ((r: IteratorResult<Delivery>) => void) | undefined;
  #closing = false;
  #done = false;
  #resolveClosed!: () => void;
  #rejectClosed!: (e: unknown) => void;
  readonly #balancer: PartitionBalancer | undefined;
  readonly #unsubscribeAppend: () => void;
  #pollTimer: { cancel(): void } | undefined;
  #pumpScheduled = false;
  #pumping = false;
  #closePromise: Promise<void> | undefined;

  constructor(options: LogSubscriptionOptions) {
    this.#o = options;
    this.topic = options.topic;
    this.group = options.group;
    this.memberId = options.memberId ?? `m-${process.pid}-${Date.now().toString(36)}-${(memberSeq++).toString(36)}`;
    this.#clock = options.clock ?? systemClock;
    this.#maxInFlight = positiveInt('maxInFlight', options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT);
    this.#maxUncommitted = positiveInt('maxUncommittedPerPartition', options.maxUncommittedPerPartition ?? DEFAULT_MAX_UNCOMMITTED_PER_PARTITION);
    this.#fetchBatch = positiveInt('fetchBatch', options.fetchBatch ?? 256);
    this.closed = new Promise<void>((resolve, reject) => {
      this.#resolveClosed = resolve;
      this.#rejectClosed = reject;
    });
    this.closed.catch(() => {});
    this.#unsubscribeAppend = options.source.onAppend(() => this.#schedulePump());
    if (options.ownership.kind === 'lease') {
      this.#balancer = new PartitionBalancer({
        store: options.ownership.store,
        scope: `log:${options.topic}:${options.group}`,
        memberId: this.memberId,
        partitions: options.source.partitions,
        clock: this.#clock,
        ...(options.ownership.leaseMs !== undefined ? { leaseMs: options.ownership.leaseMs } : {}),
        ...(options.ownership.heartbeatMs !== undefined ? { heartbeatMs: options.ownership.heartbeatMs } : {}),
        onAssigned: (p, grant) => void this.assign(p, grant),
        onRevoke: (p) => this.revoke(p, false),
        onLost: (p) => void this.revoke(p, true),
        onError: (e) => this.#o.onError?.(e),
      });
      void this.#balancer.start();
    }
    this.#startPolling();
  }

  assignment(): readonly number[] {
    return [...this.#parts.values()].filter((s) => !s.revoking).map((s) => s.partition).sort((a, b) => a - b);
  }

  /** The fence for `partition` while owned (lease ownership only). */
  fence(partition: number): LeaseFence | undefined {
    const s = this.#parts.get(partition);
    return s && !s.revoking ? s.fence : undefined;
  }

  /** Starts reading `partition` from the group's committed position. */
  async assign(partition: number, grant?: LeaseGrant): Promise<void> {
    if (this.#closing || this.#parts.has(partition)) return;
    let committed: number;
    try {
      committed = await this.#o.source.committed(partition);
      if (committed < 0 && this.#o.startFrom === 'latest') {
        committed = await this.#o.source.head(partition);
      }
    } catch (e) {
      // Could not read where to start: try again while the partition is still ours, so it is
      // not left owned but unread until the lease runs out.
      this.#o.onError?.(e);
      this.#clock.setTimer(() => {
        if (this.#closing || this.#parts.has(partition)) return;
        if (this.#balancer && this.#balancer.fence(partition) === undefined) return;
        void this.assign(partition, this.#balancer?.fence(partition) ?? grant);
      }, COMMIT_RETRY_MS);
      return;
    }
    if (this.#closing || this.#parts.has(partition)) return;
    const controller = new AbortController();
    // The router's queued and retrying deliveries of this partition listen on it (bounded by maxInFlight).
    setMaxListeners(0, controller.signal);
    this.#parts.set(partition, {
      partition,
      controller,
      tracker: new OffsetTracker(committed),
      fence: grant,
      readPos: committed,
      pending: 0,
      revoking: false,
      fetching: false,
      commitTimer: undefined,
      committing: undefined,
      settledWaiters: [],
    });
    this.#notify({ assigned: [partition], revoked: [], lost: false });
    this.#schedulePump();
  }

  /**
   * Stops reading `partition`. Clean (`lost` false): aborts its signal so the router drops
   * queued work, waits for unsettled deliveries (up to revokeTimeoutMs), commits. Lost:
   * aborts and forgets at once; nothing more is committed.
   */
  async revoke(partition: number, lost: boolean): Promise<void> {
    const s = this.#parts.get(partition);
    if (!s) return;
    if (s.revoking && !lost) return;
    s.revoking = true;
    s.controller.abort(new HeraldError('HERALD_ERR_LEASE_LOST', `partition ${partition} of "${this.topic}" revoked from ${this.memberId}`));
    // Drop not-yet-iterated deliveries of this partition.
    this.#dropReady(partition);
    if (!lost) {
      const timeoutMs = this.#o.revokeTimeoutMs ?? 5000;
      if (s.pending > 0) {
        await new Promise<void>((resolve) => {
          const t = this.#clock.setTimer(resolve, timeoutMs);
          s.settledWaiters.push(() => {
            t.cancel();
            resolve();
          });
        });
      }
      s.commitTimer?.cancel();
      await s.committing;
      await this.#commitNow(s);
    }
    s.commitTimer?.cancel();
    if (this.#parts.get(partition) !== s) return;
    this.#inFlight -= s.pending;
    s.pending = 0;
    this.#parts.delete(partition);
    this.#notify({ assigned: [], revoked: [partition], lost });
    this.#schedulePump();
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
      return: async () => {
        return { done: true, value: undefined };
      },
    };
  }

  close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.#closePromise) this.#closePromise = this.#close(options.timeoutMs ?? 10_000);
    return this.#closePromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Ends the subscription with a fatal error. */
  fail(error: unknown): void {
    this.#o.onError?.(error);
    void this.close({ timeoutMs: 0 }).finally(() => this.#rejectClosed(error));
  }

  async #close(timeoutMs: number): Promise<void> {
    this.#closing = true;
    this.#pollTimer?.cancel();
    this.#unsubscribeAppend();
    this.#wakeIterator();
    for (const s of this.#parts.values()) this.#dropReady(s.partition);
    const deadline = this.#clock.monotonic() + timeoutMs;
    // Wait for unsettled deliveries, up to the deadline.
    while ([...this.#parts.values()].some((s) => s.pending > 0) && this.#clock.monotonic() < deadline) {
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          t.cancel();
          for (const s of this.#parts.values()) {
            const i = s.settledWaiters.indexOf(wake);
            if (i >= 0) s.settledWaiters.splice(i, 1);
          }
          resolve();
        };
        const t = this.#clock.setTimer(wake, Math.min(20, Math.max(1, deadline - this.#clock.monotonic())));
        for (const s of this.#parts.values()) s.settledWaiters.push(wake);
      });
    }
    const parts = [...this.#parts.values()];
    for (const s of parts) {
      s.commitTimer?.cancel();
      await s.committing;
      await this.#commitNow(s);
      s.controller.abort(new HeraldError('HERALD_ERR_CLOSED', 'subscription closed'));
    }
    this.#parts.clear();
    // Partitions were committed above and forgotten, so the balancer's revokes are no-ops; it releases the leases.
    if (this.#balancer) await this.#balancer.stop();
    this.#done = true;
    this.#resolveClosed();
  }

  #startPolling(): void {
    const pollMs = this.#o.pollMs ?? 50;
    const tick = (): void => {
      if (this.#closing) return;
      this.#schedulePump();
      this.#pollTimer = this.#clock.setTimer(tick, pollMs);
    };
    // Ref'd on purpose: like an open socket, an open subscription keeps its process alive until close().
    this.#pollTimer = this.#clock.setTimer(tick, pollMs);
  }

  /**
   * Runs `#pump` once in a microtask, however many acks, appends and timers ask for it before.
   * Through a resolved promise rather than `queueMicrotask`, which on Node builds an
   * AsyncResource per call — a cost paid per ack whenever acks land in separate microtasks.
   */
  #schedulePump(): void {
    if (this.#pumpScheduled || this.#closing) return;
    this.#pumpScheduled = true;
    void RESOLVED.then(this.#runScheduledPump);
  }

  readonly #runScheduledPump = (): void => {
    this.#pumpScheduled = false;
    void this.#pump();
  };

  async #pump(): Promise<void> {
    if (this.#pumping) {
      // Another pump is running; make sure it runs once more when done.
      this.#pumpAgain = true;
      return;
    }
    this.#pumping = true;
    try {
      do {
        this.#pumpAgain = false;
        let fetchedAny = false;
        for (const s of [...this.#parts.values()]) {
          if (this.#closing) return;
          if (s.revoking || s.fetching) continue;
          if (this.#balancer && !this.#balancer.isSafe(s.partition)) continue;
          const room = Math.min(this.#maxInFlight - this.#inFlight, this.#maxUncommitted - s.tracker.uncommitted);
          if (room <= 0) continue;
          s.fetching = true;
          let records: readonly LogRecord[];
          try {
            records = await this.#o.source.fetch(s.partition, s.readPos, Math.min(room, this.#fetchBatch));
          } catch (e) {
            this.#o.onError?.(e);
            records = [];
          } finally {
            s.fetching = false;
          }
          if (s.revoking || this.#parts.get(s.partition) !== s) continue;
          for (const r of records) {
            if (r.offset <= s.readPos) continue;
            s.readPos = r.offset;
            s.tracker.track(r.offset);
            this.#enqueue(this.#makeDelivery(s, r, 1));
          }
          if (records.length > 0) fetchedAny = true;
        }
        if (fetchedAny) {
          this.#pumpAgain = true;
          // Yield to the event loop between rounds: with fast handlers everything else is
          // microtasks, and timers (commits, lease heartbeats) would starve under load.
          await new Promise<void>((resolve) => setImmediate(resolve));
        }
      } while (this.#pumpAgain && !this.#closing && this.#inFlight < this.#maxInFlight);
    } finally {
      this.#pumping = false;
    }
  }

  #pumpAgain = false;

  #makeDelivery(s: PartitionState, r: LogRecord, attempt: number): Delivery {
    let envelope: CloudEvent | null = r.envelope ?? null;
    let decodeError: HeraldError | undefined;
    let raw = r.raw;
    if (!envelope) {
      try {
        envelope = this.#o.verifyEnvelopes ? decodeEnvelope(raw ?? '') : decodeStoredEnvelope(raw ?? '');
      } catch (e) {
        decodeError = isHeraldError(e)
          ? new HeraldError('HERALD_ERR_CORRUPT_RECORD', `record ${r.offset} of ${this.topic}[${s.partition}] is unreadable: ${e.message}`, { cause: e, details: { topic: this.topic, partition: s.partition, offset: r.offset } })
          : new HeraldError('HERALD_ERR_CORRUPT_RECORD', `record ${r.offset} of ${this.topic}[${s.partition}] is unreadable`, { cause: e });
      }
    }
    s.pending++;
    this.#inFlight++;
    return new LogDelivery(this, s, r, attempt, envelope, decodeError);
  }

  /** @internal A delivery of `s` settled; false when it no longer counts (revoked or lost). */
  _settle(s: PartitionState): boolean {
    if (this.#parts.get(s.partition) !== s) return false;
    s.pending--;
    this.#inFlight--;
    if (s.pending === 0 && s.settledWaiters.length > 0) {
      const ws = s.settledWaiters.splice(0);
      for (const w of ws) w();
    }
    this.#schedulePump();
    return true;
  }

  /** @internal `offset` of `s` is done. */
  _ack(s: PartitionState, offset: number): void {
    if (s.tracker.ack(offset)) this.#scheduleCommit(s);
  }

  /** @internal Redeliver `r` after `delayMs` (nack), unless the partition moved on. */
  _redeliver(s: PartitionState, r: LogRecord, attempt: number, delayMs: number): void {
    if (s.revoking || this.#closing) return; // the next owner will read it
    const redeliver = (): void => {
      if (this.#parts.get(s.partition) !== s || s.revoking || this.#closing) return;
      this.#enqueue(this.#makeDelivery(s, r, attempt + 1));
    };
    if (delayMs === 0) queueMicrotask(redeliver);
    else this.#clock.setTimer(redeliver, delayMs);
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

  #scheduleCommit(s: PartitionState): void {
    if (s.commitTimer || s.revoking) return;
    const interval = this.#o.commitIntervalMs ?? 10;
    s.commitTimer = this.#clock.setTimer(() => {
      s.commitTimer = undefined;
      if (s.committing) {
        void s.committing.then(() => this.#scheduleCommit(s));
        return;
      }
      s.committing = this.#commitNow(s).finally(() => {
        s.committing = undefined;
      });
    }, interval);
  }

  async #commitNow(s: PartitionState): Promise<void> {
    if (!s.tracker.dirty) return;
    const offset = s.tracker.watermark;
    try {
      await this.#o.source.commit(s.partition, offset, s.fence);
      s.tracker.markCommitted(offset);
      this.#schedulePump();
    } catch (e) {
      if (isHeraldError(e, 'HERALD_ERR_LEASE_LOST')) {
        this.#o.onError?.(e);
        this.#balancer?.forget(s.partition);
        if (this.#parts.get(s.partition) === s && !s.revoking) void this.revoke(s.partition, true);
      } else {
        // A store hiccup: try again soon, not only when the watermark next moves (a quiet
        // partition would otherwise keep an old committed position: more redelivery after a
        // crash, retention held back).
        this.#o.onError?.(e);
        if (this.#parts.get(s.partition) === s && !s.revoking && !s.commitTimer) {
          s.commitTimer = this.#clock.setTimer(() => {
            s.commitTimer = undefined;
            if (this.#parts.get(s.partition) === s && !s.revoking && !s.committing) {
              s.committing = this.#commitNow(s).finally(() => {
                s.committing = undefined;
              });
            }
          }, COMMIT_RETRY_MS);
        }
      }
    }
  }

  #notify(change: PartitionChange): void {
    try {
      this.#o.onPartitions?.(change);
    } catch (e) {
      this.#o.onError?.(e);
    }
  }
}

/** One delivery of a log record; verbs settle it once (later calls are no-ops). */
class LogDelivery implements Delivery {
  readonly envelope: CloudEvent | null;
  readonly decodeError?: HeraldError;
  readonly topic: string;
  readonly partition: number;
  readonly key: string | undefined;
  readonly attempt: number;
  readonly revoked: AbortSignal;
  readonly fence?: LeaseFence;
  #raw: string | undefined;
  #settled = false;
  readonly #sub: LogSubscription;
  readonly #s: PartitionState;
  readonly #r: LogRecord;

  constructor(sub: LogSubscription, s: PartitionState, r: LogRecord, attempt: number, envelope: CloudEvent | null, decodeError: HeraldError | undefined) {
    this.#sub = sub;
    this.#s = s;
    this.#r = r;
    this.envelope = envelope;
    if (decodeError) this.decodeError = decodeError;
    this.#raw = r.raw;
    this.topic = sub.topic;
    this.partition = s.partition;
    this.key = r.key;
    this.attempt = attempt;
    this.revoked = s.controller.signal;
    if (s.fence) this.fence = s.fence;
  }

  get raw(): string {
    if (this.#raw === undefined) this.#raw = JSON.stringify(this.envelope);
    return this.#raw;
  }

  get position(): string {
    return String(this.#r.offset);
  }

  ack(): void {
    if (this.#settled) return;
    this.#settled = true;
    if (this.#sub._settle(this.#s)) this.#sub._ack(this.#s, this.#r.offset);
  }

  reject(_reason: string): void {
    this.ack();
  }

  nack(options?: { delayMs?: number }): void {
    if (this.#settled) return;
    this.#settled = true;
    if (this.#sub._settle(this.#s)) this.#sub._redeliver(this.#s, this.#r, this.attempt, Math.max(0, options?.delayMs ?? 0));
  }

  extend(): void {}
}

