import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { defineEvent } from './definitions.ts';
import { MemoryDeadLetterStore } from './dead-letter.ts';
import { isHeraldError } from './errors.ts';
import { describeFlow } from './flow.ts';
import { createMemoryTransport } from './memory-transport.ts';
import { createConsumer } from './router.ts';

const Placed = defineEvent('order.placed', z.object({ orderId: z.string() }), { topic: 'orders' });
const Reserved = defineEvent('stock.reserved', z.object({ orderId: z.string() }), { topic: 'stock' });
const Rejected = defineEvent('stock.rejected', z.object({ orderId: z.string() }), { topic: 'stock' });

test('describe() lists handlers and what they produce; describeFlow draws services, topics, events and edges', () => {
  const transport = createMemoryTransport();
  const stock = createConsumer({ transport, group: 'stock', deadLetters: new MemoryDeadLetterStore() })
    .handle(Placed, () => {}, { name: 'reserve', produces: [Reserved, Rejected] })
    .handleEnvelope('audit', '*', () => {}, { name: 'audit', produces: [{ topic: 'audit-out', type: 'audit.noted' }, 'audit.mailed'] });
  assert.deepEqual(stock.describe(), {
    group: 'stock',
    consumes: [
      {
        topic: 'orders',
        type: 'order.placed',
        version: 1,
        handler: 'reserve',
        produces: [
          { topic: 'stock', type: 'stock.reserved', version: 1 },
          { topic: 'stock', type: 'stock.rejected', version: 1 },
        ],
      },
      { topic: 'audit', type: '*', version: undefined, handler: 'audit', produces: [{ topic: 'audit-out', type: 'audit.noted' }, { type: 'audit.mailed' }] },
    ],
  });

  const flow = describeFlow([
    { name: 'orders', publishes: [Placed] },
    { name: 'stock', consumers: [stock] },
  ]);
  assert.deepEqual(JSON.parse(JSON.stringify(flow)), flow, 'plain JSON');
  const ids = flow.nodes.map((n) => n.id);
  assert.deepEqual(ids.slice(0, 2), ['service:orders', 'service:stock']);
  for (const id of ['topic:orders', 'topic:stock', 'event:orders/order.placed', 'event:stock/stock.reserved', 'event:stock/stock.rejected']) assert.ok(ids.includes(id), id);
  const has = (kind: string, from: string, to: string) => flow.edges.some((e) => e.kind === kind && e.from === from && e.to === to);
  assert.ok(has('publishes', 'service:orders', 'event:orders/order.placed'));
  assert.ok(has('carries', 'topic:orders', 'event:orders/order.placed'));
  assert.ok(has('consumes', 'event:orders/order.placed', 'service:stock'));
  assert.ok(has('produces', 'event:orders/order.placed', 'event:stock/stock.reserved'));
  assert.ok(has('publishes', 'service:stock', 'event:stock/stock.rejected'));
  assert.ok(has('produces', 'event:audit/*', 'event:audit.mailed'), 'a bare type name is an event without a topic');
  const placed = flow.nodes.find((n) => n.id === 'event:orders/order.placed');
  assert.deepEqual(placed, { id: 'event:orders/order.placed', kind: 'event', type: 'order.placed', topic: 'orders', versions: [1] });
  assert.equal(new Set(flow.edges.map((e) => JSON.stringify(e))).size, flow.edges.length, 'no duplicate edges');
});

test('describeFlow refuses a service without a name or listed twice', () => {
  assert.throws(() => describeFlow([{ name: '' }]), (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
  assert.throws(() => describeFlow([{ name: 'a' }, { name: 'a' }]), (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && e.message.includes('"a"'));
});

test('a produces entry that is not a definition, { topic, type } or a type name is HERALD_ERR_INVALID_ARGUMENT naming the handler', () => {
  const consumer = createConsumer({ transport: createMemoryTransport(), group: 'g', deadLetters: new MemoryDeadLetterStore() });
  for (const bad of ['', 42, null, { topic: 'x' }]) {
    assert.throws(
      () => consumer.handleEnvelope('t', `type-${String(bad)}`, () => {}, { name: 'h', produces: [bad as never] }),
      (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && e.message.includes('"h"'),
      String(bad),
    );
  }
  assert.deepEqual(consumer.describe().consumes, [], 'nothing was registered');
});
