/**
 * The machinery the leased background publishers (the outbox relay, the scheduler) share: their
 * life cycle (`LeasedLoop`: leases, wake-ups, poll, bounded close, failure counting), a task that
 * runs one at a time and can be kicked to run again, topic runs, the failure backoff, a
 * repeating timer, bounded waits, and the `lastError` summary in their stats.
 */
import { type Clock, type Random, systemClock, systemRandom } from './clock.ts';
import { describeError, HeraldError } from './errors.ts';
import { type LeaseFence, type LeaseStore, PartitionBalancer } from './lease.ts';
import { nonNegativeInt, positiveInt } from './options.ts';
import { backoff, type RetryPolicy } from './router.ts';

/**
 * A task that runs one at a time and can be asked to run again while it runs ("kicked"): a
 * kick during a run makes exactly one more run after it; kicks while idle start a run at once.
 */
export class SerialTask {
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = false;

  constructor(
    readonly run: () => Promise<void>,
    readonly onError: (error: unknown) => void,
  ) {}

  /** Runs the task now, or once more after the current run. No-op once stopped. */
  kick(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#again = false;
    this.#running = this.run()
      .catch((e) => this.onError(e))
      .finally(() => {
        this.#running = undefined;
        if (this.#again) this.kick();
      });
  }

  /** No more runs start; resolves when the current one (if any) has ended. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#again = false;
    await this.#running;
  }
}

/** Consecutive items with the same topic, in order (one transport.publish call each). */
export function runsByTopic<T extends { readonly topic: string }>(items: readonly T[]): T[][] {
  const runs: T[][] = [];
  for (const item of items) {
    const last = runs[runs.length - 1];
    if (last && last[0]!.topic === item.topic) last.push(item);
    else runs.push([item]);
  }
  return runs;
}

/** The failure backoff options both loops take. */
export interface LoopRetryOptions {
  /** First delay after a failure, ms (default 100). */
  readonly retryInitialDelayMs?: number;
  /** Cap of one delay, ms (default 5 000). */
  readonly retryMaxDelayMs?: number;
}

/** ×2 per consecutive failure, ±20 %, never giving up. */
export function loopRetryPolicy(o: LoopRetryOptions): RetryPolicy {
  const initialDelayMs = nonNegativeInt('retryInitialDelayMs', o.retryInitialDelayMs ?? 100);
  const maxDelayMs = nonNegativeInt('retryMaxDelayMs', o.retryMaxDelayMs ?? 5000);
  if (maxDelayMs < initialDelayMs) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `retryMaxDelayMs (${maxDelayMs}) must be >= retryInitialDelayMs (${initialDelayMs})`);
  return { maxAttempts: Number.MAX_SAFE_INTEGER, initialDelayMs, maxDelayMs, multiplier: 2, jitter: 0.2, inPlaceMaxDelayMs: 0 };
}

/** Sleeps the backoff for the `failures`-th consecutive failure; false when `signal` aborted first. */
export async function backoffSleep(clock: Clock, policy: RetryPolicy, failures: number, random: Random, signal: AbortSignal): Promise<boolean> {
  try {
    await clock.sleep(backoff(policy, failures, random), signal);
    return true;
  } catch {
    return false;
  }
}

export interface LastError {
  readonly message: string;
  readonly code?: string;
  /** Epoch ms on the loop's clock. */
  readonly at: number;
}

export function lastError(e: unknown, clock: Clock): LastError {
  const d = describeError(e);
  return { message: d.message, ...(d.code !== undefined ? { code: d.code } : {}), at: clock.now() };
}

/** Calls `fn` every `ms` (unref'd) until cancelled. */
export function every(clock: Clock, ms: number, fn: () => void): { cancel(): void } {
  let handle: { cancel(): void } | undefined;
  let cancelled = false;
  const arm = (): void => {
    handle = clock.setTimer(
      () => {
        if (cancelled) return;
        fn();
        arm();
      },
      ms,
      { unref: true },
    );
  };
  arm();
  return {
    cancel: () => {
      cancelled = true;
      handle?.cancel();
    },
  };
}

/** Waits for `p` at most `ms`; true when it settled in time. */
export async function settlesWithin(clock: Clock, p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: { cancel(): void } | undefined;
  const done = await Promise.race([
    p.then(
      () => true,
      () => true,
    ),
    new Promise<boolean>((resolve) => {
      timer = clock.setTimer(() => resolve(false), ms);
    }),
  ]);
  timer?.cancel();
  return done;
}

/** A random member id with a readable prefix. */
export function randomMemberId(prefix: string, random: Random): string {
  return `${prefix}-${Math.floor(random.next() * 2 ** 48).toString(36)}`;
}

/** What both leased loops take. */
export interface LeasedLoopOptions extends LoopRetryOptions {
  /** Where members lease; the store fences their marks against the same store. */
  readonly leases: LeaseStore;
  readonly clock?: Clock;
  readonly random?: Random;
  /** Member id for leases and logs (default: a random id). */
  readonly memberId?: string;
  /** Lease time to live, ms (default 10 000). */
  readonly leaseMs?: number;
  /** Errors the loop handled itself; for logs. */
  readonly onError?: (error: unknown) => void;
}

/**
 * The life cycle the outbox relay and the scheduler share: leases through a
 * `PartitionBalancer` (`scope`, `partitions`), in-process wake-ups (`store.onWrite`) and a poll
 * (`pollMs`) both calling `wake()`, an idempotent bounded `close`, failure counting with
 * `lastError` and the backoff sleep.
 */
export abstract class LeasedLoop {
  protected readonly clock: Clock;
  protected readonly random: Random;
  protected readonly balancer: PartitionBalancer;
  /** How long close() lets work in flight finish, ms (set by close). */
  protected closeTimeoutMs = 10_000;
  protected closed = false;
  /** Failed calls so far. */
  protected failures = 0;
  protected lastError: LastError | undefined;
  readonly #what: string;
  readonly #retry: RetryPolicy;
  readonly #onError: ((error: unknown) => void) | undefined;
  readonly #wakeSource: { onWrite(listener: () => void): () => void };
  readonly #pollMs: number;
  #started = false;
  #closePromise: Promise<void> | undefined;
  #unsubscribe: (() => void) | undefined;
  #pollTimer: { cancel(): void } | undefined;

  constructor(what: string, o: LeasedLoopOptions, lease: { scope: string; partitions: number; memberPrefix: string; wakeSource: { onWrite(listener: () => void): () => void }; pollMs: number }) {
    this.#what = what;
    this.clock = o.clock ?? systemClock;
    this.random = o.random ?? systemRandom;
    this.#retry = loopRetryPolicy(o);
    this.#onError = o.onError;
    this.#wakeSource = lease.wakeSource;
    this.#pollMs = positiveInt('pollMs', lease.pollMs);
    this.balancer = new PartitionBalancer({
      store: o.leases,
      scope: lease.scope,
      memberId: o.memberId ?? randomMemberId(lease.memberPrefix, this.random),
      partitions: lease.partitions,
      leaseMs: o.leaseMs ?? 10_000,
      clock: this.clock,
      onAssigned: (p, grant) => this.assigned(p, grant),
      onRevoke: (p) => this.revoked(p),
      onLost: (p) => this.lost(p),
      onError: (e) => this.error(e),
    });
  }

  /** A partition was taken under `grant`: start working it. */
  protected abstract assigned(partition: number, grant: LeaseFence): void;
  /** A clean hand-over: finish and mark the work in flight (bounded by `closeTimeoutMs`), then resolve. */
  protected abstract revoked(partition: number): Promise<void>;
  /** The lease was lost: stop at once. */
  protected abstract lost(partition: number): void;
  /** A write in this process, or the poll: look for work. */
  protected abstract wake(): void;
  /** Called by close() once the balancer has stopped (every partition given up). */
  protected abstract afterClose(): void | Promise<void>;

  /** Joins and starts working; resolves after the first balancing round. */
  async start(): Promise<void> {
    if (this.closed) throw new HeraldError('HERALD_ERR_CLOSED', `${this.#what} is closed`);
    if (this.#started) return;
    this.#started = true;
    this.#unsubscribe = this.#wakeSource.onWrite(() => this.wake());
    this.#pollTimer = every(this.clock, this.#pollMs, () => this.wake());
    // The balancer's own first round runs on an unref'd timer; run one now so that start()
    // resolves even when nothing else keeps the event loop alive.
    void this.balancer.start();
    await this.balancer.tick();
  }

  /** Idempotent: stops waking, gives every partition up (each bounded by `timeoutMs`, default 10 000). */
  close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.#closePromise) {
      this.closeTimeoutMs = options.timeoutMs ?? 10_000;
      this.closed = true;
      this.#pollTimer?.cancel();
      this.#unsubscribe?.();
      this.#closePromise = this.balancer.stop().then(() => this.afterClose());
    }
    return this.#closePromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  protected error(e: unknown): void {
    this.lastError = lastError(e, this.clock);
    this.#onError?.(e);
  }

  /** Counts and reports a failure, then sleeps the backoff for the `consecutive`-th one; false when `signal` aborted first. */
  protected failed(e: unknown, consecutive: number, signal: AbortSignal): Promise<boolean> {
    this.failures++;
    this.error(e);
    return backoffSleep(this.clock, this.#retry, consecutive, this.random, signal);
  }
}
