/**
 * The causation graph of one correlation id from what a Herald SQLite file holds: the transport
 * log, the event store, the dead letters (failures, with their errors) and the inbox (which
 * handler took which message, when, and — for handling done in `ctx.transaction` — how long the
 * attempt took, `duration_ms`). Handlers that ran without the inbox have no stored duration:
 * pass the in-process records of `recordHandling` (from @herald/core) as `extra` to have them.
 *
 * Cost: the log and the dead letters are searched by the envelope's `correlationid` with
 * `json_extract` — a scan of those tables (bounded by `limit` results); the event store uses its
 * `correlation_id` column; the inbox is read by message id. A debugging read, not a hot path.
 */
import { buildCausationGraph, type CausationGraph, type CausationMessage, causationMessage, type CloudEvent, deadLetterCausation, type HandlingRecord, inboxHandling, storedEventMessage } from '@herald/core';
import type { SqliteDatabase } from './database.ts';

export interface CausationReadOptions {
  /** Most messages read from each source (default 1000). */
  readonly limit?: number;
}

export function readSqliteCausation(database: SqliteDatabase, correlationId: string, options: CausationReadOptions = {}): { messages: CausationMessage[]; handlings: HandlingRecord[] } {
  const limit = options.limit ?? 1000;
  const has = (table: string): boolean => database.statement(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(table) !== undefined;
  return database.read(() => {
    const messages: CausationMessage[] = [];
    const handlings: HandlingRecord[] = [];
    if (has('herald_log')) {
      const rows = database
        .statement(
          `SELECT t.name AS topic, l.partition, l.offset, l.appended_at, l.envelope FROM herald_log l JOIN herald_topics t ON t.id = l.topic_id
            WHERE json_valid(l.envelope) AND (json_extract(l.envelope, '$.correlationid') = @c OR json_extract(l.envelope, '$.id') = @c) LIMIT @limit`,
        )
        .all({ c: correlationId, limit }) as { topic: string; partition: number; offset: number; appended_at: number; envelope: string }[];
      for (const r of rows) {
        const e = JSON.parse(r.envelope) as CloudEvent;
        messages.push(causationMessage(e, `topic ${r.topic}/${r.partition}@${r.offset}`, r.appended_at));
      }
    }
    if (has('herald_es_events')) {
      const rows = database
        .statement(`SELECT stream_id, version, event_id, type, metadata, causation_id, recorded_at FROM herald_es_events WHERE correlation_id = @c OR event_id = @c ORDER BY position LIMIT @limit`)
        .all({ c: correlationId, limit }) as { stream_id: string; version: number; event_id: string; type: string; metadata: string | null; causation_id: string | null; recorded_at: number }[];
      for (const r of rows) {
        messages.push(storedEventMessage({ eventId: r.event_id, type: r.type, streamId: r.stream_id, version: r.version, metadata: r.metadata, causationId: r.causation_id, recordedAt: r.recorded_at }));
      }
    }
    if (has('herald_dead_letters')) {
      const rows = database
        .statement(
          `SELECT id, grp, topic, partition, handler, status, envelope, error_message, attempts, last_failed_at FROM herald_dead_letters
            WHERE envelope IS NOT NULL AND json_valid(envelope) AND (json_extract(envelope, '$.correlationid') = @c OR event_id = @c) LIMIT @limit`,
        )
        .all({ c: correlationId, limit }) as { id: number; grp: string; topic: string; partition: number; handler: string; status: string; envelope: string; error_message: string; attempts: number; last_failed_at: number }[];
      for (const r of rows) {
        const { message, handling } = deadLetterCausation({
          id: r.id,
          group: r.grp,
          handler: r.handler,
          status: r.status,
          envelope: r.envelope,
          error: r.error_message,
          attempts: r.attempts,
          lastFailedAt: r.last_failed_at,
        });
        messages.push(message);
        handlings.push(handling);
      }
    }
    if (has('herald_inbox') && messages.length > 0) {
      const ids = [...new Set(messages.map((m) => m.id))];
      for (let i = 0; i < ids.length; i += 500) {
        const chunk = ids.slice(i, i + 500);
        const rows = database
          .statement(`SELECT grp, handler, id, handled_at, duration_ms FROM herald_inbox WHERE id IN (${chunk.map(() => '?').join(',')})`)
          .all(...chunk) as { grp: string; handler: string; id: string; handled_at: number; duration_ms: number | null }[];
        for (const r of rows) {
          handlings.push(inboxHandling({ id: r.id, group: r.grp, handler: r.handler, handledAt: r.handled_at, durationMs: r.duration_ms ?? undefined }));
        }
      }
    }
    return { messages, handlings };
  });
}

/** `readSqliteCausation` + `buildCausationGraph`, with `extra` records (e.g. `recordHandling().records(id)`) merged in. */
export function sqliteCausationGraph(
  database: SqliteDatabase,
  correlationId: string,
  options: CausationReadOptions & { readonly extra?: { readonly messages: readonly CausationMessage[]; readonly handlings: readonly HandlingRecord[] } } = {},
): CausationGraph {
  const { messages, handlings } = readSqliteCausation(database, correlationId, options);
  return buildCausationGraph(correlationId, [...messages, ...(options.extra?.messages ?? [])], [...handlings, ...(options.extra?.handlings ?? [])]);
}

