// NATS-specific behaviour beyond the contract: odd partition keys survive the header, a
// re-published envelope id is de-duplicated, topics with dots map to valid names, a stream
// that Herald did not create is refused, stale-epoch fencing at the broker.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createEnvelope, isHeraldError, partitionForKey, type Delivery } from '@herald/core';
import { serverSkipReason, uniqueName, waitFor } from '@herald/testkit';
import { jetstreamManager } from '@nats-io/jetstream';
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
