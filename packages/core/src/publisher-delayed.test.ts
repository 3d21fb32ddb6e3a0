import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { defineEvent } from './definitions.ts';
import { isHeraldError } from './errors.ts';
import { MemoryUnitOfWork } from './memory-unit-of-work.ts';
import { createPublisher } from './publisher.ts';
import type { OutgoingMessage, PublishReceipt, Transport } from './transport.ts';

const Reminder = defineEvent('cart.reminder', z.object({ cartId: z.string() }), { topic: 'carts', keyField: 'cartId' });
const NOW = Date.UTC(2025, 0, 1);
const clock = { now: () => NOW, monotonic: () => 0, setTimer: () => ({ cancel() {} }), sleep: async () => {} };

function recording() {
  const sent: Array<{ topic: string; ids: string[] }> = [];
  const transport = {
    name: 'rec',
    async publish(topic: string, messages: readonly OutgoingMessage[]): Promise<readonly PublishReceipt[]> {
      sent.push({ topic, ids: messages.map((m) => m.envelope.id) });
      return messages.map((_, i) => ({ topic, partition: 0, position: String(i) }));
    },
  } as unknown as Transport;
  return { transport, sent };
}

test('a future deliverAt is stored in the scheduler, not sent; the receipt names the scheduled id', async () => {
  const { transport, sent } = recording();
  const uow = new MemoryUnitOfWork({ clock });
  const publisher = createPublisher({ transport, source: 'carts', clock, scheduler: uow });
  const receipt = await publisher.publish(Reminder, { cartId: 'c1' }, { deliverAt: NOW + 60_000, id: 'rem-1' });
  assert.deepEqual(receipt, { topic: 'carts', partition: -1, position: 'scheduled:rem-1' });
  assert.equal(sent.length, 0);
  const [due] = await uow.due(NOW + 60_000, 10);
  assert.equal(due?.id, 'rem-1');
  assert.equal(due?.message.key, 'c1', 'the key is kept');
  assert.equal(await uow.nextDue(), NOW + 60_000);
});

test('a deliverAt now or in the past (number or Date) publishes at once', async () => {
  const { transport, sent } = recording();
  const publisher = createPublisher({ transport, source: 'carts', clock });
  await publisher.publish(Reminder, { cartId: 'c1' }, { deliverAt: NOW, id: 'a' });
  await publisher.publish(Reminder, { cartId: 'c1' }, { deliverAt: new Date(NOW - 1), id: 'b' });
  assert.deepEqual(sent, [
    { topic: 'carts', ids: ['a'] },
    { topic: 'carts', ids: ['b'] },
  ]);
});

test('a future deliverAt without a scheduler is HERALD_ERR_NOT_CONFIGURED, naming the option; nothing is sent', async () => {
  const { transport, sent } = recording();
  const publisher = createPublisher({ transport, source: 'carts', clock });
  await assert.rejects(publisher.publish(Reminder, { cartId: 'c1' }, { deliverAt: NOW + 1 }), (e: unknown) => isHeraldError(e, 'HERALD_ERR_NOT_CONFIGURED') && e.message.includes('scheduler'));
  await assert.rejects(publisher.schedule(Reminder, { cartId: 'c1' }, { deliverAt: NOW + 1 }), (e: unknown) => isHeraldError(e, 'HERALD_ERR_NOT_CONFIGURED'));
  assert.equal(sent.length, 0);
});

test('an invalid deliverAt is HERALD_ERR_INVALID_ARGUMENT', async () => {
  const { transport } = recording();
  const publisher = createPublisher({ transport, source: 'carts', clock, scheduler: new MemoryUnitOfWork({ clock }) });
  await assert.rejects(publisher.publish(Reminder, { cartId: 'c1' }, { deliverAt: Number.NaN }), (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && e.message.includes('deliverAt'));
  await assert.rejects(publisher.schedule(Reminder, { cartId: 'c1' }, { deliverAt: new Date('nope') }), (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
});

test('schedule() stores even a past time, keeps the first entry for a repeated scheduleId', async () => {
  const { transport, sent } = recording();
  const uow = new MemoryUnitOfWork({ clock });
  const publisher = createPublisher({ transport, source: 'carts', clock, scheduler: uow });
  const first = await publisher.schedule(Reminder, { cartId: 'c1' }, { deliverAt: NOW - 5, scheduleId: 'timer-c1' });
  const again = await publisher.schedule(Reminder, { cartId: 'c2' }, { deliverAt: NOW + 5, scheduleId: 'timer-c1' });
  assert.deepEqual(first, { id: 'timer-c1', topic: 'carts', deliverAt: NOW - 5 });
  assert.equal(again.id, 'timer-c1');
  assert.equal(await uow.pendingCount(), 1);
  assert.equal(await uow.nextDue(), NOW - 5, 'the first entry is kept');
  assert.equal(sent.length, 0);
});

test('publishBatch: immediate items are sent, delayed ones stored, receipts in input order; a schema error sends and stores nothing', async () => {
  const { transport, sent } = recording();
  const uow = new MemoryUnitOfWork({ clock });
  const publisher = createPublisher({ transport, source: 'carts', clock, scheduler: uow });
  const receipts = await publisher.publishBatch([
    { definition: Reminder, data: { cartId: 'a' }, options: { id: 'now-1' } },
    { definition: Reminder, data: { cartId: 'b' }, options: { id: 'later-1', deliverAt: NOW + 10 } },
    { definition: Reminder, data: { cartId: 'c' }, options: { id: 'now-2' } },
  ]);
  assert.deepEqual(
    receipts.map((r) => r.position),
    ['0', 'scheduled:later-1', '1'],
  );
  assert.deepEqual(sent, [{ topic: 'carts', ids: ['now-1', 'now-2'] }]);
  await assert.rejects(
    publisher.publishBatch([
      { definition: Reminder, data: { cartId: 'd' }, options: { id: 'now-3' } },
      { definition: Reminder, data: { cartId: 42 } as never, options: { deliverAt: NOW + 10 } },
    ]),
    (e: unknown) => isHeraldError(e, 'HERALD_ERR_SCHEMA_INVALID'),
  );
  assert.equal(sent.length, 1, 'nothing more was sent');
  assert.equal(await uow.pendingCount(), 1, 'nothing more was stored');
});
