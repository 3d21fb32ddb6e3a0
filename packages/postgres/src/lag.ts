/**
 * Consumer lag read from the PostgreSQL log: per (topic, group, partition) the head offset
 * (`herald_partitions.next_offset - 1`), the group's committed offset (`herald_offsets`), the
 * messages after it and when the oldest of them was appended (`herald_log.appended_at`, the
 * publishing process's clock at the group commit).
 *
 * ONE statement, one snapshot: a publish moves the counter row and inserts its records in one
 * transaction, so the head and the records read here agree. The oldest unhandled record is one
 * primary-key lookup per (group, partition) row (`offset > committed ORDER BY offset LIMIT 1`),
 * never a scan of the log; its count is `head - offset + 1` (offsets are dense; records a
 * retention cap deleted are not counted). A plain SELECT: no row lock, nothing written, so
 * consumers and publishers never wait for it. Every group registered in the schema (its first
 * `subscribe()`, from any process) is reported until `forgetGroup` removes it.
 *
 * Failures: the database's (`HERALD_ERR_STORAGE`, retryable; `HERALD_ERR_CLOSED` once closed).
 */
import { HeraldError, type PartitionLag } from '@herald/core';
import type { PgDatabase } from './database.ts';

export interface LagFilter {
  readonly group?: string;
  readonly topic?: string;
}

interface Row {
  topic: string;
  grp: string;
  partition: number;
  committed: string;
  head: string;
  first: string | null;
  appended_at: string | null;
}

/** Lag of every registered group, narrowed by `filter`; ordered by topic, group, partition. */
export async function readPostgresLag(database: PgDatabase, filter: LagFilter = {}): Promise<PartitionLag[]> {
  if (typeof filter !== 'object' || filter === null) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `lag filter must be an object (got ${String(filter)})`);
  for (const k of ['group', 'topic'] as const) {
    const v = filter[k];
    if (v !== undefined && typeof v !== 'string') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `lag filter ${k} must be a string (got ${typeof v})`);
  }
  const r = await database.query<Row>(
    `SELECT t.name AS topic, o.grp, o.partition, o.committed, coalesce(p.next_offset, 0) - 1 AS head, f."offset" AS first, f.appended_at
       FROM herald_offsets o
       JOIN herald_topics t ON t.id = o.topic_id
       LEFT JOIN herald_partitions p ON p.topic_id = o.topic_id AND p.partition = o.partition
       LEFT JOIN LATERAL (
         SELECT l."offset", l.appended_at FROM herald_log l
          WHERE l.topic_id = o.topic_id AND l.partition = o.partition AND l."offset" > o.committed
          ORDER BY l."offset" LIMIT 1
       ) f ON true
      WHERE ($1::text IS NULL OR o.grp = $1) AND ($2::text IS NULL OR t.name = $2)
      ORDER BY t.name, o.grp, o.partition`,
    [filter.group ?? null, filter.topic ?? null],
  );
  return r.rows.map((row) => {
    const first = row.first === null ? undefined : Number(row.first);
    return {
      topic: row.topic,
      group: row.grp,
      partition: row.partition,
      head: row.head,
      committed: row.committed,
      messages: first === undefined ? 0 : Math.max(0, Number(row.head) - first + 1),
      oldestUnhandledAt: first === undefined ? undefined : Number(row.appended_at),
    };
  });
}
