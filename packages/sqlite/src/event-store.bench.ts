/**
 * Event-store benchmark of the SQLite backend, side by side in the same run with raw
 * better-sqlite3 inserting/reading the same rows and with `@event-driven-io/emmett-sqlite`
 * 0.38.5 doing the same work.
 *
 *   node --import tsx packages/sqlite/src/event-store.bench.ts [events=50000]
 *   (or `runBench({ events, log })` from `npm run bench`)
 *
 * Every event carries 256 bytes of JSON data (`{"n":…,"pad":"xx…"}`), serialization included
 * in every row. Appends: 64 concurrent callers, each appending to its own streams (a new stream
 * every 50 events) with the exact expected version it holds — optimistic concurrency as a
 * command handler does it. synchronous=NORMAL everywhere (Emmett's sqlite3 connection: its
 * defaults, WAL).
 *
 * Rows (rate = events/s; ratio = rate / the peer row's rate):
 * - raw better-sqlite3, table (position INTEGER PRIMARY KEY, stream, version, data) with a
 *   UNIQUE (stream, version) index, the same rows: one commit per row, and 1000-row transactions;
 * - Herald append, 1 event per append × 64 callers (group commit), 100 events per append × 64
 *   callers, and 1 event per append from 1 caller (to compare with Emmett's single caller);
 * - Emmett append, 1 and 100 events per append, ONE caller: Emmett 0.38.5's SQLite store shares
 *   one sqlite3 handle between concurrent operations and closes it after each one, so 64
 *   concurrent callers fail with SQLITE_MISUSE ("Database handle is closed") / SQLITE_BUSY and
 *   then hang (checked on this machine) — its rows are single-caller, on fewer events;
 * - replay: read every event in global order and parse its JSON — Herald `readAll` pages of
 *   10 000, raw `SELECT … ORDER BY position` + `JSON.parse`, Emmett `readMessagesBatch`;
 * - projection catch-up: an async projection from position 0 counting events per stream into a
 *   table (Herald), Emmett's consumer with one processor from BEGINNING doing the same count;
 * - rebuild: `BENCH_REBUILD_EVENTS` (default 1 000 000) events appended (100 per append), then
 *   an async projection rebuilt from 0 into its shadow table and swapped, a progress bar on
 *   stderr.
 */
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { RecordedEvent } from '@herald/eventsourcing';
import { createSqliteEventStore, type SqliteEventStore } from './event-store.ts';
import { createSqliteProjection } from './projections.ts';

export interface BenchRow {
  case: string;
  messages: number;
  rate: number;
  p50?: number;
  p99?: number;
  peer?: string;
  ratio?: number;
}

export interface BenchOptions {
  /** Events per Herald row (default 50 000). */
  events: number;
  log: (line: string) => void;
}

const PAYLOAD_BYTES = 256;
const PAD = 'x'.repeat(PAYLOAD_BYTES);
const CALLERS = 64;
const STREAM_LENGTH = 50;

/** `{"n":…,"pad":"…"}`, exactly 256 bytes of JSON. */
function payload(n: number): { n: number; pad: string } {
  const fixed = JSON.stringify({ n, pad: '' }).length;
  return { n, pad: PAD.slice(0, PAYLOAD_BYTES - fixed) };
}

let fileSeq = 0;
function tempFile(label: string): { path: string; remove: () => void } {
  const path = join(tmpdir(), `herald-es-bench-${process.pid}-${++fileSeq}-${label}.db`);
  return { path, remove: () => ['', '-wal', '-shm', '-journal'].forEach((s) => rmSync(path + s, { force: true })) };
}

/** The rows of an append run: event i goes to caller i % 64, which opens a new stream every 50 events. */
function rowOf(i: number, perAppend: number): { caller: number; stream: string; version: number } {
  const caller = Math.floor(i / perAppend) % CALLERS;
  const seq = Math.floor(Math.floor(i / perAppend) / CALLERS) * perAppend + (i % perAppend);
  const streamLength = Math.max(STREAM_LENGTH, perAppend);
  return { caller, stream: `bench-c${caller}-${Math.floor(seq / streamLength)}`, version: (seq % streamLength) + 1 };
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function round(x: number): number {
  return Math.round(x);
}

function raw(n: number, perTxn: number, perAppend: number): number {
  const { path, remove } = tempFile('raw');
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec('CREATE TABLE events (position INTEGER PRIMARY KEY, stream TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL); CREATE UNIQUE INDEX events_stream ON events (stream, version);');
  const insert = db.prepare('INSERT INTO events (stream, version, data) VALUES (?, ?, ?)');
  const tx = db.transaction((from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const r = rowOf(i, perAppend);
      insert.run(r.stream, r.version, JSON.stringify(payload(i)));
    }
  });
  const t0 = performance.now();
  for (let i = 0; i < n; i += perTxn) tx.immediate(i, Math.min(n, i + perTxn));
  const ms = performance.now() - t0;
  db.close();
  remove();
  return (n * 1000) / ms;
}

function rawReplay(n: number): number {
  const { path, remove } = tempFile('raw-read');
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec('CREATE TABLE events (position INTEGER PRIMARY KEY, stream TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL); CREATE UNIQUE INDEX events_stream ON events (stream, version);');
  const insert = db.prepare('INSERT INTO events (stream, version, data) VALUES (?, ?, ?)');
  db.transaction(() => {
    for (let i = 0; i < n; i++) {
      const r = rowOf(i, 100);
      insert.run(r.stream, r.version, JSON.stringify(payload(i)));
    }
  })();
  const page = db.prepare('SELECT position, stream, version, data FROM events WHERE position > ? ORDER BY position LIMIT 10000').raw(true);
  const t0 = performance.now();
  let after = 0;
  let count = 0;
  for (;;) {
    const rows = page.all(after) as Array<[number, string, number, string]>;
    for (const r of rows) {
      const e = { position: BigInt(r[0]), stream: r[1], version: r[2], data: JSON.parse(r[3]) as unknown };
      if (e.version < 0) throw new Error('unreachable');
      count++;
    }
    if (rows.length < 10_000) break;
    after = rows[rows.length - 1]![0];
  }
  const ms = performance.now() - t0;
  db.close();
  remove();
  if (count !== n) throw new Error(`raw replay read ${count} of ${n}`);
  return (n * 1000) / ms;
}

/** n events appended by `callers` concurrent callers, `perAppend` per call, each with its exact expected version. */
async function heraldAppend(store: SqliteEventStore, n: number, perAppend: number, callers: number): Promise<{ rate: number; latencies: number[] }> {
  const latencies: number[] = [];
  const versions = new Map<string, number>();
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: callers }, async () => {
      for (;;) {
        const start = next;
        if (start >= n) return;
        next += perAppend;
        const end = Math.min(n, start + perAppend);
        const { stream } = rowOf(start, perAppend);
        const events = [];
        for (let i = start; i < end; i++) events.push({ type: 'bench.item', data: payload(i) });
        const expectedVersion = versions.get(stream) ?? 0;
        const a = performance.now();
        const r = await store.appendToStream(stream, events, { expectedVersion });
        latencies.push(performance.now() - a);
        versions.set(stream, r.streamVersion);
      }
    }),
  );
  const ms = performance.now() - t0;
  latencies.sort((a, b) => a - b);
  return { rate: (n * 1000) / ms, latencies };
}

async function heraldReplay(store: SqliteEventStore, n: number): Promise<number> {
  const t0 = performance.now();
  let after = 0n;
  let count = 0;
  for (;;) {
    const page = await store.readAll({ after, maxCount: 10_000 });
    count += page.events.length;
    after = page.position;
    if (page.isEnd) break;
  }
  const ms = performance.now() - t0;
  if (count !== n) throw new Error(`Herald replay read ${count} of ${n}`);
  return (n * 1000) / ms;
}

function countingProjection(name: string): Parameters<typeof createSqliteProjection>[1] {
  const table = `bench_${name.replace(/[^A-Za-z0-9_]/g, '_')}`;
  return {
    name,
    tables: { [table]: `CREATE TABLE {${table}} (stream_id TEXT PRIMARY KEY, events INTEGER NOT NULL, last_n INTEGER NOT NULL)` },
    handle(events: readonly RecordedEvent[], ctx) {
      const up = ctx.statement(`INSERT INTO {${table}} (stream_id, events, last_n) VALUES (?, 1, ?) ON CONFLICT (stream_id) DO UPDATE SET events = events + 1, last_n = excluded.last_n`);
      for (const e of events) up.run(e.streamId, (e.data as { n: number }).n);
    },
  };
}

async function heraldCatchUp(store: SqliteEventStore, n: number): Promise<number> {
  const t0 = performance.now();
  const p = createSqliteProjection(store, countingProjection('catchup'), { mode: 'async', batchSize: 2000 });
  await p.waitForPosition(await store.headPosition(), { timeoutMs: 600_000 });
  const ms = performance.now() - t0;
  await p.close();
  return (n * 1000) / ms;
}

// ------------------------------------------------------------------------------------------ Emmett

type EmmettModule = typeof import('@event-driven-io/emmett-sqlite');

async function loadEmmett(): Promise<EmmettModule | string> {
  try {
    return await import('@event-driven-io/emmett-sqlite');
  } catch (e) {
    return `@event-driven-io/emmett-sqlite could not be loaded: ${(e as Error).message}`;
  }
}

async function emmettAppend(emmett: EmmettModule, path: string, n: number, perAppend: number): Promise<{ rate: number; latencies: number[] }> {
  const es = emmett.getSQLiteEventStore({ fileName: path, schema: { autoMigration: 'CreateOrUpdate' } });
  await es.appendToStream('warmup-1', [{ type: 'bench.item', data: payload(0) }]);
  const versions = new Map<string, bigint>();
  const latencies: number[] = [];
  const t0 = performance.now();
  for (let start = 0; start < n; start += perAppend) {
    const end = Math.min(n, start + perAppend);
    const { stream } = rowOf(start, perAppend);
    const events = [];
    for (let i = start; i < end; i++) events.push({ type: 'bench.item', data: payload(i) });
    const a = performance.now();
    const r = await es.appendToStream(stream, events, { expectedStreamVersion: versions.get(stream) ?? 0n });
    latencies.push(performance.now() - a);
    versions.set(stream, r.nextExpectedStreamVersion);
  }
  const ms = performance.now() - t0;
  latencies.sort((a, b) => a - b);
  return { rate: (n * 1000) / ms, latencies };
}

async function emmettReplay(emmett: EmmettModule, path: string, n: number): Promise<number> {
  const c = emmett.sqliteConnection({ fileName: path });
  try {
    const t0 = performance.now();
    let after = 0n;
    let count = 0;
    for (;;) {
      const r = await emmett.readMessagesBatch(c, { after, batchSize: 10_000 });
      count += r.messages.length;
      if (r.messages.length === 0) break;
      after = r.messages[r.messages.length - 1]!.metadata.globalPosition;
      if (!r.areEventsLeft) break;
    }
    const ms = performance.now() - t0;
    if (count < n) throw new Error(`Emmett replay read ${count} of ${n}`);
    return (count * 1000) / ms;
  } finally {
    c.close();
  }
}

async function emmettCatchUp(emmett: EmmettModule, path: string, n: number): Promise<number> {
  const es = emmett.getSQLiteEventStore({ fileName: path, schema: { autoMigration: 'CreateOrUpdate' } });
  const counts = new Map<string, number>();
  let handled = 0;
  const consumer = es.consumer({ pulling: { batchSize: 2000, pullingFrequencyInMs: 5 } });
  consumer.processor({
    processorId: 'bench-catchup',
    startFrom: 'BEGINNING',
    eachMessage: (e) => {
      counts.set(e.metadata.streamName, (counts.get(e.metadata.streamName) ?? 0) + 1);
      handled++;
    },
  });
  const t0 = performance.now();
  void consumer.start().catch(() => {});
  const deadline = t0 + 120_000;
  while (handled < n && performance.now() < deadline) await new Promise((r) => setTimeout(r, 2));
  const ms = performance.now() - t0;
  await consumer.stop().catch(() => {});
  await consumer.close().catch(() => {});
  if (handled < n) throw new Error(`Emmett's consumer handled ${handled} of ${n} within 120 s`);
  return (n * 1000) / ms;
}

// ------------------------------------------------------------------------------------------ rebuild

function progressBar(label: string): { update(done: number, total: number, rate: number): void; end(): void } {
  const tty = process.stderr.isTTY === true;
  let lastLine = 0;
  return {
    update(done, total, rate) {
      const pct = total > 0 ? done / total : 1;
      const width = 30;
      const filled = Math.round(pct * width);
      const line = `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(pct * 100).toFixed(0).padStart(3)}% ${done.toLocaleString('en-US')}/${total.toLocaleString('en-US')} events, ${Math.round(rate).toLocaleString('en-US')} ev/s`;
      if (tty) process.stderr.write(`\r${line}`);
      else if (performance.now() - lastLine > 2000 || done >= total) {
        lastLine = performance.now();
        process.stderr.write(`${line}\n`);
      }
    },
    end() {
      if (tty) process.stderr.write('\n');
    },
  };
}

async function rebuild(events: number, log: (line: string) => void): Promise<{ appendRate: number; rebuildRate: number; ms: number }> {
  const { path, remove } = tempFile('rebuild');
  const store = createSqliteEventStore({ path });
  try {
    log(`rebuild: appending ${events.toLocaleString('en-US')} events (100 per append, 64 callers)…`);
    const fill = await heraldAppend(store, events, 100, CALLERS);
    const p = createSqliteProjection(store, countingProjection('rebuilt'), { mode: 'async', batchSize: 5000 });
    await p.waitForPosition(await store.headPosition(), { timeoutMs: 600_000 });
    const bar = progressBar('rebuild');
    const t0 = performance.now();
    const result = await p.rebuild({
      batchSize: 5000,
      onProgress: (x) => bar.update(x.events, events, (x.events * 1000) / Math.max(1, performance.now() - t0)),
    });
    const ms = performance.now() - t0;
    bar.update(result.events, events, (result.events * 1000) / ms);
    bar.end();
    await p.close();
    if (result.events !== events) throw new Error(`the rebuild applied ${result.events} of ${events} events`);
    return { appendRate: fill.rate, rebuildRate: (events * 1000) / ms, ms };
  } finally {
    await store.close();
    remove();
  }
}

// ------------------------------------------------------------------------------------------ main

export async function runBench(options: BenchOptions): Promise<BenchRow[]> {
  const n = Math.max(1000, Math.floor(options.events));
  const log = options.log;
  const rows: BenchRow[] = [];
  const keepAlive = setInterval(() => {}, 1000);
  try {
    const RAW1 = 'raw better-sqlite3 insert, 1 row per commit (peer)';
    const RAWB = 'raw better-sqlite3 insert, 1000 rows per transaction (peer)';
    const H1 = 'herald append, 1 event/append, 64 concurrent callers';
    const H100 = 'herald append, 100 events/append, 64 concurrent callers';
    const H1S = 'herald append, 1 event/append, 1 caller';
    const HR = 'herald replay: readAll pages of 10 000 + JSON parse';
    const RAWR = 'raw better-sqlite3 select + JSON.parse, same rows (peer)';
    const HP = 'herald async projection catch-up from 0 (SQLite table)';

    log(`event store bench: ${n.toLocaleString('en-US')} events of ${PAYLOAD_BYTES} B JSON`);
    const raw1N = Math.min(n, 20_000);
    rows.push({ case: RAW1, messages: raw1N, rate: round(raw(raw1N, 1, 1)) });
    log(`  ${RAW1}: ${rows.at(-1)!.rate}/s`);
    const rawBatched = raw(n, 1000, 1);
    rows.push({ case: RAWB, messages: n, rate: round(rawBatched) });
    log(`  ${RAWB}: ${rows.at(-1)!.rate}/s`);

    // Herald, 1 event per append, 64 callers.
    {
      const { path, remove } = tempFile('h1');
      const store = createSqliteEventStore({ path });
      const r = await heraldAppend(store, n, 1, CALLERS);
      const txns = store.stats.appendTransactions;
      await store.close();
      remove();
      rows.push({ case: H1, messages: n, rate: round(r.rate), p50: percentile(r.latencies, 50), p99: percentile(r.latencies, 99), peer: RAWB, ratio: r.rate / rawBatched });
      log(`  ${H1}: ${round(r.rate)}/s (${(n / txns).toFixed(1)} appends per transaction), ${(r.rate / rawBatched).toFixed(2)} × raw batched`);
    }
    // Herald, 100 events per append, 64 callers; the same store then serves replay and catch-up.
    const { path: hPath, remove: hRemove } = tempFile('h100');
    const store = createSqliteEventStore({ path: hPath });
    let heraldReplayRate = 0;
    let heraldCatchUpRate = 0;
    let h100Rate = 0;
    try {
      const r = await heraldAppend(store, n, 100, CALLERS);
      h100Rate = r.rate;
      rows.push({ case: H100, messages: n, rate: round(r.rate), p50: percentile(r.latencies, 50), p99: percentile(r.latencies, 99), peer: RAWB, ratio: r.rate / rawBatched });
      log(`  ${H100}: ${round(r.rate)}/s, ${(r.rate / rawBatched).toFixed(2)} × raw batched`);
      heraldReplayRate = await heraldReplay(store, n);
      const rawReplayRate = rawReplay(n);
      rows.push({ case: RAWR, messages: n, rate: round(rawReplayRate) });
      rows.push({ case: HR, messages: n, rate: round(heraldReplayRate), peer: RAWR, ratio: heraldReplayRate / rawReplayRate });
      log(`  ${HR}: ${round(heraldReplayRate)}/s (raw ${round(rawReplayRate)}/s)`);
      heraldCatchUpRate = await heraldCatchUp(store, n);
      rows.push({ case: HP, messages: n, rate: round(heraldCatchUpRate) });
      log(`  ${HP}: ${round(heraldCatchUpRate)}/s`);
    } finally {
      await store.close();
      hRemove();
    }
    // Herald, one caller (the comparison Emmett can run).
    const singleN = Math.min(n, 20_000);
    let h1sRate = 0;
    {
      const { path, remove } = tempFile('h1s');
      const s = createSqliteEventStore({ path });
      const r = await heraldAppend(s, singleN, 1, 1);
      h1sRate = r.rate;
      await s.close();
      remove();
      rows.push({ case: H1S, messages: singleN, rate: round(r.rate), p50: percentile(r.latencies, 50), p99: percentile(r.latencies, 99), peer: RAW1, ratio: r.rate / rows[0]!.rate });
      log(`  ${H1S}: ${round(r.rate)}/s`);
    }

    // Emmett. Its SQLite store can fail from inside (an unhandled rejection of its sqlite3
    // callbacks: "SQLITE_BUSY: cannot commit transaction - SQL statements in progress" was seen
    // here with one caller): such a failure skips that row, it does not end the run.
    const emmett = await loadEmmett();
    if (typeof emmett === 'string') {
      log(`  Emmett rows skipped: ${emmett}`);
    } else {
      const stray: unknown[] = [];
      const onStray = (e: unknown): void => void stray.push(e);
      process.on('unhandledRejection', onStray);
      const attempt = async (label: string, fn: () => Promise<void>): Promise<void> => {
        for (let run = 1; run <= 2; run++) {
          try {
            stray.length = 0;
            await fn();
            if (stray.length > 0) throw stray[0];
            return;
          } catch (e) {
            log(`  Emmett ${label}: run ${run} failed: ${(e as Error)?.message ?? String(e)}`);
          }
        }
        log(`  Emmett ${label}: no figure (failed twice)`);
      };
      try {
        const e1N = Math.min(n, 2000);
        await attempt('append 1 event/append', async () => {
          const { path, remove } = tempFile('emmett1');
          try {
            const r = await emmettAppend(emmett, path, e1N, 1);
            rows.push({ case: 'emmett-sqlite append, 1 event/append, 1 caller (64 callers crash it, see notes)', messages: e1N, rate: round(r.rate), p50: percentile(r.latencies, 50), p99: percentile(r.latencies, 99), peer: H1S, ratio: r.rate / h1sRate });
            log(`  emmett 1 event/append, 1 caller: ${round(r.rate)}/s`);
          } finally {
            remove();
          }
        });
        const e100N = Math.min(n, 50_000);
        const { path: ePath, remove: eRemove } = tempFile('emmett100');
        let filled = false;
        try {
          await attempt('append 100 events/append', async () => {
            eRemove();
            const r = await emmettAppend(emmett, ePath, e100N, 100);
            rows.push({ case: 'emmett-sqlite append, 100 events/append, 1 caller', messages: e100N, rate: round(r.rate), p50: percentile(r.latencies, 50), p99: percentile(r.latencies, 99), peer: H100, ratio: r.rate / h100Rate });
            log(`  emmett 100 events/append: ${round(r.rate)}/s`);
            filled = true;
          });
          if (filled) {
            await attempt('replay', async () => {
              const replay = await emmettReplay(emmett, ePath, e100N);
              rows.push({ case: 'emmett-sqlite replay: readMessagesBatch of 10 000', messages: e100N, rate: round(replay), peer: HR, ratio: replay / heraldReplayRate });
              log(`  emmett replay: ${round(replay)}/s`);
            });
            await attempt('consumer catch-up', async () => {
              const catchUp = await emmettCatchUp(emmett, ePath, e100N);
              rows.push({ case: 'emmett-sqlite consumer catch-up from BEGINNING (in-memory count)', messages: e100N, rate: round(catchUp), peer: HP, ratio: catchUp / heraldCatchUpRate });
              log(`  emmett consumer catch-up: ${round(catchUp)}/s`);
            });
          }
        } finally {
          eRemove();
        }
      } finally {
        // Late rejections from Emmett's closed handles still land here for a moment.
        await new Promise((r) => setTimeout(r, 50));
        process.off('unhandledRejection', onStray);
      }
    }

    // Rebuild.
    const rebuildEvents = Number(process.env.BENCH_REBUILD_EVENTS ?? 1_000_000);
    if (rebuildEvents > 0) {
      const r = await rebuild(rebuildEvents, log);
      rows.push({ case: `herald rebuild of an async projection from ${rebuildEvents.toLocaleString('en-US')} events (shadow table + swap)`, messages: rebuildEvents, rate: round(r.rebuildRate) });
      log(`  rebuild: ${rebuildEvents.toLocaleString('en-US')} events in ${(r.ms / 1000).toFixed(1)} s = ${round(r.rebuildRate)}/s (filled at ${round(r.appendRate)}/s)`);
    }
    return rows;
  } finally {
    clearInterval(keepAlive);
  }
}

// Standalone: print a table.
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const events = Number(process.argv[2] ?? process.env.BENCH_EVENTS ?? 50_000);
  const rows = await runBench({ events, log: (l) => process.stderr.write(`${l}\n`) });
  console.log('| case | events | events/s | p50 ms | p99 ms | vs | ratio |\n|:--|--:|--:|--:|--:|:--|--:|');
  for (const r of rows) {
    console.log(
      `| ${r.case} | ${r.messages.toLocaleString('en-US')} | ${r.rate.toLocaleString('en-US')} | ${r.p50?.toFixed(2) ?? ''} | ${r.p99?.toFixed(2) ?? ''} | ${r.peer ?? ''} | ${r.ratio?.toFixed(2) ?? ''} |`,
    );
  }
}
