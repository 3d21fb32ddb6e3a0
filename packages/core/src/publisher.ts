/**
 * Typed publishing: validates data against its definition (on by default), builds the
 * CloudEvents envelope (type, version in `dataschema`, partition key, correlation and
 * causation ids) and hands batches to the transport.
 */
import { type Clock, systemClock } from './clock.ts';
import { type CloudEvent, createEnvelope, type EnvelopeInput } from './envelope.ts';
import { HeraldError } from './errors.ts';
import { checkData, isThenable, type MessageDefinition } from './definitions.ts';
import type { SchedulerStore } from './outbox.ts';
import type { ScheduledWrite } from './unit-of-work.ts';
import type { OutgoingMessage, PublishReceipt, Transport } from './transport.ts';
import { instrumentPublisher, type TraceContext } from './instrumentation.ts';

export interface PublisherOptions {
  readonly transport: Transport;
  /** CloudEvents `source` of every event this publisher builds (a URI-reference, e.g. 'orders-service'). */
  readonly source: string;
  readonly clock?: Clock;
  /** Validate data against the definition's schema before sending (default true). */
  readonly validate?: boolean;
  /** Where delayed messages (`deliverAt` in the future, `schedule()`) are stored until the scheduler publishes them. */
  readonly scheduler?: SchedulerStore;
}

export interface PublishOptions {
  /** Partition key; default: the definition's `keyField` value, else none (round-robin). */
  readonly key?: string;
  /** Topic; default: the definition's topic. */
  readonly topic?: string;
  readonly id?: string;
  readonly subject?: string;
  readonly correlationid?: string;
  readonly causationid?: string;
  readonly traceparent?: string;
  readonly tracestate?: string;
  /** Copies correlation id (or uses its id) and sets causation id from the event that caused this one. */
  readonly causedBy?: CloudEvent;
  /**
   * Publish at or after this time (epoch ms on the publisher's clock, or a Date). In the future:
   * stored in `scheduler` and published by the scheduler when due (the receipt is
   * `{ topic, partition: -1, position: 'scheduled:<id>' }`); now or past: published at once.
   * `envelope()` ignores it (pass the built message to `tx.schedule` for a transactional delay).
   */
  readonly deliverAt?: number | Date;
}

/** What `schedule()` stored. */
export interface ScheduledReceipt {
  /** The scheduled message's id (cancel with `scheduler.cancel(id)`): `scheduleId`, else the envelope id. */
  readonly id: string;
  readonly topic: string;
  /** Epoch ms. */
  readonly deliverAt: number;
}

export interface PublishItem<T = unknown> {
  readonly definition: MessageDefinition<T>;
  readonly data: T;
  readonly options?: PublishOptions;
}

export interface Publisher {
  /** Validates, builds and publishes one event; resolves when the transport acknowledged it. */
  publish<T>(definition: MessageDefinition<T>, data: T, options?: PublishOptions): Promise<PublishReceipt>;
  /** Publishes many events (one transport call per topic); receipts in input order. All are validated before any is sent. */
  publishBatch(items: readonly PublishItem[]): Promise<readonly PublishReceipt[]>;
  /** Publishes ready-made envelopes without validation. */
  publishEnvelopes(topic: string, messages: readonly OutgoingMessage[]): Promise<readonly PublishReceipt[]>;
  /** Builds the envelope `publish` would send, without sending it. */
  envelope<T>(definition: MessageDefinition<T>, data: T, options?: PublishOptions): Promise<{ topic: string; message: OutgoingMessage }>;
  /**
   * Stores the event in the publisher's `scheduler` to be published at `deliverAt` (even a past
   * time: the scheduler then publishes it at once). Scheduling an id already stored keeps the
   * first (`scheduleId`, default the envelope id: pass a stable one for idempotent timers).
   * Without `scheduler`: `HERALD_ERR_NOT_CONFIGURED`.
   */
  schedule<T>(definition: MessageDefinition<T>, data: T, options: PublishOptions & { readonly deliverAt: number | Date; readonly scheduleId?: string }): Promise<ScheduledReceipt>;
}

export function createPublisher(options: PublisherOptions): Publisher {
  const { transport, source } = options;
  const clock = options.clock ?? systemClock;
  const validate = options.validate ?? true;
  if (typeof source !== 'string' || source.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'publisher needs a non-empty source');

  type Built = { topic: string; message: OutgoingMessage };

  /**
   * Validates and builds one message: synchronously when the schema answers synchronously (no
   * promise per message on the publish path), a promise for an asynchronous schema. Bad input
   * throws (callers run it inside async functions, so a throw becomes their rejection).
   */
  function build<T>(definition: MessageDefinition<T>, data: T, o: PublishOptions = {}, trace?: TraceContext): Built | Promise<Built> {
    const topic = o.topic ?? definition.topic;
    if (topic === undefined) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `no topic for "${definition.type}": pass { topic } or define it with { topic }`);
    if (!validate) return finish(definition, data, o, topic, trace);
    const value = checkData(definition, data);
    return isThenable<T>(value) ? Promise.resolve(value).then((v) => finish(definition, v, o, topic, trace)) : finish(definition, value, o, topic, trace);
  }

  function finish<T>(definition: MessageDefinition<T>, value: T, o: PublishOptions, topic: string, trace: TraceContext | undefined): Built {
    let key = o.key;
    if (key === undefined && definition.keyField !== undefined && typeof value === 'object' && value !== null) {
      const k = (value as Record<string, unknown>)[definition.keyField];
      if (k !== undefined && k !== null) key = String(k);
    }
    // Assigned field by field (one hidden class, no spread per optional attribute): this runs
    // once per message on every publish path.
    const input: EnvelopeInput<T> = { type: definition.type, source, data: value, dataschema: definition.dataschema };
    if (o.id !== undefined) input.id = o.id;
    if (o.subject !== undefined) input.subject = o.subject;
    if (key !== undefined) input.partitionkey = key;
    // The caller's trace context wins over the one a tracing subscriber set for this publish.
    const traceFrom = o.traceparent !== undefined ? o : trace;
    if (traceFrom?.traceparent !== undefined) {
      input.traceparent = traceFrom.traceparent;
      if (traceFrom.tracestate !== undefined) input.tracestate = traceFrom.tracestate;
    }
    const cause = o.causedBy;
    if (o.correlationid !== undefined) input.correlationid = o.correlationid;
    else if (cause) input.correlationid = cause.correlationid ?? cause.id;
    if (o.causationid !== undefined) input.causationid = o.causationid;
    else if (cause) input.causationid = cause.id;
    const envelope = createEnvelope(input, clock.now());
    return { topic, message: key === undefined ? { envelope } : { envelope, key } };
  }

  // publish / publishBatch / envelope / publishEnvelopes from the two primitives, traced through
  // the `herald:publish` channel (straight calls when nothing subscribes).
  const instrumented: Omit<Publisher, 'schedule'> = instrumentPublisher(source, {
    envelope: build,
    publishEnvelopes: (topic, messages) => transport.publish(topic, messages),
  });

  // Delayed publishing sits outside the instrumented publisher: a scheduled event is built
  // (operation 'create', with the trace context of now) and stored, not sent.
  const deliverAtOf = (o: PublishOptions | undefined): number | undefined => (o?.deliverAt === undefined ? undefined : epochMs(o.deliverAt));
  const isFuture = (at: number | undefined): at is number => at !== undefined && at > clock.now();
  const scheduler = (what: string): SchedulerStore => {
    if (!options.scheduler) throw new HeraldError('HERALD_ERR_NOT_CONFIGURED', `${what} needs the publisher option scheduler (a SchedulerStore, e.g. the unit of work's)`);
    return options.scheduler;
  };
  type Scheduling = PublishOptions & { readonly deliverAt: number | Date; readonly scheduleId?: string };
  async function buildScheduled(definition: MessageDefinition<unknown>, data: unknown, o: Scheduling): Promise<ScheduledWrite> {
    const deliverAt = epochMs(o?.deliverAt);
    const { deliverAt: _d, scheduleId, ...rest } = o;
    const { topic, message } = await instrumented.envelope(definition, data, rest);
    return { topic, message, deliverAt, ...(scheduleId !== undefined ? { id: scheduleId } : {}) };
  }
  async function store(writes: readonly ScheduledWrite[]): Promise<ScheduledReceipt[]> {
    const ids = await scheduler('scheduling').schedule(writes);
    return writes.map((w, i) => ({ id: ids[i]!, topic: w.topic, deliverAt: w.deliverAt }));
  }
  async function schedule<T>(definition: MessageDefinition<T>, data: T, o: Scheduling): Promise<ScheduledReceipt> {
    scheduler(`scheduling "${definition.type}"`);
    const [receipt] = await store([await buildScheduled(definition as MessageDefinition<unknown>, data, o)]);
    return receipt!;
  }
  const scheduledReceipt = (r: ScheduledReceipt): PublishReceipt => ({ topic: r.topic, partition: -1, position: `scheduled:${r.id}` });

  return {
    ...instrumented,
    schedule,
    async publish(definition, data, o) {
      const at = deliverAtOf(o);
      if (!isFuture(at)) return instrumented.publish(definition, data, o && { ...o, deliverAt: undefined });
      scheduler(`publish of "${definition.type}" with a future deliverAt`);
      return scheduledReceipt(await schedule(definition, data, { ...o, deliverAt: at }));
    },
    async publishBatch(items) {
      const later = items.map((i) => isFuture(deliverAtOf(i.options)));
      if (!later.includes(true)) return instrumented.publishBatch(items);
      scheduler('publishBatch with a future deliverAt');
      // Validate (build) the delayed ones first, then publish the others (which validates them
      // before sending), then store the delayed ones: a schema error sends and stores nothing.
      const laterIdx = items.map((_, i) => i).filter((i) => later[i]);
      const nowIdx = items.map((_, i) => i).filter((i) => !later[i]);
      const writes = await Promise.all(laterIdx.map((i) => buildScheduled(items[i]!.definition, items[i]!.data, { ...items[i]!.options, deliverAt: deliverAtOf(items[i]!.options)! })));
      const now = nowIdx.length > 0 ? await instrumented.publishBatch(nowIdx.map((i) => items[i]!)) : [];
      const stored = await store(writes);
      const receipts: PublishReceipt[] = new Array(items.length);
      nowIdx.forEach((i, j) => (receipts[i] = now[j]!));
      laterIdx.forEach((i, j) => (receipts[i] = scheduledReceipt(stored[j]!)));
      return receipts;
    },
  };
}

function epochMs(at: number | Date): number {
  const ms = at instanceof Date ? at.getTime() : at;
  if (typeof ms !== 'number' || !Number.isFinite(ms)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `deliverAt must be epoch ms or a valid Date (got ${String(at)})`);
  return ms;
}
