/**
 * NATS JetStream benchmark: Herald's transport and router side by side with the raw
 * @nats-io/jetstream client doing the same work, in the same run, against the server on
 * 127.0.0.1:4222 (NATS_URL overrides).
 *
 *   node --import tsx packages/nats/src/nats.bench.ts [messages=20000]
 *
 * Every message carries a 256-byte JSON `data`; Herald sends the CloudEvents envelope (JSON
 * structured format, ~470 bytes) and the raw peer sends the same JSON bytes with the same
 * headers (`Nats-Msg-Id`, the key), to a stream of the same shape (one subject per partition,
 * 8 partitions, file storage, R1). Envelopes are built before the clock starts; the raw peer
 * stringifies in its loop as Herald encodes in publish(). Rows:
 *
 * - publish (pipelined): `messages` messages (at most 50 000), batches of 100 in flight up to 64 batches
 *   (Herald: `publish(topic, batch)`; raw: one `js.publish` per message, the same window).
 * - end-to-end (pipelined): the same publishing while one consumer in the same process handles
 *   and acks every message (Herald: `createConsumer` router, `handleEnvelope`, ordered by key;
 *   raw: one durable pull consumer, `consume()`, JSON.parse + ack per message). Time runs from
 *   the first publish to the last handled message.
 * - publish @5000/s and end-to-end @5000/s: open loop — message i is due at t0 + i/5000 s and
 *   sent then whatever happened before (no coordinated omission), min(messages, 20 000) messages
 *   (at most 4 s); latency runs from the due time
 *   to the PubAck (publish) or to the handler (end-to-end). p50/p99 in ms.
 *
 * Herald rows carry `peer` and `ratio` (Herald rate / raw rate of the same case).
 */
import { pathToFileURL } from 'node:url';
import { type CloudEvent, type Consumer, createConsumer, createEnvelope, MemoryDeadLetterStore } from '@herald/core';
import { AckPolicy, DeliverPolicy, type JetStreamClient, type JetStreamManager, jetstream, jetstreamManager, StorageType } from '@nats-io/jetstream';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { createNatsTransport, type NatsTransport } from './transport.ts';

export interface BenchRow {
  case: string;
  messages: number;
  rate: number;
  p50?: number;
  p99?: number;
  peer?: string;
  ratio?: number;
}

const PEER = 'raw @nats-io/jetstream';
const PARTITIONS = 8;
const KEYS = 256;
const OPEN_LOOP_RATE = 5000;
const BATCH = 100;
const WINDOW = 64;
const PAD = 'x'.repeat(256);

function data(n: number, t: number): { n: number; t: number; pad: string } {
  const used = JSON.stringify({ n, t, pad: '' }).length;
  return { n, t, pad: PAD.slice(0, 256 - used) };
}

function envelopes(count: number, t = 0): CloudEvent[] {
  return Array.from({ length: count }, (_, i) => createEnvelope({ type: 'bench.item', source: 'herald-bench', partitionkey: `k${i % KEYS}`, data: data(i, t) }));
}

function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Runs `send(i)` for i in [0, count) in batches, at most `window` in flight. */
async function pipelined(count: number, send: (from: number, n: number) => Promise<unknown>): Promise<void> {
  const pending = new Set<Promise<unknown>>();
  for (let i = 0; i < count; i += BATCH) {
    const p = send(i, Math.min(BATCH, count - i));
    pending.add(p);
    void p.then(() => pending.delete(p));
    if (pending.size >= WINDOW) await Promise.race(pending);
  }
  await Promise.all(pending);
}

/** Open loop: calls `send(i, dueMs)` when message i is due; resolves when all were sent. */
async function openLoop(count: number, rate: number, send: (i: number, due: number) => void): Promise<void> {
  const t0 = performance.now() + 5;
  let i = 0;
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const now = performance.now();
      while (i < count && t0 + (i * 1000) / rate <= now) {
        send(i, t0 + (i * 1000) / rate);
        i++;
      }
      if (i >= count) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
}

function waitUntil(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = performance.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (cond()) resolve();
      else if (performance.now() > end) reject(new Error(`bench: timed out waiting for ${what}`));
      else setTimeout(check, 2);
    };
    check();
  });
}

// ── raw peer ───────────────────────────────────────────────────────────────

class Raw {
  readonly #stream: string;
  constructor(
    readonly nc: NatsConnection,
    readonly js: JetStreamClient,
    readonly jsm: JetStreamManager,
  ) {
    this.#stream = `RAWBENCH_${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  }
  #n = 0;

  async stream(): Promise<string> {
    const name = `${this.#stream}_${this.#n++}`;
    await this.jsm.streams.add({ name, subjects: [`${name}.*`], storage: StorageType.File, num_replicas: 1, duplicate_window: 120e9 });
    return name;
  }

  publish(stream: string, env: CloudEvent, i: number): Promise<unknown> {
    const h = headers();
    h.set('Content-Type', 'application/cloudevents+json');
    h.set('Herald-Key', env.partitionkey!);
    return this.js.publish(`${stream}.${i % PARTITIONS}`, JSON.stringify(env), { msgID: env.id, headers: h });
  }

  /** A durable pull consumer reading everything, acking each message after JSON.parse. */
  async consume(stream: string, onMessage: (env: { data: { n: number; t: number } }) => void): Promise<() => Promise<void>> {
    await this.jsm.consumers.add(stream, { durable_name: 'bench', ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All });
    const c = await this.js.consumers.get(stream, 'bench');
    const msgs = await c.consume({ max_messages: 512 });
    const done = (async () => {
      for await (const m of msgs) {
        onMessage(JSON.parse(m.string()) as { data: { n: number; t: number } });
        m.ack();
      }
    })();
    return async () => {
      await msgs.close();
      await done;
    };
  }

  async drop(stream: string): Promise<void> {
    await this.jsm.streams.delete(stream).catch(() => {});
  }
}

// ── Herald ─────────────────────────────────────────────────────────────────

async function heraldConsumer(transport: NatsTransport, topic: string, onMessage: (env: CloudEvent) => void): Promise<Consumer> {
  const consumer = createConsumer({ transport, group: `bench-${Date.now().toString(36)}`, deadLetters: new MemoryDeadLetterStore(), concurrency: 64, validate: false });
  consumer.handleEnvelope(topic, '*', (env) => onMessage(env));
  await consumer.start();
  await waitUntil(() => consumer.assignment(topic).length === PARTITIONS, 15_000, 'the bench consumer to own every partition');
  // Each partition's JetStream consumer is created on its first fetch, just after assignment.
  await new Promise((r) => setTimeout(r, 500));
  return consumer;
}

async function dropTopic(jsm: JetStreamManager, topic: string): Promise<void> {
  await jsm.streams.delete(`HERALD_${topic.replaceAll('.', '~')}`).catch(() => {});
}

export async function runBench(options: { messages: number; log: (line: string) => void }): Promise<BenchRow[]> {
  // Throughput rows: at most 50 000 messages (≈ 2–4 s each here); open-loop rows: at most 4 s each.
  const N = Math.min(50_000, Math.max(1000, Math.floor(options.messages)));
  const L = Math.min(N, OPEN_LOOP_RATE * 4);
  const log = options.log;
  const servers = process.env.NATS_URL ?? '127.0.0.1:4222';
  const nc = await connect({ servers, noAsyncTraces: true });
  const raw = new Raw(nc, jetstream(nc), await jetstreamManager(nc));
  const transport = await createNatsTransport({ servers });
  const jsm = raw.jsm;
  const run = Date.now().toString(36);
  const rows: BenchRow[] = [];
  const add = (herald: Omit<BenchRow, 'peer' | 'ratio'>, peer: Omit<BenchRow, 'peer' | 'ratio'>): void => {
    rows.push({ ...peer, case: `${peer.case} (${PEER})` });
    rows.push({ ...herald, peer: PEER, ratio: round(herald.rate / peer.rate, 3) });
    log(`${herald.case}: herald ${herald.rate.toLocaleString('en-US')} msg/s vs raw ${peer.rate.toLocaleString('en-US')} msg/s${herald.p50 !== undefined ? ` (p50 ${herald.p50} / ${peer.p50} ms, p99 ${herald.p99} / ${peer.p99} ms)` : ''}`);
  };
  try {
    // Warm-up: connections, stream creation paths, JIT.
    {
      const s = await raw.stream();
      const envs = envelopes(2000);
      await pipelined(envs.length, (from, n) => Promise.all(envs.slice(from, from + n).map((e, j) => raw.publish(s, e, from + j))));
      await raw.drop(s);
      const topic = `bench.warm.${run}`;
      await transport.ensureTopic(topic, { partitions: PARTITIONS });
      await pipelined(envs.length, (from, n) => transport.publish(topic, envs.slice(from, from + n).map((envelope) => ({ envelope }))));
      await dropTopic(jsm, topic);
    }

    // 1. publish, pipelined
    {
      log(`publish, pipelined: ${N} messages`);
      const envs = envelopes(N);
      const s = await raw.stream();
      let t0 = performance.now();
      await pipelined(N, (from, n) => Promise.all(envs.slice(from, from + n).map((e, j) => raw.publish(s, e, from + j))));
      const rawMs = performance.now() - t0;
      await raw.drop(s);
      const topic = `bench.pub.${run}`;
      await transport.ensureTopic(topic, { partitions: PARTITIONS });
      const hEnvs = envelopes(N);
      t0 = performance.now();
      await pipelined(N, (from, n) => transport.publish(topic, hEnvs.slice(from, from + n).map((envelope) => ({ envelope }))));
      const heraldMs = performance.now() - t0;
      await dropTopic(jsm, topic);
      add({ case: `publish, ${BATCH} per call, ${WINDOW} calls in flight`, messages: N, rate: Math.round((N / heraldMs) * 1000) }, { case: `publish, ${WINDOW}×${BATCH} in flight`, messages: N, rate: Math.round((N / rawMs) * 1000) });
    }

    // 2. end-to-end, pipelined
    {
      log(`end-to-end, pipelined: ${N} messages`);
      const envs = envelopes(N);
      const s = await raw.stream();
      let got = 0;
      const stopRaw = await raw.consume(s, () => {
        got++;
      });
      let t0 = performance.now();
      await pipelined(N, (from, n) => Promise.all(envs.slice(from, from + n).map((e, j) => raw.publish(s, e, from + j))));
      await waitUntil(() => got >= N, 120_000, 'the raw consumer');
      const rawMs = performance.now() - t0;
      await stopRaw();
      await raw.drop(s);

      const topic = `bench.e2e.${run}`;
      await transport.ensureTopic(topic, { partitions: PARTITIONS });
      let handled = 0;
      const consumer = await heraldConsumer(transport, topic, () => {
        handled++;
      });
      const hEnvs = envelopes(N);
      t0 = performance.now();
      await pipelined(N, (from, n) => transport.publish(topic, hEnvs.slice(from, from + n).map((envelope) => ({ envelope }))));
      await waitUntil(() => handled >= N, 120_000, 'the Herald consumer');
      const heraldMs = performance.now() - t0;
      await consumer.close({ timeoutMs: 2000 });
      await dropTopic(jsm, topic);
      add(
        { case: 'end-to-end (publish → router handle → ack), one process', messages: N, rate: Math.round((N / heraldMs) * 1000) },
        { case: 'end-to-end (publish → pull consume → ack), one process', messages: N, rate: Math.round((N / rawMs) * 1000) },
      );
    }

    // 3. publish latency, open loop
    {
      log(`publish @${OPEN_LOOP_RATE}/s open loop: ${L} messages`);
      const measure = async (send: (i: number) => Promise<unknown>): Promise<{ rate: number; lat: number[] }> => {
        const lat: number[] = new Array(L);
        const pending: Promise<unknown>[] = [];
        const t0 = performance.now();
        await openLoop(L, OPEN_LOOP_RATE, (i, due) => {
          pending.push(send(i).then(() => (lat[i] = performance.now() - due)));
        });
        await Promise.all(pending);
        const ms = performance.now() - t0;
        return { rate: Math.round((L / ms) * 1000), lat: lat.sort((a, b) => a - b) };
      };
      const envs = envelopes(L);
      const s = await raw.stream();
      const r = await measure((i) => raw.publish(s, envs[i]!, i));
      await raw.drop(s);
      const topic = `bench.publat.${run}`;
      await transport.ensureTopic(topic, { partitions: PARTITIONS });
      const hEnvs = envelopes(L);
      const h = await measure((i) => transport.publish(topic, [{ envelope: hEnvs[i]! }]));
      await dropTopic(jsm, topic);
      add(
        { case: `publish @${OPEN_LOOP_RATE}/s open loop, 1 per call`, messages: L, rate: h.rate, p50: round(percentile(h.lat, 0.5)), p99: round(percentile(h.lat, 0.99)) },
        { case: `publish @${OPEN_LOOP_RATE}/s open loop`, messages: L, rate: r.rate, p50: round(percentile(r.lat, 0.5)), p99: round(percentile(r.lat, 0.99)) },
      );
    }

    // 4. end-to-end latency, open loop (the due time travels in the payload)
    {
      log(`end-to-end @${OPEN_LOOP_RATE}/s open loop: ${L} messages`);
      const origin = performance.timeOrigin;
      const envAt = (i: number, due: number): CloudEvent =>
        createEnvelope({ type: 'bench.item', source: 'herald-bench', partitionkey: `k${i % KEYS}`, data: data(i, Math.round((origin + due) * 1000)) });
      const latOf = (t: number): number => performance.now() - (t / 1000 - origin);

      const s = await raw.stream();
      const rawLat: number[] = [];
      const stopRaw = await raw.consume(s, (env) => {
        rawLat.push(latOf(env.data.t));
      });
      let t0 = performance.now();
      await openLoop(L, OPEN_LOOP_RATE, (i, due) => void raw.publish(s, envAt(i, due), i));
      await waitUntil(() => rawLat.length >= L, 60_000, 'the raw consumer (open loop)');
      const rawMs = performance.now() - t0;
      await stopRaw();
      await raw.drop(s);

      const topic = `bench.e2elat.${run}`;
      await transport.ensureTopic(topic, { partitions: PARTITIONS });
      const hLat: number[] = [];
      const consumer = await heraldConsumer(transport, topic, (env) => {
        hLat.push(latOf((env.data as { t: number }).t));
      });
      t0 = performance.now();
      await openLoop(L, OPEN_LOOP_RATE, (i, due) => void transport.publish(topic, [{ envelope: envAt(i, due) }]));
      await waitUntil(() => hLat.length >= L, 60_000, 'the Herald consumer (open loop)');
      const heraldMs = performance.now() - t0;
      await consumer.close({ timeoutMs: 2000 });
      await dropTopic(jsm, topic);
      rawLat.sort((a, b) => a - b);
      hLat.sort((a, b) => a - b);
      add(
        { case: `end-to-end @${OPEN_LOOP_RATE}/s open loop (publish → router handle)`, messages: L, rate: Math.round((L / heraldMs) * 1000), p50: round(percentile(hLat, 0.5)), p99: round(percentile(hLat, 0.99)) },
        { case: `end-to-end @${OPEN_LOOP_RATE}/s open loop (publish → pull consume)`, messages: L, rate: Math.round((L / rawMs) * 1000), p50: round(percentile(rawLat, 0.5)), p99: round(percentile(rawLat, 0.99)) },
      );
    }
  } finally {
    await transport.close({ timeoutMs: 2000 });
    await nc.close();
  }
  return rows;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const messages = Number(process.argv[2] ?? 20_000);
  const t0 = performance.now();
  const rows = await runBench({ messages, log: (l) => console.error(`# ${l}`) });
  console.log('| case | messages | msg/s | p50 ms | p99 ms | vs raw |\n|:--|--:|--:|--:|--:|--:|');
  for (const r of rows) console.log(`| ${r.case} | ${r.messages} | ${r.rate.toLocaleString('en-US')} | ${r.p50 ?? ''} | ${r.p99 ?? ''} | ${r.ratio ?? ''} |`);
  console.log(`\n${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
