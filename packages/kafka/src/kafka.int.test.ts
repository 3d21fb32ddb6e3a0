// The Kafka transport's behaviours against the librdkafka mock cluster (or KAFKA_BROKERS):
// the contract's checks, with group-formation waits sized to the mock's fixed group timings
// (first join 3 000 ms, rebalances session − 1 000 ms; see kafka.contract.test.ts). Every
// other wait is bounded at 2–5 s. Tests run concurrently: each owns its topic and groups.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  createConsumer,
  createEnvelope,
  createPublisher,
  decodeEnvelope,
  defineEvent,
  type Delivery,
  encodeEnvelope,
  encodedSize,
  isHeraldError,
  MemoryDeadLetterStore,
  type OutgoingMessage,
  type PartitionChange,
  partitionForKey,
  type StandardSchemaV1,
  type Subscription,
  type Transport,
} from '@herald/core';
import { assertDelivered, assertOrderPerKey, Collector, idOf, sleep, uniqueName, waitFor, withScope, type Scope } from '@herald/testkit';
import kafkajs from 'kafkajs';
import { brokerSkipReason, brokers, externalBrokers, TEST_PARTITIONS, testTransport } from './test-support.ts';
import { createKafkaTransport, type KafkaTransport } from './kafka-transport.ts';

const skip = brokerSkipReason();
/**
 * Bound for a group to form or rebalance: the mock needs 3 s (first join) or session − 1 s (rebalance), plus heartbeat
 * and sync — and a member that loses the mock's SyncGroup race (INVALID_REQUEST) rejoins, which costs another rebalance.
 */
const GROUP_MS = externalBrokers ? 8000 : 15_000;
const SETTLE_MS = 150;

interface Ctx {
  readonly scope: Scope;
  readonly topic: string;
  readonly run: string;
  transport(options?: Parameters<typeof testTransport>[0]): Promise<KafkaTransport>;
  subscribe(t: Transport, group: string, options?: Partial<Parameters<Transport['subscribe']>[1]>): Subscription;
  consume(sub: Subscription, label: string, onDelivery?: (d: Delivery, c: Collector) => void | Promise<void>): Collector;
  message(i: number, key?: string): OutgoingMessage;
  messages(from: number, count: number, keyOf: (i: number) => string | undefined): OutgoingMessage[];
  assigned(subs: readonly Subscription[], what: string, each?: boolean): Promise<void>;
  received(cs: readonly Collector[], ids: readonly string[], what: string, timeoutMs?: number): Promise<void>;
}

const idsOf = (ms: readonly OutgoingMessage[]): string[] => ms.map((m) => m.envelope.id);

/** A key that core's partitioner places on `partition` (of TEST_PARTITIONS). */
function keyOn(partition: number, tag: string): string {
  for (let k = 0; ; k++) if (partitionForKey(`${tag}-${partition}-${k}`, TEST_PARTITIONS) === partition) return `${tag}-${partition}-${k}`;
}

function withCtx(body: (c: Ctx) => Promise<void>): () => Promise<void> {
  return () =>
    withScope(async (scope) => {
      const run = uniqueName('r').slice(2, 10);
      const c: Ctx = {
        scope,
        topic: uniqueName('t'),
        run,
        async transport(options) {
          const t = await testTransport(options);
          return scope.defer('close a transport', () => t.close({ timeoutMs: 500 }), t);
        },
        subscribe(t, group, options = {}) {
          const s = t.subscribe(c.topic, { group, ...options });
          return scope.defer(`close the subscription of ${group}`, () => s.close({ timeoutMs: 200 }), s);
        },
        consume: (sub, label, onDelivery) => new Collector(sub, label, onDelivery),
        message(i, key) {
          const envelope = createEnvelope({
            type: 'int.message',
            source: 'herald-kafka/int',
            id: `${run}-${i}`,
            data: { i, key: key ?? null, text: 'héllo ✓ 🚀' },
            correlationid: `corr-${run}`,
            extensions: { intrun: run, n: i },
          });
          return key === undefined ? { envelope } : { envelope, key };
        },
        messages: (from, count, keyOf) => Array.from({ length: count }, (_, j) => c.message(from + j, keyOf(from + j))),
        async assigned(subs, what, each = false) {
          await waitFor(
            () => {
              const as = subs.map((s) => s.assignment());
              const all = as.flat();
              return all.length === TEST_PARTITIONS && new Set(all).size === TEST_PARTITIONS && (!each || as.every((a) => a.length > 0));
            },
            { timeoutMs: GROUP_MS, what: () => `${what}: assignments ${subs.map((s) => `[${s.assignment().join(',')}]`).join(' ')} should cover ${TEST_PARTITIONS} partitions` },
          );
        },
        async received(cs, ids, what, timeoutMs = 5000) {
          const got = (): Set<string> => new Set(cs.flatMap((x) => x.ids()));
          await waitFor(() => ids.every((id) => got().has(id)), {
            timeoutMs,
            what: () => `${what}: MISSING ${ids.filter((id) => !got().has(id)).slice(0, 10).join(', ')}; errors ${cs.flatMap((x) => x.errors.map(String)).join('; ')}`,
          });
        },
      };
      await body(c);
    });
}

describe('kafka transport (integration)', { skip, concurrency: true, timeout: 120_000 }, () => {
  it(
    'publish/subscribe: envelopes unchanged; key, murmur2 partition and receipt position; raw is the JSON structured form',
    withCtx(async (c) => {
      const t = await c.transport();
      const sub = c.subscribe(t, uniqueName('g'));
      const col = c.consume(sub, 'member');
      await c.assigned([sub], 'a single member owns every partition');
      const msgs = c.messages(0, 30, (i) => (i % 7 === 6 ? undefined : `key-${i % 5}`));
      const receipts = await t.publish(c.topic, msgs);
      assert.equal(receipts.length, msgs.length);
      receipts.forEach((r, i) => {
        const key = msgs[i]!.key;
        if (key !== undefined) assert.equal(r.partition, partitionForKey(key, TEST_PARTITIONS), `receipt ${i}: murmur2 partition`);
      });
      await c.received([col], idsOf(msgs), 'all messages');
      await sleep(SETTLE_MS);
      assertDelivered(idsOf(msgs), col.ids(), { label: 'publish/subscribe' });
      const byId = new Map(msgs.map((m, i) => [m.envelope.id, { m, r: receipts[i]! }]));
      for (const d of col.deliveries) {
        const { m, r } = byId.get(idOf(d))!;
        assert.deepStrictEqual(d.envelope, m.envelope, 'envelope unchanged (typed extension n included)');
        assert.deepStrictEqual(decodeEnvelope(d.raw), m.envelope, 'raw is the JSON structured format');
        assert.equal(d.key, m.key);
        assert.equal(d.partition, r.partition);
        assert.equal(d.position, r.position, 'delivered at the position its receipt named');
        assert.equal(d.attempt, 1);
        assert.equal(d.revoked.aborted, false);
      }
    }),
  );

  it(
    'order per key and log order per partition; concurrent publishers from two clients',
    withCtx(async (c) => {
      const t = await c.transport();
      const peer = await c.transport();
      const sub = c.subscribe(t, uniqueName('g'));
      const col = c.consume(sub, 'member');
      await c.assigned([sub], 'a single member owns every partition');
      const expected = new Map<string, string[]>();
      const all: string[] = [];
      await Promise.all(
        Array.from({ length: 6 }, async (_, p) => {
          const key = `publisher-${p}`;
          for (let j = 0; j < 40; j += 4) {
            const batch = Array.from({ length: 4 }, (_, k) => c.message(p * 1000 + j + k, key));
            for (const m of batch) {
              expected.set(key, [...(expected.get(key) ?? []), m.envelope.id]);
              all.push(m.envelope.id);
            }
            await (p % 2 ? peer : t).publish(c.topic, batch);
          }
        }),
      );
      await c.received([col], all, '6 publishers × 40');
      await sleep(SETTLE_MS);
      assertDelivered(all, col.ids(), { label: 'concurrent publishers' });
      assertOrderPerKey(expected, col.deliveries.map((d) => ({ key: d.key, id: idOf(d) })), { label: 'per key' });
      const last = new Map<number, number>();
      for (const d of col.deliveries) {
        const pos = Number(d.position);
        assert.ok(pos > (last.get(d.partition) ?? -1), `partition ${d.partition}: log order`);
        last.set(d.partition, pos);
      }
    }),
  );

  it(
    'every group gets every message; a new group replays history; startFrom latest starts at the head',
    withCtx(async (c) => {
      const t = await c.transport();
      const history = c.messages(0, 20, (i) => `key-${i % 4}`);
      await t.ensureTopic(c.topic);
      await t.publish(c.topic, history);
      const s1 = c.subscribe(t, uniqueName('g'));
      const s2 = c.subscribe(t, uniqueName('g'));
      const s3 = c.subscribe(t, uniqueName('g'), { startFrom: 'latest' });
      const c1 = c.consume(s1, 'group 1');
      const c2 = c.consume(s2, 'group 2');
      const c3 = c.consume(s3, 'group 3 (latest)');
      await c.assigned([s3], 'the latest group owns every partition');
      // Published as soon as the latest group shows its partitions: it must read them (its start is fixed by then).
      const fresh = c.messages(100, 10, (i) => `key-${i % 4}`);
      await t.publish(c.topic, fresh);
      await c.received([c1], idsOf(history), 'group 1 replays history', GROUP_MS);
      await c.received([c2], idsOf(history), 'group 2 replays history', GROUP_MS);
      for (const [col, what] of [[c1, 'group 1'], [c2, 'group 2'], [c3, 'group 3']] as const) await c.received([col], idsOf(fresh), `${what}, new messages`);
      await sleep(SETTLE_MS);
      assertDelivered([...idsOf(history), ...idsOf(fresh)], c1.ids(), { label: 'group 1' });
      assertDelivered([...idsOf(history), ...idsOf(fresh)], c2.ids(), { label: 'group 2' });
      assertDelivered(idsOf(fresh), c3.ids(), { label: 'latest: only what came after it joined' });
    }),
  );

  it(
    'a group splits work and rebalances on join and leave; revocations reported; no acked message reaches both members',
    withCtx(async (c) => {
      const t = await c.transport();
      const peer = await c.transport();
      const group = uniqueName('g');
      const changesA: PartitionChange[] = [];
      const a = c.subscribe(t, group, { onPartitions: (ch) => changesA.push(ch) });
      const ca = c.consume(a, 'A');
      await c.assigned([a], 'A alone owns every partition');
      const batch1 = c.messages(0, 40, (i) => `key-${i}`);
      await t.publish(c.topic, batch1);
      await c.received([ca], idsOf(batch1), 'batch 1 (A alone)');
      await sleep(100); // A's commit interval
      const b = peer.subscribe(c.topic, { group });
      c.scope.defer('close B', () => b.close({ timeoutMs: 200 }));
      const cb = c.consume(b, 'B');
      await c.assigned([a, b], 'B joined: A and B split the partitions', true);
      const batch2 = c.messages(100, 80, (i) => `key-${i}`);
      await t.publish(c.topic, batch2);
      await c.received([ca, cb], idsOf(batch2), 'batch 2');
      const ids2 = new Set(idsOf(batch2));
      assert.ok(ca.ids().some((id) => ids2.has(id)) && cb.ids().some((id) => ids2.has(id)), 'both members handle part of batch 2');
      assert.ok(changesA.flatMap((ch) => ch.revoked).length > 0, 'A was told partitions were revoked');
      await sleep(100);
      await a.close();
      await c.assigned([b], 'A left: B owns every partition');
      const batch3 = c.messages(200, 40, (i) => `key-${i}`);
      await t.publish(c.topic, batch3);
      await c.received([cb], idsOf(batch3), 'batch 3 (B alone)');
      await sleep(SETTLE_MS);
      assertDelivered([...idsOf(batch1), ...idsOf(batch2), ...idsOf(batch3)], [...ca.ids(), ...cb.ids()], { label: 'A ∪ B' });
      const inA = new Set(ca.ids());
      assert.deepEqual(cb.ids().filter((id) => inA.has(id)), [], 'acked messages delivered to both members');
    }),
  );

  it(
    'a member that leaves with unacked deliveries: the survivor gets exactly those; nothing is redelivered after it acked',
    withCtx(async (c) => {
      const t = await c.transport();
      const peer = await c.transport();
      const group = uniqueName('g');
      const a = c.subscribe(t, group);
      const ca = c.consume(a, 'A (never acks)', () => {});
      const b = c.subscribe(peer, group);
      const cb = c.consume(b, 'B');
      await c.assigned([a, b], 'A and B split the partitions', true);
      const msgs = c.messages(0, 60, (i) => `key-${i}`);
      await t.publish(c.topic, msgs);
      await c.received([ca, cb], idsOf(msgs), 'first deliveries');
      const held = ca.ids();
      assert.ok(held.length > 0, 'A holds some messages');
      const t0 = performance.now();
      await t.close({ timeoutMs: 100 }); // A's whole process goes away
      assert.ok(performance.now() - t0 < 1500, `closing A's transport took ${(performance.now() - t0).toFixed(0)} ms`);
      await a.closed;
      await c.received([cb], held, 'B receives what A held unacked', GROUP_MS);
      await sleep(SETTLE_MS);
      assertDelivered(idsOf(msgs), cb.ids(), { label: 'B: its own plus A’s unacked, each once' });
      await b.close();
      const again = c.subscribe(peer, group);
      const cc = c.consume(again, 'C');
      await c.assigned([again], 'C owns every partition');
      await sleep(500);
      assertDelivered([], cc.ids(), { label: 'after B acked everything, nothing is redelivered' });
    }),
  );

  it(
    'nack redelivers with attempt + 1 after the delay; reject and ack settle once; committed after a re-subscribe',
    withCtx(async (c) => {
      const t = await c.transport();
      const group = uniqueName('g');
      const m = c.message(0, 'nacked');
      const r = c.message(1, 'rejected');
      const after = c.message(2, 'rejected');
      const times: number[] = [];
      const sub = c.subscribe(t, group);
      const col = c.consume(sub, 'member', (d) => {
        const id = idOf(d);
        if (id === m.envelope.id) {
          times.push(performance.now());
          if (d.attempt === 1) {
            d.nack();
            d.ack();
          } else if (d.attempt === 2) d.nack({ delayMs: 150 });
          else {
            d.ack();
            d.nack();
            d.reject('late');
          }
        } else if (id === r.envelope.id) {
          d.reject('poison');
          d.nack();
        } else d.ack();
      });
      await c.assigned([sub], 'owner');
      await t.publish(c.topic, [m]);
      await t.publish(c.topic, [r, after]);
      await waitFor(() => col.of(m.envelope.id).length >= 3, { timeoutMs: 3000, what: () => `3 deliveries of the nacked message (${col.of(m.envelope.id).length})` });
      await c.received([col], [r.envelope.id, after.envelope.id], 'rejected and its successor');
      await sleep(300);
      assert.deepEqual(col.of(m.envelope.id).map((d) => d.attempt), [1, 2, 3]);
      assert.ok(times[2]! - times[1]! >= 140, `nack({ delayMs: 150 }) waited ${(times[2]! - times[1]!).toFixed(0)} ms`);
      assert.equal(col.of(r.envelope.id).length, 1);
      assert.equal(col.of(after.envelope.id).length, 1);
      await sub.close();
      const again = c.subscribe(t, group);
      const c2 = c.consume(again, 'again');
      await c.assigned([again], 're-subscribed member');
      await sleep(500);
      assertDelivered([], c2.ids(), { label: 'acked and rejected messages are committed' });
    }),
  );

  it(
    'resume from the committed position; close while unsettled is bounded and the message comes back',
    withCtx(async (c) => {
      const t = await c.transport();
      const group = uniqueName('g');
      let acking = true;
      const s1 = c.subscribe(t, group);
      const c1 = c.consume(s1, 'first', (d) => {
        if (acking) d.ack();
      });
      await c.assigned([s1], 'first member');
      const acked = c.messages(0, 30, (i) => `key-${i % 6}`);
      await t.publish(c.topic, acked);
      await c.received([c1], idsOf(acked), 'phase 1');
      acking = false;
      const unacked = c.messages(100, 20, (i) => `key-${i % 6}`);
      await t.publish(c.topic, unacked);
      await c.received([c1], idsOf(unacked), 'phase 2');
      const t0 = performance.now();
      await s1.close({ timeoutMs: 100 });
      const took = performance.now() - t0;
      assert.ok(took < 1000, `close({ timeoutMs: 100 }) with unsettled deliveries took ${took.toFixed(0)} ms`);
      await c1.done;
      const held = c1.deliveries[c1.deliveries.length - 1]!;
      held.ack(); // after close: a no-op, never a throw
      held.nack();
      await s1.close();
      const s2 = c.subscribe(t, group);
      const c2 = c.consume(s2, 'resumed');
      await c.received([c2], idsOf(unacked), 'after re-subscribe, the unacked ones', GROUP_MS);
      await sleep(SETTLE_MS);
      assertDelivered(idsOf(unacked), c2.ids(), { label: 'unacked again, acked never' });
    }),
  );

  it(
    'maxInFlight bounds unsettled deliveries; maxUncommittedPerPartition pauses a partition behind an unacked message',
    withCtx(async (c) => {
      const t = await c.transport();
      let autoAck = false;
      const sub = c.subscribe(t, uniqueName('g'), { maxInFlight: 4 });
      const col = c.consume(sub, 'bounded', (d) => {
        if (autoAck) d.ack();
      });
      await c.assigned([sub], 'owner');
      const msgs = c.messages(0, 20, (i) => `key-${i % 5}`);
      await t.publish(c.topic, msgs);
      await waitFor(() => col.deliveries.length >= 4, { what: () => `4 deliveries (got ${col.deliveries.length})` });
      await sleep(300);
      assert.equal(col.deliveries.length, 4, 'maxInFlight 4');
      for (const d of col.deliveries.slice(0, 4)) d.ack();
      await waitFor(() => col.deliveries.length >= 8, { what: () => `4 more once 4 were acked (got ${col.deliveries.length})` });
      await sleep(300);
      assert.equal(col.deliveries.length, 8, 'still bounded');
      autoAck = true;
      for (const d of col.deliveries.slice(4)) d.ack();
      await c.received([col], idsOf(msgs), 'the rest');

      // One key, so one partition: the first message stays unacked, later ones are acked.
      const sub2 = c.subscribe(t, uniqueName('g'), { maxUncommittedPerPartition: 5 });
      let first: Delivery | undefined;
      const col2 = c.consume(sub2, 'window', (d) => {
        if (d.envelope?.data && (d.envelope.data as { i: number }).i === 100) first = d;
        else d.ack();
      });
      const one = c.messages(100, 12, () => 'one-key');
      await t.publish(c.topic, one);
      await c.assigned([sub2], 'window owner');
      await waitFor(() => col2.ids().filter((id) => idsOf(one).includes(id)).length >= 5, { timeoutMs: GROUP_MS, what: 'the first 5 of the key' });
      await sleep(400);
      assert.equal(col2.ids().filter((id) => idsOf(one).includes(id)).length, 5, 'no more than 5 uncommitted on the partition while its first is unacked');
      first!.ack();
      await c.received([col2], idsOf(one), 'the rest once the window moved');
      await sleep(SETTLE_MS);
      assertDelivered(idsOf(one), col2.ids().filter((id) => idsOf(one).includes(id)), { label: 'window' });
    }),
  );

  it(
    'a partition paused for backpressure when it is revoked is fetched again when it comes back',
    withCtx(async (c) => {
      const [ta, tb] = [await c.transport(), await c.transport()];
      const group = uniqueName('g');
      let acking = false;
      const a = c.subscribe(ta, group, { maxInFlight: 1 });
      const ca = c.consume(a, 'A', (d) => {
        if (acking) d.ack();
      });
      await c.assigned([a], 'A alone');
      // Two per partition: A takes one and pauses every partition whose batch comes after it.
      const keys = Array.from({ length: TEST_PARTITIONS }, (_, p) => keyOn(p, 'first'));
      await ta.publish(c.topic, c.messages(0, 2 * TEST_PARTITIONS, (i) => keys[i % TEST_PARTITIONS]));
      await waitFor(() => ca.deliveries.length >= 1, { timeoutMs: 5000, what: 'A’s first delivery' });
      await sleep(500);
      const b = c.subscribe(tb, group);
      c.consume(b, 'B');
      await c.assigned([a, b], 'A and B split the partitions', true);
      acking = true;
      for (const d of ca.deliveries) d.ack();
      await b.close();
      await c.assigned([a], 'A alone again');
      const fresh = Array.from({ length: TEST_PARTITIONS }, (_, p) => c.message(100 + p, keyOn(p, 'fresh')));
      await ta.publish(c.topic, fresh);
      await c.received([ca], idsOf(fresh), 'A reads every partition again (none left paused)');
    }),
  );

  it(
    'payload limit: exactly maxPayloadBytes accepted, one more refused before anything of the batch is sent',
    withCtx(async (c) => {
      const max = 3000;
      const t = await c.transport({ maxPayloadBytes: max });
      assert.equal(t.capabilities.maxPayloadBytes, max);
      const sized = (id: string, bytes: number) => {
        const base = { type: 'int.sized', source: 'herald-kafka/int', id, time: new Date(Date.UTC(2024, 0, 1)), partitionkey: 'sized' };
        const overhead = encodedSize(encodeEnvelope(createEnvelope({ ...base, data: { pad: '' } })));
        return createEnvelope({ ...base, data: { pad: 'x'.repeat(bytes - overhead) } });
      };
      const sub = c.subscribe(t, uniqueName('g'));
      const col = c.consume(sub, 'member');
      const exact = sized(`${c.run}-exact`, max);
      assert.equal(encodedSize(encodeEnvelope(exact)), max);
      await t.publish(c.topic, [{ envelope: exact, key: 'sized' }]);
      await assert.rejects(t.publish(c.topic, [{ envelope: sized(`${c.run}-over`, max + 1), key: 'sized' }]), (e) => isHeraldError(e, 'HERALD_ERR_PAYLOAD_TOO_LARGE'));
      await assert.rejects(t.publish(c.topic, [c.message(1, 'sized'), { envelope: sized(`${c.run}-over2`, max + 1), key: 'sized' }]), (e) => isHeraldError(e, 'HERALD_ERR_PAYLOAD_TOO_LARGE'));
      const marker = c.message(2, 'sized');
      await t.publish(c.topic, [marker]);
      await c.received([col], [exact.id, marker.envelope.id], 'exact and marker', GROUP_MS);
      await sleep(SETTLE_MS);
      assertDelivered([exact.id, marker.envelope.id], col.ids(), { label: 'nothing of the refused batches was sent' });
      assert.deepStrictEqual(col.of(exact.id)[0]!.envelope, exact);
    }),
  );

  it(
    'ensureTopic: existing counts reported, a new topic gets the default, bad names refused; the mock cannot choose a count',
    withCtx(async (c) => {
      const t = await c.transport();
      assert.deepEqual(await t.ensureTopic(c.topic), { topic: c.topic, partitions: TEST_PARTITIONS });
      assert.deepEqual(await t.ensureTopic(c.topic, { partitions: TEST_PARTITIONS }), { topic: c.topic, partitions: TEST_PARTITIONS });
      await assert.rejects(t.ensureTopic(c.topic, { partitions: TEST_PARTITIONS + 1 }), (e) => isHeraldError(e, 'HERALD_ERR_TOPIC_MISMATCH'));
      await assert.rejects(t.ensureTopic('bad topic name!'), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
      const other = `${c.topic}-3`;
      if (externalBrokers) assert.deepEqual(await t.ensureTopic(other, { partitions: 3 }), { topic: other, partitions: 3 });
      else await assert.rejects(t.ensureTopic(other, { partitions: 3 }), (e) => isHeraldError(e, 'HERALD_ERR_TOPIC_MISMATCH') && /CreateTopics/.test((e as Error).message));
    }),
  );

  it(
    'records of other producers: a structured-mode event is read, an unreadable record is a CORRUPT_RECORD delivery that does not stall its partition',
    withCtx(async (c) => {
      const t = await c.transport();
      await t.ensureTopic(c.topic);
      const raw = new kafkajs.Kafka({ clientId: 'raw', brokers: [...(await brokers())], logLevel: kafkajs.logLevel.NOTHING }).producer({ createPartitioner: kafkajs.Partitioners.DefaultPartitioner });
      await raw.connect();
      c.scope.defer('disconnect the raw producer', () => raw.disconnect());
      const structured = createEnvelope({ type: 'int.structured', source: 'other', id: `${c.run}-structured`, data: { ok: 1 } });
      await raw.send({
        topic: c.topic,
        messages: [
          { partition: 0, key: 'k', value: encodeEnvelope(structured), headers: { 'content-type': 'application/cloudevents+json' } },
          { partition: 0, key: 'k', value: 'not an event' },
        ],
      });
      const after = c.message(9, 'k');
      await t.publish(c.topic, [{ ...after }]);
      const sub = c.subscribe(t, uniqueName('g'));
      const col = c.consume(sub, 'member');
      await waitFor(() => col.deliveries.length >= 3, { timeoutMs: GROUP_MS, what: () => `3 deliveries (got ${col.deliveries.length})` });
      const bad = col.deliveries.find((d) => d.envelope === null);
      assert.ok(bad, 'the unreadable record is delivered');
      assert.ok(isHeraldError(bad.decodeError, 'HERALD_ERR_CORRUPT_RECORD'), `decodeError ${String(bad.decodeError)}`);
      assert.match(bad.raw, /not an event|value_base64/);
      assert.deepStrictEqual(col.of(structured.id)[0]!.envelope, structured);
      assert.equal(col.of(after.envelope.id).length, 1);
    }),
  );

  it(
    'a closed transport refuses publish and subscribe with HERALD_ERR_CLOSED; its subscriptions end',
    withCtx(async (c) => {
      const t = await c.transport();
      const sub = c.subscribe(t, uniqueName('g'));
      const col = c.consume(sub, 'member');
      await c.assigned([sub], 'owner');
      await t.close({ timeoutMs: 500 });
      await sub.closed;
      await col.done;
      await t.close();
      await assert.rejects(t.publish(c.topic, [c.message(0, 'k')]), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
      assert.throws(() => t.subscribe(c.topic, { group: 'g' }), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
    }),
  );

  it(
    'consumer lag: two groups on one topic, delivered-but-unacked messages count, another client reads it, a read moves nothing',
    withCtx(async (c) => {
      const t = await c.transport();
      const observer = await c.transport(); // another client (process) that never subscribes
      const acked = uniqueName('g');
      const holding = uniqueName('g');
      const ca = c.consume(c.subscribe(t, acked), 'acked');
      const held: Delivery[] = [];
      const ch = c.consume(c.subscribe(t, holding), 'holding', (d) => void held.push(d)); // never settles on its own
      await c.assigned([ca.sub], 'the acking group owns every partition');
      await c.assigned([ch.sub], 'the holding group owns every partition');
      const p0 = keyOn(0, 'lag');
      const p1 = keyOn(1, 'lag');
      const msgs = [...c.messages(0, 5, () => p0), ...c.messages(10, 3, () => p1)];
      const before = Date.now();
      await t.publish(c.topic, msgs);
      const after = Date.now();
      await c.received([ca], idsOf(msgs), 'the acking group');
      await c.received([ch], idsOf(msgs), 'the holding group');
      const show = (ls: readonly { partition: number; messages: number; committed: string; head: string }[]): string =>
        ls.map((l) => `p${l.partition} ${l.messages} (head ${l.head}, committed ${l.committed})`).join('; ');

      let last: Awaited<ReturnType<KafkaTransport['lag']>> = [];
      await waitFor(
        async () => (last = await t.lag({ group: acked, topic: c.topic })).length === TEST_PARTITIONS && last.every((l) => l.messages === 0),
        { timeoutMs: 5000, what: () => `the acking group's lag should be 0 on ${TEST_PARTITIONS} partitions: ${show(last)}` },
      );
      assert.deepEqual(last.map((l) => [l.partition, l.head, l.committed, l.oldestUnhandledAt]), [
        [0, '4', '4', undefined],
        [1, '2', '2', undefined],
        ...Array.from({ length: TEST_PARTITIONS - 2 }, (_, i) => [i + 2, '-1', '-1', undefined]),
      ]);

      // Delivered to the holding group's member, none acked: all of it is lag, dated within the publish.
      const holdingLag = await t.lag({ group: holding, topic: c.topic });
      assert.deepEqual(holdingLag.map((l) => [l.partition, l.messages, l.head, l.committed]), [
        [0, 5, '4', '-1'],
        [1, 3, '2', '-1'],
        ...Array.from({ length: TEST_PARTITIONS - 2 }, (_, i) => [i + 2, 0, '-1', '-1']),
      ], show(holdingLag));
      for (const l of holdingLag.slice(0, 2)) {
        assert.ok(l.oldestUnhandledAt! >= before - 2000 && l.oldestUnhandledAt! <= after + 2000, `p${l.partition}: appended at ${l.oldestUnhandledAt}, published ${before}–${after}`);
      }
      for (const l of holdingLag.slice(2)) assert.equal(l.oldestUnhandledAt, undefined, `p${l.partition} is empty: no age`);

      // Both groups, with no filter; the topic filter alone too.
      const all = await t.lag();
      for (const g of [acked, holding]) assert.equal(all.filter((l) => l.group === g && l.topic === c.topic).length, TEST_PARTITIONS, `lag() lists ${g}`);
      const byTopic = await t.lag({ topic: c.topic });
      assert.deepEqual([...new Set(byTopic.map((l) => l.group))].sort(), [acked, holding].sort(), 'lag({ topic }) lists both groups on it');
      assert.ok(byTopic.every((l) => l.topic === c.topic));

      // A read moves nothing: no rebalance, no redelivery, the member's deliveries stay as they were.
      await Promise.all(Array.from({ length: 5 }, () => Promise.all([t.lag(), observer.lag({ group: holding, topic: c.topic })])));
      await sleep(1000);
      assert.equal(held.length, msgs.length, 'no redelivery to the holding member after lag reads');
      assert.ok(held.every((d) => d.attempt === 1 && !d.revoked.aborted), 'the holding member kept its partitions');
      assert.deepEqual(ch.sub.assignment().length, TEST_PARTITIONS);

      // Acking the first two on p0: the committed position moves, the rest is still lag; another client sees it by the commits.
      for (const d of held.filter((x) => x.partition === 0).slice(0, 2)) d.ack();
      let seen: Awaited<ReturnType<KafkaTransport['lag']>> = [];
      await waitFor(async () => (seen = await observer.lag({ group: holding, topic: c.topic })).find((l) => l.partition === 0)?.committed === '1', {
        timeoutMs: 5000,
        what: () => `another client should see the holding group's commit on p0: ${show(seen)}`,
      });
      assert.deepEqual(seen.map((l) => [l.partition, l.messages, l.committed]), [
        [0, 3, '1'],
        [1, 3, '-1'],
        ...Array.from({ length: TEST_PARTITIONS - 2 }, (_, i) => [i + 2, 0, '-1']),
      ], show(seen));
      const p0Before = holdingLag[0]!.oldestUnhandledAt!;
      assert.ok(seen[0]!.oldestUnhandledAt! >= p0Before, 'the oldest unhandled message is now a later one');
      assert.deepEqual(await observer.lag({ group: uniqueName('g'), topic: c.topic }), [], 'a group that never subscribed: no entries');
      const ghost = uniqueName('t');
      assert.deepEqual(await observer.lag({ group: holding, topic: ghost }), [], 'a topic that does not exist: no entries');
      const admin = t.client.admin();
      await admin.connect();
      try {
        assert.ok(!(await admin.listTopics()).includes(ghost), 'a lag read creates no topic');
      } finally {
        await admin.disconnect();
      }

      await observer.close();
      await assert.rejects(observer.lag(), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'), 'lag() after close()');
    }),
  );

  it('consumer lag: an unreachable broker rejects with HERALD_ERR_STORAGE naming the cause', async () => {
    const t = createKafkaTransport({ brokers: ['127.0.0.1:1'], retry: { retries: 0, initialRetryTime: 10 }, kafka: { connectionTimeout: 300 } });
    try {
      await assert.rejects(t.lag({ group: 'g' }), (e) => isHeraldError(e, 'HERALD_ERR_STORAGE') && /consumer lag could not be read/.test((e as Error).message) && (e as Error).cause !== undefined);
    } finally {
      await t.close();
    }
  });

  it(
    'router on Kafka: per-key order under parallelism, a dead letter after maxAttempts with the raw envelope kept',
    withCtx(async (c) => {
      const t = await c.transport();
      const schema: StandardSchemaV1<unknown, { key: string; seq: number }> = {
        '~standard': { version: 1, vendor: 'herald-kafka-int', validate: (v: unknown) => ({ value: v as { key: string; seq: number } }) },
      };
      const Item = defineEvent('int.item', schema, { version: 1 });
      const dl = new MemoryDeadLetterStore();
      const group = uniqueName('g');
      const handled: Array<{ key: string; id: string; seq: number }> = [];
      let sameKeyOverlap = 0;
      let crossKeyOverlap = 0;
      const active = new Map<string, number>();
      const consumer = createConsumer({ transport: t, group, deadLetters: dl, concurrency: 8, retry: { initialDelayMs: 5, maxDelayMs: 20, jitter: 0 } });
      c.scope.defer('close the consumer', () => consumer.close({ timeoutMs: 500 }));
      consumer.handle(
        Item,
        async (data, ctx) => {
          if (data.key === 'poison' && data.seq === 0) throw new Error('Boom: poison #0');
          if ((active.get(data.key) ?? 0) > 0) sameKeyOverlap++;
          if ([...active].some(([k, n]) => k !== data.key && n > 0)) crossKeyOverlap++;
          active.set(data.key, (active.get(data.key) ?? 0) + 1);
          await sleep(Math.floor(Math.random() * 3));
          active.set(data.key, active.get(data.key)! - 1);
          handled.push({ key: data.key, seq: data.seq, id: ctx.envelope.id });
        },
        { topic: c.topic, retry: { maxAttempts: 3, initialDelayMs: 5, jitter: 0 } },
      );
      await consumer.start();
      await waitFor(() => consumer.assignment(c.topic).length === TEST_PARTITIONS, { timeoutMs: GROUP_MS, what: 'the consumer owns every partition' });
      const publisher = createPublisher({ transport: t, source: 'herald-kafka/int' });
      const keys = Array.from({ length: 8 }, (_, i) => `key-${i}`);
      await Promise.all([...keys, 'poison'].map(async (key) => {
        for (let seq = 0; seq < 25; seq++) await publisher.publish(Item, { key, seq }, { key, topic: c.topic, id: `${c.run}-${key}-${seq}` });
      }));
      await waitFor(async () => handled.length >= 8 * 25 + 24 && (await dl.count({ group })) === 1, { timeoutMs: 10_000, what: () => `handled ${handled.length}/224 and one dead letter` });
      await sleep(SETTLE_MS);
      const expected = new Map([...keys, 'poison'].map((k) => [k, Array.from({ length: 25 }, (_, s) => `${c.run}-${k}-${s}`).filter((id) => id !== `${c.run}-poison-0`)]));
      assertOrderPerKey(expected, handled.map((h) => ({ key: h.key, id: h.id })), { label: 'router per-key order' });
      assert.equal(sameKeyOverlap, 0, 'one handler per key at a time');
      assert.ok(crossKeyOverlap > 0, 'keys ran in parallel');
      const [entry] = (await dl.list({ group }, { limit: 10 })).entries;
      assert.equal(entry!.attempts, 3);
      assert.equal(entry!.eventId, `${c.run}-poison-0`);
      assert.deepStrictEqual(decodeEnvelope(entry!.raw), entry!.envelope, 'the dead letter keeps the JSON structured form');
    }),
  );
});
