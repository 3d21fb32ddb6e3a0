/**
 * Time and chance are injected: every timer, timestamp and random draw in Herald goes through
 * a `Clock` and a `Random`, so tests can control them (see `ManualClock` in @herald/testkit).
 */

export interface TimerHandle {
  /** Cancels the timer. Idempotent. */
  cancel(): void;
}

export interface Clock {
  /** Wall-clock time in epoch milliseconds (used for timestamps and lease expiry). */
  now(): number;
  /** Monotonic milliseconds since an arbitrary origin (used for durations and lease safety). */
  monotonic(): number;
  /**
   * Runs `fn` once, at or after `delayMs`. Like setTimeout, a timer keeps the process alive,
   * except with `{ unref: true }` (for background loops: polling, heartbeats).
   */
  setTimer(fn: () => void, delayMs: number, options?: { unref?: boolean }): TimerHandle;
  /** Resolves after `delayMs`; rejects with the signal's reason when aborted first. */
  sleep(delayMs: number, signal?: AbortSignal): Promise<void>;
}

export interface Random {
  /** A float in [0, 1). */
  next(): number;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  setTimer(fn, delayMs, options) {
    const t = setTimeout(fn, Math.max(0, delayMs));
    if (options?.unref) t.unref();
    return { cancel: () => clearTimeout(t) };
  },
  sleep(delayMs, signal) {
    return sleepWith(this, delayMs, signal);
  },
};

export const systemRandom: Random = { next: () => Math.random() };

/** Implements `Clock.sleep` on top of `setTimer`; shared by every clock. */
export function sleepWith(clock: Pick<Clock, 'setTimer'>, delayMs: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      handle.cancel();
      reject(signal?.reason);
    };
    const handle = clock.setTimer(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, delayMs);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
