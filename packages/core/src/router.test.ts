import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { createConsumer, type Middleware } from './router.ts';
import { createPublisher } from './publisher.ts';
import { createMemoryTransport } from './memory-transport.ts';
import { MemoryDeadLetterStore } from './dead-letter.ts';
import { defineEvent } from './definitions.ts';
import { PermanentError } from './errors.ts';

async function waitFor(cond: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const Placed = defineEvent('order.placed', z.object({ orderId: z.string(), n: z.number().int() }), { topic: 'orders', keyField: 'orderId' });

test('typed publish and handle, per-key order with parallel keys', async () => {
  const transport = createMemoryTransport();
  const publisher = createPublisher({ transport, source: 'test' });
  const seen = new Map<string, number[]>();
  let running = 0;
  let maxRunning = 0;
  const consumer = createConsumer({ transport, group: 'g', deadLetters: new MemoryDeadLetterStore(), concurrency: 8 });
  consumer.handle(Placed, async (data) => {
    running++;
    maxRunning = Math.max(maxRunning, running);
    await new Promise((r) => setTimeout(r, Math.random() * 2));
    running--;
    const list = seen.get(data.orderId) ?? [];
    list.push(data.n);
    seen.set(data.orderId, list);
  });
  await consumer.start();
  for (let n = 0; n < 20; n++) for (let k = 0; k < 8; k++) await publisher.publish(Placed, { orderId: `o${k}`, n });
  await waitFor(() => consumer.stats().handled === 160, '160 handled');
  for (const [k, list] of seen) assert.deepEqual(list, [...Array(20).keys()], `order of ${k}`);
  assert.ok(maxRunning > 1, `keys ran in parallel (max ${maxRunning})`);
  await consumer.close();
  await transport.close();
});

test('validation at publish names type, version and path', async () => {
  const transport = createMemoryTransport();
  const publisher = createPublisher({ transport, source: 'test' });
  await assert.rejects(publisher.publish(Placed, { orderId: 'x', n: 1.5 } as never), (e: Error & { code?: string }) => {
    assert.equal(e.code, 'HERALD_ERR_SCHEMA_INVALID');
    assert.match(e.message, /order\.placed" v1/);
    assert.match(e.message, /\bn\b/);
    return true;
  });
  await transport.close();
});

test('retries in place then dead-letters; permanent errors skip retries; middleware wraps handler', async () => {
  const transport = createMemoryTransport();
  const deadLetters = new MemoryDeadLetterStore();
  const publisher = createPublisher({ transport, source: 'test' });
  const calls: string[] = [];
  const trace: Middleware = (next) => async (ctx) => {
    calls.push(`mw:${ctx.attempt}`);
    await next(ctx);
  };
  const consumer = createConsumer({ transport, group: 'g', deadLetters, retry: { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 5 }, middleware: [trace] });
  consumer.handle(Placed, async (data) => {
    if (data.orderId === 'bad') throw new Error('boom');
    if (data.orderId === 'perm') throw new PermanentError('never');
  });
  await consumer.start();
  await publisher.publish(Placed, { orderId: 'bad', n: 1 });
  await publisher.publish(Placed, { orderId: 'perm', n: 1 });
  await waitFor(() => consumer.stats().deadLettered === 2, 'two dead letters');
  const { entries } = await deadLetters.list({ group: 'g' });
  const bad = entries.find((e) => e.key === 'bad')!;
  const perm = entries.find((e) => e.key === 'perm')!;
  assert.equal(bad.attempts, 3);
  assert.equal(bad.error.message, 'boom');
  assert.equal(perm.attempts, 1);
  assert.equal(perm.error.code, 'HERALD_ERR_PERMANENT');
  assert.ok(calls.includes('mw:3'));
  await consumer.close();
  await transport.close();
});

test('close while a handler is blocked resolves and leaves the message unacked', async () => {
  const transport = createMemoryTransport();
  const publisher = createPublisher({ transport, source: 'test' });
  const topic = `t-${randomUUID()}`;
  let started = false;
  const c1 = createConsumer({ transport, group: 'g', deadLetters: new MemoryDeadLetterStore() });
  c1.handle(Placed, () => {
    started = true;
    return new Promise(() => {});
  }, { topic });
  await c1.start();
  await publisher.publish(Placed, { orderId: 'a', n: 1 }, { topic });
  await waitFor(() => started, 'handler start');
  const t0 = Date.now();
  await c1.close({ timeoutMs: 100 });
  assert.ok(Date.now() - t0 < 1000);
  let got = 0;
  const c2 = createConsumer({ transport, group: 'g', deadLetters: new MemoryDeadLetterStore() });
  c2.handle(Placed, () => {
    got++;
  }, { topic });
  await c2.start();
  await waitFor(() => got === 1, 'redelivery to the next member');
  await c2.close();
  await transport.close();
});

test('a handler past its time limit sees its signal abort; the failure is HERALD_ERR_HANDLER_TIMEOUT', async () => {
  const transport = createMemoryTransport();
  const deadLetters = new MemoryDeadLetterStore();
  const publisher = createPublisher({ transport, source: 'test' });
  const topic = `t-${randomUUID()}`;
  const reasons: string[] = [];
  const consumer = createConsumer({ transport, group: 'g', deadLetters, retry: { maxAttempts: 2, initialDelayMs: 1 } });
  consumer.handle(Placed, (_data, ctx) =>
    new Promise<void>((_resolve, reject) => {
      ctx.signal.addEventListener('abort', () => {
        reasons.push((ctx.signal.reason as { code?: string }).code ?? 'none');
        reject(new Error('gave up'));
      });
    }), { topic, timeoutMs: 40 });
  await consumer.start();
  const t0 = Date.now();
  await publisher.publish(Placed, { orderId: 'slow', n: 1 }, { topic });
  await waitFor(() => consumer.stats().deadLettered === 1, 'the slow message dead-lettered');
  assert.ok(Date.now() - t0 >= 80, 'two attempts of at least 40 ms each');
  assert.deepEqual(reasons, ['HERALD_ERR_HANDLER_TIMEOUT', 'HERALD_ERR_HANDLER_TIMEOUT']);
  const { entries } = await deadLetters.list();
  assert.equal(entries[0]!.error.code, 'HERALD_ERR_HANDLER_TIMEOUT');
  assert.equal(entries[0]!.attempts, 2);
  await consumer.close();
  await transport.close();
});

test('close returns promptly with work queued behind a blocked handler (no nack/redeliver spin)', async () => {
  const transport = createMemoryTransport({ defaultPartitions: 1 });
  const publisher = createPublisher({ transport, source: 'test' });
  const topic = `t-${randomUUID()}`;
  let release!: () => void;
  const blocked = new Promise<void>((r) => (release = r));
  let started = 0;
  const consumer = createConsumer({ transport, group: 'g', deadLetters: new MemoryDeadLetterStore(), concurrency: 1 });
  consumer.handle(Placed, async () => {
    started++;
    await blocked;
  }, { topic });
  await consumer.start();
  for (let i = 0; i < 5; i++) await publisher.publish(Placed, { orderId: `k${i}`, n: i }, { topic });
  await waitFor(() => started === 1, 'the first handler to start');
  const timer = setTimeout(release, 300);
  const t0 = Date.now();
  await consumer.close({ timeoutMs: 1000 });
  clearTimeout(timer);
  release();
  assert.ok(Date.now() - t0 < 1500, `close took ${Date.now() - t0} ms`);
  assert.equal(started, 1, 'nothing new started after close began');
  await transport.close();
});
