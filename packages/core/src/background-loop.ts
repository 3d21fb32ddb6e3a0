/**
 * The machinery the leased background publishers (the outbox relay, the scheduler) share: a
 * task that runs one at a time and can be kicked to run again, topic runs, the failure backoff,
 * a repeating timer, bounded waits, and the `lastError` summary in their stats.
 */
import type { Clock, Random } from './clock.ts';
import { describeError, HeraldError } from './errors.ts';
import { nonNegativeInt } from './options.ts';
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
