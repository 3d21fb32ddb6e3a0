/**
 * Instrumentation, once, in the core: `node:diagnostics_channel` channels that Herald's own
 * code publishes to and that optional packages (`@herald/otel`: spans, metrics, logs)
 * subscribe to. The core depends on nothing for it.
 *
 * Tracing channels (each has the five sub-channels `start`, `end`, `asyncStart`, `asyncEnd`,
 * `error`; the message object is the same through one operation, and the subscriber may add
 * fields to it — `traceparent`/`tracestate` on a publish are read back before the envelope is
 * built, which is how trace context gets into the envelope):
 *
 * | channel             | one operation is                                    | message        |
 * |---------------------|-----------------------------------------------------|----------------|
 * | `herald:publish`    | `publish`, `publishBatch`, `publishEnvelopes` (operation 'send'), `envelope()` (operation 'create', for an outbox write) | `PublishMessage` |
 * | `herald:handle`     | one handler attempt (retries are separate attempts)  | `HandleMessage` |
 * | `herald:append`     | one event-store append to one stream                | `AppendMessage` |
 * | `herald:relay`      | one outbox relay publish of a batch of rows          | `RelayMessage` |
 * | `herald:saga.step`  | one saga step (a message handled by a saga instance) | `SagaStepMessage` |
 *
 * Plain channels (one `publish` per event): `herald:deliver` (`DeliverMessage`, a delivery
 * the router received), `herald:retry` (`RetryMessage`, a failed attempt that will be retried),
 * `herald:dead-letter` (`DeadLetterMessage`, a message stored as a dead letter).
 *
 * Cost: every helper checks `hasSubscribers` first and calls straight through when nothing
 * listens — one property read per operation (measured in `npm run bench -- --only observability`).
 * Every traced operation ends with `asyncEnd` (a synchronous throw is turned into a rejection).
 * Subscribers must not throw (diagnostics_channel reports a throwing subscriber as an
 * uncaught exception) and should be quick: they run inline on Herald's hot paths.
 */
import dc from 'node:diagnostics_channel';
import type { CloudEvent } from './envelope.ts';
import type { Delivery, OutgoingMessage, PublishReceipt } from './transport.ts';

/** Fields `diagnostics_channel.tracingChannel` adds to a message as the operation ends. */
interface Traced<R> {
  /** Set when the operation rejected/threw. */
  error?: unknown;
  /** Set when the operation resolved. */
  result?: R;
}

export interface PublishMessage extends Traced<readonly PublishReceipt[] | OutgoingMessage> {
  /** 'send': to a transport now. 'create': an envelope built for later sending (an outbox write). */
  readonly operation: 'send' | 'create';
  /** The publisher's CloudEvents `source` (the service). */
  readonly source: string;
  /** Destination topic; undefined only when the definition names none (the operation then fails). */
  readonly topic: string | undefined;
  /** Number of messages in the operation. */
  readonly count: number;
  /** Filled once the envelopes are built (before the transport is called). */
  messages: readonly OutgoingMessage[] | undefined;
  /** Set by a subscriber at `start`: written into envelopes that do not carry their own. */
  traceparent?: string;
  tracestate?: string;
  /** Free for subscribers (span, start time). */
  [key: symbol]: unknown;
}

export interface HandleMessage extends Traced<void>, Omit<HandleFields, 'delivery'> {
  /** Transport position of the delivery; undefined on redrive. */
  readonly position: string | undefined;
  [key: symbol]: unknown;
}

/** What the router's handler context offers `traceHandle` (a `MessageContext` has all of it). */
export interface HandleFields {
  readonly envelope: CloudEvent;
  readonly group: string;
  /** The handler's name. */
  readonly handler: string;
  readonly topic: string;
  readonly partition: number;
  readonly key: string | undefined;
  /** 1-based attempt number. */
  readonly attempt: number;
  /** Redrive of a dead letter (no transport delivery). */
  readonly redrive: boolean;
  readonly delivery: { readonly position: string } | undefined;
}

export interface AppendMessage extends Traced<unknown> {
  /** Backend name ('sqlite', 'memory', 'postgres'). */
  readonly store: string;
  readonly streamId: string;
  /** Events in this append. */
  readonly count: number;
  [key: symbol]: unknown;
}

export interface RelayMessage extends Traced<unknown> {
  readonly topic: string;
  /** The outbox partition the rows come from. */
  readonly partition: number;
  /** The rows' messages, unchanged: their envelopes carry the trace context of the write. */
  readonly messages: readonly OutgoingMessage[];
  [key: symbol]: unknown;
}

export interface SagaStepMessage extends Traced<unknown> {
  readonly saga: string;
  readonly instanceId: string;
  /** The step (or message type) being applied. */
  readonly step: string;
  /** The message that triggered the step, when there is one (a timer has none). */
  readonly envelope: CloudEvent | undefined;
  [key: symbol]: unknown;
}

export interface DeliverMessage {
  readonly group: string;
  readonly delivery: Delivery;
}

export interface RetryMessage {
  readonly group: string;
  readonly handler: string;
  readonly topic: string;
  readonly partition: number;
  readonly envelope: CloudEvent;
  /** The attempt that failed. */
  readonly attempt: number;
  /** Delay before the next attempt, ms. */
  readonly delayMs: number;
  readonly error: unknown;
}

export interface DeadLetterMessage {
  readonly group: string;
  readonly handler: string;
  readonly topic: string;
  readonly partition: number;
  readonly envelope: CloudEvent | null;
  readonly error: unknown;
  readonly attempts: number;
  /** The failure happened on a redrive of an earlier dead letter. */
  readonly redrive: boolean;
}

export const CHANNEL_NAMES = {
  publish: 'herald:publish',
  handle: 'herald:handle',
  append: 'herald:append',
  relay: 'herald:relay',
  sagaStep: 'herald:saga.step',
  deliver: 'herald:deliver',
  retry: 'herald:retry',
  deadLetter: 'herald:dead-letter',
} as const;

/** The channels. Subscribe with `channels.handle.subscribe({ start, asyncEnd, error, … })` or `channels.deliver.subscribe(fn)`. */
export const channels = {
  publish: dc.tracingChannel<PublishMessage>(CHANNEL_NAMES.publish),
  handle: dc.tracingChannel<HandleMessage>(CHANNEL_NAMES.handle),
  append: dc.tracingChannel<AppendMessage>(CHANNEL_NAMES.append),
  relay: dc.tracingChannel<RelayMessage>(CHANNEL_NAMES.relay),
  sagaStep: dc.tracingChannel<SagaStepMessage>(CHANNEL_NAMES.sagaStep),
  deliver: dc.channel(CHANNEL_NAMES.deliver),
  retry: dc.channel(CHANNEL_NAMES.retry),
  deadLetter: dc.channel(CHANNEL_NAMES.deadLetter),
};

type AnyTracing = dc.TracingChannel<object, object>;

/**
 * Runs `fn(message)` as one traced operation on `channel`, or calls `fn` directly when the
 * channel has no subscriber (then `make` is never called). `fn` receives the message so it can
 * read what a subscriber set at `start` (trace context).
 */
export function traced<M extends object, R>(channel: dc.TracingChannel<M, M>, make: () => M, fn: (message: M | undefined) => Promise<R>): Promise<R> {
  if (!(channel as unknown as AnyTracing).hasSubscribers) return fn(undefined);
  const message = make();
  // Always a promise (a synchronous throw becomes a rejection), so subscribers always see asyncEnd.
  return channel.tracePromise(callAsPromise as (f: typeof fn, m: M) => Promise<R>, message, undefined, fn, message);
}

/** Runs one handler attempt under `herald:handle`. */
export function traceHandle<C extends HandleFields>(fn: (ctx: C) => Promise<void>, ctx: C): Promise<void> {
  if (!(channels.handle as unknown as AnyTracing).hasSubscribers) return fn(ctx);
  const message: HandleMessage = {
    envelope: ctx.envelope,
    group: ctx.group,
    handler: ctx.handler,
    topic: ctx.topic,
    partition: ctx.partition,
    key: ctx.key,
    attempt: ctx.attempt,
    redrive: ctx.redrive,
    position: ctx.delivery?.position,
  };
  return channels.handle.tracePromise(callAsPromise as (f: typeof fn, c: C) => Promise<void>, message, undefined, fn, ctx);
}

/**
 * `fn(arg)` as a promise — a synchronous throw becomes a rejection, so a traced operation
 * always ends with `asyncEnd` — without an async wrapper's extra promise and closure per call.
 */
function callAsPromise<A, R>(fn: (arg: A) => R | Promise<R>, arg: A): Promise<R> {
  try {
    const r = fn(arg);
    return r instanceof Promise ? r : Promise.resolve(r);
  } catch (e) {
    return Promise.reject(e);
  }
}

/** Publishes on a plain channel only when someone listens; `make` builds the message lazily. */
export function notify<M>(channel: dc.Channel, make: () => M): void {
  if (channel.hasSubscribers) channel.publish(make());
}

/**
 * A publisher's `publish`, `publishBatch`, `envelope` and `publishEnvelopes`, made from its two
 * primitives (build an envelope; send built messages) and traced on `herald:publish`. With a
 * subscriber, trace context it set at `start` goes into envelopes whose options carry none, and
 * the built messages are on the channel message before the transport is called.
 * `publishBatch` builds (validates) every item before sending any, then makes one transport
 * call per topic; receipts in input order.
 */
export function instrumentPublisher<D extends { readonly topic?: string | undefined }, O extends PublishTraceOptions>(
  source: string,
  primitives: {
    /** `trace`: the context a subscriber set at `start`, for envelopes whose options carry none. */
    envelope(definition: D, data: never, options?: O, trace?: TraceContext): Built | Promise<Built>;
    publishEnvelopes(topic: string, messages: readonly OutgoingMessage[]): Promise<readonly PublishReceipt[]>;
  },
): InstrumentedPublisher<D, O> {
  const ch = channels.publish;
  const { envelope: build, publishEnvelopes: send } = primitives;
  const make = (operation: 'send' | 'create', topic: string | undefined, count: number) => (): PublishMessage => ({ operation, source, topic, count, messages: undefined });
  async function batch(items: readonly { readonly definition: D; readonly data: unknown; readonly options?: O }[], m: PublishMessage | undefined): Promise<readonly PublishReceipt[]> {
    // Built synchronously unless a schema is asynchronous: no promise per message otherwise.
    const results = items.map((i) => build(i.definition, i.data as never, i.options, m));
    const built = results.some((r) => r instanceof Promise) ? await Promise.all(results) : (results as Built[]);
    if (m) m.messages = built.map((b) => b.message);
    const byTopic = new Map<string, number[]>();
    built.forEach((b, i) => {
      const list = byTopic.get(b.topic);
      if (list) list.push(i);
      else byTopic.set(b.topic, [i]);
    });
    const receipts: PublishReceipt[] = new Array(items.length);
    await Promise.all(
      [...byTopic].map(async ([topic, idx]) => {
        const r = await send(
          topic,
          idx.map((i) => built[i]!.message),
        );
        idx.forEach((i, j) => (receipts[i] = r[j]!));
      }),
    );
    return receipts;
  }
  return {
    envelope: (definition, data, o) =>
      traced(ch, make('create', o?.topic ?? definition.topic, 1), async (m) => {
        const built = await build(definition, data as never, o, m);
        if (m) m.messages = [built.message];
        return built;
      }),
    publish: (definition, data, o) =>
      traced(ch, make('send', o?.topic ?? definition.topic, 1), async (m) => {
        const { topic, message } = await build(definition, data as never, o, m);
        if (m) m.messages = [message];
        const [receipt] = await send(topic, [message]);
        return receipt!;
      }),
    publishBatch: (items) => {
      if (!(ch as unknown as AnyTracing).hasSubscribers) return batch(items, undefined);
      const topics = new Set(items.map((i) => i.options?.topic ?? i.definition.topic));
      return traced(ch, make('send', topics.size === 1 ? [...topics][0] : undefined, items.length), (m) => batch(items, m));
    },
    publishEnvelopes: (topic, messages) =>
      traced(ch, make('send', topic, messages.length), (m) => {
        if (m) m.messages = messages;
        return send(topic, messages);
      }),
  };
}

/** What `instrumentPublisher` returns (the publisher's methods, typed loosely; the publisher narrows them). */
export interface InstrumentedPublisher<D, O> {
  envelope(definition: D, data: never, options?: O): Promise<{ topic: string; message: OutgoingMessage }>;
  publish(definition: D, data: never, options?: O): Promise<PublishReceipt>;
  publishBatch(items: readonly { readonly definition: D; readonly data: unknown; readonly options?: O }[]): Promise<readonly PublishReceipt[]>;
  publishEnvelopes(topic: string, messages: readonly OutgoingMessage[]): Promise<readonly PublishReceipt[]>;
}

type Built = { topic: string; message: OutgoingMessage };

/** W3C trace context for an envelope (what a `herald:publish` subscriber sets at `start`). */
export interface TraceContext {
  readonly traceparent?: string | undefined;
  readonly tracestate?: string | undefined;
}

interface PublishTraceOptions {
  readonly topic?: string;
  readonly traceparent?: string;
  readonly tracestate?: string;
}

// ── consumer lag ──────────────────────────────────────────────────────────────

/** Lag of one consumer group on one partition. */
export interface PartitionLag {
  readonly topic: string;
  readonly group: string;
  readonly partition: number;
  /** Position of the newest message in the partition (a log offset as a decimal string; '-1' when empty). */
  readonly head: string;
  /** The group's committed position ('-1' when nothing is committed). */
  readonly committed: string;
  /** Messages after the committed position. */
  readonly messages: number;
  /** Epoch ms the oldest message after the committed position was appended; undefined when none. */
  readonly oldestUnhandledAt: number | undefined;
}

/**
 * Optional interface of transports that can report consumer lag (every transport Herald ships
 * but MQTT; the transport contract's consumer-lag scenario is its specification).
 * `lag()` reads every (topic, group, partition) the transport knows of; filters narrow it.
 * A read only: safe to call concurrently and from any process sharing the backend.
 */
export interface LagSource {
  lag(filter?: { readonly group?: string; readonly topic?: string }): Promise<readonly PartitionLag[]>;
}

/** Whether `value` (a transport, say) implements `LagSource`. */
export function isLagSource(value: unknown): value is LagSource {
  return typeof value === 'object' && value !== null && typeof (value as { lag?: unknown }).lag === 'function';
}
