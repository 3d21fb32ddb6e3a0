/**
 * Appending to the SQLite transport's log, on whichever connection holds the write transaction:
 * the transport's own (the group commit of `publish`) or a unit of work's in direct mode
 * (`createSqliteUnitOfWork({ transport })`, where `tx.publish` appends inside the business
 * transaction). One `LogAppender` per connection; its statements are prepared on it.
 *
 * Offsets come from the per-partition counter row (`herald_partitions.next_offset`), read inside
 * the write transaction: SQLite has one writer per file, so whatever connection or process
 * appends, offsets increase in commit order and never repeat. Nothing here caches an offset
 * across transactions. The retention hard cap (`maxRecordsPerPartition`) is enforced in the same
 * transaction as the append.
 *
 * Every method runs inside a write transaction of the appender's connection; none is safe to call
 * outside one.
 */
import type { PublishReceipt } from '@herald/core';
import { planRetention, retentionDue } from '@herald/core/internal';
import type { Statement } from 'better-sqlite3';
import type { SqliteDatabase } from './database.ts';

/** The topic a batch goes to: its row id, name and partition count. */
export interface LogTopic {
  readonly id: number;
  readonly name: string;
  readonly partitions: number;
}

/** One publish call, validated and encoded: per message its partition, key and JSON body. */
export interface LogBatch<T extends LogTopic = LogTopic> {
  readonly topic: T;
  readonly partitions: Int32Array;
  readonly keys: readonly (string | null)[];
  readonly bodies: readonly string[];
}

export interface LogAppendResult<T extends LogTopic> {
  /** Per batch, its receipts in input order. */
  readonly receipts: PublishReceipt[][];
  /** Per touched topic, per partition the new next offset (-1: partition untouched). */
  readonly heads: Map<T, number[]>;
}

export class LogAppender {
  readonly #cap: number | undefined;
  readonly #s: {
    topicByName: Statement<[string], { id: number; partitions: number }>;
    insertTopic: Statement<[string, number, number]>;
    insertCounter: Statement<[number, number]>;
    nextOffset: Statement<[number, number], { next_offset: number }>;
    setNextOffset: Statement<[number, number, number]>;
    append: Statement<[number, number, number, string | null, number, string]>;
    firstOffset: Statement<[number, number], { offset: number }>;
    firstYoung: Statement<[number, number, number], { offset: number }>;
    groupsAt: Statement<[number, number], { grp: string; committed: number }>;
    countRange: Statement<[number, number, number, number], { n: number }>;
    deleteUpTo: Statement<[number, number, number]>;
    addDropped: Statement<[number, string, number]>;
  };

  /** `cap`: the transport's `retention.maxRecordsPerPartition` (undefined: no cap). */
  constructor(database: SqliteDatabase, cap: number | undefined) {
    this.#cap = cap;
    const db = database.db;
    this.#s = {
      topicByName: db.prepare(`SELECT id, partitions FROM herald_topics WHERE name = ?`),
      insertTopic: db.prepare(`INSERT OR IGNORE INTO herald_topics (name, partitions, created_at) VALUES (?, ?, ?)`),
      insertCounter: db.prepare(`INSERT OR IGNORE INTO herald_partitions (topic_id, partition, next_offset) VALUES (?, ?, 0)`),
      nextOffset: db.prepare(`SELECT next_offset FROM herald_partitions WHERE topic_id = ? AND partition = ?`),
      setNextOffset: db.prepare(`UPDATE herald_partitions SET next_offset = ? WHERE topic_id = ? AND partition = ?`),
      append: db.prepare(`INSERT INTO herald_log (topic_id, partition, offset, key, appended_at, envelope) VALUES (?, ?, ?, ?, ?, ?)`),
      firstOffset: db.prepare(`SELECT offset FROM herald_log WHERE topic_id = ? AND partition = ? ORDER BY offset LIMIT 1`),
      firstYoung: db.prepare(`SELECT offset FROM herald_log WHERE topic_id = ? AND partition = ? AND appended_at >= ? ORDER BY offset LIMIT 1`),
      groupsAt: db.prepare(`SELECT grp, committed FROM herald_offsets WHERE topic_id = ? AND partition = ?`),
      countRange: db.prepare(`SELECT count(*) AS n FROM herald_log WHERE topic_id = ? AND partition = ? AND offset > ? AND offset <= ?`),
      deleteUpTo: db.prepare(`DELETE FROM herald_log WHERE topic_id = ? AND partition = ? AND offset <= ?`),
      addDropped: db.prepare(
        `INSERT INTO herald_retention_dropped (topic_id, grp, dropped) VALUES (?, ?, ?)
         ON CONFLICT (topic_id, grp) DO UPDATE SET dropped = dropped + excluded.dropped`,
      ),
    };
  }

  /** The topic's row, created with `partitions` (and its counters) when missing; the stored count wins. */
  ensureTopic(name: string, partitions: number, now: number): { id: number; partitions: number } {
    const s = this.#s;
    const found = s.topicByName.get(name);
    if (found) return found;
    s.insertTopic.run(name, partitions, now);
    const r = s.topicByName.get(name)!;
    for (let p = 0; p < r.partitions; p++) s.insertCounter.run(r.id, p);
    return r;
  }

  /** Assigns offsets, appends every batch in order, advances the counters, enforces the hard cap. */
  append<T extends LogTopic>(batch: readonly LogBatch<T>[], now: number): LogAppendResult<T> {
    const s = this.#s;
    const heads = new Map<T, number[]>();
    const receipts: PublishReceipt[][] = new Array(batch.length);
    for (let b = 0; b < batch.length; b++) {
      const { topic: t, partitions, keys, bodies } = batch[b]!;
      let next = heads.get(t);
      if (!next) heads.set(t, (next = new Array<number>(t.partitions).fill(-1)));
      const out: PublishReceipt[] = new Array(bodies.length);
      for (let i = 0; i < bodies.length; i++) {
        const p = partitions[i]!;
        let offset = next[p]!;
        if (offset < 0) offset = s.nextOffset.get(t.id, p)?.next_offset ?? 0;
        s.append.run(t.id, p, offset, keys[i]!, now, bodies[i]!);
        next[p] = offset + 1;
        out[i] = { topic: t.name, partition: p, position: String(offset) };
      }
      receipts[b] = out;
    }
    for (const [t, next] of heads) {
      for (let p = 0; p < next.length; p++) {
        if (next[p]! < 0) continue;
        s.setNextOffset.run(next[p]!, t.id, p);
        if (this.#cap !== undefined) this.trim(t.id, p, undefined, next[p]!);
      }
    }
    return { receipts, heads };
  }

  /**
   * Deletes what retention allows on one partition. Age: records appended before `cutoff`, never
   * past the slowest registered group. Cap: whatever exceeds `maxRecordsPerPartition`, counting
   * for each group the records it had not committed. Returns how many were deleted.
   */
  trim(topicId: number, p: number, cutoff: number | undefined, knownNext?: number): number {
    const s = this.#s;
    const first = s.firstOffset.get(topicId, p)?.offset;
    if (first === undefined) return 0;
    const next = knownNext ?? s.nextOffset.get(topicId, p)?.next_offset ?? 0;
    if (!retentionDue(first, next, cutoff !== undefined, this.#cap)) return 0;
    const young = cutoff === undefined ? undefined : (s.firstYoung.get(topicId, p, cutoff)?.offset ?? next);
    const { upTo, losses } = planRetention({ first, next, young, cap: this.#cap, groups: s.groupsAt.all(topicId, p) });
    for (const l of losses) {
      const lost = s.countRange.get(topicId, p, l.after, l.upTo)?.n ?? 0;
      if (lost > 0) s.addDropped.run(topicId, l.grp, lost);
    }
    if (upTo < first) return 0;
    return Number(s.deleteUpTo.run(topicId, p, upTo).changes);
  }
}
