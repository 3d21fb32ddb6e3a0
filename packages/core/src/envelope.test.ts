import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CloudEvent as SdkCloudEvent, HTTP } from 'cloudevents';
import {
  CONTEXT_ATTRIBUTES,
  HERALD_EXTENSIONS,
  createEnvelope,
  decodeEnvelope,
  encodeEnvelope,
  encodedSize,
  envelopeProblems,
  validateEnvelope,
  type CloudEvent,
  type EnvelopeInput,
} from './envelope.ts';
import { isHeraldError, type HeraldError } from './errors.ts';

const TRACEPARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
const NOW = Date.parse('2024-05-01T10:00:00.123Z');

/** A valid envelope as a plain object, to break one attribute at a time. */
function base(): Record<string, unknown> {
  return { specversion: '1.0', id: 'evt-1', source: '/shop/orders', type: 'shop.order.placed' };
}

function fullInput(): EnvelopeInput<{ orderId: string; lines: Array<{ sku: string; qty: number }>; note: string | null }> {
  return {
    id: 'a3c1d2e4-0000-4000-8000-000000000001',
    type: 'shop.order.placed',
    source: 'https://shop.example.com/orders',
    subject: 'order/o-1',
    time: '2024-05-01T10:00:00.123Z',
    dataschema: 'urn:herald:schema:shop.order.placed:v2',
    data: { orderId: 'o-1', lines: [{ sku: 'A-1', qty: 2 }], note: null },
    traceparent: TRACEPARENT,
    tracestate: 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE',
    correlationid: 'corr-1',
    causationid: 'cause-1',
    partitionkey: 'o-1',
    sequence: '00000000000000000042',
    extensions: { tenant: 'acme', priority: 3, urgent: true, negative: -2147483648 },
  };
}

function invalidWith(fn: () => unknown): HeraldError {
  try {
    fn();
  } catch (e) {
    assert.ok(isHeraldError(e, 'HERALD_ERR_ENVELOPE_INVALID'), `expected HERALD_ERR_ENVELOPE_INVALID, got ${String(e)}`);
    return e;
  }
  assert.fail('expected HERALD_ERR_ENVELOPE_INVALID, nothing was thrown');
}

function problemsOf(fn: () => unknown): string[] {
  return invalidWith(fn).details.problems as string[];
}

function assertValid(value: Record<string, unknown>, label = JSON.stringify(value)): void {
  assert.deepEqual(envelopeProblems(value), [], label);
}

function assertInvalid(value: Record<string, unknown>, mention: string | RegExp, label = JSON.stringify(value)): void {
  const problems = envelopeProblems(value);
  assert.ok(problems.length > 0, `should be invalid: ${label}`);
  const text = problems.join(' | ');
  if (typeof mention === 'string') assert.ok(text.includes(mention), `${label}: expected a problem mentioning ${mention}, got ${text}`);
  else assert.match(text, mention, label);
}

// ---------------------------------------------------------------------------------------
// createEnvelope

test('createEnvelope fills id, time, specversion and datacontenttype and freezes the result', () => {
  const env = createEnvelope({ type: 'shop.order.placed', source: '/shop', data: { a: 1 } }, NOW);
  assert.equal(env.specversion, '1.0');
  assert.match(env.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(env.time, '2024-05-01T10:00:00.123Z', 'time comes from the injected clock');
  assert.equal(env.datacontenttype, 'application/json');
  assert.deepEqual(env.data, { a: 1 });
  assert.ok(Object.isFrozen(env));
  assert.notEqual(createEnvelope({ type: 't', source: '/s' }).id, createEnvelope({ type: 't', source: '/s' }).id);

  const bare = createEnvelope({ type: 't', source: '/s' }, NOW);
  assert.equal('datacontenttype' in bare, false, 'no data, no datacontenttype');
  assert.equal('data' in bare, false);
  assert.deepEqual(Object.keys(bare).sort(), ['id', 'source', 'specversion', 'time', 'type']);

  assert.equal(createEnvelope({ type: 't', source: '/s', time: new Date(NOW) }).time, '2024-05-01T10:00:00.123Z');
  assert.equal(createEnvelope({ type: 't', source: '/s', data: 'x', datacontenttype: 'text/plain' }).datacontenttype, 'text/plain');
});

test('createEnvelope carries every Herald extension and custom extensions', () => {
  const env = createEnvelope(fullInput(), NOW);
  for (const ext of HERALD_EXTENSIONS) assert.equal(env[ext], fullInput()[ext], ext);
  assert.equal(env.tenant, 'acme');
  assert.equal(env.priority, 3);
  assert.equal(env.urgent, true);
  assert.equal(env.time, '2024-05-01T10:00:00.123Z', 'an explicit time wins over now');
  assert.equal('extensions' in env, false);
});

test('createEnvelope carries binary data as data_base64 (application/octet-stream), never as an object of indexes', () => {
  const bytes = new Uint8Array([0, 1, 2, 250, 255]);
  const env = createEnvelope({ type: 't', source: '/s', data: bytes }, NOW);
  assert.equal(env.data, undefined);
  assert.equal(env.data_base64, Buffer.from(bytes).toString('base64'));
  assert.equal(env.datacontenttype, 'application/octet-stream');
  const back = decodeEnvelope(encodeEnvelope(env));
  assert.deepEqual(new Uint8Array(Buffer.from(back.data_base64!, 'base64')), bytes);
  // A view into a larger buffer encodes only its own bytes.
  const view = new Uint8Array([9, 9, 1, 2, 9]).subarray(2, 4);
  assert.equal(createEnvelope({ type: 't', source: '/s', data: view }).data_base64, Buffer.from([1, 2]).toString('base64'));
});

test('createEnvelope names every problem in one HERALD_ERR_ENVELOPE_INVALID, extension problems included', () => {
  const e = invalidWith(() =>
    createEnvelope({
      type: '',
      source: 'not a uri',
      id: '',
      subject: '',
      dataschema: 'relative/path',
      traceparent: 'nope',
      partitionkey: '',
      extensions: { specversion: '0.3', Bad_Name: 'x', afloat: 1.5, data: 'x', thisnameistwentyone12: 'x' } as Record<string, string | number>,
    }),
  );
  const problems = e.details.problems as string[];
  for (const mention of ['type', 'source', 'id', 'subject', 'dataschema', 'traceparent', 'partitionkey', '"specversion"', '"Bad_Name"', '"afloat"', '"data"', '"thisnameistwentyone12"']) {
    assert.ok(problems.some((p) => p.includes(mention)), `a problem names ${mention}: ${problems.join(' | ')}`);
    assert.ok(e.message.includes(mention), `the message names ${mention}`);
  }
  assert.ok(problems.length >= 12);
  assert.equal(e.retryable, false);
  assert.equal(e.details.type, '');
});

test('createEnvelope: an invalid Date or clock reading is an envelope error, not a RangeError', () => {
  assert.match(problemsOf(() => createEnvelope({ type: 't', source: '/s', time: new Date('nope') })).join(), /time/);
  assert.match(problemsOf(() => createEnvelope({ type: 't', source: '/s' }, Number.NaN)).join(), /time/);
});

// ---------------------------------------------------------------------------------------
// CloudEvents 1.0 rules

test('required attributes: id, source, specversion and type, each named when missing or empty', () => {
  assertValid(base());
  for (const attr of ['id', 'source', 'type', 'specversion']) {
    const missing = base();
    delete missing[attr];
    assertInvalid(missing, attr, `without ${attr}`);
    assertInvalid({ ...base(), [attr]: '' }, attr, `empty ${attr}`);
    assertInvalid({ ...base(), [attr]: 5 }, attr, `numeric ${attr}`);
  }
  assertInvalid({ ...base(), specversion: '0.3' }, 'specversion');
  assertInvalid({ ...base(), specversion: 1 }, 'specversion');
  const all = envelopeProblems({});
  assert.equal(all.length, 4, `one problem per missing attribute: ${all.join(' | ')}`);
});

test('source is a URI-reference (RFC 3986)', () => {
  for (const source of ['/mycontext', 'https://github.com/cloudevents', 'mailto:cncf-wg-serverless@lists.cncf.io', 'urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66', 'cloudevents/spec/pull/123', '1-555-123-4567', 'http://[::1]:8080/a?b=c#d', 'svc:orders', '%C3%A9']) {
    assertValid({ ...base(), source }, source);
  }
  for (const source of ['order service', 'a#b#c', '%zz', 'http://x/<y>', 'é']) assertInvalid({ ...base(), source }, 'source', source);
});

test('time is optional and must be RFC 3339: real calendar dates, 00–23 hours, an offset', () => {
  const { time: _none, ...noTime } = { ...base(), time: undefined };
  assertValid(noTime);
  for (const time of ['2024-05-01T10:00:00Z', '2024-05-01T10:00:00.123456789Z', '2024-02-29T23:59:59+05:30', '2024-05-01t10:00:00z', '1985-04-12T23:20:50.52Z', '2016-12-31T23:59:60Z', '2016-12-31T18:59:60-05:00']) {
    assertValid({ ...base(), time }, time);
  }
  for (const time of [
    '2024-05-01',
    '2024-05-01T10:00:00',
    '2024-05-01 10:00:00Z',
    '2024-02-30T00:00:00Z',
    '2023-02-29T00:00:00Z',
    '2024-13-01T00:00:00Z',
    '2024-04-31T00:00:00Z',
    '2024-05-01T24:00:00Z',
    '2024-05-01T10:60:00Z',
    '2024-05-01T12:00:60Z',
    '2024-05-01T10:00:00+24:00',
    '2024-05-01T10:00:00+0200',
    'May 1 2024',
    '',
  ]) {
    assertInvalid({ ...base(), time }, 'time', time);
  }
  assertInvalid({ ...base(), time: NOW }, 'time', 'epoch number');
});

test('subject and datacontenttype are optional strings; datacontenttype is an RFC 2046 media type', () => {
  assertValid({ ...base(), subject: 'order/o-1', datacontenttype: 'application/json' });
  assertValid({ ...base(), datacontenttype: 'text/plain; charset=utf-8' });
  assertValid({ ...base(), datacontenttype: 'application/vnd.apache.thrift.binary' });
  assertInvalid({ ...base(), subject: '' }, 'subject');
  assertInvalid({ ...base(), subject: 5 }, 'subject');
  for (const dct of ['', 'json', 'text /plain', 'application/json;', 5]) assertInvalid({ ...base(), datacontenttype: dct }, 'datacontenttype', String(dct));
});

test('dataschema is an absolute URI (RFC 3986 §4.3)', () => {
  for (const ds of ['urn:herald:schema:shop.order.placed:v2', 'urn:herald:schema:shop/orders:placed:v1', 'https://example.com/schemas/order.json', 'https://example.com/s?v=2']) {
    assertValid({ ...base(), dataschema: ds }, ds);
  }
  for (const ds of ['', 'relative/path.json', '/abs/path', 'https://example.com/s.json#/defs/order', 'urn:x:has space', 5]) {
    assertInvalid({ ...base(), dataschema: ds }, 'dataschema', String(ds));
  }
});

test('traceparent follows W3C Trace Context', () => {
  assertValid({ ...base(), traceparent: TRACEPARENT });
  assertValid({ ...base(), traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00' });
  assertValid({ ...base(), traceparent: `01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future` }, 'a later version may add fields');
  for (const tp of [
    '',
    'nope',
    '00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01', // upper-case hex
    '00-00000000000000000000000000000000-b7ad6b7169203331-01', // all-zero trace id
    '00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01', // all-zero parent id
    'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', // version ff
    '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra', // version 00 has exactly four fields
    '00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01', // short trace id
    '00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-01',
  ]) {
    assertInvalid({ ...base(), traceparent: tp }, 'traceparent', tp);
  }
  assertInvalid({ ...base(), traceparent: 1 }, 'traceparent');
});

test('tracestate, correlationid, causationid, partitionkey and sequence are strings', () => {
  assertValid({ ...base(), tracestate: 'rojo=00f067aa0ba902b7', correlationid: 'c', causationid: 'd', partitionkey: 'k', sequence: '0001' });
  assertValid({ ...base(), tracestate: '' }, 'W3C allows an empty tracestate');
  for (const ext of ['correlationid', 'causationid', 'partitionkey', 'sequence']) {
    assertInvalid({ ...base(), [ext]: '' }, ext, `empty ${ext}`);
    assertInvalid({ ...base(), [ext]: 7 }, ext, `numeric ${ext}`);
  }
  assertInvalid({ ...base(), tracestate: 7 }, 'tracestate');
});

test('attribute names: lower-case a-z and 0-9 only; Herald produces at most 20 characters', () => {
  assertValid({ ...base(), abc123: 'x' });
  assertValid({ ...base(), a: 'x' });
  for (const name of ['Upper', 'with_underscore', 'with-dash', 'with.dot', 'café', 'has space', '']) {
    assertInvalid({ ...base(), [name]: 'x' }, `"${name}"`, name);
    assert.match(problemsOf(() => createEnvelope({ type: 't', source: '/s', extensions: { [name]: 'x' } })).join(), /naming rule/, name);
  }
  const twenty = 'abcdefghij0123456789';
  const twentyOne = `${twenty}x`;
  assert.equal(createEnvelope({ type: 't', source: '/s', extensions: { [twenty]: 'x' } })[twenty], 'x', '20 characters is fine');
  assert.match(problemsOf(() => createEnvelope({ type: 't', source: '/s', extensions: { [twentyOne]: 'x' } })).join(), /longer than 20 characters/);
  assert.match(envelopeProblems({ ...base(), [twentyOne]: 'x' }, { producing: true }).join(), /longer than 20/);
  // The 20-character limit is a SHOULD in CloudEvents 1.0.2: receivers accept longer names.
  assertValid({ ...base(), [twentyOne]: 'x' });
  assert.equal(decodeEnvelope(JSON.stringify({ ...base(), [twentyOne]: 'x' }))[twentyOne], 'x');
});

test('attribute values: string, boolean or 32-bit integer only', () => {
  assertValid({ ...base(), s: 'x', t: true, f: false, i: 0, max: 2147483647, min: -2147483648 });
  for (const [label, value] of [
    ['float', 1.5],
    ['too big', 2147483648],
    ['too small', -2147483649],
    ['object', { a: 1 }],
    ['array', [1]],
    ['null', null],
    ['NaN', Number.NaN],
  ] as const) {
    assertInvalid({ ...base(), ext: value }, '"ext"', label);
  }
});

test('string values may not hold control characters, unpaired surrogates or noncharacters', () => {
  assertValid({ ...base(), subject: 'émoji 😀 ok', ext: '订单' });
  for (const bad of ['a\nb', 'tab\there', '\u0000', '\u007f', '\u0085', '\ud800', 'x\udc00', '\ufffe', '\ufdd0']) {
    assertInvalid({ ...base(), subject: bad }, 'subject', JSON.stringify(bad));
    assertInvalid({ ...base(), ext: bad }, '"ext"', JSON.stringify(bad));
    assertInvalid({ ...base(), partitionkey: bad }, 'partitionkey', JSON.stringify(bad));
  }
  assertInvalid({ ...base(), id: 'a\nb' }, 'id');
});

test('data and data_base64 are mutually exclusive; data_base64 is padded base64', () => {
  assertValid({ ...base(), data: { any: ['json', 1, null] } });
  assertValid({ ...base(), data: null });
  assertValid({ ...base(), data_base64: 'AQL/' });
  assertValid({ ...base(), data_base64: '' });
  assertInvalid({ ...base(), data: {}, data_base64: 'AQL/' }, 'mutually exclusive');
  for (const b64 of ['AQL', 'A===', 'not base64!', 5]) assertInvalid({ ...base(), data_base64: b64 }, 'data_base64', String(b64));
});

test('every problem is named in one error, and validateEnvelope freezes what it accepts', () => {
  const broken = { specversion: '2.0', source: 'a b', type: '', time: 'yesterday', dataschema: 'x', Bad: 1, fine: 'ok', num: 0.5, data: 1, data_base64: 'AA==' };
  const e = invalidWith(() => validateEnvelope(broken));
  const problems = e.details.problems as string[];
  for (const mention of ['specversion', 'id', 'source', 'type', 'time', 'dataschema', '"Bad"', '"num"', 'mutually exclusive']) {
    assert.ok(problems.some((p) => p.includes(mention)), `names ${mention}`);
  }
  assert.equal(problems.length, 9, problems.join(' | '));
  assert.equal(e.message.split('; ').length, 9);

  const ok = base();
  const v = validateEnvelope(ok);
  assert.equal(v, ok);
  assert.ok(Object.isFrozen(v));
  assert.deepEqual(envelopeProblems('nope'), ['envelope must be a JSON object (got "nope")']);
  assert.equal(envelopeProblems([]).length, 1);
});

test('CONTEXT_ATTRIBUTES and HERALD_EXTENSIONS list the attributes', () => {
  assert.deepEqual([...CONTEXT_ATTRIBUTES].sort(), ['datacontenttype', 'dataschema', 'id', 'source', 'specversion', 'subject', 'time', 'type']);
  assert.deepEqual([...HERALD_EXTENSIONS].sort(), ['causationid', 'correlationid', 'partitionkey', 'sequence', 'traceparent', 'tracestate']);
});

// ---------------------------------------------------------------------------------------
// Encoding and decoding

test('round trip: createEnvelope → encodeEnvelope → decodeEnvelope is equal, from a string and from bytes', () => {
  const env = createEnvelope(fullInput(), NOW);
  const encoded = encodeEnvelope(env);
  assert.deepEqual(decodeEnvelope(encoded), env);
  assert.deepEqual(decodeEnvelope(Buffer.from(encoded, 'utf8')), env);
  assert.deepEqual(decodeEnvelope(new TextEncoder().encode(encoded)), env);
  // A view into a larger buffer decodes only its own bytes.
  const padded = Buffer.concat([Buffer.from('xx'), Buffer.from(encoded), Buffer.from('yy')]);
  assert.deepEqual(decodeEnvelope(padded.subarray(2, padded.length - 2)), env);
  // A UTF-8 byte order mark is ignored.
  assert.deepEqual(decodeEnvelope(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(encoded)])), env);
  assert.ok(Object.isFrozen(decodeEnvelope(encoded)));

  const minimal = createEnvelope({ type: 't', source: '/s' }, NOW);
  assert.deepEqual(decodeEnvelope(encodeEnvelope(minimal)), minimal);
  const unicode = createEnvelope({ type: 't', source: '/s', subject: 'Jürgen 😀', data: { text: '订单 ❤' } }, NOW);
  assert.deepEqual(decodeEnvelope(Buffer.from(encodeEnvelope(unicode))), unicode);
  assert.equal(encodedSize(encodeEnvelope(unicode)), Buffer.from(encodeEnvelope(unicode)).length);
  assert.equal(encodedSize('é'), 2);
});

test('decodeEnvelope: not JSON or not UTF-8 is HERALD_ERR_DECODE; JSON that is not an object is HERALD_ERR_ENVELOPE_INVALID', () => {
  for (const raw of ['', 'not json', '{"id":', "{'single':'quotes'}", Buffer.from('{"a":')]) {
    assert.throws(() => decodeEnvelope(raw), (e: unknown) => isHeraldError(e, 'HERALD_ERR_DECODE') && e.retryable === false && e.cause instanceof SyntaxError, String(raw));
  }
  const bad = Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]); // {"<invalid utf-8>"}
  assert.throws(() => decodeEnvelope(bad), (e: unknown) => isHeraldError(e, 'HERALD_ERR_DECODE') && /UTF-8/.test(e.message));
  for (const raw of ['[]', '[{"id":"x"}]', '42', '"a string"', 'null', 'true']) {
    assert.throws(() => decodeEnvelope(raw), (e: unknown) => isHeraldError(e, 'HERALD_ERR_ENVELOPE_INVALID') && /JSON object/.test(e.message), raw);
  }
  const problems = problemsOf(() => decodeEnvelope('{"specversion":"1.0","id":"x","type":"t"}'));
  assert.deepEqual(problems.length, 1);
  assert.match(problems[0]!, /source/);
});

test('decodeEnvelope treats null attributes as absent, as the JSON format requires', () => {
  const env = decodeEnvelope(JSON.stringify({ ...base(), subject: null, time: null, unsetextension: null, dataschema: null, data: { a: 1 } }));
  assert.equal('subject' in env, false);
  assert.equal('time' in env, false);
  assert.equal('unsetextension' in env, false);
  assert.deepEqual(env.data, { a: 1 });
  // A null data is a JSON value and stays, unless data_base64 carries the data.
  assert.equal(decodeEnvelope(JSON.stringify({ ...base(), data: null })).data, null);
  const bin = decodeEnvelope(JSON.stringify({ ...base(), data: null, data_base64: 'AQL/' }));
  assert.equal('data' in bin, false);
  assert.equal(bin.data_base64, 'AQL/');
  // A required attribute that is null is missing.
  assert.match(problemsOf(() => decodeEnvelope(JSON.stringify({ ...base(), id: null }))).join(), /id is required/);
});

test('encodeEnvelope: data that JSON cannot hold is HERALD_ERR_ENVELOPE_INVALID, not a TypeError', () => {
  const env = createEnvelope({ type: 't', source: '/s', data: { n: 1n } }, NOW);
  const e = invalidWith(() => encodeEnvelope(env));
  assert.match(e.message, /JSON/);
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  invalidWith(() => encodeEnvelope(createEnvelope({ type: 't', source: '/s', data: cyclic }, NOW)));
});

// ---------------------------------------------------------------------------------------
// Interoperability with the official CloudEvents SDK (cloudevents@10)

const ATTRS = ['specversion', 'id', 'source', 'type', 'time', 'subject', 'datacontenttype', 'dataschema', ...HERALD_EXTENSIONS, 'tenant', 'priority', 'urgent'] as const;

function sdkEvent(): SdkCloudEvent<unknown> {
  return new SdkCloudEvent({
    specversion: '1.0',
    id: 'sdk-1',
    source: 'https://shop.example.com/orders',
    type: 'shop.order.placed',
    time: '2024-05-01T10:00:00.123Z',
    subject: 'order/o-1',
    datacontenttype: 'application/json',
    dataschema: 'urn:herald:schema:shop.order.placed:v2',
    data: { orderId: 'o-1', lines: [{ sku: 'A-1', qty: 2 }] },
    traceparent: TRACEPARENT,
    tracestate: 'rojo=00f067aa0ba902b7',
    correlationid: 'corr-1',
    causationid: 'cause-1',
    partitionkey: 'o-1',
    sequence: '00000000000000000042',
    tenant: 'acme',
    priority: 3,
    urgent: true,
  });
}

test('SDK → Herald: an event built and serialized by the SDK decodes with every attribute intact', () => {
  const ev = sdkEvent();
  const serializations = {
    'HTTP.structured body': HTTP.structured(ev).body as string,
    'toString()': ev.toString(),
    'JSON.stringify': JSON.stringify(ev),
  };
  for (const [how, body] of Object.entries(serializations)) {
    const env = decodeEnvelope(body);
    for (const attr of ATTRS) assert.deepEqual(env[attr], (ev as unknown as Record<string, unknown>)[attr], `${how}: ${attr}`);
    assert.deepEqual(env.data, ev.data, `${how}: data`);
    // Bytes off the wire too.
    assert.deepEqual(decodeEnvelope(Buffer.from(body)), env);
  }
});

test('SDK → Herald: binary data arrives as data_base64 with the same bytes', () => {
  const bytes = new Uint8Array([0, 1, 2, 127, 128, 255]);
  const ev = new SdkCloudEvent({ id: 'sdk-2', source: '/s', type: 'blob.stored', data: bytes, datacontenttype: 'application/octet-stream' });
  const env = decodeEnvelope(HTTP.structured(ev).body as string);
  assert.equal(env.data, undefined);
  assert.deepEqual(new Uint8Array(Buffer.from(env.data_base64!, 'base64')), bytes);
  assert.equal(env.datacontenttype, 'application/octet-stream');
});

test('SDK → Herald: the SDK normalises time to UTC milliseconds; the instant is preserved', () => {
  const ev = new SdkCloudEvent({ id: 'sdk-3', source: '/s', type: 't', time: '2024-05-01T12:00:00.5+02:00' });
  const env = decodeEnvelope(ev.toString());
  assert.equal(env.time, '2024-05-01T10:00:00.500Z');
  assert.equal(Date.parse(env.time!), Date.parse('2024-05-01T12:00:00.5+02:00'));
});

test('SDK → Herald: extension names over 20 characters, legal in CloudEvents 1.0.2 and accepted by the SDK, decode', () => {
  const ev = new SdkCloudEvent({ id: 'sdk-4', source: '/s', type: 't', comexampleextension1long: 'v' });
  assert.equal(decodeEnvelope(ev.toString()).comexampleextension1long, 'v');
});

test('Herald → SDK: our encoding is accepted by HTTP.toEvent and by new CloudEvent(…) with validation on', () => {
  const env = createEnvelope(fullInput(), NOW);
  const body = encodeEnvelope(env);

  const viaHttp = HTTP.toEvent({ headers: { 'content-type': 'application/cloudevents+json' }, body });
  assert.ok(!Array.isArray(viaHttp));
  const received = viaHttp as SdkCloudEvent<unknown>;
  assert.equal(received.validate(), true, 'the SDK validates it against the CloudEvents JSON schema');

  const strict = new SdkCloudEvent(JSON.parse(body) as Record<string, unknown> & { type: string; source: string }); // strict = true by default
  assert.equal(strict.validate(), true);

  for (const sdk of [received, strict]) {
    const fields = sdk as unknown as Record<string, unknown>;
    for (const attr of ATTRS) assert.deepEqual(fields[attr], env[attr], attr);
    assert.deepEqual(sdk.data, env.data);
    // Nothing of ours was dropped or invented: the SDK's JSON is ours again.
    assert.deepEqual(decodeEnvelope(sdk.toString()), env);
  }
});

test('Herald → SDK: binary data_base64 is read back as the same bytes', () => {
  const bytes = new Uint8Array([0, 1, 2, 250, 255]);
  const env = createEnvelope({ type: 'blob.stored', source: '/s', data: bytes }, NOW);
  const body = encodeEnvelope(env);
  const viaHttp = HTTP.toEvent({ headers: { 'content-type': 'application/cloudevents+json' }, body }) as SdkCloudEvent<unknown>;
  const strict = new SdkCloudEvent(JSON.parse(body) as { type: string; source: string });
  for (const sdk of [viaHttp, strict]) {
    assert.deepEqual(Uint8Array.from(sdk.data as ArrayLike<number>), bytes);
    assert.equal(sdk.data_base64, env.data_base64);
    assert.deepEqual(decodeEnvelope(sdk.toString()), env);
  }
});

test('where Herald and the SDK agree on rejecting: bad names, bad source, impossible dates', () => {
  const cases: Array<[string, Record<string, unknown>]> = [
    ['upper-case extension name', { Upper: 'x' }],
    ['underscore in a name', { with_underscore: 'x' }],
    ['source with a space', { source: 'order service' }],
    ['February 30th', { time: '2024-02-30T00:00:00Z' }],
    ['hour 24', { time: '2024-05-01T24:00:00Z' }],
    ['relative dataschema', { dataschema: 'schemas/order.json' }],
  ];
  for (const [label, patch] of cases) {
    const value = { ...base(), ...patch };
    assert.ok(envelopeProblems(value).length > 0, `Herald rejects ${label}`);
    assert.throws(() => new SdkCloudEvent(value as { type: string; source: string }), `the SDK rejects ${label}`);
  }
});

test('where the SDK is laxer than the spec, Herald follows the spec (documented differences)', () => {
  const cases: Array<[string, Record<string, unknown>]> = [
    // spec.md type system: URI = "Absolute URI as defined in RFC 3986 Section 4.3" (no fragment)
    ['a fragment in dataschema', { dataschema: 'https://example.com/s.json#/defs/order' }],
    // spec.md: attribute values are Boolean, Integer, String, Binary, URI, URI-reference, Timestamp
    ['an object-valued extension', { ext: { nested: true } }],
    // spec.md: Integer is -2,147,483,648 to +2,147,483,647
    ['an integer beyond 32 bits', { ext: 2 ** 40 }],
    // spec.md: String excludes control characters
    ['a newline in subject', { subject: 'a\nb' }],
    // W3C Trace Context: an all-zero trace id is invalid
    ['an all-zero trace id', { traceparent: '00-00000000000000000000000000000000-b7ad6b7169203331-01' }],
  ];
  for (const [label, patch] of cases) {
    const value = { ...base(), ...patch };
    assert.doesNotThrow(() => new SdkCloudEvent(value as { type: string; source: string }), `the SDK accepts ${label}`);
    assert.ok(envelopeProblems(value).length > 0, `Herald rejects ${label}`);
  }
});

// Keeps the CloudEvent type import honest: a decoded envelope is one.
const typed: (s: string) => CloudEvent = decodeEnvelope;
void typed;
