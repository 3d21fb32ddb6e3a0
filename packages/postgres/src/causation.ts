/**
 * The causation graph of one correlation id from what a Herald PostgreSQL schema holds: the
 * transport log, the event store, the dead letters (failures, with their errors) and the inbox
 * (which handler took which message, when, and — for handling done in `ctx.transaction` — how
 * long the attempt took, `duration_ms`). The same reading as `readSqliteCausation` of
 * @herald/sqlite: feed the result to `buildCausationGraph` (@herald/core). Handlers that ran
 * without the inbox have no stored duration: merge the in-process records of `recordHandling`
 * to have them.
 *
 * Cost: no index holds correlation ids. The log and the dead letters are searched by the
 * envelope's `correlationid` — a sequential scan of those tables, where only rows whose text
 * contains the id are parsed as JSON; the event store's `correlation_id` column has no index
 * either (a scan of `herald_es_events`); the inbox is read by message id, which is the last
 * column of its key (a scan of `herald_inbox`, kept short by its retention). At most `limit`
 * rows of each source. A debugging read, not a hot path: no index is added to the hot tables
 * for it.
 *
 * One read-only REPEATABLE READ transaction: the sources are one snapshot (a message moving
 * from the log to the dead letters meanwhile is seen once or in both, never in neither).
 * Tables that do not exist in the schema (a service that never used the inbox, or the event
 * store) are skipped; an inbox from before its migration 2 reads with no durations.
 */
import { type CausationMessage, causationMessage, type CloudEvent, deadLetterCausation, type HandlingRecord, HeraldError, inboxHandling, storedEventMessage } from '@herald/core';
import type { PgDatabase } from './database.ts';

export interface PostgresCausationReadOptions {
  /** Most rows read from each source (default 1000). */
  readonly limit?: number;
}

export async function readPostgresCausation(
  database: PgDatabase,
  correlationId: string,
  options: PostgresCausationReadOptions = {},
): Promise<{ messages: CausationMessage[]; handlings: HandlingRecord[] }> {
  if (typeof correlationId !== 'string' || correlationId.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'causation read needs a non-empty correlation id');
  const limit = options.limit ?? 1000;
  if (!Number.isInteger(limit) || limit < 1) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `limit must be a positive integer (got ${limit})`);
  return database.tx(async (c) => {
    await c.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
    const columns = await c.query<{ table_name: string; column_name: string }>(
      `SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = ANY($2::text[])`,
      [database.schema, ['herald_log', 'herald_topics', 'herald_es_events', 'herald_dead_letters', 'herald_inbox']],
    );
    const has = (table: string, column?: string): boolean => columns.rows.some((r) => r.table_name === table && (column === undefined || r.column_name === column));
    const messages: CausationMessage[] = [];
    const handlings: HandlingRecord[] = [];
    // strpos first (CASE fixes the order): only rows whose text holds the id are parsed as JSON.
    const matches = (column: string): string => `CASE WHEN strpos(${column}, $1) > 0 THEN (${column}::jsonb ->> 'correlationid' = $1 OR ${column}::jsonb ->> 'id' = $1) ELSE false END`;
    if (has('herald_log') && has('herald_topics')) {
      const rows = await c.query<{ topic: string; partition: number; offset: string; appended_at: string; envelope: string }>(
        `SELECT t.name AS topic, l.partition, l."offset", l.appended_at, l.envelope FROM herald_log l JOIN herald_topics t ON t.id = l.topic_id
          WHERE ${matches('l.envelope')} ORDER BY l.appended_at, t.name, l.partition, l."offset" LIMIT $2`,
        [correlationId, limit],
      );
      for (const r of rows.rows) {
        const e = JSON.parse(r.envelope) as CloudEvent;
        messages.push(causationMessage(e, `topic ${r.topic}/${r.partition}@${r.offset}`, Number(r.appended_at)));
      }
    }
    if (has('herald_es_events')) {
      const rows = await c.query<{ stream_id: string; version: number; event_id: string; type: string; metadata: string | null; causation_id: string | null; recorded_at: string }>(
        `SELECT stream_id, version, event_id, type, metadata, causation_id, recorded_at FROM herald_es_events WHERE correlation_id = $1 OR event_id = $1 ORDER BY position LIMIT $2`,
        [correlationId, limit],
      );
      for (const r of rows.rows) {
        messages.push(storedEventMessage({ eventId: r.event_id, type: r.type, streamId: r.stream_id, version: r.version, metadata: r.metadata, causationId: r.causation_id, recordedAt: Number(r.recorded_at) }));
      }
    }
    if (has('herald_dead_letters')) {
      const rows = await c.query<{ id: string; grp: string; handler: string; status: string; envelope: string; error_message: string; attempts: number; last_failed_at: string }>(
        `SELECT id, grp, handler, status, envelope, error_message, attempts, last_failed_at FROM herald_dead_letters
          WHERE envelope IS NOT NULL AND (event_id = $1 OR ${matches('envelope')}) ORDER BY id LIMIT $2`,
        [correlationId, limit],
      );
      for (const r of rows.rows) {
        const { message, handling } = deadLetterCausation({
          id: r.id,
          group: r.grp,
          handler: r.handler,
          status: r.status,
          envelope: r.envelope,
          error: r.error_message,
          attempts: r.attempts,
          lastFailedAt: Number(r.last_failed_at),
        });
        messages.push(message);
        handlings.push(handling);
      }
    }
    if (has('herald_inbox') && messages.length > 0) {
      const ids = [...new Set(messages.map((m) => m.id))];
      const duration = has('herald_inbox', 'duration_ms') ? 'duration_ms' : 'NULL::bigint AS duration_ms';
      const rows = await c.query<{ grp: string; handler: string; id: string; handled_at: string; duration_ms: string | null }>(
        `SELECT grp, handler, id, handled_at, ${duration} FROM herald_inbox WHERE id = ANY($1::text[]) ORDER BY handled_at LIMIT $2`,
        [ids, limit],
      );
      for (const r of rows.rows) {
        handlings.push(inboxHandling({ id: r.id, group: r.grp, handler: r.handler, handledAt: Number(r.handled_at), durationMs: r.duration_ms === null ? undefined : Number(r.duration_ms) }));
      }
    }
    return { messages, handlings };
  });
}

