/**
 * Transport-level benchmark of the SQLite backend (no router), side by side with raw
 * better-sqlite3 in the same run:
 *
 *   node --import tsx packages/sqlite/src/transport.bench.ts [messages=200000] [runs=3]
 *
 * Payload: a CloudEvents envelope whose `data` is 256 bytes of JSON; 256 partition keys;
 * synchronous=NORMAL; envelopes are built before the clock starts (createEnvelope's cost is
 * core's, not the transport's). Rows, each the median of `runs`:
 * - raw: better-sqlite3, 1000 rows per transaction, JSON.stringify in the loop, one prepared INSERT
 * - publish: 64 concurrent publish() calls of 100 messages, no subscriber
 * - publish 1/call: 64 concurrent single-message publishers (group commit)
 * - consume: one subscription reading and acking a pre-filled topic
 * - end-to-end: publish (64 × 100 in flight) while one subscription in the same process acks
 */
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type CloudEvent, createEnvelope } from '@herald/core';
import Database from 'better-sqlite3';
import { createSqliteTransport, type SqliteTransport } from './transport.ts';

const N = Number(process.argv[2] ?? 200_000);
const RUNS = Number(process.argv[3] ?? 3);
const PAD = 'x'.repeat(256);
const keepAlive = setInterval(() => {}, 1000); // the transport's timers do not hold the process

function data(n: number): { n: number; pad: string } {
  return { n, pad: PAD.slice(0, 256 - JSON.stringify({ n, pad: '' }).length) };
}
const envelopes: CloudEvent[] = Array.from({ length: N }, (_, i) => createEnvelope({ type: 'bench.item', source: 'herald-bench', data: data(i) }));
const keyOf = (i: number): string => `k${i % 256}`;

let fileSeq = 0;
function tempPath(): { path: string; remove: () => void } {
  const path = join(tmpdir(), `herald-bench-${process.pid}-${++fileSeq}.db`);
  return { path, remove: () => ['', '-wal', '-shm'].forEach((s) => rmSync(path + s, { force: true })) };
}

function raw(): number {
  const { path, remove } = tempPath();
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec(`CREATE TABLE log (topic INTEGER, partition INTEGER, offset INTEGER, key TEXT, at INTEGER, body TEXT, PRIMARY KEY (topic, partition, offset)) WITHOUT ROWID`);
  const insert = db.prepare(`INSERT INTO log VALUES (?, ?, ?, ?, ?, ?)`);
  const next = new Array<number>(8).fill(0);
  const tx = db.transaction((from: number, to: number) => {
    const now = Date.now();
    for (let i = from; i < to; i++) insert.run(1, i % 8, next[i % 8]!++, keyOf(i), now, JSON.stringify(envelopes[i]));
  });
  const t0 = performance.now();
  for (let i = 0; i < N; i += 1000) tx.immediate(i, Math.min(N, i + 1000));
  const ms = performance.now() - t0;
  db.close();
  remove();
  return ms;
}

async function publishAll(t: SqliteTransport, topic: string, perCall: number, inFlight = 64): Promise<void> {
  const pending = new Set<Promise<unknown>>();
  for (let i = 0; i < N; i += perCall) {
    const msgs = [];
    for (let j = i; j < Math.min(N, i + perCall); j++) msgs.push({ envelope: envelopes[j]!, key: keyOf(j) });
    const p = t.publish(topic, msgs);
    pending.add(p);
    void p.then(() => pending.delete(p));
    if (pending.size >= inFlight) await Promise.race(pending);
  }
  await Promise.all(pending);
}

async function consume(t: SqliteTransport, topic: string): Promise<void> {
  const sub = t.subscribe(topic, { group: 'bench' });
  let n = 0;
  for await (const d of sub) {
    d.ack();
    if (++n === N) break;
  }
  await sub.close();
}

async function withTransport(fn: (t: SqliteTransport) => Promise<number>): Promise<number> {
  const { path, remove } = tempPath();
  const t = createSqliteTransport({ path, synchronous: 'NORMAL' });
  try {
    return await fn(t);
  } finally {
    await t.close();
    remove();
  }
}

const cases: Array<[string, () => Promise<number>]> = [
  ['better-sqlite3 raw insert, 1000/txn (peer)', async () => raw()],
  [
    'publish, 64 × 100 in flight',
    () =>
      withTransport(async (t) => {
        const t0 = performance.now();
        await publishAll(t, 'bench', 100);
        return performance.now() - t0;
      }),
  ],
  [
    'publish, 64 concurrent single-message calls',
    () =>
      withTransport(async (t) => {
        const t0 = performance.now();
        await publishAll(t, 'bench', 1);
        return performance.now() - t0;
      }),
  ],
  [
    'consume + ack (pre-filled)',
    () =>
      withTransport(async (t) => {
        await publishAll(t, 'bench', 1000);
        const t0 = performance.now();
        await consume(t, 'bench');
        return performance.now() - t0;
      }),
  ],
  [
    'end-to-end, one process (publish while consuming)',
    () =>
      withTransport(async (t) => {
        await t.ensureTopic('bench');
        const t0 = performance.now();
        const consumed = consume(t, 'bench');
        await publishAll(t, 'bench', 100);
        await consumed;
        return performance.now() - t0;
      }),
  ],
];

const rows: Array<[string, number]> = [];
for (const [name, run] of cases) {
  const times: number[] = [];
  for (let r = 0; r < RUNS; r++) times.push(await run());
  times.sort((a, b) => a - b);
  rows.push([name, Math.round((N / times[Math.floor(times.length / 2)]!) * 1000)]);
}
const peer = rows[0]![1];
console.log(`| case | msg/s | vs raw |\n|:--|--:|--:|`);
for (const [name, rate] of rows) console.log(`| ${name} | ${rate.toLocaleString('en-US')} | ${(rate / peer).toFixed(3)} |`);
console.log(`\n${N.toLocaleString('en-US')} messages, median of ${RUNS}; envelope ${JSON.stringify(envelopes[0]).length} bytes encoded (data 256 B).`);
clearInterval(keepAlive);
