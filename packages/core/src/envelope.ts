/**
 * The envelope: a CloudEvents 1.0 event. Herald's own extensions are `traceparent`,
 * `tracestate` (distributed tracing extension), `correlationid`, `causationid`,
 * `partitionkey` (partitioning extension) and `sequence` (sequence extension).
 *
 * Envelopes are plain frozen objects. The JSON structured format (`encodeEnvelope` /
 * `decodeEnvelope`) is the wire form on log transports; broker bindings map the same
 * attributes to headers.
 */
import { randomUUID } from 'node:crypto';
import { HeraldError } from './errors.ts';

export type ExtensionValue = string | number | boolean;

export interface CloudEvent<T = unknown> {
  readonly specversion: '1.0';
  readonly id: string;
  readonly source: string;
  readonly type: string;
  readonly time?: string;
  readonly subject?: string;
  readonly datacontenttype?: string;
  readonly dataschema?: string;
  readonly data?: T;
  readonly data_base64?: string;
  readonly traceparent?: string;
  readonly tracestate?: string;
  readonly correlationid?: string;
  readonly causationid?: string;
  readonly partitionkey?: string;
  readonly sequence?: string;
  readonly [extension: string]: unknown;
}

export const CONTEXT_ATTRIBUTES = ['specversion', 'id', 'source', 'type', 'time', 'subject', 'datacontenttype', 'dataschema'] as const;
export const HERALD_EXTENSIONS = ['traceparent', 'tracestate', 'correlationid', 'causationid', 'partitionkey', 'sequence'] as const;

const NAME_RE = /^[a-z0-9]{1,20}$/;
const TRACEPARENT_RE = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
// RFC 3339 date-time (with 'T' or 't', fractional seconds optional, Z or offset)
const RFC3339_RE = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
const URI_SCHEME_RE = /^[A-Za-z][A-Za-z0-9+.-]*:/;

export interface EnvelopeInput<T = unknown> {
  type: string;
  source: string;
  data?: T;
  id?: string;
  time?: string | Date;
  subject?: string;
  datacontenttype?: string;
  dataschema?: string;
  traceparent?: string;
  tracestate?: string;
  correlationid?: string;
  causationid?: string;
  partitionkey?: string;
  sequence?: string;
  extensions?: Record<string, ExtensionValue>;
}

/**
 * Builds and validates a frozen envelope. `id` defaults to a UUID, `time` to `now`
 * (epoch ms, from the injected clock), `datacontenttype` to `application/json` when there
 * is data. Throws `HERALD_ERR_ENVELOPE_INVALID` naming every broken attribute.
 */
export function createEnvelope<T>(input: EnvelopeInput<T>, now: number = Date.now()): CloudEvent<T> {
  const { extensions, time, ...rest } = input;
  const env: Record<string, unknown> = {
    specversion: '1.0',
    id: input.id ?? randomUUID(),
    source: input.source,
    type: input.type,
    time: time instanceof Date ? time.toISOString() : (time ?? new Date(now).toISOString()),
  };
  for (const [k, v] of Object.entries(rest)) if (v !== undefined && !(k in env)) env[k] = v;
  if (input.data !== undefined && env.datacontenttype === undefined) env.datacontenttype = 'application/json';
  if (extensions) {
    for (const [k, v] of Object.entries(extensions)) {
      if (k in env) throw invalid([`extension "${k}" collides with an attribute already set`]);
      env[k] = v;
    }
  }
  return validateEnvelope(env) as CloudEvent<T>;
}

/** Every problem with `value` as a CloudEvents 1.0 envelope; empty when it is valid. */
export function envelopeProblems(value: unknown): string[] {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return ['envelope must be a JSON object'];
  const v = value as Record<string, unknown>;
  const problems: string[] = [];
  if (v.specversion !== '1.0') problems.push(`specversion must be "1.0" (got ${show(v.specversion)})`);
  for (const req of ['id', 'source', 'type'] as const) {
    if (typeof v[req] !== 'string' || (v[req] as string).length === 0) problems.push(`${req} is required and must be a non-empty string (got ${show(v[req])})`);
  }
  for (const opt of ['subject', 'datacontenttype'] as const) {
    if (v[opt] !== undefined && (typeof v[opt] !== 'string' || (v[opt] as string).length === 0)) problems.push(`${opt} must be a non-empty string when present (got ${show(v[opt])})`);
  }
  if (v.time !== undefined && (typeof v.time !== 'string' || !RFC3339_RE.test(v.time) || Number.isNaN(Date.parse(v.time)))) {
    problems.push(`time must be an RFC 3339 timestamp (got ${show(v.time)})`);
  }
  if (v.dataschema !== undefined && (typeof v.dataschema !== 'string' || !URI_SCHEME_RE.test(v.dataschema))) {
    problems.push(`dataschema must be an absolute URI (got ${show(v.dataschema)})`);
  }
  if (v.data !== undefined && v.data_base64 !== undefined) problems.push('data and data_base64 are mutually exclusive');
  if (v.data_base64 !== undefined && (typeof v.data_base64 !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v.data_base64))) {
    problems.push('data_base64 must be a base64 string');
  }
  if (v.traceparent !== undefined && (typeof v.traceparent !== 'string' || !TRACEPARENT_RE.test(v.traceparent))) {
    problems.push(`traceparent must be a W3C traceparent "00-<32 hex>-<16 hex>-<2 hex>" (got ${show(v.traceparent)})`);
  }
  for (const ext of ['tracestate', 'correlationid', 'causationid', 'partitionkey', 'sequence'] as const) {
    if (v[ext] !== undefined && (typeof v[ext] !== 'string' || (v[ext] as string).length === 0)) problems.push(`${ext} must be a non-empty string when present (got ${show(v[ext])})`);
  }
  for (const [name, val] of Object.entries(v)) {
    if (name === 'data' || name === 'data_base64') continue;
    if (!NAME_RE.test(name)) {
      problems.push(`attribute name "${name}" breaks the CloudEvents naming rule (lower-case a-z and 0-9 only, at most 20 characters)`);
      continue;
    }
    if (val === null || (typeof val !== 'string' && typeof val !== 'boolean' && !(typeof val === 'number' && Number.isInteger(val)))) {
      problems.push(`attribute "${name}" must be a string, boolean or integer (got ${show(val)})`);
    }
  }
  return problems;
}

/** Validates and freezes `value` as an envelope; throws `HERALD_ERR_ENVELOPE_INVALID`. */
export function validateEnvelope(value: unknown): CloudEvent {
  const problems = envelopeProblems(value);
  if (problems.length > 0) throw invalid(problems, value);
  return Object.freeze(value as CloudEvent);
}

/** The JSON structured format, as a string. */
export function encodeEnvelope(env: CloudEvent): string {
  return JSON.stringify(env);
}

/**
 * Parses the JSON structured format. Throws `HERALD_ERR_DECODE` for bytes that are not a
 * JSON object and `HERALD_ERR_ENVELOPE_INVALID` for an object that is not a valid envelope.
 */
export function decodeEnvelope(raw: string | Uint8Array): CloudEvent {
  const text = typeof raw === 'string' ? raw : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new HeraldError('HERALD_ERR_DECODE', `envelope is not valid JSON: ${(cause as Error).message}`, { cause, details: { sample: text.slice(0, 200) } });
  }
  return validateEnvelope(parsed);
}

/** Byte length of the JSON structured encoding (what `maxPayloadBytes` limits). */
export function encodedSize(encoded: string): number {
  return Buffer.byteLength(encoded, 'utf8');
}

function invalid(problems: string[], value?: unknown): HeraldError {
  const id = typeof value === 'object' && value !== null ? (value as Record<string, unknown>).id : undefined;
  const type = typeof value === 'object' && value !== null ? (value as Record<string, unknown>).type : undefined;
  return new HeraldError('HERALD_ERR_ENVELOPE_INVALID', `invalid CloudEvents envelope${typeof type === 'string' ? ` of type "${type}"` : ''}: ${problems.join('; ')}`, {
    details: { problems, id, type },
  });
}

function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 60)}…` : s;
  } catch {
    return String(v);
  }
}
