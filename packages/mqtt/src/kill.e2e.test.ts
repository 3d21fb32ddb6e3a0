// A bridge process on a SQLite transport file is SIGKILLed mid-stream while a device publishes
// QoS 1 messages. A new bridge with the same client id resumes the persistent session. Every
// message the device got a PUBACK for must be in the Herald topic; duplicates are counted.
//   HERALD_MQTT_KILL_MESSAGES (default 4000) and HERALD_MQTT_KILL_RATE (msg/s, default 2000)
//   size the run. The device is paced: Mosquitto queues at most max_queued_messages (1000 by
//   default) per offline or lagging session and drops the rest after PUBACKing the device, so a
//   device that outruns the bridge by more than that loses messages at the broker — the limit
//   this test stays inside on purpose (see the README).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import type { CloudEvent } from '@herald/core';
import { createSqliteTransport } from '@herald/sqlite';
import { serverSkipReason } from '@herald/testkit';
import { createMqttBridge, type MqttBridge, type MqttBridgeStats } from './index.ts';
import { connectDevice, dropSession, MQTT_PORT, MQTT_URL, readTopic, uniquePrefix } from './test-helpers.ts';

const skip = await serverSkipReason('Mosquitto', MQTT_PORT);
const CHILD = new URL('./fixtures/bridge-child.ts', import.meta.url).pathname;
const N = Number(process.env.HERALD_MQTT_KILL_MESSAGES ?? 4000);
const RATE = Number(process.env.HERALD_MQTT_KILL_RATE ?? 2000);
const DEVICES = 8;
const WINDOW = 16; // device-side QoS 1 messages in flight (Mosquitto's Receive Maximum for clients is 20)

interface Child {
  readonly child: ChildProcess;
  last?: MqttBridgeStats;
  errors: string[];
}

function startChild(env: Record<string, string>): Promise<Child> {
  const child = fork(CHILD, { env: { ...process.env, ...env }, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const c: Child = { child, errors: [] };
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('bridge child did not become ready within 20 s')), 20_000);
    child.on('message', (m: { type: string; stats?: MqttBridgeStats; message?: string }) => {
      if (m.type === 'ready') {
        clearTimeout(t);
        resolve(c);
      } else if (m.type === 'stats') c.last = m.stats;
      else if (m.type === 'error') c.errors.push(m.message ?? '');
    });
    child.on('exit', (code, signal) => {
      clearTimeout(t);
      if (signal === null && code !== 0) reject(new Error(`bridge child exited with ${code}`));
    });
  });
}

/** Publishes N QoS 1 messages at RATE with at most WINDOW in flight; resolves with the seqs the broker PUBACKed. */
async function publishPaced(dev: MqttClient, prefix: string, onProgress: (sent: number) => void): Promise<{ acked: Set<number>; failed: number }> {
  const acked = new Set<number>();
  let failed = 0;
  const inflight = new Set<Promise<void>>();
  const start = performance.now();
  for (let seq = 0; seq < N; seq++) {
    const due = start + (seq * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    while (inflight.size >= WINDOW) await Promise.race(inflight);
    const d = seq % DEVICES;
    const p: Promise<void> = dev.publishAsync(`${prefix}/devices/d${d}/telemetry`, JSON.stringify({ seq, d }), { qos: 1 }).then(
      () => void acked.add(seq),
      () => void failed++,
    );
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
    onProgress(seq + 1);
  }
  await Promise.all(inflight);
  return { acked, failed };
}

test('SIGKILL of the bridge process mid-stream: every message the device got a PUBACK for reaches Herald', { skip, timeout: 90_000 }, async (t) => {
  const p = uniquePrefix('kill');
  const clientId = `${p}-bridge`;
  const dir = mkdtempSync(join(tmpdir(), 'herald-mqtt-kill-'));
  const db = join(dir, 'log.db');
  const topic = 'iot';
  const transport = createSqliteTransport({ path: db });
  await transport.ensureTopic(topic, { partitions: 4 });
  const env = { KB_URL: MQTT_URL, KB_CLIENT_ID: clientId, KB_FILTER: `${p}/devices/+/telemetry`, KB_TOPIC: topic, KB_DB: db };
  const first = await startChild(env);
  const dev = await connectDevice(`${p}-device`);
  let second: MqttBridge | undefined;
  try {
    const killAt = Math.floor(N / 3);
    let killedAt: { sent: number; stats: MqttBridgeStats | undefined } | undefined;
    let killing: Promise<void> | undefined;
    const kill = (): Promise<void> =>
      new Promise<void>((resolve) => {
        first.child.once('exit', () => resolve());
        first.child.kill('SIGKILL');
      });
    let sent = 0;
    const publishing = publishPaced(dev, p, (n) => {
      sent = n;
      if (!killing && (first.last?.published ?? 0) >= killAt) {
        killedAt = { sent, stats: first.last };
        killing = kill().then(() => {
          // A new bridge with the same client id resumes the session: the broker resends what the
          // killed one had not acknowledged and what it queued meanwhile.
          second = createMqttBridge({ url: MQTT_URL, clientId, transport, topic, subscriptions: [env.KB_FILTER], sessionExpirySeconds: 300 });
        });
      }
    });
    const { acked, failed } = await publishing;
    assert.ok(killing, `the bridge was killed mid-stream (it had published ${first.last?.published ?? 0} of ${N})`);
    await killing;
    assert.equal(failed, 0, 'the device got a PUBACK for every message');
    assert.equal(acked.size, N);

    const present = (envs: readonly CloudEvent[]): Set<number> => new Set(envs.map((e) => (e.data as { seq: number }).seq));
    const { envelopes } = await readTopic(transport, topic, (envs) => present(envs).size >= acked.size, 45_000);
    const have = present(envelopes);
    const missing = [...acked].filter((s) => !have.has(s));
    assert.deepEqual(missing.slice(0, 20), [], `${missing.length} PUBACKed message(s) missing from Herald`);

    // Duplicates: a second copy of a seq. A redelivery carries the same derived event id.
    const firstId = new Map<number, string>();
    let duplicates = 0;
    let sameId = 0;
    const firstsPerDevice = new Map<number, number[]>();
    for (const e of envelopes) {
      const { seq, d } = e.data as { seq: number; d: number };
      const id = firstId.get(seq);
      if (id !== undefined) {
        duplicates++;
        if (id === e.id) sameId++;
        continue;
      }
      firstId.set(seq, e.id);
      const list = firstsPerDevice.get(d) ?? [];
      list.push(seq);
      firstsPerDevice.set(d, list);
    }
    for (const [d, seqs] of firstsPerDevice) assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), `device d${d}: first copies in publish order`);
    assert.equal(sameId, duplicates, 'every duplicate carries the id of its first copy (recognisable by an inbox)');
    const s2 = second!.stats();
    const summary =
      `${N} QoS 1 messages from 1 device connection (${DEVICES} device ids) at ${RATE} msg/s; ` +
      `bridge process SIGKILLed after ${killedAt?.sent} sent (it had published ${killedAt?.stats?.published}, acked ${killedAt?.stats?.acked}); ` +
      `the resumed bridge received ${s2.received} (${s2.redelivered} flagged DUP); ` +
      `Herald holds ${envelopes.length} records for ${have.size} distinct messages: ${duplicates} duplicate(s), all with the id of their first copy; missing 0`;
    t.diagnostic(summary);
    console.log(`# mqtt kill: ${summary}`);
  } finally {
    if (first.child.exitCode === null && first.child.signalCode === null) first.child.kill('SIGKILL');
    await dev.endAsync().catch(() => {});
    await (second as MqttBridge | undefined)?.close({ timeoutMs: 2000, endSession: true });
    await dropSession(clientId).catch(() => {});
    await transport.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
