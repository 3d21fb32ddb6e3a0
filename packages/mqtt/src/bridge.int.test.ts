// The MQTT bridge against the shared Mosquitto (127.0.0.1:1883), Herald side on the memory
// transport. Every test uses its own topic prefix and client ids, and ends the persistent
// sessions it created.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CloudEvent as SdkEvent, MQTT } from 'cloudevents';
import { type CloudEvent, createMemoryTransport, isHeraldError, TransientError } from '@herald/core';
import { freePort, serverSkipReason, waitFor } from '@herald/testkit';
import { createMqttBridge, type MqttBridge } from './index.ts';
import { connectDevice, dropSession, interceptPublish, MQTT_HOST, MQTT_PORT, MQTT_URL, readTopic, uniquePrefix } from './test-helpers.ts';

const skip = await serverSkipReason('Mosquitto', MQTT_PORT);

const seqOf = (e: CloudEvent): number => (e.data as { seq: number }).seq;

async function closeAll(bridges: MqttBridge[]): Promise<void> {
  await Promise.all(bridges.map((b) => b.close({ timeoutMs: 2000, endSession: true })));
}

test('ingests a wildcard subscription: device id is the key, per-device order kept, envelope built from the topic', { skip, timeout: 30_000 }, async (t) => {
  const p = uniquePrefix('ingest');
  const transport = createMemoryTransport();
  const errors: unknown[] = [];
  const bridge = createMqttBridge({ url: MQTT_URL, clientId: `${p}-bridge`, transport, topic: 'telemetry', subscriptions: [`${p}/devices/+/telemetry`], onError: (e) => errors.push(e) });
  const devices = await Promise.all(['d0', 'd1', 'd2'].map((d) => connectDevice(`${p}-${d}`)));
  try {
    await bridge.ready;
    const PER = 60;
    // Each device pipelines its QoS 1 publishes (several in flight), in order on its connection.
    await Promise.all(devices.map((dev, i) => Promise.all(Array.from({ length: PER }, (_, seq) => dev.publishAsync(`${p}/devices/d${i}/telemetry`, JSON.stringify({ seq }), { qos: 1 })))));
    await devices[0]!.publishAsync(`${p}/devices/d0/status`, 'not subscribed', { qos: 1 });
    const { envelopes, deliveries } = await readTopic(transport, 'telemetry', (e) => e.length >= 3 * PER, 10_000);
    assert.equal(envelopes.length, 3 * PER);
    for (let i = 0; i < 3; i++) {
      const mine = envelopes.filter((e) => e.partitionkey === `d${i}`);
      assert.deepEqual(mine.map(seqOf), Array.from({ length: PER }, (_, s) => s), `d${i} in publish order`);
    }
    for (let k = 0; k < envelopes.length; k++) assert.equal(deliveries[k]!.key, envelopes[k]!.partitionkey, 'the transport key is the device id');
    const e = envelopes.find((x) => x.partitionkey === 'd1')!;
    assert.equal(e.type, `${p}.devices.telemetry`);
    assert.equal(e.source, `mqtt://${MQTT_HOST}/${p}/devices/d1/telemetry`);
    assert.equal(e.subject, 'd1');
    assert.equal(e.datacontenttype, 'application/json');
    assert.deepEqual(e.data, { seq: 0 });
    assert.match(e.id, /^[0-9a-f]{32}$/);
    assert.equal(new Set(envelopes.map((x) => x.id)).size, envelopes.length, 'ids are distinct');
    await waitFor(() => bridge.stats().acked === 3 * PER, { timeoutMs: 2000, what: () => JSON.stringify(bridge.stats()) });
    const s = bridge.stats();
    assert.equal(s.received, 3 * PER);
    assert.equal(s.published, 3 * PER);
    assert.equal(s.inFlight, 0);
    assert.deepEqual(errors, []);
    t.diagnostic(`3 devices × ${PER} messages in ${s.batches} transport.publish calls`);
  } finally {
    await Promise.all(devices.map((d) => d.endAsync()));
    await closeAll([bridge]);
  }
});

test('CloudEvents MQTT binding: binary mode (User Properties) and structured mode keep the device event; partial attributes fill in', { skip, timeout: 20_000 }, async () => {
  const p = uniquePrefix('binding');
  const transport = createMemoryTransport();
  const bridge = createMqttBridge({ url: MQTT_URL, clientId: `${p}-bridge`, transport, topic: 'ce', subscriptions: [`${p}/devices/+/events`] });
  const dev = await connectDevice(`${p}-dev`);
  try {
    await bridge.ready;
    // Binary mode, written by the CloudEvents JavaScript SDK.
    const sdk = new SdkEvent({ id: 'sdk-1', source: 'urn:device:d1', type: 'com.example.door.opened', data: { door: 'front' }, datacontenttype: 'application/json', zone: 'north' });
    const bin = MQTT.binary(sdk);
    await dev.publishAsync(`${p}/devices/d1/events`, JSON.stringify(bin.body), {
      qos: 1,
      properties: { contentType: bin.PUBLISH?.['Content Type'] as string, userProperties: Object.fromEntries(Object.entries(bin.headers).filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)])) },
    });
    // Structured mode.
    const structured = { specversion: '1.0', id: 'st-1', source: 'urn:device:d2', type: 'com.example.alarm', data: { level: 3 } };
    await dev.publishAsync(`${p}/devices/d2/events`, JSON.stringify(structured), { qos: 1, properties: { contentType: 'application/cloudevents+json; charset=utf-8' } });
    // A bare device that only names its own message id.
    await dev.publishAsync(`${p}/devices/d3/events`, 'OPEN', { qos: 1, properties: { userProperties: { id: 'd3-msg-77', firmware: '1.2' } } });
    // Broken binary mode: an invalid time. Kept, rebuilt by the bridge, reported.
    await dev.publishAsync(`${p}/devices/d4/events`, Buffer.from([0xff, 0x00, 0x01]), { qos: 1, properties: { userProperties: { specversion: '1.0', id: 'x', source: 's', type: 't', time: 'yesterday' } } });
    const { envelopes } = await readTopic(transport, 'ce', (e) => e.length >= 4, 5000);
    const by = (k: string): CloudEvent => envelopes.find((e) => e.partitionkey === k)!;
    assert.equal(by('d1').id, 'sdk-1');
    assert.equal(by('d1').type, 'com.example.door.opened');
    assert.equal(by('d1').source, 'urn:device:d1');
    assert.equal(by('d1').zone, 'north');
    assert.deepEqual(by('d1').data, { door: 'front' });
    assert.equal(by('d2').id, 'st-1');
    assert.deepEqual(by('d2').data, { level: 3 });
    assert.equal(by('d2').partitionkey, 'd2');
    assert.equal(by('d3').id, 'd3-msg-77');
    assert.equal(by('d3').type, `${p}.devices.events`);
    assert.equal(by('d3').data, 'OPEN');
    assert.equal(by('d3').firmware, undefined, 'non-CloudEvents user properties are not attributes without specversion');
    assert.match(String(by('d4').bridgeerror), /time/);
    assert.equal(by('d4').data_base64, Buffer.from([0xff, 0x00, 0x01]).toString('base64'));
    assert.equal(bridge.stats().rebuilt, 1);
  } finally {
    await dev.endAsync();
    await closeAll([bridge]);
  }
});

test('PUBACK only after the Herald commit: a failed publish is redelivered by the broker and nothing is lost', { skip, timeout: 30_000 }, async (t) => {
  const p = uniquePrefix('redeliver');
  const memory = createMemoryTransport();
  let failures = 0;
  const transport = interceptPublish(memory, (call) => {
    if (call === 1) {
      failures++;
      throw new TransientError('injected: the first Herald publish fails');
    }
  });
  const errors: unknown[] = [];
  const bridge = createMqttBridge({ url: MQTT_URL, clientId: `${p}-bridge`, transport, topic: 'in', subscriptions: [`${p}/devices/+/telemetry`], reconnectPeriodMs: 100, onError: (e) => errors.push(e) });
  const dev = await connectDevice(`${p}-dev`);
  try {
    await bridge.ready;
    const N = 30;
    await Promise.all(Array.from({ length: N }, (_, seq) => dev.publishAsync(`${p}/devices/d${seq % 3}/telemetry`, JSON.stringify({ seq }), { qos: 1 })));
    const { envelopes } = await readTopic(memory, 'in', (e) => new Set(e.map(seqOf)).size >= N, 10_000);
    const seqs = new Set(envelopes.map(seqOf));
    assert.equal(seqs.size, N, 'every message is in Herald');
    const s = bridge.stats();
    assert.equal(failures, 1);
    assert.equal(s.publishFailures, 1);
    assert.ok(s.connects >= 2, 'the bridge reconnected after the failed publish');
    assert.ok(s.redelivered >= 1, `the broker redelivered the unacknowledged message(s) (DUP): ${JSON.stringify(s)}`);
    assert.ok(errors.some((e) => e instanceof Error && e.message.includes('injected')), 'the failure was reported');
    for (const d of [0, 1, 2]) {
      const firsts: number[] = [];
      for (const e of envelopes) if (e.partitionkey === `d${d}` && !firsts.includes(seqOf(e))) firsts.push(seqOf(e));
      assert.deepEqual(firsts, [...firsts].sort((a, b) => a - b), `d${d}: first copies in order`);
    }
    t.diagnostic(`${N} messages; 1 failed publish; ${s.redelivered} redelivered (DUP) by the broker; Herald holds ${envelopes.length} records, ${envelopes.length - N} duplicate(s)`);
  } finally {
    await dev.endAsync();
    await closeAll([bridge]);
  }
});

test('a publish that never commits is never acknowledged: the next bridge on the same session gets the messages again', { skip, timeout: 30_000 }, async () => {
  const p = uniquePrefix('nopuback');
  const clientId = `${p}-bridge`;
  const memory = createMemoryTransport();
  let release!: () => void;
  const stuck = new Promise<void>((r) => (release = r));
  const hanging = interceptPublish(createMemoryTransport(), () => stuck);
  const first = createMqttBridge({ url: MQTT_URL, clientId, transport: hanging, topic: 'in', subscriptions: [`${p}/+/t`] });
  const dev = await connectDevice(`${p}-dev`);
  let second: MqttBridge | undefined;
  try {
    await first.ready;
    for (let seq = 0; seq < 5; seq++) await dev.publishAsync(`${p}/dev1/t`, JSON.stringify({ seq }), { qos: 1 });
    await waitFor(() => first.stats().received === 5, { timeoutMs: 5000, what: () => JSON.stringify(first.stats()) });
    assert.equal(first.stats().acked, 0);
    await first.close({ timeoutMs: 200 }); // abandons the stuck publish; the session stays
    release();
    // While no bridge is connected the broker queues for the session.
    for (let seq = 5; seq < 8; seq++) await dev.publishAsync(`${p}/dev1/t`, JSON.stringify({ seq }), { qos: 1 });
    second = createMqttBridge({ url: MQTT_URL, clientId, transport: memory, topic: 'in', subscriptions: [`${p}/+/t`] });
    const { envelopes } = await readTopic(memory, 'in', (e) => e.length >= 8, 10_000);
    assert.deepEqual(envelopes.map(seqOf), [0, 1, 2, 3, 4, 5, 6, 7]);
    assert.equal(second.stats().redelivered, 5, 'the five unacknowledged messages came back flagged DUP');
  } finally {
    release();
    await dev.endAsync();
    await closeAll([first, ...(second ? [second] : [])]);
    await dropSession(clientId);
  }
});

test('two bridges on a shared subscription split the messages; every message once', { skip, timeout: 30_000 }, async (t) => {
  const p = uniquePrefix('share');
  const transport = createMemoryTransport();
  const mk = (n: string): MqttBridge => createMqttBridge({ url: MQTT_URL, clientId: `${p}-${n}`, transport, topic: 'in', subscriptions: [`${p}/devices/+/telemetry`], shareGroup: `${p}-g` });
  const a = mk('a');
  const b = mk('b');
  const dev = await connectDevice(`${p}-dev`);
  try {
    await Promise.all([a.ready, b.ready]);
    const N = 300;
    await Promise.all(Array.from({ length: N }, (_, seq) => dev.publishAsync(`${p}/devices/d${seq % 10}/telemetry`, JSON.stringify({ seq }), { qos: 1 })));
    const { envelopes } = await readTopic(transport, 'in', (e) => e.length >= N, 10_000);
    const seqs = envelopes.map(seqOf).sort((x, y) => x - y);
    assert.deepEqual(seqs, Array.from({ length: N }, (_, i) => i), 'every message exactly once');
    await waitFor(() => a.stats().acked + b.stats().acked === N, { timeoutMs: 2000 });
    const [sa, sb] = [a.stats(), b.stats()];
    assert.ok(sa.published > 0 && sb.published > 0, `both instances took a share: a=${sa.published} b=${sb.published}`);
    assert.equal(sa.published + sb.published, N);
    t.diagnostic(`a published ${sa.published}, b published ${sb.published}`);
  } finally {
    await dev.endAsync();
    await closeAll([a, b]);
  }
});

test('sendCommand reaches a subscribed device as a binary-mode CloudEvent and resolves on PUBACK', { skip, timeout: 20_000 }, async () => {
  const p = uniquePrefix('cmd');
  const transport = createMemoryTransport();
  const bridge = createMqttBridge({ url: MQTT_URL, clientId: `${p}-bridge`, transport, topic: 'in', subscriptions: [`${p}/devices/+/telemetry`], commandTopic: (id) => `${p}/devices/${id}/commands` });
  const dev = await connectDevice(`${p}-d1`);
  try {
    const received: Array<{ topic: string; payload: Buffer; properties: Record<string, unknown> | undefined }> = [];
    dev.on('message', (topic, payload, packet) => received.push({ topic, payload, properties: packet.properties as Record<string, unknown> | undefined }));
    await dev.subscribeAsync(`${p}/devices/d1/commands`, { qos: 1 });
    await bridge.ready;
    const cause = { specversion: '1.0', id: 'evt-9', source: 's', type: 'alarm', correlationid: 'corr-1' } as const;
    const receipt = await bridge.sendCommand('d1', { type: 'com.example.reboot', data: { delaySeconds: 5 } }, { causedBy: cause });
    assert.equal(receipt.topic, `${p}/devices/d1/commands`);
    assert.equal(receipt.noMatchingSubscribers, false);
    await waitFor(() => received.length === 1, { timeoutMs: 5000 });
    const m = received[0]!;
    const up = m.properties?.userProperties as Record<string, string>;
    const ev = MQTT.toEvent({ headers: up, body: JSON.parse(m.payload.toString()), PUBLISH: { 'Content Type': m.properties?.contentType as string } } as never) as SdkEvent;
    assert.equal(ev.id, receipt.envelope.id);
    assert.equal(ev.type, 'com.example.reboot');
    assert.equal(ev.subject, 'd1');
    assert.equal(ev.correlationid, 'corr-1');
    assert.equal(ev.causationid, 'evt-9');
    assert.deepEqual(ev.data, { delaySeconds: 5 });
    const nobody = await bridge.sendCommand('offline-device', { type: 'com.example.reboot' });
    assert.equal(nobody.noMatchingSubscribers, true, 'the PUBACK says no session subscribes to that command topic');
    await assert.rejects(bridge.sendCommand('a/b', { type: 'x' }), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
    assert.equal(bridge.stats().commandsSent, 2);
  } finally {
    await dev.endAsync();
    await closeAll([bridge]);
  }
  await assert.rejects(bridge.sendCommand('d1', { type: 'x' }), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
});

test('bad options are refused with typed errors; close is idempotent', { skip, timeout: 10_000 }, async () => {
  const transport = createMemoryTransport();
  const base = { url: MQTT_URL, clientId: uniquePrefix('opts'), transport, topic: 'in', subscriptions: ['a/+/b'] };
  for (const bad of [
    { subscriptions: [] },
    { subscriptions: ['a/#/b'] },
    { subscriptions: ['$share/g/a/+'] },
    { topic: 'no spaces' },
    { url: 'not a url' },
    { clientId: '' },
    { shareGroup: 'a/b' },
    { maxInFlight: 0 },
  ]) {
    assert.throws(() => createMqttBridge({ ...base, ...bad } as never), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'), JSON.stringify(bad));
  }
  const bridge = createMqttBridge(base);
  await bridge.ready;
  await Promise.all([bridge.close({ endSession: true }), bridge.close()]);
  await bridge.close();
  await bridge[Symbol.asyncDispose]();
});

test('a message the transport refuses for good goes to onRejected, is acknowledged with 0x83 and does not come back; the rest flows', { skip, timeout: 20_000 }, async () => {
  const p = uniquePrefix('reject');
  const transport = createMemoryTransport({ maxPayloadBytes: 2048 });
  const rejected: Array<{ mqttTopic: string; size: number; code: unknown }> = [];
  const bridge = createMqttBridge({
    url: MQTT_URL,
    clientId: `${p}-bridge`,
    transport,
    topic: 'in',
    subscriptions: [`${p}/+/t`],
    onRejected: async (r) => {
      await new Promise((resolve) => setTimeout(resolve, 20)); // awaited before the PUBACK
      rejected.push({ mqttTopic: r.mqttTopic, size: r.payload.length, code: (r.error as { code?: unknown }).code });
    },
  });
  const dev = await connectDevice(`${p}-dev`);
  const big = JSON.stringify({ seq: 1, blob: 'x'.repeat(4096) });
  try {
    await bridge.ready;
    await Promise.all([
      dev.publishAsync(`${p}/d1/t`, JSON.stringify({ seq: 0 }), { qos: 1 }),
      dev.publishAsync(`${p}/d1/t`, big, { qos: 1 }),
      dev.publishAsync(`${p}/d1/t`, JSON.stringify({ seq: 2 }), { qos: 1 }),
    ]);
    const { envelopes } = await readTopic(transport, 'in', (e) => e.length >= 2, 5000);
    assert.deepEqual(envelopes.map(seqOf), [0, 2]);
    await waitFor(() => bridge.stats().acked === 3, { timeoutMs: 3000, what: () => JSON.stringify(bridge.stats()) });
    assert.deepEqual(rejected, [{ mqttTopic: `${p}/d1/t`, size: big.length, code: 'HERALD_ERR_PAYLOAD_TOO_LARGE' }]);
    await dev.publishAsync(`${p}/d1/t`, JSON.stringify({ seq: 3 }), { qos: 1 });
    await waitFor(() => bridge.stats().acked === 4, { timeoutMs: 3000 });
    const s = bridge.stats();
    assert.equal(s.rejected, 1);
    assert.equal(s.received, 4, 'the rejected message was not redelivered');
    assert.equal(s.redelivered, 0);
  } finally {
    await dev.endAsync();
    await closeAll([bridge]);
  }
});

test('qos 0: messages are published, nothing is acknowledged or redelivered', { skip, timeout: 10_000 }, async () => {
  const p = uniquePrefix('qos0');
  const transport = createMemoryTransport();
  const bridge = createMqttBridge({ url: MQTT_URL, clientId: `${p}-bridge`, transport, topic: 'in', subscriptions: [`${p}/+/t`], qos: 0 });
  const dev = await connectDevice(`${p}-dev`);
  try {
    await bridge.ready;
    for (let seq = 0; seq < 5; seq++) await dev.publishAsync(`${p}/d1/t`, JSON.stringify({ seq }), { qos: 1 });
    const { envelopes } = await readTopic(transport, 'in', (e) => e.length >= 5, 5000);
    assert.deepEqual(envelopes.map(seqOf), [0, 1, 2, 3, 4]);
    assert.equal(bridge.stats().acked, 0);
    assert.equal(new Set(envelopes.map((e) => e.id)).size, 5);
  } finally {
    await dev.endAsync();
    await closeAll([bridge]);
  }
});

test('no broker: a command times out (TRANSIENT) or fails at close (CLOSED); ready rejects at close', { skip, timeout: 10_000 }, async () => {
  const port = await freePort(); // nothing listens there
  const bridge = createMqttBridge({ url: `mqtt://127.0.0.1:${port}`, clientId: uniquePrefix('nobroker'), transport: createMemoryTransport(), topic: 'in', subscriptions: ['a/+/b'], reconnectPeriodMs: 50, onError: () => {} });
  await assert.rejects(bridge.sendCommand('d1', { type: 'x' }, { timeoutMs: 100 }), (e) => isHeraldError(e, 'HERALD_ERR_TRANSIENT') && /within 100 ms/.test(e.message));
  const pending = bridge.sendCommand('d1', { type: 'x' }, { timeoutMs: 0 });
  const started = performance.now();
  await bridge.close({ timeoutMs: 200 });
  await assert.rejects(pending, (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
  await assert.rejects(bridge.ready, (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
  assert.ok(performance.now() - started < 2500, 'close is bounded');
});
