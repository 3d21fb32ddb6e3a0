/**
 * The CloudEvents Kafka protocol binding (binary content mode), as Herald writes and reads it.
 *
 * Writing (binary mode): every context attribute and extension except `datacontenttype`
 * becomes a `ce_<name>` header (UTF-8 string, as the binding requires); `datacontenttype`
 * becomes the `content-type` header; the record value is the data: JSON text for JSON data,
 * the raw bytes for `data_base64`, UTF-8 text for string data of a non-JSON media type, and
 * no value (null) when the event has no data. The record key is the partition key.
 *
 * Two non-`ce_` headers keep a Herald→Herald round trip exact (CloudEvents readers ignore
 * them): `herald-data` (`json` | `text` | `base64`: how the value encodes the data) and
 * `herald-types` (JSON map of extension name → `integer` | `boolean`, written only when an
 * extension is not a string, since headers carry strings only).
 *
 * Reading: binary mode as above; a record without `herald-data` is read by its content type
 * (JSON media types parse as JSON, `text/*` as text, anything else as `data_base64`).
 * Structured mode (`content-type: application/cloudevents+json`) is accepted too. Anything
 * else throws `HERALD_ERR_DECODE` (bytes) or `HERALD_ERR_ENVELOPE_INVALID` (not an event).
 */
import { type CloudEvent, decodeEnvelope, HeraldError, validateEnvelope } from '@herald/core';

export type KafkaHeaderValue = Buffer | string | (Buffer | string)[] | undefined;
export type KafkaHeaders = Record<string, KafkaHeaderValue>;

export interface EncodedRecord {
  readonly value: Buffer | null;
  readonly headers: Record<string, string>;
}

const CE_PREFIX = 'ce_';
const CONTENT_TYPE = 'content-type';
const DATA_HEADER = 'herald-data';
const TYPES_HEADER = 'herald-types';
const STRUCTURED = 'application/cloudevents';

/** True for media types whose data is JSON: `application/json`, `text/json`, `*+json`. */
export function isJsonMediaType(contentType: string | undefined): boolean {
  if (contentType === undefined) return true; // the JSON format's default
  const base = contentType.split(';')[0]!.trim().toLowerCase();
  return base === 'application/json' || base === 'text/json' || base.endsWith('+json');
}

/** Headers and value for `env` in binary content mode. The envelope must be valid. */
export function encodeBinary(env: CloudEvent): EncodedRecord {
  const headers: Record<string, string> = {};
  let types: Record<string, 'integer' | 'boolean'> | undefined;
  for (const [name, v] of Object.entries(env)) {
    if (v === undefined || name === 'data' || name === 'data_base64' || name === 'datacontenttype') continue;
    if (typeof v === 'number' || typeof v === 'boolean') {
      types ??= {};
      types[name] = typeof v === 'number' ? 'integer' : 'boolean';
    }
    headers[CE_PREFIX + name] = String(v);
  }
  if (env.datacontenttype !== undefined) headers[CONTENT_TYPE] = env.datacontenttype;
  if (types) headers[TYPES_HEADER] = JSON.stringify(types);
  let value: Buffer | null = null;
  if (env.data_base64 !== undefined) {
    value = Buffer.from(env.data_base64, 'base64');
    headers[DATA_HEADER] = 'base64';
  } else if (env.data !== undefined) {
    if (typeof env.data === 'string' && !isJsonMediaType(env.datacontenttype)) {
      value = Buffer.from(env.data, 'utf8');
      headers[DATA_HEADER] = 'text';
    } else {
      value = Buffer.from(JSON.stringify(env.data), 'utf8');
      headers[DATA_HEADER] = 'json';
    }
  }
  return { value, headers };
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function headerText(v: KafkaHeaderValue, name: string): string | undefined {
  if (v === undefined) return undefined;
  const one = Array.isArray(v) ? v[v.length - 1] : v;
  if (one === undefined) return undefined;
  if (typeof one === 'string') return one;
  try {
    return utf8.decode(one);
  } catch (cause) {
    throw new HeraldError('HERALD_ERR_DECODE', `Kafka header "${name}" is not valid UTF-8`, { cause });
  }
}

/**
 * The envelope a Kafka record carries (binary or structured mode), validated and frozen.
 * Throws `HERALD_ERR_DECODE` or `HERALD_ERR_ENVELOPE_INVALID`.
 */
export function decodeRecord(headers: KafkaHeaders | undefined, value: Buffer | null): CloudEvent {
  const h = headers ?? {};
  const contentType = headerText(h[CONTENT_TYPE], CONTENT_TYPE);
  if (h[CE_PREFIX + 'specversion'] === undefined) {
    if (contentType !== undefined && contentType.toLowerCase().startsWith(STRUCTURED)) return decodeEnvelope(value ?? new Uint8Array());
    throw new HeraldError('HERALD_ERR_ENVELOPE_INVALID', 'Kafka record carries no CloudEvent: no ce_specversion header and not structured mode (content-type application/cloudevents+json)', {
      details: { problems: ['no ce_specversion header'] },
    });
  }
  const env: Record<string, unknown> = {};
  let types: Record<string, unknown> = {};
  const typesText = headerText(h[TYPES_HEADER], TYPES_HEADER);
  if (typesText !== undefined) {
    try {
      const parsed: unknown = JSON.parse(typesText);
      if (typeof parsed === 'object' && parsed !== null) types = parsed as Record<string, unknown>;
    } catch (cause) {
      throw new HeraldError('HERALD_ERR_DECODE', `Kafka header "${TYPES_HEADER}" is not JSON`, { cause });
    }
  }
  for (const [k, v] of Object.entries(h)) {
    if (!k.startsWith(CE_PREFIX)) continue;
    const name = k.slice(CE_PREFIX.length);
    const text = headerText(v, k);
    if (text === undefined) continue;
    if (types[name] === 'integer' && /^-?\d+$/.test(text)) env[name] = Number(text);
    else if (types[name] === 'boolean' && (text === 'true' || text === 'false')) env[name] = text === 'true';
    else env[name] = text;
  }
  if (contentType !== undefined) env.datacontenttype = contentType;
  if (value !== null) {
    const how = headerText(h[DATA_HEADER], DATA_HEADER) ?? (isJsonMediaType(contentType) ? 'json' : contentType!.toLowerCase().startsWith('text/') ? 'text' : 'base64');
    if (how === 'base64') env.data_base64 = value.toString('base64');
    else {
      let text: string;
      try {
        text = utf8.decode(value);
      } catch (cause) {
        throw new HeraldError('HERALD_ERR_DECODE', 'Kafka record value is not valid UTF-8', { cause, details: { bytes: value.byteLength } });
      }
      if (how === 'text') env.data = text;
      else {
        try {
          env.data = JSON.parse(text);
        } catch (cause) {
          throw new HeraldError('HERALD_ERR_DECODE', `Kafka record value is not valid JSON: ${(cause as Error).message}`, { cause, details: { sample: text.slice(0, 200) } });
        }
      }
    }
  }
  return validateEnvelope(env);
}
