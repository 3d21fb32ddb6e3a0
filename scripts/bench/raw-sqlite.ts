/**
 * The raw ceiling for the SQLite rows: better-sqlite3 directly, WAL, synchronous=NORMAL,
 * the same 256-byte JSON payloads (serialized inside the timed loop) inserted 1000 per
 * transaction through one prepared statement into a log-shaped table with a primary key.
 *
 * A rowid table by default: on this machine it inserted ~10 % faster than the WITHOUT ROWID
 * shape Herald's own log uses, so it is the higher (stricter) ceiling.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { keyFor, payload } from './common.ts';

export const RAW_PARTITIONS = 8;

/** Inserts `messages` rows, `perTxn` per transaction; resolves with the elapsed ms. */
export function rawInsertRun(messages: number, perTxn: number, withoutRowid = false): number {
  const dir = mkdtempSync(join(tmpdir(), 'herald-bench-raw-'));
  const db = new Database(join(dir, 'raw.db'));
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.exec(`CREATE TABLE log (
      topic TEXT NOT NULL,
      partition INTEGER NOT NULL,
      offset INTEGER NOT NULL,
      key TEXT,
      body TEXT NOT NULL,
      PRIMARY KEY (topic, partition, offset)
    )${withoutRowid ? ' WITHOUT ROWID' : ''}`);
    const insert = db.prepare('INSERT INTO log (topic, partition, offset, key, body) VALUES (?, ?, ?, ?, ?)');
    const next = new Array<number>(RAW_PARTITIONS).fill(0);
    const batch = db.transaction((from: number, to: number) => {
      for (let n = from; n < to; n++) {
        const p = n % RAW_PARTITIONS;
        insert.run('bench.raw', p, next[p]!++, keyFor(n) ?? null, JSON.stringify(payload(n)));
      }
    });
    const t0 = performance.now();
    for (let i = 0; i < messages; i += perTxn) batch(i, Math.min(messages, i + perTxn));
    const ms = performance.now() - t0;
    const count = (db.prepare('SELECT count(*) AS c FROM log').get() as { c: number }).c;
    if (count !== messages) throw new Error(`raw sqlite: ${count}/${messages} rows`);
    return ms;
  } finally {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
