/**
 * In-memory projections on an `InMemoryEventStore`: the read model is a state value folded from
 * events (`initialState`, `apply`), read with `projection.state`. Same semantics as the SQLite
 * projections (both pass `describeProjectionContract`):
 *
 * - inline: folded inside each append; if `apply` throws, the append fails and the state is
 *   left as it was — provided `apply` returns a new state or throws before mutating (the fold
 *   of an append is committed only when every event of it applied);
 * - async: a runner reads `$all` (or the category) after its position, folds a batch, then
 *   moves its position; a failing batch is retried with backoff, then the projection fails;
 * - rebuild: folds from position 0 into a fresh state while `state` keeps serving the old one,
 *   then swaps synchronously once caught up to the head.
 */
import { type Clock, systemClock } from '@herald/core';
import { categoryOf, checkCategory } from './backend.ts';
import { closedError, invalidArgument } from './errors.ts';
import { type InMemoryEventStore, READ_ALL_SYNC } from './memory-event-store.ts';
import {
  checkRebuildOptions,
  type Projection,
  type ProjectionMode,
  type ProjectionRetryOptions,
  type ProjectionStatus,
  PositionWaiters,
  projectionFailed,
  type RebuildOptions,
  type RebuildResult,
  resolveRetry,
  retryDelay,
  type WaitOptions,
  wants,
} from './projections.ts';
import type { ReadAllResult, RecordedEvent } from './types.ts';

export interface InMemoryProjectionDefinition<S> {
  readonly name: string;
  /** Only events of this category (`'order'`). */
  readonly category?: string;
  /** Only events of these types. */
  readonly eventTypes?: readonly string[];
  initialState(): S;
  /** Folds one event; returns the new state (returning the mutated state is allowed, see the module doc). */
  apply(state: S, event: RecordedEvent): S;
}

export interface InMemoryProjectionOptions<S = unknown> {
  readonly mode: ProjectionMode;
  /** Async: events per batch (default 256). */
  readonly batchSize?: number;
  /** Async: retries of a failing batch. */
  readonly retry?: ProjectionRetryOptions;
  /** Timeouts of waitForPosition and retry backoff (default the system clock). */
  readonly clock?: Clock;
  /** Resume a read model kept from an earlier run: its state and the position it includes. */
  readonly resume?: { readonly state: S; readonly position: bigint };
}

export interface InMemoryProjection<S> extends Projection {
  /** The read model (the live state; during a rebuild, still the old one). */
  readonly state: S;
}

/** Creates and starts a projection (an inline one first catches up with the store, synchronously). */
export function createInMemoryProjection<S>(store: InMemoryEventStore, definition: InMemoryProjectionDefinition<S>, options: InMemoryProjectionOptions<S>): InMemoryProjection<S> {
  return new MemoryProjection(store, definition, options);
}

class MemoryProjection<S> implements InMemoryProjection<S> {
  readonly name: string;
  readonly mode: ProjectionMode;
  #state: S;
  #position = 0n;
  #status: ProjectionStatus = 'live';
  #failure: unknown;
  #rebuilding: Promise<RebuildResult> | undefined;
  readonly #store: InMemoryEventStore;
  readonly #def: InMemoryProjectionDefinition<S>;
  readonly #category: string | undefined;
  readonly #clock: Clock;
  readonly #waiters: PositionWaiters;
  readonly #batch: number;
  readonly #retry: Required<ProjectionRetryOptions>;
  #unhook: (() => void) | undefined;
  #wake: (() => void) | undefined;
  #dirty = true;
  #loop: Promise<void> | undefined;
  #loopEnded = false;

  constructor(store: InMemoryEventStore, def: InMemoryProjectionDefinition<S>, options: InMemoryProjectionOptions<S>) {
    if (typeof def?.name !== 'string' || def.name.length === 0) throw invalidArgument('a projection needs a name');
    if (typeof def.initialState !== 'function' || typeof def.apply !== 'function') throw invalidArgument(`projection "${def.name}" needs initialState() and apply()`);
    if (options?.mode !== 'inline' && options?.mode !== 'async') throw invalidArgument(`mode must be 'inline' or 'async' (got ${String(options?.mode)})`);
    this.name = def.name;
    this.mode = options.mode;
    this.#store = store;
    this.#def = def;
    this.#category = checkCategory(def.category);
    this.#clock = options.clock ?? systemClock;
    this.#waiters = new PositionWaiters(this.#clock);
    this.#batch = options.batchSize ?? 256;
    if (!Number.isInteger(this.#batch) || this.#batch < 1 || this.#batch > 10_000) throw invalidArgument(`batchSize must be an integer from 1 to 10000 (got ${this.#batch})`);
    this.#retry = resolveRetry(options.retry);
    this.#state = options.resume ? options.resume.state : def.initialState();
    if (options.resume) this.#position = options.resume.position;
    if (this.mode === 'inline') {
      // Catch up synchronously, then fold every append inside it: nothing can slip in between.
      const caught = this.#catchUpSync(this.#state, this.#position);
      this.#state = caught.state;
      this.#position = caught.position;
      this.#unhook = store.addInlineHook((events, position) => {
        const next = this.#fold(this.#state, events);
        return () => {
          this.#state = next;
          if (position > this.#position) this.#position = position;
          this.#waiters.advance(this.#position);
        };
      });
    } else {
      this.#unhook = store.onAppend(() => {
        this.#dirty = true;
        const w = this.#wake;
        this.#wake = undefined;
        w?.();
      });
      this.#loop = this.#run();
    }
  }

  get state(): S {
    return this.#state;
  }

  get failure(): unknown {
    return this.#failure;
  }

  status(): ProjectionStatus {
    return this.#status;
  }

  async position(): Promise<bigint> {
    return this.#position;
  }

  waitForPosition(position: bigint, options: WaitOptions = {}): Promise<void> {
    if (typeof position !== 'bigint' || position < 0n) return Promise.reject(invalidArgument(`waitForPosition takes a non-negative bigint (got ${String(position)})`));
    if (this.#status === 'failed') return Promise.reject(this.#failure);
    if (this.#status === 'closed') return Promise.reject(closedError(`projection "${this.name}"`));
    return this.#waiters.wait(this.name, position, () => this.#position, options);
  }

  rebuild(options: RebuildOptions = {}): Promise<RebuildResult> {
    if (this.#status === 'closed') return Promise.reject(closedError(`projection "${this.name}"`));
    const batch = checkRebuildOptions(options);
    this.#rebuilding ??= this.#rebuild(batch, options).finally(() => {
      this.#rebuilding = undefined;
      if (this.#status === 'rebuilding') this.#status = 'live';
    });
    return this.#rebuilding;
  }

  async close(): Promise<void> {
    if (this.#status === 'closed') return;
    this.#status = 'closed';
    this.#unhook?.();
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
    this.#waiters.fail(closedError(`projection "${this.name}"`));
    await this.#loop;
  }

  #fold(state: S, events: readonly RecordedEvent[]): S {
    let s = state;
    for (const e of events) {
      if (this.#category !== undefined && categoryOf(e.streamId) !== this.#category) continue;
      if (!wants(this.#def, e.type)) continue;
      s = this.#def.apply(s, e);
    }
    return s;
  }

  #read(after: bigint, limit: number): ReadAllResult {
    return this.#store[READ_ALL_SYNC]({ after, maxCount: limit, ...(this.#category !== undefined ? { category: this.#category } : {}) });
  }

  #catchUpSync(state: S, from: bigint): { state: S; position: bigint; events: number } {
    let s = state;
    let position = from;
    let events = 0;
    for (;;) {
      const page = this.#read(position, 10_000);
      s = this.#fold(s, page.events);
      events += page.events.length;
      if (page.position > position) position = page.position;
      if (page.isEnd) return { state: s, position, events };
    }
  }

  async #run(): Promise<void> {
    this.#loopEnded = false;
    try {
      await this.#runLoop();
    } finally {
      this.#loopEnded = true;
    }
  }

  async #runLoop(): Promise<void> {
    let attempt = 0;
    while (this.#status !== 'closed' && this.#status !== 'failed') {
      this.#dirty = false;
      const from = this.#position;
      let page: ReadAllResult;
      try {
        page = this.#read(from, this.#batch);
      } catch (e) {
        if ((this.#status as ProjectionStatus) === 'closed') return;
        this.#fail(from, e);
        return;
      }
      // A rebuild may have swapped in a newer state meanwhile: apply only what is after the position (idempotent by position).
      const fresh = page.events.filter((e) => e.position > this.#position);
      try {
        const next = this.#fold(this.#state, fresh);
        this.#state = next;
        attempt = 0;
      } catch (e) {
        attempt++;
        if (attempt >= this.#retry.maxAttempts) {
          this.#fail(from, e);
          return;
        }
        await this.#clock.sleep(retryDelay(this.#retry, attempt)).catch(() => {});
        continue;
      }
      if (page.position > this.#position) {
        this.#position = page.position;
        this.#waiters.advance(this.#position);
      }
      if (!page.isEnd) {
        await new Promise<void>((r) => setImmediate(r));
        continue;
      }
      if (this.#dirty) continue;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  #fail(position: bigint, cause: unknown): void {
    this.#status = 'failed';
    this.#failure = projectionFailed(this.name, position, cause);
    this.#waiters.fail(this.#failure);
  }

  async #rebuild(batch: number, options: RebuildOptions): Promise<RebuildResult> {
    const started = this.#clock.monotonic();
    if (this.#status === 'failed') {
      // A rebuild is how a failed projection with fixed code comes back.
      this.#failure = undefined;
    }
    this.#status = 'rebuilding';
    let shadow = this.#def.initialState();
    let position = 0n;
    let events = 0;
    for (;;) {
      if (options.signal?.aborted) throw options.signal.reason;
      if ((this.#status as ProjectionStatus) === 'closed') throw closedError(`projection "${this.name}"`);
      const page = this.#read(position, batch);
      shadow = this.#fold(shadow, page.events);
      events += page.events.length;
      if (page.position > position) position = page.position;
      await options.onProgress?.({ position, head: await this.#store.headPosition(), events });
      if (page.isEnd) break;
      await new Promise<void>((r) => setImmediate(r));
    }
    if ((this.#status as ProjectionStatus) === 'closed') throw closedError(`projection "${this.name}"`);
    // The swap, in one synchronous step: catch the shadow up to the head, then replace the state.
    const last = this.#catchUpSync(shadow, position);
    this.#state = last.state;
    this.#position = last.position;
    events += last.events;
    this.#status = 'live';
    this.#waiters.advance(this.#position);
    // A failed async projection comes back with a rebuild (after its code was fixed): restart its runner.
    if (this.mode === 'async' && this.#loopEnded) this.#loop = this.#run();
    return { events, position: this.#position, durationMs: this.#clock.monotonic() - started };
  }
}

