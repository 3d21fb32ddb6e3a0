/**
 * Benchmark of the RabbitMQ transport beside the raw rabbitmq-client doing the same work, in
 * the same run, on the same broker (STYLE rule 12):
 *
 *   node --import tsx packages/rabbitmq/src/rabbitmq.bench.ts [messages=20000]
 *
 * Work, both sides: 256-byte JSON payloads, persistent messages published with confirms to
 * durable quorum queues (8 of them: the raw peer publishes round-robin to 8 queues, Herald
 * places 256 keys on its 8 partition queues), consumed with basic.ack, prefetch 1024.
 * - publish: up to 1000 messages unconfirmed (raw: basicPublish each; Herald: publish() calls
 *   of 100, 10 in flight), into a group's partition queues with no consumer;
 * - end-to-end: publish as above while consumers in the same process take every message —
 *   raw: basicConsume on the 8 queues, ack each; Herald: the router (createConsumer, one
 *   handler, no schema validation) with its per-key lanes, acking after the handler;
 * - latency: open loop at `rate` msg/s (default 5000) for up to 4 s; each message
 *   carries its *intended* send time, so a stall counts against every message behind it
 *   (no coordinated omission); latency = handler start − intended send time.
 * Each pair runs `runs` times (default 3), interleaved; rows are medians. `ratio` is Herald ÷ raw
 * of the rate (on the latency rows: of the achieved rate, which shows whether Herald kept up;
 * compare p50/p99 directly). Both sides share one process and the machine's cores with the
 * broker. Every run declares its own queues and deletes them afterwards.
 */
import { pathToFileURL } from 'node:url';
import { randomUUID } from 'node:crypto';
import { type CloudEvent, createConsumer, createEnvelope, MemoryDeadLetterStore } from '@herald/core';
import { type AsyncMessage, type Channel, Connection } from 'rabbitmq-client';
import { createRabbitMqTransport, type RabbitMqTransport } from './transport.ts';

export interface BenchRow {
  case: string;
  messages: number;
  rate: number;
  p50?: number;
  p99?: number;
  peer?: string;
  ratio?: number;
}

const PAYLOAD_BYTES = 256;
const PARTITIONS = 8;
const KEYS = 256;
const WINDOW = 1000;
const PREFETCH = 1024;
const PAD = 'x'.repeat(PAYLOAD_BYTES);

interface Item {
  n: number;
  t: number;
  pad: string;
}

function payload(n: number, t: number): Item {
  const used = JSON.stringify({ n, t, pad: '' }).length;
  return { n, t, pad: PAD.slice(0, PAYLOAD_BYTES - used) };
}

function epochMicros(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

const round = (x: number): number => Math.round(x);
const ms2 = (x: number): number => Math.round(x * 100) / 100;

/**
 * Runs the rows: each (raw, Herald) pair `runs` times, interleaved (raw first on even runs,
 * Herald first on odd ones) so drifting machine load hits both sides alike; every row is the
 * median of its runs. `messages` per throughput run (default 20 000: about 60 s in all with 3
 * runs on 2 cores beside the broker); the latency runs last `min(messages, 4 × rate)` messages.
 */
export async function runBench(options: { messages: number; log: (line: string) => void; rate?: number; runs?: number; url?: string }): Promise<BenchRow[]> {
  const N = Math.max(1000, Math.floor(options.messages));
  const rate = options.rate ?? 5000;
  const runs = Math.max(1, options.runs ?? 3);
  const url = options.url ?? process.env.HERALD_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
  const log = options.log;
  const ns = `herald-bench-${randomUUID().slice(0, 8)}`;
  const latencyCount = Math.max(1000, Math.round(Math.min(N, rate * 4)));
  const admin = new Connection({ url, noDelay: true });
  admin.on('error', () => {});
  await admin.onConnect(10_000);
  let runSeq = 0;

  // ── raw peer: 8 quorum queues, round-robin, confirms, basic.ack ──
  const withRawQueues = async <T>(fn: (qs: readonly string[]) => Promise<T>): Promise<T> => {
    const qs = Array.from({ length: PARTITIONS }, (_, p) => `${ns}:raw:${runSeq}:${p}`);
    runSeq++;
    try {
      for (const q of qs) await admin.queueDeclare({ queue: q, durable: true, arguments: { 'x-queue-type': 'quorum', 'x-single-active-consumer': true } });
      return await fn(qs);
    } finally {
      for (const q of qs) await admin.queueDelete({ queue: q }).catch(() => {});
    }
  };
  const rawPublishAll = (ch: Channel, qs: readonly string[], count: number): Promise<void> =>
    windowed(count, 1, WINDOW, (i) => ch.basicPublish({ routingKey: qs[i % qs.length]!, durable: true, contentType: 'application/json' }, Buffer.from(JSON.stringify(payload(i, 0)))));
  const rawConsume = (qs: readonly string[], onMsg: (m: AsyncMessage) => void): Promise<Channel[]> =>
    Promise.all(
      qs.map(async (q) => {
        const ch = await admin.acquire();
        await ch.basicQos({ prefetchCount: PREFETCH });
        await ch.basicConsume({ queue: q }, (m) => {
          onMsg(m);
          ch.basicAck({ deliveryTag: m.deliveryTag });
        });
        return ch;
      }),
    );
  const rawPublish = (): Promise<number> =>
    withRawQueues(async (qs) => {
      const ch = await admin.acquire();
      await ch.confirmSelect();
      const t0 = performance.now();
      await rawPublishAll(ch, qs, N);
      const secs = (performance.now() - t0) / 1000;
      await ch.close();
      return N / secs;
    });
  const rawE2e = (): Promise<number> =>
    withRawQueues(async (qs) => {
      let got = 0;
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      const chans = await rawConsume(qs, (m) => {
        if (typeof (m.body as Item).n === 'number' && ++got === N) done();
      });
      const pub = await admin.acquire();
      await pub.confirmSelect();
      const t0 = performance.now();
      await rawPublishAll(pub, qs, N);
      await all;
      const secs = (performance.now() - t0) / 1000;
      await Promise.all([...chans, pub].map((c) => c.close()));
      return N / secs;
    });
  const rawLatency = (): Promise<Latency> =>
    withRawQueues(async (qs) => {
      const lat: number[] = [];
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      const chans = await rawConsume(qs, (m) => {
        lat.push((epochMicros() - (m.body as Item).t) / 1000);
        if (lat.length === latencyCount) done();
      });
      const pub = await admin.acquire();
      await pub.confirmSelect();
      const secs = await openLoop(latencyCount, rate, (from, to, intended) => {
        for (let i = from; i < to; i++) void pub.basicPublish({ routingKey: qs[i % qs.length]!, durable: true, contentType: 'application/json' }, Buffer.from(JSON.stringify(payload(i, intended(i))))).catch(() => {});
      });
      await all;
      await Promise.all([...chans, pub].map((c) => c.close()));
      return summarize(lat, latencyCount / secs);
    });

  // ── Herald: the transport and the router ──
  const withTransport = async <T>(fn: (t: RabbitMqTransport, topic: string) => Promise<T>): Promise<T> => {
    const t = createRabbitMqTransport({ url, namespace: ns, defaultPartitions: PARTITIONS });
    const topic = `bench-${runSeq++}`;
    try {
      await t.ensureTopic(topic);
      return await fn(t, topic);
    } finally {
      await t.close({ timeoutMs: 1000 }).catch(() => {});
      for (const q of t.declaredNames().queues) await admin.queueDelete({ queue: q }).catch(() => {});
      for (const e of t.declaredNames().exchanges) await admin.exchangeDelete({ exchange: e }).catch(() => {});
    }
  };
  const envelopes = (count: number): Array<{ envelope: CloudEvent; key: string }> =>
    Array.from({ length: count }, (_, i) => ({ envelope: createEnvelope({ type: 'bench.item', source: 'herald-bench', data: payload(i, 0) }), key: `k${i % KEYS}` }));
  const heraldPublishAll = (t: RabbitMqTransport, topic: string, msgs: ReadonlyArray<{ envelope: CloudEvent; key: string }>): Promise<void> =>
    windowed(msgs.length, 100, WINDOW, (i) => t.publish(topic, msgs.slice(i, i + 100)));
  const heraldConsumer = async (t: RabbitMqTransport, topic: string, onEnvelope: (env: CloudEvent) => void) => {
    const c = createConsumer({ transport: t, group: 'bench', deadLetters: new MemoryDeadLetterStore(), maxInFlight: PREFETCH, validate: false });
    c.handleEnvelope(topic, '*', (env) => onEnvelope(env));
    await c.start();
    const end = performance.now() + 15_000;
    while (c.assignment(topic).length < PARTITIONS) {
      if (performance.now() > end) throw new Error('the bench consumer did not get its partitions within 15 s');
      await new Promise((r) => setTimeout(r, 20));
    }
    return c;
  };
  const heraldPublish = (): Promise<number> =>
    withTransport(async (t, topic) => {
      // A group's partition queues must exist (as in the raw row): a topic without groups routes
      // to its unrouted holding queue instead. Subscribe once, then leave (the queues stay).
      const sub = t.subscribe(topic, { group: 'bench' });
      const until = performance.now() + 15_000;
      while (sub.assignment().length < PARTITIONS && performance.now() < until) await new Promise((r) => setTimeout(r, 20));
      await sub.close();
      const msgs = envelopes(N); // built before the clock starts: createEnvelope is core's cost
      const t0 = performance.now();
      await heraldPublishAll(t, topic, msgs);
      return N / ((performance.now() - t0) / 1000);
    });
  const heraldE2e = (): Promise<number> =>
    withTransport(async (t, topic) => {
      let got = 0;
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      const c = await heraldConsumer(t, topic, () => {
        if (++got === N) done();
      });
      const msgs = envelopes(N);
      const t0 = performance.now();
      await heraldPublishAll(t, topic, msgs);
      await all;
      const secs = (performance.now() - t0) / 1000;
      await c.close({ timeoutMs: 2000 });
      return N / secs;
    });
  const heraldLatency = (): Promise<Latency> =>
    withTransport(async (t, topic) => {
      const lat: number[] = [];
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      const c = await heraldConsumer(t, topic, (env) => {
        lat.push((epochMicros() - (env.data as Item).t) / 1000);
        if (lat.length === latencyCount) done();
      });
      const secs = await openLoop(latencyCount, rate, (from, to, intended) => {
        const batch = [];
        for (let i = from; i < to; i++) batch.push({ envelope: createEnvelope({ type: 'bench.item', source: 'herald-bench', data: payload(i, intended(i)) }), key: `k${i % KEYS}` });
        void t.publish(topic, batch).catch(() => {});
      });
      await all;
      await c.close({ timeoutMs: 2000 });
      return summarize(lat, latencyCount / secs);
    });

  log(`rabbitmq bench: ${N} messages per throughput run, latency at ${rate}/s for ${latencyCount} messages, ${runs} interleaved runs; namespace ${ns}`);
  const pairs = async <T>(label: string, raw: () => Promise<T>, herald: () => Promise<T>, show: (x: T) => string): Promise<{ raw: T[]; herald: T[] }> => {
    const out = { raw: [] as T[], herald: [] as T[] };
    for (let r = 0; r < runs; r++) {
      for (const side of r % 2 === 0 ? (['raw', 'herald'] as const) : (['herald', 'raw'] as const)) {
        const x = await (side === 'raw' ? raw() : herald());
        out[side].push(x);
        log(`  ${label} run ${r + 1}, ${side}: ${show(x)}`);
      }
    }
    return out;
  };
  try {
    const rows: BenchRow[] = [];
    const pub = await pairs('publish', rawPublish, heraldPublish, (x) => `${round(x)} msg/s`);
    const e2e = await pairs('e2e', rawE2e, heraldE2e, (x) => `${round(x)} msg/s`);
    const lat = await pairs('latency', rawLatency, heraldLatency, (x) => `p50 ${x.p50} ms, p99 ${x.p99} ms`);
    const rawPub = median(pub.raw);
    const rawE2eRate = median(e2e.raw);
    const rawLat = { rate: median(lat.raw.map((x) => x.rate)), p50: median(lat.raw.map((x) => x.p50)), p99: median(lat.raw.map((x) => x.p99)) };
    const heraldLat = { rate: median(lat.herald.map((x) => x.rate)), p50: median(lat.herald.map((x) => x.p50)), p99: median(lat.herald.map((x) => x.p99)) };
    const rawPubCase = 'rabbitmq raw publish, confirms, 8 quorum queues (peer)';
    const rawE2eCase = 'rabbitmq raw e2e publish → consume → ack (peer)';
    const rawLatCase = `rabbitmq raw latency, open loop ${rate}/s (peer)`;
    rows.push({ case: rawPubCase, messages: N, rate: round(rawPub) });
    rows.push({ case: 'rabbitmq publish (Herald), 10 × 100 in flight', messages: N, rate: round(median(pub.herald)), peer: rawPubCase, ratio: median(pub.herald) / rawPub });
    rows.push({ case: rawE2eCase, messages: N, rate: round(rawE2eRate) });
    rows.push({ case: 'rabbitmq e2e publish → router → ack (Herald)', messages: N, rate: round(median(e2e.herald)), peer: rawE2eCase, ratio: median(e2e.herald) / rawE2eRate });
    rows.push({ case: rawLatCase, messages: latencyCount, rate: round(rawLat.rate), p50: ms2(rawLat.p50), p99: ms2(rawLat.p99) });
    rows.push({
      case: `rabbitmq latency, open loop ${rate}/s, publish → router handler (Herald)`,
      messages: latencyCount,
      rate: round(heraldLat.rate),
      p50: ms2(heraldLat.p50),
      p99: ms2(heraldLat.p99),
      peer: rawLatCase,
      ratio: heraldLat.rate / rawLat.rate,
    });
    return rows;
  } finally {
    await admin.close().catch(() => {});
  }
}

interface Latency {
  readonly rate: number;
  readonly p50: number;
  readonly p99: number;
}

function summarize(lat: number[], rate: number): Latency {
  lat.sort((a, b) => a - b);
  return { rate, p50: ms2(percentile(lat, 0.5)), p99: ms2(percentile(lat, 0.99)) };
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Calls `send(i)` for i = 0, step, 2·step… below `count`, keeping at most `window` messages
 * (window/step calls) unresolved; resolves when all have resolved. A counter and one waiter,
 * not Promise.race over the pending set (which costs O(window) per message).
 */
async function windowed(count: number, step: number, window: number, send: (i: number) => Promise<unknown>): Promise<void> {
  let inFlight = 0;
  let failure: unknown;
  let wake: (() => void) | undefined;
  const done = (): void => {
    inFlight -= step;
    const w = wake;
    wake = undefined;
    w?.();
  };
  for (let i = 0; i < count; i += step) {
    inFlight += step;
    send(i).then(done, (e: unknown) => {
      failure ??= e;
      done();
    });
    while (inFlight >= window) await new Promise<void>((r) => (wake = r));
  }
  while (inFlight > 0) await new Promise<void>((r) => (wake = r));
  if (failure !== undefined) throw failure;
}

/**
 * Sends `count` messages at `rate`/s: every millisecond, what is due so far goes out as one
 * batch (`send(from, to, intended)`), each message stamped with its intended send time.
 * Resolves with the seconds from the first intended send to the last actual one.
 */
async function openLoop(count: number, rate: number, send: (from: number, to: number, intended: (i: number) => number) => void): Promise<number> {
  const start = epochMicros();
  const intended = (i: number): number => start + Math.round((i * 1e6) / rate);
  let sent = 0;
  while (sent < count) {
    const due = Math.min(count, Math.floor(((epochMicros() - start) * rate) / 1e6) + 1);
    if (due > sent) {
      send(sent, due, intended);
      sent = due;
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  return (epochMicros() - start) / 1e6;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const rows = await runBench({ messages: Number(process.argv[2] ?? 20_000), log: (l) => console.error(l) });
  console.log('| case | messages | msg/s | p50 ms | p99 ms | ratio vs raw |\n|:--|--:|--:|--:|--:|--:|');
  for (const r of rows) console.log(`| ${r.case} | ${r.messages} | ${r.rate.toLocaleString('en-US')} | ${r.p50 ?? ''} | ${r.p99 ?? ''} | ${r.ratio === undefined ? '—' : r.ratio.toFixed(3)} |`);
}
