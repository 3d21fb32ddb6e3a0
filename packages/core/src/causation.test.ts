import assert from 'node:assert/strict';
import { test } from 'node:test';
import { z } from 'zod';
import { buildCausationGraph, type CausationMessage, type CausationNode, recordHandling } from './causation.ts';
import { defineEvent } from './definitions.ts';
import { createMemoryTransport } from './memory-transport.ts';
import { createPublisher } from './publisher.ts';
import { createConsumer } from './router.ts';
import { MemoryDeadLetterStore } from './dead-letter.ts';
import { PermanentError } from './errors.ts';

const msg = (id: string, causationId: string | undefined, time: number, where = `topic t/0@${id}`): CausationMessage => ({ id, type: `type.${id}`, source: 'svc', time, causationId, where });
const shape = (n: CausationNode): unknown => ({ [n.id]: n.children.map(shape) });

test('builds the tree by causation id, children in time order; unknown causes are roots and listed as missing', () => {
  const g = buildCausationGraph('c', [msg('b', 'a', 3), msg('a', undefined, 1), msg('c', 'a', 2), msg('d', 'c', 4), msg('x', 'gone', 5)]);
  assert.deepEqual(g.roots.map(shape), [{ a: [{ c: [{ d: [] }] }, { b: [] }] }, { x: [] }]);
  assert.equal(g.size, 5);
  assert.deepEqual(g.missing, ['gone']);
});

test('a message seen twice merges its places; failures count only when the latest record of a handler failed', () => {
  const g = buildCausationGraph(
    'a',
    [msg('a', undefined, 1, 'topic t/0@1'), msg('a', undefined, 1, 'dead letter #4 (dead)')],
    [
      { messageId: 'a', group: 'g', handler: 'h', at: 10, durationMs: 2, attempts: 1, failed: true, error: 'boom', from: 'this process' },
      { messageId: 'a', group: 'g', handler: 'h', at: 20, durationMs: 1, attempts: 2, failed: false, error: undefined, from: 'this process' },
      { messageId: 'a', group: 'g2', handler: 'h2', at: 15, durationMs: 1, attempts: 1, failed: true, error: 'no', from: 'dead letter' },
    ],
  );
  const [a] = g.roots;
  assert.deepEqual(a!.where, ['topic t/0@1', 'dead letter #4 (dead)']);
  assert.deepEqual(a!.handlers.map((h) => h.at), [10, 15, 20]);
  assert.equal(a!.failed, true, 'g2 failed and never succeeded');
  const ok = buildCausationGraph('a', [msg('a', undefined, 1)], [
    { messageId: 'a', group: 'g', handler: 'h', at: 10, durationMs: 2, attempts: 1, failed: true, error: 'boom', from: 'this process' },
    { messageId: 'a', group: 'g', handler: 'h', at: 20, durationMs: 1, attempts: 2, failed: false, error: undefined, from: 'this process' },
  ]);
  assert.equal(ok.roots[0]!.failed, false, 'a retry succeeded');
});

test('a cycle in corrupt data is cut, every message still appears once', () => {
  const g = buildCausationGraph('c', [msg('a', 'b', 1), msg('b', 'a', 2)]);
  const ids: string[] = [];
  const walk = (n: CausationNode): void => {
    ids.push(n.id);
    n.children.forEach(walk);
  };
  g.roots.forEach(walk);
  assert.deepEqual(ids.sort(), ['a', 'b']);
  assert.throws(() => buildCausationGraph('', []), /non-empty correlation id/);
});

test('recordHandling keeps this process’s handler attempts with durations and errors, by correlation id', async () => {
  const Asked = defineEvent('asked', z.object({ n: z.number() }), { topic: 'causation-test' });
  const Answered = defineEvent('answered', z.object({ n: z.number() }), { topic: 'causation-test-2' });
  const transport = createMemoryTransport();
  const deadLetters = new MemoryDeadLetterStore();
  const publisher = createPublisher({ transport, source: 'svc' });
  let t = 1000;
  const recorder = recordHandling({ now: () => t, monotonic: () => t });
  const a = createConsumer({ transport, group: 'a', deadLetters });
  a.handle(Asked, async (d, ctx) => {
    t += 7;
    await publisher.publish(Answered, d, { causedBy: ctx.envelope });
  });
  const b = createConsumer({ transport, group: 'b', deadLetters });
  b.handle(Answered, () => {
    throw new PermanentError('cannot answer');
  });
  await a.start();
  await b.start();
  await publisher.publish(Asked, { n: 1 }, { id: 'root-1' });
  for (let i = 0; i < 200 && (await deadLetters.count({ group: 'b' })) === 0; i++) await new Promise((r) => setTimeout(r, 5));
  await a.close();
  await b.close();
  recorder.close();
  const { messages, handlings } = recorder.records('root-1');
  const g = buildCausationGraph('root-1', messages, handlings);
  assert.equal(g.roots.length, 1);
  const root = g.roots[0]!;
  assert.equal(root.id, 'root-1');
  assert.deepEqual(root.handlers.map((h) => [h.group, h.handler, h.durationMs, h.failed]), [['a', 'asked', 7, false]]);
  const child = root.children[0]!;
  assert.equal(child.type, 'answered');
  assert.equal(child.failed, true);
  assert.equal(child.handlers[0]!.error, 'cannot answer');
});
