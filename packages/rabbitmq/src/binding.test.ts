// The CloudEvents AMQP binding without a broker: exact round trips, the structured size, and
// what a foreign or broken message decodes to.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type CloudEvent, createEnvelope, encodedSize, encodeEnvelope } from '@herald/core';
import { ATTEMPTS_HEADER, copyHeaders, decodeMessage, encodeMessage, type IncomingMessage, isJsonContentType } from './binding.ts';

/** What rabbitmq-client hands a consumer for a published body: text/plain → string, application/json → parsed. */
function receive(enc: ReturnType<typeof encodeMessage>, extraHeaders: Record<string, unknown> = {}): IncomingMessage {
  let body: unknown = enc.body;
  if (enc.contentEncoding === undefined && enc.contentType === 'text/plain') body = enc.body.toString();
  else if (enc.contentEncoding === undefined && enc.contentType === 'application/json') {
    try {
      body = JSON.parse(enc.body.toString());
    } catch {
      body = enc.body;
    }
  }
  return { headers: { ...enc.headers, ...extraHeaders }, contentType: enc.contentType, contentEncoding: enc.contentEncoding, body };
}

const base = { type: 'binding.test', source: 'herald-test/binding', id: 'e-1', time: new Date(Date.UTC(2024, 0, 2, 3, 4, 5)) };
const cases: Array<[string, CloudEvent]> = [
  ['JSON object data, extensions of every type', createEnvelope({ ...base, data: { a: 1, s: 'héllo ✓ 🚀', list: [1, 2.5, true, null], nested: { x: null } }, subject: 'sub/1', partitionkey: 'k', correlationid: 'c', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', extensions: { count: 42, flag: false, word: 'w', neg: -7 } })],
  ['a JSON string as data', createEnvelope({ ...base, data: 'just a string' })],
  ['a JSON number as data', createEnvelope({ ...base, data: 0 })],
  ['null data', createEnvelope({ ...base, data: null })],
  ['text/plain string data', createEnvelope({ ...base, data: 'plain text, ü', datacontenttype: 'text/plain' })],
  ['empty text/plain string', createEnvelope({ ...base, data: '', datacontenttype: 'text/plain' })],
  ['an object with a non-JSON content type', createEnvelope({ ...base, data: { odd: true }, datacontenttype: 'text/csv' })],
  ['+json content type', createEnvelope({ ...base, data: { a: [1] }, datacontenttype: 'application/vnd.herald+json; charset=utf-8' })],
  ['binary data', createEnvelope({ ...base, data: new Uint8Array([0, 1, 2, 255, 254, 128]) })],
  ['binary data declared application/json', createEnvelope({ ...base, data_base64: Buffer.from('{"not":"parsed"}').toString('base64'), datacontenttype: 'application/json' } as never)],
  ['binary data declared text/plain', createEnvelope({ ...base, data_base64: Buffer.from([0xff, 0xfe, 0x41]).toString('base64'), datacontenttype: 'text/plain' } as never)],
  ['no data', createEnvelope({ ...base })],
];

describe('CloudEvents AMQP binding', () => {
  for (const [label, env] of cases) {
    it(`round trip: ${label}`, () => {
      const enc = encodeMessage(env, env.partitionkey ?? 'key-1');
      for (const name of Object.keys(enc.headers)) assert.ok(name.startsWith('cloudEvents:') || name.startsWith('x-herald-'), `header ${name}`);
      if (env.data !== undefined && (env.datacontenttype === undefined || /json/.test(env.datacontenttype)) && typeof env.data !== 'undefined') {
        assert.equal(enc.headers['x-herald-data'], undefined, 'no marker for JSON data under a JSON content type');
      }
      assert.equal(enc.headers['cloudEvents:datacontenttype'], undefined, 'datacontenttype travels as the content-type property');
      assert.equal(enc.contentType, env.datacontenttype);
      const d = decodeMessage(receive(enc));
      assert.equal(d.decodeError, undefined);
      assert.deepStrictEqual(d.envelope, env);
      assert.equal(d.key, env.partitionkey ?? 'key-1');
      assert.equal(enc.headers['x-herald-key'], env.partitionkey === undefined ? 'key-1' : undefined, 'x-herald-key only when the key is not the partitionkey');
      assert.equal(d.priorAttempts, 0);
      assert.equal(d.deliveryCount, 0);
      assert.equal(enc.structuredSize, encodedSize(encodeEnvelope(env)), 'structuredSize is the byte size of the JSON structured format');
    });
  }

  it('the body of JSON data is the JSON, of text data the text, of binary data the bytes', () => {
    assert.equal(encodeMessage(cases[0]![1], undefined).body.toString(), JSON.stringify(cases[0]![1].data));
    assert.equal(encodeMessage(cases[4]![1], undefined).body.toString(), 'plain text, ü');
    assert.deepEqual([...encodeMessage(cases[8]![1], undefined).body], [0, 1, 2, 255, 254, 128]);
    assert.equal(encodeMessage(cases[11]![1], undefined).body.length, 0);
  });

  it('structuredSize is exact for multi-byte and escaped text', () => {
    for (const data of ['"quotes" and \\ backslash', 'line\nbreak\ttab', '🚀'.repeat(50), 'é'.repeat(300)]) {
      for (const datacontenttype of [undefined, 'text/plain']) {
        const env = createEnvelope({ ...base, data, ...(datacontenttype ? { datacontenttype } : {}) });
        assert.equal(encodeMessage(env, undefined).structuredSize, encodedSize(encodeEnvelope(env)));
      }
    }
  });

  it('reads the delivery count and the attempts of a delayed copy', () => {
    const enc = encodeMessage(cases[0]![1], 'k');
    const d = decodeMessage(receive(enc, { 'x-delivery-count': 2, [ATTEMPTS_HEADER]: 3 }));
    assert.equal(d.deliveryCount, 2);
    assert.equal(d.priorAttempts, 3);
    const copy = copyHeaders({ ...enc.headers, 'x-delivery-count': 2, 'x-death': [{}], 'x-first-death-queue': 'q' }, 4);
    assert.equal(copy['x-delivery-count'], undefined);
    assert.equal(copy['x-death'], undefined);
    assert.equal(copy['x-first-death-queue'], undefined);
    assert.equal(copy[ATTEMPTS_HEADER], 4);
    assert.equal(copy['cloudEvents:id'], 'e-1');
  });

  it('a message from another producer (no x-herald-data) is read by its content type', () => {
    const headers = { 'cloudEvents:specversion': '1.0', 'cloudEvents:id': 'x', 'cloudEvents:source': 'other', 'cloudEvents:type': 't' };
    assert.deepEqual(decodeMessage({ headers, contentType: 'application/json', body: { a: 1 } }).envelope?.data, { a: 1 });
    assert.deepEqual(decodeMessage({ headers, contentType: 'application/json', body: Buffer.from('[1,2]') }).envelope?.data, [1, 2]);
    assert.equal(decodeMessage({ headers, contentType: 'application/json', body: 'a JSON string the client parsed' }).envelope?.data, 'a JSON string the client parsed');
    assert.deepEqual(decodeMessage({ headers, contentType: 'application/cloudevents+json', body: Buffer.from('"s"') }).envelope?.data, 's');
    assert.equal(decodeMessage({ headers, contentType: 'text/plain', body: 'hi' }).envelope?.data, 'hi');
    assert.equal(decodeMessage({ headers, contentType: 'image/png', body: Buffer.from([1, 2]) }).envelope?.data_base64, 'AQI=');
    assert.equal(decodeMessage({ headers, body: Buffer.alloc(0) }).envelope?.data, undefined);
  });

  it('a message that is not a CloudEvent gives envelope null and HERALD_ERR_CORRUPT_RECORD naming the problems', () => {
    const d = decodeMessage({ headers: { 'cloudEvents:specversion': '1.0', 'cloudEvents:source': 's' }, contentType: 'application/json', body: Buffer.from('{"a":1}') });
    assert.equal(d.envelope, null);
    assert.equal(d.decodeError?.code, 'HERALD_ERR_CORRUPT_RECORD');
    assert.match(d.decodeError!.message, /cloudEvents:id is required/);
    assert.match(d.decodeError!.message, /cloudEvents:type is required/);
    assert.deepEqual(d.structured.data, { a: 1 }, 'what could be read is kept for the dead letter');
    const unmarked = decodeMessage({ headers: { 'cloudEvents:specversion': '1.0', 'cloudEvents:id': 'i', 'cloudEvents:source': 's', 'cloudEvents:type': 't' }, contentType: 'application/vnd.x+json', body: Buffer.from('{not json') });
    assert.equal(unmarked.envelope, null, 'a JSON content type over a body that is not JSON is corrupt');
    assert.match(unmarked.decodeError!.message, /not the JSON its content type says/);
    const bad = decodeMessage({ headers: { 'cloudEvents:specversion': '1.0', 'cloudEvents:id': 'i', 'cloudEvents:source': 's', 'cloudEvents:type': 't', 'x-herald-data': 'json' }, contentType: 'text/csv', body: Buffer.from('{not json') });
    assert.equal(bad.envelope, null);
    assert.match(bad.decodeError!.message, /not the JSON/);
    assert.equal(bad.structured.data_base64, Buffer.from('{not json').toString('base64'));
  });

  it('JSON content types', () => {
    for (const t of [undefined, 'application/json', 'application/json; charset=utf-8', 'text/json', 'application/cloudevents+json']) assert.ok(isJsonContentType(t), String(t));
    for (const t of ['text/plain', 'application/octet-stream', 'application/jsonx']) assert.ok(!isJsonContentType(t), t);
  });
});
