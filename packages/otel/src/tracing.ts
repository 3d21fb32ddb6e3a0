/**
 * Spans from Herald's diagnostics channels, following the OpenTelemetry messaging semantic
 * conventions:
 *
 * | channel            | span name                 | kind     | parent                                   | links |
 * |--------------------|---------------------------|----------|------------------------------------------|-------|
 * | herald:publish     | `send <topic>` / `create <topic>` | PRODUCER | the active context                  | — |
 * | herald:handle      | `process <topic>`         | CONSUMER | the envelope's `traceparent` (else the active context) | redrive: the producer context |
 * | herald:relay       | `send <topic>`            | PRODUCER | none: a new trace                        | every row's `traceparent` (the original write) |
 * | herald:append      | `append <store>`          | INTERNAL | the active context                       | — |
 * | herald:saga.step   | `saga <saga> <step>`      | INTERNAL | the active context, else the envelope's  | — |
 *
 * Trace context into envelopes: at the `start` of a publish the span's context is written on
 * the channel message (`traceparent`, `tracestate`), and the publisher puts it in envelopes that
 * carry none. Envelopes are never changed afterwards: a relayed outbox row keeps the context of
 * the transaction that wrote it, so the consumer's span is a child of the original write and
 * the relay's own span is linked to it.
 *
 * Active context: when the global OpenTelemetry context manager keeps its context in an
 * `AsyncLocalStorage` (`AsyncLocalStorageContextManager`, which `startOtel` and the Node SDK
 * register), the span is made active for the traced operation through
 * `diagnostics_channel`'s `bindStore`, so a handler's own spans and publishes are its children.
 * With another context manager, spans are still made (and parented from envelopes), but are not
 * active inside the handler.
 */
import type { AsyncLocalStorage } from 'node:async_hooks';
import {
  type Attributes,
  type Context,
  context,
  type Link,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type SpanContext,
  TraceFlags,
  type Tracer,
  type TracerProvider,
  trace,
  type TextMapGetter,
} from '@opentelemetry/api';
import { TraceState, W3CTraceContextPropagator } from '@opentelemetry/core';
import { type AppendMessage, type CloudEvent, channels, type HandleMessage, type PublishMessage, type RelayMessage, type SagaStepMessage } from '@herald/core';
import type { Channel, TracingChannel } from 'node:diagnostics_channel';

export interface TracingOptions {
  /** Default: the global tracer provider. */
  readonly tracerProvider?: TracerProvider;
  /** `messaging.system` on every span (default 'herald'). */
  readonly system?: string;
  /** The AsyncLocalStorage the context manager keeps the active context in; default: found on the global context manager. */
  readonly contextStorage?: AsyncLocalStorage<Context>;
  /**
   * Make each span active while its operation runs (default true). False: spans are still made
   * and parented from envelopes, but a handler's own spans and publishes do not see its span —
   * and no AsyncLocalStorage is entered per message, whose promise hooks slow every promise of
   * the process on Node 20.
   */
  readonly bindContext?: boolean;
  /**
   * A message whose `traceparent` says "not sampled" gets no consumer span of its own: its
   * producer context is made active as it is, so what the handler publishes carries the same
   * unsampled trace (default true). That is what a ParentBased sampler (the default, and
   * `parentbased_*` from OTEL_TRACES_SAMPLER) decides anyway, without the cost of a span per
   * message; set false with a sampler that samples under an unsampled remote parent.
   */
  readonly unsampledPassThrough?: boolean;
}

export const ATTR = {
  system: 'messaging.system',
  destination: 'messaging.destination.name',
  operationType: 'messaging.operation.type',
  operationName: 'messaging.operation.name',
  messageId: 'messaging.message.id',
  conversationId: 'messaging.message.conversation_id',
  group: 'messaging.consumer.group.name',
  partition: 'messaging.destination.partition.id',
  batchCount: 'messaging.batch.message_count',
  eventId: 'cloudevents.event_id',
  eventType: 'cloudevents.event_type',
  eventSource: 'cloudevents.event_source',
  errorType: 'error.type',
  handler: 'herald.handler',
  attempt: 'herald.attempt',
  redrive: 'herald.redrive',
  causationId: 'herald.causation_id',
  linkReason: 'herald.link.reason',
  outboxPartition: 'herald.outbox.partition',
  stream: 'herald.stream.id',
  store: 'herald.event_store',
  saga: 'herald.saga',
  sagaInstance: 'herald.saga.instance_id',
  sagaStep: 'herald.saga.step',
} as const;

const SPAN = Symbol('herald.otel.span');
/** Unsampled producer contexts kept for reuse (a few per partition in flight is plenty). */
const UNSAMPLED_CACHE_SIZE = 256;
const propagator = new W3CTraceContextPropagator();
const envelopeGetter: TextMapGetter<CloudEvent> = {
  keys: () => ['traceparent', 'tracestate'],
  get: (carrier, key) => (key === 'traceparent' ? carrier.traceparent : key === 'tracestate' ? carrier.tracestate : undefined),
};

/** The producer context an envelope carries (W3C trace context), or undefined. */
export function envelopeContext(envelope: CloudEvent, base: Context = context.active()): Context | undefined {
  if (envelope.traceparent === undefined) return undefined;
  const ctx = propagator.extract(base, envelope, envelopeGetter);
  return trace.getSpanContext(ctx) === undefined ? undefined : ctx;
}

/** The remote span context of an envelope whose W3C `traceparent` (version 00) is not sampled; undefined otherwise. */
function unsampledParent(envelope: CloudEvent): SpanContext | undefined {
  const tp = envelope.traceparent;
  if (tp === undefined || tp.length !== 55 || tp.charCodeAt(0) !== 48 || tp.charCodeAt(1) !== 48) return undefined;
  if ((Number.parseInt(tp[54]!, 16) & 1) !== 0) return undefined;
  const sc: SpanContext = {
    traceId: tp.slice(3, 35),
    spanId: tp.slice(36, 52),
    traceFlags: TraceFlags.NONE,
    isRemote: true,
    ...(envelope.tracestate ? { traceState: new TraceState(envelope.tracestate) } : {}),
  };
  return trace.isSpanContextValid(sc) ? sc : undefined;
}

/** The active context manager's AsyncLocalStorage, when it has one. */
function globalContextStorage(): AsyncLocalStorage<Context> | undefined {
  const manager = (context as unknown as { _getContextManager?: () => unknown })._getContextManager?.();
  const als = (manager as { _asyncLocalStorage?: unknown } | undefined)?._asyncLocalStorage;
  return als !== undefined && typeof (als as AsyncLocalStorage<Context>).run === 'function' ? (als as AsyncLocalStorage<Context>) : undefined;
}

type Message = { error?: unknown; [SPAN]?: Span | undefined };

/** Subscribes spans to the channels; returns the unsubscribe. */
export function instrumentTracing(options: TracingOptions = {}): () => void {
  const tracer: Tracer = (options.tracerProvider ?? trace.getTracerProvider()).getTracer('@herald/otel', '0.1.0');
  const system = options.system ?? 'herald';
  const storage = options.bindContext === false ? undefined : (options.contextStorage ?? globalContextStorage());
  const passThrough = options.unsampledPassThrough ?? true;
  // Unsampled producer contexts by traceparent: the messages of one producer batch share one,
  // and a consumer interleaves a few batches across its partitions. Bounded: cleared when full.
  const unsampledContexts = new Map<string, { readonly tracestate: string | undefined; readonly active: Context; readonly span: Span; readonly ctx: Context }>();
  const undo: (() => void)[] = [];

  function wire<M extends Message>(ch: TracingChannel<M, M>, start: (m: M, active: Context) => { span: Span; ctx: Context }, end?: (m: M, span: Span) => void): void {
    const begin = (m: M): Context => {
      const active = context.active();
      const { span, ctx } = start(m, active);
      m[SPAN] = span;
      return ctx;
    };
    const handlers = {
      start: storage ? undefined : (m: M) => void begin(m),
      error: (m: M) => {
        const span = m[SPAN];
        if (!span) return;
        const e = m.error;
        span.recordException(e instanceof Error ? e : String(e));
        span.setStatus({ code: SpanStatusCode.ERROR, message: e instanceof Error ? e.message : String(e) });
        span.setAttribute(ATTR.errorType, errorType(e));
      },
      asyncEnd: (m: M) => {
        const span = m[SPAN];
        if (!span) return;
        m[SPAN] = undefined;
        end?.(m, span);
        span.end();
      },
    };
    const subs = Object.fromEntries(Object.entries(handlers).filter(([, v]) => v !== undefined)) as unknown as Parameters<typeof ch.subscribe>[0];
    ch.subscribe(subs);
    const startChannel = ch.start as unknown as Channel<unknown, Context>;
    if (storage) startChannel.bindStore(storage, (m) => begin(m as unknown as M));
    undo.push(() => {
      ch.unsubscribe(subs);
      if (storage) startChannel.unbindStore(storage);
    });
  }

  wire<PublishMessage>(
    channels.publish,
    (m, active) => {
      const span = tracer.startSpan(
        `${m.operation} ${m.topic ?? '(topic)'}`,
        {
          kind: SpanKind.PRODUCER,
          attributes: {
            [ATTR.system]: system,
            [ATTR.operationType]: m.operation,
            [ATTR.operationName]: m.operation,
            ...(m.topic !== undefined ? { [ATTR.destination]: m.topic } : {}),
            ...(m.count !== 1 ? { [ATTR.batchCount]: m.count } : {}),
            [ATTR.eventSource]: m.source,
          },
        },
        active,
      );
      const sc = span.spanContext();
      if (trace.isSpanContextValid(sc)) {
        m.traceparent = `00-${sc.traceId}-${sc.spanId}-0${sc.traceFlags & 1}`;
        const state = sc.traceState?.serialize();
        if (state) m.tracestate = state;
      }
      return { span, ctx: trace.setSpan(active, span) };
    },
    (m, span) => {
      const only = m.messages?.length === 1 ? m.messages[0]!.envelope : undefined;
      if (only) span.setAttributes(envelopeAttributes(only));
      const receipts = Array.isArray(m.result) ? (m.result as readonly { partition: number }[]) : undefined;
      if (receipts?.length === 1) span.setAttribute(ATTR.partition, String(receipts[0]!.partition));
    },
  );

  wire<HandleMessage>(channels.handle, (m, active) => {
    const tp = m.envelope.traceparent;
    if (passThrough && !m.redrive && tp !== undefined) {
      const hit = unsampledContexts.get(tp);
      if (hit !== undefined && hit.tracestate === m.envelope.tracestate && hit.active === active) return hit;
      const unsampled = unsampledParent(m.envelope);
      if (unsampled) {
        const span = trace.wrapSpanContext(unsampled);
        const entry = { tracestate: m.envelope.tracestate, active, span, ctx: trace.setSpan(active, span) };
        if (unsampledContexts.size >= UNSAMPLED_CACHE_SIZE) unsampledContexts.clear();
        unsampledContexts.set(tp, entry);
        return entry;
      }
    }
    const producer = envelopeContext(m.envelope, active);
    const links: Link[] = [];
    const producerSpan = producer ? trace.getSpanContext(producer) : undefined;
    if (m.redrive && producerSpan) links.push({ context: producerSpan, attributes: { [ATTR.linkReason]: 'redrive' } });
    const parent = producer ?? active;
    // The hot path: attributes are made only for spans that record (a sampled-out span gets none;
    // samplers see the span name, kind, parent and links).
    const span = tracer.startSpan(`process ${m.topic}`, { kind: SpanKind.CONSUMER, links }, parent);
    if (!span.isRecording()) return { span, ctx: trace.setSpan(parent, span) };
    span.setAttributes({
      [ATTR.system]: system,
      [ATTR.operationType]: 'process',
      [ATTR.operationName]: 'process',
      [ATTR.destination]: m.topic,
      [ATTR.group]: m.group,
      [ATTR.partition]: String(m.partition),
      [ATTR.handler]: m.handler,
      [ATTR.attempt]: m.attempt,
      ...envelopeAttributes(m.envelope),
      ...(m.redrive ? { [ATTR.redrive]: true } : {}),
    });
    return { span, ctx: trace.setSpan(parent, span) };
  });

  // A relay works in the background: whatever context woke it up is incidental, so its span
  // starts a trace of its own, linked to each row's original write.
  wire<RelayMessage>(channels.relay, (m) => {
    const active = ROOT_CONTEXT;
    const links: Link[] = [];
    for (const msg of m.messages) {
      const ctx = envelopeContext(msg.envelope, active);
      const sc = ctx ? trace.getSpanContext(ctx) : undefined;
      if (sc) links.push({ context: sc, attributes: { [ATTR.linkReason]: 'outbox', [ATTR.messageId]: msg.envelope.id } });
    }
    const span = tracer.startSpan(
      `send ${m.topic}`,
      {
        kind: SpanKind.PRODUCER,
        links,
        attributes: {
          [ATTR.system]: system,
          [ATTR.operationType]: 'send',
          [ATTR.operationName]: 'relay',
          [ATTR.destination]: m.topic,
          [ATTR.outboxPartition]: m.partition,
          ...(m.messages.length === 1 ? envelopeAttributes(m.messages[0]!.envelope) : { [ATTR.batchCount]: m.messages.length }),
        },
      },
      active,
    );
    return { span, ctx: trace.setSpan(active, span) };
  });

  wire<AppendMessage>(channels.append, (m, active) => {
    const span = tracer.startSpan(`append ${m.store}`, { kind: SpanKind.INTERNAL, attributes: { [ATTR.store]: m.store, [ATTR.stream]: m.streamId, [ATTR.batchCount]: m.count } }, active);
    return { span, ctx: trace.setSpan(active, span) };
  });

  wire<SagaStepMessage>(channels.sagaStep, (m, active) => {
    const parent = trace.getSpan(active) === undefined && m.envelope ? (envelopeContext(m.envelope, active) ?? active) : active;
    const span = tracer.startSpan(
      `saga ${m.saga} ${m.step}`,
      {
        kind: SpanKind.INTERNAL,
        attributes: { [ATTR.saga]: m.saga, [ATTR.sagaInstance]: m.instanceId, [ATTR.sagaStep]: m.step, ...(m.envelope ? envelopeAttributes(m.envelope) : {}) },
      },
      parent,
    );
    return { span, ctx: trace.setSpan(parent, span) };
  });

  let closed = false;
  return () => {
    if (closed) return;
    closed = true;
    for (const u of undo) u();
  };
}

function envelopeAttributes(e: CloudEvent): Attributes {
  return {
    [ATTR.messageId]: e.id,
    [ATTR.eventId]: e.id,
    [ATTR.eventType]: e.type,
    [ATTR.eventSource]: e.source,
    ...(e.correlationid !== undefined ? { [ATTR.conversationId]: e.correlationid } : {}),
    ...(e.causationid !== undefined ? { [ATTR.causationId]: e.causationid } : {}),
  };
}

function errorType(e: unknown): string {
  if (typeof e === 'object' && e !== null) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    const name = (e as { name?: unknown }).name;
    if (typeof name === 'string') return name;
  }
  return '_OTHER';
}
