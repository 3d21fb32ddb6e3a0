// The PostgreSQL transport beyond the contract: at most one NOTIFY per group commit; a reader
// in another process (another pool) is woken by that NOTIFY, not by its poll; retention by age
// never passes the slowest group, and the hard cap counts what a group loses; lag() of several
// groups read from a process that consumes nothing, delivered-but-unacked messages counting.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { type CloudEvent, type Delivery, isHeraldError, type PartitionLag } from '@herald/core';
import { ManualClock, serverSkipReason, waitFor } from '@herald/testkit';
import pg from 'pg';
import { PgDatabase } from './database.ts';
import { channelName } from './notifier.ts';
import { dropSchema, freshConnection, PG_BASE, PG_PORT } from './test-helpers.ts';
import { createPostgresTransport } from './transport.ts';

const skip = await serverSkipReason('PostgreSQL', PG_PORT);
const schemas: string[] = [];
after(async () => {
  for (const s of schemas) await dropSchema(s).catch(() => {});
});
function connection(): ReturnType<typeof freshConnection> {
  const c = freshConnection({ max: 2 });
  schemas.push(c.schema!);
  return c;
}
function envelope(i: number): CloudEvent {
  return { specversion: '1.0', id: `m-${i}`, source: 'test', type: 'test.msg', datacontenttype: 'application/json', data: { i } } as CloudEvent;
}

describe('postgres transport', { skip }, () => {
  it('sends at most one NOTIFY per group commit, and a reader on another pool is woken by it (its poll is 30 s)', { timeout: 30_000 }, async () => {
    const c = connection();
    const pubDb = new PgDatabase(c);
    const subDb = new PgDatabase(c);
    const pub = createPostgresTransport({ database: pubDb });
    const con = createPostgresTransport({ database: subDb, pollMs: 30_000 });
    const listener = new pg.Client({ host: PG_BASE.host, port: PG_BASE.port, user: PG_BASE.user, database: PG_BASE.database });
    try {
      await pub.ensureTopic('wake', { partitions: 4 });
      await listener.connect();
      let notifications = 0;
      listener.on('notification', () => notifications++);
      await listener.query(`LISTEN "${channelName('log', c.schema!)}"`);
      const got: string[] = [];
      const sub = con.subscribe('wake', { group: 'g' });
      const reading = (async () => {
        for await (const d of sub as AsyncIterable<Delivery>) {
          got.push(d.envelope!.id);
          d.ack();
        }
      })();
      await waitFor(() => sub.assignment().length === 4, { timeoutMs: 10_000 });
      await new Promise((r) => setTimeout(r, 300)); // the reader's first fetches are done: from now on only a wake-up brings news
      const t0 = Date.now();
      await Promise.all(Array.from({ length: 200 }, (_, i) => pub.publish('wake', [{ key: `k${i % 16}`, envelope: envelope(i) }])));
      await waitFor(() => got.length === 200, { timeoutMs: 10_000 });
      const elapsed = Date.now() - t0;
      const stats = pub.stats();
      await waitFor(() => notifications >= stats.publishTransactions, { timeoutMs: 5000 });
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(notifications, stats.publishTransactions, `one NOTIFY per group commit (${notifications} notifications, ${stats.publishTransactions} commits)`);
      assert.ok(stats.publishTransactions < stats.publishCalls, `publishes were group-committed (${stats.publishTransactions} commits for ${stats.publishCalls} calls)`);
      assert.ok(elapsed < 10_000, `delivered in ${elapsed} ms, long before the 30 s poll`);
      await sub.close({ timeoutMs: 1000 });
      await reading;
    } finally {
      await listener.end().catch(() => {});
      await pub.close({ timeoutMs: 500 });
      await con.close({ timeoutMs: 500 });
      await pubDb.close();
      await subDb.close();
    }
  });

  it('two processes publishing to the same partitions at once: offsets dense and unique per partition, nothing lost, per-key order kept', { timeout: 30_000 }, async () => {
    const c = connection();
    const dbs = [new PgDatabase(c), new PgDatabase(c)];
    const ts = dbs.map((database) => createPostgresTransport({ database }));
    try {
      await ts[0]!.ensureTopic('race', { partitions: 2 });
      const N = Number(process.env.HERALD_PG_PUBLISH_RACE ?? 300);
      await Promise.all(
        ts.map((t, w) =>
          Promise.all(
            Array.from({ length: 8 }, async (_, k) => {
              for (let i = 0; i < N / 8; i++) await t.publish('race', [{ key: `w${w}-k${k}`, envelope: envelope(w * 100_000 + k * 1000 + i) }]);
            }),
          ),
        ),
      );
      const rows = (await dbs[0]!.query<{ partition: number; offset: string; key: string; envelope: string }>(`SELECT partition, "offset", key, envelope FROM herald_log ORDER BY partition, "offset"`)).rows;
      const total = 2 * 8 * Math.ceil(N / 8);
      assert.equal(rows.length, total, 'every publish stored once');
      for (const p of [0, 1]) {
        const offs = rows.filter((r) => r.partition === p).map((r) => Number(r.offset));
        assert.deepEqual(offs, Array.from({ length: offs.length }, (_, i) => i), `partition ${p}: offsets 0..n-1, no gap, no repeat`);
      }
      const byKey = new Map<string, number[]>();
      for (const r of rows) {
        const i = (JSON.parse(r.envelope) as { data: { i: number } }).data.i;
        byKey.set(r.key, [...(byKey.get(r.key) ?? []), i]);
      }
      for (const [key, seq] of byKey) assert.deepEqual(seq, [...seq].sort((a, b) => a - b), `key ${key} in publish order`);
    } finally {
      for (const t of ts) await t.close({ timeoutMs: 500 });
      for (const d of dbs) await d.close();
    }
  });

  it('retention: age never passes the slowest group; the hard cap drops and counts what a group had not read', { timeout: 30_000 }, async () => {
    const c = connection();
    const database = new PgDatabase(c);
    const t = createPostgresTransport({ database, retention: { maxAgeMs: 300, intervalMs: 3_600_000 } });
    try {
      await t.ensureTopic('ret', { partitions: 1 });
      const fast = t.subscribe('ret', { group: 'fast' });
      const slow = t.subscribe('ret', { group: 'slow' });
      await waitFor(() => fast.assignment().length === 1 && slow.assignment().length === 1, { timeoutMs: 10_000 });
      await t.publish('ret', Array.from({ length: 10 }, (_, i) => ({ envelope: envelope(i) })));
      // fast reads and acks everything; slow acks the first 4 only.
      const it1 = (fast as AsyncIterable<Delivery>)[Symbol.asyncIterator]();
      for (let i = 0; i < 10; i++) (await it1.next()).value!.ack();
      const it2 = (slow as AsyncIterable<Delivery>)[Symbol.asyncIterator]();
      for (let i = 0; i < 4; i++) (await it2.next()).value!.ack();
      const committed = async (g: string): Promise<number> =>
        Number((await database.query<{ c: string }>(`SELECT committed AS c FROM herald_offsets WHERE grp = $1`, [g])).rows[0]!.c);
      await waitFor(async () => (await committed('fast')) === 9 && (await committed('slow')) === 3, { timeoutMs: 5000, intervalMs: 20 });
      await new Promise((r) => setTimeout(r, 400)); // every record is older than maxAgeMs now
      const r = await t.runRetention();
      assert.equal(r.deleted, 4, 'old records deleted only up to the slowest group (slow committed offset 3)');
      const left = await database.query<{ o: string }>(`SELECT "offset" AS o FROM herald_log ORDER BY "offset"`);
      assert.deepEqual(left.rows.map((x) => Number(x.o)), [4, 5, 6, 7, 8, 9]);
      assert.equal(await t.retentionDropped('ret'), 0);
      await fast.close({ timeoutMs: 500 });
      await slow.close({ timeoutMs: 500 });
    } finally {
      await t.close({ timeoutMs: 500 });
    }
    // The hard cap: a transport with maxRecordsPerPartition 2 on the same schema.
    const capped = createPostgresTransport({ database, retention: { maxRecordsPerPartition: 2, intervalMs: 3_600_000 } });
    try {
      await capped.runRetention();
      const left = await database.query<{ o: string }>(`SELECT "offset" AS o FROM herald_log ORDER BY "offset"`);
      assert.deepEqual(left.rows.map((x) => Number(x.o)), [8, 9], 'the cap keeps the newest 2');
      assert.equal(await capped.retentionDropped('ret', 'slow'), 4, 'slow lost offsets 4–7, unread: counted');
      assert.equal(await capped.retentionDropped('ret', 'fast'), 0, 'fast had read them: nothing lost');
    } finally {
      await capped.close({ timeoutMs: 500 });
      await database.close();
    }
  });

  it('lag(): several groups and topics seen from a process that consumes nothing; delivered-but-unacked messages are lag; a read only', { timeout: 30_000 }, async () => {
    const c = connection();
    const obsDb = new PgDatabase(c);
    const conDb = new PgDatabase(c);
    const T0 = Date.UTC(2025, 0, 1);
    const clock = new ManualClock({ now: T0 }); // the publisher's clock dates the records (appended_at)
    const obs = createPostgresTransport({ database: obsDb, clock }); // publishes and reads lag, never subscribes
    const con = createPostgresTransport({ database: conDb, leaseMs: 600, heartbeatMs: 100, pollMs: 100, commitIntervalMs: 20 });
    try {
      await obs.ensureTopic('orders', { partitions: 1 });
      await obs.ensureTopic('payments', { partitions: 1 });
      const billing = con.subscribe('orders', { group: 'billing' });
      const audit = con.subscribe('orders', { group: 'audit' });
      const auditPay = con.subscribe('payments', { group: 'audit' });
      await waitFor(() => [billing, audit, auditPay].every((s) => s.assignment().length === 1), { timeoutMs: 10_000 });
      const entry = (topic: string, group: string, head: string, committed: string, messages: number, oldestUnhandledAt: number | undefined): PartitionLag => ({
        topic,
        group,
        partition: 0,
        head,
        committed,
        messages,
        oldestUnhandledAt,
      });
      assert.deepEqual(
        await obs.lag(),
        [entry('orders', 'audit', '-1', '-1', 0, undefined), entry('orders', 'billing', '-1', '-1', 0, undefined), entry('payments', 'audit', '-1', '-1', 0, undefined)],
        'every group registered by the other process, before any message',
      );

      await obs.publish('orders', [0, 1, 2].map((i) => ({ envelope: envelope(i) })));
      clock.advanceSync(5000);
      await obs.publish('orders', [3, 4].map((i) => ({ envelope: envelope(i) })));
      await obs.publish('payments', [{ envelope: envelope(5) }]);

      const b = (billing as AsyncIterable<Delivery>)[Symbol.asyncIterator]();
      for (let i = 0; i < 5; i++) (await b.next()).value!.ack();
      const a = (audit as AsyncIterable<Delivery>)[Symbol.asyncIterator]();
      const held: Delivery[] = [];
      for (let i = 0; i < 5; i++) {
        const d = (await a.next()).value!;
        if (i < 3) d.ack();
        else held.push(d); // delivered, not acked
      }
      const heldPay = (await (auditPay as AsyncIterable<Delivery>)[Symbol.asyncIterator]().next()).value!;

      let last: readonly PartitionLag[] = [];
      await waitFor(
        async () => {
          last = await obs.lag({ topic: 'orders' });
          return last.map((l) => l.committed).join() === '2,4';
        },
        { timeoutMs: 5000, intervalMs: 20, what: () => `audit to commit offset 2 and billing 4 on orders, got ${JSON.stringify(last)}` },
      );
      assert.deepEqual(last, [entry('orders', 'audit', '4', '2', 2, T0 + 5000), entry('orders', 'billing', '4', '4', 0, undefined)], 'the 2 delivered-but-unacked messages are audit’s lag, dated by the second publish');
      assert.deepEqual(
        await obs.lag({ group: 'audit' }),
        [entry('orders', 'audit', '4', '2', 2, T0 + 5000), entry('payments', 'audit', '0', '-1', 1, T0 + 5000)],
        '{ group } spans the group’s topics',
      );
      assert.deepEqual(await obs.lag({ group: 'audit', topic: 'payments' }), [entry('payments', 'audit', '0', '-1', 1, T0 + 5000)]);
      assert.deepEqual(await obs.lag({ group: 'nobody' }), [], 'an unknown group has no entries');
      assert.deepEqual(await obs.lag({ topic: 'nope' }), [], 'an unknown topic has no entries');

      // A read only: no group registered, no offset moved, the held deliveries not redelivered.
      for (let i = 0; i < 20; i++) await obs.lag();
      const offsets = await obsDb.query<{ grp: string; committed: string }>(`SELECT grp, committed FROM herald_offsets ORDER BY topic_id, grp`);
      assert.deepEqual(
        offsets.rows.map((r) => `${r.grp}:${r.committed}`),
        ['audit:2', 'billing:4', 'audit:-1'],
        'lag() registered nothing and moved no offset',
      );
      const next = await Promise.race([a.next().then(() => 'delivered'), new Promise((r) => setTimeout(r, 300, 'nothing'))]);
      assert.equal(next, 'nothing', 'no redelivery while the held messages are unsettled');

      for (const d of held) d.ack();
      heldPay.ack();
      await waitFor(
        async () => {
          last = await obs.lag({ group: 'audit' });
          return last.every((l) => l.messages === 0 && l.oldestUnhandledAt === undefined);
        },
        { timeoutMs: 5000, intervalMs: 20, what: () => `audit's lag to drop to 0 once acked, got ${JSON.stringify(last)}` },
      );

      await assert.rejects(obs.lag({ group: 42 as unknown as string }), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && /group/.test(e.message));
      await con.close({ timeoutMs: 500 });
      assert.equal((await obs.lag()).length, 3, 'groups stay known after every member closed');
    } finally {
      await con.close({ timeoutMs: 500 });
      await obs.close({ timeoutMs: 500 });
      await obsDb.close();
      await conDb.close();
    }
    await assert.rejects(obs.lag(), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'), 'a closed transport refuses lag()');
    const down = new PgDatabase({ ...PG_BASE, port: 1, schema: 'lag_down', connectTimeoutMs: 500 });
    const unreachable = createPostgresTransport({ database: down });
    try {
      await assert.rejects(unreachable.lag(), (e) => isHeraldError(e, 'HERALD_ERR_STORAGE') && e.retryable, 'a server failure rejects with HERALD_ERR_STORAGE (retryable)');
    } finally {
      await unreachable.close();
      await down.close();
    }
  });
});
