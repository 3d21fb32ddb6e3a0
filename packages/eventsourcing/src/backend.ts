/**
 * Pieces every event-store backend shares, so the memory and SQLite stores behave the same:
 * argument checks, event preparation (ids, catalog validation, JSON encoding), the
 * expected-version rule, the exact-retry (idempotency) rule, visibility under stream metadata,
 * categories and decoding of stored rows. Exported through `@herald/eventsourcing/internal`.
 */
import { randomBytes } from 'node:crypto';
import { HeraldError } from '@herald/core';
import type { EventCatalog } from './catalog.ts';
import { ConcurrencyError, idempotencyConflict, invalidArgument } from './errors.ts';
import {
  type AppendResult,
  DEFAULT_MAX_COUNT,
  type ExpectedVersion,
  MAX_READ_COUNT,
  type NewEvent,
  type RecordedEvent,
  type StreamMetadata,
  type StreamState,
} from './types.ts';

/** An event ready to be stored: id assigned, data validated and encoded. */
export interface PreparedEvent {
  readonly id: string;
  readonly type: string;
  readonly schemaVersion: number;
  /** JSON text of the data. */
  readonly data: string;
  /** JSON text of `metadata`, or null when there is none. */
  readonly metadata: string | null;
  readonly correlationId: string | null;
  readonly causationId: string | null;
}

/** A stored event as a backend keeps it (before decoding). */
export interface StoredRow extends PreparedEvent {
  readonly streamId: string;
  readonly streamVersion: number;
  readonly position: bigint;
  readonly recordedAt: number;
}

const MAX_STREAM_ID = 500;
const MAX_EVENT_ID = 500;

export function checkStreamId(streamId: unknown): string {
  if (typeof streamId !== 'string' || streamId.length === 0 || streamId.length > MAX_STREAM_ID) {
    throw invalidArgument(`a stream id must be a non-empty string of at most ${MAX_STREAM_ID} characters (got ${show(streamId)})`);
  }
  if (streamId.startsWith('$')) throw invalidArgument(`stream ids starting with "$" are reserved (got ${show(streamId)})`);
  return streamId;
}

export function checkExpectedVersion(v: unknown): ExpectedVersion {
  if (v === undefined) return 'any';
  if (v === 'any' || v === 'no_stream' || v === 'stream_exists') return v;
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v;
  throw invalidArgument(`expectedVersion must be 'any', 'no_stream', 'stream_exists' or a non-negative integer (got ${show(v)})`);
}

export function checkMaxCount(v: unknown, dflt = DEFAULT_MAX_COUNT): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_READ_COUNT) {
    throw invalidArgument(`maxCount must be an integer from 1 to ${MAX_READ_COUNT} (got ${show(v)})`);
  }
  return v;
}

export function checkVersionArg(name: string, v: unknown): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw invalidArgument(`${name} must be a non-negative integer (got ${show(v)})`);
  return v;
}

export function checkPositionArg(name: string, v: unknown): bigint | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'bigint' || v < 0n) throw invalidArgument(`${name} must be a non-negative bigint (got ${show(v)})`);
  return v;
}

export function checkDirection(v: unknown): 'forward' | 'backward' {
  if (v === undefined || v === 'forward') return 'forward';
  if (v === 'backward') return 'backward';
  throw invalidArgument(`direction must be 'forward' or 'backward' (got ${show(v)})`);
}

/** The category of a stream: its id up to the first `-` (the whole id when it has none). */
export function categoryOf(streamId: string): string {
  const i = streamId.indexOf('-');
  return i < 0 ? streamId : streamId.slice(0, i);
}

/** `'order'` or `'order-'` → `'order'`. */
export function checkCategory(v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalidArgument(`category must be a string (got ${show(v)})`);
  const c = v.endsWith('-') ? v.slice(0, -1) : v;
  if (c.length === 0 || c.includes('-')) throw invalidArgument(`a category is the part of a stream id before its first "-", like "order" or "order-" (got ${show(v)})`);
  return c;
}

export function checkMetadata(m: unknown): StreamMetadata {
  if (typeof m !== 'object' || m === null || Array.isArray(m)) throw invalidArgument('stream metadata must be an object');
  const meta = m as Record<string, unknown>;
  const out: { -readonly [K in keyof StreamMetadata]: StreamMetadata[K] } = {};
  for (const k of Object.keys(meta)) {
    if (meta[k] === undefined) continue;
    if (k !== 'maxCount' && k !== 'maxAgeMs' && k !== 'truncateBefore' && k !== 'custom') throw invalidArgument(`unknown stream metadata field "${k}" (maxCount, maxAgeMs, truncateBefore, custom)`);
  }
  for (const k of ['maxCount', 'maxAgeMs'] as const) {
    const v = meta[k];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw invalidArgument(`${k} must be a positive integer (got ${show(v)})`);
    out[k] = v;
  }
  if (meta.truncateBefore !== undefined) {
    const v = meta.truncateBefore;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw invalidArgument(`truncateBefore must be a non-negative integer (got ${show(v)})`);
    out.truncateBefore = v;
  }
  if (meta.custom !== undefined) {
    if (typeof meta.custom !== 'object' || meta.custom === null || Array.isArray(meta.custom)) throw invalidArgument('metadata.custom must be a JSON object');
    out.custom = JSON.parse(encodeJson(meta.custom, 'metadata.custom')) as Record<string, unknown>;
  }
  return out;
}

/**
 * Checks the arguments of an append and prepares its events. Synchronous without a catalog
 * (the common case, so concurrent appends keep their call order); a promise with one.
 */
export function prepareEvents(streamId: string, events: unknown, catalog: EventCatalog | undefined, now: number = Date.now()): PreparedEvent[] | Promise<PreparedEvent[]> {
  if (!Array.isArray(events)) throw invalidArgument(`appendToStream("${streamId}") takes an array of events`);
  const ids = new Set<string>();
  const base: Array<{ id: string; type: string; schemaVersion: number | undefined; data: unknown; e: NewEvent }> = new Array(events.length);
  for (let i = 0; i < events.length; i++) {
    const e = events[i] as NewEvent;
    if (typeof e !== 'object' || e === null) throw invalidArgument(`event ${i} for stream "${streamId}" must be an object { type, data }`);
    if (typeof e.type !== 'string' || e.type.length === 0 || e.type.length > 200) throw invalidArgument(`event ${i} for stream "${streamId}": type must be a non-empty string of at most 200 characters (got ${show(e.type)})`);
    if (e.data === undefined) throw invalidArgument(`event ${i} ("${e.type}") for stream "${streamId}" has no data`);
    const id = e.id ?? newEventId(now);
    if (typeof id !== 'string' || id.length === 0 || id.length > MAX_EVENT_ID) throw invalidArgument(`event ${i} for stream "${streamId}": id must be a non-empty string of at most ${MAX_EVENT_ID} characters (got ${show(id)})`);
    if (ids.has(id)) throw invalidArgument(`event id "${id}" appears twice in one append to stream "${streamId}"`, { streamId, id });
    ids.add(id);
    if (e.schemaVersion !== undefined && (!Number.isSafeInteger(e.schemaVersion) || e.schemaVersion < 1)) {
      throw invalidArgument(`event ${i} ("${e.type}") for stream "${streamId}": schemaVersion must be a positive integer (got ${show(e.schemaVersion)})`);
    }
    for (const k of ['correlationId', 'causationId'] as const) {
      const v = e[k];
      if (v !== undefined && (typeof v !== 'string' || v.length === 0)) throw invalidArgument(`event ${i} ("${e.type}"): ${k} must be a non-empty string`);
    }
    if (e.metadata !== undefined) {
      if (typeof e.metadata !== 'object' || e.metadata === null || Array.isArray(e.metadata)) throw invalidArgument(`event ${i} ("${e.type}"): metadata must be an object`);
      for (const [k, v] of Object.entries(e.metadata)) {
        if (typeof v !== 'string' && typeof v !== 'boolean' && !(typeof v === 'number' && Number.isFinite(v))) {
          throw invalidArgument(`event ${i} ("${e.type}"): metadata.${k} must be a string, a finite number or a boolean`);
        }
      }
    }
    base[i] = { id, type: e.type, schemaVersion: e.schemaVersion, data: e.data, e };
  }
  const finish = (versions: number[], datas: unknown[]): PreparedEvent[] => {
    const out: PreparedEvent[] = new Array(base.length);
    for (let i = 0; i < base.length; i++) {
      const b = base[i]!;
      const m = b.e.metadata;
      out[i] = {
        id: b.id,
        type: b.type,
        schemaVersion: versions[i]!,
        data: encodeJson(datas[i], `data of event ${i} ("${b.type}") for stream "${streamId}"`),
        metadata: m !== undefined && Object.keys(m).length > 0 ? JSON.stringify(m) : null,
        correlationId: b.e.correlationId ?? null,
        causationId: b.e.causationId ?? null,
      };
    }
    return out;
  };
  if (!catalog) return finish(base.map((b) => b.schemaVersion ?? 1), base.map((b) => b.data));
  return Promise.all(base.map((b) => catalog.validateForAppend(b.type, b.schemaVersion, b.data))).then((r) =>
    finish(
      r.map((x) => x.schemaVersion),
      r.map((x) => x.data),
    ),
  );
}

export function encodeJson(value: unknown, what: string): string {
  let s: string | undefined;
  try {
    s = JSON.stringify(value);
  } catch (cause) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${what} is not JSON: ${(cause as Error).message}`, { cause });
  }
  if (s === undefined) throw invalidArgument(`${what} is not JSON (got ${show(value)})`);
  return s;
}

/** Throws `ConcurrencyError` unless the stream's state satisfies `expected`. */
export function checkExpected(streamId: string, expected: ExpectedVersion, version: number, state: StreamState): void {
  if (expected === 'any') return;
  let ok: boolean;
  if (expected === 'no_stream') ok = version === 0 || state === 'soft_deleted';
  else if (expected === 'stream_exists') ok = version > 0 && state === 'live';
  else ok = version === expected;
  if (!ok) throw new ConcurrencyError(streamId, expected, version);
}

/**
 * The exact-retry rule. Event ids are unique in a store (a CloudEvents id must be unique per
 * source, and a store publishes under one source). `found[i]` is where the append's i-th event
 * id is already stored (undefined when it is not). Returns the original result when the append
 * is an exact retry, `undefined` when none of the ids is stored, and throws
 * `HERALD_ERR_IDEMPOTENCY_CONFLICT` for a partial overlap or an id used by another stream.
 */
export function exactRetry(
  streamId: string,
  events: readonly PreparedEvent[],
  found: ReadonlyArray<{ streamId: string; version: number; position: bigint; type: string } | undefined>,
  expected: ExpectedVersion,
): AppendResult | undefined {
  const existing: Array<{ id: string; version: number; streamId: string }> = [];
  for (let i = 0; i < events.length; i++) if (found[i]) existing.push({ id: events[i]!.id, version: found[i]!.version, streamId: found[i]!.streamId });
  if (existing.length === 0) return undefined;
  const ids = events.map((e) => e.id);
  const elsewhere = existing.find((e) => e.streamId !== streamId);
  if (elsewhere) return fail(`event id "${elsewhere.id}" is already used by stream "${elsewhere.streamId}" (ids are unique in a store)`);
  if (existing.length !== events.length) return fail(`${existing.length} of its ${events.length} ids are stored`);
  const first = found[0]!;
  for (let i = 1; i < found.length; i++) {
    if (found[i]!.version !== first.version + i) return fail('the stored events are not at consecutive versions in the same order');
  }
  for (let i = 0; i < found.length; i++) {
    if (found[i]!.type !== events[i]!.type) return fail(`event "${events[i]!.id}" is stored with type "${found[i]!.type}", not "${events[i]!.type}"`);
  }
  if (typeof expected === 'number' && expected !== first.version - 1) return fail(`they were written after version ${first.version - 1}, not after the expected ${expected}`);
  if (expected === 'no_stream' && first.version !== 1) return fail(`they were written after version ${first.version - 1}, not to a new stream`);
  const last = found[found.length - 1]!;
  return { streamVersion: last.version, firstPosition: first.position, position: last.position, idempotent: true };

  function fail(why: string): never {
    throw idempotencyConflict(streamId, ids, existing, why);
  }
}

let lastIdMs = 0;
let idSeq = 0;
const idNode = randomBytes(8).toString('hex');

/**
 * A default event id: a UUID version 7 (RFC 9562) — 48-bit milliseconds, then a per-process
 * sequence and random bits. Ids that grow with time keep the store's id index appending at its
 * end instead of writing all over it (random ids cost about a third of the append rate on
 * SQLite). Unique across processes through the random part; monotonic within a process.
 */
export function newEventId(now: number): string {
  const ms = Math.max(Math.floor(now), lastIdMs);
  if (ms !== lastIdMs) {
    lastIdMs = ms;
    idSeq = 0;
  }
  const seq = idSeq++;
  const t = ms.toString(16).padStart(12, '0').slice(-12);
  const s = (seq & 0xfffffff).toString(16).padStart(7, '0');
  const variant = (8 + ((seq >>> 28) & 3)).toString(16);
  return `${t.slice(0, 8)}-${t.slice(8, 12)}-7${s.slice(0, 3)}-${variant}${s.slice(3, 6)}-${s.slice(6)}${idNode.slice(0, 11)}`;
}

/** The lowest version and earliest time a stream read may return under its metadata and soft delete. */
export function visibility(meta: StreamMetadata, softDeletedBefore: number, lastVersion: number, now: number): { minVersion: number; minRecordedAt: number; truncateBefore: number } {
  const truncateBefore = Math.max(meta.truncateBefore ?? 0, softDeletedBefore);
  let minVersion = Math.max(1, truncateBefore);
  if (meta.maxCount !== undefined) minVersion = Math.max(minVersion, lastVersion - meta.maxCount + 1);
  const minRecordedAt = meta.maxAgeMs !== undefined ? now - meta.maxAgeMs : Number.NEGATIVE_INFINITY;
  return { minVersion, minRecordedAt, truncateBefore };
}

/**
 * Decodes a stored row into a `RecordedEvent` through the catalog. Returns undefined when the
 * catalog says to skip it. Unparseable data is `HERALD_ERR_CORRUPT_RECORD` naming the position.
 */
export function decodeRow(row: StoredRow, catalog: EventCatalog | undefined): RecordedEvent | undefined {
  let data: unknown;
  let metadata: Record<string, string | number | boolean> | undefined;
  try {
    data = JSON.parse(row.data);
    if (row.metadata !== null) metadata = JSON.parse(row.metadata) as Record<string, string | number | boolean>;
  } catch (cause) {
    throw new HeraldError('HERALD_ERR_CORRUPT_RECORD', `the event at stream "${row.streamId}" version ${row.streamVersion} (position ${row.position}) is not valid JSON`, {
      cause,
      details: { streamId: row.streamId, streamVersion: row.streamVersion, position: String(row.position) },
    });
  }
  return finishDecode(row, data, metadata, catalog);
}

/** The rest of `decodeRow` for backends that parse themselves. */
export function finishDecode(
  row: Omit<StoredRow, 'data' | 'metadata'>,
  data: unknown,
  metadata: Record<string, string | number | boolean> | undefined,
  catalog: EventCatalog | undefined,
): RecordedEvent | undefined {
  let type = row.type;
  let schemaVersion = row.schemaVersion;
  let stored: { type: string; schemaVersion: number } | undefined;
  if (catalog) {
    const r = catalog.read(row, data);
    if (r.kind === 'skip') return undefined;
    if (r.upcasted) stored = { type, schemaVersion };
    type = r.type;
    schemaVersion = r.schemaVersion;
    data = r.data;
  }
  const e: { -readonly [K in keyof RecordedEvent]: RecordedEvent[K] } = {
    streamId: row.streamId,
    streamVersion: row.streamVersion,
    position: row.position,
    id: row.id,
    type,
    schemaVersion,
    data,
    recordedAt: row.recordedAt,
  };
  if (row.correlationId !== null) e.correlationId = row.correlationId;
  if (row.causationId !== null) e.causationId = row.causationId;
  if (metadata !== undefined) e.metadata = metadata;
  if (stored !== undefined) e.stored = stored;
  return e;
}

export function show(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (typeof v === 'bigint') return `${v}n`;
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 60)}…` : s;
  } catch {
    return String(v);
  }
}
