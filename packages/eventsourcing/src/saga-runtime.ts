/**
 * The saga runtime: runs saga definitions on a transport through the consumer runtime.
 *
 * Per saga it starts one consumer (group `saga.<name>` by default) with handlers for the start
 * event, every reply event and the saga's timer messages (`herald.saga.timeout` on the saga's
 * topic). Each message is handled as:
 *
 *   get (committed instance) → decideSaga (pure) → build envelopes (validated, causation and
 *   correlation from the incoming message) → unitOfWork.withInbox(tx ⇒ save (revision check) +
 *   timeline + tx.publish(messages) + tx.cancelScheduled / tx.schedule(timers))
 *
 * so the instance, the inbox record, the outgoing messages (outbox) and the timers commit
 * together: a redelivered message has no second effect, a crash before the commit leaves
 * nothing, after it everything. The runtime does not publish itself: an outbox relay and a
 * scheduler on the same unit of work (core `createOutboxRelay`, `createScheduler`) send what
 * was committed.
 *
 * Concurrency: per key, messages of one topic are handled in order (the router's lanes);
 * messages of one instance arriving on different topics may be handled at once — the save's
 * revision check makes the second one decide again on the new revision (up to
 * `conflictRetries` times at once), then the error (`HERALD_ERR_CONCURRENCY`, retryable) goes to
 * the router, which retries with backoff.
 *
 * Errors: a message that cannot be correlated to an instance, or that no instance waits for, is
 * acked and recorded in the timeline as `ignored` (when the instance exists). A timer message
 * with a malformed body is a `PermanentError` (dead letter). Outgoing data failing its schema is
 * `HERALD_ERR_SCHEMA_INVALID` (permanent): the incoming message is dead-lettered and the
 * instance keeps its revision, visible in the dead-letter store.
 *
 * Stuck instances are listed by `store.list({ status: 'stuck' })`, counted by
 * `store.countByStatus()` (the `saga_instances{status="stuck"}` gauge) and reported to `onStuck`.
 */
import { randomUUID } from 'node:crypto';
import {
  channels,
  createConsumer,
  createEnvelope,
  createPublisher,
  HeraldError,
  isHeraldError,
  PermanentError,
  systemClock,
  type CloudEvent,
  type Clock,
  type Consumer,
  type ConsumerOptions,
  type DeadLetterStore,
  type OutgoingMessage,
  type Transaction,
  type Transport,
  type UnitOfWork,
} from '@herald/core';
import { traced } from '@herald/core/internal';
import { decideSaga, SAGA_TIMER_TYPE, sagaKeyOf, type SagaDecision, type SagaDefinition, type SagaInput, type SagaInstance, type SagaStatus, type SagaTimer } from './saga.ts';
import type { SagaStore } from './saga-store.ts';

export interface SagaRuntimeOptions<Native> {
  readonly sagas: readonly SagaDefinition[];
  readonly store: SagaStore<Native>;
  readonly unitOfWork: UnitOfWork<Native>;
  readonly transport: Transport;
  readonly deadLetters: DeadLetterStore;
  /** CloudEvents `source` of every message the sagas send. */
  readonly source: string;
  readonly clock?: Clock;
  /** Consumer group of a saga (default `saga.<name>`). */
  readonly group?: (saga: SagaDefinition) => string;
  /** Options passed to each saga's consumer (retry, concurrency, timeoutMs, …). */
  readonly consumer?: Partial<Omit<ConsumerOptions, 'transport' | 'group' | 'deadLetters' | 'clock'>>;
  /** Immediate re-decisions after a revision conflict before the router's retry takes over (default 10). */
  readonly conflictRetries?: number;
  /** New instance ids (default: random UUIDs). */
  readonly newId?: () => string;
  /** Called after a commit that left an instance stuck. Must not throw (errors are ignored). */
  readonly onStuck?: (instance: SagaInstance) => void;
}

export interface SagaRuntimeStats {
  /** Messages that changed an instance (committed). */
  transitions: number;
  started: number;
  completed: number;
  compensated: number;
  stuck: number;
  /** Messages recorded as ignored, or that matched no instance. */
  ignored: number;
  /** Redeliveries the inbox recognised. */
  duplicates: number;
  /** Revision conflicts (each one decided again). */
  conflicts: number;
}

export interface SagaHandleResult {
  readonly duplicate: boolean;
  readonly instance: SagaInstance | undefined;
}

export interface SagaRuntime<Native = unknown> {
  readonly store: SagaStore<Native>;
  /** Starts every saga's consumer. */
  start(): Promise<void>;
  /**
   * Handles one envelope for `saga` outside the consumer (the same path a delivery takes): for
   * tools and tests. `handler` names the inbox entry (default `<saga>:<type>`).
   */
  handle(saga: string, envelope: CloudEvent, options?: { readonly handler?: string; readonly group?: string }): Promise<SagaHandleResult>;
  /** Resumes a stuck instance: its failing compensation is sent again, from attempt 1. `HERALD_ERR_NOT_FOUND` when there is no such instance. */
  resume(saga: string, key: string, reason?: string): Promise<SagaInstance>;
  stats(): Readonly<SagaRuntimeStats>;
  /** Closes the consumers (draining). Idempotent. */
  close(options?: { timeoutMs?: number }): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export function createSagaRuntime<Native>(options: SagaRuntimeOptions<Native>): SagaRuntime<Native> {
  return new Runtime(options);
}

/** A decision's envelopes, built before its transaction. */
interface Built {
  readonly byTopic: Map<string, OutgoingMessage[]>;
  readonly timers: readonly { readonly id: string; readonly deliverAt: number; readonly message: OutgoingMessage }[];
}

function isTimer(v: unknown): v is SagaTimer {
  if (typeof v !== 'object' || v === null) return false;
  const t = v as Record<string, unknown>;
  return (
    typeof t.id === 'string' &&
    typeof t.saga === 'string' &&
    typeof t.key === 'string' &&
    typeof t.instanceId === 'string' &&
    typeof t.step === 'string' &&
    (t.phase === 'action' || t.phase === 'compensation') &&
    (t.purpose === 'timeout' || t.purpose === 'retry') &&
    Number.isSafeInteger(t.attempt) &&
    typeof t.deliverAt === 'number'
  );
}

class Runtime<Native> implements SagaRuntime<Native> {
  readonly store: SagaStore<Native>;
  readonly #o: SagaRuntimeOptions<Native>;
  readonly #clock: Clock;
  readonly #sagas = new Map<string, SagaDefinition>();
  readonly #consumers: Consumer[] = [];
  readonly #publisher;
  readonly #conflictRetries: number;
  readonly #newId: () => string;
  readonly #stats: SagaRuntimeStats = { transitions: 0, started: 0, completed: 0, compensated: 0, stuck: 0, ignored: 0, duplicates: 0, conflicts: 0 };
  #closePromise: Promise<void> | undefined;

  constructor(o: SagaRuntimeOptions<Native>) {
    if (!o || !Array.isArray(o.sagas) || o.sagas.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'createSagaRuntime needs { sagas: [defineSaga(…), …] }');
    for (const k of ['store', 'unitOfWork', 'transport', 'deadLetters'] as const) {
      if (!o[k]) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `createSagaRuntime needs ${k}`);
    }
    this.#o = o;
    this.store = o.store;
    this.#clock = o.clock ?? systemClock;
    this.#conflictRetries = o.conflictRetries ?? 10;
    if (!Number.isSafeInteger(this.#conflictRetries) || this.#conflictRetries < 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `conflictRetries must be a non-negative integer (got ${String(o.conflictRetries)})`);
    this.#newId = o.newId ?? randomUUID;
    this.#publisher = createPublisher({ transport: o.transport, source: o.source, clock: this.#clock });
    for (const saga of o.sagas) {
      if (this.#sagas.has(saga.name)) throw new HeraldError('HERALD_ERR_DUPLICATE_DEFINITION', `saga "${saga.name}" is registered twice`);
      if (typeof saga.step !== 'function') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `saga "${String(saga.name)}": pass the result of defineSaga()`);
      this.#sagas.set(saga.name, saga);
      const group = o.group?.(saga) ?? `saga.${saga.name}`;
      const consumer = createConsumer({ ...o.consumer, transport: o.transport, group, deadLetters: o.deadLetters, clock: this.#clock });
      const start = saga.startedBy.event;
      consumer.handle(start, async (_data, ctx) => void (await this.#handle(saga, group, ctx.handler, ctx.envelope, ctx.data)), {
        name: `${saga.name}:${start.type}`,
        ...(saga.startedBy.topic !== undefined ? { topic: saga.startedBy.topic } : {}),
      });
      for (const r of saga.replyEvents) {
        consumer.handle(r.event, async (_data, ctx) => void (await this.#handle(saga, group, ctx.handler, ctx.envelope, ctx.data)), { name: `${saga.name}:${r.event.type}`, topic: r.topic });
      }
      consumer.handleEnvelope(saga.topic, SAGA_TIMER_TYPE, async (envelope, ctx) => void (await this.#handle(saga, group, ctx.handler, envelope, envelope.data)), {
        name: `${saga.name}:timer`,
      });
      this.#consumers.push(consumer);
    }
  }

  async start(): Promise<void> {
    if (this.#closePromise) throw new HeraldError('HERALD_ERR_CLOSED', 'saga runtime is closed');
    for (const saga of this.#sagas.values()) await this.#o.transport.ensureTopic(saga.topic);
    await Promise.all(this.#consumers.map((c) => c.start()));
  }

  handle(sagaName: string, envelope: CloudEvent, options: { readonly handler?: string; readonly group?: string } = {}): Promise<SagaHandleResult> {
    const saga = this.#saga(sagaName);
    return this.#handle(saga, options.group ?? this.#o.group?.(saga) ?? `saga.${saga.name}`, options.handler ?? `${saga.name}:${envelope.type === SAGA_TIMER_TYPE ? 'timer' : envelope.type}`, envelope, envelope.data);
  }

  async resume(sagaName: string, key: string, reason?: string): Promise<SagaInstance> {
    const saga = this.#saga(sagaName);
    for (let attempt = 0; ; attempt++) {
      const current = await this.store.get(saga.name, key);
      if (!current) throw new HeraldError('HERALD_ERR_NOT_FOUND', `saga "${saga.name}" has no instance "${key}"`, { details: { saga: saga.name, key } });
      const decision = decideSaga(saga, current, { kind: 'resume', ...(reason !== undefined ? { reason } : {}) }, { now: this.#clock.now(), newId: this.#newId });
      const built = await this.#build(key, decision, undefined);
      try {
        await this.#o.unitOfWork.withTransaction((tx) => this.#write(tx, saga, key, current.id, decision, built));
      } catch (e) {
        if (this.#retryConflict(e, attempt)) continue;
        throw e;
      }
      this.#count(current, decision);
      return decision.instance ?? current;
    }
  }

  stats(): Readonly<SagaRuntimeStats> {
    return { ...this.#stats };
  }

  close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.#closePromise) this.#closePromise = Promise.all(this.#consumers.map((c) => c.close(options))).then(() => undefined);
    return this.#closePromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #saga(name: string): SagaDefinition {
    const saga = this.#sagas.get(name);
    if (!saga) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `no saga "${name}" in this runtime (known: ${[...this.#sagas.keys()].join(', ')})`);
    return saga;
  }

  #retryConflict(e: unknown, attempt: number): boolean {
    if (!isHeraldError(e, 'HERALD_ERR_CONCURRENCY')) return false;
    this.#stats.conflicts++;
    return attempt < this.#conflictRetries;
  }

  async #handle(saga: SagaDefinition, group: string, handler: string, envelope: CloudEvent, data: unknown): Promise<SagaHandleResult> {
    const startedAt = this.#clock.now(); // the inbox record keeps the step's duration from here (conflict retries included)
    let input: SagaInput & { kind: 'event' | 'timer' };
    if (envelope.type === SAGA_TIMER_TYPE) {
      if (!isTimer(data) || data.saga !== saga.name) throw new PermanentError(`saga "${saga.name}": malformed timer message ${envelope.id} (its data is not a timer of this saga)`);
      input = { kind: 'timer', timer: data, messageId: envelope.id };
    } else {
      input = { kind: 'event', type: envelope.type, data, messageId: envelope.id, envelope };
    }
    const key = sagaKeyOf(saga, input);
    if (key === undefined || key === '') {
      this.#stats.ignored++;
      return { duplicate: false, instance: undefined };
    }
    const inboxKey = { group, handler, source: envelope.source, id: envelope.id, startedAt };
    for (let attempt = 0; ; attempt++) {
      const current = (await this.store.get(saga.name, key)) as SagaInstance | undefined;
      const decision = decideSaga(saga, current, input, { now: this.#clock.now(), newId: this.#newId });
      if (decision.instance === undefined && decision.timeline.length === 0) {
        this.#stats.ignored++;
        return { duplicate: false, instance: current };
      }
      const instanceId = decision.instance?.id ?? current!.id;
      const run = async (): Promise<SagaHandleResult> => {
        const built = await this.#build(key, decision, envelope);
        const r = await this.#o.unitOfWork.withInbox(inboxKey, (tx) => this.#write(tx, saga, key, instanceId, decision, built));
        if (r.duplicate) {
          this.#stats.duplicates++;
          return { duplicate: true, instance: current };
        }
        this.#count(current, decision);
        return { duplicate: false, instance: decision.instance ?? current };
      };
      try {
        return await traced(
          channels.sagaStep,
          () => ({ saga: saga.name, instanceId, step: current?.step ?? envelope.type, envelope: input.kind === 'timer' ? undefined : envelope }),
          run,
        );
      } catch (e) {
        if (this.#retryConflict(e, attempt)) continue;
        throw e;
      }
    }
  }

  /** Envelopes for the decision's messages and timers, built before the transaction (validation is async). */
  async #build(key: string, decision: SagaDecision, cause: CloudEvent | undefined): Promise<Built> {
    const byTopic = new Map<string, OutgoingMessage[]>();
    for (const m of decision.outgoing) {
      const { topic, message } = await this.#publisher.envelope(m.definition, m.data, { topic: m.topic, key: m.key, id: m.id, ...(cause ? { causedBy: cause } : {}) });
      const list = byTopic.get(topic);
      if (list) list.push(message);
      else byTopic.set(topic, [message]);
    }
    const now = this.#clock.now();
    const timers = decision.timers.map((t) => ({
      id: t.id,
      deliverAt: t.deliverAt,
      message: {
        key,
        envelope: createEnvelope(
          {
            type: SAGA_TIMER_TYPE,
            source: this.#o.source,
            id: t.id,
            data: t,
            partitionkey: key,
            ...(cause ? { correlationid: cause.correlationid ?? cause.id, causationid: cause.id } : {}),
          },
          now,
        ),
      },
    }));
    return { byTopic, timers };
  }

  async #write(
    tx: Transaction<Native>,
    saga: SagaDefinition,
    key: string,
    instanceId: string,
    decision: SagaDecision,
    built: Built,
  ): Promise<void> {
    if (decision.instance) await this.store.save(tx, decision.instance, decision.expectedRevision);
    if (decision.timeline.length > 0) await this.store.appendTimeline(tx, saga.name, key, instanceId, decision.timeline);
    for (const id of decision.cancelTimers) tx.cancelScheduled(id);
    for (const [topic, messages] of built.byTopic) tx.publish(topic, messages);
    for (const t of built.timers) tx.schedule({ id: t.id, topic: saga.topic, deliverAt: t.deliverAt, message: t.message });
  }

  #count(before: SagaInstance | undefined, decision: SagaDecision): void {
    const after = decision.instance;
    if (!after) {
      this.#stats.ignored++;
      return;
    }
    this.#stats.transitions++;
    if (!before) this.#stats.started++;
    if (before?.status === after.status) return;
    const s: SagaStatus = after.status;
    if (s === 'completed') this.#stats.completed++;
    else if (s === 'compensated') this.#stats.compensated++;
    else if (s === 'stuck') {
      this.#stats.stuck++;
      try {
        this.#o.onStuck?.(after);
      } catch {
        // reported through the store and stats; a throwing callback changes nothing
      }
    }
  }
}
