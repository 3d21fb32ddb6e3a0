/**
 * The outbox relay: publishes the rows a unit of work wrote to its outbox, at least once, in
 * per-key order, and marks them sent.
 *
 * How it orders. Outbox rows carry `partition = hash(key) mod P`; rows of one key are in one
 * partition, in commit order. Relays divide the P partitions through the core
 * `PartitionBalancer` (lease scope `outbox:<name>`): one relay per partition at a time. Per
 * owned partition the relay reads the unsent rows oldest first (`batchSize` at most), cuts
 * them into runs of consecutive rows of one topic, and publishes the runs one after the other
 * with one `transport.publish` call each. Calls for one partition never overlap: the transport
 * promises order inside one call, not between concurrent calls, so a later row can never
 * overtake an earlier one. Partitions run in parallel (at most `maxInFlightPublishes` calls in
 * flight across them).
 *
 * How it marks. After the runs of a batch (or up to the first failed run) it marks sent the
 * unbroken confirmed prefix: `markSent(partition, lastConfirmedId, fence)`. A failed publish
 * stops the batch; after a backoff the relay reads the unsent rows again and resends from the
 * first unconfirmed row (the failed call may have stored some or all of its messages:
 * duplicates, never gaps). `markSent` is fenced by the lease: a relay that lost its lease
 * cannot mark, counts `fencedOut` and forgets the partition.
 *
 * When it wakes. At once after a commit in this process (`store.onWrite`), and every `pollMs`
 * for rows committed by other processes.
 *
 * At least once: a relay that dies (or is closed past its timeout) between a publish and its
 * `markSent` leaves rows unmarked; the partition's next owner publishes them again.
 */
import { every, type LastError, LeasedLoop, type LeasedLoopOptions, runsByTopic, SerialTask, settlesWithin } from './background-loop.ts';
import { HeraldError, isHeraldError } from './errors.ts';
import { channels, traced } from './instrumentation.ts';
import type { LeaseFence } from './lease.ts';
import { nonNegativeInt, positiveInt } from './options.ts';
import type { OutboxBacklog, OutboxRecord, OutboxStore } from './outbox.ts';
import type { Transport } from './transport.ts';

export interface OutboxRetention {
  /** Sent rows are deleted this long after they were sent, ms (default 3 600 000: one hour; 0: at the next purge). */
  readonly sentRetentionMs: number;
  /** How often the relay purges, ms (default 60 000; 0 disables purging). */
  readonly purgeEveryMs: number;
}

/** Also: `leases` (the store fences `markSent` against it), `clock`, `random`, `memberId`, `leaseMs` (default 10 000), `onError`, `retryInitialDelayMs` / `retryMaxDelayMs` (100 / 5 000). */
export interface OutboxRelayOptions extends LeasedLoopOptions {
  readonly store: OutboxStore;
  readonly transport: Transport;
  /** Relays sharing one outbox use the same name (lease scope `outbox:<name>`; default 'default'). */
  readonly name?: string;
  /** Rows read (and published at most) per partition per round (default 256). */
  readonly batchSize?: number;
  /** transport.publish calls in flight at once, across partitions (default 8). */
  readonly maxInFlightPublishes?: number;
  /** Period of the poll for rows written by other processes, ms (default 250). */
  readonly pollMs?: number;
  readonly retention?: Partial<OutboxRetention>;
}

export interface OutboxRelayStats {
  /** Messages published (resends included). */
  published: number;
  /** transport.publish calls that succeeded. */
  batches: number;
  /** Messages published again after a failure had left them unconfirmed. */
  resent: number;
  /** Failed publish or store calls. */
  failures: number;
  /** markSent calls refused because the lease had moved on. */
  fencedOut: number;
  /** Sent rows deleted by retention. */
  purged: number;
  /** Partitions owned now. */
  partitions: number;
  lastError: LastError | undefined;
}

export interface OutboxRelay {
  /** Joins the relay group and starts publishing; resolves after the first balancing round. */
  start(): Promise<void>;
  /**
   * Stops: nothing new is published, publishes in flight finish (up to `timeoutMs`, default
   * 10 000) and are marked, partitions are released. Publishes still running at the deadline
   * are abandoned unmarked (their rows are published again by the next owner). Idempotent.
   */
  close(options?: { timeoutMs?: number }): Promise<void>;
  stats(): Readonly<OutboxRelayStats>;
  /** Unsent rows in the whole outbox (every partition, whoever owns it): count and oldest. */
  backlog(): Promise<OutboxBacklog>;
  [Symbol.asyncDispose](): Promise<void>;
}

export const DEFAULT_OUTBOX_RETENTION: OutboxRetention = Object.freeze({ sentRetentionMs: 3_600_000, purgeEveryMs: 60_000 });

const PURGE_LIMIT = 1000;

export function createOutboxRelay(options: OutboxRelayOptions): OutboxRelay {
  return new Relay(options);
}

interface PartitionWorker {
  readonly partition: number;
  /** The lease this worker publishes under; its marks are fenced by it (owner and epoch). */
  readonly grant: LeaseFence;
  readonly task: SerialTask;
  /** Resolves once the partition's previous worker (lost, its call maybe still in flight) has stopped: two workers never publish one partition at once. */
  readonly ready: Promise<void>;
  /** Aborted on revoke, loss or close: backoff sleeps end, no new publish starts. */
  readonly stop: AbortController;
  /** Set when close gave up waiting: nothing more is marked. */
  abandoned: boolean;
  /** Highest row id handed to a publish that then failed (or whose mark failed); rows up to it count as resends. */
  attemptedUpTo: string | undefined;
  failures: number;
}

/** A counting semaphore: at most `n` holders. */
class Slots {
  #free: number;
  readonly #waiting: Array<() => void> = [];
  constructor(n: number) {
    this.#free = n;
  }
  async take(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }
  give(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free++;
  }
}

class Relay extends LeasedLoop implements OutboxRelay {
  readonly #o: OutboxRelayOptions;
  readonly #batchSize: number;
  readonly #retention: OutboxRetention;
  readonly #slots: Slots;
  readonly #workers = new Map<number, PartitionWorker>();
  /** Stops of lost workers still in flight, per partition. */
  readonly #stopping = new Map<number, Promise<void>>();
  readonly #stats = { published: 0, batches: 0, resent: 0, fencedOut: 0, purged: 0 };
  #purgeTimer: { cancel(): void } | undefined;
  #purging = false;

  constructor(o: OutboxRelayOptions) {
    super('outbox relay', required(o), {
      scope: `outbox:${o.name ?? 'default'}`,
      partitions: o.store.partitions,
      memberPrefix: 'relay',
      wakeSource: o.store,
      pollMs: o.pollMs ?? 250,
    });
    this.#o = o;
    this.#batchSize = positiveInt('batchSize', o.batchSize ?? 256);
    this.#slots = new Slots(positiveInt('maxInFlightPublishes', o.maxInFlightPublishes ?? 8));
    this.#retention = {
      sentRetentionMs: nonNegativeInt('retention.sentRetentionMs', o.retention?.sentRetentionMs ?? DEFAULT_OUTBOX_RETENTION.sentRetentionMs),
      purgeEveryMs: nonNegativeInt('retention.purgeEveryMs', o.retention?.purgeEveryMs ?? DEFAULT_OUTBOX_RETENTION.purgeEveryMs),
    };
  }

  override async start(): Promise<void> {
    if (!this.closed && this.#retention.purgeEveryMs > 0) this.#purgeTimer ??= every(this.clock, this.#retention.purgeEveryMs, () => void this.#purge());
    await super.start();
  }

  stats(): Readonly<OutboxRelayStats> {
    return { ...this.#stats, failures: this.failures, lastError: this.lastError, partitions: this.#workers.size };
  }

  backlog(): Promise<OutboxBacklog> {
    return this.#o.store.backlog();
  }

  // ── partitions ───────────────────────────────────────────────────────────

  protected assigned(partition: number, grant: LeaseFence): void {
    this.lost(partition);
    const worker: PartitionWorker = {
      partition,
      grant,
      ready: this.#stopping.get(partition) ?? Promise.resolve(),
      task: new SerialTask(
        () => this.#drain(worker),
        (e) => this.error(e),
      ),
      stop: new AbortController(),
      abandoned: false,
      attemptedUpTo: undefined,
      failures: 0,
    };
    this.#workers.set(partition, worker);
    worker.task.kick();
  }

  /** Clean hand-over: finish (and mark) the publish in flight, then let the lease go. Bounded by close's timeout. */
  protected async revoked(partition: number): Promise<void> {
    const w = this.#workers.get(partition);
    if (!w) return;
    w.stop.abort();
    if (!(await settlesWithin(this.clock, w.task.stop(), this.closeTimeoutMs))) w.abandoned = true;
    if (this.#workers.get(partition) === w) this.#workers.delete(partition);
  }

  protected lost(partition: number, only?: PartitionWorker): void {
    const w = this.#workers.get(partition);
    if (!w || (only !== undefined && w !== only)) return;
    w.stop.abort();
    this.#workers.delete(partition);
    const stopped = w.task.stop();
    this.#stopping.set(partition, stopped);
    void stopped.finally(() => {
      if (this.#stopping.get(partition) === stopped) this.#stopping.delete(partition);
    });
  }

  protected wake(): void {
    for (const w of this.#workers.values()) w.task.kick();
  }

  /**
   * Publishes the partition's unsent rows until none is left (or the worker is stopped):
   * read a batch, publish its topic runs one call at a time, mark the confirmed prefix.
   */
  async #drain(w: PartitionWorker): Promise<void> {
    const { store, transport } = this.#o;
    const p = w.partition;
    await w.ready;
    while (!w.stop.signal.aborted && this.balancer.isSafe(p)) {
      let rows: readonly OutboxRecord[];
      try {
        rows = await store.pending(p, this.#batchSize);
      } catch (e) {
        if (!(await this.#failed(w, e))) return;
        continue;
      }
      if (rows.length === 0) return;
      let confirmed: string | undefined;
      let failure: unknown;
      for (const run of runsByTopic(rows)) {
        if (w.stop.signal.aborted || !this.balancer.isSafe(p)) break;
        await this.#slots.take();
        try {
          const topic = run[0]!.topic;
          const messages = run.map((r) => r.message);
          await traced(
            channels.relay,
            () => ({ topic, partition: p, messages }),
            () => transport.publish(topic, messages),
          );
        } catch (e) {
          failure = e;
          w.attemptedUpTo = maxId(w.attemptedUpTo, run[run.length - 1]!.id);
          break;
        } finally {
          this.#slots.give();
        }
        this.#stats.batches++;
        this.#stats.published += run.length;
        if (w.attemptedUpTo !== undefined) this.#stats.resent += run.filter((r) => compareIds(r.id, w.attemptedUpTo!) <= 0).length;
        confirmed = run[run.length - 1]!.id;
      }
      if (confirmed !== undefined && !w.abandoned) {
        let marked: boolean;
        try {
          marked = await store.markSent(p, confirmed, w.grant);
        } catch (e) {
          // A store may report a fenced write as an error rather than `false`.
          if (isHeraldError(e, 'HERALD_ERR_LEASE_LOST')) marked = false;
          else {
            w.attemptedUpTo = maxId(w.attemptedUpTo, confirmed);
            if (!(await this.#failed(w, e))) return;
            continue;
          }
        }
        if (!marked) {
          this.#stats.fencedOut++;
          this.error(new HeraldError('HERALD_ERR_LEASE_LOST', `outbox partition ${p}: markSent up to ${confirmed} was fenced out (the lease moved on); stopping this partition`, { details: { partition: p, upTo: confirmed } }));
          if (this.#workers.get(p) === w) {
            this.balancer.forget(p);
            this.lost(p, w);
          }
          return;
        }
        if (w.attemptedUpTo !== undefined && compareIds(confirmed, w.attemptedUpTo) >= 0) w.attemptedUpTo = undefined;
      }
      if (failure !== undefined) {
        if (!(await this.#failed(w, failure))) return;
        continue;
      }
      w.failures = 0;
    }
  }

  /** Records a failure and sleeps the backoff; false when the worker was stopped meanwhile. */
  #failed(w: PartitionWorker, e: unknown): Promise<boolean> {
    return this.failed(e, ++w.failures, w.stop.signal);
  }

  async #purge(): Promise<void> {
    if (this.#purging) return;
    this.#purging = true;
    const before = this.clock.now() - this.#retention.sentRetentionMs;
    try {
      for (;;) {
        const n = await this.#o.store.purgeSent(before, PURGE_LIMIT);
        this.#stats.purged += n;
        if (n < PURGE_LIMIT || this.closed) return;
      }
    } catch (e) {
      this.error(e);
    } finally {
      this.#purging = false;
    }
  }

  protected afterClose(): void {
    this.#purgeTimer?.cancel();
    for (const w of this.#workers.values()) {
      w.stop.abort();
      w.abandoned = true;
    }
    this.#workers.clear();
  }
}

function required(o: OutboxRelayOptions): OutboxRelayOptions {
  if (!o?.store || !o.transport || !o.leases) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'createOutboxRelay needs store, transport and leases');
  positiveInt('store.partitions', o.store.partitions);
  return o;
}

/** Orders decimal id strings without leading zeros (as `OutboxRecord.id` is) numerically. */
export function compareIds(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

function maxId(a: string | undefined, b: string): string {
  return a === undefined || compareIds(b, a) > 0 ? b : a;
}
