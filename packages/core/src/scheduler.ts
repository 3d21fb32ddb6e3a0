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
import { type Clock, type Random, systemClock, systemRandom } from './clock.ts';
import { backoffSleep, every, type LastError, lastError, type LoopRetryOptions, loopRetryPolicy, randomMemberId, runsByTopic, SerialTask, settlesWithin } from './background-loop.ts';
import { HeraldError, isHeraldError } from './errors.ts';
import { type LeaseFence, type LeaseStore, PartitionBalancer } from './lease.ts';
import { positiveInt } from './options.ts';
import type { ScheduledRecord, SchedulerStore } from './outbox.ts';
import type { RetryPolicy } from './router.ts';
import type { Transport } from './transport.ts';

export interface SchedulerOptions extends LoopRetryOptions {
  readonly store: SchedulerStore;
  readonly transport: Transport;
  /** Where schedulers lease the right to fire; the store fences `markFired` against the same store. */
  readonly leases: LeaseStore;
  /** Schedulers sharing one store use the same name (lease scope `scheduler:<name>`; default 'default'). */
  readonly name?: string;
  readonly clock?: Clock;
  readonly random?: Random;
  readonly memberId?: string;
  /** Due messages read and published per round (default 256). */
  readonly batchSize?: number;
  /** Period of the check for schedules written by other processes, ms (default 1000). */
  readonly pollMs?: number;
  /** Lease time to live, ms (default 10 000). */
  readonly leaseMs?: number;
  readonly onError?: (error: unknown) => void;
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

class SchedulerRuntime implements Scheduler {
  readonly #o: SchedulerOptions;
  readonly #clock: Clock;
  readonly #random: Random;
  readonly #batchSize: number;
  readonly #pollMs: number;
  readonly #retry: RetryPolicy;
  readonly #balancer: PartitionBalancer;
  readonly #stats: SchedulerStats = { fired: 0, batches: 0, failures: 0, fencedOut: 0, leader: false, lastError: undefined };
  #task: SerialTask | undefined;
  /** The stop of the last task given up, while its run is still going. */
  #stopping: Promise<void> | undefined;
  #stop: AbortController | undefined;
  #failures = 0;
  #dueTimer: { cancel(): void; at: number } | undefined;
  #pollTimer: { cancel(): void } | undefined;
  #unsubscribe: (() => void) | undefined;
  #closeTimeoutMs = 10_000;
  #started = false;
  #closed = false;
  #closePromise: Promise<void> | undefined;

  constructor(o: SchedulerOptions) {
    if (!o.store || !o.transport || !o.leases) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'createScheduler needs store, transport and leases');
    this.#o = o;
    this.#clock = o.clock ?? systemClock;
    this.#random = o.random ?? systemRandom;
    this.#batchSize = positiveInt('batchSize', o.batchSize ?? 256);
    this.#pollMs = positiveInt('pollMs', o.pollMs ?? 1000);
    this.#retry = loopRetryPolicy(o);
    this.#balancer = new PartitionBalancer({
      store: o.leases,
      scope: `scheduler:${o.name ?? 'default'}`,
      memberId: o.memberId ?? randomMemberId('scheduler', this.#random),
      partitions: 1,
      leaseMs: o.leaseMs ?? 10_000,
      clock: this.#clock,
      onAssigned: (_p, grant) => this.#lead(grant),
      onRevoke: () => this.#follow(true),
      onLost: () => void this.#follow(false),
      onError: (e) => this.#error(e),
    });
  }

  async start(): Promise<void> {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'scheduler is closed');
    if (this.#started) return;
    this.#started = true;
    this.#unsubscribe = this.#o.store.onWrite(() => this.#task?.kick());
    this.#pollTimer = every(this.#clock, this.#pollMs, () => this.#task?.kick());
    // The balancer's own first round runs on an unref'd timer; run one now so that start()
    // resolves even when nothing else keeps the event loop alive.
    void this.#balancer.start();
    await this.#balancer.tick();
  }

  close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.#closePromise) {
      this.#closeTimeoutMs = options.timeoutMs ?? 10_000;
      this.#closePromise = this.#close();
    }
    return this.#closePromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  stats(): Readonly<SchedulerStats> {
    return { ...this.#stats, leader: this.#task !== undefined };
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
      (e) => this.#error(e),
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
    if (clean) await settlesWithin(this.#clock, stopped, this.#closeTimeoutMs);
  }

  /** Publishes every due message (in rounds of `batchSize`), then arms the timer for the next one. */
  async #fire(task: SerialTask, grant: LeaseFence, signal: AbortSignal): Promise<void> {
    const { store, transport } = this.#o;
    while (!signal.aborted && this.#balancer.isSafe(0)) {
      let due: readonly ScheduledRecord[];
      try {
        due = await store.due(this.#clock.now(), this.#batchSize);
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
        if (signal.aborted || !this.#balancer.isSafe(0)) break;
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
          this.#error(new HeraldError('HERALD_ERR_LEASE_LOST', `scheduler: markFired of ${published.length} message(s) was fenced out (the lease moved on); they may be published again by the new owner`));
          if (this.#task === task) {
            this.#balancer.forget(0);
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
    const handle = this.#clock.setTimer(() => {
      if (this.#dueTimer === armed) this.#dueTimer = undefined;
      task.kick();
    }, Math.max(0, at - this.#clock.now()), { unref: true });
    const armed = { at, cancel: () => handle.cancel() };
    this.#dueTimer = armed;
  }

  async #failed(e: unknown, signal: AbortSignal): Promise<boolean> {
    this.#failures++;
    this.#stats.failures++;
    this.#error(e);
    return backoffSleep(this.#clock, this.#retry, this.#failures, this.#random, signal);
  }

  #error(e: unknown): void {
    this.#stats.lastError = lastError(e, this.#clock);
    this.#o.onError?.(e);
  }

  async #close(): Promise<void> {
    this.#closed = true;
    this.#pollTimer?.cancel();
    this.#unsubscribe?.();
    await this.#balancer.stop();
    await this.#follow(true);
  }
}
