/**
 * The scheduler: publishes delayed messages (`publish(…, { deliverAt })`, `tx.schedule(…)`)
 * when they fall due. Durable through its `SchedulerStore`: a restart (a new scheduler on the
 * same store) fires what is still unfired. None of our brokers offers a usable native delay,
 * so this works the same on every transport.
 *
 * One member fires at a time: schedulers sharing a store hold one lease (scope
 * `scheduler:<name>`, one partition) through the core `PartitionBalancer`. The owner sleeps
 * until the earliest `deliverAt` (`store.nextDue()`, a timer on the injected clock), or until
 * woken by a schedule written in this process (`store.onWrite`) or by its poll (`pollMs`, for
 * writes by other processes). Then it publishes the due messages in `deliverAt` order (ties in
 * the order they were scheduled, where the store keeps it), one transport call per run of one
 * topic, and marks them fired (fenced by the lease).
 *
 * At least once: a crash (or a fenced mark) between the publish and `markFired` publishes those
 * messages again. Never early: a message is published only once the clock's `now()` has
 * reached its `deliverAt` (late by up to the wake-up latency, plus `pollMs` for a schedule
 * written by another process with an earlier time than any this member knew of).
 */
import { type LastError, LeasedLoop, type LeasedLoopOptions, runsByTopic, SerialTask, settlesWithin } from './background-loop.ts';
import { HeraldError, isHeraldError } from './errors.ts';
import type { LeaseFence } from './lease.ts';
import { positiveInt } from './options.ts';
import type { ScheduledRecord, SchedulerStore } from './outbox.ts';
import type { Transport } from './transport.ts';

/** Also: `leases` (the store fences `markFired` against it), `clock`, `random`, `memberId`, `leaseMs` (default 10 000), `onError`, `retryInitialDelayMs` / `retryMaxDelayMs` (100 / 5 000). */
export interface SchedulerOptions extends LeasedLoopOptions {
  readonly store: SchedulerStore;
  readonly transport: Transport;
  /** Schedulers sharing one store use the same name (lease scope `scheduler:<name>`; default 'default'). */
  readonly name?: string;
  /** Due messages read and published per round (default 256). */
  readonly batchSize?: number;
  /** Period of the check for schedules written by other processes, ms (default 1000). */
  readonly pollMs?: number;
}

export interface SchedulerStats {
  /** Messages published (a republish after a failure counts again). */
  fired: number;
  /** transport.publish calls that succeeded. */
  batches: number;
  failures: number;
  /** markFired calls refused because the lease had moved on. */
  fencedOut: number;
  /** Whether this member holds the lease now. */
  leader: boolean;
  lastError: LastError | undefined;
}

export interface Scheduler {
  /** Joins and starts firing when it holds the lease; resolves after the first balancing round. */
  start(): Promise<void>;
  /** Stops: a publish in flight finishes (up to `timeoutMs`, default 10 000) and is marked; the lease is released. Idempotent. */
  close(options?: { timeoutMs?: number }): Promise<void>;
  stats(): Readonly<SchedulerStats>;
  [Symbol.asyncDispose](): Promise<void>;
}

export function createScheduler(options: SchedulerOptions): Scheduler {
  return new SchedulerRuntime(options);
}

class SchedulerRuntime extends LeasedLoop implements Scheduler {
  readonly #o: SchedulerOptions;
  readonly #batchSize: number;
  readonly #stats = { fired: 0, batches: 0, fencedOut: 0 };
  #task: SerialTask | undefined;
  /** The stop of the last task given up, while its run is still going. */
  #stopping: Promise<void> | undefined;
  #stop: AbortController | undefined;
  #failures = 0;
  #dueTimer: { cancel(): void; at: number } | undefined;

  constructor(o: SchedulerOptions) {
    super('scheduler', required(o), { scope: `scheduler:${o.name ?? 'default'}`, partitions: 1, memberPrefix: 'scheduler', wakeSource: o.store, pollMs: o.pollMs ?? 1000 });
    this.#o = o;
    this.#batchSize = positiveInt('batchSize', o.batchSize ?? 256);
  }

  stats(): Readonly<SchedulerStats> {
    return { ...this.#stats, failures: this.failures, lastError: this.lastError, leader: this.#task !== undefined };
  }

  protected assigned(_partition: number, grant: LeaseFence): void {
    this.#lead(grant);
  }

  protected revoked(): Promise<void> {
    return this.#follow(true);
  }

  protected lost(): void {
    void this.#follow(false);
  }

  protected wake(): void {
    this.#task?.kick();
  }

  protected afterClose(): Promise<void> {
    return this.#follow(true);
  }

  #lead(grant: LeaseFence): void {
    void this.#follow(false);
    // A task lost earlier may still have a publish in flight: the new one waits for it, so two
    // never publish at once.
    const previous = this.#stopping ?? Promise.resolve();
    const stop = new AbortController();
    this.#stop = stop;
    this.#failures = 0;
    const task: SerialTask = new SerialTask(
      async () => {
        await previous;
        await this.#fire(task, grant, stop.signal);
      },
      (e) => this.error(e),
    );
    this.#task = task;
    task.kick();
  }

  async #follow(clean: boolean): Promise<void> {
    const task = this.#task;
    this.#task = undefined;
    this.#stop?.abort();
    this.#dueTimer?.cancel();
    this.#dueTimer = undefined;
    if (!task) return;
    const stopped = task.stop();
    this.#stopping = stopped;
    void stopped.finally(() => {
      if (this.#stopping === stopped) this.#stopping = undefined;
    });
    if (clean) await settlesWithin(this.clock, stopped, this.closeTimeoutMs);
  }

  /** Publishes every due message (in rounds of `batchSize`), then arms the timer for the next one. */
  async #fire(task: SerialTask, grant: LeaseFence, signal: AbortSignal): Promise<void> {
    const { store, transport } = this.#o;
    while (!signal.aborted && this.balancer.isSafe(0)) {
      let due: readonly ScheduledRecord[];
      try {
        due = await store.due(this.clock.now(), this.#batchSize);
        if (due.length === 0) {
          const next = await store.nextDue();
          if (this.#task === task) this.#arm(next);
          return;
        }
      } catch (e) {
        if (!(await this.#failed(e, signal))) return;
        continue;
      }
      const published: string[] = [];
      let failure: unknown;
      for (const run of runsByTopic(due)) {
        if (signal.aborted || !this.balancer.isSafe(0)) break;
        try {
          await transport.publish(
            run[0]!.topic,
            run.map((r) => r.message),
          );
        } catch (e) {
          failure = e;
          break;
        }
        this.#stats.batches++;
        this.#stats.fired += run.length;
        for (const r of run) published.push(r.id);
      }
      if (published.length > 0) {
        let marked: boolean;
        try {
          marked = await store.markFired(published, grant);
        } catch (e) {
          // A store may report a fenced write as an error rather than `false`.
          if (isHeraldError(e, 'HERALD_ERR_LEASE_LOST')) marked = false;
          else {
            if (!(await this.#failed(e, signal))) return;
            continue;
          }
        }
        if (!marked) {
          this.#stats.fencedOut++;
          this.error(new HeraldError('HERALD_ERR_LEASE_LOST', `scheduler: markFired of ${published.length} message(s) was fenced out (the lease moved on); they may be published again by the new owner`));
          if (this.#task === task) {
            this.balancer.forget(0);
            void this.#follow(false);
          }
          return;
        }
      }
      if (failure !== undefined) {
        if (!(await this.#failed(failure, signal))) return;
        continue;
      }
      this.#failures = 0;
    }
  }

  /** Sleeps until `at` (epoch ms on the clock), then runs again; keeps an earlier timer already armed. */
  #arm(at: number | undefined): void {
    if (at === undefined || !this.#task) return;
    if (this.#dueTimer && this.#dueTimer.at <= at) return;
    this.#dueTimer?.cancel();
    const task = this.#task;
    const handle = this.clock.setTimer(() => {
      if (this.#dueTimer === armed) this.#dueTimer = undefined;
      task.kick();
    }, Math.max(0, at - this.clock.now()), { unref: true });
    const armed = { at, cancel: () => handle.cancel() };
    this.#dueTimer = armed;
  }

  #failed(e: unknown, signal: AbortSignal): Promise<boolean> {
    return this.failed(e, ++this.#failures, signal);
  }
}

function required(o: SchedulerOptions): SchedulerOptions {
  if (!o?.store || !o.transport || !o.leases) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'createScheduler needs store, transport and leases');
  return o;
}
