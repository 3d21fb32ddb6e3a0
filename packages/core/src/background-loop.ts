/**
 * A task that runs one at a time and can be asked to run again while it runs ("kicked"):
 * the loop behind the outbox relay's partitions and the scheduler. A kick during a run makes
 * exactly one more run after it; kicks while idle start a run at once.
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

  /** True when a kick arrived during the current run (the run may stop early and let the next one go). */
  get kickedAgain(): boolean {
    return this.#again;
  }

  get stopped(): boolean {
    return this.#stopped;
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
