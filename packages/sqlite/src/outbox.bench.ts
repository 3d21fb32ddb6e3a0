/**
 * Outbox and inbox benchmark of the SQLite backend, side by side in the same run with direct
 * publishing to the SQLite transport:
 *
 *   node --import tsx packages/sqlite/src/outbox.bench.ts [messages=50000] [runs=3]
 *   (or `runBench({ messages, log })` from `npm run bench -- --only outbox`)
 *
 * Every message is a CloudEvents envelope with 256 bytes of JSON data and one of 256 partition
 * keys; envelopes are built before the clock starts (createEnvelope is core's cost), encoding
 * is included everywhere. synchronous=NORMAL, one fresh database file per run, one process.
 * Each row is the median of `runs` runs; the rows are interleaved run by run.
 *
 * Rows (rate = messages/s):
 * - direct publish: 64 concurrent callers, each awaiting one single-message `transport.publish`
 *   at a time (the transport group-commits them) — the peer of the outbox rows;
 * - outbox end to end: 64 concurrent callers, each awaiting one `uow.withTransaction` that
 *   inserts a business row and `tx.publish`es one message (group-committed, a savepoint each),
 *   while an outbox relay (core `createOutboxRelay`, defaults: batches of 256, 8 publishes in
 *   flight, 8 outbox partitions) publishes to the SQLite transport on the same file; the clock
 *   stops when the transport has stored every message. Goal: ≥ 50 % of direct publish;
 * - end to end, direct to the log: the same transactions on a unit of work in direct mode
 *   (`createSqliteUnitOfWork({ path, transport })`, the transport on the same file): `tx.publish`
 *   appends to the transport's log in the transaction, no outbox row, no relay; a message is in
 *   the transport once its transaction resolved, so the clock stops with the last caller (and
 *   the log is counted to check);
 * - outbox write side only: the same transactions with no relay running (where the time goes);
 * - consume: a consumer (`createConsumer`, concurrency 64) handling a pre-filled topic with a
 *   handler that does nothing; that writes a business row (keyed by the event id) through
 *   `uow.withTransaction`; and that writes it through `ctx.transaction` (the inbox: record +
 *   row in one transaction, group-committed). Differences of the per-message times: the inbox
 *   alone, and transaction + inbox.
 *
 * Every run also logs this process's CPU per message, and the rows carry its median
 * (`cpuMicros`): on a shared machine the rates swing with other processes' load, the CPU much
 * less. Analysis knob: OUTBOX_BENCH_PARTITIONS (outbox partitions, default 8); OUTBOX_BENCH_ONLY
 * = publish | consume when run directly.
 */
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type CloudEvent, createConsumer, createEnvelope, createOutboxRelay } from '@herald/core';
import { openDatabase } from './database.ts';
import { SqliteDeadLetterStore } from './dead-letter-store.ts';
import { SqliteLeaseStore } from './lease-store.ts';
import { createSqliteOutboxStore } from './outbox-store.ts';
import { createSqliteTransport } from './transport.ts';
import { createSqliteUnitOfWork } from './unit-of-work.ts';

export interface BenchRow {
  case: string;
  messages: number;
  rate: number;
  p50?: number;
  p99?: number;
  peer?: string;
  ratio?: number;
  /** This process's CPU time per message (user + system, setup included), median of the runs, µs. */
  cpuMicros?: number;
}

export interface BenchOptions {
  /** Messages per row (default 50 000). */
  messages: number;
  log: (line: string) => void;
  /** Concurrent callers (default 64). */
  concurrency?: number;
  /** Runs per row, interleaved; rows show the median (default 3). */
  runs?: number;
  /** Analysis: only the publish rows or only the consume rows. */
  only?: 'publish' | 'consume';
}

const PAYLOAD_BYTES = 256;
const PAD = 'x'.repeat(PAYLOAD_BYTES);
const KEYS = 256;
const TOPIC = 'bench.outbox';

export const DIRECT = 'direct publish, 64 concurrent single-message callers';
export const OUTBOX_E2E = 'end to end: business row + outbox row per transaction × 64 callers, relayed to the transport';
export const OUTBOX_DIRECT_LOG = 'end to end, direct to the log (same file): business row + message per transaction × 64 callers, no relay';
export const OUTBOX_WRITE = 'write side only: business row + outbox row per transaction × 64 callers, no relay';
export const CONSUME_PLAIN = 'consume, handler does nothing (concurrency 64)';
export const CONSUME_TX = 'consume, handler writes a row through uow.withTransaction (no inbox)';
export const CONSUME_INBOX = 'consume, handler writes a row through ctx.transaction (inbox)';

function envelopes(n: number): CloudEvent[] {
  return Array.from({ length: n }, (_, i) => {
    const fixed = JSON.stringify({ n: i, pad: '' }).length;
    return createEnvelope({ type: 'bench.item', source: 'herald-bench', data: { n: i, pad: PAD.slice(0, PAYLOAD_BYTES - fixed) }, partitionkey: `k${i % KEYS}` });
  });
}

let fileSeq = 0;
function tempFile(label: string): { path: string; remove: () => void } {
  const path = join(tmpdir(), `herald-outbox-bench-${process.pid}-${++fileSeq}-${label}.db`);
  return { path, remove: () => ['', '-wal', '-shm', '-journal'].forEach((s) => rmSync(path + s, { force: true })) };
}

/** Runs `concurrency` loops over 0..n-1, each awaiting `fn(i)` one at a time. */
async function callers(n: number, concurrency: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  const loop = async (): Promise<void> => {
    for (let i = next++; i < n; i = next++) await fn(i);
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
}

async function until(cond: () => boolean, what: string, timeoutMs = 300_000): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`outbox bench: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

async function direct(envs: readonly CloudEvent[], concurrency: number): Promise<number> {
  const f = tempFile('direct');
  const transport = createSqliteTransport({ path: f.path, synchronous: 'NORMAL' });
  try {
    await transport.ensureTopic(TOPIC);
    const t0 = performance.now();
    await callers(envs.length, concurrency, (i) => transport.publish(TOPIC, [{ envelope: envs[i]! }]));
    return performance.now() - t0;
  } finally {
    await transport.close();
    f.remove();
  }
}

async function outbox(envs: readonly CloudEvent[], concurrency: number, relayed: boolean): Promise<number> {
  const f = tempFile(relayed ? 'outbox' : 'write');
  const database = openDatabase({ path: f.path, synchronous: 'NORMAL' });
  const transport = createSqliteTransport({ database });
  const leases = new SqliteLeaseStore({ database });
  // Analysis knob: OUTBOX_BENCH_PARTITIONS (default 8, the unit of work's default).
  const uow = createSqliteUnitOfWork({ path: f.path, synchronous: 'NORMAL', outboxPartitions: Number(process.env.OUTBOX_BENCH_PARTITIONS ?? 8) });
  uow.database.db.exec('CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, total INTEGER NOT NULL)');
  const insert = uow.database.db.prepare('INSERT INTO orders (id, customer, total) VALUES (?, ?, ?)');
  const store = createSqliteOutboxStore({ database });
  const relay = createOutboxRelay({ store, transport, leases, name: 'bench', pollMs: 50 });
  try {
    await transport.ensureTopic(TOPIC);
    if (relayed) await relay.start();
    const t0 = performance.now();
    await callers(envs.length, concurrency, (i) =>
      uow.withTransaction((tx) => {
        insert.run(i, `c${i % KEYS}`, i);
        tx.publish(TOPIC, { envelope: envs[i]! });
      }),
    );
    if (relayed) await until(() => transport.stats().publishedMessages >= envs.length, `the relay to publish ${envs.length} messages`);
    return performance.now() - t0;
  } finally {
    await relay.close();
    await uow.close();
    await transport.close();
    await store.close();
    await leases.close();
    database.close();
    f.remove();
  }
}

async function directToLog(envs: readonly CloudEvent[], concurrency: number): Promise<number> {
  const f = tempFile('direct-log');
  const transport = createSqliteTransport({ path: f.path, synchronous: 'NORMAL' });
  const uow = createSqliteUnitOfWork({ path: f.path, synchronous: 'NORMAL', transport });
  uow.database.db.exec('CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, total INTEGER NOT NULL)');
  const insert = uow.database.db.prepare('INSERT INTO orders (id, customer, total) VALUES (?, ?, ?)');
  try {
    await transport.ensureTopic(TOPIC);
    const t0 = performance.now();
    await callers(envs.length, concurrency, (i) =>
      uow.withTransaction((tx) => {
        insert.run(i, `c${i % KEYS}`, i);
        tx.publish(TOPIC, { envelope: envs[i]! });
      }),
    );
    const ms = performance.now() - t0;
    const stored = transport.database.db.prepare('SELECT count(*) FROM herald_log').pluck().get();
    if (stored !== envs.length) throw new Error(`outbox bench: direct mode stored ${String(stored)} of ${envs.length} messages`);
    return ms;
  } finally {
    await uow.close();
    await transport.close();
    f.remove();
  }
}

async function consume(envs: readonly CloudEvent[], mode: 'plain' | 'tx' | 'inbox'): Promise<number> {
  const f = tempFile(mode);
  const transport = createSqliteTransport({ path: f.path, synchronous: 'NORMAL' });
  const deadLetters = new SqliteDeadLetterStore({ database: transport.database });
  const uow = createSqliteUnitOfWork({ path: f.path, synchronous: 'NORMAL' });
  uow.database.db.exec('CREATE TABLE handled (id TEXT PRIMARY KEY, n INTEGER NOT NULL)');
  const insert = uow.database.db.prepare('INSERT INTO handled (id, n) VALUES (?, ?)');
  try {
    for (let i = 0; i < envs.length; i += 1000) await transport.publish(TOPIC, envs.slice(i, i + 1000).map((envelope) => ({ envelope })));
    let handled = 0;
    const consumer = createConsumer({ transport, group: 'bench', deadLetters, unitOfWork: uow, concurrency: 64 });
    consumer.handleEnvelope(TOPIC, '*', async (env, ctx) => {
      const write = (): unknown => insert.run(env.id, (env.data as { n: number }).n);
      if (mode === 'inbox') await ctx.transaction(write);
      else if (mode === 'tx') await uow.withTransaction(write);
      handled++;
    });
    const t0 = performance.now();
    await consumer.start();
    await until(() => handled >= envs.length, `the consumer to handle ${envs.length} messages`);
    const ms = performance.now() - t0;
    await consumer.close({ timeoutMs: 5000 });
    return ms;
  } finally {
    await uow.close();
    await deadLetters.close();
    await transport.close();
    f.remove();
  }
}

export async function runBench(options: BenchOptions): Promise<BenchRow[]> {
  const n = Math.max(1, options.messages);
  const concurrency = options.concurrency ?? 64;
  const runs = Math.max(1, options.runs ?? 3);
  const only = options.only;
  const envs = envelopes(n);
  const cases: Array<[string, () => Promise<number>, string | undefined]> = [];
  if (!only || only === 'publish') {
    cases.push([DIRECT, () => direct(envs, concurrency), undefined]);
    cases.push([OUTBOX_E2E, () => outbox(envs, concurrency, true), DIRECT]);
    cases.push([OUTBOX_DIRECT_LOG, () => directToLog(envs, concurrency), DIRECT]);
    cases.push([OUTBOX_WRITE, () => outbox(envs, concurrency, false), DIRECT]);
  }
  if (!only || only === 'consume') {
    cases.push([CONSUME_PLAIN, () => consume(envs, 'plain'), undefined]);
    cases.push([CONSUME_TX, () => consume(envs, 'tx'), CONSUME_PLAIN]);
    cases.push([CONSUME_INBOX, () => consume(envs, 'inbox'), CONSUME_TX]);
  }
  // Interleaved (every case once per run), so drift in the machine's load hits every row alike.
  const times = new Map<string, number[]>(cases.map(([c]) => [c, []]));
  const cpus = new Map<string, number[]>(cases.map(([c]) => [c, []]));
  for (let r = 0; r < runs; r++) {
    for (const [c, fn] of cases) {
      const cpu0 = process.cpuUsage();
      const ms = await fn();
      const cpu = process.cpuUsage(cpu0);
      times.get(c)!.push(ms);
      cpus.get(c)!.push((cpu.user + cpu.system) / n);
      // CPU of this process per message (setup included): less sensitive than the rate to other processes' load.
      options.log(`${c} — run ${r + 1}/${runs}: ${Math.round((n * 1000) / ms).toLocaleString('en-US')} msg/s, ${((cpu.user + cpu.system) / n).toFixed(1)} µs CPU/message`);
    }
  }
  const rows: BenchRow[] = [];
  for (const [c, , peer] of cases) {
    const mid = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const rate = (n * 1000) / mid(times.get(c)!);
    const p = peer === undefined ? undefined : rows.find((x) => x.case === peer);
    rows.push({ case: c, messages: n, rate, ...(p ? { peer: p.case, ratio: rate / p.rate } : {}), cpuMicros: mid(cpus.get(c)!) });
  }
  return rows;
}

/**
 * Per-message overheads, µs: of the inbox alone (ctx.transaction minus the same write through
 * uow.withTransaction) and of the whole transaction with the inbox (minus a handler doing nothing).
 */
export function inboxOverheadMicros(rows: readonly BenchRow[]): { inbox: number; transactionAndInbox: number } | undefined {
  const us = (c: string): number | undefined => {
    const r = rows.find((x) => x.case === c);
    return r ? 1e6 / r.rate : undefined;
  };
  const plain = us(CONSUME_PLAIN);
  const tx = us(CONSUME_TX);
  const inbox = us(CONSUME_INBOX);
  return plain === undefined || tx === undefined || inbox === undefined ? undefined : { inbox: inbox - tx, transactionAndInbox: inbox - plain };
}

/** The rows' CPU per message, for the section note: less sensitive than rates to other processes' load. */
export function cpuSummary(rows: readonly BenchRow[]): string {
  const cpu = (c: string): number | undefined => rows.find((r) => r.case === c)?.cpuMicros;
  const parts: string[] = [];
  const d = cpu(DIRECT);
  const e = cpu(OUTBOX_E2E);
  const w = cpu(OUTBOX_WRITE);
  const l = cpu(OUTBOX_DIRECT_LOG);
  if (d !== undefined && e !== undefined) parts.push(`CPU µs/message: direct ${d.toFixed(1)}, end to end ${e.toFixed(1)}${w !== undefined ? `, write side ${w.toFixed(1)}` : ''} (direct ÷ end to end = ${((d / e) * 100).toFixed(1)} %)`);
  if (d !== undefined && l !== undefined) parts.push(`direct to the log ${l.toFixed(1)} µs/message (direct ÷ direct to the log = ${((d / l) * 100).toFixed(1)} %)`);
  const [p, t, i] = [cpu(CONSUME_PLAIN), cpu(CONSUME_TX), cpu(CONSUME_INBOX)];
  if (p !== undefined && t !== undefined && i !== undefined) parts.push(`consume CPU µs/message: plain ${p.toFixed(1)}, uow.withTransaction ${t.toFixed(1)}, ctx.transaction ${i.toFixed(1)}`);
  return parts.join('; ');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const keepAlive = setInterval(() => {}, 1000);
  const only = process.env.OUTBOX_BENCH_ONLY as 'publish' | 'consume' | undefined;
  const rows = await runBench({ messages: Number(process.argv[2] ?? 50_000), runs: Number(process.argv[3] ?? 3), log: (l) => process.stderr.write(`${l}\n`), ...(only ? { only } : {}) });
  console.log('| case | msg/s | vs |\n|:--|--:|--:|');
  for (const r of rows) console.log(`| ${r.case} | ${Math.round(r.rate).toLocaleString('en-US')} | ${r.ratio === undefined ? '' : `${(r.ratio * 100).toFixed(1)} %`} |`);
  const o = inboxOverheadMicros(rows);
  console.log(`\n${cpuSummary(rows)}`);
  if (o !== undefined) console.log(`inbox overhead: ${o.inbox.toFixed(1)} µs/message (transaction + inbox: ${o.transactionAndInbox.toFixed(1)} µs/message)`);
  clearInterval(keepAlive);
}
