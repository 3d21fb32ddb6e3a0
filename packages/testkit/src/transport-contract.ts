/**
 * The universal Transport contract (after Watermill's `pubsub/tests/test_pubsub.go`): every
 * transport passes it unmodified before it is considered ready.
 *
 *   describeTransportContract('sqlite', {
 *     create: async () => createSqliteTransport({ path: tmpFile(), leaseMs: 600 }),
 *     createInGroup: async (first) => createSqliteTransport({ path: pathOf(first), leaseMs: 600 }),
 *     deadLetters: (transport) => sqliteDeadLetters(pathOf(transport)),
 *   });
 *
 * - `create()` returns a transport on a fresh, isolated backend (or a shared server: every
 *   scenario uses its own random topic and group names).
 * - `createInGroup(first)` returns ANOTHER transport instance on the same backend as `first`
 *   (another connection, another process's view) so two members can form one group. A
 *   transport whose group members can only live in one instance returns `first`: members are
 *   then two `subscribe()` calls on it. Omitted: `first` is used.
 * - `restartBroker()` restarts the server; the reconnect scenario is skipped without it.
 * - `deadLetters(transport)` gives the DeadLetterStore the router scenarios use with that
 *   transport (default: a `MemoryDeadLetterStore`).
 *
 * Every scenario is an exported function `(t, options)` (so a backend can run one alone), owns
 * its topic (`t-<uuid>`) and groups, skips with the missing capability as the reason, fails
 * naming MISSING and EXTRA message ids, waits at most 2 s for anything (waits that depend on a
 * group forming or rebalancing: at most `groupWaitMs`, 2 s by default), and closes all it
 * opened, passed or failed. `CONTRACT_STRESS=n` repeats the whole suite n times.
 *
 * Backends whose group membership moves on timers (leases, heartbeats, session timeouts) should
 * configure them in `create()` so partitions move within ~1 s (e.g. leaseMs ≤ 1000); a broker
 * whose coordinator itself holds joins longer (librdkafka's mock cluster) declares `groupWaitMs`.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type CloudEvent, createEnvelope, decodeEnvelope, encodeEnvelope, encodedSize, isHeraldError, isLagSource, type PartitionChange, type PartitionLag, partitionForKey, type PublishReceipt, type Subscription } from '@herald/core';
import { assertDelivered, assertOrderPerKey, sleep, stressCount, waitFor } from './helpers.ts';
import { routerScenarios } from './router-scenarios.ts';
import { idOf, idsOf, MESSAGE_TYPE, preview, rejectsWith, SETTLE_MS, type TransportContractOptions, type TransportScenario, within, withTransport } from './transport-harness.ts';

export type { TransportContractOptions, TransportScenario } from './transport-harness.ts';
export { routerScenarios } from './router-scenarios.ts';

function numericPositions(positions: readonly string[]): bigint[] | undefined {
  return positions.every((p) => /^\d+$/.test(p)) ? positions.map((p) => BigInt(p)) : undefined;
}

// ── transport-level scenarios ────────────────────────────────────────────

export const publishSubscribe: TransportScenario = (t, options) =>
  withTransport(t, options, [], async (h) => {
    const sub = h.subscribe(h.transport, { group: h.group() });
    const c = h.consume(sub, 'member');
    const P = await h.partitions();
    await h.waitAssigned([sub], P, 'a single member owns every partition');
    const msgs = Array.from({ length: 20 }, (_, i) => h.message(i, i % 7 === 6 ? undefined : `key-${i % 4}`, i % 2 === 0 ? 'option' : 'envelope'));
    for (const m of msgs) await h.transport.publish(h.topic, [m]);
    await h.waitIds([c], idsOf(msgs), 'publish/subscribe');
    await sleep(SETTLE_MS);
    assertDelivered(idsOf(msgs), c.ids(), { label: 'publish/subscribe' });
    const byId = new Map(msgs.map((m) => [m.envelope.id, m]));
    for (const d of c.deliveries) {
      const m = byId.get(idOf(d))!;
      const id = m.envelope.id;
      assert.deepStrictEqual(d.envelope, m.envelope, `${id}: the envelope arrives unchanged (attributes, extensions, data)`);
      assert.equal(d.decodeError, undefined, `${id}: no decode error`);
      assert.deepStrictEqual(decodeEnvelope(d.raw), m.envelope, `${id}: raw is the JSON structured format of the envelope`);
      assert.equal(d.topic, h.topic, `${id}: topic`);
      assert.equal(d.key, m.key ?? m.envelope.partitionkey, `${id}: the key (publish option, else envelope partitionkey; none when neither)`);
      assert.equal(d.attempt, 1, `${id}: first delivery is attempt 1`);
      assert.ok(Number.isInteger(d.partition) && d.partition >= 0 && d.partition < P, `${id}: partition ${d.partition} within 0..${P - 1}`);
      assert.ok(typeof d.position === 'string' && d.position.length > 0, `${id}: position is a non-empty string`);
      assert.equal(d.revoked.aborted, false, `${id}: revoked signal not aborted`);
    }
  });

export const batchPublishReceipts: TransportScenario = (t, options) =>
  withTransport(t, options, [], async (h) => {
    const sub = h.subscribe(h.transport, { group: h.group() });
    const c = h.consume(sub, 'member');
    const P = await h.partitions();
    await h.waitAssigned([sub], P, 'a single member owns every partition');
    assert.deepEqual(await h.transport.publish(h.topic, []), [], 'an empty batch publishes nothing');
    const msgs = h.messages(0, 60, (i) => (i < 50 ? `key-${i % 10}` : undefined));
    const receipts = await h.transport.publish(h.topic, msgs);
    assert.equal(receipts.length, msgs.length, 'one receipt per message');
    const seen = new Set<string>();
    const byPartition = new Map<number, string[]>();
    receipts.forEach((r: PublishReceipt, i) => {
      const m = msgs[i]!;
      assert.equal(r.topic, h.topic, `receipt ${i}: topic`);
      assert.ok(Number.isInteger(r.partition) && r.partition >= 0 && r.partition < P, `receipt ${i}: partition ${r.partition} within 0..${P - 1}`);
      assert.ok(typeof r.position === 'string' && r.position.length > 0, `receipt ${i}: position is a non-empty string`);
      if (m.key !== undefined) assert.equal(r.partition, partitionForKey(m.key, P), `receipt ${i}: key "${m.key}" lands where the core partitioner (murmur2) puts it`);
      const pp = `${r.partition}@${r.position}`;
      assert.ok(!seen.has(pp), `receipt ${i}: (partition, position) ${pp} is unique`);
      seen.add(pp);
      byPartition.set(r.partition, [...(byPartition.get(r.partition) ?? []), r.position]);
    });
    if (h.caps.ackModel === 'offset') {
      for (const [p, positions] of byPartition) {
        const n = numericPositions(positions);
        if (n) for (let i = 1; i < n.length; i++) assert.ok(n[i]! > n[i - 1]!, `partition ${p}: receipts in input order have growing positions (${positions.join(', ')})`);
      }
    }
    await h.waitIds([c], idsOf(msgs), 'batch publish');
    await sleep(SETTLE_MS);
    assertDelivered(idsOf(msgs), c.ids(), { label: 'batch publish' });
    const receiptOf = new Map(msgs.map((m, i) => [m.envelope.id, receipts[i]!]));
    for (const d of c.deliveries) {
      const r = receiptOf.get(idOf(d))!;
      assert.equal(d.partition, r.partition, `${idOf(d)}: delivered on the partition its receipt named`);
      if (h.caps.ackModel === 'offset') assert.equal(d.position, r.position, `${idOf(d)}: delivered at the position its receipt named`);
    }
  });

export const orderPerKey: TransportScenario = (t, options) =>
  withTransport(t, options, [], async (h) => {
    const sub = h.subscribe(h.transport, { group: h.group() });
    const c = h.consume(sub, 'member');
    const P = await h.partitions();
    await h.waitAssigned([sub], P, 'a single member owns every partition');
    const msgs = h.messages(0, 300, (i) => `key-${(i * 7) % 10}`);
    const chunks = [1, 7, 1, 25, 3, 50, 2, 11];
    for (let i = 0, k = 0; i < msgs.length; k++) {
      const n = chunks[k % chunks.length]!;
      await h.transport.publish(h.topic, msgs.slice(i, i + n));
      i += n;
    }
    await h.waitIds([c], idsOf(msgs), 'order per key');
    await sleep(SETTLE_MS);
    assertDelivered(idsOf(msgs), c.ids(), { label: 'order per key' });
    const expected = new Map<string, string[]>();
    for (const m of msgs) expected.set(m.key!, [...(expected.get(m.key!) ?? []), m.envelope.id]);
    assertOrderPerKey(
      expected,
      c.deliveries.map((d) => ({ key: d.key, id: idOf(d) })),
      { label: 'order per key' },
    );
    if (h.caps.ackModel === 'offset') {
      const byPartition = new Map<number, string[]>();
      for (const d of c.deliveries) byPartition.set(d.partition, [...(byPartition.get(d.partition) ?? []), d.position]);
      for (const [p, positions] of byPartition) {
        const n = numericPositions(positions);
        if (n) for (let i = 1; i < n.length; i++) assert.ok(n[i]! > n[i - 1]!, `partition ${p}: deliveries come in log order (${positions[i - 1]} then ${positions[i]})`);
      }
    }
  });

export const everyGroupGetsEveryMessage: TransportScenario = (t, options) =>
  withTransport(t, options, ['consumerGroups'], async (h) => {
    const peer = await h.peer();
    const s1 = h.subscribe(h.transport, { group: h.group() });
    const s2 = h.subscribe(peer, { group: h.group() });
    const c1 = h.consume(s1, 'group-1');
    const c2 = h.consume(s2, 'group-2');
    const P = await h.partitions();
    await h.waitAssigned([s1], P, 'group 1 owns every partition');
    await h.waitAssigned([s2], P, 'group 2 owns every partition');
    const msgs = h.messages(0, 50, (i) => `key-${i % 9}`);
    await h.transport.publish(h.topic, msgs);
    await h.waitIds([c1], idsOf(msgs), 'group 1');
    await h.waitIds([c2], idsOf(msgs), 'group 2');
    await sleep(SETTLE_MS);
    assertDelivered(idsOf(msgs), c1.ids(), { label: 'group 1 gets every message' });
    assertDelivered(idsOf(msgs), c2.ids(), { label: 'group 2 gets every message' });
  });

export const consumerGroupSplitsAndRebalances: TransportScenario = (t, options) =>
  withTransport(t, options, ['consumerGroups'], async (h) => {
    const peer = await h.peer();
    const group = h.group();
    const changesA: PartitionChange[] = [];
    const a = h.subscribe(h.transport, { group, onPartitions: (ch) => changesA.push(ch) });
    const ca = h.consume(a, 'A');
    const P = await h.partitions();
    await h.waitAssigned([a], P, 'member A alone owns every partition');
    const batch1 = h.messages(0, 40, (i) => `key-${i}`);
    await h.transport.publish(h.topic, batch1);
    await h.waitIds([ca], idsOf(batch1), 'batch 1 (A alone)');

    const b = h.subscribe(peer, { group });
    const cb = h.consume(b, 'B');
    await h.waitAssigned([a, b], P, 'B joined: A and B split the partitions', P >= 2);
    const batch2 = h.messages(100, 80, (i) => `key-${i}`);
    await h.transport.publish(h.topic, batch2);
    await h.waitIds([ca, cb], idsOf(batch2), 'batch 2 (A and B)');
    if (P >= 2) {
      const ids2 = new Set(idsOf(batch2));
      assert.ok(ca.ids().some((id) => ids2.has(id)), `A handled none of batch 2: work is not split (A owns [${a.assignment().join(',')}])`);
      assert.ok(cb.ids().some((id) => ids2.has(id)), `B handled none of batch 2: work is not split (B owns [${b.assignment().join(',')}])`);
      const revokedFromA = changesA.flatMap((ch) => ch.revoked);
      assert.ok(revokedFromA.length > 0, 'A was told (onPartitions) that partitions were revoked when B joined');
      const assignedToA = new Set(changesA.flatMap((ch) => ch.assigned));
      for (let p = 0; p < P; p++) assert.ok(assignedToA.has(p), `A was told (onPartitions) it was assigned partition ${p}`);
    }

    await a.close();
    await h.waitAssigned([b], P, 'A left: B owns every partition');
    const batch3 = h.messages(200, 40, (i) => `key-${i}`);
    await h.transport.publish(h.topic, batch3);
    await h.waitIds([cb], idsOf(batch3), 'batch 3 (B alone)');
    await sleep(SETTLE_MS);
    const all = [...idsOf(batch1), ...idsOf(batch2), ...idsOf(batch3)];
    assertDelivered(all, [...ca.ids(), ...cb.ids()], { label: 'A ∪ B' });
    const inA = new Set(ca.ids());
    const both = cb.ids().filter((id) => inA.has(id));
    assert.deepEqual(both, [], `acked messages delivered to both members: ${preview(both)}`);
  });

export const redeliveryOnNack: TransportScenario = (t, options) =>
  withTransport(t, options, [], async (h) => {
    const group = h.group();
    const m = h.message(0, 'nacked');
    const r = h.message(1, 'rejected');
    const after = h.message(2, 'rejected');
    const times: number[] = [];
    const sub = h.subscribe(h.transport, { group });
    const c = h.consume(sub, 'member', (d) => {
      const id = idOf(d);
      if (id === m.envelope.id) {
        times.push(performance.now());
        if (d.attempt === 1) {
          d.nack();
          d.ack(); // the first settling verb wins: this is a no-op
        } else if (d.attempt === 2) {
          d.nack({ delayMs: 150 });
        } else {
          d.ack();
          d.ack();
          d.nack();
          d.reject('late');
        }
      } else if (id === r.envelope.id) {
        d.reject('poison');
        d.nack(); // no-op
      } else d.ack();
    });
    const P = await h.partitions();
    await h.waitAssigned([sub], P, 'a single member owns every partition');
    await h.transport.publish(h.topic, [m]);
    await h.transport.publish(h.topic, [r, after]);
    await waitFor(() => c.of(m.envelope.id).length >= 3, {
      what: () => `three deliveries of the nacked message (got attempts [${c.of(m.envelope.id).map((d) => d.attempt).join(', ')}])`,
    });
    await h.waitIds([c], [r.envelope.id, after.envelope.id], 'rejected message and its successor');
    await sleep(300);
    assert.deepEqual(c.of(m.envelope.id).map((d) => d.attempt), [1, 2, 3], 'nack redelivers with attempt + 1; after ack (and no-op verbs) nothing more');
    const waited = times[2]! - times[1]!;
    assert.ok(waited >= 140, `nack({ delayMs: 150 }) redelivered after ${waited.toFixed(0)} ms`);
    assert.equal(c.of(r.envelope.id).length, 1, 'a rejected message is not redelivered');
    assert.equal(c.of(after.envelope.id).length, 1, 'the message after a rejected one is delivered once');
    await sub.close();
    const again = h.subscribe(h.transport, { group });
    const c2 = h.consume(again, 'member again');
    await h.waitAssigned([again], P, 'the re-subscribed member owns every partition');
    await sleep(300);
    assertDelivered([], c2.ids(), { label: 'acked and rejected messages are not redelivered to the group after a re-subscribe' });
  });

export const redeliveryAfterMemberLost: TransportScenario = (t, options) =>
  withTransport(t, options, ['consumerGroups'], async (h) => {
    const peer = await h.peer();
    const group = h.group();
    const a = h.subscribe(h.transport, { group });
    const ca = h.consume(a, 'A (never acks)', () => {});
    const b = h.subscribe(peer, { group });
    const cb = h.consume(b, 'B');
    const P = await h.partitions();
    await h.waitAssigned([a, b], P, 'A and B split the partitions', P >= 2);
    const msgs = h.messages(0, 60, (i) => `key-${i}`);
    await h.transport.publish(h.topic, msgs);
    await h.waitIds([ca, cb], idsOf(msgs), 'first deliveries');
    const held = ca.ids();
    if (P >= 2) assert.ok(held.length > 0, 'A received some messages (otherwise the scenario proves nothing)');
    const t0 = performance.now();
    await within(a.close({ timeoutMs: 100 }), 1500, 'A.close({ timeoutMs: 100 }) with unacked deliveries');
    const took = performance.now() - t0;
    assert.ok(took < 1000, `A.close({ timeoutMs: 100 }) took ${took.toFixed(0)} ms`);
    await h.waitIds([cb], held, 'B receives what A held unacked when it left', h.groupWaitMs);
    await h.waitAssigned([b], P, 'B owns every partition');
    await sleep(SETTLE_MS);
    assertDelivered(idsOf(msgs), cb.ids(), { label: 'B: its own messages plus those A left unacked, each once' });
    await b.close();
    const c = h.subscribe(h.transport, { group });
    const cc = h.consume(c, 'C');
    await h.waitAssigned([c], P, 'C owns every partition');
    await sleep(300);
    assertDelivered([], cc.ids(), { label: 'after B acked everything, nothing is redelivered' });
  });

export const redeliveryAfterMemberTransportClosed: TransportScenario = (t, options) =>
  withTransport(t, options, ['consumerGroups', 'multiProcess'], async (h) => {
    const peer = await h.peer();
    if (peer === h.transport) {
      t.skip('needs createInGroup to return another transport instance (multiProcess is declared)');
      return;
    }
    const group = h.group();
    const a = h.subscribe(h.transport, { group });
    const ca = h.consume(a, 'A (never acks)', () => {});
    const b = h.subscribe(peer, { group });
    const cb = h.consume(b, 'B (other instance)');
    const P = await h.partitions();
    await h.waitAssigned([a, b], P, 'members on two transport instances split the partitions', P >= 2);
    const msgs = h.messages(0, 60, (i) => `key-${i}`);
    await peer.publish(h.topic, msgs);
    await h.waitIds([ca, cb], idsOf(msgs), 'first deliveries');
    const held = ca.ids();
    if (P >= 2) assert.ok(held.length > 0, 'A received some messages (otherwise the scenario proves nothing)');
    // A's whole process goes away: its transport closes with deliveries unsettled.
    await within(h.transport.close({ timeoutMs: 100 }), 1500, 'closing A’s transport with unacked deliveries');
    await within(a.closed, 1000, 'A’s subscription closed with its transport');
    await h.waitIds([cb], held, 'the other instance receives what A’s process held unacked', h.groupWaitMs);
    await h.waitAssigned([b], P, 'B owns every partition');
    await sleep(SETTLE_MS);
    assertDelivered(idsOf(msgs), cb.ids(), { label: 'B: its own messages plus those A’s process left unacked, each once' });
  });

export const newGroupReplaysFromStart: TransportScenario = (t, options) =>
  withTransport(t, options, ['replay'], async (h) => {
    const P = await h.partitions();
    const history = h.messages(0, 30, (i) => `key-${i % 5}`);
    await h.transport.publish(h.topic, history); // before any group exists
    const s1 = h.subscribe(h.transport, { group: h.group() });
    const c1 = h.consume(s1, 'group 1');
    await h.waitIds([c1], idsOf(history), 'a new group reads retained history', h.groupWaitMs);
    const s2 = h.subscribe(h.transport, { group: h.group() });
    const c2 = h.consume(s2, 'group 2');
    await h.waitIds([c2], idsOf(history), 'a second new group reads it from the start too', h.groupWaitMs);
    const s3 = h.subscribe(h.transport, { group: h.group(), startFrom: 'latest' });
    const c3 = h.consume(s3, 'group 3 (latest)');
    await h.waitAssigned([s3], P, "the 'latest' group owns every partition");
    const fresh = h.messages(100, 10, (i) => `key-${i % 5}`);
    await h.transport.publish(h.topic, fresh);
    await h.waitIds([c1], idsOf(fresh), 'group 1, new messages');
    await h.waitIds([c2], idsOf(fresh), 'group 2, new messages');
    await h.waitIds([c3], idsOf(fresh), 'group 3, new messages');
    await sleep(SETTLE_MS);
    const all = [...idsOf(history), ...idsOf(fresh)];
    assertDelivered(all, c1.ids(), { label: 'group 1' });
    assertDelivered(all, c2.ids(), { label: 'group 2' });
    assertDelivered(idsOf(fresh), c3.ids(), { label: "startFrom 'latest': only what was published after it joined" });
  });

export const concurrentPublishers: TransportScenario = (t, options) =>
  withTransport(t, options, [], async (h) => {
    const sub = h.subscribe(h.transport, { group: h.group() });
    const c = h.consume(sub, 'member');
    const P = await h.partitions();
    await h.waitAssigned([sub], P, 'a single member owns every partition');
    const peer = await h.peer();
    const publishers = 8;
    const each = 50;
    const expected = new Map<string, string[]>();
    const all: string[] = [];
    await Promise.all(
      Array.from({ length: publishers }, async (_, p) => {
        const tr = p % 2 === 0 ? h.transport : peer;
        const key = `publisher-${p}`;
        for (let j = 0; j < each; j++) {
          const m = h.message(p * 1000 + j, key);
          expected.set(key, [...(expected.get(key) ?? []), m.envelope.id]);
          all.push(m.envelope.id);
          await tr.publish(h.topic, [m]);
        }
      }),
    );
    await h.waitIds([c], all, `${publishers} concurrent publishers × ${each}`);
    await sleep(SETTLE_MS);
    assertDelivered(all, c.ids(), { label: 'concurrent publishers' });
    assertOrderPerKey(
      expected,
      c.deliveries.map((d) => ({ key: d.key, id: idOf(d) })),
      { label: 'each publisher’s messages in its publish order' },
    );
  });

export const payloadLimit: TransportScenario = (t, options) =>
  withTransport(t, options, ['finitePayloadLimit'], async (h) => {
    const max = h.caps.maxPayloadBytes;
    const time = new Date(Date.UTC(2024, 0, 1));
    const sized = (id: string, bytes: number): CloudEvent => {
      const base = { type: MESSAGE_TYPE, source: 'herald-testkit/transport', id, time, partitionkey: 'sized' };
      const overhead = encodedSize(encodeEnvelope(createEnvelope({ ...base, data: { pad: '' } })));
      assert.ok(bytes >= overhead, `maxPayloadBytes ${max} is smaller than the smallest test envelope (${overhead} bytes)`);
      const env = createEnvelope({ ...base, data: { pad: 'x'.repeat(bytes - overhead) } });
      assert.equal(encodedSize(encodeEnvelope(env)), bytes, 'test envelope of the intended encoded size');
      return env;
    };
    const sub = h.subscribe(h.transport, { group: h.group() });
    const c = h.consume(sub, 'member');
    const P = await h.partitions();
    await h.waitAssigned([sub], P, 'a single member owns every partition');
    const exact = sized(`${h.run}-exact`, max);
    const [receipt] = await h.transport.publish(h.topic, [{ envelope: exact, key: 'sized' }]);
    assert.ok(receipt, `an envelope of exactly maxPayloadBytes (${max}) is accepted`);
    const over = sized(`${h.run}-over`, max + 1);
    await rejectsWith(() => h.transport.publish(h.topic, [{ envelope: over, key: 'sized' }]), 'HERALD_ERR_PAYLOAD_TOO_LARGE', `an envelope of maxPayloadBytes + 1 (${max + 1})`);
    const small = h.message(1, 'sized');
    const over2 = sized(`${h.run}-over2`, max + 1);
    await rejectsWith(() => h.transport.publish(h.topic, [small, { envelope: over2, key: 'sized' }]), 'HERALD_ERR_PAYLOAD_TOO_LARGE', 'a batch holding one oversize envelope');
    const marker = h.message(2, 'sized');
    await h.transport.publish(h.topic, [marker]);
    await h.waitIds([c], [exact.id, marker.envelope.id], 'the exact-size message and the marker');
    await sleep(SETTLE_MS);
    assertDelivered([exact.id, marker.envelope.id], c.ids(), { label: 'oversize publishes send nothing (not even the valid messages of their batch)' });
    const d = c.of(exact.id)[0]!;
    assert.deepStrictEqual(d.envelope, exact, 'the exact-size envelope arrives whole');
  });

export const resumeFromCommitted: TransportScenario = (t, options) =>
  withTransport(t, options, [], async (h) => {
    const group = h.group();
    let acking = true;
    const s1 = h.subscribe(h.transport, { group });
    const c1 = h.consume(s1, 'first', (d) => {
      if (acking) d.ack();
    });
    const P = await h.partitions();
    await h.waitAssigned([s1], P, 'the first member owns every partition');
    const acked = h.messages(0, 30, (i) => `key-${i % 6}`);
    await h.transport.publish(h.topic, acked);
    await h.waitIds([c1], idsOf(acked), 'phase 1 (acked)');
    acking = false;
    const unacked = h.messages(100, 20, (i) => `key-${i % 6}`);
    await h.transport.publish(h.topic, unacked);
    await h.waitIds([c1], idsOf(unacked), 'phase 2 (left unacked)');
    await within(s1.close({ timeoutMs: 100 }), 1500, 'close({ timeoutMs: 100 })');
    const s2 = h.subscribe(h.transport, { group });
    const c2 = h.consume(s2, 'resumed');
    await h.waitIds([c2], idsOf(unacked), 'after re-subscribe, the unacked messages', h.groupWaitMs);
    await sleep(SETTLE_MS);
    assertDelivered(idsOf(unacked), c2.ids(), { label: 'resume from the committed position: unacked ones again, acked ones never' });
  });

export const closeWhileUnsettled: TransportScenario = (t, options) =>
  withTransport(t, options, [], async (h) => {
    const group = h.group();
    const s1 = h.subscribe(h.transport, { group });
    const c1 = h.consume(s1, 'holder', () => {});
    const P = await h.partitions();
    await h.waitAssigned([s1], P, 'the first member owns every partition');
    const m = h.message(0, 'k');
    await h.transport.publish(h.topic, [m]);
    await h.waitIds([c1], [m.envelope.id], 'the message');
    const d = c1.deliveries[0]!;
    const t0 = performance.now();
    await within(s1.close({ timeoutMs: 100 }), 1500, 'close({ timeoutMs: 100 }) with an unsettled delivery');
    const took = performance.now() - t0;
    assert.ok(took < 1000, `close({ timeoutMs: 100 }) with an unsettled delivery took ${took.toFixed(0)} ms (limit ~1 s)`);
    await within(s1.closed, 1000, 'subscription.closed after close()');
    await within(c1.done, 1000, 'the subscription’s async iterator ends after close()');
    d.ack(); // settling after close is a no-op, never a throw
    d.nack();
    await within(s1.close(), 1000, 'a second close() (idempotent)');
    const s2 = h.subscribe(h.transport, { group });
    const c2 = h.consume(s2, 'next');
    await h.waitIds([c2], [m.envelope.id], 'the abandoned message is redelivered to the next subscriber', h.groupWaitMs);
    await sleep(SETTLE_MS);
    assertDelivered([m.envelope.id], c2.ids(), { label: 'next subscriber' });
    assert.equal(c1.errors.length, 0, `collector errors: ${c1.errors.map(String).join('; ')}`);
  });

export const maxInFlightBoundsUnsettled: TransportScenario = (t, options) =>
  withTransport(t, options, [], async (h) => {
    let autoAck = false;
    const sub = h.subscribe(h.transport, { group: h.group(), maxInFlight: 4 });
    const c = h.consume(sub, 'bounded', (d) => {
      if (autoAck) d.ack();
    });
    const P = await h.partitions();
    await h.waitAssigned([sub], P, 'a single member owns every partition');
    const msgs = h.messages(0, 20, (i) => `key-${i % 5}`);
    await h.transport.publish(h.topic, msgs);
    await waitFor(() => c.deliveries.length >= 4, { what: () => `4 deliveries (got ${c.deliveries.length})` });
    await sleep(200);
    assert.equal(c.deliveries.length, 4, 'maxInFlight 4: no more than 4 unsettled deliveries at once');
    for (const d of c.deliveries.slice(0, 4)) d.ack();
    await waitFor(() => c.deliveries.length >= 8, { what: () => `4 more deliveries once 4 were acked (got ${c.deliveries.length})` });
    await sleep(200);
    assert.equal(c.deliveries.length, 8, 'still bounded by maxInFlight after acks');
    autoAck = true;
    for (const d of c.deliveries.slice(4)) d.ack();
    await h.waitIds([c], idsOf(msgs), 'the rest once acking resumes');
    await sleep(SETTLE_MS);
    assertDelivered(idsOf(msgs), c.ids(), { label: 'bounded subscription' });
  });

export const ensureTopicPartitions: TransportScenario = (t, options) =>
  withTransport(t, options, ['choosePartitions'], async (h) => {
    assert.deepEqual(await h.transport.ensureTopic(h.topic, { partitions: 3 }), { topic: h.topic, partitions: 3 }, 'a new topic with 3 partitions');
    assert.deepEqual(await h.transport.ensureTopic(h.topic, { partitions: 3 }), { topic: h.topic, partitions: 3 }, 'ensureTopic is idempotent');
    assert.deepEqual(await h.transport.ensureTopic(h.topic), { topic: h.topic, partitions: 3 }, 'without a count it reports the existing one');
    await rejectsWith(() => h.transport.ensureTopic(h.topic, { partitions: 4 }), 'HERALD_ERR_TOPIC_MISMATCH', 'another partition count for an existing topic');
    const [r] = await h.transport.publish(h.topic, [h.message(0, 'abc')]);
    assert.equal(r!.partition, partitionForKey('abc', 3), 'a key lands on murmur2(key) mod 3');
    await rejectsWith(() => h.transport.ensureTopic('bad topic name!'), 'HERALD_ERR_INVALID_ARGUMENT', 'a topic name breaking the naming rule');
  });

export const closedTransportRefuses: TransportScenario = (t, options) =>
  withTransport(t, options, [], async (h) => {
    const group = h.group();
    const sub = h.subscribe(h.transport, { group });
    const c = h.consume(sub, 'member');
    await h.waitAssigned([sub], await h.partitions(), 'a single member owns every partition');
    await within(h.transport.close({ timeoutMs: 500 }), 2000, 'transport.close()');
    await within(sub.closed, 1000, 'an open subscription is closed by its transport’s close()');
    await within(c.done, 1000, 'its iterator ends');
    await within(h.transport.close(), 1000, 'a second transport.close() (idempotent)');
    await rejectsWith(() => h.transport.publish(h.topic, [h.message(0, 'k')]), 'HERALD_ERR_CLOSED', 'publish after close()');
    let sub2: Subscription | undefined;
    try {
      sub2 = h.transport.subscribe(h.topic, { group });
    } catch (e) {
      assert.ok(isHeraldError(e, 'HERALD_ERR_CLOSED'), `subscribe after close(): expected HERALD_ERR_CLOSED, got ${String(e)}`);
    }
    if (sub2) await rejectsWith(() => sub2!.closed, 'HERALD_ERR_CLOSED', 'a subscription made after close() (must end with)');
  });

export const reconnectAfterBrokerRestart: TransportScenario = (t, options) =>
  withTransport(t, options, ['restartBroker'], async (h) => {
    const sub = h.subscribe(h.transport, { group: h.group() });
    const c = h.consume(sub, 'member');
    const P = await h.partitions();
    await h.waitAssigned([sub], P, 'a single member owns every partition');
    const before = h.messages(0, 20, (i) => `key-${i % 4}`);
    await h.transport.publish(h.topic, before);
    await h.waitIds([c], idsOf(before), 'before the restart');
    await options.restartBroker!();
    const after = h.messages(100, 20, (i) => `key-${i % 4}`);
    for (const m of after) {
      let last: unknown;
      await waitFor(
        async () => {
          try {
            await h.transport.publish(h.topic, [m]);
            return true;
          } catch (e) {
            last = e;
            return false;
          }
        },
        { intervalMs: 50, what: () => `publish of ${m.envelope.id} after the broker restart to succeed (last error: ${String(last)})` },
      );
    }
    await h.waitIds([c], idsOf(after), 'after the restart, the same subscription receives new messages');
    await sleep(SETTLE_MS);
    assertDelivered([...idsOf(before), ...idsOf(after)], c.ids(), { allowDuplicates: true, label: 'across a broker restart (duplicates allowed: at-least-once)' });
  });

/**
 * Consumer lag (`LagSource`; skipped for a transport without `lag()`): zero once everything is
 * acked; with the group's only member gone, N published messages show as N messages of lag on
 * the partitions their receipts name, each such partition's oldest unhandled message dated
 * within the publish (± 2 s: broker clocks on one machine), the others at zero with no age;
 * filters by group and topic; back to zero once a new member handles the backlog.
 */
export const consumerLag: TransportScenario = (t, options) =>
  withTransport(t, options, [], async (h) => {
    const transport = h.transport;
    if (!isLagSource(transport)) {
      t.skip('the transport does not report consumer lag (no lag(): it is not a LagSource)');
      return;
    }
    const group = h.group();
    const P = await h.partitions();
    const lagOf = (): Promise<readonly PartitionLag[]> => transport.lag({ group, topic: h.topic });
    const show = (ls: readonly PartitionLag[]): string => ls.map((l) => `p${l.partition}: ${l.messages} msgs head ${l.head} committed ${l.committed} oldest ${l.oldestUnhandledAt ?? '-'}`).join('; ') || '(none)';
    let last: readonly PartitionLag[] = [];
    const zero = async (what: string): Promise<void> => {
      await waitFor(
        async () => {
          last = await lagOf();
          return last.every((l) => l.messages === 0 && l.oldestUnhandledAt === undefined);
        },
        { timeoutMs: h.groupWaitMs, what: () => `${what}: lag should be 0 on every partition, is ${show(last)}` },
      );
    };

    const s1 = h.subscribe(transport, { group });
    const c1 = h.consume(s1, 'first');
    await h.waitAssigned([s1], P, 'the member owns every partition');
    const handled = h.messages(0, 6, (i) => `key-${i % 3}`);
    await transport.publish(h.topic, handled);
    await h.waitIds([c1], idsOf(handled), 'phase 1 (acked)');
    await zero('after every message was acked');
    for (const l of last) {
      assert.equal(l.group, group, 'lag({ group }) reports only that group');
      assert.equal(l.topic, h.topic, 'lag({ topic }) reports only that topic');
    }
    await within(s1.close({ timeoutMs: 200 }), 1500, 'close the only member');

    const before = Date.now();
    const backlog = h.messages(100, 10, (i) => `key-${i % 5}`);
    const receipts = await transport.publish(h.topic, backlog);
    const after = Date.now();
    const expected = new Map<number, number>();
    for (const r of receipts) expected.set(r.partition, (expected.get(r.partition) ?? 0) + 1);
    await waitFor(
      async () => {
        last = await lagOf();
        return last.reduce((n, l) => n + l.messages, 0) === backlog.length;
      },
      { timeoutMs: h.groupWaitMs, what: () => `with no member, ${backlog.length} published messages should show as lag, got ${show(last)}` },
    );
    for (const [partition, n] of expected) {
      const l = last.find((x) => x.partition === partition);
      assert.ok(l, `partition ${partition} holds ${n} of the backlog but has no lag entry: ${show(last)}`);
      assert.equal(l.messages, n, `partition ${partition}: lag in messages (${show(last)})`);
      assert.ok(l.oldestUnhandledAt !== undefined, `partition ${partition}: the oldest unhandled message has an age (${show(last)})`);
      assert.ok(
        l.oldestUnhandledAt >= before - 2000 && l.oldestUnhandledAt <= after + 2000,
        `partition ${partition}: the oldest unhandled message was appended at ${l.oldestUnhandledAt}, the publish ran ${before}–${after}`,
      );
    }
    for (const l of last) {
      if (!expected.has(l.partition)) assert.ok(l.messages === 0 && l.oldestUnhandledAt === undefined, `partition ${l.partition} got none of the backlog, so no lag: ${show(last)}`);
    }
    assert.deepEqual(await transport.lag({ group: h.group(), topic: h.topic }), [], 'a group that never subscribed has no lag entries');
    assert.ok((await transport.lag()).some((l) => l.group === group && l.topic === h.topic && l.messages > 0), 'lag() without a filter includes this group and topic');

    const s2 = h.subscribe(transport, { group });
    const c2 = h.consume(s2, 'resumed');
    await h.waitIds([c2], idsOf(backlog), 'a new member handles the backlog', h.groupWaitMs);
    await zero('after the backlog was handled');
  });

/** Transport-level scenarios, by name, in the order the suite runs them. */
export const transportScenarios: Readonly<Record<string, TransportScenario>> = Object.freeze({
  'publish/subscribe: envelopes arrive unchanged with topic, key, partition, position, attempt': publishSubscribe,
  'batch publish: receipts in input order with partition and position': batchPublishReceipts,
  'order per key within a partition': orderPerKey,
  'every group gets every message': everyGroupGetsEveryMessage,
  'a consumer group splits work and rebalances when a member joins and leaves': consumerGroupSplitsAndRebalances,
  'redelivery on nack (attempt grows, delay kept); ack and reject settle once': redeliveryOnNack,
  'redelivery of a lost member’s unacked messages to the survivor': redeliveryAfterMemberLost,
  'redelivery when a member’s whole transport (process) closes without acking': redeliveryAfterMemberTransportClosed,
  'a new group replays from the start; latest starts at the head': newGroupReplaysFromStart,
  'concurrent publishers: 8 × 50, nothing lost, each in order': concurrentPublishers,
  'payload of exactly maxPayloadBytes accepted, one byte more refused before sending': payloadLimit,
  'resume from the committed position after close and re-subscribe': resumeFromCommitted,
  'close while a delivery is unsettled: bounded, redelivered to the next subscriber': closeWhileUnsettled,
  'maxInFlight bounds unsettled deliveries': maxInFlightBoundsUnsettled,
  'ensureTopic fixes the partition count': ensureTopicPartitions,
  'a closed transport refuses publish and subscribe with HERALD_ERR_CLOSED': closedTransportRefuses,
  'consumer lag: messages and age per partition rise with no member, zero once handled': consumerLag,
  'reconnect after a broker restart': reconnectAfterBrokerRestart,
});


/**
 * Registers the transport contract (transport-level and router-level scenarios) as a node:test
 * suite, repeated `CONTRACT_STRESS` times.
 */
export function describeTransportContract(name: string, options: TransportContractOptions): void {
  const runs = stressCount();
  describe(`Transport contract: ${name}`, () => {
    for (let r = 1; r <= runs; r++) {
      const register = (): void => {
        describe('transport', () => {
          for (const [title, scenario] of Object.entries(transportScenarios)) it(title, { timeout: 30_000 }, (t) => scenario(t, options));
        });
        describe('router', () => {
          for (const [title, scenario] of Object.entries(routerScenarios)) it(title, { timeout: 30_000 }, (t) => scenario(t, options));
        });
      };
      if (runs === 1) register();
      else describe(`run ${r} of ${runs}`, register);
    }
  });
}
