// Broker restarts, on a private RabbitMQ node (the shared one is never restarted): the
// testkit's reconnect scenario unmodified, then a consumer group through the router across a
// restart — partitions reported lost and assigned again, unacked messages redelivered, nothing lost.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createConsumer, createEnvelope, MemoryDeadLetterStore, type PartitionChange } from '@herald/core';
import { reconnectAfterBrokerRestart, waitFor } from '@herald/testkit';
import { type PrivateRabbitMq, privateNodeSkipReason, startPrivateRabbitMq } from './private-node.ts';
import { TestBroker, testNamespace } from './test-helpers.ts';

const skip = privateNodeSkipReason();

describe('rabbitmq on a private node: broker restart', { skip, timeout: 180_000 }, () => {
  let node: PrivateRabbitMq;
  let broker: TestBroker;

  before(async () => {
    node = await startPrivateRabbitMq();
    broker = new TestBroker(testNamespace('reconnect'), { defaultPartitions: 4 }, node.url);
  });
  after(async () => {
    await broker?.cleanup().catch(() => {});
    await node?.dispose();
  });

  it('contract: reconnect after a broker restart', { timeout: 60_000 }, (t) =>
    reconnectAfterBrokerRestart(t, {
      create: async () => broker.create(),
      createInGroup: async () => broker.create(),
      restartBroker: () => node.restart(),
    }));

  it('a router group keeps going across a restart: partitions lost and re-assigned, unacked messages redelivered, none lost', { timeout: 60_000 }, async () => {
    const transport = broker.create();
    const topic = `reconnect-${Date.now().toString(36)}`;
    const changes: PartitionChange[] = [];
    const handled: string[] = [];
    let hold = false;
    const held: Array<() => void> = [];
    const errors: unknown[] = [];
    // Watch the subscription's partition changes through a wrapper transport.
    const watched = Object.create(transport) as typeof transport;
    watched.subscribe = (tp, o) => transport.subscribe(tp, { ...o, onPartitions: (ch) => (changes.push(ch), o.onPartitions?.(ch)) });
    const consumer = createConsumer({ transport: watched, group: 'g', deadLetters: new MemoryDeadLetterStore(), onError: (e) => errors.push(e) });
    consumer.handleEnvelope(topic, '*', async (env) => {
      if (hold) await new Promise<void>((resolve) => held.push(resolve));
      handled.push(env.id);
    });
    await consumer.start();
    await waitFor(() => consumer.assignment(topic).length === 4, { timeoutMs: 10_000, what: 'the member to own 4 partitions' });
    const msg = (i: number) => ({ envelope: createEnvelope({ type: 'reconnect.test', source: 'herald-test', id: `m-${i}`, data: { i } }), key: `k-${i % 3}` });
    await transport.publish(topic, Array.from({ length: 10 }, (_, i) => msg(i)));
    await waitFor(() => handled.length === 10, { timeoutMs: 10_000, what: () => `10 handled before the restart (got ${handled.length})` });

    hold = true; // these stay unacked while the broker goes away
    await transport.publish(topic, Array.from({ length: 5 }, (_, i) => msg(10 + i)));
    await waitFor(() => held.length >= 3, { timeoutMs: 10_000, what: () => `handlers holding messages (holding ${held.length})` });
    await node.restart();
    hold = false;
    for (const release of held.splice(0)) release(); // their acks go nowhere: the channel died

    await waitFor(() => changes.some((c) => c.lost && c.revoked.length > 0), { timeoutMs: 10_000, what: 'partitions reported lost' });
    await waitFor(() => consumer.assignment(topic).length === 4, { timeoutMs: 20_000, what: () => `partitions assigned again (owns [${consumer.assignment(topic).join(',')}])` });
    for (let i = 15; i < 25; i++) {
      await waitFor(
        async () => {
          try {
            await transport.publish(topic, [msg(i)]);
            return true;
          } catch {
            return false;
          }
        },
        { timeoutMs: 20_000, intervalMs: 100, what: `publish of m-${i} after the restart` },
      );
    }
    const all = Array.from({ length: 25 }, (_, i) => `m-${i}`);
    await waitFor(() => all.every((id) => handled.includes(id)), {
      timeoutMs: 20_000,
      what: () => `every message handled (missing ${all.filter((id) => !handled.includes(id)).join(',')})`,
    });
    await consumer.close({ timeoutMs: 1000 });
    const lost = changes.filter((c) => c.lost).flatMap((c) => c.revoked);
    assert.deepEqual([...new Set(lost)].sort(), [0, 1, 2, 3], 'every partition was reported lost when the connection dropped');
    assert.deepEqual(all.filter((id) => !handled.includes(id)), [], 'nothing lost across the restart');
  });
});
