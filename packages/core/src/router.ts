/**
 * The consumer runtime (router). It subscribes a consumer group to every topic its handlers
 * name and runs each delivery through one pipeline:
 *
 *   router scheduling (per-key lanes, concurrency limit)
 *     → parked-key check (park mode)
 *     → resolve definition by type and version, decode + validate (failures are permanent)
 *     → dead-letter (outermost: the final failure is stored, then the delivery is rejected)
 *       → retry (exponential backoff with jitter, in place for ordered handlers: the key stays
 *         blocked and the message unacked; broker redelivery via nack only for ordering 'none')
 *         → timeout (an AbortSignal per attempt)
 *           → user middleware, first registered = outermost
 *             → handler
 *
 * Deliveries with the same partition key are handled one at a time in log order; different
 * keys run in parallel, also inside one partition (offsets commit at the low watermark).
 * Messages without a key, and handlers declared `ordering: 'none'`, are not ordered.
 *
 * Redrive: the member owning a dead letter's partition picks entries marked for redrive from
 * the DeadLetterStore and runs them through the same handler, in the key's lane.
 */
import { setMaxListeners } from 'node:events';
import { type Clock, type Random, systemClock, systemRandom } from './clock.ts';
import type { DeadLetterEntry, DeadLetterStore, NewDeadLetter } from './dead-letter.ts';
import { checkData, isThenable, type MessageDefinition, versionOf } from './definitions.ts';
import type { CloudEvent } from './envelope.ts';
import { describeError, HeraldError, isHeraldError, isRetryable } from './errors.ts';
import type { LeaseFence } from './lease.ts';
import type { Delivery, PartitionChange, Subscription, Transport } from './transport.ts';
import type { InboxResult, Transaction, UnitOfWork } from './unit-of-work.ts';
import { channels, notify, traceHandle, type DeadLetterMessage, type DeliverMessage, type RetryMessage } from './instrumentation.ts';

export interface RetryPolicy {
  /** Attempts in all, the first included (default 5). 1 disables retries. */
  readonly maxAttempts: number;
  /** Delay before the second attempt, ms (default 100). */
  readonly initialDelayMs: number;
  /** Upper bound of one delay, ms (default 30 000). */
  readonly maxDelayMs: number;
  /** Growth per attempt (default 2). */
  readonly multiplier: number;
  /** Random spread as a fraction of the delay, 0..1 (default 0.2: ±20 %). */
  readonly jitter: number;
  /** In-place retries stop (and the message is dead-lettered) once this long has passed since the first failure, ms (default 300 000; 0 disables). */
  readonly inPlaceMaxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = Object.freeze({
  maxAttempts: 5,
  initialDelayMs: 100,
  maxDelayMs: 30_000,
  multiplier: 2,
  jitter: 0.2,
  inPlaceMaxDelayMs: 300_000,
});

export interface HandlerOptions {
  /** Name in dead letters, logs and stats (default: the event type). */
  readonly name?: string;
  /** Topic to consume (default: the definition's topic). */
  readonly topic?: string;
  readonly retry?: Partial<RetryPolicy>;
  /** Per-attempt time limit, ms; the attempt's signal aborts then (default: the consumer's; 0 disables). */
  readonly timeoutMs?: number;
  /** 'key' (default): per-key order, retries in place. 'none': no order, retries through broker redelivery. */
  readonly ordering?: 'key' | 'none';
  /** After a message of a key is dead-lettered: 'continue' (default) with later messages, or 'park' them. */
  readonly onDeadLetter?: 'continue' | 'park';
  /**
   * What this handler may publish (choreography: `describe()`, `describeFlow()`): definitions,
   * `{ topic, type }`, or bare type names (topic unknown). A declaration, not enforced.
   */
  readonly produces?: readonly (MessageDefinition | ProducedMessage | string)[];
}

/** A message a handler declares it may publish. */
export interface ProducedMessage {
  /** Undefined when the topic is chosen at publish time. */
  readonly topic?: string | undefined;
  readonly type: string;
  readonly version?: number | undefined;
}

/** One registered handler, as `Consumer.describe()` reports it. */
export interface ConsumedMessage {
  readonly topic: string;
  /** The event type, or '*' for a catch-all envelope handler. */
  readonly type: string;
  /** The definition's version; undefined for an envelope handler (any version). */
  readonly version: number | undefined;
  readonly handler: string;
  readonly produces: readonly ProducedMessage[];
}

export interface ConsumerDescription {
  readonly group: string;
  readonly consumes: readonly ConsumedMessage[];
}

export interface HandlerContext {
  readonly envelope: CloudEvent;
  /** The transport delivery; absent when the message comes from a dead-letter redrive. */
  readonly delivery: Delivery | undefined;
  /** 1-based attempt number. */
  readonly attempt: number;
  /** Aborted on the attempt's time limit and on a hard close. */
  readonly signal: AbortSignal;
  readonly group: string;
  readonly handler: string;
  readonly topic: string;
  readonly partition: number;
  readonly key: string | undefined;
  readonly redrive: boolean;
  readonly clock: Clock;
}

export interface MessageContext extends HandlerContext {
  /** Decoded (and validated, when validation is on) data. */
  readonly data: unknown;
  readonly definition: MessageDefinition | undefined;
  /**
   * Inbox: runs `fn` in one transaction of the consumer's `unitOfWork` that also records this
   * message's inbox key (group, handler, envelope source, envelope id). When the key is already
   * recorded (a redelivery of a message whose transaction committed), `fn` does not run, the
   * result is `{ duplicate: true }` and `stats().inboxDuplicates` counts it; the handler goes on
   * and the message is acked as usual. Outgoing messages go through `tx.publish` (build them
   * with `publisher.envelope(def, data, { causedBy: ctx.envelope })` for causation).
   * Without `unitOfWork`: `HERALD_ERR_NOT_CONFIGURED`. Type the native handle by annotating
   * the parameter: `ctx.transaction((tx: Transaction<Database>) => …)`.
   */
  transaction<R, Native = unknown>(fn: (tx: Transaction<Native>) => Promise<R> | R): Promise<InboxResult<R>>;
}

export type MessageHandler = (ctx: MessageContext) => Promise<void>;
/** Middleware wraps the next handler; the first registered is the outermost. */
export type Middleware = (next: MessageHandler) => MessageHandler;

export interface ConsumerOptions {
  readonly transport: Transport;
  readonly group: string;
  readonly deadLetters: DeadLetterStore;
  readonly clock?: Clock;
  readonly random?: Random;
  /** Handlers running at once across all keys and topics (default 64). */
  readonly concurrency?: number;
  readonly maxInFlight?: number;
  readonly maxUncommittedPerPartition?: number;
  readonly retry?: Partial<RetryPolicy>;
  /** Default per-attempt time limit, ms (default 30 000; 0 disables). */
  readonly timeoutMs?: number;
  /** Validate data against definitions at consume (default true). */
  readonly validate?: boolean;
  readonly middleware?: readonly Middleware[];
  /** How often the owner of a partition looks for redriven dead letters and refreshes parked keys, ms (default 500). */
  readonly redrivePollMs?: number;
  readonly memberId?: string;
  /** Errors the runtime handled itself (a store write that failed, a lost lease); for logs. */
  readonly onError?: (error: unknown) => void;
  /** The unit of work behind `ctx.transaction` (the inbox); without it `ctx.transaction` throws. */
  readonly unitOfWork?: UnitOfWork;
}

export interface ConsumerStats {
  received: number;
  handled: number;
  skipped: number;
  failedAttempts: number;
  retried: number;
  deadLettered: number;
  parked: number;
  redriven: number;
  /** `ctx.transaction` calls that found the message already recorded in the inbox (no second effect). */
  inboxDuplicates: number;
}

export interface Consumer {
  /** Registers a typed handler for one event type and version. One handler per (topic, type, version) in a consumer. */
  handle<T>(definition: MessageDefinition<T>, handler: (data: T, ctx: MessageContext) => Promise<void> | void, options?: HandlerOptions): this;
  /** Registers a handler for raw envelopes of `type` ('*' for every type without another handler) on `topic`; no schema. */
  handleEnvelope(topic: string, type: string, handler: (envelope: CloudEvent, ctx: MessageContext) => Promise<void> | void, options?: HandlerOptions): this;
  /** Subscribes to every handled topic. */
  start(): Promise<void>;
  /** Partitions this member owns on `topic`. */
  assignment(topic: string): readonly number[];
  stats(): Readonly<ConsumerStats>;
  /** What this consumer handles and what its handlers declare they produce (a plain, serializable value). */
  describe(): ConsumerDescription;
  /**
   * Graceful drain: nothing new starts, queued work is dropped unacked, running handlers
   * finish (up to `timeoutMs`, default 10 000), acked offsets are committed. At the deadline
   * running handlers' signals abort and their messages are abandoned unacked. Idempotent.
   */
  close(options?: { timeoutMs?: number }): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

interface Route {
  readonly topic: string;
  readonly type: string;
  readonly name: string;
  readonly versions: Map<number, { def: MessageDefinition; fn: MessageHandler }>;
  any: MessageHandler | undefined;
  readonly retry: RetryPolicy;
  readonly timeoutMs: number;
  readonly ordering: 'key' | 'none';
  readonly onDeadLetter: 'continue' | 'park';
}

interface TopicState {
  readonly topic: string;
  sub: Subscription | undefined;
  readonly parked: Set<string>;
  parkGeneration: number;
  /** Partitions whose parked keys are still loading: their deliveries wait here, in order. */
  readonly loading: Map<number, Delivery[]>;
  pump: Promise<void> | undefined;
}

interface Job {
  readonly lane: string | undefined;
  readonly topic: TopicState;
  readonly delivery?: Delivery;
  readonly redrive?: DeadLetterEntry;
}

export function createConsumer(options: ConsumerOptions): Consumer {
  return new ConsumerRuntime(options);
}

class ConsumerRuntime implements Consumer {
  readonly #o: ConsumerOptions;
  readonly #clock: Clock;
  readonly #random: Random;
  readonly #concurrency: number;
  readonly #defaultRetry: RetryPolicy;
  readonly #defaultTimeout: number;
  readonly #validate: boolean;
  readonly #routes = new Map<string, Map<string, Route>>();
  readonly #topics = new Map<string, TopicState>();
  readonly #lanes = new Map<string, Job[]>();
  readonly #waiting: Job[] = [];
  #running = 0;
  readonly #runningJobs = new Set<Promise<void>>();
  readonly #redriving = new Set<string>();
  readonly #described: ConsumedMessage[] = [];
  readonly #stats: ConsumerStats = { received: 0, handled: 0, skipped: 0, failedAttempts: 0, retried: 0, deadLettered: 0, parked: 0, redriven: 0, inboxDuplicates: 0 };
  #started = false;
  #closing = false;
  #closePromise: Promise<void> | undefined;
  /** Aborted when close begins: retry sleeps stop. */
  readonly #drain = new AbortController();
  /** Aborted at the close deadline: running handlers' signals abort. */
  readonly #hard = new AbortController();
  #redriveTimer: { cancel(): void } | undefined;
  /** Attempts running now (their signals abort on a hard close or past their deadline). */
  readonly #attempts = new Set<AttemptSignal>();
  #sweepTimer: { cancel(): void } | undefined;
  #sweepMs = 250;

  constructor(options: ConsumerOptions) {
    if (!options.group) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'consumer needs a group');
    if (!options.deadLetters) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'consumer needs a deadLetters store');
    this.#o = options;
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? systemRandom;
    this.#concurrency = options.concurrency ?? 64;
    if (!Number.isInteger(this.#concurrency) || this.#concurrency < 1) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `concurrency must be a positive integer (got ${options.concurrency})`);
    this.#defaultRetry = resolveRetry(DEFAULT_RETRY, options.retry);
    this.#defaultTimeout = options.timeoutMs ?? 30_000;
    this.#validate = options.validate ?? true;
    // Every running attempt listens on these; the bound is `concurrency`, not a leak.
    setMaxListeners(0, this.#drain.signal, this.#hard.signal);
  }

  handle<T>(definition: MessageDefinition<T>, handler: (data: T, ctx: MessageContext) => Promise<void> | void, options: HandlerOptions = {}): this {
    const topic = options.topic ?? definition.topic;
    if (topic === undefined) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `no topic for handler of "${definition.type}": pass { topic } or define it with { topic }`);
    const produces = producedBy(options.name ?? definition.type, options);
    const route = this.#route(topic, definition.type, options);
    if (route.versions.has(definition.version)) {
      throw new HeraldError('HERALD_ERR_DUPLICATE_DEFINITION', `group "${this.#o.group}" already handles "${definition.type}" v${definition.version} on "${topic}"`);
    }
    route.versions.set(definition.version, { def: definition as MessageDefinition, fn: this.#chain((ctx) => Promise.resolve(handler(ctx.data as T, ctx))) });
    this.#described.push({ topic, type: definition.type, version: definition.version, handler: route.name, produces });
    return this;
  }

  handleEnvelope(topic: string, type: string, handler: (envelope: CloudEvent, ctx: MessageContext) => Promise<void> | void, options: HandlerOptions = {}): this {
    const produces = producedBy(options.name ?? type, options);
    const route = this.#route(topic, type, options);
    if (route.any) throw new HeraldError('HERALD_ERR_DUPLICATE_DEFINITION', `group "${this.#o.group}" already handles envelopes of "${type}" on "${topic}"`);
    route.any = this.#chain((ctx) => Promise.resolve(handler(ctx.envelope, ctx)));
    this.#described.push({ topic, type, version: undefined, handler: route.name, produces });
    return this;
  }

  describe(): ConsumerDescription {
    return { group: this.#o.group, consumes: this.#described.map((c) => ({ ...c, produces: c.produces.map((p) => ({ ...p })) })) };
  }

  /** `startedAt`: the attempt's start (this consumer's clock), so the inbox record keeps the attempt's duration. */
  #transaction<R, Native>(handler: string, envelope: CloudEvent, startedAt: number, fn: (tx: Transaction<Native>) => Promise<R> | R): Promise<InboxResult<R>> {
    const uow = this.#o.unitOfWork;
    if (!uow) {
      return Promise.reject(new HeraldError('HERALD_ERR_NOT_CONFIGURED', `ctx.transaction needs the consumer option unitOfWork (group "${this.#o.group}", handler "${handler}")`));
    }
    return uow.withInbox({ group: this.#o.group, handler, source: envelope.source, id: envelope.id, startedAt }, fn as (tx: Transaction) => Promise<R> | R).then((result) => {
      if (result.duplicate) this.#stats.inboxDuplicates++;
      return result;
    });
  }

  async start(): Promise<void> {
    if (this.#closing) throw new HeraldError('HERALD_ERR_CLOSED', 'consumer is closed');
    if (this.#started) return;
    this.#started = true;
    let minTimeout = Number.POSITIVE_INFINITY;
    for (const byType of this.#routes.values()) for (const r of byType.values()) if (r.timeoutMs > 0) minTimeout = Math.min(minTimeout, r.timeoutMs);
    if (minTimeout !== Number.POSITIVE_INFINITY) this.#sweepMs = Math.max(5, Math.min(250, Math.floor(minTimeout / 4)));
    for (const topic of this.#routes.keys()) {
      const state: TopicState = { topic, sub: undefined, parked: new Set(), parkGeneration: 0, loading: new Map(), pump: undefined };
      this.#topics.set(topic, state);
      state.sub = this.#o.transport.subscribe(topic, {
        group: this.#o.group,
        ...(this.#o.maxInFlight !== undefined ? { maxInFlight: this.#o.maxInFlight } : {}),
        ...(this.#o.maxUncommittedPerPartition !== undefined ? { maxUncommittedPerPartition: this.#o.maxUncommittedPerPartition } : {}),
        ...(this.#o.memberId !== undefined ? { memberId: this.#o.memberId } : {}),
        ...(this.#o.onError ? { onError: this.#o.onError } : {}),
        onPartitions: (change) => this.#onPartitions(state, change),
      });
      state.pump = this.#pump(state, state.sub);
    }
    this.#scheduleRedrive();
  }

  assignment(topic: string): readonly number[] {
    return this.#topics.get(topic)?.sub?.assignment() ?? [];
  }

  stats(): Readonly<ConsumerStats> {
    return { ...this.#stats };
  }

  /**
   * One coarse timer for every running attempt's time limit (instead of a timer per attempt):
   * it runs while attempts with a limit are running, every quarter of the smallest limit
   * (5 ms to 250 ms), and aborts the attempts past their deadline.
   */
  #armTimeoutSweep(): void {
    if (this.#sweepTimer) return;
    const tick = (): void => {
      this.#sweepTimer = undefined;
      const now = this.#clock.monotonic();
      let limited = false;
      for (const a of this.#attempts) {
        if (a.deadline === Number.POSITIVE_INFINITY) continue;
        limited = true;
        if (a.deadline <= now) a.abort(new HeraldError('HERALD_ERR_HANDLER_TIMEOUT', `handler "${a.handler}" attempt ${a.attempt} ran past ${a.timeoutMs} ms`));
      }
      if (limited) this.#sweepTimer = this.#clock.setTimer(tick, this.#sweepMs);
    };
    this.#sweepTimer = this.#clock.setTimer(tick, this.#sweepMs);
  }

  close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.#closePromise) this.#closePromise = this.#close(options.timeoutMs ?? 10_000);
    return this.#closePromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ── registration ─────────────────────────────────────────────────────────

  #route(topic: string, type: string, o: HandlerOptions): Route {
    if (this.#started) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'register handlers before start()');
    let byType = this.#routes.get(topic);
    if (!byType) this.#routes.set(topic, (byType = new Map()));
    let route = byType.get(type);
    if (!route) {
      const timeoutMs = o.timeoutMs ?? this.#defaultTimeout;
      if (!(timeoutMs >= 0)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `timeoutMs must be >= 0 (got ${timeoutMs})`);
      route = {
        topic,
        type,
        name: o.name ?? type,
        versions: new Map(),
        any: undefined,
        retry: resolveRetry(this.#defaultRetry, o.retry),
        timeoutMs,
        ordering: o.ordering ?? 'key',
        onDeadLetter: o.onDeadLetter ?? 'continue',
      };
      byType.set(type, route);
    }
    return route;
  }

  #chain(handler: MessageHandler): MessageHandler {
    const mw = this.#o.middleware ?? [];
    let fn = handler;
    for (let i = mw.length - 1; i >= 0; i--) fn = mw[i]!(fn);
    return fn;
  }

  // ── scheduling ───────────────────────────────────────────────────────────

  async #pump(state: TopicState, sub: Subscription): Promise<void> {
    try {
      for await (const d of sub) {
        if (this.#closing) {
          // Stop pulling: a nacked delivery is redelivered into the subscription, and pulling it
          // again here would spin until the subscription closes.
          d.nack();
          break;
        }
        this.#stats.received++;
        notify<DeliverMessage>(channels.deliver, () => ({ group: this.#o.group, delivery: d }));
        const gate = state.loading.get(d.partition);
        if (gate) gate.push(d);
        else this.#submit(this.#jobFor(state, d));
      }
    } catch (e) {
      this.#o.onError?.(e);
    }
  }

  #jobFor(state: TopicState, d: Delivery): Job {
    const key = d.key ?? d.envelope?.partitionkey;
    const route = d.envelope ? this.#findRoute(state.topic, d.envelope.type) : undefined;
    const ordered = key !== undefined && (route === undefined || route.ordering === 'key');
    return { lane: ordered ? `${state.topic}\u0000${d.partition}\u0000${key}` : undefined, topic: state, delivery: d };
  }

  #submit(job: Job): void {
    if (this.#closing) {
      job.delivery?.nack();
      return;
    }
    if (job.lane !== undefined) {
      const q = this.#lanes.get(job.lane);
      if (q) {
        q.push(job);
        return;
      }
      this.#lanes.set(job.lane, []);
    }
    if (this.#running < this.#concurrency) this.#run(job);
    else this.#waiting.push(job);
  }

  #run(job: Job): void {
    this.#running++;
    const p = this.#runJob(job);
    this.#runningJobs.add(p);
    void p.then(() => this.#runningJobs.delete(p));
  }

  async #runJob(job: Job): Promise<void> {
    try {
      if (job.redrive) await this.#processRedrive(job);
      else await this.#processDelivery(job);
    } catch (e) {
      this.#o.onError?.(e);
    }
    this.#running--;
    if (job.lane !== undefined) {
      const q = this.#lanes.get(job.lane);
      const next = q?.shift();
      if (next) {
        if (this.#running < this.#concurrency) this.#run(next);
        else this.#waiting.push(next);
      } else this.#lanes.delete(job.lane);
    }
    while (this.#running < this.#concurrency && this.#waiting.length > 0 && !this.#closing) this.#run(this.#waiting.shift()!);
  }

  #findRoute(topic: string, type: string): Route | undefined {
    const byType = this.#routes.get(topic);
    return byType?.get(type) ?? byType?.get('*');
  }

  // ── processing ───────────────────────────────────────────────────────────

  async #processDelivery(job: Job): Promise<void> {
    const d = job.delivery!;
    if (d.revoked.aborted || this.#closing) {
      d.nack();
      return;
    }
    const topic = job.topic;
    const key = d.key ?? d.envelope?.partitionkey;
    if (!d.envelope) {
      const error = d.decodeError ?? new HeraldError('HERALD_ERR_CORRUPT_RECORD', `record ${d.position} of ${d.topic}[${d.partition}] is unreadable`);
      await this.#deadLetter(job, undefined, 'decode', error, 1, this.#clock.now());
      return;
    }
    const envelope = d.envelope;
    const route = this.#findRoute(topic.topic, envelope.type);
    if (!route) {
      this.#stats.skipped++;
      d.ack();
      return;
    }
    if (key !== undefined && topic.parked.has(key)) {
      try {
        await this.#o.deadLetters.parkMessage(this.#entry(d, key, route.name, { message: `key "${key}" is parked` }, 0, this.#clock.now()), d.fence ? { fence: d.fence } : {});
        this.#stats.parked++;
        d.ack();
      } catch (e) {
        this.#o.onError?.(e);
        d.nack({ delayMs: 1000 });
      }
      return;
    }
    const outcome = await this.#execute(job, route, envelope, key, d.attempt);
    if (outcome.kind === 'ok') {
      this.#stats.handled++;
      d.ack();
    } else if (outcome.kind === 'failed') {
      await this.#deadLetter(job, route, route.name, outcome.error, outcome.attempts, outcome.firstFailedAt);
    } else if (outcome.kind === 'abandoned') {
      d.nack();
    }
    // 'nacked': the delivery was already nacked with a delay for broker redelivery.
  }

  async #processRedrive(job: Job): Promise<void> {
    const entry = job.redrive!;
    const sub = job.topic.sub;
    const fence: LeaseFence | undefined = sub?.fence?.(entry.partition);
    try {
      if (this.#closing || !sub?.assignment().includes(entry.partition)) return;
      const current = await this.#o.deadLetters.get(entry.id);
      if (!current || current.status !== 'redrive') return; // discarded, or an earlier entry of its key failed again
      const route = entry.envelope ? this.#findRoute(entry.topic, entry.envelope.type) : undefined;
      if (!entry.envelope || !route) {
        const error = entry.envelope ? { message: `no handler for "${entry.envelope.type}" in group "${entry.group}"` } : entry.error;
        await this.#o.deadLetters.failRedrive(entry.id, error, entry.attempts, this.#clock.now(), fence ? { fence } : {});
        return;
      }
      const outcome = await this.#execute(job, route, entry.envelope, entry.key ?? undefined, 1);
      if (outcome.kind === 'ok') {
        const { unparked } = await this.#o.deadLetters.completeRedrive(entry.id, fence ? { fence } : {});
        if (unparked && entry.key !== null) {
          job.topic.parked.delete(entry.key);
          job.topic.parkGeneration++;
        }
        this.#stats.redriven++;
        this.#stats.handled++;
      } else if (outcome.kind === 'failed') {
        await this.#o.deadLetters.failRedrive(entry.id, describeError(outcome.error), entry.attempts + outcome.attempts, this.#clock.now(), fence ? { fence } : {});
        this.#stats.deadLettered++;
        notify<DeadLetterMessage>(channels.deadLetter, () => ({ group: entry.group, handler: route.name, topic: entry.topic, partition: entry.partition, envelope: entry.envelope, error: outcome.error, attempts: outcome.attempts, redrive: true }));
      }
    } finally {
      this.#redriving.delete(entry.id);
    }
  }

  async #execute(
    job: Job,
    route: Route,
    envelope: CloudEvent,
    key: string | undefined,
    firstAttempt: number,
  ): Promise<{ kind: 'ok' } | { kind: 'failed'; error: unknown; attempts: number; firstFailedAt: number } | { kind: 'abandoned' } | { kind: 'nacked' }> {
    const d = job.delivery;
    const partition = d?.partition ?? job.redrive!.partition;
    const now0 = this.#clock.now();
    // Resolve the handler for this version; decode + validate. Failures here are permanent.
    let fn: MessageHandler | undefined;
    let def: MessageDefinition | undefined;
    let data: unknown = envelope.data;
    try {
      if (route.versions.size > 0) {
        const version = versionOf(envelope);
        const v = version === undefined ? undefined : route.versions.get(version);
        if (v) {
          fn = v.fn;
          def = v.def;
        } else if (!route.any) {
          throw new HeraldError(
            'HERALD_ERR_UNKNOWN_EVENT_VERSION',
            `group "${this.#o.group}" has no handler for "${envelope.type}" version ${version ?? `from dataschema "${envelope.dataschema}"`} (handles ${[...route.versions.keys()].map((x) => `v${x}`).join(', ')})`,
            { details: { type: envelope.type, dataschema: envelope.dataschema } },
          );
        }
      }
      fn ??= route.any;
      if (def && this.#validate) {
        // No promise or microtask per message for a synchronous schema.
        const checked = checkData(def, envelope.data);
        data = isThenable(checked) ? await checked : checked;
      }
    } catch (error) {
      this.#stats.failedAttempts++;
      return { kind: 'failed', error, attempts: firstAttempt, firstFailedAt: now0 };
    }
    const handler = fn!;
    const retry = route.retry;
    let firstFailedAt: number | undefined;
    const startMono = this.#clock.monotonic();
    const extendEvery = this.#o.transport.capabilities.ackDeadlineMs > 0 ? this.#o.transport.capabilities.ackDeadlineMs / 2 : 0;
    for (let attempt = firstAttempt; ; attempt++) {
      // The attempt's AbortSignal is made only if the handler reads ctx.signal (most never do);
      // the timeout and a hard close reach it through `attemptState`.
      const state = new AttemptSignal(route.timeoutMs > 0 ? this.#clock.monotonic() + route.timeoutMs : Number.POSITIVE_INFINITY, route.name, attempt, route.timeoutMs);
      this.#attempts.add(state);
      if (this.#hard.signal.aborted) state.abort(this.#hard.signal.reason);
      if (route.timeoutMs > 0) this.#armTimeoutSweep();
      const attemptStartedAt = this.#clock.now();
      let extender: { cancel(): void } | undefined;
      if (d && extendEvery > 0) {
        const tick = (): void => {
          d.extend();
          extender = this.#clock.setTimer(tick, extendEvery);
        };
        extender = this.#clock.setTimer(tick, extendEvery);
      }
      try {
        await traceHandle(handler, {
          envelope,
          delivery: d,
          attempt,
          get signal() {
            return state.signal;
          },
          group: this.#o.group,
          handler: route.name,
          topic: route.topic,
          partition,
          key,
          redrive: job.redrive !== undefined,
          clock: this.#clock,
          data,
          definition: def,
          transaction: (fn) => this.#transaction(route.name, envelope, attemptStartedAt, fn),
        });
        return { kind: 'ok' };
      } catch (err) {
        const error = isHeraldError(state.reason, 'HERALD_ERR_HANDLER_TIMEOUT') && !isHeraldError(err) ? new HeraldError('HERALD_ERR_HANDLER_TIMEOUT', state.reason.message, { cause: err }) : err;
        this.#stats.failedAttempts++;
        firstFailedAt ??= this.#clock.now();
        const elapsed = this.#clock.monotonic() - startMono;
        if (!isRetryable(error) || attempt >= retry.maxAttempts || (retry.inPlaceMaxDelayMs > 0 && elapsed >= retry.inPlaceMaxDelayMs)) {
          return { kind: 'failed', error, attempts: attempt, firstFailedAt };
        }
        const delay = backoff(retry, attempt, this.#random);
        notify<RetryMessage>(channels.retry, () => ({ group: this.#o.group, handler: route.name, topic: route.topic, partition, envelope, attempt, delayMs: delay, error }));
        if (route.ordering === 'none' && d) {
          this.#stats.retried++;
          d.nack({ delayMs: delay });
          return { kind: 'nacked' };
        }
        this.#stats.retried++;
        try {
          await this.#clock.sleep(delay, anySignal([this.#drain.signal, ...(d ? [d.revoked] : [])]));
        } catch {
          return { kind: 'abandoned' };
        }
      } finally {
        extender?.cancel();
        this.#attempts.delete(state);
      }
    }
  }

  async #deadLetter(job: Job, route: Route | undefined, handlerName: string, error: unknown, attempts: number, firstFailedAt: number): Promise<void> {
    const d = job.delivery!;
    const key = d.key ?? d.envelope?.partitionkey;
    const park = route?.onDeadLetter === 'park' && key !== undefined;
    try {
      await this.#o.deadLetters.add(this.#entry(d, key, handlerName, describeError(error), attempts, firstFailedAt), {
        park,
        ...(d.fence ? { fence: d.fence } : {}),
      });
    } catch (e) {
      // Not stored: do not ack. The message comes back (here or at the partition's next owner).
      this.#o.onError?.(e);
      d.nack({ delayMs: 1000 });
      return;
    }
    if (park) {
      job.topic.parked.add(key);
      job.topic.parkGeneration++;
    }
    this.#stats.deadLettered++;
    notify<DeadLetterMessage>(channels.deadLetter, () => ({ group: this.#o.group, handler: handlerName, topic: d.topic, partition: d.partition, envelope: d.envelope, error, attempts, redrive: false }));
    d.reject(describeError(error).message);
  }

  #entry(d: Delivery, key: string | undefined, handler: string, error: ReturnType<typeof describeError>, attempts: number, firstFailedAt: number): NewDeadLetter {
    return {
      group: this.#o.group,
      topic: d.topic,
      partition: d.partition,
      key: key ?? null,
      handler,
      envelope: d.envelope,
      raw: d.raw,
      position: d.position,
      error,
      attempts,
      firstFailedAt,
      lastFailedAt: this.#clock.now(),
    };
  }

  // ── partitions, parked keys, redrive ─────────────────────────────────────

  #onPartitions(state: TopicState, change: PartitionChange): void {
    for (const p of change.assigned) {
      const gate: Delivery[] = [];
      state.loading.set(p, gate);
      void this.#o.deadLetters
        .parkedKeys(this.#o.group, state.topic, p)
        .then((keys) => {
          for (const k of keys) state.parked.add(k);
        })
        .catch((e) => this.#o.onError?.(e))
        .finally(() => {
          // Release the held deliveries in order, in the same step that opens the gate.
          if (state.loading.get(p) === gate) state.loading.delete(p);
          for (const d of gate) this.#submit(this.#jobFor(state, d));
        });
    }
  }

  #scheduleRedrive(): void {
    if (this.#closing) return;
    this.#redriveTimer = this.#clock.setTimer(() => {
      void this.#redriveTick().finally(() => this.#scheduleRedrive());
    }, this.#o.redrivePollMs ?? 500, { unref: true });
  }

  async #redriveTick(): Promise<void> {
    for (const state of this.#topics.values()) {
      const owned = state.sub?.assignment() ?? [];
      if (owned.length === 0 || this.#closing) continue;
      try {
        // Refresh parked keys (a discard elsewhere may have unparked one), unless we parked meanwhile.
        const generation = state.parkGeneration;
        const keys = new Set<string>();
        for (const p of owned) for (const k of await this.#o.deadLetters.parkedKeys(this.#o.group, state.topic, p)) keys.add(k);
        if (generation === state.parkGeneration) {
          for (const k of state.parked) if (!keys.has(k)) state.parked.delete(k);
          for (const k of keys) state.parked.add(k);
        }
        const pending = await this.#o.deadLetters.pendingRedrives(this.#o.group, state.topic, owned, 256);
        for (const entry of pending) {
          if (this.#redriving.has(entry.id) || this.#closing) continue;
          this.#redriving.add(entry.id);
          const lane = entry.key !== null ? `${state.topic}\u0000${entry.partition}\u0000${entry.key}` : undefined;
          this.#submit({ lane, topic: state, redrive: entry });
        }
      } catch (e) {
        this.#o.onError?.(e);
      }
    }
  }

  // ── close ────────────────────────────────────────────────────────────────

  async #close(timeoutMs: number): Promise<void> {
    this.#closing = true;
    this.#redriveTimer?.cancel();
    this.#drain.abort(new HeraldError('HERALD_ERR_CLOSED', 'consumer closing'));
    // Drop queued work: not started, so not acked; it will be redelivered.
    for (const job of this.#waiting.splice(0)) job.delivery?.nack();
    for (const q of this.#lanes.values()) for (const job of q.splice(0)) job.delivery?.nack();
    const deadline = this.#clock.monotonic() + timeoutMs;
    if (this.#runningJobs.size > 0) {
      let timer: { cancel(): void } | undefined;
      await Promise.race([
        Promise.allSettled([...this.#runningJobs]),
        new Promise<void>((resolve) => {
          timer = this.#clock.setTimer(resolve, timeoutMs);
        }),
      ]);
      timer?.cancel();
    }
    if (this.#runningJobs.size > 0) {
      this.#hard.abort(new HeraldError('HERALD_ERR_CLOSED', `consumer closed with handlers still running after ${timeoutMs} ms`));
      for (const a of this.#attempts) a.abort(this.#hard.signal.reason);
    }
    const left = Math.max(0, deadline - this.#clock.monotonic());
    await Promise.all([...this.#topics.values()].map((s) => s.sub?.close({ timeoutMs: left })));
    await Promise.all([...this.#topics.values()].map((s) => s.pump));
    this.#sweepTimer?.cancel();
  }
}

/** An attempt's abort state; the AbortController is created only when someone asks for the signal. */
class AttemptSignal {
  #controller: AbortController | undefined;
  reason: unknown;
  #aborted = false;

  /** Monotonic deadline (Infinity when the handler has no time limit). */
  constructor(
    readonly deadline: number,
    readonly handler: string,
    readonly attempt: number,
    readonly timeoutMs: number,
  ) {}

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.#aborted) this.#controller.abort(this.reason);
    }
    return this.#controller.signal;
  }

  abort(reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.reason = reason;
    this.#controller?.abort(reason);
  }
}

/** Checks and copies a handler's `produces` declaration. */
function producedBy(handler: string, o: HandlerOptions): ProducedMessage[] {
  return (o.produces ?? []).map((p): ProducedMessage => {
    if (typeof p === 'string' && p.length > 0) return { type: p };
    if (!p || typeof p !== 'object' || typeof p.type !== 'string') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `produces of handler "${handler}" must list definitions, { topic, type } or type names (got ${JSON.stringify(p)})`);
    return { topic: p.topic, type: p.type, ...(p.version !== undefined ? { version: p.version } : {}) };
  });
}

function resolveRetry(base: RetryPolicy, o: Partial<RetryPolicy> | undefined): RetryPolicy {
  const r = { ...base, ...(o ?? {}) };
  if (!Number.isInteger(r.maxAttempts) || r.maxAttempts < 1) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `retry.maxAttempts must be a positive integer (got ${r.maxAttempts})`);
  if (!(r.initialDelayMs >= 0) || !(r.maxDelayMs >= r.initialDelayMs)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `retry delays must satisfy 0 <= initialDelayMs <= maxDelayMs (got ${r.initialDelayMs}, ${r.maxDelayMs})`);
  if (!(r.multiplier >= 1)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `retry.multiplier must be >= 1 (got ${r.multiplier})`);
  if (!(r.jitter >= 0 && r.jitter <= 1)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `retry.jitter must be within 0..1 (got ${r.jitter})`);
  return Object.freeze(r);
}

/** Delay before attempt `attempt + 1`: initial × multiplier^(attempt−1), capped, ± jitter. */
export function backoff(policy: RetryPolicy, attempt: number, random: Random): number {
  const base = Math.min(policy.maxDelayMs, policy.initialDelayMs * policy.multiplier ** (attempt - 1));
  const spread = base * policy.jitter;
  return Math.max(0, Math.round(base - spread + random.next() * 2 * spread));
}

function anySignal(signals: AbortSignal[]): AbortSignal {
  return signals.length === 1 ? signals[0]! : AbortSignal.any(signals);
}
