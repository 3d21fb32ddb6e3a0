/**
 * The bound of a group-commit queue (the event store's appends, the transport's publishes): at
 * most `max` units (events, messages) queued or being written; a caller that does not fit waits,
 * FIFO behind earlier waiters. A single request larger than the bound is admitted alone (when
 * nothing else is queued), so it cannot wait forever.
 */
export class Admission {
  readonly max: number;
  #used = 0;
  readonly #waiters: Array<{ n: number; go: () => void }> = [];

  constructor(max: number) {
    this.max = max;
  }

  /** Units admitted and not yet released. */
  get used(): number {
    return this.#used;
  }

  /** Whether callers are waiting for room. */
  get waiting(): boolean {
    return this.#waiters.length > 0;
  }

  /** Reserves `n` units: at once when they fit (undefined), else a promise resolved when admitted. */
  acquire(n: number): Promise<void> | undefined {
    if (this.#waiters.length === 0 && (this.#used === 0 || this.#used + n <= this.max)) {
      this.#used += n;
      return undefined;
    }
    return new Promise<void>((go) => this.#waiters.push({ n, go }));
  }

  /** Gives `n` units back and admits the waiters that now fit, in order. */
  release(n: number): void {
    this.#used -= n;
    while (this.#waiters.length > 0) {
      const w = this.#waiters[0]!;
      if (this.#used > 0 && this.#used + w.n > this.max) break;
      this.#waiters.shift();
      this.#used += w.n;
      w.go();
    }
  }
}
