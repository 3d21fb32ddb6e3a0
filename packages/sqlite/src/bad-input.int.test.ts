// Bad input on the embedded backend: each kind gets a typed error with its code, and nothing
// else in the log is affected — the good messages around it are stored and handled in order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { z } from 'zod';
import {
  createConsumer,
  createEnvelope,
  createPublisher,
  decodeEnvelope,
  defineEvent,
  DefinitionRegistry,
  isHeraldError,
  type HeraldErrorCode,
} from '@herald/core';
import { createSqliteTransport, SqliteDeadLetterStore } from './index.ts';

const Item = defineEvent('bad.item', z.object({ k: z.string(), seq: z.number().int().nonnegative() }), { topic: 'bad-input', version: 1, keyField: 'k' });
const ItemV2 = defineEvent('bad.item', z.object({ k: z.string(), seq: z.number().int(), note: z.string() }), { topic: 'bad-input', version: 2, keyField: 'k' });

function code(e: unknown): HeraldErrorCode | string {
  return isHeraldError(e) ? e.code : `not a HeraldError: ${String(e)}`;
}

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 2000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('bad input: typed errors, and the rest of the log unaffected', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'herald-bad-'));
  const path = join(dir, 'bad.db');
  const transport = createSqliteTransport({ path, maxPayloadBytes: 4096, leaseMs: 1000, heartbeatMs: 200 });
  const deadLetters = new SqliteDeadLetterStore({ path });
  const publisher = createPublisher({ transport, source: 'bad-input-test' });
  const topic = 'bad-input';
  await transport.ensureTopic(topic, { partitions: 1 }); // one partition: the log order is the test's order
  const countRows = (): number => {
    const db = new Database(path, { readonly: true });
    try {
      return (db.prepare('SELECT count(*) AS n FROM herald_log').get() as { n: number }).n;
    } finally {
      db.close();
    }
  };
  try {
    await publisher.publish(Item, { k: 'a', seq: 0 });

    // 1. A malformed envelope, alone or inside a batch with good ones: refused, nothing written.
    const good = createEnvelope({ type: 'bad.item', source: 'x', dataschema: Item.dataschema, data: { k: 'a', seq: 99 } });
    const malformed = { specversion: '1.0', id: '', source: 'x', type: 'bad.item', Bad_Name: 1 } as never;
    await assert.rejects(transport.publish(topic, [{ envelope: good }, { envelope: malformed }]), (e) => {
      assert.equal(code(e), 'HERALD_ERR_ENVELOPE_INVALID');
      assert.match((e as Error).message, /id is required/);
      assert.match((e as Error).message, /Bad_Name/);
      return true;
    });
    assert.throws(() => decodeEnvelope('{not json'), (e) => code(e) === 'HERALD_ERR_DECODE');
    assert.equal(countRows(), 1, 'a batch with a malformed envelope writes nothing');

    // 2. A schema violation at publish: refused before sending, naming type, version and paths.
    await assert.rejects(publisher.publish(Item, { k: 'a', seq: -1 }), (e) => {
      assert.equal(code(e), 'HERALD_ERR_SCHEMA_INVALID');
      assert.match((e as Error).message, /"bad\.item" v1/);
      assert.match((e as Error).message, /seq/);
      return true;
    });

    // 3. An oversize payload: refused before sending.
    await assert.rejects(publisher.publish(Item, { k: 'a'.repeat(5000), seq: 1 }), (e) => code(e) === 'HERALD_ERR_PAYLOAD_TOO_LARGE');
    assert.equal(countRows(), 1, 'refused publishes wrote nothing');

    // 4. An unknown event type: the registry names it; a consumer acks and counts it as skipped.
    const registry = new DefinitionRegistry([Item, ItemV2]);
    assert.throws(() => registry.resolve({ type: 'no.such.type' }), (e) => code(e) === 'HERALD_ERR_UNKNOWN_EVENT_TYPE');
    assert.throws(() => registry.resolve({ type: 'bad.item', dataschema: 'urn:herald:schema:bad.item:v7' }), (e) => code(e) === 'HERALD_ERR_UNKNOWN_EVENT_VERSION');
    await publisher.publishEnvelopes(topic, [{ envelope: createEnvelope({ type: 'no.such.type', source: 'x', data: {} }) }]);

    // 5. Data that breaks the schema, published raw (another producer), and an unknown version: dead letters at consume.
    await publisher.publishEnvelopes(topic, [
      { envelope: createEnvelope({ type: 'bad.item', source: 'other', partitionkey: 'a', dataschema: Item.dataschema, data: { k: 'a', seq: 'two' } }) },
      { envelope: createEnvelope({ type: 'bad.item', source: 'other', partitionkey: 'a', dataschema: 'urn:herald:schema:bad.item:v9', data: { k: 'a', seq: 3 } }) },
    ]);

    // 6. A corrupt row written behind Herald's back (a bad disk, a bad tool): only that row is affected.
    await publisher.publish(Item, { k: 'a', seq: 4 });
    {
      const db = new Database(path);
      const row = db.prepare('SELECT topic_id, partition, max(offset) AS o FROM herald_log').get() as { topic_id: number; partition: number; o: number };
      db.prepare('INSERT INTO herald_log (topic_id, partition, offset, key, appended_at, envelope) VALUES (?, ?, ?, NULL, 0, ?)').run(row.topic_id, row.partition, row.o + 1, '{"specversion":"1.0","id":');
      db.prepare('UPDATE herald_partitions SET next_offset = ? WHERE topic_id = ? AND partition = ?').run(row.o + 2, row.topic_id, row.partition);
      db.close();
    }
    await publisher.publish(Item, { k: 'a', seq: 5 });

    const handled: number[] = [];
    const consumer = createConsumer({ transport, group: 'g', deadLetters, retry: { maxAttempts: 2, initialDelayMs: 1 } });
    consumer.handle(Item, (d) => void handled.push(d.seq));
    await consumer.start();
    await waitFor(() => consumer.stats().handled + consumer.stats().deadLettered + consumer.stats().skipped === 7, 'all 7 stored messages settled');
    await consumer.close();

    assert.deepEqual(handled, [0, 4, 5], 'the good messages of key "a" are handled, in order');
    assert.equal(consumer.stats().skipped, 1, 'the unknown type is acked and counted as skipped');
    const { entries } = await deadLetters.list({ group: 'g' });
    // Key "a" keeps its order; the corrupt row has no key, so it may be dead-lettered at any point.
    const keyed = entries.filter((e) => e.key === 'a');
    assert.deepEqual(keyed.map((e) => e.error.code), ['HERALD_ERR_SCHEMA_INVALID', 'HERALD_ERR_UNKNOWN_EVENT_VERSION']);
    const corrupt = entries.filter((e) => e.error.code === 'HERALD_ERR_CORRUPT_RECORD');
    assert.equal(corrupt.length, 1);
    assert.equal(entries.length, 3);
    assert.deepEqual(entries.map((e) => e.attempts), [1, 1, 1], 'bad input is not retried');
    assert.equal(corrupt[0]!.envelope, null);
    assert.equal(corrupt[0]!.raw, '{"specversion":"1.0","id":', 'the corrupt bytes are kept as they were');
    assert.equal(corrupt[0]!.handler, 'decode');
    assert.equal(countRows(), 7);
  } finally {
    await deadLetters.close();
    await transport.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
