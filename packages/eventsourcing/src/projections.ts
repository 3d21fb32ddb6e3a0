/**
 * Projections: read models fed from the event store, in one of two modes.
 *
 * - **inline**: applied in the same transaction as the append (SQLite) or inside the append
 *   (memory). The read model never lags: once `appendToStream` resolved, it includes the
 *   append. A handler that throws fails that append (and only that one).
 * - **async**: a checkpointed subscription. Its checkpoint is committed with its writes, and
 *   it applies only events after the stored checkpoint, so it is idempotent by position: a
 *   batch applied twice (a crash between, two runners) has one effect. A handler that throws
 *   is retried with backoff up to `maxAttempts`, then the projection stops as failed
 *   (`HERALD_ERR_PROJECTION_FAILED`) — it never skips an event.
 *
 * **Rebuild** replays from position 0 into a shadow (new tables on SQLite, a new state in
 * memory) while reads keep being served from the current read model, then, caught up to the
 * head, swaps them in one transaction. Use it after changing a projection's code.
 *
 * **Read-your-writes**: `waitForPosition(projection, position, { timeoutMs })` resolves once the
 * projection includes every event up to `position` (e.g. the `position` a command returned).
 * A filtered projection (category, event types) advances its position past events it skips,
 * up to the head, so waiting on any position works.
 */
import { type Clock, HeraldError, systemClock } from '@herald/core';
import { invalidArgument } from './errors.ts';

export type ProjectionMode = 'inline' | 'async';
export type ProjectionStatus = 'live' | 'rebuilding' | 'failed' | 'closed';

export interface RebuildProgress {
  /** Position the shadow has reached. */
  readonly position: bigint;
  /** Head of the store when this batch was read. */
  readonly head: bigint;
  /** Events applied to the shadow so far. */
  readonly events: number;
}

export interface RebuildOptions {
  /** Events per batch (default 1000, at most 10 000). Each batch is one transaction on SQLite. */
  readonly batchSize?: number;
  /** Called after every batch; a returned promise is awaited before the next batch. */
  readonly onProgress?: (progress: RebuildProgress) => void | Promise<void>;
  /** Aborts the rebuild between batches; the current read model stays. */
  readonly signal?: AbortSignal;
}

export interface RebuildResult {
  /** Events applied to the new read model. */
  readonly events: number;
  /** The head the new read model includes (its position after the swap). */
  readonly position: bigint;
  readonly durationMs: number;
}

export interface WaitOptions {
  /** Give up after this long, ms (default 5000): `HERALD_ERR_WAIT_TIMEOUT`. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

/** A running projection. */
export interface Projection {
  readonly name: string;
  readonly mode: ProjectionMode;
  /** Every event up to this position is in the read model. */
  position(): Promise<bigint>;
  /**
   * Resolves when `position()` ≥ `position`. Rejects with `HERALD_ERR_WAIT_TIMEOUT` after
   * `timeoutMs`, with `HERALD_ERR_PROJECTION_FAILED` when the projection failed (at once, not
   * at the timeout), with `HERALD_ERR_CLOSED` when it was closed. Safe to call concurrently.
   */
  waitForPosition(position: bigint, options?: WaitOptions): Promise<void>;
  /** See the module doc. Concurrent calls share one rebuild. Rejects `HERALD_ERR_CLOSED` when closed meanwhile. */
  rebuild(options?: RebuildOptions): Promise<RebuildResult>;
  status(): ProjectionStatus;
  /** The error that made the projection fail. */
  readonly failure: unknown;
  /** Stops it (an async runner finishes its current batch). Idempotent. */
  close(): Promise<void>;
}

/**
 * Read-your-writes: waits until `projection` includes `position` (a bigint, or anything with
 * a `position`, such as an `AppendResult` or a `CommandResult`).
 */
export function waitForPosition(projection: Pick<Projection, 'waitForPosition'>, position: bigint | { readonly position: bigint }, options: WaitOptions = {}): Promise<void> {
  const p = typeof position === 'bigint' ? position : position?.position;
  if (typeof p !== 'bigint' || p < 0n) return Promise.reject(invalidArgument(`waitForPosition takes a non-negative bigint position (got ${String(p)})`));
  return projection.waitForPosition(p, options);
}

export const DEFAULT_WAIT_MS = 5000;

/**
 * Waiters for a position, for projection implementations: `advance` resolves those reached,
 * `fail` rejects all. Timeouts run on the given clock.
 */
export class PositionWaiters {
  readonly #waiters = new Set<{ position: bigint; resolve: () => void; reject: (e: unknown) => void }>();
  readonly #clock: Clock;

  constructor(clock: Clock = systemClock) {
    this.#clock = clock;
  }

  get size(): number {
    return this.#waiters.size;
  }

  /** Waits until `advance` reaches `position`. `current` is checked first. */
  wait(name: string, position: bigint, current: () => bigint, options: WaitOptions = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_WAIT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0) return Promise.reject(invalidArgument(`timeoutMs must be a non-negative number (got ${timeoutMs})`));
    if (current() >= position) return Promise.resolve();
    if (options.signal?.aborted) return Promise.reject(options.signal.reason);
    return new Promise<void>((resolve, reject) => {
      const done = (): void => {
        timer.cancel();
        options.signal?.removeEventListener('abort', onAbort);
        this.#waiters.delete(w);
      };
      const w = {
        position,
        resolve: () => {
          done();
          resolve();
        },
        reject: (e: unknown) => {
          done();
          reject(e);
        },
      };
      const onAbort = (): void => w.reject(options.signal?.reason);
      const timer = this.#clock.setTimer(() => {
        w.reject(
          new HeraldError('HERALD_ERR_WAIT_TIMEOUT', `projection "${name}" did not reach position ${position} within ${timeoutMs} ms (it is at ${current()})`, {
            details: { projection: name, position: String(position), reached: String(current()), timeoutMs },
          }),
        );
      }, timeoutMs);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.add(w);
    });
  }

  advance(position: bigint): void {
    for (const w of [...this.#waiters]) if (w.position <= position) w.resolve();
  }

  fail(error: unknown): void {
    for (const w of [...this.#waiters]) w.reject(error);
  }
}

export function projectionFailed(name: string, position: bigint, cause: unknown): HeraldError {
  return new HeraldError('HERALD_ERR_PROJECTION_FAILED', `projection "${name}" stopped at the batch starting after position ${position}: ${(cause as Error)?.message ?? String(cause)}`, {
    cause,
    details: { projection: name, position: String(position) },
  });
}

export interface ProjectionRetryOptions {
  /** Attempts per batch before the projection fails (default 5). */
  readonly maxAttempts?: number;
  /** First backoff, ms (default 50); doubles up to `maxDelayMs`. */
  readonly initialDelayMs?: number;
  /** Largest backoff, ms (default 5000). */
  readonly maxDelayMs?: number;
}

export function checkRebuildOptions(o: RebuildOptions): number {
  const batch = o.batchSize ?? 1000;
  if (!Number.isInteger(batch) || batch < 1 || batch > 10_000) throw invalidArgument(`batchSize must be an integer from 1 to 10000 (got ${batch})`);
  return batch;
}

export function resolveRetry(o: ProjectionRetryOptions = {}): Required<ProjectionRetryOptions> {
  const r = { maxAttempts: o.maxAttempts ?? 5, initialDelayMs: o.initialDelayMs ?? 50, maxDelayMs: o.maxDelayMs ?? 5000 };
  if (!Number.isInteger(r.maxAttempts) || r.maxAttempts < 1) throw invalidArgument(`maxAttempts must be a positive integer (got ${r.maxAttempts})`);
  if (!(r.initialDelayMs >= 0) || !(r.maxDelayMs >= r.initialDelayMs)) throw invalidArgument('retry delays must be non-negative, maxDelayMs ≥ initialDelayMs');
  return r;
}

export function retryDelay(r: Required<ProjectionRetryOptions>, attempt: number): number {
  return Math.min(r.maxDelayMs, r.initialDelayMs * 2 ** (attempt - 1));
}

/** Whether a projection with these filters wants `e`. */
export function wants(filter: { readonly eventTypes?: readonly string[] | undefined }, type: string): boolean {
  return filter.eventTypes === undefined || filter.eventTypes.includes(type);
}
