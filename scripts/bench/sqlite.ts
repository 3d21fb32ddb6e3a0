/**
 * SQLite rows: Herald's embedded transport (`createSqliteTransport({ path, synchronous:
 * 'NORMAL' })`, otherwise defaults) against its raw ceiling, better-sqlite3 batched inserts,
 * measured in the same run. Each run uses a fresh database file in a temporary folder.
 *
 * End-to-end rows put the consumer in a child process (scripts/bench/sqlite-consumer.ts) on
 * the same file: the parent publishes, the child handles and acks, and the time runs from
 * the parent's first publish to the child's last ack (both read the same machine clock).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { OutgoingMessage } from '@herald/core';
import { createSqliteTransport, type SqliteTransport } from '@herald/sqlite';
import { envelope, epochMicros, median, progress, rateOf, repeat, type Row } from './common.ts';
import { rawInsertRun } from './raw-sqlite.ts';
import type { WorkerConfig, WorkerResult } from './sqlite-consumer.ts';
import type { ObserveMode } from './observability.ts';

export interface SqliteConfig {
  readonly messages: number;
  readonly runs: number;
  readonly batch: number;
  readonly concurrency: number;
  readonly rate: number;
  readonly latencySeconds: number;
  /** Consumer's cross-process poll period override, ms (BENCH_POLL_MS); undefined: the transport default. */
  readonly pollMs?: number;
}

const TOPIC = 'bench.sqlite';
const WORKER = fileURLToPath(new URL('./sqlite-consumer.ts', import.meta.url));
/** A run that takes longer than this is a hang, not a result. */
const RUN_TIMEOUT_MS = 180_000;

function tempDb(): { path: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'herald-bench-sqlite-'));
  return { path: join(dir, 'bench.db'), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

function open(path: string): SqliteTransport {
  return createSqliteTransport({ path, synchronous: 'NORMAL' });
}

function batchOf(from: number, n: number, t?: (i: number) => number): OutgoingMessage[] {
  const out: OutgoingMessage[] = new Array(n);
  for (let j = 0; j < n; j++) out[j] = { envelope: envelope(from + j, t?.(from + j)) };
  return out;
}

/** Publish only: sequential `publish(topic, batch)` calls. */
async function publishBatchedRun(messages: number, batch: number): Promise<number> {
  const db = tempDb();
  const transport = open(db.path);
  try {
    await transport.ensureTopic(TOPIC);
    const t0 = performance.now();
    for (let i = 0; i < messages; i += batch) await transport.publish(TOPIC, batchOf(i, Math.min(batch, messages - i)));
    return performance.now() - t0;
  } finally {
    await transport.close();
    db.cleanup();
  }
}

/** Publish only: `concurrency` loops, each awaiting one single-message publish at a time. */
async function publishConcurrentRun(messages: number, concurrency: number): Promise<{ ms: number; perTxn: number }> {
  const db = tempDb();
  const transport = open(db.path);
  try {
    await transport.ensureTopic(TOPIC);
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let n = next++; n < messages; n = next++) await transport.publish(TOPIC, [{ envelope: envelope(n) }]);
    };
    const before = transport.stats().publishTransactions;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: concurrency }, worker));
    const ms = performance.now() - t0;
    return { ms, perTxn: messages / (transport.stats().publishTransactions - before) };
  } finally {
    await transport.close();
    db.cleanup();
  }
}

interface Child {
  readonly proc: ChildProcess;
  next(kind: 'ready' | 'warm' | 'done'): Promise<Record<string, unknown>>;
}

function startConsumer(config: WorkerConfig): Child {
  // BENCH_CPU_PROF_DIR: profile the consumer process too (analysis; the parent takes --cpu-prof itself).
  const prof = process.env.BENCH_CPU_PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF_DIR}`] : [];
  const proc = spawn(process.execPath, [...prof, '--import', 'tsx', WORKER], {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    env: { ...process.env, BENCH_WORKER_CONFIG: JSON.stringify(config) },
  });
  proc.stdout!.pipe(process.stderr);
  const inbox: Record<string, unknown>[] = [];
  let waiting: { kind: string; resolve: (m: Record<string, unknown>) => void; reject: (e: Error) => void } | undefined;
  let exited: Error | undefined;
  const deliver = (): void => {
    if (!waiting) return;
    const i = inbox.findIndex((m) => m.kind === waiting!.kind);
    if (i >= 0) {
      const w = waiting;
      waiting = undefined;
      w.resolve(inbox.splice(i, 1)[0]!);
    } else if (exited) {
      const w = waiting;
      waiting = undefined;
      w.reject(exited);
    }
  };
  proc.on('message', (m) => {
    inbox.push(m as Record<string, unknown>);
    deliver();
  });
  proc.on('exit', (code, signal) => {
    exited = new Error(`bench consumer process exited (code ${code}, signal ${signal}) before reporting`);
    deliver();
  });
  return {
    proc,
    next: (kind) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`bench consumer: no "${kind}" within ${RUN_TIMEOUT_MS} ms`)), RUN_TIMEOUT_MS);
        waiting = {
          kind,
          resolve: (m) => {
            clearTimeout(timer);
            resolve(m);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        };
        deliver();
      }),
  };
}

async function stopConsumer(child: Child): Promise<void> {
  if (child.proc.exitCode !== null || child.proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.proc.once('exit', () => r()));
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

interface E2eResult {
  readonly ms: number;
  readonly p50Ms?: number;
  readonly p99Ms?: number;
  readonly maxMs?: number;
  /** CPU time of both processes over the measured part, ms (publisher from its first measured publish, consumer from its warm-up's end). */
  readonly cpuMs?: number;
  /** The consumer's share of `cpuMs`, ms. */
  readonly consumerCpuMs?: number;
}

/**
 * Publisher here, consumer in a child process, one database file. A warm-up of `warmup`
 * messages goes through first (JIT, page cache, leases); the clock starts after it.
 * Throughput mode: sequential batches as fast as they commit. Latency mode: one publish call
 * per message at `rate` msg/s, scheduled by time (open loop), each payload carrying its
 * intended send time.
 */
export async function endToEndRun(c: SqliteConfig, mode: { validate: boolean; latency: boolean; observe?: ObserveMode }): Promise<E2eResult> {
  const db = tempDb();
  const transport = open(db.path);
  let child: Child | undefined;
  try {
    const { partitions } = await transport.ensureTopic(TOPIC);
    const messages = mode.latency ? c.rate * c.latencySeconds : c.messages;
    const warmup = Math.min(5000, Math.max(1000, Math.floor(messages / 10)));
    child = startConsumer({
      path: db.path,
      topic: TOPIC,
      group: 'bench',
      partitions,
      warmup,
      expected: messages,
      validate: mode.validate,
      latency: mode.latency,
      ...(c.pollMs !== undefined ? { pollMs: c.pollMs } : {}),
      ...(mode.observe !== undefined ? { observe: mode.observe } : {}),
    });
    await child.next('ready');
    for (let i = 0; i < warmup; i += c.batch) await transport.publish(TOPIC, batchOf(i, Math.min(c.batch, warmup - i)));
    await child.next('warm');

    let t0Us: number;
    let cpu0: NodeJS.CpuUsage | undefined;
    // Observability rows publish through a publisher (the herald:publish channel) with `mode.observe` subscribed here too.
    const obs = mode.observe === undefined ? undefined : await import('./observability.ts');
    const publish = obs ? obs.publisherOn(transport) : (topic: string, m: OutgoingMessage[]) => transport.publish(topic, m);
    const unobserve = obs ? await obs.observe(mode.observe!, transport) : undefined;
    if (!mode.latency) {
      t0Us = epochMicros();
      cpu0 = process.cpuUsage();
      for (let i = 0; i < messages; i += c.batch) await publish(TOPIC, batchOf(warmup + i, Math.min(c.batch, messages - i)));
    } else {
      t0Us = await openLoop(transport, warmup, messages, c.rate);
    }
    const done = (await child.next('done')) as unknown as WorkerResult;
    const parentCpu = cpu0 === undefined ? undefined : process.cpuUsage(cpu0);
    await unobserve?.();
    if (done.handled !== messages || done.deadLettered !== 0) throw new Error(`sqlite e2e: handled ${done.handled}/${messages}, dead-lettered ${done.deadLettered}`);
    if (done.errors > 0) progress(`  (consumer reported ${done.errors} errors through onError)`);
    return {
      ms: (done.endUs - t0Us) / 1000,
      ...(parentCpu !== undefined && done.cpuUs !== undefined ? { cpuMs: (cpuOf(parentCpu) + done.cpuUs) / 1000, consumerCpuMs: done.cpuUs / 1000 } : {}),
      ...(done.p50Us !== undefined ? { p50Ms: done.p50Us / 1000, p99Ms: done.p99Us! / 1000, maxMs: done.maxUs! / 1000 } : {}),
    };
  } finally {
    if (child) await stopConsumer(child);
    await transport.close();
    db.cleanup();
  }
}

/**
 * Sends message k at t0 + k/rate: a timer wakes the loop, which issues one `publish` call for
 * every message whose intended time has come (without awaiting earlier ones). Returns t0 (µs).
 */
async function openLoop(transport: SqliteTransport, first: number, messages: number, rate: number): Promise<number> {
  const intervalUs = 1e6 / rate;
  const t0 = epochMicros() + 2000;
  const intended = (k: number): number => Math.round(t0 + k * intervalUs);
  const inflight: Promise<unknown>[] = [];
  await new Promise<void>((resolve) => {
    let k = 0;
    const tick = (): void => {
      const now = epochMicros();
      while (k < messages && intended(k) <= now) {
        inflight.push(transport.publish(TOPIC, [{ envelope: envelope(first + k, intended(k)) }]));
        k++;
      }
      if (k >= messages) resolve();
      else setTimeout(tick, Math.max(0, (intended(k) - epochMicros()) / 1000));
    };
    setTimeout(tick, 2);
  });
  await Promise.all(inflight);
  return t0;
}

export async function sqliteRows(c: SqliteConfig): Promise<Row[]> {
  const { messages, runs, batch, concurrency } = c;
  const showRate = (ms: number): string => `${Math.round(rateOf(messages, ms)).toLocaleString('en-US')} msg/s`;
  const row = (name: string, times: number[], note: string): Row => ({
    suite: 'sqlite',
    case: name,
    messages,
    rate: rateOf(messages, median(times)),
    runs: times.map((ms) => rateOf(messages, ms)),
    note,
  });

  // Warm-up: JIT the envelope, encoding and write paths once before anything is timed.
  const warm = Math.min(messages, 10_000);
  rawInsertRun(warm, batch);
  await publishBatchedRun(warm, batch);
  await publishConcurrentRun(warm, concurrency);

  const raw = row(
    `better-sqlite3 raw insert, ${batch}/txn (raw peer)`,
    await repeat('better-sqlite3 raw', runs, async () => rawInsertRun(messages, batch), showRate),
    'WAL, synchronous=NORMAL, prepared INSERT of JSON.stringify(payload) into (topic, partition, offset, key, body) with PRIMARY KEY (topic, partition, offset)',
  );

  const pubBatched = row(
    `sqlite publish, batches of ${batch}`,
    await repeat('sqlite publish (batches)', runs, () => publishBatchedRun(messages, batch), showRate),
    'no subscriber; createEnvelope + JSON encoding included',
  );

  let perTxn: number[] = [];
  const concurrentTimes = (
    await repeat(
      `sqlite publish (${concurrency} concurrent)`,
      runs,
      () => publishConcurrentRun(messages, concurrency),
      (r) => `${showRate(r.ms)}, ${r.perTxn.toFixed(1)} messages per group commit`,
    )
  ).map((r) => {
    perTxn.push(r.perTxn);
    return r.ms;
  });
  const pubConcurrent = row(
    `sqlite publish, ${concurrency} concurrent single-message publishers`,
    concurrentTimes,
    `no subscriber; group commit wrote a median ${median(perTxn).toFixed(1)} messages per transaction`,
  );
  perTxn = [];

  const e2e = async (validate: boolean): Promise<Row> => {
    const label = `sqlite e2e (2 processes), validation ${validate ? 'on' : 'off'}`;
    const results = await repeat(label, runs, () => endToEndRun(c, { validate, latency: false }), (r) => showRate(r.ms));
    return row(
      label,
      results.map((r) => r.ms),
      `publisher (batches of ${batch}) and consumer (${validate ? 'handle(zod definition)' : 'handleEnvelope'}) in separate processes; first publish → last ack${c.pollMs !== undefined ? `; consumer pollMs ${c.pollMs}` : ''}`,
    );
  };
  const e2eOff = await e2e(false);
  const e2eOn = await e2e(true);

  const latencyMessages = c.rate * c.latencySeconds;
  const lat = await repeat(
    `sqlite latency @ ${c.rate} msg/s`,
    runs,
    () => endToEndRun(c, { validate: true, latency: true }),
    (r) => `p50 ${r.p50Ms!.toFixed(2)} ms, p99 ${r.p99Ms!.toFixed(2)} ms, max ${r.maxMs!.toFixed(2)} ms`,
  );
  const latencyRow: Row = {
    suite: 'sqlite',
    case: `sqlite latency, open loop ${c.rate.toLocaleString('en-US')} msg/s × ${c.latencySeconds} s (2 processes)`,
    messages: latencyMessages,
    rate: rateOf(latencyMessages, median(lat.map((r) => r.ms))),
    p50Ms: median(lat.map((r) => r.p50Ms!)),
    p99Ms: median(lat.map((r) => r.p99Ms!)),
    runs: lat.map((r) => rateOf(latencyMessages, r.ms)),
    note: `one publish call per message, scheduled by time; latency = consumer's handler time − intended send time; validation on; medians of the runs' p50 / p99 (p99 per run ${lat.map((r) => r.p99Ms!.toFixed(2)).join(', ')} ms; max ${lat.map((r) => r.maxMs!.toFixed(2)).join(', ')} ms)${c.pollMs !== undefined ? `; consumer pollMs ${c.pollMs}` : ''}`,
  };

  for (const r of [pubBatched, pubConcurrent, e2eOff, e2eOn]) {
    r.ratio = r.rate / raw.rate;
    r.ratioVs = raw.case;
  }
  return [raw, pubBatched, pubConcurrent, e2eOff, e2eOn, latencyRow];
}

function cpuOf(u: NodeJS.CpuUsage): number {
  return u.user + u.system;
}
