import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createEnvelope, type Delivery, isHeraldError, type PartitionChange, partitionForKey, type Subscription } from '@herald/core';
import { SqliteLeaseStore } from './lease-store.ts';
import { OffsetClock, tempDbPath, waitFor } from './test-helpers.ts';
import { createSqliteTransport, type SqliteTransport, type SqliteTransportOptions } from './transport.ts';

const cleanups: Array<() => void | Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function freshPath(): string {
  const { path, cleanup } = tempDbPath();
  cleanups.push(cleanup);
  return path;
}

function open(path: string, options: Partial<SqliteTransportOptions> = {}): SqliteTransport {
  const t = createSqliteTransport({ path, ...options } as SqliteTransportOptions);
  cleanups.push(() => t.close({ timeoutMs: 100 }));
  return t;
}

let topicSeq = 0;
function topicName(): string {
  return `t${process.pid}-${++topicSeq}-${Math.random().toString(36).slice(2, 8)}`;
}

function event(n: number, partitionkey?: string) {
  return createEnvelope({ type: 'test.happened', source: 'sqlite-test', data: { n }, ...(partitionkey ? { partitionkey } : {}) });
}

/** Collects deliveries from `sub` (acking each unless told not to) until `count` arrived. */
async function collect(sub: Subscription, count: number, { ack = true } = {}): Promise<Delivery[]> {
  const out: Delivery[] = [];
  const it = sub[Symbol.asyncIterator]();
  const deadline = performance.now() + 2000;
  while (out.length < count) {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), Math.max(1, deadline - performance.now()))));
    const next = await Promise.race([it.next(), timeout]);
    clearTimeout(timer);
    if (next === 'timeout') throw new Error(`timed out with ${out.length} of ${count} deliveries`);
    if (next.done) break;
    out.push(next.value);
    if (ack) next.value.ack();
  }
  return out;
}

function rows(t: SqliteTransport, sql: string, ...params: unknown[]): unknown[] {
  return t.database.db.prepare(sql).all(...params);
}

describe('SqliteTransport', () => {
  it('declares its capabilities', () => {
    const t = open(freshPath());
    assert.equal(t.name, 'sqlite');
    assert.deepEqual(
      { ...t.capabilities, durability: typeof t.capabilities.durability },
      {
        ackModel: 'offset',
        assignment: 'lease',
        consumerGroups: true,
        persistent: true,
        replay: true,
        nativeDelay: false,
        maxPayloadBytes: 1024 * 1024,
        multiProcess: true,
        ackDeadlineMs: 0,
        durability: 'string',
      },
    );
    assert.match(t.capabilities.durability, /NORMAL/);
    assert.match(open(freshPath(), { synchronous: 'FULL' }).capabilities.durability, /FULL/);
  });

  it('publishes and delivers to a group: receipts by murmur2 partition, envelopes intact, keys kept', async () => {
    const t = open(freshPath());
    const topic = topicName();
    const msgs = [
      { envelope: event(1), key: 'alice' },
      { envelope: event(2, 'bob') },
      { envelope: event(3), key: 'alice' },
    ];
    const receipts = await t.publish(topic, msgs);
    assert.deepEqual(
      receipts.map((r) => r.partition),
      [partitionForKey('alice', 8), partitionForKey('bob', 8), partitionForKey('alice', 8)],
    );
    assert.equal(Number(receipts[2]!.position), Number(receipts[0]!.position) + 1);
    const sub = t.subscribe(topic, { group: 'g' });
    const got = await collect(sub, 3);
    const byId = new Map(got.map((d) => [d.envelope!.id, d]));
    for (const [i, m] of msgs.entries()) {
      const d = byId.get(m.envelope.id)!;
      assert.deepStrictEqual(d.envelope, m.envelope);
      assert.equal(d.key, m.key ?? 'bob');
      assert.equal(d.partition, receipts[i]!.partition);
      assert.equal(d.position, receipts[i]!.position);
      assert.equal(d.attempt, 1);
      assert.ok(d.fence, 'lease-assigned deliveries carry their fence');
      assert.equal(d.fence.scope, `log:${topic}:g`);
      assert.equal(JSON.parse(d.raw).id, m.envelope.id);
    }
    await sub.close();
  });

  it('messages without a key go round-robin', async () => {
    const t = open(freshPath());
    const topic = topicName();
    await t.ensureTopic(topic, { partitions: 4 });
    const receipts = await t.publish(topic, Array.from({ length: 8 }, (_, i) => ({ envelope: event(i) })));
    assert.deepEqual(
      receipts.map((r) => r.partition),
      [0, 1, 2, 3, 0, 1, 2, 3],
    );
  });

  it('group commit: many concurrent publish() calls are written in a few transactions, each caller resolved with its own receipts', async () => {
    const t = open(freshPath());
    const topic = topicName();
    await t.ensureTopic(topic);
    const before = t.stats();
    const calls = Array.from({ length: 1000 }, (_, i) => t.publish(topic, [{ envelope: event(i), key: `k${i % 37}` }]));
    const receipts = await Promise.all(calls);
    const after = t.stats();
    assert.equal(after.publishCalls - before.publishCalls, 1000);
    assert.equal(after.publishedMessages - before.publishedMessages, 1000);
    const txns = after.publishTransactions - before.publishTransactions;
    assert.ok(txns >= 1 && txns <= 2, `expected 1000 concurrent publishes in at most 2 transactions, got ${txns}`);
    assert.ok(after.writeTransactions - before.writeTransactions <= 2);
    // every (partition, offset) is unique and each partition's offsets are 0..n-1
    const perPartition = new Map<number, number[]>();
    for (const [r] of receipts) {
      const list = perPartition.get(r!.partition) ?? [];
      list.push(Number(r!.position));
      perPartition.set(r!.partition, list);
    }
    for (const offsets of perPartition.values()) {
      assert.deepEqual(
        [...offsets].sort((a, b) => a - b),
        offsets.map((_, i) => i),
      );
    }
  });

  it('while another process holds the write lock, publishes wait without blocking the event loop, then go in one transaction', async () => {
    const path = freshPath();
    const t = open(path);
    const topic = topicName();
    await t.ensureTopic(topic);
    const other = open(path);
    other.database.db.exec('BEGIN IMMEDIATE');
    const before = t.stats().publishTransactions;
    const first = t.publish(topic, [{ envelope: event(1), key: 'a' }]);
    await new Promise((r) => setTimeout(r, 20)); // the event loop runs meanwhile
    const second = t.publish(topic, [{ envelope: event(2), key: 'b' }]);
    let settled = false;
    void Promise.all([first, second]).then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(settled, false, 'nothing is written while the lock is held');
    other.database.db.exec('COMMIT');
    await Promise.all([first, second]);
    assert.equal(t.stats().publishTransactions - before, 1, 'what queued while waiting went into the same transaction');
  });

  it('bounds the publish queue: publishers beyond maxQueuedMessages wait, and all are written in order', async () => {
    const t = open(freshPath(), { maxQueuedMessages: 10, maxBatchMessages: 10 });
    const topic = topicName();
    await t.ensureTopic(topic, { partitions: 1 });
    const calls = Array.from({ length: 20 }, (_, i) => t.publish(topic, [0, 1, 2, 3].map((j) => ({ envelope: event(i * 4 + j), key: 'k' }))));
    assert.ok(t.stats().queuedMessages <= 12, `queue bound exceeded: ${t.stats().queuedMessages}`);
    const receipts = (await Promise.all(calls)).flat();
    assert.deepEqual(
      receipts.map((r) => Number(r.position)),
      receipts.map((_, i) => i),
    );
    assert.ok(t.stats().publishTransactions >= 8);
  });

  it('keeps per-partition order: offsets increase without gaps and each key’s messages arrive in publish order', async () => {
    const t = open(freshPath());
    const topic = topicName();
    const keys = ['a', 'b', 'c', 'd', 'e', 'f'];
    const sent: Promise<unknown>[] = [];
    for (let i = 0; i < 600; i++) sent.push(t.publish(topic, [{ envelope: event(i), key: keys[i % keys.length]! }]));
    await Promise.all(sent);
    const sub = t.subscribe(topic, { group: 'order' });
    const got = await collect(sub, 600);
    const lastOffset = new Map<number, number>();
    const lastN = new Map<string, number>();
    for (const d of got) {
      const off = Number(d.position);
      assert.equal(off, (lastOffset.get(d.partition) ?? -1) + 1, `partition ${d.partition} offset ${off}`);
      lastOffset.set(d.partition, off);
      const n = (d.envelope!.data as { n: number }).n;
      assert.ok(n > (lastN.get(d.key!) ?? -1), `key ${d.key} went back from ${lastN.get(d.key!)} to ${n}`);
      lastN.set(d.key!, n);
    }
    await sub.close();
  });

  it('resumes from the committed offset after the transport is closed and the file reopened', async () => {
    const path = freshPath();
    const topic = topicName();
    const one = open(path);
    await one.publish(topic, Array.from({ length: 10 }, (_, i) => ({ envelope: event(i), key: `k${i}` })));
    const sub = one.subscribe(topic, { group: 'resume' });
    await collect(sub, 10);
    await one.close(); // draining: commits what was acked
    await one.close(); // idempotent

    const two = open(path);
    await two.publish(topic, Array.from({ length: 5 }, (_, i) => ({ envelope: event(100 + i), key: `k${i}` })));
    const sub2 = two.subscribe(topic, { group: 'resume' });
    const got = await collect(sub2, 5);
    assert.deepEqual(got.map((d) => (d.envelope!.data as { n: number }).n).sort((a, b) => a - b), [100, 101, 102, 103, 104]);
    // nothing older comes back
    const fresh = two.subscribe(topic, { group: 'other' });
    assert.equal((await collect(fresh, 15)).length, 15, 'a new group replays from the start');
    await sub2.close();
    await fresh.close();
    assert.deepEqual(
      (rows(two, `SELECT o.committed FROM herald_offsets o JOIN herald_topics t ON t.id = o.topic_id WHERE t.name = ? AND o.grp = 'resume' ORDER BY o.partition`, topic) as { committed: number }[])
        .reduce((s, r) => s + r.committed + 1, 0),
      15,
    );
  });

  it("startFrom 'latest' skips what was published before subscribe() and gets what comes after", async () => {
    const t = open(freshPath());
    const topic = topicName();
    await t.publish(topic, [{ envelope: event(1), key: 'x' }]);
    const sub = t.subscribe(topic, { group: 'late', startFrom: 'latest' });
    await t.publish(topic, [{ envelope: event(2), key: 'x' }]);
    const [d] = await collect(sub, 1);
    assert.equal((d!.envelope!.data as { n: number }).n, 2);
    await sub.close();
    // On a partition that was empty at subscribe(), what comes before the lease is taken still counts.
    const empty = topicName();
    await t.ensureTopic(empty, { partitions: 1 });
    const sub2 = t.subscribe(empty, { group: 'late', startFrom: 'latest' });
    await t.publish(empty, [{ envelope: event(3), key: 'y' }]);
    const [d2] = await collect(sub2, 1);
    assert.equal((d2!.envelope!.data as { n: number }).n, 3);
    await sub2.close();
  });

  it('two transports on one file in one group split the partitions and together get every message', async () => {
    const path = freshPath();
    const topic = topicName();
    const opts = { leaseMs: 600, heartbeatMs: 150, pollMs: 20 };
    const a = open(path, opts);
    const b = open(path, opts);
    await a.ensureTopic(topic, { partitions: 8 });
    const subA = a.subscribe(topic, { group: 'shared', memberId: 'member-a' });
    await waitFor(() => subA.assignment().length === 8, 'member a to own all partitions');
    const changesB: PartitionChange[] = [];
    const subB = b.subscribe(topic, { group: 'shared', memberId: 'member-b', onPartitions: (c) => changesB.push(c) });
    await waitFor(() => subA.assignment().length === 4 && subB.assignment().length === 4, 'the partitions to split 4/4');
    assert.deepEqual([...subA.assignment(), ...subB.assignment()].sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(subA.assignment(), [0, 2, 4, 6]);
    assert.ok(changesB.every((c) => !c.lost));

    const n = 200;
    await a.publish(topic, Array.from({ length: n }, (_, i) => ({ envelope: event(i), key: `key-${i}` })));
    const seen = new Map<string, string>();
    const drain = async (sub: Subscription, name: string): Promise<void> => {
      for await (const d of sub) {
        assert.ok(sub.assignment().includes(d.partition));
        seen.set(d.envelope!.id, name);
        d.ack();
        if (seen.size === n) break;
      }
    };
    void drain(subA, 'a');
    void drain(subB, 'b');
    await waitFor(() => seen.size === n, 'every message delivered');
    const counts = [...seen.values()].reduce((m, v) => m.set(v, (m.get(v) ?? 0) + 1), new Map<string, number>());
    assert.ok((counts.get('a') ?? 0) > 0 && (counts.get('b') ?? 0) > 0, `both members got work: ${JSON.stringify([...counts])}`);
    await subB.close();
    await waitFor(() => subA.assignment().length === 8, 'member a to take the partitions back after b left');
    await subA.close();
  });

  it('refuses a commit under a stale fence: HERALD_ERR_LEASE_LOST, the offset is not written, the partition is lost', async () => {
    const path = freshPath();
    const clock = new OffsetClock();
    // heartbeatMs long: the member does not renew by itself during the test
    const t = open(path, { clock, leaseMs: 600, heartbeatMs: 60_000, commitIntervalMs: 0 });
    const topic = topicName();
    await t.ensureTopic(topic, { partitions: 1 });
    await t.publish(topic, [{ envelope: event(1), key: 'k' }, { envelope: event(2), key: 'k' }]);
    const errors: unknown[] = [];
    const changes: PartitionChange[] = [];
    const sub = t.subscribe(topic, { group: 'fenced', onError: (e) => errors.push(e), onPartitions: (c) => changes.push(c) });
    const [first, second] = await collect(sub, 2, { ack: false });
    first!.ack();
    await waitFor(() => committed(t, topic, 'fenced') === 0, 'the first ack to be committed under the live lease');

    // The lease runs out and another member takes the partition (epoch + 1).
    clock.advance(1000);
    const thief = new SqliteLeaseStore({ path, clock });
    const stolen = await thief.acquire(`log:${topic}:fenced`, '0', 'thief', 10_000);
    assert.equal(stolen?.epoch, first!.fence!.epoch + 1);

    second!.ack();
    await waitFor(() => errors.some((e) => isHeraldError(e, 'HERALD_ERR_LEASE_LOST')), 'the fenced commit to be refused');
    await waitFor(() => changes.some((c) => c.lost && c.revoked.includes(0)), 'the partition to be reported lost');
    assert.equal(committed(t, topic, 'fenced'), 0, 'the stale commit wrote nothing');
    assert.deepEqual(sub.assignment(), []);
    await thief.close();
    await sub.close();
  });

  it('refuses an oversize message before anything is written, naming it', async () => {
    const t = open(freshPath(), { maxPayloadBytes: 2000 });
    const topic = topicName();
    await t.ensureTopic(topic);
    const before = t.stats();
    const big = createEnvelope({ type: 'test.big', source: 'sqlite-test', data: { blob: 'é'.repeat(1500) } });
    await assert.rejects(
      t.publish(topic, [{ envelope: event(1) }, { envelope: big }]),
      (e) => isHeraldError(e, 'HERALD_ERR_PAYLOAD_TOO_LARGE') && e.message.includes(big.id) && (e.details.size as number) > 2000,
    );
    assert.deepEqual(rows(t, `SELECT count(*) AS n FROM herald_log`), [{ n: 0 }]);
    assert.equal(t.stats().publishTransactions, before.publishTransactions);
    assert.equal(t.capabilities.maxPayloadBytes, 2000);
  });

  it('validates envelopes that are not frozen, and topic names', async () => {
    const t = open(freshPath());
    await assert.rejects(
      t.publish(topicName(), [{ envelope: { specversion: '1.0', id: 'x', source: 's' } as never }]),
      (e) => isHeraldError(e, 'HERALD_ERR_ENVELOPE_INVALID'),
    );
    await assert.rejects(t.publish('bad topic!', [{ envelope: event(1) }]), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
    assert.deepEqual(rows(t, `SELECT count(*) AS n FROM herald_log`), [{ n: 0 }]);
  });

  it('keeps partition counts fixed: another count is HERALD_ERR_TOPIC_MISMATCH, in this and in another connection', async () => {
    const path = freshPath();
    const a = open(path);
    const topic = topicName();
    assert.deepEqual(await a.ensureTopic(topic, { partitions: 3 }), { topic, partitions: 3 });
    await assert.rejects(a.ensureTopic(topic, { partitions: 4 }), (e) => isHeraldError(e, 'HERALD_ERR_TOPIC_MISMATCH'));
    const b = open(path);
    assert.deepEqual(await b.ensureTopic(topic), { topic, partitions: 3 });
    await assert.rejects(b.ensureTopic(topic, { partitions: 8 }), (e) => isHeraldError(e, 'HERALD_ERR_TOPIC_MISMATCH'));
  });

  it('a corrupt row comes out as a delivery with envelope null and decodeError; its neighbours are delivered normally', async () => {
    const t = open(freshPath());
    const topic = topicName();
    await t.ensureTopic(topic, { partitions: 1 });
    await t.publish(topic, [{ envelope: event(1), key: 'k' }]);
    // Two bad rows written by hand at the next offsets: not JSON, and JSON that is not an envelope.
    t.database.immediate(() => {
      const id = (t.database.db.prepare(`SELECT id FROM herald_topics WHERE name = ?`).get(topic) as { id: number }).id;
      const ins = t.database.db.prepare(`INSERT INTO herald_log (topic_id, partition, offset, key, appended_at, envelope) VALUES (?, 0, ?, 'k', 0, ?)`);
      ins.run(id, 1, '{"specversion":"1.0", oops');
      ins.run(id, 2, '{"hello":"world"}');
      t.database.db.prepare(`UPDATE herald_partitions SET next_offset = 3 WHERE topic_id = ? AND partition = 0`).run(id);
    });
    await t.publish(topic, [{ envelope: event(4), key: 'k' }]);
    const sub = t.subscribe(topic, { group: 'corrupt' });
    const got = await collect(sub, 4);
    assert.deepEqual(
      got.map((d) => d.position),
      ['0', '1', '2', '3'],
    );
    assert.equal((got[0]!.envelope!.data as { n: number }).n, 1);
    assert.equal((got[3]!.envelope!.data as { n: number }).n, 4);
    for (const bad of [got[1]!, got[2]!]) {
      assert.equal(bad.envelope, null);
      assert.ok(isHeraldError(bad.decodeError, 'HERALD_ERR_CORRUPT_RECORD'), String(bad.decodeError));
      assert.equal(bad.key, 'k');
    }
    assert.equal(got[1]!.raw, '{"specversion":"1.0", oops');
    await waitFor(() => committed(t, topic, 'corrupt') === 3, 'acks past the corrupt rows to be committed');
    await sub.close();
  });

  it('retention by age never deletes past the slowest group; the hard cap does, counting what each group lost', async () => {
    const clock = new OffsetClock();
    const path = freshPath();
    const t = open(path, { clock, retention: { maxAgeMs: 1000, intervalMs: 60_000 }, commitIntervalMs: 0 });
    const topic = topicName();
    await t.ensureTopic(topic, { partitions: 1 });
    await t.publish(topic, Array.from({ length: 10 }, (_, i) => ({ envelope: event(i), key: 'k' })));
    const fast = t.subscribe(topic, { group: 'fast' });
    const slow = t.subscribe(topic, { group: 'slow' });
    await collect(fast, 10);
    await collect(slow, 3);
    await waitFor(() => committed(t, topic, 'fast') === 9 && committed(t, topic, 'slow') === 2, 'both groups to commit');
    await slow.close();
    await fast.close();

    clock.advance(5000); // every record is now older than maxAgeMs
    assert.deepEqual(await t.runRetention(), { deleted: 3 }, 'only what the slowest group committed (offsets 0..2)');
    assert.deepEqual(offsetsIn(t, topic), [3, 4, 5, 6, 7, 8, 9]);
    assert.equal(t.retentionDropped(topic), 0);

    // Hard cap: 4 records per partition, enforced at publish, even past the slow group.
    const capped = open(path, { clock, retention: { maxRecordsPerPartition: 4 } });
    await capped.publish(topic, [{ envelope: event(10), key: 'k' }, { envelope: event(11), key: 'k' }]);
    assert.deepEqual(offsetsIn(capped, topic), [8, 9, 10, 11]);
    // slow had committed 2: offsets 3..7 were deleted unread by it; fast had read them all.
    assert.equal(capped.retentionDropped(topic, 'slow'), 5);
    assert.equal(capped.retentionDropped(topic, 'fast'), 0);
    assert.equal(capped.retentionDropped(topic), 5);
    // the slow group resumes at what is left
    const again = capped.subscribe(topic, { group: 'slow' });
    const got = await collect(again, 4);
    assert.deepEqual(got.map((d) => d.position), ['8', '9', '10', '11']);
    await again.close();
    await waitFor(() => committed(capped, topic, 'slow') === 11, 'slow to commit 11');
    // now fast (at 9) is the slowest; once it is forgotten, age retention passes it
    clock.advance(5000);
    assert.deepEqual(await t.runRetention(), { deleted: 2 }, 'up to fast’s offset 9');
    assert.equal(await t.forgetGroup(topic, 'nobody'), false);
    assert.equal(await t.forgetGroup(topic, 'fast'), true);
    assert.deepEqual(await t.runRetention(), { deleted: 2 }, 'then up to slow’s offset 11');
    assert.deepEqual(offsetsIn(t, topic), []);
    const [r] = await t.publish(topic, [{ envelope: event(12), key: 'k' }]);
    assert.equal(r!.position, '12', 'offsets never restart, even in an emptied partition');
  });

  it('close() drains queued publishes, is idempotent, and later calls fail with HERALD_ERR_CLOSED', async () => {
    const path = freshPath();
    const t = createSqliteTransport({ path });
    const topic = topicName();
    await t.ensureTopic(topic);
    const pending = t.publish(topic, [{ envelope: event(1), key: 'k' }]);
    const closing = t.close();
    assert.equal(t.close(), closing);
    await closing;
    assert.equal((await pending).length, 1);
    await assert.rejects(t.publish(topic, [{ envelope: event(2) }]), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
    assert.throws(() => t.subscribe(topic, { group: 'g' }), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
    assert.equal(t.database.closed, true);
    await using again = createSqliteTransport({ path });
    assert.deepEqual(offsetsIn(again, topic), [0]);
  });

  it('a transport given a database does not close it', async () => {
    const path = freshPath();
    const first = open(path);
    const t = createSqliteTransport({ database: first.database });
    await t.close();
    assert.equal(first.database.closed, false);
    assert.throws(() => createSqliteTransport({} as SqliteTransportOptions), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
  });
});

function committed(t: SqliteTransport, topic: string, group: string): number | undefined {
  const r = t.database.db
    .prepare(`SELECT o.committed FROM herald_offsets o JOIN herald_topics t ON t.id = o.topic_id WHERE t.name = ? AND o.grp = ? AND o.partition = 0`)
    .get(topic, group) as { committed: number } | undefined;
  return r?.committed;
}

function offsetsIn(t: SqliteTransport, topic: string): number[] {
  return (
    t.database.db.prepare(`SELECT l.offset FROM herald_log l JOIN herald_topics t ON t.id = l.topic_id WHERE t.name = ? ORDER BY l.partition, l.offset`).all(topic) as {
      offset: number;
    }[]
  ).map((r) => r.offset);
}
