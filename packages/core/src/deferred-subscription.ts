/**
 * The subscription a transport's synchronous `subscribe()` returns when the real one can only be
 * built after asynchronous setup (reading topic metadata from the broker, registering the
 * group). Until then it owns no partitions and iteration waits; afterwards every call goes to
 * the inner subscription. A setup that throws ends it: `closed` rejects with the error and the
 * iterator ends. `close()` during setup closes the inner subscription as soon as it exists.
 */
import type { LeaseFence } from './lease.ts';
import type { Delivery, Subscription } from './transport.ts';

export class DeferredSubscription<S extends Subscription> implements Subscription {
  readonly topic: string;
  readonly group: string;
  readonly memberId: string;
  readonly closed: Promise<void>;
  readonly #ready: Promise<S | undefined>;
  #inner: S | undefined;
  #closing = false;
  #closePromise: Promise<void> | undefined;
  readonly #onCloseRequested: (() => void) | undefined;
  #resolveClosed!: () => void;
  #rejectClosed!: (e: unknown) => void;

  /**
   * `start` runs on the next microtask (so a subclass's fields exist by then); it returns the
   * inner subscription, or undefined when it gave up because close() was called.
   * `onCloseRequested` lets a setup that is waiting (a retry back-off) stop at once.
   */
  constructor(topic: string, group: string, memberId: string, start: () => Promise<S | undefined>, onCloseRequested?: () => void) {
    this.topic = topic;
    this.group = group;
    this.memberId = memberId;
    this.#onCloseRequested = onCloseRequested;
    this.closed = new Promise<void>((resolve, reject) => {
      this.#resolveClosed = resolve;
      this.#rejectClosed = reject;
    });
    this.closed.catch(() => {});
    this.#ready = Promise.resolve()
      .then(start)
      .then(
        (inner) => {
          if (!inner) {
            this.#resolveClosed();
            return undefined;
          }
          this.#inner = inner;
          inner.closed.then(this.#resolveClosed, this.#rejectClosed);
          return inner; // a close() already asked for closes it through #ready
        },
        (e: unknown) => {
          this.#rejectClosed(e);
          return undefined;
        },
      );
  }

  /** The inner subscription once set up. */
  protected get inner(): S | undefined {
    return this.#inner;
  }

  /** Whether close() was called (a setup still running should give up). */
  protected get closing(): boolean {
    return this.#closing;
  }

  assignment(): readonly number[] {
    return this.#inner?.assignment() ?? [];
  }

  fence(partition: number): LeaseFence | undefined {
    return this.#inner?.fence?.(partition);
  }

  [Symbol.asyncIterator](): AsyncIterator<Delivery> {
    let it: AsyncIterator<Delivery> | undefined;
    return {
      next: async () => {
        if (!it) {
          const inner = await this.#ready;
          if (!inner) return { done: true, value: undefined };
          it = inner[Symbol.asyncIterator]();
        }
        return it.next();
      },
      return: async () => ({ done: true, value: undefined }),
    };
  }

  close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.#closePromise) {
      this.#closing = true;
      this.#onCloseRequested?.();
      this.#closePromise = this.#ready.then(async (inner) => {
        if (inner) await inner.close(options);
      });
    }
    return this.#closePromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
