/**
 * The catch-up subscription every backend uses (see `EventSubscription` for the contract).
 * A backend supplies a page reader and an append signal; history and live are the same loop.
 */
import { HeraldError } from '@herald/core';
import { invalidArgument } from './errors.ts';
import { checkCategory, checkPositionArg } from './backend.ts';
import { type CheckpointStore, DEFAULT_SUBSCRIPTION_BATCH, type EventSubscription, MAX_READ_COUNT, type ReadAllResult, type RecordedEvent, type SubscribeOptions } from './types.ts';

export interface CatchUpSource {
  /** Reads up to `limit` events after `after` (of `category` when given). */
  read(after: bigint, limit: number, category: string | undefined): Promise<ReadAllResult>;
  /**
   * Calls `listener` after appends (this process at once; other processes within `pollMs` where
   * the backend can see them). Returns the function that stops it.
   */
  onAppend(listener: () => void, pollMs: number | undefined): () => void;
  readonly checkpoints: CheckpointStore;
}

export class CatchUpSubscription implements EventSubscription {
  #position: bigint;
  #readPosition: bigint;
  #buffer: readonly RecordedEvent[] = [];
  #at = 0;
  #pageEnd = 0n;
  #dirty = true;
  #wake: (() => void) | undefined;
  #closed = false;
  #resolveClosed!: () => void;
  readonly closed: Promise<void>;
  readonly #source: CatchUpSource;
  readonly #category: string | undefined;
  readonly #batch: number;
  readonly #checkpoint: string | undefined;
  readonly #unlisten: () => void;
  readonly #ready: Promise<void>;
  readonly #onClose: (s: CatchUpSubscription) => void;

  constructor(source: CatchUpSource, options: SubscribeOptions, onClose: (s: CatchUpSubscription) => void) {
    this.#source = source;
    this.#category = checkCategory(options.category);
    const batch = options.batchSize ?? DEFAULT_SUBSCRIPTION_BATCH;
    if (!Number.isInteger(batch) || batch < 1 || batch > MAX_READ_COUNT) throw invalidArgument(`batchSize must be an integer from 1 to ${MAX_READ_COUNT} (got ${batch})`);
    this.#batch = batch;
    if (options.checkpoint !== undefined && (typeof options.checkpoint !== 'string' || options.checkpoint.length === 0)) throw invalidArgument('checkpoint must be a non-empty name');
    this.#checkpoint = options.checkpoint;
    const after = checkPositionArg('after', options.after) ?? 0n;
    this.#position = after;
    this.#readPosition = after;
    this.#onClose = onClose;
    this.closed = new Promise((r) => (this.#resolveClosed = r));
    this.#unlisten = source.onAppend(() => {
      this.#dirty = true;
      const w = this.#wake;
      this.#wake = undefined;
      w?.();
    }, options.pollMs);
    this.#ready =
      this.#checkpoint === undefined
        ? Promise.resolve()
        : source.checkpoints.get(this.#checkpoint).then((stored) => {
            if (stored !== undefined) this.#position = this.#readPosition = stored;
          });
    this.#ready.catch(() => {}); // surfaced by next()
    if (options.signal) {
      if (options.signal.aborted) void this.close();
      else options.signal.addEventListener('abort', () => void this.close(), { once: true });
    }
  }

  get position(): bigint {
    return this.#position;
  }

  async commit(position?: bigint): Promise<void> {
    if (this.#checkpoint === undefined) throw invalidArgument('this subscription has no checkpoint name: subscribe with { checkpoint }');
    const p = position ?? this.#position;
    if (typeof p !== 'bigint' || p < 0n) throw invalidArgument(`commit takes a non-negative bigint position (got ${String(p)})`);
    await this.#source.checkpoints.set(this.#checkpoint, p);
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#unlisten();
      const w = this.#wake;
      this.#wake = undefined;
      w?.();
      this.#onClose(this);
      this.#resolveClosed();
    }
    return this.closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** The subscription's one iterator (every call returns the same one; `return()` closes the subscription). */
  [Symbol.asyncIterator](): AsyncIterator<RecordedEvent> {
    return this.#iterator;
  }

  readonly #iterator: AsyncIterator<RecordedEvent> = {
    next: () => this.#next(),
    return: async () => {
      await this.close();
      return { done: true, value: undefined };
    },
  };

  async #next(): Promise<IteratorResult<RecordedEvent>> {
    await this.#ready;
    for (;;) {
      if (this.#closed) return { done: true, value: undefined };
      if (this.#at < this.#buffer.length) {
        const e = this.#buffer[this.#at++]!;
        this.#position = e.position;
        if (this.#at === this.#buffer.length && this.#pageEnd > this.#position) this.#position = this.#pageEnd;
        return { done: false, value: e };
      }
      this.#dirty = false;
      let page: ReadAllResult;
      try {
        page = await this.#source.read(this.#readPosition, this.#batch, this.#category);
      } catch (e) {
        await this.close();
        throw e;
      }
      if (this.#closed) return { done: true, value: undefined };
      this.#buffer = page.events;
      this.#at = 0;
      if (page.position > this.#readPosition) this.#readPosition = page.position;
      this.#pageEnd = this.#readPosition;
      if (page.events.length === 0 && this.#readPosition > this.#position) this.#position = this.#readPosition;
      if (page.events.length > 0 || !page.isEnd) continue;
      // Caught up: wait for an append (or close). An append that landed after the read set #dirty.
      if (this.#dirty) continue;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }
}
