/**
 * Consumer lag read from the SQLite log: per (topic, group, partition) the head offset, the
 * group's committed offset, the messages after it and when the oldest of them was appended.
 * One read transaction; groups appear once they registered (their first `subscribe()`).
 */
import type { PartitionLag } from '@herald/core';
import type { SqliteDatabase } from './database.ts';

interface Row {
  topic_id: number;
  topic: string;
  grp: string;
  partition: number;
  committed: number;
  next_offset: number;
}

export function readLag(database: SqliteDatabase, filter: { readonly group?: string; readonly topic?: string } = {}): PartitionLag[] {
  const rows = database.statement(
    `SELECT o.topic_id, t.name AS topic, o.grp, o.partition, o.committed, coalesce(p.next_offset, 0) AS next_offset
       FROM herald_offsets o
       JOIN herald_topics t ON t.id = o.topic_id
       LEFT JOIN herald_partitions p ON p.topic_id = o.topic_id AND p.partition = o.partition
      WHERE (@grp IS NULL OR o.grp = @grp) AND (@topic IS NULL OR t.name = @topic)
      ORDER BY t.name, o.grp, o.partition`,
  );
  const oldest = database.statement(`SELECT offset, appended_at FROM herald_log WHERE topic_id = ? AND partition = ? AND offset > ? ORDER BY offset LIMIT 1`);
  return database.read(() =>
    (rows.all({ grp: filter.group ?? null, topic: filter.topic ?? null }) as Row[]).map((r) => {
      const head = r.next_offset - 1;
      const first = oldest.get(r.topic_id, r.partition, r.committed) as { offset: number; appended_at: number } | undefined;
      return {
        topic: r.topic,
        group: r.grp,
        partition: r.partition,
        head: String(head),
        committed: String(r.committed),
        messages: first === undefined ? 0 : Math.max(0, head - first.offset + 1),
        oldestUnhandledAt: first?.appended_at,
      };
    }),
  );
}
