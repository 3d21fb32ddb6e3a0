/**
 * The causation graph of one correlation id: which message caused which (an envelope's
 * `causationid` is the id of the message that caused it), where each was seen (topic position,
 * stream, dead letter), which handlers took it, how long they took and which failed.
 *
 * Pure: `buildCausationGraph` takes what the backends hold (messages, handling records) and
 * returns the tree; backends read their tables (`@herald/sqlite`'s `readSqliteCausation`), and
 * `recordHandling` keeps, in memory, the handler attempts this process ran. Durations are
 * durable where the handler ran in an inbox transaction (`ctx.transaction`: the inbox record
 * keeps the attempt's duration, measured to the end of the callback); for other handlers only
 * `recordHandling` has them, for the attempts of this process.
 */
import { channels, type HandleMessage } from './instrumentation.ts';
import type { CloudEvent } from './envelope.ts';
import { HeraldError } from './errors.ts';

/** A message seen somewhere (a log position, an event stream, a dead letter). */
export interface CausationMessage {
  readonly id: string;
  readonly type: string;
  /** CloudEvents `source`: the service that produced it. */
  readonly source: string;
  /** Epoch ms (the envelope's `time`, else when it was stored). */
  readonly time: number | undefined;
  readonly causationId: string | undefined;
  /** Where it was seen, for people ('topic orders/3@17', 'stream order-1@2'). */
  readonly where: string;
}

/** One handler's dealing with one message. */
export interface HandlingRecord {
  readonly messageId: string;
  readonly group: string;
  readonly handler: string;
  /** Epoch ms the (last) attempt started or the handling was recorded. */
  readonly at: number | undefined;
  /** Duration of the last attempt, ms, when known: in-process records, and inbox records of handling done in `ctx.transaction` (from the attempt's start to the end of the transaction's callback). */
  readonly durationMs: number | undefined;
  readonly attempts: number | undefined;
  readonly failed: boolean;
  readonly error: string | undefined;
  /** Where this record comes from ('inbox', 'dead letter', 'this process'). */
  readonly from: string;
}

export interface CausationNode {
  readonly id: string;
  readonly type: string;
  readonly source: string;
  readonly time: number | undefined;
  readonly where: readonly string[];
  readonly handlers: readonly HandlingRecord[];
  /** Some handler of this message failed (and did not later succeed). */
  readonly failed: boolean;
  readonly children: readonly CausationNode[];
}

export interface CausationGraph {
  readonly correlationId: string;
  /** Messages whose cause is not among the messages found (the first command, usually). */
  readonly roots: readonly CausationNode[];
  /** Messages in the graph. */
  readonly size: number;
  /** Causation ids named by a message but not found (outside the correlation, or purged). */
  readonly missing: readonly string[];
}

/**
 * Builds the tree. Messages seen in several places (the log and a dead letter) merge into one
 * node; children and handlers are in time order; a cycle (a message naming a descendant as its
 * cause — only corrupt data does that) is cut where it closes.
 */
export function buildCausationGraph(correlationId: string, messages: readonly CausationMessage[], handlings: readonly HandlingRecord[] = []): CausationGraph {
  if (typeof correlationId !== 'string' || correlationId.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'causation graph needs a non-empty correlation id');
  const byId = new Map<string, { m: CausationMessage; where: string[] }>();
  for (const m of messages) {
    const seen = byId.get(m.id);
    if (!seen) byId.set(m.id, { m, where: [m.where] });
    else {
      if (!seen.where.includes(m.where)) seen.where.push(m.where);
      if (seen.m.time === undefined && m.time !== undefined) seen.m = { ...seen.m, time: m.time };
    }
  }
  const handled = new Map<string, HandlingRecord[]>();
  for (const h of handlings) {
    const list = handled.get(h.messageId);
    if (list) list.push(h);
    else handled.set(h.messageId, [h]);
  }
  const children = new Map<string, string[]>();
  const roots: string[] = [];
  const missing = new Set<string>();
  for (const [id, { m }] of byId) {
    const cause = m.causationId;
    if (cause !== undefined && cause !== id && byId.has(cause)) {
      const list = children.get(cause);
      if (list) list.push(id);
      else children.set(cause, [id]);
    } else {
      if (cause !== undefined && cause !== id) missing.add(cause);
      roots.push(id);
    }
  }
  const byTime = (a: string, b: string): number => (byId.get(a)!.m.time ?? 0) - (byId.get(b)!.m.time ?? 0) || (a < b ? -1 : 1);
  const placed = new Set<string>();
  const node = (id: string, path: Set<string>): CausationNode => {
    placed.add(id);
    const { m, where } = byId.get(id)!;
    const hs = (handled.get(id) ?? []).slice().sort((a, b) => (a.at ?? 0) - (b.at ?? 0));
    const kids = (children.get(id) ?? []).filter((k) => !path.has(k)).sort(byTime);
    const inner = new Set(path).add(id);
    return {
      id,
      type: m.type,
      source: m.source,
      time: m.time,
      where,
      handlers: hs,
      failed: failedFor(hs),
      children: kids.map((k) => node(k, inner)),
    };
  };
  const tree = roots.sort(byTime).map((r) => node(r, new Set()));
  // Messages only reachable through a cycle: show them as roots rather than drop them.
  for (const id of [...byId.keys()].sort(byTime)) if (!placed.has(id)) tree.push(node(id, new Set()));
  return { correlationId, roots: tree, size: byId.size, missing: [...missing].sort() };
}

/** A handler failed when its latest record per (group, handler) is a failure. */
function failedFor(hs: readonly HandlingRecord[]): boolean {
  const last = new Map<string, HandlingRecord>();
  for (const h of hs) {
    const key = `${h.group}\u0000${h.handler}`;
    const prev = last.get(key);
    if (!prev || (h.at ?? 0) >= (prev.at ?? 0)) last.set(key, h);
  }
  return [...last.values()].some((h) => h.failed);
}

/** A message as the graph sees it, from an envelope. */
export function causationMessage(envelope: CloudEvent, where: string, storedAt?: number): CausationMessage {
  const t = envelope.time === undefined ? Number.NaN : Date.parse(envelope.time);
  return {
    id: envelope.id,
    type: envelope.type,
    source: envelope.source,
    time: Number.isFinite(t) ? t : storedAt,
    causationId: envelope.causationid,
    where,
  };
}

/** An event-store row as a causation message: `source` from its metadata, else 'event store'. */
export function storedEventMessage(row: {
  readonly eventId: string;
  readonly type: string;
  readonly streamId: string;
  readonly version: number;
  readonly metadata: string | null;
  readonly causationId: string | null;
  readonly recordedAt: number;
}): CausationMessage {
  const meta = row.metadata ? (parseOrUndefined(row.metadata) as { source?: unknown } | undefined) : undefined;
  return {
    id: row.eventId,
    type: row.type,
    source: typeof meta?.source === 'string' ? meta.source : 'event store',
    time: row.recordedAt,
    causationId: row.causationId ?? undefined,
    where: `stream ${row.streamId}@${row.version}`,
  };
}

/** A dead-letter row: the message it holds, and the failed handling it records. */
export function deadLetterCausation(row: {
  readonly id: string | number;
  readonly group: string;
  readonly handler: string;
  readonly status: string;
  readonly envelope: string;
  readonly error: string;
  readonly attempts: number;
  readonly lastFailedAt: number;
}): { message: CausationMessage; handling: HandlingRecord } {
  const e = JSON.parse(row.envelope) as CloudEvent;
  return {
    message: causationMessage(e, `dead letter #${row.id} (${row.status})`, row.lastFailedAt),
    handling: {
      messageId: e.id,
      group: row.group,
      handler: row.handler,
      at: row.lastFailedAt,
      durationMs: undefined,
      attempts: row.attempts,
      // A parked message (attempts 0) waits behind a failed one of its key; it did not fail itself.
      failed: row.attempts > 0,
      error: row.error,
      from: 'dead letter',
    },
  };
}

/** An inbox row: a handler that handled the message in its transaction (and how long it took, when stored). */
export function inboxHandling(row: { readonly id: string; readonly group: string; readonly handler: string; readonly handledAt: number; readonly durationMs: number | undefined }): HandlingRecord {
  return { messageId: row.id, group: row.group, handler: row.handler, at: row.handledAt, durationMs: row.durationMs, attempts: undefined, failed: false, error: undefined, from: 'inbox' };
}

function parseOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export interface HandlingRecorder {
  /** Records of handler attempts on messages of `correlationId` (a message with no correlation id is its own). */
  records(correlationId: string): { readonly messages: readonly CausationMessage[]; readonly handlings: readonly HandlingRecord[] };
  /** Stops recording; idempotent. */
  close(): void;
}

/**
 * Records, in memory, every handler attempt this process runs (from the `herald:handle`
 * channel): message, group, handler, start, duration, outcome. Bounded: the oldest
 * correlation ids are forgotten beyond `maxCorrelations` (default 10 000). `now` and
 * `monotonic` default to the system clock.
 */
export function recordHandling(options: { readonly maxCorrelations?: number; readonly now?: () => number; readonly monotonic?: () => number } = {}): HandlingRecorder {
  const max = options.maxCorrelations ?? 10_000;
  if (!Number.isInteger(max) || max < 1) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `maxCorrelations must be a positive integer (got ${max})`);
  const now = options.now ?? Date.now;
  const mono = options.monotonic ?? (() => performance.now());
  const byCorrelation = new Map<string, { messages: Map<string, CausationMessage>; handlings: HandlingRecord[] }>();
  const started = new WeakMap<HandleMessage, { at: number; mono: number }>();
  const sub = {
    start(m: HandleMessage) {
      started.set(m, { at: now(), mono: mono() });
    },
    asyncEnd(m: HandleMessage) {
      const s = started.get(m);
      const correlation = m.envelope.correlationid ?? m.envelope.id;
      let entry = byCorrelation.get(correlation);
      if (!entry) {
        if (byCorrelation.size >= max) byCorrelation.delete(byCorrelation.keys().next().value!);
        byCorrelation.set(correlation, (entry = { messages: new Map(), handlings: [] }));
      }
      if (!entry.messages.has(m.envelope.id)) entry.messages.set(m.envelope.id, causationMessage(m.envelope, `topic ${m.topic}/${m.partition}${m.position !== undefined ? `@${m.position}` : ''}`));
      const error = m.error;
      entry.handlings.push({
        messageId: m.envelope.id,
        group: m.group,
        handler: m.handler,
        at: s?.at,
        durationMs: s ? mono() - s.mono : undefined,
        attempts: m.attempt,
        failed: error !== undefined,
        error: error === undefined ? undefined : error instanceof Error ? error.message : String(error),
        from: 'this process',
      });
    },
  };
  channels.handle.subscribe(sub as never);
  let closed = false;
  return {
    records(correlationId) {
      const e = byCorrelation.get(correlationId);
      return { messages: e ? [...e.messages.values()] : [], handlings: e ? [...e.handlings] : [] };
    },
    close() {
      if (closed) return;
      closed = true;
      channels.handle.unsubscribe(sub as never);
    },
  };
}
