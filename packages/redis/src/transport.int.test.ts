// Redis-specific behaviour the contract does not see: the stored layout, wake-ups across
// transports, fencing of commits, retention by MINID, and entries Herald did not write.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { createEnvelope, type Delivery, isHeraldError, type OutgoingMessage, type PartitionChange, partitionForKey, type Subscription } from '@herald/core';
import { PrivateServer, serverSkipReason, waitFor, withScope } from '@herald/testkit';
import { Redis } from 'ioredis';
import { leaseToken, logScope } from './keys.ts';
import { COMMIT } from './scripts.ts';
import { createRedisTransport, type RedisTransport, type RedisTransportOptions } from './transport.ts';

const PORT = 6379;
const skip = await serverSkipReason('Redis', PORT);
const prefix = `herald-int-${randomUUID().slice(0, 8)}`;
const redis = skip ? undefined : new Redis({ port: PORT });

after(async () => {
  if (!redis) return;
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redis.unlink(...keys);
  } while (cursor !== '0');
  await redis.quit();
});

const topicName = (): string => `t-${randomUUID()}`;
const msg = (i: number, key?: string): OutgoingMessage => ({
  envelope: createEnvelope({ type: 'int.item', source: 'redis-int', id: `m-${i}`, data: { i } }),
  ...(key !== undefined ? { key } : {}),
});
const open = (o: RedisTransportOptions = {}): RedisTransport => createRedisTransport({ connection: { port: PORT }, prefix, leaseMs: 600, heartbeatMs: 100, ...o });

function collect(sub: Subscription, ack: (d: Delivery) => boolean = () => true): Delivery[] {
  const got: Delivery[] = [];
  void (async () => {
    for await (const d of sub) {
      got.push(d);
      if (ack(d)) d.ack();
    }
  })();
  return got;
}

describe('redis transport (integration)', { skip }, () => {
  it('stores one stream per partition with ids 0-<offset>, fields k, e and t; the count is fixed by HSETNX', () =>
    withScope(async (scope) => {
      const a = open();
      const b = open();
      scope.defer('close', () => Promise.all([a.close(), b.close()]));
      const topic = topicName();
      await a.ensureTopic(topic, { partitions: 3 });
      assert.equal(await redis!.hget(`${prefix}:${topic}:meta`, 'partitions'), '3');
      await assert.rejects(b.ensureTopic(topic, { partitions: 4 }), (e) => isHeraldError(e, 'HERALD_ERR_TOPIC_MISMATCH'));
      assert.deepEqual(await b.ensureTopic(topic), { topic, partitions: 3 }, 'another transport reads the stored count');
      const sent = Date.now();
      const receipts = await b.publish(topic, [msg(1, 'alpha'), msg(2, 'alpha'), msg(3)]);
      const p = partitionForKey('alpha', 3);
      assert.deepEqual(
        receipts.slice(0, 2).map((r) => [r.partition, r.position]),
        [
          [p, '1'],
          [p, '2'],
        ],
      );
      const entries = (await redis!.xrange(`${prefix}:${topic}:${p}`, '-', '+')) as [string, string[]][];
      assert.deepEqual(
        entries.map(([id]) => id),
        ['0-1', '0-2'],
      );
      const [, fields] = entries[0]!;
      assert.equal(fields[0], 'k');
      assert.equal(fields[1], 'alpha');
      assert.equal(fields[2], 'e');
      assert.equal(JSON.parse(fields[3]!).id, 'm-1');
      assert.equal(fields[4], 't');
      const appended = Number(fields[5]);
      assert.ok(appended >= sent && appended <= Date.now(), `t is the publisher's clock in epoch ms when sent (${appended}, publish from ${sent})`);
      const keyless = (await redis!.xrange(`${prefix}:${topic}:${receipts[2]!.partition}`, '-', '+')) as [string, string[]][];
      assert.deepEqual(keyless.at(-1)![1].filter((_, i) => i % 2 === 0), ['e', 't'], 'a message without a key has no k field');
    }));

  it('wakes a reader at once for appends by another transport (no missed XREAD wake-ups)', () =>
    withScope(async (scope) => {
      // blockMs 60 s: a missed wake-up would stall far past every 2 s wait below.
      const reader = open({ blockMs: 60_000, pollMs: 60_000 });
      const writer = open();
      scope.defer('close', () => Promise.all([reader.close({ timeoutMs: 200 }), writer.close()]));
      const topic = topicName();
      await writer.ensureTopic(topic, { partitions: 8 });
      const sub = reader.subscribe(topic, { group: 'g' });
      scope.defer('close sub', () => sub.close({ timeoutMs: 200 }));
      const got = collect(sub);
      await waitFor(() => sub.assignment().length === 8, { what: 'the reader to own every partition' });
      for (let i = 0; i < 60; i++) {
        await writer.publish(topic, [msg(i, `key-${i % 13}`)]);
        await waitFor(() => got.length === i + 1, { what: () => `message ${i} delivered (have ${got.length})` });
        if (i % 10 === 9) await new Promise((r) => setTimeout(r, 20)); // let the wake-up connection go idle now and then
      }
      assert.deepEqual(
        got.map((d) => d.envelope?.id),
        Array.from({ length: 60 }, (_, i) => `m-${i}`),
      );
    }));

  it('consumer lag: per group on one topic, delivered-but-unacked counts, read by a transport with no subscription, and without side effects', () =>
    withScope(async (scope) => {
      const t = open();
      const observer = open(); // another process: no subscription of its own
      scope.defer('close', () => Promise.all([t.close({ timeoutMs: 200 }), observer.close()]));
      const topic = topicName();
      await t.ensureTopic(topic, { partitions: 2 });
      const p = partitionForKey('k', 2);
      const acker = t.subscribe(topic, { group: 'acker' });
      const holder = t.subscribe(topic, { group: 'holder', maxInFlight: 100 });
      scope.defer('close subs', () => Promise.all([acker.close({ timeoutMs: 200 }), holder.close({ timeoutMs: 200 })]));
      const acked = collect(acker);
      const held = collect(holder, () => false); // delivered, never acked
      await waitFor(() => acker.assignment().length === 2 && holder.assignment().length === 2, { what: 'both groups own both partitions' });
      const before = Date.now();
      await t.publish(topic, [msg(1, 'k'), msg(2, 'k'), msg(3, 'k')]);
      const after = Date.now();
      await waitFor(() => acked.length === 3 && held.length === 3, { what: () => `every group got the 3 messages (acker ${acked.length}, holder ${held.length})` });
      await waitFor(async () => (await redis!.hget(`${prefix}:${topic}:groups:${p}`, 'acker')) === '3', { what: 'the acker committed offset 3' });
      const groupsBefore = await Promise.all([0, 1].map((q) => redis!.hgetall(`${prefix}:${topic}:groups:${q}`)));

      const lag = await observer.lag({ topic });
      const other = 1 - p;
      assert.deepEqual(
        lag.map((l) => ({ ...l, oldestUnhandledAt: l.oldestUnhandledAt === undefined ? undefined : 'set' })),
        [
          { topic, group: 'acker', partition: 0, head: p === 0 ? '3' : '-1', committed: p === 0 ? '3' : '-1', messages: 0, oldestUnhandledAt: undefined },
          { topic, group: 'acker', partition: 1, head: p === 1 ? '3' : '-1', committed: p === 1 ? '3' : '-1', messages: 0, oldestUnhandledAt: undefined },
          { topic, group: 'holder', partition: 0, head: p === 0 ? '3' : '-1', committed: '-1', messages: p === 0 ? 3 : 0, oldestUnhandledAt: p === 0 ? 'set' : undefined },
          { topic, group: 'holder', partition: 1, head: p === 1 ? '3' : '-1', committed: '-1', messages: p === 1 ? 3 : 0, oldestUnhandledAt: p === 1 ? 'set' : undefined },
        ],
        'sorted by group and partition; the holder lags by its 3 delivered-but-unacked messages',
      );
      const oldest = lag.find((l) => l.group === 'holder' && l.partition === p)!.oldestUnhandledAt!;
      assert.ok(oldest >= before && oldest <= after, `the oldest unhandled was appended during the publish (${oldest}, publish ${before}–${after})`);
      assert.equal(lag.find((l) => l.group === 'holder' && l.partition === other)!.oldestUnhandledAt, undefined);
      assert.deepEqual(
        (await observer.lag({ group: 'holder' })).filter((l) => l.topic === topic).map((l) => l.messages),
        p === 0 ? [3, 0] : [0, 3],
        'lag({ group }) alone reads every topic of the prefix',
      );
      assert.ok(
        (await observer.lag()).filter((l) => l.topic === topic).length === 4,
        'lag() without a filter includes the groups another transport registered',
      );
      assert.deepEqual(await observer.lag({ topic, group: 'never' }), []);
      assert.deepEqual(await observer.lag({ topic: topicName() }), [], 'an unknown topic has no entries');

      // A read only: no group registered, no offset moved, nothing redelivered or acked.
      assert.deepEqual(await Promise.all([0, 1].map((q) => redis!.hgetall(`${prefix}:${topic}:groups:${q}`))), groupsBefore);
      assert.equal(await redis!.exists(`${prefix}:~lease:${encodeURIComponent(logScope(topic, 'never'))}:0`), 0);
      assert.equal(held.length, 3);
      assert.ok(held.every((d) => d.attempt === 1), 'the held deliveries were not redelivered');

      // The holder acks: its lag drops to zero at the committed position.
      for (const d of held) d.ack();
      await waitFor(async () => (await observer.lag({ topic, group: 'holder' })).every((l) => l.messages === 0 && l.oldestUnhandledAt === undefined), {
        what: 'the holder back at zero once it acked',
      });
    }));

  it('consumer lag: an entry without t (written before it existed) is dated by its envelope time; a bad filter and a closed transport are refused', () =>
    withScope(async (scope) => {
      const t = open();
      scope.defer('close', () => t.close());
      const topic = topicName();
      await t.ensureTopic(topic, { partitions: 1 });
      const time = '2026-01-02T03:04:05.678Z';
      const env = createEnvelope({ type: 'int.item', source: 'redis-int', id: 'old-1', time, data: {} });
      await redis!.xadd(`${prefix}:${topic}:0`, '0-*', 'e', JSON.stringify(env));
      await redis!.hset(`${prefix}:${topic}:groups:0`, 'legacy', '-1'); // as a subscribe() registers it
      assert.deepEqual(await t.lag({ topic }), [{ topic, group: 'legacy', partition: 0, head: '1', committed: '-1', messages: 1, oldestUnhandledAt: Date.parse(time) }]);
      await assert.rejects(t.lag({ topic: 'no:colons' }), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && /topic name/.test(e.message));
      await assert.rejects(t.lag({ group: '' }), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && /group/.test(e.message));
      await t.close();
      await assert.rejects(t.lag({ topic }), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
    }));

  it('a member whose lease was taken cannot move the group position (fenced commit)', () =>
    withScope(async (scope) => {
      const t = open();
      scope.defer('close', () => t.close({ timeoutMs: 200 }));
      const topic = topicName();
      await t.ensureTopic(topic, { partitions: 1 });
      const changes: PartitionChange[] = [];
      const errors: unknown[] = [];
      const sub = t.subscribe(topic, { group: 'g', onPartitions: (c) => changes.push(c), onError: (e) => errors.push(e) });
      scope.defer('close sub', () => sub.close({ timeoutMs: 200 }));
      const got = collect(sub);
      await waitFor(() => sub.assignment().length === 1, { what: 'the member to own the partition' });
      await t.publish(topic, [msg(1, 'k'), msg(2, 'k')]);
      const groups = `${prefix}:${topic}:groups:0`;
      await waitFor(async () => (await redis!.hget(groups, 'g')) === '2', { what: 'offset 2 committed' });
      const fence = sub.fence!(0)!;
      // Another owner takes the lease (as after an expiry): a higher epoch, live for a minute.
      const scopeName = logScope(topic, 'g');
      const thief = leaseToken(fence.epoch + 1, 'thief');
      await redis!.set(`${prefix}:~lease:${encodeURIComponent(scopeName)}:0`, thief, 'PX', 60_000);
      await redis!.set(`${prefix}:~epoch:${encodeURIComponent(scopeName)}:0`, thief);
      // The stale fence is refused by the commit script itself…
      const refused = (await COMMIT.run(
        redis!,
        [`${prefix}:~lease:${encodeURIComponent(scopeName)}:0`, `${prefix}:~epoch:${encodeURIComponent(scopeName)}:0`, groups, `${prefix}:${topic}:0`],
        [leaseToken(fence.epoch, fence.owner), 'g', '2', ''],
      )) as [number, string];
      assert.deepEqual(refused, [0, thief]);
      // …and the member, still reading, loses the partition without moving the position.
      await t.publish(topic, [msg(3, 'k')]);
      await waitFor(() => changes.some((c) => c.lost && c.revoked.includes(0)), { what: () => `partition 0 lost (changes ${JSON.stringify(changes)})` });
      assert.equal(await redis!.hget(groups, 'g'), '2', 'the committed offset stays where the lawful owner left it');
      assert.ok(got.length >= 2);
    }));

  it('retention: age trims by MINID but never past the slowest group; a new group reads what is retained', () =>
    withScope(async (scope) => {
      // Retention walks every topic of the prefix: this test gets a prefix of its own.
      const t = open({ prefix: `${prefix}-age`, retention: { maxAgeMs: 0, intervalMs: 3_600_000 } });
      scope.defer('close', () => t.close({ timeoutMs: 200 }));
      const topic = topicName();
      await t.ensureTopic(topic, { partitions: 1 });
      const slow = t.subscribe(topic, { group: 'slow' });
      scope.defer('close slow', () => slow.close({ timeoutMs: 200 }));
      const got = collect(slow, (d) => Number(d.position) <= 4); // acks offsets 1..4 only
      await t.publish(topic, Array.from({ length: 10 }, (_, i) => msg(i, 'k')));
      await waitFor(async () => got.length === 10 && (await redis!.hget(`${prefix}-age:${topic}:groups:0`, 'slow')) === '4', { what: 'the slow group at offset 4' });
      assert.deepEqual(await t.runRetention(), { deleted: 4 }, 'everything is older than maxAgeMs 0, but the slow group pins offset 5 on');
      const stream = `${prefix}-age:${topic}:0`;
      assert.equal(await redis!.xlen(stream), 6);
      assert.equal(((await redis!.xrange(stream, '-', '+', 'COUNT', 1)) as [string, string[]][])[0]![0], '0-5');
      const fresh = t.subscribe(topic, { group: 'fresh' });
      scope.defer('close fresh', () => fresh.close({ timeoutMs: 200 }));
      const gotFresh = collect(fresh);
      await waitFor(() => gotFresh.length === 6, { what: () => `a new group reads the 6 retained entries (has ${gotFresh.length})` });
      assert.deepEqual(
        gotFresh.map((d) => d.position),
        ['5', '6', '7', '8', '9', '10'],
      );
    }));

  it('retention: the hard cap trims past a group and counts what each group lost', () =>
    withScope(async (scope) => {
      const t = open({ prefix: `${prefix}-cap`, retention: { maxEntriesPerPartition: 5, intervalMs: 3_600_000 } });
      scope.defer('close', () => t.close({ timeoutMs: 200 }));
      const topic = topicName();
      await t.ensureTopic(topic, { partitions: 1 });
      const sub = t.subscribe(topic, { group: 'behind' }); // registered at -1, never reads
      await waitFor(() => sub.assignment().length === 1, { what: 'registered' });
      await sub.close();
      await t.publish(topic, Array.from({ length: 20 }, (_, i) => msg(i, 'k')));
      assert.deepEqual(await t.runRetention(), { deleted: 15 });
      assert.equal(await redis!.xlen(`${prefix}-cap:${topic}:0`), 5);
      assert.equal(await t.retentionDropped(topic, 'behind'), 15);
      assert.equal(await t.retentionDropped(topic), 15);
      assert.equal(await t.forgetGroup(topic, 'behind'), true);
      assert.equal(await t.retentionDropped(topic, 'behind'), 0);
    }));

  it('an entry Herald did not write is reported as HERALD_ERR_CORRUPT_RECORD, not delivered under a made-up offset', () =>
    withScope(async (scope) => {
      const t = open();
      scope.defer('close', () => t.close({ timeoutMs: 200 }));
      const topic = topicName();
      await t.ensureTopic(topic, { partitions: 1 });
      await redis!.xadd(`${prefix}:${topic}:0`, '*', 'e', '{}');
      const errors: unknown[] = [];
      const sub = t.subscribe(topic, { group: 'g', onError: (e) => errors.push(e) });
      scope.defer('close sub', () => sub.close({ timeoutMs: 200 }));
      const got = collect(sub);
      await waitFor(() => errors.some((e) => isHeraldError(e, 'HERALD_ERR_CORRUPT_RECORD')), { what: 'a corrupt-record error' });
      assert.equal(got.length, 0);
    }));

  it('a server that comes back with older data (restored snapshot): readers go back to the committed offsets and skip none of the new entries', { timeout: 60_000 }, () =>
    withScope(async (scope) => {
      // No AOF: on restart the server loads the snapshot SAVEd mid-test, as a failover to a
      // lagging replica would. Leases (10 s) survive it; only the logs go back.
      const server = await PrivateServer.start({
        name: 'redis-server',
        command: 'redis-server',
        args: (port, dir) => ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'no', '--save', ''],
      });
      scope.defer('dispose the private server', () => server.dispose());
      const errors: unknown[] = [];
      const t = createRedisTransport({ connection: { port: server.port }, leaseMs: 10_000, heartbeatMs: 200, onError: (e) => errors.push(e) });
      scope.defer('close', () => t.close({ timeoutMs: 200 }));
      const admin = new Redis({ port: server.port });
      scope.defer('admin', () => admin.quit());
      const topic = topicName();
      await t.ensureTopic(topic, { partitions: 2 });
      const sub = t.subscribe(topic, { group: 'g' });
      scope.defer('close sub', () => sub.close({ timeoutMs: 200 }));
      const got = collect(sub);
      await waitFor(() => sub.assignment().length === 2, { what: 'the member to own both partitions' });
      const ids = (): Set<string> => new Set(got.map((d) => d.envelope!.id));
      const committedAll = async (n: number): Promise<boolean> => {
        const c = await Promise.all([0, 1].map((p) => admin.hget(`herald:${topic}:groups:${p}`, 'g')));
        return c.reduce((s, v) => s + Number(v ?? 0), 0) === n;
      };
      const phase = async (from: number, n: number): Promise<void> => {
        const batch = Array.from({ length: n }, (_, i) => msg(from + i, `key-${(from + i) % 5}`));
        await waitFor(
          async () => {
            try {
              await t.publish(topic, batch);
              return true;
            } catch {
              return false;
            }
          },
          { what: `publish of phase ${from}`, timeoutMs: 5000, intervalMs: 50 },
        );
        await waitFor(() => batch.every((m) => ids().has(m.envelope.id)), { what: () => `phase ${from} delivered (have ${got.length})`, timeoutMs: 5000 });
      };
      await phase(100, 10);
      await waitFor(() => committedAll(10), { what: 'phase 1 committed' });
      await admin.save(); // the snapshot the server will come back with
      await phase(200, 10);
      await waitFor(() => committedAll(20), { what: 'phase 2 committed' });
      await server.restart();
      await phase(300, 10); // reuses the offsets of phase 2 on the restored logs
      assert.ok(
        errors.some((e) => isHeraldError(e, 'HERALD_ERR_STORAGE') && /server changed/.test(e.message)),
        `the rewind is reported (errors: ${errors.map(String).join('; ')})`,
      );
    }));
});
