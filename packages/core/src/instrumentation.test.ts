import assert from 'node:assert/strict';
import { test } from 'node:test';
import { z } from 'zod';
import { defineEvent } from './definitions.ts';
import { MemoryDeadLetterStore } from './dead-letter.ts';
import { channels, isLagSource, type HandleMessage, type PublishMessage } from './instrumentation.ts';
import { createMemoryTransport } from './memory-transport.ts';
import { createPublisher } from './publisher.ts';
import { createConsumer } from './router.ts';

const Ev = defineEvent('instr.ev', z.object({ k: z.string() }), { topic: 'instr', keyField: 'k' });

async function until(cond: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error('timed out');
}

test('memory transport lag: messages after the committed position and the oldest one’s time, per group and partition', async () => {
  const transport = createMemoryTransport({ defaultPartitions: 2 });
  assert.ok(isLagSource(transport));
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const consumer = createConsumer({ transport, group: 'g', deadLetters: new MemoryDeadLetterStore() });
  consumer.handle(Ev, async () => {
    await gate;
  });
  await consumer.start();
  const publisher = createPublisher({ transport, source: 'svc', clock: { now: () => Date.parse('2026-01-01T00:00:00Z'), monotonic: () => 0, setTimer: () => ({ cancel() {} }), sleep: async () => {} } as never });
  for (const k of ['a', 'b', 'c', 'd']) await publisher.publish(Ev, { k });
  const lag = await transport.lag({ group: 'g' });
  assert.equal(lag.reduce((n, l) => n + l.messages, 0), 4);
  assert.deepEqual([...new Set(lag.filter((l) => l.messages > 0).map((l) => l.oldestUnhandledAt))], [Date.parse('2026-01-01T00:00:00Z')]);
  assert.deepEqual(await transport.lag({ group: 'other' }), []);
  open();
  await until(async () => (await transport.lag({ group: 'g' })).every((l) => l.messages === 0 && l.oldestUnhandledAt === undefined));
  await consumer.close();
});

test('channels carry what subscribers need: publish messages (with the built envelopes) and handle attempts', async () => {
  const transport = createMemoryTransport();
  const published: PublishMessage[] = [];
  const handled: HandleMessage[] = [];
  const pub = { asyncEnd: (m: PublishMessage) => void published.push(m) };
  const han = { asyncEnd: (m: HandleMessage) => void handled.push(m) };
  channels.publish.subscribe(pub as never);
  channels.handle.subscribe(han as never);
  try {
    const consumer = createConsumer({ transport, group: 'g', deadLetters: new MemoryDeadLetterStore() });
    consumer.handle(Ev, () => {
      throw new Error('sync throw still ends the operation');
    }, { retry: { maxAttempts: 1 } });
    await consumer.start();
    const publisher = createPublisher({ transport, source: 'svc' });
    await publisher.publishBatch([{ definition: Ev, data: { k: 'x' } }, { definition: Ev, data: { k: 'y' } }]);
    await until(() => handled.length === 2);
    await consumer.close();
  } finally {
    channels.publish.unsubscribe(pub as never);
    channels.handle.unsubscribe(han as never);
  }
  assert.equal(published.length, 1);
  assert.equal(published[0]!.operation, 'send');
  assert.equal(published[0]!.count, 2);
  assert.deepEqual(published[0]!.messages!.map((m) => m.key), ['x', 'y']);
  assert.deepEqual(handled.map((h) => [h.group, h.attempt, (h.error as Error).message]), [
    ['g', 1, 'sync throw still ends the operation'],
    ['g', 1, 'sync throw still ends the operation'],
  ]);
});
