import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryDeadLetterStore } from './dead-letter.ts';
import { createEnvelope } from './envelope.ts';
import { createMemoryTransport } from './memory-transport.ts';
import { type MemoryTx, MemoryUnitOfWork } from './memory-unit-of-work.ts';
import type { Transaction } from './unit-of-work.ts';
import { createConsumer } from './router.ts';

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 2000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('ctx.transaction without unitOfWork: HERALD_ERR_NOT_CONFIGURED naming the option, dead-lettered at once (not retryable)', async () => {
  const transport = createMemoryTransport();
  const deadLetters = new MemoryDeadLetterStore();
  const consumer = createConsumer({ transport, group: 'g', deadLetters, retry: { maxAttempts: 5, initialDelayMs: 1 } });
  consumer.handleEnvelope('t', 'x', (_e, ctx) => ctx.transaction(() => 1).then(() => {}), { name: 'h' });
  await consumer.start();
  await transport.publish('t', [{ envelope: createEnvelope({ type: 'x', source: 's', data: 1 }) }]);
  await waitFor(() => consumer.stats().deadLettered === 1, 'the dead letter');
  const [entry] = (await deadLetters.list({ group: 'g' })).entries;
  assert.equal(entry?.error.code, 'HERALD_ERR_NOT_CONFIGURED');
  assert.match(entry!.error.message, /unitOfWork/);
  assert.equal(entry?.attempts, 1);
  await consumer.close();
  await transport.close();
});

test('ctx.transaction commits the handler writes, the outbox rows and the inbox record together; a duplicate is acked and counted', async () => {
  const transport = createMemoryTransport();
  const uow = new MemoryUnitOfWork();
  const consumer = createConsumer({ transport, group: 'g', deadLetters: new MemoryDeadLetterStore(), unitOfWork: uow });
  const results: boolean[] = [];
  consumer.handleEnvelope(
    't',
    'paid',
    async (envelope, ctx) => {
      const r = await ctx.transaction((tx: Transaction<MemoryTx>) => {
        tx.native.put('orders', String(envelope.subject), 'paid');
        tx.publish('shipping', { envelope: createEnvelope({ type: 'ship', source: 'orders', data: {}, causationid: envelope.id }) });
      });
      results.push(r.duplicate);
    },
    { name: 'onPaid' },
  );
  await consumer.start();
  const paid = createEnvelope({ type: 'paid', source: 'pay', subject: 'o-1', data: {} });
  await transport.publish('t', [{ envelope: paid }, { envelope: paid }]);
  await waitFor(() => consumer.stats().handled === 2, 'both deliveries');
  assert.deepEqual(results, [false, true]);
  assert.equal(consumer.stats().inboxDuplicates, 1);
  assert.equal(uow.read('orders', 'o-1'), 'paid');
  assert.equal((await uow.backlog()).count, 1, 'one outbox row');
  assert.equal(await uow.inboxHas({ group: 'g', handler: 'onPaid', source: 'pay', id: paid.id }), true);
  await consumer.close();
  await transport.close();
});
