/**
 * Benchmark of the Redis Streams transport against the raw client doing the same work, and
 * against BullMQ (what a user might pick instead), all measured in the same run on the same
 * Redis server (default 127.0.0.1:6379; keys under a random prefix, deleted at the end).
 *
 *   node --import tsx packages/redis/src/redis.bench.ts [messages=50000]
 *
 * Payload: 256 bytes of JSON (`{"n":…,"t":…,"pad":"xx…"}`); Herald sends it as the `data` of a
 * CloudEvents envelope (the envelope's own bytes are part of Herald's cost); 256 partition keys;
 * 8 partitions (the raw peer writes the same key → stream mapping over 8 streams). Publisher
 * and consumer run in this process, each on its own connection(s).
 *
 * Rows (`ratio` = Herald rate / the raw row's rate). Throughput rows are the median of `runs`
 * (default 3), Herald and raw interleaved; the BullMQ row and the latency rows run once:
 * - publish: sequential batches of 1000 — raw: one pipeline of 1000 `XADD * ` per batch;
 *   Herald: `publish(topic, 1000 envelopes)` (envelopes built before the clock starts).
 * - end-to-end: the same batches while a consumer takes them — raw: `XREADGROUP COUNT 256 BLOCK`
 *   over the 8 streams + one `XACK` per stream per read; Herald: `createConsumer` (router,
 *   concurrency 64) with an empty handler on a second transport (wake-ups by XREAD BLOCK, as
 *   across processes); BullMQ: `addBulk` of 1000 + a `Worker` (concurrency 64,
 *   removeOnComplete). Time from the first publish to the last message handled.
 * - latency: open loop at `rate` msg/s (default 5000) for `latencySeconds` (default 5): one
 *   publish call (raw: one XADD; BullMQ: one `add`) per message, scheduled by time; each payload
 *   carries its intended send time and the handler records now − intended. p50/p99 in ms; the
 *   rate is messages / (first intended send → last handled).
 */
import { randomUUID } from 'node:crypto';
import { type CloudEvent, createConsumer, createEnvelope, MemoryDeadLetterStore, type OutgoingMessage, partitionForKey } from '@herald/core';
import { Redis } from 'ioredis';
import { createRedisTransport, type RedisTransport } from './transport.ts';

export interface BenchRow {
  case: string;
  messages: number;
  /** msg/s */
  rate: number;
  /** ms */
  p50?: number;
  /** ms */
  p99?: number;
  /** The row this one is compared with. */
  peer?: string;
  /** rate / the peer's rate. */
  ratio?: number;
}

export interface BenchOptions {
  readonly messages: number;
  readonly log: (line: string) => void;
  /** Redis port (default: HERALD_REDIS_PORT or 6379). */
  readonly port?: number;
  /** Open-loop rate of the latency rows, msg/s (default 5000). */
  readonly rate?: number;
  /** Duration of each latency row, s (default 5; fewer messages if `messages` is smaller). */
  readonly latencySeconds?: number;
  /** Runs of each throughput row; the row is the median (default 3). BullMQ and latency rows run once. */
  readonly runs?: number;
}

const PAYLOAD_BYTES = 256;
const PARTITIONS = 8;
const KEYS = Array.from({ length: 256 }, (_, i) => `k${i}`);
const BATCH = 1000;
const PAD = 'x'.repeat(PAYLOAD_BYTES);
const FIXED = JSON.stringify({ n: 0, t: 0, pad: '' }).length - 2;
/** A run that takes longer than this is a hang, not a result. */
const RUN_TIMEOUT_MS = 120_000;

interface Item {
  n: number;
  t: number;
  pad: string;
}

function payload(n: number, t = 0): Item {
  return { n, t, pad: PAD.slice(0, PAYLOAD_BYTES - FIXED - String(n).length - String(t).length) };
}

const keyOf = (n: number): string => KEYS[n % KEYS.length]!;
const partitionOf = KEYS.map((k) => partitionForKey(k, PARTITIONS));

function envelope(n: number, t = 0): CloudEvent<Item> {
  return createEnvelope<Item>({ type: 'bench.item', source: 'herald-bench', data: payload(n, t), partitionkey: keyOf(n) });
}

/** Epoch microseconds with sub-millisecond resolution. */
function epochMicros(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

class Latencies {
  readonly #values: Float64Array;
  #n = 0;
  lastAt = 0;
  constructor(capacity: number) {
    this.#values = new Float64Array(capacity);
  }
  get count(): number {
    return this.#n;
  }
  add(intendedUs: number): void {
    const now = epochMicros();
    this.lastAt = now;
    if (this.#n < this.#values.length) this.#values[this.#n++] = (now - intendedUs) / 1000;
  }
  summary(): { p50: number; p99: number } {
    const s = this.#values.slice(0, this.#n).sort();
    return { p50: round(percentile(s, 0.5)), p99: round(percentile(s, 0.99)) };
  }
}

function waitUntil(cond: () => boolean, what: string, timeoutMs = RUN_TIMEOUT_MS): Promise<void> {
  const end = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (cond()) return resolve();
      if (Date.now() > end) return reject(new Error(`redis bench: timed out after ${timeoutMs} ms waiting for ${what}`));
      setTimeout(tick, 1);
    };
    tick();
  });
}

/** Calls `send(k, intendedUs)` for k = 0..messages-1 at `rate` msg/s, by the clock (open loop). Returns the first intended time (µs). */
async function openLoop(messages: number, rate: number, send: (k: number, intendedUs: number) => Promise<unknown>): Promise<number> {
  const intervalUs = 1e6 / rate;
  const t0 = epochMicros() + 2000;
  const intended = (k: number): number => Math.round(t0 + k * intervalUs);
  const inflight: Promise<unknown>[] = [];
  await new Promise<void>((resolve) => {
    let k = 0;
    const tick = (): void => {
      const now = epochMicros();
      while (k < messages && intended(k) <= now) {
        inflight.push(send(k, intended(k)));
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

// ── the raw ioredis peer ──────────────────────────────────────────────────

class RawPeer {
  readonly streams: string[];
  constructor(
    readonly port: number,
    prefix: string,
  ) {
    this.streams = Array.from({ length: PARTITIONS }, (_, p) => `${prefix}:${p}`);
  }

  /** Sequential pipelines of BATCH `XADD stream * d <json>`. */
  async publish(redis: Redis, messages: number, t?: () => number): Promise<void> {
    for (let i = 0; i < messages; i += BATCH) {
      const pipe = redis.pipeline();
      for (let n = i; n < Math.min(messages, i + BATCH); n++) pipe.xadd(this.streams[partitionOf[n % KEYS.length]!]!, '*', 'd', JSON.stringify(payload(n, t?.() ?? 0)));
      const res = await pipe.exec();
      for (const [err] of res ?? []) if (err) throw err;
    }
  }

  /** A consumer-group reader: XREADGROUP COUNT 256 BLOCK over every stream, XACK per stream per read. */
  async consume(group: string, onItem: (item: Item) => void, stop: () => boolean): Promise<void> {
    const admin = new Redis({ port: this.port });
    const reader = new Redis({ port: this.port });
    try {
      for (const s of this.streams) await admin.xgroup('CREATE', s, group, '$', 'MKSTREAM').catch(() => {});
      const ids = this.streams.map(() => '>');
      while (!stop()) {
        const res = (await reader.xreadgroup('GROUP', group, 'c1', 'COUNT', 256, 'BLOCK', 100, 'STREAMS', ...this.streams, ...ids)) as [string, [string, string[]][]][] | null;
        if (!res) continue;
        const pipe = reader.pipeline();
        for (const [stream, entries] of res) {
          const acked: string[] = [];
          for (const [id, fields] of entries) {
            onItem(JSON.parse(fields[1]!) as Item);
            acked.push(id);
          }
          pipe.xack(stream, group, ...acked);
        }
        await pipe.exec();
      }
    } finally {
      reader.disconnect();
      admin.disconnect();
    }
  }
}

// ── the rows ──────────────────────────────────────────────────────────────

export async function runBench(options: BenchOptions): Promise<BenchRow[]> {
  const { messages, log } = options;
  const port = options.port ?? Number(process.env.HERALD_REDIS_PORT ?? 6379);
  const rate = options.rate ?? 5000;
  const runs = Math.max(1, options.runs ?? 3);
  const latencyMessages = Math.max(1, Math.min(messages, Math.round(rate * (options.latencySeconds ?? 5))));
  const prefix = `herald-bench-${randomUUID().slice(0, 8)}`;
  const admin = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await admin.connect();
  } catch (e) {
    admin.disconnect();
    throw new Error(`redis bench: no Redis on 127.0.0.1:${port} (${(e as Error).message})`);
  }
  const keepAlive = setInterval(() => {}, 1000);
  const rows: BenchRow[] = [];
  let run = 0;
  const topic = (): string => `bench-${++run}`;
  const envelopes: CloudEvent<Item>[] = Array.from({ length: messages }, (_, i) => envelope(i));
  const heraldTransport = (): RedisTransport => createRedisTransport({ connection: { port }, prefix, defaultPartitions: PARTITIONS });
  const show = (r: BenchRow): string =>
    `  ${r.case}: ${Math.round(r.rate).toLocaleString('en-US')} msg/s${r.p50 !== undefined ? `, p50 ${r.p50} ms, p99 ${r.p99} ms` : ''}${r.ratio !== undefined ? ` (${r.ratio.toFixed(2)} × ${r.peer})` : ''}`;
  const push = (r: BenchRow): BenchRow => {
    rows.push(r);
    log(show(r));
    return r;
  };

  // Publish only.
  const rawPublish = async (n: number): Promise<number> => {
    const peer = new RawPeer(port, `${prefix}:raw-pub-${++run}`);
    const redis = new Redis({ port });
    try {
      const t0 = performance.now();
      await peer.publish(redis, n);
      return performance.now() - t0;
    } finally {
      redis.disconnect();
    }
  };
  const heraldPublish = async (n: number): Promise<number> => {
    const t = heraldTransport();
    const name = topic();
    try {
      await t.ensureTopic(name, { partitions: PARTITIONS });
      const t0 = performance.now();
      for (let i = 0; i < n; i += BATCH) {
        const batch: OutgoingMessage[] = [];
        for (let j = i; j < Math.min(n, i + BATCH); j++) batch.push({ envelope: envelopes[j]! });
        await t.publish(name, batch);
      }
      return performance.now() - t0;
    } finally {
      await t.close();
    }
  };

  // End to end, throughput.
  const rawE2e = async (n: number): Promise<number> => {
    const peer = new RawPeer(port, `${prefix}:raw-e2e-${++run}`);
    const redis = new Redis({ port });
    let got = 0;
    let stop = false;
    const consuming = peer.consume('g', () => void got++, () => stop);
    try {
      await new Promise((r) => setTimeout(r, 50)); // groups created, reader blocked
      const t0 = performance.now();
      await peer.publish(redis, n);
      await waitUntil(() => got >= n, `raw e2e: ${n} consumed (have ${got})`);
      return performance.now() - t0;
    } finally {
      stop = true;
      await consuming;
      redis.disconnect();
    }
  };
  const heraldE2e = async (n: number): Promise<number> => {
    const pub = heraldTransport();
    const sub = heraldTransport();
    const name = topic();
    let got = 0;
    const consumer = createConsumer({ transport: sub, group: 'g', deadLetters: new MemoryDeadLetterStore(), concurrency: 64 });
    consumer.handleEnvelope(name, 'bench.item', () => {
      got++;
    });
    try {
      await pub.ensureTopic(name, { partitions: PARTITIONS });
      await consumer.start();
      await waitUntil(() => consumer.assignment(name).length === PARTITIONS, 'herald e2e: the consumer to own every partition', 10_000);
      const t0 = performance.now();
      for (let i = 0; i < n; i += BATCH) {
        const batch: OutgoingMessage[] = [];
        for (let j = i; j < Math.min(n, i + BATCH); j++) batch.push({ envelope: envelopes[j]! });
        await pub.publish(name, batch);
      }
      await waitUntil(() => got >= n, `herald e2e: ${n} handled (have ${got})`);
      return performance.now() - t0;
    } finally {
      await consumer.close({ timeoutMs: 2000 });
      await sub.close();
      await pub.close();
    }
  };
  const bullmq = await import('bullmq').catch(() => undefined);
  const bullE2e = async (n: number): Promise<number> => {
    const { Queue, Worker } = bullmq!;
    const name = `${prefix}-bull-${++run}`;
    const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
    const queue = new Queue(name, { connection, defaultJobOptions: { removeOnComplete: true, removeOnFail: true } });
    let got = 0;
    const worker = new Worker(name, async () => void got++, { connection, concurrency: 64 });
    try {
      await worker.waitUntilReady();
      const t0 = performance.now();
      for (let i = 0; i < n; i += BATCH) {
        const jobs = [];
        for (let j = i; j < Math.min(n, i + BATCH); j++) jobs.push({ name: 'item', data: payload(j) });
        await queue.addBulk(jobs);
      }
      await waitUntil(() => got >= n, `bullmq e2e: ${n} processed (have ${got})`);
      return performance.now() - t0;
    } finally {
      await worker.close();
      await queue.obliterate({ force: true }).catch(() => {});
      await queue.close();
    }
  };

  // End to end, open-loop latency.
  const rawLatency = async (n: number): Promise<{ rate: number; p50: number; p99: number }> => {
    const peer = new RawPeer(port, `${prefix}:raw-lat-${++run}`);
    const redis = new Redis({ port });
    const lat = new Latencies(n);
    let stop = false;
    const consuming = peer.consume('g', (item) => lat.add(item.t), () => stop);
    try {
      await new Promise((r) => setTimeout(r, 50));
      const t0 = await openLoop(n, rate, (k, at) => redis.xadd(peer.streams[partitionOf[k % KEYS.length]!]!, '*', 'd', JSON.stringify(payload(k, at))));
      await waitUntil(() => lat.count >= n, `raw latency: ${n} consumed (have ${lat.count})`);
      return { rate: (n * 1e6) / (lat.lastAt - t0), ...lat.summary() };
    } finally {
      stop = true;
      await consuming;
      redis.disconnect();
    }
  };
  const heraldLatency = async (n: number): Promise<{ rate: number; p50: number; p99: number }> => {
    const pub = heraldTransport();
    const sub = heraldTransport();
    const name = topic();
    const lat = new Latencies(n);
    const consumer = createConsumer({ transport: sub, group: 'g', deadLetters: new MemoryDeadLetterStore(), concurrency: 64 });
    consumer.handleEnvelope(name, 'bench.item', (env) => {
      lat.add((env.data as Item).t);
    });
    try {
      await pub.ensureTopic(name, { partitions: PARTITIONS });
      await consumer.start();
      await waitUntil(() => consumer.assignment(name).length === PARTITIONS, 'herald latency: the consumer to own every partition', 10_000);
      const t0 = await openLoop(n, rate, (k, at) => pub.publish(name, [{ envelope: envelope(k, at) }]));
      await waitUntil(() => lat.count >= n, `herald latency: ${n} handled (have ${lat.count})`);
      return { rate: (n * 1e6) / (lat.lastAt - t0), ...lat.summary() };
    } finally {
      await consumer.close({ timeoutMs: 2000 });
      await sub.close();
      await pub.close();
    }
  };
  const bullLatency = async (n: number): Promise<{ rate: number; p50: number; p99: number }> => {
    const { Queue, Worker } = bullmq!;
    const name = `${prefix}-bull-${++run}`;
    const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
    const queue = new Queue(name, { connection, defaultJobOptions: { removeOnComplete: true, removeOnFail: true } });
    const lat = new Latencies(n);
    const worker = new Worker(name, async (job) => lat.add((job.data as Item).t), { connection, concurrency: 64 });
    try {
      await worker.waitUntilReady();
      const t0 = await openLoop(n, rate, (k, at) => queue.add('item', payload(k, at)));
      await waitUntil(() => lat.count >= n, `bullmq latency: ${n} processed (have ${lat.count})`);
      return { rate: (n * 1e6) / (lat.lastAt - t0), ...lat.summary() };
    } finally {
      await worker.close();
      await queue.obliterate({ force: true }).catch(() => {});
      await queue.close();
    }
  };

  try {
    const started = performance.now();
    log(`redis bench: ${messages.toLocaleString('en-US')} messages per throughput row, ${latencyMessages.toLocaleString('en-US')} at ${rate} msg/s per latency row, Redis 127.0.0.1:${port}`);
    // Warm-up (JIT, connections, scripts), not recorded.
    const warm = Math.min(messages, 5000);
    await rawPublish(warm);
    await heraldPublish(warm);
    await rawE2e(warm);
    await heraldE2e(warm);
    if (bullmq) await bullE2e(Math.min(warm, 2000));

    const rateOf = (n: number, ms: number): number => (n * 1000) / ms;
    // Throughput rows: `runs` runs each, Herald and its raw peer interleaved (so drift on a shared
    // machine hits both alike); the row shows the median, the log every run.
    const pair = async (label: string, raw: (n: number) => Promise<number>, herald: (n: number) => Promise<number>): Promise<[number, number]> => {
      const r: number[] = [];
      const h: number[] = [];
      for (let i = 0; i < runs; i++) {
        r.push(rateOf(messages, await raw(messages)));
        h.push(rateOf(messages, await herald(messages)));
      }
      log(`  ${label} runs (msg/s): raw ${r.map((x) => Math.round(x)).join(' / ')}; herald ${h.map((x) => Math.round(x)).join(' / ')}`);
      return [median(r), median(h)];
    };
    const [rawPubRate, hPubRate] = await pair('publish', rawPublish, heraldPublish);
    const rawPub = push({ case: 'redis raw: XADD pipelined, 1000/pipeline', messages, rate: rawPubRate });
    push({ case: 'herald redis: publish, 1000/call', messages, rate: hPubRate, peer: rawPub.case, ratio: hPubRate / rawPub.rate });

    const [rawE2eRate, hE2eRate] = await pair('end-to-end', rawE2e, heraldE2e);
    const rawE = push({ case: 'redis raw: XADD pipelined → XREADGROUP + XACK, end-to-end', messages, rate: rawE2eRate });
    push({ case: 'herald redis: publish → router handle → ack, end-to-end', messages, rate: hE2eRate, peer: rawE.case, ratio: hE2eRate / rawE.rate });
    if (bullmq) {
      const bRate = rateOf(messages, await bullE2e(messages));
      push({ case: 'bullmq: addBulk 1000 → Worker (concurrency 64), end-to-end (1 run)', messages, rate: bRate });
      log(`  (herald end-to-end is ${(hE2eRate / bRate).toFixed(2)} × bullmq)`);
    } else log('  bullmq rows skipped: bullmq is not installed');

    const rawL = await rawLatency(latencyMessages);
    const rawLat = push({ case: `redis raw: open loop ${rate}/s, XADD → XREADGROUP + XACK`, messages: latencyMessages, rate: rawL.rate, p50: rawL.p50, p99: rawL.p99 });
    const hL = await heraldLatency(latencyMessages);
    push({ case: `herald redis: open loop ${rate}/s, publish → router handle → ack`, messages: latencyMessages, rate: hL.rate, p50: hL.p50, p99: hL.p99, peer: rawLat.case, ratio: hL.rate / rawL.rate });
    if (bullmq) {
      const bL = await bullLatency(latencyMessages);
      push({ case: `bullmq: open loop ${rate}/s, add → Worker`, messages: latencyMessages, rate: bL.rate, p50: bL.p50, p99: bL.p99 });
    }
    log(`redis bench: done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    return rows;
  } finally {
    clearInterval(keepAlive);
    let cursor = '0';
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await admin.unlink(...keys);
    } while (cursor !== '0');
    admin.disconnect();
  }
}

// Run directly: print the rows as a table.
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const messages = Number(process.argv[2] ?? 50_000);
  const rows = await runBench({ messages, log: (line) => process.stderr.write(`${line}\n`) });
  console.log('| case | messages | msg/s | p50 ms | p99 ms | vs peer |\n|:--|--:|--:|--:|--:|--:|');
  for (const r of rows) {
    console.log(`| ${r.case} | ${r.messages.toLocaleString('en-US')} | ${Math.round(r.rate).toLocaleString('en-US')} | ${r.p50 ?? ''} | ${r.p99 ?? ''} | ${r.ratio !== undefined ? r.ratio.toFixed(2) : ''} |`);
  }
}
