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
