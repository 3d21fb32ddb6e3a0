/**
 * The envelope: a CloudEvents 1.0 event. Herald's own extensions are `traceparent`,
 * `tracestate` (distributed tracing extension), `correlationid`, `causationid`,
 * `partitionkey` (partitioning extension) and `sequence` (sequence extension).
 *
 * Envelopes are plain frozen objects. The JSON structured format (`encodeEnvelope` /
 * `decodeEnvelope`) is the wire form on log transports; broker bindings map the same
 * attributes to headers.
 *
 * Validation follows CloudEvents 1.0.2 (spec.md, json-format.md) and the W3C Trace Context
 * `traceparent` format. Herald is strict about what it produces and accepts every event the
 * spec allows: the one "SHOULD" it enforces — attribute names of at most 20 characters — is
 * checked on `createEnvelope` (and `{ producing: true }`) only, never on decode.
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

/** The MUST: lower-case ASCII letters and digits. */
const NAME_RE = /^[a-z0-9]+$/;
/** The SHOULD Herald holds itself to when producing: at most 20 characters. */
const MAX_NAME_LENGTH = 20;
/** CloudEvents String: no control characters, no unpaired surrogates, no noncharacters. */
const BAD_STRING_CHAR_RE = /[\p{Cc}\p{Cs}\p{Noncharacter_Code_Point}]/u;
const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;

// W3C Trace Context: version-traceid-parentid-flags, lower-case hex. Version ff is invalid;
// all-zero trace or parent ids are invalid; versions above 00 may append "-…" fields.
const TRACEPARENT_RE = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

// RFC 3339 date-time; ranges are checked in code (Date.parse accepts 2024-02-30 and 24:00).
const RFC3339_RE = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/;

// RFC 3986 (appendix A), assembled from its productions.
const PCT = '%[0-9A-Fa-f]{2}';
const UNRESERVED_SUB = "[A-Za-z0-9\\-._~!$&'()*+,;=]";
const PCHAR = `(?:${UNRESERVED_SUB}|${PCT}|[:@])`;
const SEGMENT = `${PCHAR}*`;
const SEGMENT_NZ = `${PCHAR}+`;
const SEGMENT_NZ_NC = `(?:${UNRESERVED_SUB}|${PCT}|@)+`;
const IP_LITERAL = `\\[(?:[0-9A-Fa-f:.]+|[vV][0-9A-Fa-f]+\\.(?:${UNRESERVED_SUB}|:)+)\\]`;
const AUTHORITY = `(?:(?:${UNRESERVED_SUB}|${PCT}|:)*@)?(?:${IP_LITERAL}|(?:${UNRESERVED_SUB}|${PCT})*)(?::\\d*)?`;
const PATH_ABEMPTY = `(?:/${SEGMENT})*`;
const PATH_ABSOLUTE = `/(?:${SEGMENT_NZ}(?:/${SEGMENT})*)?`;
const QUERY = `(?:${PCHAR}|[/?])*`;
const SCHEME = '[A-Za-z][A-Za-z0-9+.\\-]*';
const HIER_PART = `(?://${AUTHORITY}${PATH_ABEMPTY}|${PATH_ABSOLUTE}|${SEGMENT_NZ}(?:/${SEGMENT})*|)`;
const RELATIVE_PART = `(?://${AUTHORITY}${PATH_ABEMPTY}|${PATH_ABSOLUTE}|${SEGMENT_NZ_NC}(?:/${SEGMENT})*|)`;
/** RFC 3986 §4.3 absolute-URI (no fragment): the CloudEvents `URI` type. */
const ABSOLUTE_URI_RE = new RegExp(`^${SCHEME}:${HIER_PART}(?:\\?${QUERY})?$`);
/** RFC 3986 §4.1 URI-reference: the CloudEvents `URI-reference` type. */
const URI_REFERENCE_RE = new RegExp(`^(?:${SCHEME}:${HIER_PART}|${RELATIVE_PART})(?:\\?${QUERY})?(?:#${QUERY})?$`);

// RFC 2046 / RFC 2045 media type: type "/" subtype *(";" parameter).
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const MEDIA_TYPE_RE = new RegExp(`^${TOKEN}/${TOKEN}(?:[ \\t]*;[ \\t]*${TOKEN}=(?:${TOKEN}|"(?:[^"\\\\]|\\\\.)*"))*[ \\t]*$`);

// RFC 4648 base64 with padding.
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export interface EnvelopeInput<T = unknown> {
  type: string;
  source: string;
  /** JSON data, or binary (`Uint8Array`/`Buffer`), which is carried as `data_base64`. */
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

export interface EnvelopeCheckOptions {
  /**
   * Also enforce what the spec asks of producers but does not require of receivers:
   * attribute names of at most 20 characters. Default false (receiver rules).
   */
  readonly producing?: boolean;
}

const PRODUCING: EnvelopeCheckOptions = Object.freeze({ producing: true });
const PRODUCING_TRUSTED_TIME = Object.freeze({ producing: true, trustedTime: true });

/** Attributes checked by name above the generic loop in `envelopeProblems`. */
const KNOWN_ATTRIBUTES: ReadonlySet<string> = new Set<string>(['data', 'data_base64', ...CONTEXT_ATTRIBUTES, ...HERALD_EXTENSIONS]);

/**
 * Values already found valid for the low-cardinality attributes (type, source, dataschema,
 * datacontenttype): a publisher sends the same few again and again, so their regular
 * expressions run once per distinct value. Bounded per attribute.
 */
const KNOWN_GOOD = new Map<string, Set<string>>();
const KNOWN_GOOD_MAX = 4096;

function knownGood(attr: string, value: unknown): boolean {
  return typeof value === 'string' && (KNOWN_GOOD.get(attr)?.has(value) ?? false);
}

function rememberGood(attr: string, value: string): void {
  let set = KNOWN_GOOD.get(attr);
  if (!set) KNOWN_GOOD.set(attr, (set = new Set()));
  if (set.size < KNOWN_GOOD_MAX) set.add(value);
}

/**
 * Builds and validates a frozen envelope. `id` defaults to a UUID, `time` to `now`
 * (epoch ms, from the injected clock), `datacontenttype` to `application/json` when there
 * is data (`application/octet-stream` for binary data, which becomes `data_base64`).
 * Throws `HERALD_ERR_ENVELOPE_INVALID` naming every broken attribute, including extension
 * names longer than 20 characters.
 */
export function createEnvelope<T>(input: EnvelopeInput<T>, now: number = Date.now()): CloudEvent<T> {
  const { extensions, time, ...rest } = input;
  const problems: string[] = [];
  let timeValue: string | undefined;
  if (time instanceof Date) {
    if (Number.isNaN(time.getTime())) problems.push('time is an invalid Date');
    else timeValue = time.toISOString();
  } else if (time !== undefined) {
    timeValue = time;
  } else if (Number.isFinite(now)) {
    timeValue = new Date(now).toISOString();
  } else {
    problems.push(`time: the clock returned ${String(now)}`);
  }
  const env: Record<string, unknown> = {
    specversion: '1.0',
    id: input.id ?? randomUUID(),
    source: input.source,
    type: input.type,
  };
  if (timeValue !== undefined) env.time = timeValue;
  for (const [k, v] of Object.entries(rest)) {
    if (v === undefined || Object.hasOwn(env, k)) continue;
    if (k === 'data' && ArrayBuffer.isView(v)) {
      env.data_base64 = Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64');
      continue;
    }
    env[k] = v;
  }
  if (env.datacontenttype === undefined) {
    if (env.data !== undefined) env.datacontenttype = 'application/json';
    else if (env.data_base64 !== undefined) env.datacontenttype = 'application/octet-stream';
  }
  if (extensions) {
    for (const [k, v] of Object.entries(extensions)) {
      if (v === undefined) continue;
      if (Object.hasOwn(env, k)) problems.push(`extension "${k}" collides with an attribute already set`);
      else if (k === 'data' || k === 'data_base64' || (CONTEXT_ATTRIBUTES as readonly string[]).includes(k)) problems.push(`extension "${k}" uses a reserved attribute name`);
      else if (!NAME_RE.test(k)) problems.push(nameProblem(k));
      else env[k] = v;
    }
  }
  // A time made here by toISOString is RFC 3339 by construction; skip its check.
  problems.push(...envelopeProblems(env, time === undefined || time instanceof Date ? PRODUCING_TRUSTED_TIME : PRODUCING));
  if (problems.length > 0) throw invalid(problems, env);
  const frozen = Object.freeze(env) as CloudEvent<T>;
  checked.add(frozen);
  return frozen;
}

/** Frozen envelopes that passed validation; their attributes cannot change afterwards. */
const checked = new WeakSet<object>();

/**
 * Returns `value` as an envelope, validating it unless it is a frozen envelope Herald already
 * validated (built by `createEnvelope`, or passed through `validateEnvelope` / `decodeEnvelope`).
 * Transports call it on publish: bad input is refused before anything is stored, at the cost
 * of a WeakSet lookup for envelopes built the usual way.
 */
export function ensureEnvelope(value: unknown): CloudEvent {
  if (typeof value === 'object' && value !== null && checked.has(value)) return value as CloudEvent;
  return validateEnvelope(value);
}

/**
 * Every problem with `value` as a CloudEvents 1.0 envelope; empty when it is valid.
 * Attributes whose value is `undefined` count as absent.
 */
export function envelopeProblems(value: unknown, options: EnvelopeCheckOptions = {}): string[] {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return [`envelope must be a JSON object (got ${show(value)})`];
  const v = value as Record<string, unknown>;
  const problems: string[] = [];
  const checked = KNOWN_ATTRIBUTES;

  if (v.specversion !== '1.0') problems.push(`specversion must be "1.0" (got ${show(v.specversion)})`);
  {
    const p = stringProblem(v.id, 'id', true);
    if (p) problems.push(p);
  }
  if (!knownGood('type', v.type)) {
    const p = stringProblem(v.type, 'type', true);
    if (p) problems.push(p);
    else rememberGood('type', v.type as string);
  }
  const source = v.source;
  if (knownGood('source', source)) {
    // seen and valid before
  } else if (typeof source !== 'string' || source.length === 0) problems.push(`source is required and must be a non-empty URI-reference (got ${show(source)})`);
  else if (!URI_REFERENCE_RE.test(source)) problems.push(`source must be a URI-reference (RFC 3986) (got ${show(source)})`);
  else rememberGood('source', source);

  if (v.subject !== undefined) {
    const p = stringProblem(v.subject, 'subject', false);
    if (p) problems.push(p);
  }
  if (v.datacontenttype !== undefined && !knownGood('datacontenttype', v.datacontenttype)) {
    if (typeof v.datacontenttype !== 'string' || !MEDIA_TYPE_RE.test(v.datacontenttype)) {
      problems.push(`datacontenttype must be an RFC 2046 media type such as "application/json" (got ${show(v.datacontenttype)})`);
    } else rememberGood('datacontenttype', v.datacontenttype);
  }
  if (v.time !== undefined && !(options as { trustedTime?: boolean }).trustedTime && !isRfc3339(v.time)) problems.push(`time must be an RFC 3339 timestamp (got ${show(v.time)})`);
  if (v.dataschema !== undefined && !knownGood('dataschema', v.dataschema)) {
    if (typeof v.dataschema !== 'string' || !ABSOLUTE_URI_RE.test(v.dataschema)) {
      problems.push(`dataschema must be an absolute URI (RFC 3986 §4.3: a scheme, no fragment) (got ${show(v.dataschema)})`);
    } else rememberGood('dataschema', v.dataschema);
  }
  if (v.data !== undefined && v.data_base64 !== undefined) problems.push('data and data_base64 are mutually exclusive');
  if (v.data_base64 !== undefined && (typeof v.data_base64 !== 'string' || !BASE64_RE.test(v.data_base64))) {
    problems.push(`data_base64 must be a padded base64 string (RFC 4648) (got ${show(v.data_base64)})`);
  }
  if (v.traceparent !== undefined && v.traceparent !== lastTraceparent && !isTraceparent(v.traceparent)) {
    problems.push(`traceparent must be a W3C traceparent "00-<32 hex>-<16 hex>-<2 hex>" with non-zero ids (got ${show(v.traceparent)})`);
  }
  if (v.tracestate !== undefined) {
    // W3C allows an empty tracestate (treated as absent).
    const p = typeof v.tracestate === 'string' && v.tracestate.length === 0 ? undefined : stringProblem(v.tracestate, 'tracestate', false);
    if (p) problems.push(p);
  }
  for (const ext of ['correlationid', 'causationid', 'partitionkey', 'sequence'] as const) {
    if (v[ext] === undefined) continue;
    const p = stringProblem(v[ext], ext, false);
    if (p) problems.push(p);
  }

  for (const [name, val] of Object.entries(v)) {
    if (val === undefined) continue;
    if (!NAME_RE.test(name)) {
      if (name !== 'data' && name !== 'data_base64') problems.push(nameProblem(name));
      continue;
    }
    if (options.producing && name.length > MAX_NAME_LENGTH) {
      problems.push(`attribute name "${name}" is longer than ${MAX_NAME_LENGTH} characters (Herald does not produce such names)`);
    }
    if (checked.has(name)) continue;
    if (typeof val === 'string') {
      const p = stringProblem(val, `attribute "${name}"`, false, true);
      if (p) problems.push(p);
    } else if (typeof val === 'number') {
      if (!Number.isInteger(val) || val < INT32_MIN || val > INT32_MAX) {
        problems.push(`attribute "${name}" must be a 32-bit signed integer when it is a number (got ${show(val)})`);
      }
    } else if (typeof val !== 'boolean') {
      problems.push(`attribute "${name}" must be a string, boolean or integer (got ${show(val)})`);
    }
  }
  return problems;
}

/** Validates and freezes `value` as an envelope; throws `HERALD_ERR_ENVELOPE_INVALID` naming every problem. */
export function validateEnvelope(value: unknown, options: EnvelopeCheckOptions = {}): CloudEvent {
  const problems = envelopeProblems(value, options);
  if (problems.length > 0) throw invalid(problems, value);
  const frozen = Object.freeze(value as CloudEvent);
  checked.add(frozen);
  return frozen;
}

/**
 * The JSON structured format, as a string. Throws `HERALD_ERR_ENVELOPE_INVALID` when the
 * data cannot be written as JSON (a `bigint`, a cycle).
 */
export function encodeEnvelope(env: CloudEvent): string {
  try {
    return JSON.stringify(env);
  } catch (cause) {
    throw new HeraldError('HERALD_ERR_ENVELOPE_INVALID', `envelope${typeof env.type === 'string' ? ` of type "${env.type}"` : ''} cannot be encoded as JSON: ${(cause as Error).message}`, {
      cause,
      details: { problems: [`data is not JSON-serializable: ${(cause as Error).message}`], id: env.id, type: env.type },
    });
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Parses the JSON structured format. Throws `HERALD_ERR_DECODE` for bytes that are not
 * UTF-8 or not JSON, and `HERALD_ERR_ENVELOPE_INVALID` for JSON that is not a valid envelope
 * (including JSON that is not an object). As the JSON format requires, an attribute whose
 * value is `null` is treated as absent (a `null` `data` next to `data_base64` too).
 */
export function decodeEnvelope(raw: string | Uint8Array): CloudEvent {
  let text: string;
  if (typeof raw === 'string') {
    text = raw;
  } else {
    try {
      text = utf8.decode(raw);
    } catch (cause) {
      throw new HeraldError('HERALD_ERR_DECODE', 'envelope bytes are not valid UTF-8', { cause, details: { bytes: raw.byteLength } });
    }
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new HeraldError('HERALD_ERR_DECODE', `envelope is not valid JSON: ${(cause as Error).message}`, { cause, details: { sample: text.slice(0, 200) } });
  }
  if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) {
    const obj = parsed as Record<string, unknown>;
    for (const [k, v] of Object.entries(obj)) {
      if (v === null && (k !== 'data' || obj.data_base64 !== undefined)) delete obj[k];
    }
  }
  return validateEnvelope(parsed);
}

/**
 * Decodes an envelope read back from a log Herald itself wrote (validated by `ensureEnvelope`
 * at publish): JSON.parse plus a structural check of the required attributes, without the full
 * attribute-by-attribute validation — that is what makes consuming cheap. Bytes that are not
 * JSON, or lack `specversion`/`id`/`source`/`type`, still throw (`HERALD_ERR_DECODE` /
 * `HERALD_ERR_ENVELOPE_INVALID`), so a corrupt row is still caught. Use `decodeEnvelope` for
 * bytes from anyone else.
 */
export function decodeStoredEnvelope(raw: string): CloudEvent {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (cause) {
    throw new HeraldError('HERALD_ERR_DECODE', `envelope is not valid JSON: ${(cause as Error).message}`, { cause, details: { sample: raw.slice(0, 200) } });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return validateEnvelope(parsed);
  const v = parsed as Record<string, unknown>;
  if (v.specversion !== '1.0' || typeof v.id !== 'string' || v.id === '' || typeof v.source !== 'string' || v.source === '' || typeof v.type !== 'string' || v.type === '') {
    return validateEnvelope(parsed); // throws, naming every problem
  }
  const frozen = Object.freeze(parsed as CloudEvent);
  checked.add(frozen);
  return frozen;
}

/** Byte length of the JSON structured encoding (what `maxPayloadBytes` limits). */
export function encodedSize(encoded: string): number {
  return Buffer.byteLength(encoded, 'utf8');
}

function stringProblem(val: unknown, label: string, required: boolean, allowEmpty = false): string | undefined {
  if (typeof val !== 'string' || (!allowEmpty && val.length === 0)) {
    return `${label} ${required ? 'is required and must' : 'must'} be a non-empty string${required ? '' : ' when present'} (got ${show(val)})`;
  }
  if (BAD_STRING_CHAR_RE.test(val)) return `${label} contains a control character, an unpaired surrogate or a noncharacter, which CloudEvents strings forbid (got ${show(val)})`;
  return undefined;
}

function nameProblem(name: string): string {
  return `attribute name "${name}" breaks the CloudEvents naming rule (lower-case a-z and 0-9 only)`;
}

/**
 * The last traceparent found valid: the envelopes of one batch (one producer span) share it,
 * so it is parsed once per batch rather than once per envelope.
 */
let lastTraceparent: string | undefined;

function isTraceparent(v: unknown): boolean {
  if (typeof v !== 'string') return false;
  const m = TRACEPARENT_RE.exec(v);
  if (!m) return false;
  const [, version, traceId, parentId, , rest] = m;
  if (version === 'ff') return false;
  if (version === '00' && rest !== undefined) return false;
  if (/^0+$/.test(traceId!) || /^0+$/.test(parentId!)) return false;
  lastTraceparent = v;
  return true;
}

function isRfc3339(v: unknown): boolean {
  if (typeof v !== 'string') return false;
  const m = RFC3339_RE.exec(v);
  if (!m) return false;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const offHour = m[8] === undefined ? 0 : Number(m[8]);
  const offMinute = m[9] === undefined ? 0 : Number(m[9]);
  if (month < 1 || month > 12 || day < 1 || day > daysIn(year, month)) return false;
  if (hour > 23 || minute > 59 || second > 60 || offHour > 23 || offMinute > 59) return false;
  if (second === 60) {
    // A leap second exists only at 23:59:60 UTC.
    const sign = m[7] === '-' ? -1 : 1;
    const utcMinutes = (((hour * 60 + minute - sign * (offHour * 60 + offMinute)) % 1440) + 1440) % 1440;
    if (utcMinutes !== 23 * 60 + 59) return false;
  }
  return true;
}

function daysIn(year: number, month: number): number {
  if (month === 2) return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
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
  if (typeof v === 'bigint') return `${v}n`;
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 60)}…` : s;
  } catch {
    return String(v);
  }
}
