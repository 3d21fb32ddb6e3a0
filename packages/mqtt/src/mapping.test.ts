// Topic filters and the CloudEvents MQTT binding, without a broker.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createEnvelope, decodeEnvelope, encodeEnvelope } from '@herald/core';
import { defaultDeviceId, defaultType, filterProblem, matchFilter, topicProblem } from './filters.ts';
import { dataFrom, defaultSource, derivedId, envelopeFromMqtt, type InboundContext, toMqttBinary } from './mapping.ts';

const ctx: InboundContext = { clientId: 'bridge-1', deviceId: 'd7', type: 'devices.telemetry', source: 'mqtt://h:1883/devices/d7/telemetry', now: Date.parse('2025-01-02T03:04:05Z') };

test('matchFilter follows MQTT matching rules', () => {
  assert.deepEqual(matchFilter('devices/+/telemetry', 'devices/d7/telemetry')?.plus, ['d7']);
  assert.equal(matchFilter('devices/+/telemetry', 'devices/d7/status'), undefined);
  assert.equal(matchFilter('devices/+/telemetry', 'devices/d7/telemetry/x'), undefined);
  assert.deepEqual(matchFilter('devices/#', 'devices/d7/a/b')?.hash, ['d7', 'a', 'b']);
  assert.deepEqual(matchFilter('devices/#', 'devices')?.hash, [], "'#' matches the parent level too");
  assert.equal(matchFilter('+/x', '$SYS/x'), undefined, 'wildcards at the start do not match $ topics');
  assert.equal(matchFilter('#', '$SYS/x'), undefined);
  assert.deepEqual(matchFilter('a/+/+', 'a//z')?.plus, ['', 'z'], 'empty levels match +');
});

test('filterProblem and topicProblem', () => {
  assert.equal(filterProblem('a/+/b/#'), undefined);
  assert.match(filterProblem('a/#/b')!, /last/);
  assert.match(filterProblem('a/b+')!, /whole level/);
  assert.match(filterProblem('$share/g/a')!, /shareGroup/);
  assert.match(filterProblem('')!, /non-empty/);
  assert.equal(topicProblem('devices/d1/commands'), undefined);
  assert.match(topicProblem('devices/+/commands')!, /must not contain/);
});

test('default device id and type come from the first matching filter', () => {
  const filters = ['devices/+/telemetry', 'site/+/+/status', 'fleet/#'];
  assert.equal(defaultDeviceId(filters, 'devices/d7/telemetry'), 'd7');
  assert.equal(defaultType(filters, 'devices/d7/telemetry'), 'devices.telemetry');
  assert.equal(defaultDeviceId(filters, 'site/s1/d2/status'), 's1', 'the first + names the device; use deviceIdFrom otherwise');
  assert.equal(defaultDeviceId(filters, 'fleet/truck9/gps'), 'truck9');
  assert.equal(defaultType(filters, 'fleet/truck9/gps'), 'fleet.gps');
  assert.equal(defaultDeviceId(filters, 'other/topic'), 'other/topic', 'no match: the whole topic');
  assert.equal(defaultType(['+'], 'd1'), 'mqtt.message');
});

test('derived ids: same delivery, same id; any difference, another id', () => {
  const p = Buffer.from('{"t":21.5}');
  const id = derivedId('b', 17, 'devices/d1/t', p);
  assert.match(id, /^[0-9a-f]{32}$/);
  assert.equal(derivedId('b', 17, 'devices/d1/t', Buffer.from('{"t":21.5}')), id, 'a redelivery (same packet id) is recognisable');
  assert.notEqual(derivedId('b', 18, 'devices/d1/t', p), id);
  assert.notEqual(derivedId('b', 17, 'devices/d2/t', p), id);
  assert.notEqual(derivedId('c', 17, 'devices/d1/t', p), id);
  assert.notEqual(derivedId('b', 17, 'devices/d1/t', Buffer.from('{"t":21.6}')), id);
  assert.notEqual(derivedId('b', undefined, 'x', p), derivedId('b', undefined, 'x', p), 'QoS 0: random');
});

test('defaultSource percent-encodes topic levels into a valid URI', () => {
  assert.equal(defaultSource('127.0.0.1:1883', 'devices/d 1/t'), 'mqtt://127.0.0.1:1883/devices/d%201/t');
  const env = createEnvelope({ type: 't', source: defaultSource('h', 'a/ä?#/b') });
  assert.equal(env.source, 'mqtt://h/a/%C3%A4%3F%23/b');
});

test('dataFrom: JSON, text or bytes, by content type or by sniffing', () => {
  assert.deepEqual(dataFrom(Buffer.from('{"a":1}'), undefined), { data: { a: 1 }, datacontenttype: 'application/json' });
  assert.deepEqual(dataFrom(Buffer.from('21.5'), undefined), { data: 21.5, datacontenttype: 'application/json' });
  assert.deepEqual(dataFrom(Buffer.from('ON'), undefined), { data: 'ON', datacontenttype: 'text/plain; charset=utf-8' });
  const bytes = Buffer.from([0xff, 0xfe, 0x00]);
  assert.deepEqual(dataFrom(bytes, undefined), { data: bytes, datacontenttype: 'application/octet-stream' });
  assert.deepEqual(dataFrom(Buffer.from('{"a":1}'), 'application/vnd.x+json'), { data: { a: 1 }, datacontenttype: 'application/vnd.x+json' });
  assert.deepEqual(dataFrom(Buffer.from('{bad'), 'application/json'), { data: Buffer.from('{bad'), datacontenttype: 'application/json' });
  assert.deepEqual(dataFrom(Buffer.from('hi'), 'text/plain'), { data: 'hi', datacontenttype: 'text/plain' });
  assert.deepEqual(dataFrom(Buffer.from('hi'), 'application/cbor'), { data: Buffer.from('hi'), datacontenttype: 'application/cbor' });
  assert.deepEqual(dataFrom(Buffer.alloc(0), undefined), {});
});

test('bridge-built envelope: type, source, subject, key, derived id, time of receipt', () => {
  const r = envelopeFromMqtt({ topic: 'devices/d7/telemetry', payload: Buffer.from('{"t":1}'), packetId: 5 }, ctx);
  assert.equal(r.mode, 'bridge');
  assert.equal(r.problem, undefined);
  assert.equal(r.envelope.type, 'devices.telemetry');
  assert.equal(r.envelope.source, ctx.source);
  assert.equal(r.envelope.subject, 'd7');
  assert.equal(r.envelope.partitionkey, 'd7');
  assert.equal(r.envelope.time, '2025-01-02T03:04:05.000Z');
  assert.equal(r.envelope.id, derivedId('bridge-1', 5, 'devices/d7/telemetry', Buffer.from('{"t":1}')));
  assert.deepEqual(decodeEnvelope(encodeEnvelope(r.envelope)), r.envelope, 'survives the JSON round trip');
});

test('binary mode: every valid-named User Property is an attribute; partitionkey stays the device id', () => {
  const r = envelopeFromMqtt(
    {
      topic: 'devices/d7/telemetry',
      payload: Buffer.from('{"t":1}'),
      packetId: 5,
      contentType: 'application/json',
      userProperties: { specversion: '1.0', id: 'e1', source: 'urn:d7', type: 'temp', time: '2025-01-01T00:00:00Z', zone: ['north', 'south'], partitionkey: 'd8', 'Not-An-Attribute': 'x' },
    },
    ctx,
  );
  assert.equal(r.mode, 'binary');
  assert.equal(r.envelope.id, 'e1');
  assert.equal(r.envelope.type, 'temp');
  assert.equal(r.envelope.time, '2025-01-01T00:00:00Z');
  assert.equal(r.envelope.zone, 'north', 'a repeated User Property: the first value');
  assert.equal(r.envelope.partitionkey, 'd7');
  assert.equal(r.envelope['Not-An-Attribute'], undefined);
  assert.deepEqual(r.envelope.data, { t: 1 });
});

test('binary mode with an unusable attribute: rebuilt from the topic, raw payload kept, problem reported', () => {
  const r = envelopeFromMqtt({ topic: 'devices/d7/telemetry', payload: Buffer.from('{"t":1}'), packetId: 5, userProperties: { specversion: '0.3', id: 'e1', source: 's', type: 't' } }, ctx);
  assert.equal(r.mode, 'bridge');
  assert.ok(r.problem);
  assert.equal(r.problem.code, 'HERALD_ERR_ENVELOPE_INVALID');
  assert.match(String(r.envelope.bridgeerror), /specversion/);
  assert.equal(r.envelope.type, 'devices.telemetry');
  assert.equal(Buffer.from(r.envelope.data_base64!, 'base64').toString(), '{"t":1}');
});

test('structured mode: the payload is the event; a broken one is kept as bytes', () => {
  const ev = createEnvelope({ id: 's1', type: 'alarm', source: 'urn:x', data: { level: 2 }, partitionkey: 'other' });
  const ok = envelopeFromMqtt({ topic: 'devices/d7/telemetry', payload: Buffer.from(encodeEnvelope(ev)), packetId: 1, contentType: 'application/cloudevents+json' }, ctx);
  assert.equal(ok.mode, 'structured');
  assert.equal(ok.envelope.id, 's1');
  assert.equal(ok.envelope.partitionkey, 'd7');
  const bad = envelopeFromMqtt({ topic: 'devices/d7/telemetry', payload: Buffer.from('{"specversion":"1.0"}'), packetId: 1, contentType: 'application/cloudevents+json' }, ctx);
  assert.equal(bad.mode, 'bridge');
  assert.ok(bad.problem);
  assert.equal(Buffer.from(bad.envelope.data_base64!, 'base64').toString(), '{"specversion":"1.0"}');
});

test('toMqttBinary: attributes as User Properties, datacontenttype as Content Type, data as payload', () => {
  const env = createEnvelope({ type: 'reboot', source: 'bridge', data: { s: 5 }, subject: 'd1', extensions: { attempt: 2 } });
  const m = toMqttBinary(env);
  assert.equal(m.contentType, 'application/json');
  assert.deepEqual(JSON.parse(m.payload.toString()), { s: 5 });
  assert.equal(m.userProperties.specversion, '1.0');
  assert.equal(m.userProperties.id, env.id);
  assert.equal(m.userProperties.attempt, '2');
  assert.equal(m.userProperties.data, undefined);
  const bin = toMqttBinary(createEnvelope({ type: 'fw', source: 'b', data: Buffer.from([1, 2, 3]) }));
  assert.deepEqual([...bin.payload], [1, 2, 3]);
  assert.equal(bin.contentType, 'application/octet-stream');
  const text = toMqttBinary(createEnvelope({ type: 'msg', source: 'b', data: 'hello', datacontenttype: 'text/plain' }));
  assert.equal(text.payload.toString(), 'hello');
  // Round trip through the inbound mapping.
  const back = envelopeFromMqtt({ topic: 'devices/d7/telemetry', payload: m.payload, packetId: 3, contentType: m.contentType, userProperties: m.userProperties }, ctx);
  assert.equal(back.envelope.id, env.id);
  assert.deepEqual(back.envelope.data, { s: 5 });
  assert.equal(back.envelope.attempt, '2', 'extension values travel as strings in MQTT');
});
