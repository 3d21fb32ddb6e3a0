// The CloudEvents Kafka binding (binary mode) and key placement, without a broker.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createEnvelope, encodeEnvelope, isHeraldError, partitionForKey } from '@herald/core';
import kafkajs from 'kafkajs';
import { decodeRecord, encodeBinary } from './binding.ts';

const toBuffers = (h: Record<string, string>): Record<string, Buffer> => Object.fromEntries(Object.entries(h).map(([k, v]) => [k, Buffer.from(v)]));

describe('CloudEvents Kafka binding (binary mode)', () => {
  it('writes ce_ headers, content-type and the JSON data as the value, and reads it back unchanged', () => {
    const env = createEnvelope({
      type: 'order.placed',
      source: 'shop/orders',
      subject: 'order/1',
      data: { id: 1, text: 'héllo ✓ 🚀', list: [1, 2.5, true, null] },
      dataschema: 'https://example.com/order/v1',
      partitionkey: 'order-1',
      correlationid: 'c-1',
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      extensions: { tenant: 'acme', priority: 3, urgent: true },
    });
    const r = encodeBinary(env);
    assert.equal(r.headers.ce_specversion, '1.0');
    assert.equal(r.headers.ce_id, env.id);
    assert.equal(r.headers.ce_type, 'order.placed');
    assert.equal(r.headers.ce_source, 'shop/orders');
    assert.equal(r.headers.ce_partitionkey, 'order-1');
    assert.equal(r.headers.ce_priority, '3', 'extension values travel as strings');
    assert.equal(r.headers['content-type'], 'application/json');
    assert.equal(r.headers.ce_datacontenttype, undefined, 'datacontenttype is the content-type header, not a ce_ header');
    assert.equal(r.headers.ce_data, undefined);
    assert.deepEqual(JSON.parse(r.value!.toString('utf8')), env.data);
    const back = decodeRecord(toBuffers(r.headers), r.value);
    assert.deepStrictEqual(back, env, 'round trip keeps every attribute, typed extensions and data');
    assert.deepStrictEqual(JSON.parse(encodeEnvelope(back)), JSON.parse(encodeEnvelope(env)), "the JSON structured form (Delivery.raw) carries the same event");
  });

  it('binary data travels as raw bytes, text data as UTF-8, no data as a null value', () => {
    const bin = createEnvelope({ type: 't', source: 's', data: new Uint8Array([0, 1, 2, 255]) });
    const rb = encodeBinary(bin);
    assert.deepEqual([...rb.value!], [0, 1, 2, 255]);
    assert.equal(rb.headers['content-type'], 'application/octet-stream');
    assert.deepStrictEqual(decodeRecord(toBuffers(rb.headers), rb.value), bin);

    const text = createEnvelope({ type: 't', source: 's', datacontenttype: 'text/plain', data: 'plain ✓' });
    const rt = encodeBinary(text);
    assert.equal(rt.value!.toString('utf8'), 'plain ✓');
    assert.deepStrictEqual(decodeRecord(toBuffers(rt.headers), rt.value), text);

    const jsonString = createEnvelope({ type: 't', source: 's', data: 'a JSON string' });
    const rj = encodeBinary(jsonString);
    assert.equal(rj.value!.toString('utf8'), '"a JSON string"');
    assert.deepStrictEqual(decodeRecord(toBuffers(rj.headers), rj.value), jsonString);

    const none = createEnvelope({ type: 't', source: 's' });
    const rn = encodeBinary(none);
    assert.equal(rn.value, null);
    assert.deepStrictEqual(decodeRecord(toBuffers(rn.headers), rn.value), none);
  });

  it('reads records of other CloudEvents producers: binary mode without Herald headers, structured mode', () => {
    const foreign = decodeRecord(
      { ce_specversion: Buffer.from('1.0'), ce_id: Buffer.from('x-1'), ce_source: Buffer.from('/other'), ce_type: Buffer.from('other.thing'), 'content-type': Buffer.from('application/cloudevents-batch+json; charset=utf-8') },
      Buffer.from('{"a":1}'),
    );
    assert.deepEqual(foreign.data, { a: 1 }, 'a +json media type is parsed as JSON');
    const bytes = decodeRecord({ ce_specversion: '1.0', ce_id: 'x-2', ce_source: '/o', ce_type: 't', 'content-type': 'application/avro' }, Buffer.from([1, 2, 3]));
    assert.equal(bytes.data_base64, Buffer.from([1, 2, 3]).toString('base64'), 'other media types become data_base64');
    const structured = createEnvelope({ type: 's.t', source: 'src', data: { ok: true } });
    const s = decodeRecord({ 'content-type': Buffer.from('application/cloudevents+json; charset=UTF-8') }, Buffer.from(encodeEnvelope(structured)));
    assert.deepStrictEqual(s, structured);
  });

  it('refuses records that are not CloudEvents with typed errors', () => {
    const notEvent = (): unknown => decodeRecord({}, Buffer.from('{"hello":1}'));
    assert.throws(notEvent, (e) => isHeraldError(e, 'HERALD_ERR_ENVELOPE_INVALID'));
    const missing = (): unknown => decodeRecord({ ce_specversion: Buffer.from('1.0'), ce_id: Buffer.from('1') }, null);
    assert.throws(missing, (e) => isHeraldError(e, 'HERALD_ERR_ENVELOPE_INVALID') && /source|type/.test((e as Error).message));
    const badJson = (): unknown => decodeRecord({ ce_specversion: '1.0', ce_id: '1', ce_source: 's', ce_type: 't', 'content-type': 'application/json' }, Buffer.from('{not json'));
    assert.throws(badJson, (e) => isHeraldError(e, 'HERALD_ERR_DECODE'));
    const badUtf8 = (): unknown => decodeRecord({ ce_specversion: '1.0', ce_id: '1', ce_source: 's', ce_type: 't', 'content-type': 'application/json' }, Buffer.from([0xff, 0xfe]));
    assert.throws(badUtf8, (e) => isHeraldError(e, 'HERALD_ERR_DECODE'));
  });
});

describe('key placement', () => {
  it("kafkajs' DefaultPartitioner (Java-compatible murmur2) agrees with core partitionForKey", () => {
    const partitioner = kafkajs.Partitioners.DefaultPartitioner();
    let checked = 0;
    for (const partitions of [1, 2, 3, 4, 7, 8, 12, 64, 100]) {
      const partitionMetadata = Array.from({ length: partitions }, (_, p) => ({ partitionId: p, leader: 1, partitionErrorCode: 0, replicas: [1], isr: [1] }));
      for (let i = 0; i < 300; i++) {
        const key = i % 3 === 0 ? `key-${i}` : i % 3 === 1 ? `ключ-✓-${i * 7919}` : `${i}`.repeat(i % 11);
        const theirs = partitioner({ topic: 't', partitionMetadata, message: { key, value: null } });
        assert.equal(theirs, partitionForKey(key, partitions), `key ${JSON.stringify(key)} over ${partitions} partitions`);
        checked++;
      }
    }
    assert.equal(checked, 2700);
  });
});
