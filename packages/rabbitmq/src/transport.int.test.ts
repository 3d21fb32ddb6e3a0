// RabbitMQ-specific behaviour beyond the contract, on the shared broker: unroutable messages,
// partition counts across instances, delayed redelivery through the delay buckets, attempts
// from x-delivery-count, per-key order across a graceful router close, single active consumer.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { type Consumer, createConsumer, createEnvelope, type Delivery, isHeraldError, MemoryDeadLetterStore, type Subscription } from '@herald/core';
import { serverSkipReason, sleep, waitFor } from '@herald/testkit';
import { Connection } from 'rabbitmq-client';
import { delayBucket } from './transport.ts';
import { RABBITMQ_PORT, RABBITMQ_URL, TestBroker, testNamespace } from './test-helpers.ts';

const skip = await serverSkipReason('RabbitMQ', RABBITMQ_PORT);
const broker = new TestBroker(testNamespace('int'), { defaultPartitions: 4 });
after(() => broker.cleanup());

let seq = 0;
const topicName = (label: string): string => `${label}-${Date.now().toString(36)}-${seq++}`;
const msg = (id: string, key?: string, data: unknown = { id }) => ({ envelope: createEnvelope({ type: 'int.test', source: 'herald-test/int', id, data }), ...(key !== undefined ? { key } : {}) });

async function collect(sub: Subscription, onDelivery: (d: Delivery) => void = (d) => d.ack()): Promise<Delivery[]> {
  const got: Delivery[] = [];
  void (async () => {
    for await (const d of sub) {
      got.push(d);
      onDelivery(d);
    }
  })();
  return got;
}

async function owned(sub: Subscription, n: number): Promise<void> {
  await waitFor(() => sub.assignment().length === n, { timeoutMs: 5000, what: () => `assignment of ${n} partitions (have [${sub.assignment().join(',')}])` });
}

describe('rabbitmq transport (integration)', { skip }, () => {
  it('a topic with no group queues keeps messages in its bounded unrouted queue; with unroutedMaxLength 0 the publish is a typed error', async () => {
    const t = broker.create();
    const topic = topicName('unrouted');
    const receipts = await t.publish(topic, [msg('u-1', 'a'), msg('u-2')]);
    assert.equal(receipts.length, 2);
    const conn = new Connection({ url: RABBITMQ_URL });
    conn.on('error', () => {});
    try {
      const { messageCount } = await conn.queueDeclare({ queue: t.names.unrouted(topic), passive: true });
      assert.equal(messageCount, 2, 'both messages wait in the unrouted queue');
    } finally {
      await conn.close();
    }
    const strict = broker.create({ unroutedMaxLength: 0 });
    const topic2 = topicName('unroutable');
    let error: unknown;
    try {
      await strict.publish(topic2, [msg('r-1', 'a')]);
    } catch (e) {
      error = e;
    }
    assert.ok(isHeraldError(error, 'HERALD_ERR_STORAGE'), `expected HERALD_ERR_STORAGE, got ${String(error)}`);
    assert.equal(error.details.reason, 'unroutable');
    assert.match(error.message, /unroutable/);
    // Once a group exists the same publish goes through.
    const sub = strict.subscribe(topic2, { group: 'g' });
    await owned(sub, 4);
    await strict.publish(topic2, [msg('r-2', 'a')]);
    const got = await collect(sub);
    await waitFor(() => got.length === 1, { what: 'r-2 delivered' });
    assert.equal(got[0]!.envelope?.id, 'r-2');
    await sub.close();
  });

  it('the partition count is the broker’s: another instance learns it, and a different count is HERALD_ERR_TOPIC_MISMATCH', async () => {
    const a = broker.create();
    const b = broker.create();
    const topic = topicName('count');
    assert.deepEqual(await a.ensureTopic(topic, { partitions: 3 }), { topic, partitions: 3 });
    assert.deepEqual(await b.ensureTopic(topic), { topic, partitions: 3 }, 'another instance (empty cache) reads the count back');
    const c = broker.create();
    await assert.rejects(c.ensureTopic(topic, { partitions: 5 }), (e) => isHeraldError(e, 'HERALD_ERR_TOPIC_MISMATCH') && /has 3 partitions, not 5/.test(e.message));
    assert.deepEqual(await c.ensureTopic(topic), { topic, partitions: 3 }, 'the failed declaration left the instance usable');
    await assert.rejects(a.ensureTopic('bad name'), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
  });

  it('nack({ delayMs }) goes through a delay bucket: redelivered at or after the delay with attempt + 1, the original acked', async () => {
    const t = broker.create();
    const topic = topicName('delay');
    const sub = t.subscribe(topic, { group: 'g' });
    const times: number[] = [];
    const got = await collect(sub, (d) => {
      times.push(performance.now());
      if (d.attempt < 3) d.nack({ delayMs: 120 });
      else d.ack();
    });
    await owned(sub, 4);
    await t.publish(topic, [msg('d-1', 'k')]);
    await waitFor(() => got.length >= 3, { timeoutMs: 5000, what: () => `three deliveries (got ${got.length})` });
    await sleep(400);
    assert.deepEqual(got.map((d) => d.attempt), [1, 2, 3], 'attempts 1, 2, 3 and nothing after the ack');
    assert.equal(delayBucket(120), 150, '120 ms goes through the 150 ms bucket');
    for (let i = 1; i < 3; i++) assert.ok(times[i]! - times[i - 1]! >= 115, `redelivery ${i} after ${(times[i]! - times[i - 1]!).toFixed(0)} ms`);
    assert.ok(t.declaredNames().queues.includes(t.names.delayQueue(150)), 'the 150 ms bucket queue was declared');
    assert.equal(got[2]!.envelope?.id, 'd-1');
    assert.deepStrictEqual(got[2]!.envelope, got[0]!.envelope, 'the copy carries the same envelope');
    assert.equal(got[2]!.key, 'k', 'and the same key');
    await sub.close();
  });

  it('a message returned by a closed channel comes back with attempt 2 (x-delivery-count), before later messages', async () => {
    const t = broker.create();
    const topic = topicName('returned');
    await t.ensureTopic(topic, { partitions: 1 });
    const s1 = t.subscribe(topic, { group: 'g', maxInFlight: 1 });
    const got1 = await collect(s1, () => {}); // never settles
    await owned(s1, 1);
    await t.publish(topic, [msg('r-1', 'k'), msg('r-2', 'k'), msg('r-3', 'k')]);
    await waitFor(() => got1.length === 1, { what: 'first delivery' });
    await sleep(100);
    assert.equal(got1.length, 1, 'maxInFlight 1');
    await s1.close({ timeoutMs: 50 });
    const s2 = t.subscribe(topic, { group: 'g' });
    const got2 = await collect(s2);
    await waitFor(() => got2.length === 3, { what: () => `three deliveries to the next member (got ${got2.length})` });
    assert.deepEqual(got2.map((d) => d.envelope?.id), ['r-1', 'r-2', 'r-3'], 'in order');
    assert.deepEqual(got2.map((d) => d.attempt), [2, 1, 1], 'r-1 was delivered and returned; prefetch 1 (= maxInFlight) kept r-2 and r-3 at the broker');
    await s2.close();
  });

  it('nack() redelivers locally, ahead of what was not handed out, with attempt + 1', async () => {
    const t = broker.create();
    const topic = topicName('nack');
    await t.ensureTopic(topic, { partitions: 1 });
    const sub = t.subscribe(topic, { group: 'g', maxInFlight: 1 });
    const got = await collect(sub, (d) => {
      if (d.envelope?.id === 'n-1' && d.attempt < 3) d.nack();
      else d.ack();
    });
    await owned(sub, 1);
    await t.publish(topic, [msg('n-1', 'k'), msg('n-2', 'k')]);
    await waitFor(() => got.length === 4, { what: () => `four deliveries (got ${got.map((d) => `${d.envelope?.id}#${d.attempt}`).join(' ')})` });
    assert.deepEqual(got.map((d) => `${d.envelope?.id}#${d.attempt}`), ['n-1#1', 'n-1#2', 'n-1#3', 'n-2#1']);
    await sub.close();
  });

  it('a graceful router close keeps per-key order for the next member: queued work goes back in order', async () => {
    const t = broker.create();
    const topic = topicName('router-close');
    await t.ensureTopic(topic, { partitions: 2 });
    const handled: Array<{ by: string; i: number }> = [];
    let releaseFirst!: () => void;
    const firstRunning = new Promise<void>((r) => (releaseFirst = r));
    let started!: () => void;
    const startedFirst = new Promise<void>((r) => (started = r));
    const consumer = (name: string, blockFirst: boolean): Consumer => {
      const c = createConsumer({ transport: t, group: 'g', deadLetters: new MemoryDeadLetterStore(), memberId: name });
      c.handleEnvelope(topic, '*', async (env) => {
        const i = (env.data as { i: number }).i;
        if (blockFirst && i === 0) {
          started();
          await firstRunning;
        }
        handled.push({ by: name, i });
      });
      return c;
    };
    const a = consumer('a', true);
    await a.start();
    await waitFor(() => a.assignment(topic).length === 2, { what: 'A owns both partitions' });
    await t.publish(topic, Array.from({ length: 20 }, (_, i) => msg(`o-${i}`, 'one-key', { i })));
    await startedFirst; // o-0 is running; o-1..o-19 wait in the key's lane
    await sleep(100);
    const closing = a.close({ timeoutMs: 2000 });
    await sleep(50);
    releaseFirst();
    await closing;
    const b = consumer('b', false);
    await b.start();
    await waitFor(() => handled.length >= 20, { timeoutMs: 5000, what: () => `20 handled (got ${handled.length})` });
    await sleep(200);
    await b.close({ timeoutMs: 1000 });
    assert.deepEqual(handled.map((h) => h.i), Array.from({ length: 20 }, (_, i) => i), `order: ${handled.map((h) => `${h.by}${h.i}`).join(' ')}`);
    assert.deepEqual(handled[0], { by: 'a', i: 0 });
  });

  it('single active consumer: a second member’s consumer on a partition waits until the first lets go', async () => {
    // Two subscriptions whose views of the group disagree (B never hears A: A has a different
    // announcement interval but the same queues): both consume every partition queue; the broker
    // still delivers each queue to one of them at a time.
    const t = broker.create();
    const topic = topicName('sac');
    await t.ensureTopic(topic, { partitions: 1 });
    const a = t.subscribe(topic, { group: 'g', memberId: 'a' });
    const gotA = await collect(a, () => {}); // holds everything
    await owned(a, 1);
    // B's queue consumer is registered by hand, as a member that thinks it owns the partition would.
    const conn = new Connection({ url: RABBITMQ_URL });
    conn.on('error', () => {});
    const ch = await conn.acquire();
    await ch.basicQos({ prefetchCount: 10 });
    const gotB: string[] = [];
    await ch.basicConsume({ queue: t.names.groupQueue(topic, 'g', 0) }, (m) => {
      gotB.push(String(m.headers?.['cloudEvents:id']));
      ch.basicAck({ deliveryTag: m.deliveryTag });
    });
    await t.publish(topic, [msg('s-1', 'k'), msg('s-2', 'k')]);
    await waitFor(() => gotA.length === 2, { what: 'A gets both' });
    await sleep(200);
    assert.deepEqual(gotB, [], 'the waiting consumer gets nothing while A is active');
    await a.close({ timeoutMs: 50 });
    await waitFor(() => gotB.length === 2, { what: () => `B gets what A held once A let go (got ${gotB.join(',')})` });
    assert.deepEqual(gotB, ['s-1', 's-2'], 'in order');
    await ch.close();
    await conn.close();
  });

  it('lag: several groups on one topic apart; delivered-but-unacked messages count; another instance finds the groups through the registry', async () => {
    const t = broker.create();
    const other = broker.create(); // never subscribes: what another process's /metrics sees
    const topic = topicName('lag');
    await t.ensureTopic(topic, { partitions: 2 });
    const fast = t.subscribe(topic, { group: 'fast' });
    const slow = t.subscribe(topic, { group: 'slow' });
    const fastGot = await collect(fast);
    const held: Delivery[] = [];
    await collect(slow, (d) => held.push(d)); // never settled
    await owned(fast, 2);
    await owned(slow, 2);
    const before = Date.now();
    const receipts = await t.publish(topic, [msg('l-1', 'k'), msg('l-2', 'k'), msg('l-3', 'k')]);
    const after = Date.now();
    const p = receipts[0]!.partition;
    assert.ok(receipts.every((r) => r.partition === p), 'one key, one partition');
    await waitFor(() => fastGot.length === 3 && held.length === 3, { what: () => `both groups get the 3 messages (fast ${fastGot.length}, slow ${held.length})` });
    const show = (ls: readonly { group: string; partition: number; messages: number; oldestUnhandledAt: number | undefined }[]): string =>
      ls.map((l) => `${l.group}/p${l.partition}: ${l.messages} ${l.oldestUnhandledAt ?? '-'}`).join('; ');
    let last: Awaited<ReturnType<typeof t.lag>> = [];
    await waitFor(
      async () => {
        last = await t.lag({ topic });
        return last.some((l) => l.group === 'fast') && last.filter((l) => l.group === 'fast').every((l) => l.messages === 0);
      },
      { what: () => `fast has no lag once it acked: ${show(last)}` },
    );
    const slowP = last.find((l) => l.group === 'slow' && l.partition === p);
    assert.ok(slowP, `an entry for slow/p${p}: ${show(last)}`);
    assert.equal(slowP.messages, 3, `the 3 delivered-but-unacked messages are slow's lag: ${show(last)}`);
    assert.ok(slowP.oldestUnhandledAt !== undefined && slowP.oldestUnhandledAt >= before - 2000 && slowP.oldestUnhandledAt <= after + 2000, `dated within the publish: ${show(last)}`);
    assert.equal(slowP.head, receipts[0]!.position, 'head is the newest marked message of the partition (markers are sampled: the first of the burst)');
    assert.equal(last.find((l) => l.group === 'fast' && l.partition === p)?.head, receipts[0]!.position, 'both groups share the partition head');
    assert.deepEqual(
      last.map((l) => `${l.group}/${l.partition}`),
      ['fast/0', 'fast/1', 'slow/0', 'slow/1'],
      'one entry per (group, partition), groups apart',
    );
    // Reading lag is no delivery: the held messages are still with slow, none redelivered.
    assert.equal(held.length, 3);

    // The member goes without acking: its messages go back to the queue and stay slow's lag,
    // which an instance that never subscribed finds through the registry stream.
    await slow.close({ timeoutMs: 0 });
    await waitFor(
      async () => {
        last = await other.lag({ group: 'slow' });
        return last.find((l) => l.partition === p)?.messages === 3;
      },
      { what: () => `another instance sees slow's 3 messages: ${show(last)}` },
    );
    assert.ok(last.every((l) => l.topic === topic && l.group === 'slow'));
    const again = last.find((l) => l.partition === p)!;
    assert.ok(again.oldestUnhandledAt !== undefined && again.oldestUnhandledAt >= before - 2000 && again.oldestUnhandledAt <= after + 2000, `same age seen from elsewhere: ${show(last)}`);
    assert.equal(again.committed, '-1', 'nothing of slow was ever acked on that partition');
    assert.ok((await other.lag()).some((l) => l.topic === topic && l.group === 'fast'), 'lag() with no filter reports the other groups too');
    await fast.close({ timeoutMs: 100 });
    await other.close();
    await assert.rejects(other.lag(), (e: unknown) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
  });

  it('lag markers are sampled: many messages within one interval on a partition make one marker, the age stays within the interval', async () => {
    const interval = 1500;
    const t = broker.create({ lagMarkIntervalMs: interval });
    const topic = topicName('lagmark');
    await t.ensureTopic(topic, { partitions: 2 });
    const g = t.subscribe(topic, { group: 'g' });
    await collect(g, () => {}); // never settled
    await owned(g, 2);
    await g.close({ timeoutMs: 0 }); // the group queues stay: the messages below are its lag
    const first = Date.now();
    const receipts: { partition: number; position: string }[] = [];
    for (let i = 0; i < 20; i++) receipts.push(...(await t.publish(topic, [msg(`m-${i}`, 'k'), msg(`n-${i}`, 'k')])));
    const p = receipts[0]!.partition;
    assert.ok(Date.now() - first < interval, 'the 40 messages went out within one interval');
    // Read the partition's pulse stream from its start with a plain client.
    const conn = new Connection(RABBITMQ_URL);
    const readMarkers = async (): Promise<{ id: unknown; count: unknown }[]> => {
      const ch = await conn.acquire();
      await ch.basicQos({ prefetchCount: 100 });
      const got: { id: unknown; count: unknown }[] = [];
      await ch.basicConsume({ queue: `${t.names.topicExchange(topic)}:pulse:${p}`, arguments: { 'x-stream-offset': 'first' } }, (m) => {
        got.push({ id: m.messageId, count: m.headers?.['herald-pulse-count'] });
        void ch.basicAck({ deliveryTag: m.deliveryTag });
      });
      await sleep(300);
      await ch.close();
      return got;
    };
    assert.deepEqual(await readMarkers(), [{ id: receipts[0]!.position, count: 1 }], 'one marker, behind the first message');
    let last: Awaited<ReturnType<typeof t.lag>> = [];
    await waitFor(
      async () => {
        last = await t.lag({ topic, group: 'g' });
        return last.find((l) => l.partition === p)?.messages === 40;
      },
      { what: () => `40 messages of lag on p${p}: ${JSON.stringify(last)}` },
    );
    const l = last.find((x) => x.partition === p)!;
    assert.ok(l.oldestUnhandledAt !== undefined && l.oldestUnhandledAt >= first - interval && l.oldestUnhandledAt <= first + 50, `dated within one interval of the oldest message (${l.oldestUnhandledAt} vs ${first})`);
    // After the interval, a trailing marker counts the 39 others; the age is still the first message's.
    await waitFor(async () => (await readMarkers()).length === 2, { timeoutMs: interval + 3000, what: () => 'a trailing marker after the interval' });
    assert.deepEqual(await readMarkers(), [
      { id: receipts[0]!.position, count: 1 },
      { id: receipts[39]!.position, count: 39 },
    ]);
    const again = (await t.lag({ topic, group: 'g' })).find((x) => x.partition === p)!;
    assert.equal(again.messages, 40);
    assert.equal(again.oldestUnhandledAt, l.oldestUnhandledAt, 'the oldest unhandled message is still dated by the first marker');
    assert.equal(again.head, receipts[39]!.position);
    await conn.close();
    await t.close();
  });

  it('a member that stops announcing is dropped after memberTimeoutMs and its partitions move', async () => {
    const t1 = broker.create();
    const t2 = broker.create();
    const topic = topicName('timeout');
    await t1.ensureTopic(topic, { partitions: 4 });
    const a = t1.subscribe(topic, { group: 'g', memberId: 'a' });
    const b = t2.subscribe(topic, { group: 'g', memberId: 'b' });
    await collect(a);
    await collect(b);
    await waitFor(() => a.assignment().length === 2 && b.assignment().length === 2, { timeoutMs: 5000, what: () => `split (a [${a.assignment()}], b [${b.assignment()}])` });
    // Kill A's connection abruptly: no bye, its announcements stop; the broker drops its consumers.
    t1.connection.unsafeDestroy();
    const t0 = performance.now();
    await waitFor(() => b.assignment().length === 4, { timeoutMs: 5000, what: () => `B takes all (b [${b.assignment()}])` });
    const took = performance.now() - t0;
    assert.ok(took >= 500, `B waited for A's announcements to time out (${took.toFixed(0)} ms)`);
  });
});
