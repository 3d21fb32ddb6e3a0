/**
 * MQTT bridge benchmark, side by side with a raw mqtt.js QoS 1 subscriber on the same run:
 *
 *   node --import tsx packages/mqtt/src/mqtt.bench.ts [messages=150000]
 *
 * About 30 s in all with the default 150 000 messages per case on the 2-CPU machine it was written on.
 *
 * A device (one mqtt.js MQTT 5 connection) publishes `messages` QoS 1 messages of ~256 bytes of
 * JSON over 64 device topics to the shared Mosquitto, and each case measures how fast they come
 * out the other end:
 * - raw: a plain mqtt.js subscriber at QoS 1 (mqtt.js PUBACKs on receipt) — the peer;
 * - bridge → memory: the bridge publishing into the memory transport; a message counts when
 *   `transport.publish` resolved for it (the point where the bridge PUBACKs);
 * - bridge → SQLite: the same into a SQLite transport file (WAL, synchronous NORMAL).
 * Latency: from the device's publish call to that point, in ms (same process, same clock).
 *
 * Flow control (the same in every case): the device keeps at most 16 publishes awaiting the
 * broker's PUBACK (Mosquitto's Receive Maximum is 20), and at most 500 messages ahead of the sink.
 * Without the second bound a device faster than the sink fills Mosquitto's per-session queue
 * (max_queued_messages, 1000 by default) and the broker drops messages — after PUBACKing the
 * device. So the rates are closed-loop capacity, and the latencies include that queueing.
 */
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { createMemoryTransport, type Transport } from '@herald/core';
import { createSqliteTransport } from '@herald/sqlite';
import { createMqttBridge } from './bridge.ts';
import { interceptPublish, MQTT_URL, uniquePrefix } from './test-helpers.ts';

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
  /** rate ÷ the peer's rate. */
  ratio?: number;
}

/** Messages per case for a run of about 30 s (measured: 100 000 took 18 s on 2 CPUs). */
export const DEFAULT_BENCH_MESSAGES = 150_000;

const WINDOW = 16;
const MAX_AHEAD = 500;
const DEVICES = 64;
const PAD = 'x'.repeat(256);
const RAW = 'raw mqtt.js QoS-1 subscriber';

function payload(seq: number): string {
  const base = JSON.stringify({ seq, t: performance.now(), pad: '' });
  return JSON.stringify({ seq, t: performance.now(), pad: PAD.slice(0, Math.max(0, 256 - base.length)) });
}

interface Sink {
  /** Messages that came out the other end so far. */
  done(): number;
  latencies: number[];
}

/** Publishes `n` messages with the flow control above; resolves when the sink has them all. */
async function drive(dev: MqttClient, prefix: string, n: number, sink: Sink, timeoutMs: number): Promise<number> {
  const inflight = new Set<Promise<unknown>>();
  const start = performance.now();
  const deadline = start + timeoutMs;
  for (let seq = 0; seq < n; seq++) {
    while (inflight.size >= WINDOW || seq - sink.done() >= MAX_AHEAD) {
      if (performance.now() > deadline) throw new Error(`bench timed out after ${timeoutMs} ms (${sink.done()} of ${n} through)`);
      if (inflight.size >= WINDOW) await Promise.race(inflight);
      else await new Promise((r) => setImmediate(r));
    }
    const p = dev.publishAsync(`${prefix}/devices/d${seq % DEVICES}/telemetry`, payload(seq), { qos: 1 });
    inflight.add(p);
    void p.finally(() => inflight.delete(p)).catch(() => {});
  }
  await Promise.all(inflight);
  while (sink.done() < n) {
    if (performance.now() > deadline) throw new Error(`bench timed out after ${timeoutMs} ms (${sink.done()} of ${n} through)`);
    await new Promise((r) => setTimeout(r, 1));
  }
  return performance.now() - start;
}

function pct(sorted: number[], q: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function rawCase(n: number, timeoutMs: number): Promise<{ ms: number; latencies: number[] }> {
  const p = uniquePrefix('bench-raw');
  const latencies: number[] = [];
  let got = 0;
  const sub = mqtt.connect(MQTT_URL, { protocolVersion: 5, clientId: `${p}-sub`, clean: true, reconnectPeriod: 0, properties: { receiveMaximum: 100 } });
  sub.on('message', (_t, buf) => {
    const m = JSON.parse(buf.toString()) as { t: number };
    latencies.push(performance.now() - m.t);
    got++;
  });
  await new Promise<void>((resolve, reject) => {
    sub.once('connect', () => resolve());
    sub.once('error', reject);
  });
  await sub.subscribeAsync(`${p}/devices/+/telemetry`, { qos: 1 });
  const dev = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5, clientId: `${p}-dev`, reconnectPeriod: 0 });
  try {
    const ms = await drive(dev, p, n, { done: () => got, latencies }, timeoutMs);
    return { ms, latencies };
  } finally {
    await dev.endAsync();
    await sub.endAsync();
  }
}

async function bridgeCase(n: number, inner: Transport, timeoutMs: number): Promise<{ ms: number; latencies: number[] }> {
  const p = uniquePrefix('bench-bridge');
  const latencies: number[] = [];
  let got = 0;
  // Counts a message when transport.publish resolved for it: the bridge's PUBACK point.
  const transport: Transport = interceptPublish(inner, () => {});
  const publish = transport.publish.bind(transport);
  transport.publish = async (topic, messages) => {
    const r = await publish(topic, messages);
    const now = performance.now();
    for (const m of messages) latencies.push(now - (m.envelope.data as { t: number }).t);
    got += messages.length;
    return r;
  };
  const bridge = createMqttBridge({ url: MQTT_URL, clientId: `${p}-bridge`, transport, topic: 'bench', subscriptions: [`${p}/devices/+/telemetry`] });
  await bridge.ready;
  const dev = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5, clientId: `${p}-dev`, reconnectPeriod: 0 });
  try {
    const ms = await drive(dev, p, n, { done: () => got, latencies }, timeoutMs);
    return { ms, latencies };
  } finally {
    await dev.endAsync();
    await bridge.close({ timeoutMs: 2000, endSession: true });
  }
}

/**
 * Runs the three cases with `messages` each (after a 1 000-message warm-up of each) and returns
 * one row per case; `log` gets progress lines.
 */
export async function runBench(options: { messages: number; log: (line: string) => void }): Promise<BenchRow[]> {
  const n = Math.max(1, Math.floor(options.messages));
  const log = options.log;
  const timeoutMs = Math.max(60_000, n * 5);
  const row = (name: string, r: { ms: number; latencies: number[] }, peer?: BenchRow): BenchRow => {
    const sorted = r.latencies.slice(-n).sort((a, b) => a - b);
    const out: BenchRow = { case: name, messages: n, rate: (n * 1000) / r.ms };
    const p50 = pct(sorted, 0.5);
    const p99 = pct(sorted, 0.99);
    if (p50 !== undefined) out.p50 = p50;
    if (p99 !== undefined) out.p99 = p99;
    if (peer) {
      out.peer = peer.case;
      out.ratio = out.rate / peer.rate;
    }
    log(`${name}: ${Math.round(out.rate)} msg/s, p50 ${out.p50?.toFixed(2)} ms, p99 ${out.p99?.toFixed(2)} ms${out.ratio !== undefined ? `, ${(out.ratio * 100).toFixed(0)}% of the raw subscriber` : ''}`);
    return out;
  };

  log(`mqtt: ${n} QoS 1 messages per case against ${MQTT_URL}`);
  await rawCase(1000, timeoutMs);
  const raw = row(RAW, await rawCase(n, timeoutMs));

  const memory = createMemoryTransport({ maxRecordsPerPartition: Math.max(10_000, n * 2) });
  try {
    await bridgeCase(1000, memory, timeoutMs);
    const rows: BenchRow[] = [raw, row('mqtt bridge → memory transport (PUBACK after publish resolved)', await bridgeCase(n, memory, timeoutMs), raw)];
    const path = join(tmpdir(), `herald-mqtt-bench-${process.pid}.db`);
    const sqlite = createSqliteTransport({ path });
    try {
      await bridgeCase(1000, sqlite, timeoutMs);
      rows.push(row('mqtt bridge → SQLite transport (WAL, NORMAL; PUBACK after commit)', await bridgeCase(n, sqlite, timeoutMs), raw));
    } finally {
      await sqlite.close();
      for (const s of ['', '-wal', '-shm']) rmSync(path + s, { force: true });
    }
    return rows;
  } finally {
    await memory.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const messages = Number(process.argv[2] ?? DEFAULT_BENCH_MESSAGES);
  const rows = await runBench({ messages, log: (l) => process.stderr.write(`${l}\n`) });
  console.table(rows.map((r) => ({ ...r, rate: Math.round(r.rate), p50: r.p50?.toFixed(2), p99: r.p99?.toFixed(2), ratio: r.ratio?.toFixed(3) })));
}
