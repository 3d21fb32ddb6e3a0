// The broker restarts (a private Mosquitto with persistence, SIGTERM, start again) while the
// bridge holds unacknowledged messages whose Herald publish has not committed yet. The bridge
// reconnects, resumes its session from the broker's persistence, and nothing is lost; the copies
// the stale publish still wrote carry the same ids as their redeliveries.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { type CloudEvent, createMemoryTransport } from '@herald/core';
import { PrivateServer, serverSkipReason, serversRequired, waitFor } from '@herald/testkit';
import { createMqttBridge, type MqttBridge } from './index.ts';
import { interceptPublish, MQTT_PORT, readTopic, uniquePrefix } from './test-helpers.ts';

const skip = (await serverSkipReason('Mosquitto', MQTT_PORT)) ?? mosquittoMissing();

function mosquittoMissing(): string | undefined {
  if (spawnSync('mosquitto', ['-h']).error === undefined) return undefined;
  const reason = 'the mosquitto binary is not on PATH; a private broker is needed to restart one';
  if (serversRequired) throw new Error(reason);
  return reason;
}

test('broker restart: the bridge reconnects, resumes its persisted session, loses nothing', { skip, timeout: 60_000 }, async (t) => {
  const broker = await PrivateServer.start({
    name: 'mosquitto',
    command: 'mosquitto',
    args: (port, dir) => {
      const conf = join(dir, 'mosquitto.conf');
      // `user root` only matters when started as root (Mosquitto would otherwise switch to the
      // "mosquitto" user, who cannot write this folder).
      writeFileSync(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location ${dir}/\nuser root\n`);
      return ['-c', conf];
    },
  });
  const url = `mqtt://127.0.0.1:${broker.port}`;
  const p = uniquePrefix('restart');
  const memory = createMemoryTransport();
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  // The first publish waits until after the restart: its messages are taken but not committed.
  const transport = interceptPublish(memory, (call) => (call === 1 ? gate : undefined));
  const errors: unknown[] = [];
  let bridge: MqttBridge | undefined;
  const dev = mqtt.connect(url, { protocolVersion: 5, clientId: `${p}-dev`, clean: false, properties: { sessionExpiryInterval: 60 }, reconnectPeriod: 200 });
  try {
    bridge = createMqttBridge({ url, clientId: `${p}-bridge`, transport, topic: 'in', subscriptions: [`${p}/+/t`], reconnectPeriodMs: 200, onError: (e) => errors.push(e) });
    await bridge.ready;
    await new Promise<void>((r) => (dev.connected ? r() : dev.once('connect', () => r())));
    const N = 20;
    await Promise.all(Array.from({ length: N }, (_, seq) => dev.publishAsync(`${p}/d${seq % 2}/t`, JSON.stringify({ seq }), { qos: 1 })));
    const b = bridge;
    await waitFor(() => b.stats().received === N, { timeoutMs: 5000, what: () => JSON.stringify(b.stats()) });
    assert.equal(b.stats().acked, 0);

    await broker.restart();
    await waitFor(() => b.stats().connects >= 2 && b.connected(), { timeoutMs: 10_000, what: () => `reconnect: ${JSON.stringify(b.stats())}` });
    open(); // the stale publish commits now; its messages belong to the dead connection and are not acknowledged
    // The redeliveries queue behind the stale publish (one publish at a time), so once they are
    // all acknowledged the stale one has committed too.
    await waitFor(() => b.stats().acked === N, { timeoutMs: 10_000, what: () => JSON.stringify(b.stats()) });
    const total = b.stats().published;
    const seqOf = (e: CloudEvent): number => (e.data as { seq: number }).seq;
    const { envelopes } = await readTopic(memory, 'in', (e) => e.length >= total, 10_000);
    assert.equal(envelopes.length, total);
    assert.equal(new Set(envelopes.map(seqOf)).size, N, 'every message is in Herald');
    const ids = new Map<number, Set<string>>();
    for (const e of envelopes) ids.set(seqOf(e), (ids.get(seqOf(e)) ?? new Set()).add(e.id));
    for (const [seq, set] of ids) assert.equal(set.size, 1, `seq ${seq}: the stale copy and the redelivery share one id`);
    const s = b.stats();
    assert.equal(s.redelivered, N, 'the broker resent all of them from its persisted session, flagged DUP');
    t.diagnostic(`${N} messages held unacknowledged across a broker restart: ${s.connects} connects, ${s.redelivered} redelivered, Herald holds ${envelopes.length} records (${envelopes.length - N} duplicates with the same ids)`);
  } finally {
    open();
    await dev.endAsync(true).catch(() => {});
    await bridge?.close({ timeoutMs: 2000, endSession: true });
    await broker.dispose();
  }
});
