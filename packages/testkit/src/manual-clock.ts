/**
 * A controllable `Clock` for deterministic tests of timers, retries, leases and sagas.
 *
 * Time stands still until the test moves it: `advance(ms)` moves the wall clock (`now()`) and
 * the monotonic clock together and fires every timer that falls due on the way, each at its own
 * due time, in due order (timers due at the same time fire in the order they were set).
 * Between two timers `advance` lets pending promise continuations run, so code that awaits a
 * `sleep()` and then sets the next timer behaves as it would in real time: a loop sleeping
 * 10 ms five times finishes within `advance(50)`.
 *
 * Failure rules: a timer callback that throws stops `advance` / `runAll` with that error, the
 * clock staying at the failing timer's due time (later timers stay pending). `setTimer` and
 * `cancel` never throw; `cancel` is idempotent. Timers never keep the process alive (there is
 * no real timer behind them). Not safe for two concurrent `advance` calls: await one first.
 */
import { type Clock, HeraldError, type TimerHandle, sleepWith } from '@herald/core';

export interface ManualClockOptions {
  /** Initial wall-clock time, epoch ms or a Date (default 2024-01-01T00:00:00.000Z). */
  readonly now?: number | Date;
  /** Initial monotonic reading, ms (default 0). */
  readonly monotonic?: number;
}

interface ManualTimer {
  readonly seq: number;
  readonly due: number;
  readonly fn: () => void;
  cancelled: boolean;
}

/** Default wall-clock start: 2024-01-01T00:00:00.000Z. */
export const MANUAL_CLOCK_EPOCH = Date.UTC(2024, 0, 1);

export class ManualClock implements Clock {
  #wall: number;
  #mono: number;
  #seq = 0;
  /** Pending timers, kept sorted by (due, seq). */
  #timers: ManualTimer[] = [];
  #advancing = false;

  constructor(options: ManualClockOptions = {}) {
    const now = options.now instanceof Date ? options.now.getTime() : (options.now ?? MANUAL_CLOCK_EPOCH);
    this.#wall = finite('now', now);
    this.#mono = finite('monotonic', options.monotonic ?? 0);
  }

  now(): number {
    return this.#wall;
  }

  monotonic(): number {
    return this.#mono;
  }

  /**
   * Schedules `fn` at monotonic `now + delayMs` (negative or NaN delays count as 0). Fires only
   * from advance/advanceSync/runNext/runAll. `unref` is accepted and ignored: no real timer exists.
   */
  setTimer(fn: () => void, delayMs: number, _options?: { unref?: boolean }): TimerHandle {
    const delay = Number.isFinite(delayMs) && delayMs > 0 ? delayMs : 0;
    const timer: ManualTimer = { seq: this.#seq++, due: this.#mono + delay, fn, cancelled: false };
    this.#insert(timer);
    return {
      cancel: () => {
        if (timer.cancelled) return;
        timer.cancelled = true;
        const i = this.#timers.indexOf(timer);
        if (i >= 0) this.#timers.splice(i, 1);
      },
    };
  }

  sleep(delayMs: number, signal?: AbortSignal): Promise<void> {
    return sleepWith(this, delayMs, signal);
  }

  /** Timers set and not yet fired or cancelled. */
  pendingTimers(): number {
    return this.#timers.length;
  }

  /** Monotonic due time of the next timer, or undefined when none is pending. */
  nextTimerAt(): number | undefined {
    return this.#timers[0]?.due;
  }

  /**
   * Moves both clocks forward by `ms`, firing each timer that falls due (including timers set
   * by fired timers or by the continuations they release, when due within the window), each
   * with the clock at its due time. Resolves with the number of timers fired.
   */
  async advance(ms: number): Promise<number> {
    if (!Number.isFinite(ms) || ms < 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `advance(ms) needs a finite ms >= 0 (got ${ms})`);
    return this.#exclusive(async () => {
      const target = this.#mono + ms;
      let fired = 0;
      await flushMicrotasks();
      for (;;) {
        const next = this.#timers[0];
        if (!next || next.due > target) break;
        this.#fire(next);
        fired++;
        await flushMicrotasks();
      }
      this.#moveTo(target);
      await flushMicrotasks();
      return fired;
    });
  }

  /** `advance` without letting promise continuations run between timers (plain callbacks only). */
  advanceSync(ms: number): number {
    if (!Number.isFinite(ms) || ms < 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `advanceSync(ms) needs a finite ms >= 0 (got ${ms})`);
    if (this.#advancing) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'ManualClock is already advancing; await the running advance first');
    const target = this.#mono + ms;
    let fired = 0;
    for (;;) {
      const next = this.#timers[0];
      if (!next || next.due > target) break;
      this.#fire(next);
      fired++;
    }
    this.#moveTo(target);
    return fired;
  }

  /** Jumps to the next timer's due time and fires it (and nothing else). False when no timer is pending. */
  async runNext(): Promise<boolean> {
    return this.#exclusive(async () => {
      await flushMicrotasks();
      const next = this.#timers[0];
      if (!next) return false;
      this.#fire(next);
      await flushMicrotasks();
      return true;
    });
  }

  /**
   * Fires timers in due order until none is pending, moving time to each one's due time.
   * Throws `HERALD_ERR_INVALID_ARGUMENT` after `maxTimers` (default 10 000) timers, which
   * usually means a periodic timer that never stops: use `advance` for those.
   */
  async runAll(options: { maxTimers?: number } = {}): Promise<number> {
    const max = options.maxTimers ?? 10_000;
    return this.#exclusive(async () => {
      let fired = 0;
      await flushMicrotasks();
      for (;;) {
        const next = this.#timers[0];
        if (!next) return fired;
        if (fired >= max) {
          throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `runAll fired ${max} timers and more are pending (a periodic timer?); use advance(ms) instead`, {
            details: { pending: this.#timers.length, nextDue: next.due },
          });
        }
        this.#fire(next);
        fired++;
        await flushMicrotasks();
      }
    });
  }

  /**
   * Sets the wall clock (`now()`) alone, as an NTP step would; the monotonic clock and the
   * timers are not affected. Use it to test code that must not trust wall time.
   */
  setWallTime(epochMs: number | Date): void {
    this.#wall = finite('epochMs', epochMs instanceof Date ? epochMs.getTime() : epochMs);
  }

  #fire(timer: ManualTimer): void {
    this.#timers.shift();
    timer.cancelled = true;
    this.#moveTo(timer.due);
    timer.fn();
  }

  #moveTo(mono: number): void {
    if (mono <= this.#mono) return;
    this.#wall += mono - this.#mono;
    this.#mono = mono;
  }

  #insert(timer: ManualTimer): void {
    // Binary search for the first timer due strictly later (ties keep insertion order).
    let lo = 0;
    let hi = this.#timers.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#timers[mid]!.due <= timer.due) lo = mid + 1;
      else hi = mid;
    }
    this.#timers.splice(lo, 0, timer);
  }

  async #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#advancing) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'ManualClock is already advancing; await the running advance first');
    this.#advancing = true;
    try {
      return await fn();
    } finally {
      this.#advancing = false;
    }
  }
}

/** Lets every pending promise continuation run (a macrotask turn drains the microtask queue). */
export function flushMicrotasks(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function finite(name: string, v: number): number {
  if (!Number.isFinite(v)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `ManualClock ${name} must be a finite number (got ${v})`);
  return v;
}
