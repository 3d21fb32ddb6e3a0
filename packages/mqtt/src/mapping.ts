/**
 * The CloudEvents MQTT protocol binding (v1.0), as the bridge applies it.
 *
 * Inbound (device → Herald), in order of precedence:
 * - Structured mode: Content Type `application/cloudevents+json…` — the payload is the event in
 *   the JSON format.
 * - Binary mode: a `specversion` MQTT 5 User Property — every User Property whose name is a valid
 *   attribute name (lower-case letters and digits) is an attribute; the Content Type property is
 *   `datacontenttype`; the payload is the data. User properties with other names are ignored
 *   (MQTT allows any).
 * - Bridge-built: no `specversion` — the bridge builds the event (type from the topic, source
 *   `mqtt://<host>/<topic>`, id derived, see `derivedId`) and still takes the standard attributes
 *   a device sends as User Properties (`id`, `type`, `source`, `time`, `subject`, `dataschema`,
 *   trace context, `correlationid`, `causationid`); other User Properties are ignored.
 *
 * In every mode `partitionkey` is the device id (a device cannot choose another device's key).
 * When the device's attributes do not make a valid envelope, the bridge builds the event itself
 * from the topic and the raw payload, adds the extension `bridgeerror` naming the problem, and
 * reports it: the message is kept, not dropped.
 *
 * Outbound (commands): binary mode — attributes as User Properties, `datacontenttype` as the
 * Content Type property, the data as the payload.
 */
import { createHash, randomUUID } from 'node:crypto';
import { type CloudEvent, createEnvelope, decodeEnvelope, type EnvelopeInput, type ExtensionValue, HeraldError, validateEnvelope } from '@herald/core';

/** The parts of an MQTT PUBLISH the mapping reads. */
export interface InboundMessage {
  readonly topic: string;
  readonly payload: Uint8Array;
  /** The packet identifier the broker gave this delivery (undefined at QoS 0). */
  readonly packetId?: number | undefined;
  readonly contentType?: string | undefined;
  readonly userProperties?: Readonly<Record<string, string | string[]>> | undefined;
}

export interface InboundContext {
  /** The bridge's MQTT client id (part of derived ids). */
  readonly clientId: string;
  readonly deviceId: string;
  /** Type when the device sends none. */
  readonly type: string;
  /** Source when the device sends none. */
  readonly source: string;
  /** Epoch ms for `time` when the device sends none. */
  readonly now: number;
}

export interface InboundResult {
  readonly envelope: CloudEvent;
  /** How the event was read: the device's structured or binary event, or built by the bridge. */
  readonly mode: 'structured' | 'binary' | 'bridge';
  /** Set when the device's attributes were unusable and the bridge built the event instead. */
  readonly problem?: HeraldError;
}

/** Attributes taken from User Properties even without `specversion`. */
const STANDARD = new Set(['id', 'type', 'source', 'time', 'subject', 'dataschema', 'traceparent', 'tracestate', 'correlationid', 'causationid']);
/** Attributes `createEnvelope` takes at top level (the rest go in `extensions`). */
const TOP_LEVEL = new Set(['id', 'type', 'source', 'time', 'subject', 'datacontenttype', 'dataschema', 'traceparent', 'tracestate', 'correlationid', 'causationid', 'sequence']);
const NAME_RE = /^[a-z0-9]+$/;
const STRUCTURED_RE = /^application\/cloudevents\+json\b/i;
const JSON_RE = /^(?:application|text)\/(?:[\w.!#$&^-]+\+)?json\b/i;
const TEXT_RE = /^text\//i;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The id the bridge gives an event whose device sent none: 32 hex digits of
 * SHA-256(bridge client id, packet id, topic, payload). A broker redelivery of an unacknowledged
 * message reuses its packet id in the same session (MQTT 5 §4.4), so it gets the same id and a
 * consumer's inbox recognises it. Two different messages collide only when they have the same
 * topic and byte-identical payload and arrive under the same packet id — the broker cycles
 * through 65 535 ids per session, so a device that repeats one payload verbatim can collide;
 * such devices should send an `id` User Property. At QoS 0 (no packet id) the id is random.
 */
export function derivedId(clientId: string, packetId: number | undefined, topic: string, payload: Uint8Array): string {
  if (packetId === undefined) return randomUUID();
  const h = createHash('sha256');
  h.update(clientId);
  h.update('\u0000');
  h.update(String(packetId));
  h.update('\u0000');
  h.update(topic);
  h.update('\u0000');
  h.update(payload);
  return h.digest('hex').slice(0, 32);
}

/** `mqtt://<host>/<topic>`, each topic level percent-encoded so the result is a valid URI. */
export function defaultSource(host: string, topic: string): string {
  return `mqtt://${host}/${topic.split('/').map(encodeURIComponent).join('/')}`;
}

/** Reads an MQTT message as a CloudEvent (see the module doc). Throws only when even the bridge-built fallback is invalid. */
export function envelopeFromMqtt(msg: InboundMessage, ctx: InboundContext): InboundResult {
  const contentType = msg.contentType;
  if (contentType !== undefined && STRUCTURED_RE.test(contentType)) {
    try {
      const decoded = decodeEnvelope(msg.payload);
      return { envelope: validateEnvelope({ ...decoded, partitionkey: ctx.deviceId }), mode: 'structured' };
    } catch (cause) {
      return fallback(msg, ctx, cause, 'structured');
    }
  }
  const props = userProperties(msg.userProperties);
  const binary = props.specversion !== undefined;
  const attrs: Record<string, string> = {};
  for (const [k, v] of Object.entries(props)) {
    if (k === 'specversion' || k === 'partitionkey' || k === 'data' || k === 'data_base64') continue;
    if (binary ? NAME_RE.test(k) : STANDARD.has(k)) attrs[k] = v;
  }
  try {
    if (binary && props.specversion !== '1.0') {
      throw new HeraldError('HERALD_ERR_ENVELOPE_INVALID', `specversion must be "1.0" (got ${JSON.stringify(props.specversion)})`, { details: { problems: ['specversion'] } });
    }
    const ct = contentType ?? attrs.datacontenttype;
    delete attrs.datacontenttype;
    const input = baseInput(msg, ctx, ct);
    const extensions: Record<string, ExtensionValue> = {};
    for (const [k, v] of Object.entries(attrs)) {
      if (TOP_LEVEL.has(k)) (input as unknown as Record<string, unknown>)[k] = v;
      else extensions[k] = v;
    }
    if (Object.keys(extensions).length > 0) input.extensions = extensions;
    return { envelope: createEnvelope(input, ctx.now), mode: binary ? 'binary' : 'bridge' };
  } catch (cause) {
    return fallback(msg, ctx, cause, binary ? 'binary' : 'user-property');
  }
}

function fallback(msg: InboundMessage, ctx: InboundContext, cause: unknown, what: string): InboundResult {
  const reason = cause instanceof Error ? cause.message : String(cause);
  const problem = new HeraldError('HERALD_ERR_ENVELOPE_INVALID', `MQTT message on "${msg.topic}" carries an unusable ${what} CloudEvent (${reason}); the bridge built the event from the topic instead`, {
    cause,
    details: { mqttTopic: msg.topic, packetId: msg.packetId, mode: what },
  });
  // The raw bytes are kept as they came (binary data), so nothing the device sent is lost.
  const input = baseInput(msg, ctx, undefined, true);
  input.extensions = { bridgeerror: clip(reason.replace(/[\p{Cc}\p{Cs}\p{Noncharacter_Code_Point}]/gu, ' '), 200) };
  return { envelope: createEnvelope(input, ctx.now), mode: 'bridge', problem };
}

function baseInput(msg: InboundMessage, ctx: InboundContext, contentType: string | undefined, raw = false): EnvelopeInput {
  const input: EnvelopeInput = {
    id: derivedId(ctx.clientId, msg.packetId, msg.topic, msg.payload),
    type: ctx.type,
    source: ctx.source,
    subject: ctx.deviceId,
    partitionkey: ctx.deviceId,
  };
  const body = raw ? rawData(msg.payload) : dataFrom(msg.payload, contentType);
  if (body.data !== undefined) input.data = body.data;
  if (body.datacontenttype !== undefined) input.datacontenttype = body.datacontenttype;
  return input;
}

function rawData(payload: Uint8Array): { data?: unknown; datacontenttype?: string } {
  if (payload.byteLength === 0) return {};
  return { data: asBuffer(payload), datacontenttype: 'application/octet-stream' };
}

/**
 * The event data of a payload. With a Content Type: JSON types are parsed (kept as bytes when
 * they do not parse), `text/*` is a string, anything else bytes (`data_base64`). Without one:
 * JSON when the payload parses as JSON, else text when it is UTF-8, else bytes.
 */
export function dataFrom(payload: Uint8Array, contentType: string | undefined): { data?: unknown; datacontenttype?: string } {
  if (payload.byteLength === 0) return contentType === undefined ? {} : { datacontenttype: contentType };
  const buf = asBuffer(payload);
  let text: string | undefined;
  try {
    text = utf8.decode(buf);
  } catch {
    text = undefined;
  }
  if (contentType !== undefined) {
    if (JSON_RE.test(contentType) && text !== undefined) {
      try {
        return { data: JSON.parse(text), datacontenttype: contentType };
      } catch {
        return { data: buf, datacontenttype: contentType };
      }
    }
    if (TEXT_RE.test(contentType) && text !== undefined) return { data: text, datacontenttype: contentType };
    return { data: buf, datacontenttype: contentType };
  }
  if (text === undefined) return { data: buf, datacontenttype: 'application/octet-stream' };
  try {
    return { data: JSON.parse(text), datacontenttype: 'application/json' };
  } catch {
    return { data: text, datacontenttype: 'text/plain; charset=utf-8' };
  }
}

/** An outbound MQTT message in binary content mode. */
export interface OutboundMessage {
  readonly payload: Buffer;
  readonly contentType: string | undefined;
  readonly userProperties: Record<string, string>;
}

/** Maps an envelope to MQTT 5 binary content mode (see the module doc). */
export function toMqttBinary(env: CloudEvent): OutboundMessage {
  const userProperties: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined || k === 'data' || k === 'data_base64' || k === 'datacontenttype') continue;
    userProperties[k] = String(v);
  }
  let payload: Buffer;
  if (typeof env.data_base64 === 'string') payload = Buffer.from(env.data_base64, 'base64');
  else if (env.data === undefined) payload = Buffer.alloc(0);
  else if (typeof env.data === 'string' && env.datacontenttype !== undefined && !JSON_RE.test(env.datacontenttype)) payload = Buffer.from(env.data, 'utf8');
  else payload = Buffer.from(JSON.stringify(env.data), 'utf8');
  return { payload, contentType: env.datacontenttype, userProperties };
}

/** User properties with single values (MQTT allows a name to repeat; the first value wins). */
function userProperties(up: Readonly<Record<string, string | string[]>> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!up) return out;
  for (const [k, v] of Object.entries(up)) {
    const first = Array.isArray(v) ? v[0] : v;
    if (typeof first === 'string') out[k] = first;
  }
  return out;
}

function asBuffer(p: Uint8Array): Buffer {
  return Buffer.isBuffer(p) ? p : Buffer.from(p.buffer, p.byteOffset, p.byteLength);
}

function clip(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}
