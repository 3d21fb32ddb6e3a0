/**
 * The CloudEvents AMQP protocol binding (binary content mode), on AMQP 0-9-1 message
 * properties:
 *
 * - every attribute except `datacontenttype`, `data` and `data_base64` is a header named
 *   `cloudEvents:<attribute>` holding the attribute's own JSON type (string, integer, boolean);
 * - `datacontenttype` is the AMQP `content-type` property;
 * - the data is the message body: JSON bytes when the content type is JSON (or absent), the
 *   UTF-8 text of a string otherwise, the raw bytes of `data_base64`.
 *
 * Herald adds up to three headers of its own: `x-herald-key` (the partition key the message
 * was published with, when it is not the envelope's `partitionkey`), `x-herald-data` (`text` |
 * `binary`, or `json` under a non-JSON content type: how the body maps back to `data` /
 * `data_base64`, so an envelope survives the trip exactly; absent for JSON data under a JSON
 * content type, which is how any reader takes it) and, on a delayed redelivery,
 * `x-herald-attempts` (attempts before the copy).
 */
import { type CloudEvent, HeraldError } from '@herald/core';

export const CE_PREFIX = 'cloudEvents:';
export const KEY_HEADER = 'x-herald-key';
export const DATA_HEADER = 'x-herald-data';
export const ATTEMPTS_HEADER = 'x-herald-attempts';

/** Broker-added headers a delayed copy must not carry over. */
const BROKER_HEADERS = new Set(['x-delivery-count', 'x-death', 'x-first-death-exchange', 'x-first-death-queue', 'x-first-death-reason', 'x-last-death-exchange', 'x-last-death-queue', 'x-last-death-reason']);

export type HeaderValue = string | number | boolean;

export interface EncodedMessage {
  readonly headers: Record<string, HeaderValue>;
  readonly contentType: string | undefined;
  /** Set only when the client would otherwise rewrite the body on receipt (see `encodeMessage`). */
  readonly contentEncoding: string | undefined;
  readonly body: Buffer;
  /** Bytes of the JSON structured format of the same envelope (what `maxPayloadBytes` limits). */
  readonly structuredSize: number;
}

const DATA_KEY_BYTES = Buffer.byteLength(',"data":');

/** Whether a media type is JSON (`application/json`, `text/json`, `…+json`), parameters ignored. */
export function isJsonContentType(contentType: string | undefined): boolean {
  if (contentType === undefined) return true;
  const base = contentType.split(';', 1)[0]!.trim().toLowerCase();
  return base === 'application/json' || base === 'text/json' || base.endsWith('+json');
}

/**
 * Maps a validated envelope to AMQP properties and body. Throws `HERALD_ERR_ENVELOPE_INVALID`
 * when the data cannot be written as JSON.
 */
export function encodeMessage(env: CloudEvent, key: string | undefined): EncodedMessage {
  const headers: Record<string, HeaderValue> = {};
  let data: unknown;
  let dataBase64: string | undefined;
  let contentType: string | undefined;
  const attrs: Record<string, unknown> = {};
  for (const name in env) {
    const v = (env as Record<string, unknown>)[name];
    if (v === undefined) continue;
    if (name === 'data') {
      data = v;
      continue;
    }
    attrs[name] = v;
    if (name === 'data_base64') dataBase64 = v as string;
    else if (name === 'datacontenttype') contentType = v as string;
    else headers[CE_PREFIX + name] = v as HeaderValue;
  }
  // The key is carried only when it is not the envelope's own partitionkey.
  if (key !== undefined && key !== env.partitionkey) headers[KEY_HEADER] = key;
  let body: Buffer;
  let contentEncoding: string | undefined;
  let structuredSize: number;
  const attrsJson = JSON.stringify(attrs);
  if (data !== undefined) {
    let text: string;
    let kind: 'json' | 'text';
    if (typeof data === 'string' && !isJsonContentType(contentType)) {
      text = data;
      kind = 'text';
    } else {
      try {
        text = JSON.stringify(data);
      } catch (cause) {
        throw new HeraldError('HERALD_ERR_ENVELOPE_INVALID', `envelope of type "${env.type}" cannot be encoded as JSON: ${(cause as Error).message}`, {
          cause,
          details: { problems: [`data is not JSON-serializable: ${(cause as Error).message}`], id: env.id, type: env.type },
        });
      }
      kind = 'json';
    }
    // JSON data under a JSON content type is what any reader assumes: no marker needed.
    if (kind !== 'json' || !isJsonContentType(contentType)) headers[DATA_HEADER] = kind;
    body = Buffer.from(text, 'utf8');
    // The structured form is the attributes object with `"data":<json>` added before its '}'.
    const dataJsonBytes = kind === 'json' ? body.length : Buffer.byteLength(JSON.stringify(text), 'utf8');
    structuredSize = Buffer.byteLength(attrsJson, 'utf8') + DATA_KEY_BYTES + dataJsonBytes;
  } else if (dataBase64 !== undefined) {
    headers[DATA_HEADER] = 'binary';
    body = Buffer.from(dataBase64, 'base64');
    // rabbitmq-client turns text/plain bodies into strings and parses application/json ones;
    // a content encoding stops that, so binary data always comes back byte for byte.
    if (contentType !== undefined && /^(text\/plain|application\/json)$/i.test(contentType.trim())) contentEncoding = 'identity';
    structuredSize = Buffer.byteLength(attrsJson, 'utf8');
  } else {
    body = Buffer.alloc(0);
    structuredSize = Buffer.byteLength(attrsJson, 'utf8');
  }
  return { headers, contentType, contentEncoding, body, structuredSize };
}

/** What the client hands a consumer (the fields the binding reads). */
export interface IncomingMessage {
  readonly headers?: Record<string, unknown> | undefined;
  readonly contentType?: string | undefined;
  readonly contentEncoding?: string | undefined;
  readonly body: unknown;
}

export interface DecodedMessage {
  readonly envelope: CloudEvent | null;
  readonly decodeError: HeraldError | undefined;
  /** Attributes and data as far as they could be read (the JSON structured form when the message is sound). */
  readonly structured: Record<string, unknown>;
  readonly key: string | undefined;
  /** Attempts made before this copy was published (0 unless it is a delayed redelivery). */
  readonly priorAttempts: number;
  /** Times the broker returned this copy to its queue (quorum queues' `x-delivery-count`). */
  readonly deliveryCount: number;
}

function bodyBytes(body: unknown): Buffer {
  if (Buffer.isBuffer(body)) return body;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body === undefined || body === null) return Buffer.alloc(0);
  return Buffer.from(JSON.stringify(body), 'utf8');
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Rebuilds the envelope. A message that is not a readable CloudEvent (a required attribute
 * missing, a body that does not parse) gives `envelope: null` and a `HERALD_ERR_CORRUPT_RECORD`
 * naming the problem; the other messages of the queue are unaffected.
 */
export function decodeMessage(msg: IncomingMessage): DecodedMessage {
  const headers = msg.headers ?? {};
  const env: Record<string, unknown> = {};
  let key: string | undefined;
  let kind: unknown;
  let priorAttempts = 0;
  let deliveryCount = 0;
  for (const name in headers) {
    const v = headers[name];
    if (name.startsWith(CE_PREFIX)) {
      const attr = name.slice(CE_PREFIX.length);
      if (attr === 'data' || attr === 'data_base64' || attr === '') continue;
      env[attr] = typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? v : v === null || v === undefined ? undefined : String(v);
    } else if (name === KEY_HEADER) {
      if (typeof v === 'string') key = v;
    } else if (name === DATA_HEADER) {
      kind = v;
    } else if (name === ATTEMPTS_HEADER) {
      if (typeof v === 'number' && Number.isSafeInteger(v) && v > 0) priorAttempts = v;
    } else if (name === 'x-delivery-count') {
      if (typeof v === 'number' && Number.isSafeInteger(v) && v > 0) deliveryCount = v;
    }
  }
  if (typeof msg.contentType === 'string' && msg.contentType.length > 0) env.datacontenttype = msg.contentType;
  const problems: string[] = [];
  const body = msg.body;
  // rabbitmq-client JSON.parses application/json bodies itself (leaving a Buffer when that fails).
  const clientParsed = msg.contentType === 'application/json' && !msg.contentEncoding && !Buffer.isBuffer(body);
  if (kind === 'json') {
    if (clientParsed) env.data = body;
    else if (Buffer.isBuffer(body) || typeof body === 'string') {
      try {
        env.data = JSON.parse(typeof body === 'string' ? body : utf8.decode(body));
      } catch (e) {
        problems.push(`body is not the JSON its x-herald-data header says: ${(e as Error).message}`);
        env.data_base64 = bodyBytes(body).toString('base64');
      }
    } else {
      env.data = body;
    }
  } else if (kind === 'text') {
    if (typeof body === 'string') env.data = body;
    else {
      try {
        env.data = utf8.decode(bodyBytes(body));
      } catch {
        problems.push('body is not the UTF-8 text its x-herald-data header says');
        env.data_base64 = bodyBytes(body).toString('base64');
      }
    }
  } else if (kind === 'binary') {
    env.data_base64 = bodyBytes(body).toString('base64');
  } else {
    // No marker: JSON data under a JSON content type (Herald's common case), or a message from
    // another producer. Read the body by its content type; an empty body is no data.
    const bytes = bodyBytes(body);
    if (clientParsed) env.data = body;
    else if (bytes.length > 0 || (body !== undefined && !Buffer.isBuffer(body) && typeof body !== 'string')) {
      if (!Buffer.isBuffer(body) && typeof body !== 'string') env.data = body;
      else if (isJsonContentType(msg.contentType)) {
        try {
          env.data = JSON.parse(utf8.decode(bytes));
        } catch (e) {
          problems.push(`body is not the JSON its content type says: ${(e as Error).message}`);
          env.data_base64 = bytes.toString('base64');
        }
      } else if (/^text\//i.test(msg.contentType ?? '')) {
        try {
          env.data = utf8.decode(bytes);
        } catch {
          env.data_base64 = bytes.toString('base64');
        }
      } else env.data_base64 = bytes.toString('base64');
    }
  }
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  if (env.specversion !== '1.0') problems.push(`cloudEvents:specversion must be "1.0" (got ${JSON.stringify(env.specversion) ?? 'nothing'})`);
  for (const req of ['id', 'source', 'type'] as const) {
    if (typeof env[req] !== 'string' || env[req] === '') problems.push(`cloudEvents:${req} is required and must be a non-empty string (got ${JSON.stringify(env[req]) ?? 'nothing'})`);
  }
  if (key === undefined && typeof env.partitionkey === 'string') key = env.partitionkey;
  if (problems.length > 0) {
    return {
      envelope: null,
      decodeError: new HeraldError('HERALD_ERR_CORRUPT_RECORD', `message is not a readable CloudEvent: ${problems.join('; ')}`, { details: { problems, id: env.id, type: env.type } }),
      structured: env,
      key,
      priorAttempts,
      deliveryCount,
    };
  }
  return { envelope: Object.freeze(env) as CloudEvent, decodeError: undefined, structured: env, key, priorAttempts, deliveryCount };
}

/** Headers of a delayed copy: the original's, less what the broker added, with the attempts so far. */
export function copyHeaders(headers: Record<string, unknown> | undefined, attemptsSoFar: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (headers) for (const [k, v] of Object.entries(headers)) if (!BROKER_HEADERS.has(k) && k !== ATTEMPTS_HEADER) out[k] = v;
  out[ATTEMPTS_HEADER] = attemptsSoFar;
  return out;
}
