/**
 * Checking, encoding and reading back outbox and scheduled rows, and checking inbox keys:
 * shared by the backends that store them (SQLite, PostgreSQL). A message is checked when the caller records it, inside its
 * transaction, so a refusal rolls the transaction back: the topic name (`TOPIC_NAME_RE`), the
 * envelope (`HERALD_ERR_ENVELOPE_INVALID`), the key (a string), the encoded size
 * (`maxPayloadBytes`: `HERALD_ERR_PAYLOAD_TOO_LARGE`), so a relay never meets a row the
 * transport would refuse for its size.
 */
import { type CloudEvent, decodeStoredEnvelope, encodedSize, encodeEnvelope, ensureEnvelope } from './envelope.ts';
import { HeraldError } from './errors.ts';
import { tooLarge } from './memory-transport.ts';
import { type OutgoingMessage, TOPIC_NAME_RE } from './transport.ts';
import type { InboxKey } from './unit-of-work.ts';

export interface EncodedOutgoing {
  readonly key: string | null;
  readonly body: string;
  readonly envelope: CloudEvent;
}

/** A topic an outbox or scheduled row may name; else `HERALD_ERR_INVALID_ARGUMENT`. */
export function checkOutboxTopic(topic: unknown): asserts topic is string {
  if (typeof topic !== 'string' || !TOPIC_NAME_RE.test(topic)) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `topic must be 1–200 letters, digits, '.', '_' or '-' (got ${JSON.stringify(topic)})`);
  }
}

/** Checks message `i` to `topic` and encodes its envelope; `maxPayload` 0 disables the size check. */
export function encodeOutgoing(topic: string, m: OutgoingMessage, i: number, maxPayload: number): EncodedOutgoing {
  if (typeof m !== 'object' || m === null || typeof m.envelope !== 'object' || m.envelope === null) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `message ${i} to "${topic}" has no envelope`);
  }
  const envelope = ensureEnvelope(m.envelope);
  const body = encodeEnvelope(envelope);
  if (maxPayload > 0 && body.length * 3 > maxPayload) {
    const size = encodedSize(body);
    if (size > maxPayload) throw tooLarge(topic, envelope.id, size, maxPayload);
  }
  const key = m.key ?? envelope.partitionkey;
  if (key !== undefined && typeof key !== 'string') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `message ${i} to "${topic}": key must be a string`);
  return { key: key ?? null, body, envelope };
}

/** Reads a stored row back as a message; an unreadable envelope is `HERALD_ERR_CORRUPT_RECORD` naming the row (`what`). */
export function storedOutgoing(body: string, key: string | null, what: string, details: Record<string, unknown>): OutgoingMessage {
  let envelope: CloudEvent;
  try {
    envelope = decodeStoredEnvelope(body);
  } catch (cause) {
    throw new HeraldError('HERALD_ERR_CORRUPT_RECORD', `${what} does not hold a readable envelope`, { cause, details });
  }
  return key === null ? { envelope } : { envelope, key };
}

/** An inbox key `{ group, handler, source, id }` of non-empty strings; else `HERALD_ERR_INVALID_ARGUMENT` naming the field. */
export function checkInboxKey(key: InboxKey): InboxKey {
  if (typeof key !== 'object' || key === null) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'an inbox key is { group, handler, source, id }');
  for (const f of ['group', 'handler', 'source', 'id'] as const) {
    if (typeof key[f] !== 'string' || key[f] === '') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `inbox key ${f} must be a non-empty string (got ${JSON.stringify(key[f])})`);
  }
  if (key.startedAt !== undefined && (typeof key.startedAt !== 'number' || !Number.isFinite(key.startedAt))) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `inbox key startedAt must be finite epoch ms or absent (got ${String(key.startedAt)})`);
  }
  return key;
}
