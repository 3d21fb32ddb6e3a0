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
 * - latency: open loop at `rate` msg/s (default 5000) for messages/rate seconds; each message
 *   carries its *intended* send time, so a stall counts against every message behind it
 *   (no coordinated omission); latency = handler start − intended send time.
 * `ratio` is Herald ÷ raw of the rate (on the latency rows: of the achieved rate, which shows
 * whether Herald kept up; compare p50/p99 directly). Both sides share one process and the
 * machine's cores with the broker.
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

/** Runs the rows; `messages` per throughput row (default 20 000 ≈ 60 s on 2 cores with the broker). */
export async function runBench(options: { messages: number; log: (line: string) => void; rate?: number; url?: string }): Promise<BenchRow[]> {
  const N = Math.max(1000, Math.floor(options.messages));
  const rate = options.rate ?? 5000;
  const url = options.url ?? process.env.HERALD_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
  const log = options.log;
  const ns = `herald-bench-${randomUUID().slice(0, 8)}`;
  const admin = new Connection({ url, noDelay: true });
  admin.on('error', () => {});
  await admin.onConnect(10_000);
  const rawQueues: string[] = [];
  const transports: RabbitMqTransport[] = [];
  const rows: BenchRow[] = [];
  const latencyCount = Math.max(1000, Math.round(Math.min(N, rate * 10)));
  try {
    // ── raw peer ──
    const rawQueueSet = async (label: string): Promise<string[]> => {
      const qs = Array.from({ length: PARTITIONS }, (_, p) => `${ns}:raw:${label}:${p}`);
      for (const q of qs) {
        await admin.queueDeclare({ queue: q, durable: true, arguments: { 'x-queue-type': 'quorum', 'x-single-active-consumer': true } });
        rawQueues.push(q);
      }
      return qs;
    };
    const rawPublishAll = (ch: Channel, qs: readonly string[], count: number): Promise<void> =>
      windowed(count, 1, WINDOW, (i) =>
        ch.basicPublish({ routingKey: qs[i % qs.length]!, durable: true, contentType: 'application/json' }, Buffer.from(JSON.stringify(payload(i, 0)))),
      );
    const rawConsume = async (qs: readonly string[], onMsg: (m: AsyncMessage) => void): Promise<Channel[]> =>
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

    log(`rabbitmq bench: ${N} messages per throughput row, latency at ${rate}/s for ${latencyCount} messages; namespace ${ns}`);
    // Raw publish.
    {
      const qs = await rawQueueSet('pub');
      const ch = await admin.acquire();
      await ch.confirmSelect();
      const t0 = performance.now();
      await rawPublishAll(ch, qs, N);
      const secs = (performance.now() - t0) / 1000;
      await ch.close();
      rows.push({ case: 'rabbitmq raw publish, confirms, 8 quorum queues (peer)', messages: N, rate: round(N / secs) });
      log(`  raw publish: ${round(N / secs)} msg/s`);
    }
    // Raw end-to-end.
    {
      const qs = await rawQueueSet('e2e');
      let got = 0;
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      const chans = await rawConsume(qs, (m) => {
        const item = m.body as Item;
        if (typeof item.n === 'number' && ++got === N) done();
      });
      const pub = await admin.acquire();
      await pub.confirmSelect();
      const t0 = performance.now();
      await rawPublishAll(pub, qs, N);
      await all;
      const secs = (performance.now() - t0) / 1000;
      await Promise.all([...chans, pub].map((c) => c.close()));
      rows.push({ case: 'rabbitmq raw e2e publish → consume → ack (peer)', messages: N, rate: round(N / secs) });
      log(`  raw e2e: ${round(N / secs)} msg/s`);
    }
    // Raw latency, open loop.
    const rawLatency = await (async () => {
      const qs = await rawQueueSet('lat');
      const lat: number[] = [];
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      const chans = await rawConsume(qs, (m) => {
        const item = m.body as Item;
        lat.push((epochMicros() - item.t) / 1000);
        if (lat.length === latencyCount) done();
      });
      const pub = await admin.acquire();
      await pub.confirmSelect();
      const secs = await openLoop(latencyCount, rate, (from, to, intended) => {
        for (let i = from; i < to; i++) void pub.basicPublish({ routingKey: qs[i % qs.length]!, durable: true, contentType: 'application/json' }, Buffer.from(JSON.stringify(payload(i, intended(i))))).catch(() => {});
      });
      await all;
      await Promise.all([...chans, pub].map((c) => c.close()));
      lat.sort((a, b) => a - b);
      const row: BenchRow = { case: `rabbitmq raw latency, open loop ${rate}/s (peer)`, messages: latencyCount, rate: round(latencyCount / secs), p50: ms2(percentile(lat, 0.5)), p99: ms2(percentile(lat, 0.99)) };
      rows.push(row);
      log(`  raw latency: p50 ${row.p50} ms, p99 ${row.p99} ms`);
      return row;
    })();

    // ── Herald ──
    const transport = (): RabbitMqTransport => {
      const t = createRabbitMqTransport({ url, namespace: ns, defaultPartitions: PARTITIONS });
      transports.push(t);
      return t;
    };
    const envelopes = (count: number, stamp: (i: number) => number): Array<{ envelope: CloudEvent; key: string }> =>
      Array.from({ length: count }, (_, i) => ({ envelope: createEnvelope({ type: 'bench.item', source: 'herald-bench', data: payload(i, stamp(i)) }), key: `k${i % KEYS}` }));
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
    // Herald publish.
    {
      const t = transport();
      await t.ensureTopic('pub');
      // A group's partition queues must exist (as in the raw row): a topic without groups routes
      // to its unrouted holding queue instead. Subscribe once, then leave (the queues stay).
      const sub = t.subscribe('pub', { group: 'bench' });
      const until = performance.now() + 15_000;
      while (sub.assignment().length < PARTITIONS && performance.now() < until) await new Promise((r) => setTimeout(r, 20));
      await sub.close();
      const msgs = envelopes(N, () => 0); // built before the clock starts: createEnvelope is core's cost
      const t0 = performance.now();
      await heraldPublishAll(t, 'pub', msgs);
      const secs = (performance.now() - t0) / 1000;
      const peer = rows[0]!;
      rows.push({ case: 'rabbitmq publish (Herald), 10 × 100 in flight', messages: N, rate: round(N / secs), peer: peer.case, ratio: N / secs / peer.rate });
      log(`  herald publish: ${round(N / secs)} msg/s`);
    }
    // Herald end-to-end through the router.
    {
      const t = transport();
      let got = 0;
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      const c = await heraldConsumer(t, 'e2e', () => {
        if (++got === N) done();
      });
      const msgs = envelopes(N, () => 0);
      const t0 = performance.now();
      await heraldPublishAll(t, 'e2e', msgs);
      await all;
      const secs = (performance.now() - t0) / 1000;
      await c.close({ timeoutMs: 2000 });
      const peer = rows[1]!;
      rows.push({ case: 'rabbitmq e2e publish → router → ack (Herald)', messages: N, rate: round(N / secs), peer: peer.case, ratio: N / secs / peer.rate });
      log(`  herald e2e: ${round(N / secs)} msg/s`);
    }
    // Herald latency, open loop.
    {
      const t = transport();
      const lat: number[] = [];
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      const c = await heraldConsumer(t, 'lat', (env) => {
        lat.push((epochMicros() - (env.data as Item).t) / 1000);
        if (lat.length === latencyCount) done();
      });
      const secs = await openLoop(latencyCount, rate, (from, to, intended) => {
        const batch = [];
        for (let i = from; i < to; i++) batch.push({ envelope: createEnvelope({ type: 'bench.item', source: 'herald-bench', data: payload(i, intended(i)) }), key: `k${i % KEYS}` });
        void t.publish('lat', batch).catch(() => {});
      });
      await all;
      await c.close({ timeoutMs: 2000 });
      lat.sort((a, b) => a - b);
      const row: BenchRow = {
        case: `rabbitmq latency, open loop ${rate}/s, publish → router handler (Herald)`,
        messages: latencyCount,
        rate: round(latencyCount / secs),
        p50: ms2(percentile(lat, 0.5)),
        p99: ms2(percentile(lat, 0.99)),
        peer: rawLatency.case,
        ratio: latencyCount / secs / rawLatency.rate,
      };
      rows.push(row);
      log(`  herald latency: p50 ${row.p50} ms, p99 ${row.p99} ms (raw: p50 ${rawLatency.p50} ms, p99 ${rawLatency.p99} ms)`);
    }
    return rows;
  } finally {
    const names = new Set<string>();
    const exchanges = new Set<string>();
    for (const t of transports) {
      await t.close({ timeoutMs: 1000 }).catch(() => {});
      for (const q of t.declaredNames().queues) names.add(q);
      for (const e of t.declaredNames().exchanges) exchanges.add(e);
    }
    for (const q of [...rawQueues, ...names]) await admin.queueDelete({ queue: q }).catch(() => {});
    for (const e of exchanges) await admin.exchangeDelete({ exchange: e }).catch(() => {});
    await admin.close().catch(() => {});
  }
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
