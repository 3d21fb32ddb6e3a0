import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { defineEvent, isHeraldError, type StandardSchemaV1 } from '@herald/core';
import { EventCatalog, upcaster } from './catalog.ts';
import { toCloudEvent } from './cloudevents.ts';
import { InMemoryEventStore } from './memory-event-store.ts';

const anyObject: StandardSchemaV1<unknown, Record<string, unknown>> = {
  '~standard': { version: 1, vendor: 'test', validate: (v) => (typeof v === 'object' && v !== null ? { value: v as Record<string, unknown> } : { issues: [{ message: 'object expected' }] }) },
};
const ctx = { streamId: 's-1', streamVersion: 1, position: 1n, recordedAt: 0 };

describe('EventCatalog', () => {
  it('chains upcasters to the newest version, renaming types on the way', () => {
    const c = new EventCatalog({
      definitions: [defineEvent('b', anyObject, { version: 3 })],
      upcasters: [
        upcaster('a', 1, (d: { x: number }) => ({ y: d.x }), { toType: 'b', toVersion: 1 }),
        upcaster('b', 1, (d: { y: number }) => ({ ...d, v2: true })),
        upcaster('b', 2, (d: object) => ({ ...d, v3: true })),
      ],
    });
    assert.deepEqual(c.read({ ...ctx, type: 'a', schemaVersion: 1 }, { x: 7 }), { kind: 'ok', type: 'b', schemaVersion: 3, data: { y: 7, v2: true, v3: true }, upcasted: true });
    assert.deepEqual(c.read({ ...ctx, type: 'b', schemaVersion: 3 }, { z: 1 }), { kind: 'ok', type: 'b', schemaVersion: 3, data: { z: 1 }, upcasted: false });
  });

  it('refuses duplicate upcasters, bad versions and loops', () => {
    assert.throws(() => new EventCatalog({ upcasters: [upcaster('a', 1, (d) => d), upcaster('a', 1, (d) => d)] }), (e) => isHeraldError(e, 'HERALD_ERR_DUPLICATE_DEFINITION'));
    assert.throws(() => new EventCatalog({ upcasters: [upcaster('a', 2, (d) => d, { toVersion: 1 })] }), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
    const loop = new EventCatalog({
      definitions: [defineEvent('c', anyObject)],
      upcasters: [upcaster('a', 1, (d) => d, { toType: 'b', toVersion: 1 }), upcaster('b', 1, (d) => d, { toType: 'a', toVersion: 1 })],
    });
    assert.throws(() => loop.read({ ...ctx, type: 'a', schemaVersion: 1 }, {}), /loop/);
  });

  it('an upcaster that throws is a typed error naming the stream and position', () => {
    const c = new EventCatalog({ definitions: [defineEvent('a', anyObject, { version: 2 })], upcasters: [upcaster('a', 1, () => { throw new Error('boom'); })] });
    assert.throws(() => c.read({ ...ctx, type: 'a', schemaVersion: 1 }, {}), (e) => isHeraldError(e, 'HERALD_ERR_CORRUPT_RECORD') && e.message.includes('s-1') && e.details.position === '1');
  });

  it('validateOnRead checks upcasted data against the current schema', async () => {
    const strict: StandardSchemaV1<unknown, { n: number }> = {
      '~standard': { version: 1, vendor: 'test', validate: (v) => (typeof (v as { n?: unknown })?.n === 'number' ? { value: v as { n: number } } : { issues: [{ message: 'n must be a number' }] }) },
    };
    const c = new EventCatalog({ definitions: [defineEvent('a', strict, { version: 2 })], upcasters: [upcaster('a', 1, () => ({ n: 'oops' }))], validateOnRead: true });
    assert.throws(() => c.read({ ...ctx, type: 'a', schemaVersion: 1 }, {}), (e) => isHeraldError(e, 'HERALD_ERR_SCHEMA_INVALID'));
  });
});

describe('toCloudEvent', () => {
  it('maps a recorded event to a valid CloudEvents envelope', async () => {
    const store = new InMemoryEventStore();
    await store.appendToStream('order-1', [{ type: 'OrderPlaced', data: { total: 5 }, id: 'evt-1', schemaVersion: 2, correlationId: 'c-1', causationId: 'k-1', metadata: { tenant: 'acme' } }]);
    const [e] = (await store.readStream('order-1')).events;
    const ce = toCloudEvent(e!, { source: 'urn:herald:orders' });
    assert.deepEqual(
      { id: ce.id, type: ce.type, subject: ce.subject, sequence: ce.sequence, dataschema: ce.dataschema, data: ce.data, correlationid: ce.correlationid, causationid: ce.causationid, tenant: ce.tenant, partitionkey: ce.partitionkey, time: ce.time },
      { id: 'evt-1', type: 'OrderPlaced', subject: 'order-1', sequence: '1', dataschema: 'urn:herald:schema:OrderPlaced:v2', data: { total: 5 }, correlationid: 'c-1', causationid: 'k-1', tenant: 'acme', partitionkey: 'order-1', time: new Date(e!.recordedAt).toISOString() },
    );
  });
});
