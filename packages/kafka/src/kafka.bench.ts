/**
 * Kafka benchmark: Herald's transport and router side by side with raw kafkajs doing the same
 * work, in the same run, against KAFKA_BROKERS or (unset) a librdkafka mock cluster started
 * for the run (`kcat` must be installed).
 *
 *   node --import tsx packages/kafka/src/kafka.bench.ts [messages=20000]
 *
 * Every message carries a 256-byte JSON `data` and a key out of 256. Herald sends the
 * CloudEvents binary binding (ce_ headers, data as the value); the raw peer sends the JSON
 * structured envelope as the value with the same key (kafkajs' DefaultPartitioner, which
 * places keys as Herald does). Both use acks=-1, 8 partitions (4 on the mock, which cannot
 * choose), one consumer-group member in the same process. Envelopes are built before the
 * clock starts. Rows:
 *
 * - publish (pipelined): `messages` messages (at most 10 000 on the mock, 50 000 on a cluster) in batches of 100, up to 16 batches in flight
 *   (Herald: `publish(topic, batch)`; raw: `producer.send` of the same batch).
 * - end-to-end (pipelined): the same publishing while the consumer handles and acks every
 *   message (Herald: `createConsumer` router, `handleEnvelope`, ordered by key, offsets committed
 *   at the low watermark; raw: `consumer.run` with eachBatch, JSON.parse per message,
 *   resolveOffset, kafkajs auto-commit). Time runs from the first publish to the last handled.
 * - publish @5000/s and end-to-end @5000/s: open loop — message i is due at t0 + i/5000 s and
 *   sent then (one message per send) whatever happened before (no coordinated omission),
 *   min(messages, 20 000) messages; latency runs from the due time to the produce ack (publish)
 *   or to the handler (end-to-end). p50/p99 in ms.
 *
 * Herald rows carry `peer` and `ratio` (Herald rate / raw rate of the same case).
 */
import { pathToFileURL } from 'node:url';
import { type CloudEvent, createConsumer, createEnvelope, encodeEnvelope, MemoryDeadLetterStore } from '@herald/core';
import kafkajs from 'kafkajs';
import type { Consumer as KafkaConsumer, Kafka as KafkaClient, Producer } from 'kafkajs';
import { createKafkaTransport, type KafkaTransport } from './kafka-transport.ts';
import { type MockCluster, startMockCluster } from './mock-cluster.ts';

export interface BenchRow {
  case: string;
  messages: number;
  rate: number;
  p50?: number;
  p99?: number;
  peer?: string;
  ratio?: number;
}

const PEER = 'raw kafkajs';
const KEYS = 256;
const OPEN_LOOP_RATE = 5000;
const BATCH = 100;
const WINDOW = 16;
const PAD = 'x'.repeat(256);
/** Group timings that let the mock's fixed 3 s first join through (see test-support.ts). */
const TUNING = { sessionTimeoutMs: 6000, rebalanceTimeoutMs: 5000, heartbeatIntervalMs: 500, maxWaitTimeMs: 100, commitIntervalMs: 20 };

function data(n: number, t: number): { n: number; t: number; pad: string } {
  const used = JSON.stringify({ n, t, pad: '' }).length;
  return { n, t, pad: PAD.slice(0, 256 - used) };
}

function envelope(i: number, t: number): CloudEvent {
  return createEnvelope({ type: 'bench.item', source: 'herald-bench', partitionkey: `k${i % KEYS}`, data: data(i, t) });
}

function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

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

/** Open loop: calls `send(i, due)` when message i is due; resolves when all were sent. */
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

function waitUntil(cond: () => boolean, timeoutMs: number, what: string | (() => string)): Promise<void> {
  const end = performance.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (cond()) resolve();
      else if (performance.now() > end) reject(new Error(`bench: timed out waiting for ${typeof what === 'function' ? what() : what}`));
      else setTimeout(check, 2);
    };
    check();
  });
}

interface Side {
  /** Publishes messages [from, from + n) as one batch; `t` goes into data.t. */
  batch(topic: string, envs: readonly CloudEvent[]): Promise<unknown>;
  one(topic: string, env: CloudEvent): Promise<unknown>;
  /** Starts a group member on `topic` calling `onMessage` per handled message; resolves once it owns every partition. */
  consume(topic: string, onMessage: (d: { n: number; t: number }) => void): Promise<() => Promise<void>>;
}

function heraldSide(transport: KafkaTransport, partitions: number): Side {
  return {
    batch: (topic, envs) => transport.publish(topic, envs.map((envelope) => ({ envelope }))),
    one: (topic, env) => transport.publish(topic, [{ envelope: env }]),
    async consume(topic, onMessage) {
      const consumer = createConsumer({ transport, group: `bench-h-${Date.now().toString(36)}`, deadLetters: new MemoryDeadLetterStore(), concurrency: 64, validate: false });
      consumer.handleEnvelope(topic, '*', (env) => onMessage(env.data as { n: number; t: number }));
      await consumer.start();
      await waitUntil(() => consumer.assignment(topic).length === partitions, 20_000, 'the Herald consumer to own every partition');
      return () => consumer.close({ timeoutMs: 2000 });
    },
  };
}

function rawSide(kafka: KafkaClient, producer: Producer, partitions: number): Side {
  const record = (env: CloudEvent) => ({ key: env.partitionkey!, value: encodeEnvelope(env), headers: { 'content-type': 'application/cloudevents+json' } });
  return {
    batch: (topic, envs) => producer.send({ topic, acks: -1, messages: envs.map(record) }),
    one: (topic, env) => producer.send({ topic, acks: -1, messages: [record(env)] }),
    async consume(topic, onMessage) {
      const consumer: KafkaConsumer = kafka.consumer({
        groupId: `bench-r-${Date.now().toString(36)}`,
        sessionTimeout: TUNING.sessionTimeoutMs,
        rebalanceTimeout: TUNING.rebalanceTimeoutMs,
        heartbeatInterval: TUNING.heartbeatIntervalMs,
        maxWaitTimeInMs: TUNING.maxWaitTimeMs,
      });
      let assigned = 0;
      consumer.on(consumer.events.GROUP_JOIN, (e) => {
        assigned = (e.payload.memberAssignment[topic] ?? []).length;
      });
      await consumer.connect();
      await consumer.subscribe({ topics: [topic], fromBeginning: true });
      // kafkajs' autoCommit commits after every batch; like Herald, commit at most every 20 ms instead.
      let lastCommit = 0;
      await consumer.run({
        autoCommit: false,
        partitionsConsumedConcurrently: partitions,
        eachBatch: async ({ batch, resolveOffset, heartbeat, commitOffsetsIfNecessary, uncommittedOffsets }) => {
          for (const m of batch.messages) {
            onMessage((JSON.parse(m.value!.toString('utf8')) as { data: { n: number; t: number } }).data);
            resolveOffset(m.offset);
          }
          if (performance.now() - lastCommit >= TUNING.commitIntervalMs) {
            lastCommit = performance.now();
            await commitOffsetsIfNecessary(uncommittedOffsets());
          }
          await heartbeat();
        },
      });
      await waitUntil(() => assigned === partitions, 20_000, 'the raw consumer to own every partition');
      return () => consumer.disconnect();
    },
  };
}

async function measure(side: Side, topic: string, N: number, L: number, warm: boolean): Promise<Array<Omit<BenchRow, 'peer' | 'ratio'>>> {
  const rows: Array<Omit<BenchRow, 'peer' | 'ratio'>> = [];
  // publish (pipelined)
  {
    const envs = Array.from({ length: N }, (_, i) => envelope(i, 0));
    const t0 = performance.now();
    await pipelined(N, (from, n) => side.batch(topic, envs.slice(from, from + n)));
    rows.push({ case: 'publish (pipelined)', messages: N, rate: Math.round(N / ((performance.now() - t0) / 1000)) });
  }
  // publish @5000/s (open loop)
  {
    const envs = Array.from({ length: L }, (_, i) => envelope(i, 0));
    const lat: number[] = [];
    const inflight = new Set<Promise<unknown>>();
    const t0 = performance.now();
    await openLoop(L, OPEN_LOOP_RATE, (i, due) => {
      const p = side.one(topic, envs[i]!).then(() => lat.push(performance.now() - due));
      inflight.add(p);
      void p.finally(() => inflight.delete(p));
    });
    await Promise.all(inflight);
    lat.sort((a, b) => a - b);
    rows.push({ case: `publish @${OPEN_LOOP_RATE}/s`, messages: L, rate: Math.round(L / ((performance.now() - t0) / 1000)), p50: round(percentile(lat, 0.5)), p99: round(percentile(lat, 0.99)) });
  }
  // The consumer reads the topic from the start: first drain what the publish rows wrote, then measure.
  let seen = 0;
  let phase: 'drain' | 'pipelined' | 'open' = 'drain';
  const lat: number[] = [];
  let handled = 0;
  const stop = await side.consume(topic, (d) => {
    seen++;
    if (phase === 'drain' || d.t < 0) return;
    handled++;
    if (phase === 'open') lat.push(performance.now() - d.t);
  });
  try {
    await waitUntil(() => seen >= N + L, 60_000, () => `the consumer to drain the publish rows (${seen}/${N + L})`);
    // end-to-end (pipelined)
    {
      phase = 'pipelined';
      handled = 0;
      const envs = Array.from({ length: N }, (_, i) => envelope(i, 1));
      const t0 = performance.now();
      await pipelined(N, (from, n) => side.batch(topic, envs.slice(from, from + n)));
      await waitUntil(() => handled >= N, 60_000, 'end-to-end (pipelined) to be handled');
      rows.push({ case: 'end-to-end (pipelined)', messages: N, rate: Math.round(N / ((performance.now() - t0) / 1000)) });
    }
    // end-to-end @5000/s (open loop)
    {
      phase = 'open';
      handled = 0;
      lat.length = 0;
      const t0 = performance.now();
      await openLoop(L, OPEN_LOOP_RATE, (i, due) => {
        void side.one(topic, envelope(i, due));
      });
      await waitUntil(() => handled >= L, 60_000, 'end-to-end (open loop) to be handled');
      const sorted = lat.slice().sort((a, b) => a - b);
      rows.push({ case: `end-to-end @${OPEN_LOOP_RATE}/s`, messages: L, rate: Math.round(L / ((performance.now() - t0) / 1000)), p50: round(percentile(sorted, 0.5)), p99: round(percentile(sorted, 0.99)) });
    }
  } finally {
    await stop();
  }
  void warm;
  return rows;
}

export async function runBench(options: { messages: number; log: (line: string) => void }): Promise<BenchRow[]> {
  // On the mock, at most 10 000 per row: at 20 000 the raw kafkajs consumer stalled at ~36 000 of 40 000 records
  // there once (not investigated further); a real cluster takes up to 50 000.
  const N = Math.min(process.env.KAFKA_BROKERS ? 50_000 : 10_000, Math.max(1000, Math.floor(options.messages)));
  const L = Math.min(N, OPEN_LOOP_RATE * 4);
  const log = options.log;
  let mock: MockCluster | undefined;
  const brokers = process.env.KAFKA_BROKERS ? process.env.KAFKA_BROKERS.split(',') : (mock = await startMockCluster()).brokers;
  const where = process.env.KAFKA_BROKERS ? `KAFKA_BROKERS ${brokers.join(',')}` : 'the librdkafka mock cluster (kcat)';
  log(`kafka bench against ${where}: ${N} messages per pipelined row, ${L} per open-loop row`);
  const partitions = process.env.KAFKA_BROKERS ? 8 : 4;
  const transport = createKafkaTransport({ brokers, defaultPartitions: partitions, consumer: TUNING });
  const kafka = new kafkajs.Kafka({ clientId: 'raw-bench', brokers: [...brokers], logLevel: kafkajs.logLevel.NOTHING });
  const admin = kafka.admin();
  const producer = kafka.producer({ createPartitioner: kafkajs.Partitioners.DefaultPartitioner });
  const run = Date.now().toString(36);
  const rows: BenchRow[] = [];
  try {
    await admin.connect();
    await producer.connect();
    const herald = heraldSide(transport, partitions);
    const raw = rawSide(kafka, producer, partitions);
    // Topics: Herald creates its own (ensureTopic); the raw peer's is made by the same path so both have `partitions`.
    const hTopic = `bench.kafka.h.${run}`;
    const rTopic = `bench.kafka.r.${run}`;
    await transport.ensureTopic(hTopic);
    await transport.ensureTopic(rTopic);
    // Warm-up: connections, metadata, JIT.
    await pipelined(2000, (from, n) => herald.batch(`bench.kafka.warm.${run}`, Array.from({ length: n }, (_, j) => envelope(from + j, -1))));
    await pipelined(2000, (from, n) => raw.batch(`bench.kafka.warm.${run}`, Array.from({ length: n }, (_, j) => envelope(from + j, -1))));
    // …and the one-message send path of both (the first side measured paid for its JIT otherwise).
    for (const side of [herald, raw]) {
      const inflight: Array<Promise<unknown>> = [];
      await openLoop(2500, OPEN_LOOP_RATE, (i) => inflight.push(side.one(`bench.kafka.warm.${run}`, envelope(i, -1))));
      await Promise.all(inflight);
    }
    // Order: Herald first when BENCH_KAFKA_HERALD_FIRST=1 (to see whether order matters), else raw first.
    let r: Array<Omit<BenchRow, 'peer' | 'ratio'>>;
    let h: Array<Omit<BenchRow, 'peer' | 'ratio'>>;
    if (process.env.BENCH_KAFKA_HERALD_FIRST === '1') {
      log('measuring Herald…');
      h = await measure(herald, hTopic, N, L, true);
      log('measuring raw kafkajs…');
      r = await measure(raw, rTopic, N, L, true);
    } else {
      log('measuring raw kafkajs…');
      r = await measure(raw, rTopic, N, L, true);
      log('measuring Herald…');
      h = await measure(herald, hTopic, N, L, true);
    }
    for (let i = 0; i < h.length; i++) {
      const hr = h[i]!;
      const rr = r[i]!;
      rows.push({ ...rr, case: `${rr.case} (${PEER})` });
      rows.push({ ...hr, peer: PEER, ratio: round(hr.rate / rr.rate, 3) });
      log(`${hr.case}: herald ${hr.rate.toLocaleString('en-US')} msg/s vs raw ${rr.rate.toLocaleString('en-US')} msg/s${hr.p50 !== undefined ? ` (p50 ${hr.p50} / ${rr.p50} ms, p99 ${hr.p99} / ${rr.p99} ms)` : ''}`);
    }
  } finally {
    await transport.close({ timeoutMs: 2000 }).catch(() => {});
    await producer.disconnect().catch(() => {});
    await admin.disconnect().catch(() => {});
    await mock?.stop();
  }
  return rows;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const messages = Number(process.argv[2] ?? 20_000);
  const rows = await runBench({ messages, log: (line) => console.error(line) });
  console.table(rows);
}
