import { test } from 'node:test';
import assert from 'node:assert/strict';
import { murmur2, partitionForKey, RoundRobin } from './partitioner.ts';

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

test("murmur2 equals Kafka's Utils.murmur2 on the vectors of Kafka's own UtilsTest.testMurmur2", () => {
  // apache/kafka clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2
  const cases: Array<[string, number]> = [
    ['21', -973932308],
    ['foobar', -790332482],
    ['a-little-bit-long-string', -985981536],
    ['a-little-bit-longer-string', -1486304829],
    ['lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8', -58897971],
    ['abc', 479470107],
  ];
  for (const [key, expected] of cases) assert.equal(murmur2(utf8(key)), expected, key);
  // The last case is given as raw bytes in Kafka's test.
  assert.equal(murmur2(new Uint8Array([0x61, 0x62, 0x63])), 479470107);
});

test("murmur2 equals librdkafka's Java-checked vectors: every tail length 0–3 and the empty key", () => {
  // confluentinc/librdkafka src/rdmurmur2.c, unittest_murmur2 (java_murmur2_results, as int32)
  const cases: Array<[string, number]> = [
    ['kafka', 0xd067cf64 | 0],
    ['giberish123456789', 0x8f552b0c | 0],
    ['1234', 0x9fc97b14 | 0],
    ['234', 0xe7c009ca | 0],
    ['34', 0x873930da | 0],
    ['4', 0x5a4b5ca1 | 0],
    ['PreAmbleWillBeRemoved,ThePrePartThatIs', 0x78424f1c | 0],
    ['reAmbleWillBeRemoved,ThePrePartThatIs', 0x4a62b377 | 0],
    ['eAmbleWillBeRemoved,ThePrePartThatIs', 0xe0e4e09e | 0],
    ['AmbleWillBeRemoved,ThePrePartThatIs', 0x62b8b43f | 0],
    ['', 0x106e08d9 | 0],
  ];
  for (const [key, expected] of cases) assert.equal(murmur2(utf8(key)), expected, JSON.stringify(key));
});

test('murmur2 hashes the bytes it is given, whatever view they come in', () => {
  const backing = new Uint8Array([0xff, 0x32, 0x31, 0xff]); // "21" in the middle
  assert.equal(murmur2(backing.subarray(1, 3)), -973932308);
  assert.equal(murmur2(Buffer.from('21')), -973932308);
  const h = murmur2(utf8('anything at all'));
  assert.ok(Number.isInteger(h) && h >= -(2 ** 31) && h < 2 ** 31, 'a signed 32-bit integer, as Java returns');
});

test("partitionForKey is Kafka's toPositive(murmur2(utf8(key))) % partitions", () => {
  for (const [key, hash] of [
    ['21', -973932308],
    ['foobar', -790332482],
    ['kafka', 0xd067cf64 | 0],
  ] as const) {
    for (const n of [1, 3, 8, 12, 100]) assert.equal(partitionForKey(key, n), (hash & 0x7fffffff) % n, `${key} over ${n}`);
  }
  assert.equal(partitionForKey('kafka', 10), 0); // 0x5067cf64 % 10
  assert.equal(partitionForKey('anything', 1), 0);
});

test('non-ASCII keys are hashed as UTF-8 (values computed with Kafka murmur2 over Java getBytes(UTF_8))', () => {
  // Reference run: Kafka's Utils.murmur2 transcribed into Java 21, key.getBytes(StandardCharsets.UTF_8).
  const cases: Array<[string, number, number, number, number]> = [
    // key, murmur2, partition of 8, partition of 12, UTF-8 length
    ['é', 186971271, 7, 3, 2],
    ['ключ', 2122343024, 0, 8, 8],
    ['订单-42', -519504440, 0, 0, 9],
    ['😀', 131881617, 1, 9, 4],
    ['Grüße, Jürgen ❤', 1881597786, 2, 6, 20],
    ['order-é-1é', 1531816182, 6, 6, 12],
  ];
  for (const [key, hash, p8, p12, len] of cases) {
    assert.equal(utf8(key).length, len, `${key} has ${len} UTF-8 bytes`);
    assert.equal(murmur2(utf8(key)), hash, key);
    assert.equal(partitionForKey(key, 8), p8, `${key} over 8`);
    assert.equal(partitionForKey(key, 12), p12, `${key} over 12`);
  }
  // Not UTF-16 code units, not Latin-1: the é key would hash differently.
  assert.notEqual(murmur2(Buffer.from('é', 'latin1')), 186971271);
  assert.notEqual(murmur2(Buffer.from('é', 'utf16le')), 186971271);
});

test('distribution sanity: 64 keys over 8 partitions use every partition, none takes a large share', () => {
  const counts = new Array<number>(8).fill(0);
  for (let i = 0; i < 64; i++) counts[partitionForKey(`order-${i}`, 8)]!++;
  assert.ok(counts.every((c) => c > 0), `every partition used: ${counts.join(',')}`);
  assert.ok(Math.max(...counts) <= 16, `no partition takes more than a quarter: ${counts.join(',')}`);
  assert.equal(counts.reduce((a, b) => a + b, 0), 64);

  // And over many keys the spread is close to uniform (each within ±20% of 1250).
  const big = new Array<number>(8).fill(0);
  for (let i = 0; i < 10_000; i++) big[partitionForKey(`customer:${i}`, 8)]!++;
  for (const c of big) assert.ok(c > 1000 && c < 1500, `near-uniform: ${big.join(',')}`);
});

test('the same key always lands on the same partition', () => {
  for (let i = 0; i < 100; i++) assert.equal(partitionForKey('stable-key', 16), partitionForKey('stable-key', 16));
});

test('a partition count that is not a positive integer is HERALD_ERR_INVALID_ARGUMENT', () => {
  for (const n of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(() => partitionForKey('k', n), { code: 'HERALD_ERR_INVALID_ARGUMENT' }, String(n));
    assert.throws(() => new RoundRobin().next(n), { code: 'HERALD_ERR_INVALID_ARGUMENT' }, String(n));
  }
});

test('RoundRobin cycles through the partitions', () => {
  const rr = new RoundRobin();
  assert.deepEqual(Array.from({ length: 7 }, () => rr.next(3)), [0, 1, 2, 0, 1, 2, 0]);
});
