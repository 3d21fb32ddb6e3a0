/**
 * pino JSON logs with Herald's fields: `service` on every line; inside a handler (the
 * `herald:handle` channel binds the message being handled) also `eventId`, `type`,
 * `correlationId`, `causationId`, `group`, `handler`, `attempt`; `traceId`/`spanId` from the
 * active OpenTelemetry span (else from the envelope's `traceparent`).
 *
 * Personal data: the data fields a definition marks `personal` are replaced by `[REDACTED]`
 * wherever an envelope is logged under `event` (per event type), and under `data` (the union
 * of every registered definition's paths: a bare `data` object does not say its type).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Channel } from 'node:diagnostics_channel';
import { trace } from '@opentelemetry/api';
import { type CloudEvent, channels, type HandleMessage, type MessageDefinition } from '@herald/core';
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';

export const REDACTED = '[REDACTED]';

export interface HeraldLoggerOptions {
  /** Service name, on every line. */
  readonly service: string;
  /** Definitions whose `personal` paths are redacted. */
  readonly definitions?: readonly MessageDefinition[];
  /** pino level (default 'info'). */
  readonly level?: string;
  /** Where lines go (default stdout). */
  readonly destination?: DestinationStream;
  /** Bind the message being handled so lines logged inside a handler carry its ids (default true). */
  readonly bindHandlers?: boolean;
  /** More pino options (merged; `mixin`, `base` and `serializers` are Herald's; pino's own `redact` still works for other paths). */
  readonly pino?: Omit<LoggerOptions, 'mixin' | 'base' | 'serializers'>;
}

export interface HeraldLogger extends Logger {
  /** Stops binding handler messages (the logger keeps working). Idempotent. */
  unbind(): void;
}

/** The ids of an envelope, as log fields. */
export function eventFields(envelope: CloudEvent): Record<string, string> {
  const out: Record<string, string> = { eventId: envelope.id, type: envelope.type, source: envelope.source };
  if (envelope.correlationid !== undefined) out.correlationId = envelope.correlationid;
  if (envelope.causationid !== undefined) out.causationId = envelope.causationid;
  const tp = envelope.traceparent?.split('-');
  if (tp && tp.length >= 3) out.traceId = tp[1]!;
  return out;
}

/**
 * A copy of `data` with every value at one of `paths` replaced by `[REDACTED]` ('*' matches any
 * key or array index of one level; arrays on the way are walked element by element).
 */
export function redactData(data: unknown, paths: readonly string[]): unknown {
  if (paths.length === 0 || typeof data !== 'object' || data === null) return data;
  let out: unknown = data;
  for (const p of paths) out = redactPath(out, p.split('.'), 0);
  return out;
}

function redactPath(value: unknown, segs: readonly string[], i: number): unknown {
  if (typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value) && segs[i] !== '*' && !/^\d+$/.test(segs[i]!)) return value.map((v) => redactPath(v, segs, i));
  const seg = segs[i]!;
  const last = i === segs.length - 1;
  const copy: Record<string, unknown> | unknown[] = Array.isArray(value) ? [...value] : { ...(value as Record<string, unknown>) };
  const keys = seg === '*' ? Object.keys(copy) : Object.hasOwn(copy, seg) ? [seg] : [];
  for (const k of keys) {
    const c = copy as Record<string, unknown>;
    c[k] = last ? REDACTED : redactPath(c[k], segs, i + 1);
  }
  return copy;
}

/** An envelope with its type's personal data fields redacted. */
export function redactEnvelope(envelope: CloudEvent, personalByType: ReadonlyMap<string, readonly string[]>): CloudEvent {
  const paths = personalByType.get(envelope.type);
  if (!paths || paths.length === 0 || envelope.data === undefined) return envelope;
  return { ...envelope, data: redactData(envelope.data, paths) };
}

/** A pino logger with Herald's fields and personal-data redaction (see the module doc). */
export function createLogger(options: HeraldLoggerOptions): HeraldLogger {
  const personalByType = new Map<string, readonly string[]>();
  for (const d of options.definitions ?? []) {
    if (d.personal.length > 0) personalByType.set(d.type, [...new Set([...(personalByType.get(d.type) ?? []), ...d.personal])]);
  }
  const union = [...new Set([...personalByType.values()].flat())];
  const current = new AsyncLocalStorage<HandleMessage>();
  const bind = options.bindHandlers ?? true;
  const start = channels.handle.start as unknown as Channel<unknown, HandleMessage>;
  if (bind) start.bindStore(current, (m) => m as HandleMessage);

  const logger = pino(
    {
      level: options.level ?? 'info',
      ...options.pino,
      base: { service: options.service },
      // pino path syntax: a '*' segment is a wildcard; other segments are quoted so names with '-' work.
      serializers: {
        event: (e: unknown) => (isEnvelope(e) ? redactEnvelope(e, personalByType) : e),
        data: (d: unknown) => redactData(d, union),
        err: pino.stdSerializers.err,
      },
      mixin() {
        const out: Record<string, unknown> = {};
        const m = bind ? current.getStore() : undefined;
        if (m) {
          Object.assign(out, eventFields(m.envelope));
          out.group = m.group;
          out.handler = m.handler;
          out.attempt = m.attempt;
        }
        const sc = trace.getActiveSpan()?.spanContext();
        if (sc && trace.isSpanContextValid(sc)) {
          out.traceId = sc.traceId;
          out.spanId = sc.spanId;
        }
        return out;
      },
    },
    options.destination ?? pino.destination(1),
  ) as HeraldLogger;
  let unbound = !bind;
  logger.unbind = () => {
    if (unbound) return;
    unbound = true;
    start.unbindStore(current);
  };
  return logger;
}

function isEnvelope(e: unknown): e is CloudEvent {
  return typeof e === 'object' && e !== null && (e as CloudEvent).specversion === '1.0' && typeof (e as CloudEvent).type === 'string';
}
