// NATS-specific behaviour beyond the contract: odd partition keys survive the header, a
// re-published envelope id is de-duplicated, topics with dots map to valid names, a stream
// that Herald did not create is refused, stale-epoch fencing at the broker.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createEnvelope, isHeraldError, partitionForKey, type Delivery } from '@herald/core';
import { serverSkipReason, uniqueName, waitFor } from '@herald/testkit';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { createNatsTransport, streamName } from './index.ts';
import { testNamespace } from './test-helpers.ts';

const skip = await serverSkipReason('NATS JetStream', 4222);
const ns = testNamespace();
after(() => (skip ? undefined : ns.cleanup()));
const fast = { leaseMs: 600, heartbeatMs: 100, fetchExpiresMs: 2000, prefix: ns.prefix, leaseBucket: ns.leaseBucket } as const;

describe('nats transport (integration)', { skip }, () => {
  it('keys with newlines, quotes, spaces, non-ASCII and lone surrogates arrive exactly; dotted topics work', async () => {
    const t = await createNatsTransport(fast);
    try {
      const topic = `a.b..c-${uniqueName('t')}`;
      const keys = ['line\nbreak\r\n', ' "quoted" ', 'ünï 🚀', 'lone \uD800 surrogate', ''];
      const sub = t.subscribe(topic, { group: 'g' });
      const got: Delivery[] = [];
      void (async () => {
        for await (const d of sub) {
          got.push(d);
          d.ack();
        }
      })();
      const P = (await t.ensureTopic(topic)).partitions;
      const receipts = await t.publish(topic, keys.map((key, i) => ({ key, envelope: createEnvelope({ type: 'k', source: 's', data: { i } }) })));
      receipts.forEach((r, i) => assert.equal(r.partition, partitionForKey(keys[i]!, P)));
      await waitFor(() => got.length === keys.length, { what: () => `${got.length}/${keys.length} delivered` });
      for (const d of got) assert.equal(d.key, keys[(d.envelope!.data as { i: number }).i]);
      await sub.close();
    } finally {
      await t.close();
    }
  });

  it('a re-published envelope id is stored once (Nats-Msg-Id de-duplication) and keeps its first position', async () => {
    const t = await createNatsTransport(fast);
    try {
      const topic = uniqueName('t');
      const env = createEnvelope({ type: 'k', source: 's', data: { x: 1 }, partitionkey: 'k' });
      const [a] = await t.publish(topic, [{ envelope: env }]);
      const [b] = await t.publish(topic, [{ envelope: env }]);
      assert.deepEqual(b, a, 'the duplicate is acknowledged at the first position');
      const sub = t.subscribe(topic, { group: 'g' });
      const got: Delivery[] = [];
      void (async () => {
        for await (const d of sub) {
          got.push(d);
          d.ack();
        }
      })();
      await waitFor(() => got.length >= 1);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(got.length, 1, 'delivered once');
      await sub.close();
    } finally {
      await t.close();
    }
  });

  it('a stream with the topic’s name that Herald did not create is refused with HERALD_ERR_TOPIC_MISMATCH', async () => {
    const t = await createNatsTransport(fast);
    const jsm = await jetstreamManager(t.connection);
    const topic = uniqueName('t');
    try {
      await jsm.streams.add({ name: streamName(ns.prefix, topic), subjects: [`foreign.${topic}`] });
      await assert.rejects(t.ensureTopic(topic), (e) => isHeraldError(e, 'HERALD_ERR_TOPIC_MISMATCH'));
    } finally {
      await jsm.streams.delete(streamName(ns.prefix, topic)).catch(() => {});
      await t.close();
    }
  });

  it('a new owner reads through its own epoch’s consumer; the old epoch’s consumer is deleted (stale acks go nowhere)', async () => {
    const t = await createNatsTransport(fast);
    const jsm = await jetstreamManager(t.connection);
    try {
      const topic = uniqueName('t');
      await t.ensureTopic(topic, { partitions: 1 });
      const names = async (): Promise<string[]> => {
        const out: string[] = [];
        for await (const ci of jsm.consumers.list(streamName(ns.prefix, topic))) out.push(ci.name);
        return out;
      };
      const s1 = t.subscribe(topic, { group: 'grp' });
      const c1: Delivery[] = [];
      void (async () => {
        for await (const d of s1) {
          c1.push(d);
          d.ack();
        }
      })();
      await t.publish(topic, [{ key: 'a', envelope: createEnvelope({ type: 'k', source: 's', data: 1 }) }]);
      await waitFor(() => c1.length === 1);
      const first = await names();
      assert.equal(first.length, 1, `one consumer for (group, partition): ${first.join(', ')}`);
      await s1.close();
      const s2 = t.subscribe(topic, { group: 'grp' });
      const c2: Delivery[] = [];
      void (async () => {
        for await (const d of s2) {
          c2.push(d);
          d.ack();
        }
      })();
      await t.publish(topic, [{ key: 'a', envelope: createEnvelope({ type: 'k', source: 's', data: 2 }) }]);
      await waitFor(() => c2.length === 1, { what: () => `the second owner's delivery (got ${c2.length})` });
      assert.equal(c2[0]!.envelope!.data, 2, 'the second owner resumes after the committed position');
      const second = await names();
      assert.equal(second.length, 1, `still one consumer: ${second.join(', ')}`);
      assert.notEqual(second[0], first[0], 'a new consumer for the new lease epoch');
      await s2.close();
    } finally {
      await t.close();
    }
  });
});

describe('nats transport: positions across owners', { skip }, () => {
  it('an owner that acked nothing hands on the position it started at (2.9 reports ack floor 0 until the first ack)', async () => {
    const t = await createNatsTransport(fast);
    try {
      const topic = uniqueName('t');
      await t.ensureTopic(topic, { partitions: 1 });
      const read = async (expect: number): Promise<number[]> => {
        const sub = t.subscribe(topic, { group: 'grp' });
        const got: number[] = [];
        void (async () => {
          for await (const d of sub) {
            got.push(d.envelope!.data as number);
            d.ack();
          }
        })();
        await waitFor(() => sub.assignment().length === 1 && got.length >= expect, { what: () => `${got.length}/${expect}` });
        await new Promise((r) => setTimeout(r, 300));
        await sub.close();
        return got;
      };
      const pub = (n: number) => t.publish(topic, [{ key: 'a', envelope: createEnvelope({ type: 'k', source: 's', data: n }) }]);
      for (let n = 0; n < 5; n++) await pub(n);
      assert.deepEqual(await read(5), [0, 1, 2, 3, 4], 'the first owner reads everything');
      assert.deepEqual(await read(0), [], 'the second owner finds nothing new and acks nothing');
      await pub(5);
      assert.deepEqual(await read(1), [5], 'the third owner resumes after the first owner’s commit, not from the start');
    } finally {
      await t.close();
    }
  });
});

describe('nats transport: deliveries lost in transit', { skip }, () => {
  it('pull requests dropped mid-stream (messages lost in transit) still give every message once, in order per key', { timeout: 60_000 }, async () => {
    const t = await createNatsTransport(fast);
    try {
      const topic = uniqueName('t');
      await t.ensureTopic(topic, { partitions: 2 });
      const sub = t.subscribe(topic, { group: 'g' });
      const got: Array<{ key: string; n: number }> = [];
      void (async () => {
        for await (const d of sub) {
          got.push({ key: d.key!, n: (d.envelope!.data as { n: number }).n });
          d.ack();
        }
      })();
      await waitFor(() => sub.assignment().length === 2);
      const N = 4000;
      const resets = setInterval(() => t.resetPulls(), 50);
      for (let i = 0; i < N; i += 100) {
        await t.publish(topic, Array.from({ length: 100 }, (_, j) => ({ key: `k${(i + j) % 8}`, envelope: createEnvelope({ type: 'k', source: 's', data: { n: i + j } }) })));
      }
      const firsts = (): Set<number> => new Set(got.map((g) => g.n));
      await waitFor(() => firsts().size === N, { timeoutMs: 20_000, what: () => `${firsts().size}/${N} delivered` });
      clearInterval(resets);
      const byKey = new Map<string, number[]>();
      for (const g of got) {
        const l = byKey.get(g.key) ?? [];
        if (!l.includes(g.n)) l.push(g.n);
        byKey.set(g.key, l);
      }
      for (const [k, l] of byKey) assert.deepEqual(l, [...l].sort((a, b) => a - b), `first deliveries of ${k} in order`);
      await sub.close();
    } finally {
      await t.close();
    }
  });
});

describe('nats transport: consumer lag', { skip }, () => {
  it('several groups on one topic: delivered-but-unacked messages are lag, acked ones are not; lag() reads without side effects', async () => {
    const t = await createNatsTransport(fast);
    const other = await createNatsTransport(fast); // another process's view of the same server
    const jsm = await jetstreamManager(t.connection);
    const subs: Array<{ close(options?: { timeoutMs?: number }): Promise<void> }> = [];
    try {
      const topic = uniqueName('t');
      const stream = streamName(ns.prefix, topic);
      const P = (await t.ensureTopic(topic, { partitions: 2 })).partitions;
      const key = 'k';
      const p = partitionForKey(key, P);
      const acking = 'orders/ü λ"x"'; // not a consumer-name token: recovered from the consumer
      const holding = 'holding';
      const a = t.subscribe(topic, { group: acking });
      const b = t.subscribe(topic, { group: holding });
      subs.push(a, b);
      const gotA: Delivery[] = [];
      const gotB: Delivery[] = [];
      void (async () => {
        for await (const d of a) {
          gotA.push(d);
          d.ack();
        }
      })();
      void (async () => {
        for await (const d of b) gotB.push(d); // held, never settled (yet)
      })();
      const before = Date.now();
      const receipts = await t.publish(topic, [0, 1, 2, 3].map((i) => ({ key, envelope: createEnvelope({ type: 'k', source: 's', data: i }) })));
      const after = Date.now();
      const last = receipts[3]!.position;
      await waitFor(() => gotA.length === 4 && gotB.length === 4, { what: () => `deliveries: ${gotA.length} to ${acking}, ${gotB.length} to ${holding}` });

      const entry = async (group: string, partition: number) => (await t.lag({ group, topic })).find((l) => l.partition === partition);
      await waitFor(async () => (await entry(acking, p))?.messages === 0, { what: () => `${acking} acked everything: lag 0` });
      const aLag = (await entry(acking, p))!;
      assert.deepEqual({ head: aLag.head, committed: aLag.committed, oldest: aLag.oldestUnhandledAt }, { head: last, committed: last, oldest: undefined }, 'the acking group is committed at the head');
      const bLag = (await entry(holding, p))!;
      assert.equal(bLag.messages, 4, 'delivered but unacked messages count as lag');
      assert.equal(bLag.committed, '-1', 'nothing committed by the holding group');
      assert.equal(bLag.head, last, 'head is the partition’s last position');
      assert.ok(bLag.oldestUnhandledAt !== undefined && bLag.oldestUnhandledAt >= before - 2000 && bLag.oldestUnhandledAt <= after + 2000, `oldest unhandled appended during the publish (${bLag.oldestUnhandledAt}, publish ${before}–${after})`);
      const empty = (await entry(holding, 1 - p))!;
      assert.deepEqual({ head: empty.head, committed: empty.committed, messages: empty.messages, oldest: empty.oldestUnhandledAt }, { head: '-1', committed: '-1', messages: 0, oldest: undefined }, 'an empty partition');

      // lag() from another connection sees both groups under their names, and changes nothing.
      const snapshot = async (): Promise<string[]> => {
        const out: string[] = [];
        for await (const ci of jsm.consumers.list(stream)) out.push(`${ci.name} delivered ${ci.delivered.consumer_seq}/${ci.delivered.stream_seq} acked ${ci.ack_floor.stream_seq} redelivered ${ci.num_redelivered}`);
        return out.sort();
      };
      const seen = await snapshot();
      const all = await other.lag();
      for (const g of [acking, holding]) assert.deepEqual(all.filter((l) => l.topic === topic && l.group === g).map((l) => l.partition).sort(), [0, 1], `unfiltered lag() lists ${g} on every partition`);
      assert.deepEqual(await other.lag({ group: holding, topic }), await t.lag({ group: holding, topic }), 'same answer from another connection');
      assert.deepEqual(await snapshot(), seen, 'no consumer created, moved or redelivered by lag()');
      assert.deepEqual(await other.lag({ group: 'never-subscribed' }), [], 'an unknown group has no entries');
      const unknownTopic = uniqueName('t');
      assert.deepEqual(await other.lag({ topic: unknownTopic }), [], 'an unknown topic has no entries');
      await assert.rejects(jsm.streams.info(streamName(ns.prefix, unknownTopic)), 'lag({ topic }) creates no stream');

      // Acking the first two in order moves the holding group's committed position.
      gotB[0]!.ack();
      gotB[1]!.ack();
      await waitFor(async () => (await entry(holding, p))?.messages === 2, { what: () => `${holding} acked 2 of 4: lag 2` });
      assert.equal((await entry(holding, p))!.committed, receipts[1]!.position, 'committed at the second message');
      assert.equal((await entry(acking, p))!.messages, 0, 'the other group is unaffected');
    } finally {
      await Promise.all(subs.map((s) => s.close({ timeoutMs: 200 }).catch(() => {})));
      await other.close();
      await t.close();
    }
  });

  it('lag() refuses a bad filter and rejects once the transport is closed', async () => {
    const t = await createNatsTransport(fast);
    try {
      await assert.rejects(t.lag({ topic: 'not a topic!' }), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
      await assert.rejects(t.lag({ group: '' }), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
    } finally {
      await t.close();
    }
    await assert.rejects(t.lag(), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
  });

  it('lag() rejects with HERALD_ERR_STORAGE when the server cannot be reached', async () => {
    const nc = await connect({ servers: '127.0.0.1:4222', noAsyncTraces: true });
    const t = await createNatsTransport({ ...fast, connection: nc });
    try {
      await nc.close(); // the shared connection is gone; the transport itself is still open
      await assert.rejects(t.lag(), (e) => isHeraldError(e, 'HERALD_ERR_STORAGE'));
    } finally {
      await t.close();
    }
  });
});

describe('nats transport: topics()', { skip }, () => {
  it('lists topics with partitions, published (the stream’s last sequence) and stored per partition; reads only', async () => {
    const t = await createNatsTransport(fast);
    const other = await createNatsTransport(fast); // another process's view of the same server
    const jsm = await jetstreamManager(t.connection);
    const foreign = uniqueName('t');
    try {
      const topic = `dotted.${uniqueName('t')}`;
      const P = (await t.ensureTopic(topic, { partitions: 3 })).partitions;
      const keys = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
      const envelopes = keys.map((key, i) => ({ key, envelope: createEnvelope({ type: 'k', source: 's', data: i }) }));
      await t.publish(topic, envelopes);
      await t.publish(topic, [envelopes[0]!]); // a re-published id is stored once, counted once
      const perPartition = Array.from({ length: P }, (_, p) => keys.filter((k) => partitionForKey(k, P) === p).length);
      const mine = (await other.topics()).find((x) => x.topic === topic);
      assert.deepEqual(mine, { topic, stream: streamName(ns.prefix, topic), partitions: 3, published: 7, stored: perPartition }, 'an unfiltered read from another connection');
      assert.deepEqual(await other.topics({ topic }), [mine], 'the { topic } filter');

      // A purge drops what is stored, not what was published.
      const p = partitionForKey('a', P);
      await jsm.streams.purge(streamName(ns.prefix, topic), { filter: `${ns.prefix}.${topic.replaceAll('.', '~')}.${p}` });
      const [purged] = await other.topics({ topic });
      assert.equal(purged!.published, 7, 'published keeps counting purged messages');
      assert.deepEqual(purged!.stored, perPartition.map((n, i) => (i === p ? 0 : n)), 'stored drops on the purged partition');

      // Nothing is created: no stream for an unknown topic, no consumer on a known one.
      const unknown = uniqueName('t');
      assert.deepEqual(await other.topics({ topic: unknown }), []);
      await assert.rejects(jsm.streams.info(streamName(ns.prefix, unknown)), 'topics({ topic }) creates no stream');
      const consumers: string[] = [];
      for await (const ci of jsm.consumers.list(streamName(ns.prefix, topic))) consumers.push(ci.name);
      assert.deepEqual(consumers, [], 'no consumer created');

      // A stream with a topic's name that Herald did not create: left out, or refused by name.
      await jsm.streams.add({ name: streamName(ns.prefix, foreign), subjects: [`${ns.prefix}.${foreign}.*`] });
      assert.equal((await other.topics()).some((x) => x.topic === foreign), false, 'a foreign stream is not listed');
      await assert.rejects(other.topics({ topic: foreign }), (e) => isHeraldError(e, 'HERALD_ERR_TOPIC_MISMATCH'));
      await assert.rejects(other.topics({ topic: 'not a topic!' }), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
    } finally {
      await jsm.streams.delete(streamName(ns.prefix, foreign)).catch(() => {});
      await other.close();
      await t.close();
    }
    await assert.rejects(t.topics(), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
  });
});
