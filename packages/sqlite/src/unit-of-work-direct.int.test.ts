// SQLite unit of work in direct mode (`createSqliteUnitOfWork({ path, transport })`): `tx.publish`
// appends to the transport's log inside the business transaction. Commit → delivered (woken at
// once in process, by polling in another process); offsets in commit order per partition and per
// key under 64 concurrent transactions; rollback and refused messages leave neither rows nor
// offsets; a transport on another file is refused; after a SIGKILL mid-stream, exactly the rows
// that committed have their messages.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { type CloudEvent, createEnvelope, isHeraldError, partitionForKey } from '@herald/core';
import { forkChild, stopChild } from '@herald/testkit';
import { openDatabase, type SqliteDatabase } from './database.ts';
import { tempDbPath, waitFor } from './test-helpers.ts';
import { createSqliteTransport, type SqliteTransportOptions } from './transport.ts';
import { createSqliteUnitOfWork } from './unit-of-work.ts';

const FIXTURE = fileURLToPath(new URL('./unit-of-work-direct.fixture.ts', import.meta.url));
const cleanups: Array<() => void> = [];
after(() => {
  for (const c of cleanups) c();
});
function freshPath(): string {
  const { path, cleanup } = tempDbPath();
  cleanups.push(cleanup);
  return path;
}

const env = (id: string, key: string, data: unknown = { id }): CloudEvent => createEnvelope({ type: 'order.placed', source: 'uow-direct-test', id, data, partitionkey: key });

function setup(transportOptions: Omit<SqliteTransportOptions, 'path' | 'database'> = {}) {
  const path = freshPath();
  const transport = createSqliteTransport({ path, ...transportOptions });
  const uow = createSqliteUnitOfWork({ path, transport });
  uow.database.db.exec('CREATE TABLE orders (id TEXT PRIMARY KEY, seq INTEGER NOT NULL)');
  const db = openDatabase({ path });
  return {
    path,
    transport,
    uow,
    db,
    async close() {
      await uow.close();
      await transport.close();
      db.close();
    },
  };
}

/** Every log record of `topic`: partition, offset, key, envelope id. */
function logOf(db: SqliteDatabase, topic: string): Array<{ partition: number; offset: number; key: string | null; id: string }> {
  const rows = db.db
    .prepare('SELECT l.partition, l.offset, l.key, l.envelope FROM herald_log l JOIN herald_topics t ON t.id = l.topic_id WHERE t.name = ? ORDER BY l.partition, l.offset')
    .all(topic) as Array<{ partition: number; offset: number; key: string | null; envelope: string }>;
  return rows.map((r) => ({ partition: r.partition, offset: r.offset, key: r.key, id: (JSON.parse(r.envelope) as { id: string }).id }));
}

function counters(db: SqliteDatabase): unknown[] {
  return db.db.prepare('SELECT topic_id, partition, next_offset FROM herald_partitions ORDER BY topic_id, partition').all();
}

describe('SQLite unit of work, direct mode (tx.publish appends to the transport log)', () => {
  it('64 concurrent transactions: every message in the log, offsets in commit order per partition and per key, delivered at once in process, no outbox row', async () => {
    // pollMs 60 s: only the after-commit wake-up can deliver within the test's wait.
    const s = setup({ pollMs: 60_000 });
    const topic = 'orders.direct';
    await s.transport.ensureTopic(topic, { partitions: 4 });
    const received: Array<{ id: string; partition: number; position: string }> = [];
    const sub = s.transport.subscribe(topic, { group: 'g1' });
    const reading = (async () => {
      for await (const d of sub) {
        received.push({ id: d.envelope!.id, partition: d.partition, position: d.position });
        d.ack();
      }
    })();
    await waitFor(() => sub.assignment().length === 4, 'the subscription to own its 4 partitions', 2000);
    await new Promise((r) => setTimeout(r, 50)); // the first (empty) fetches are done

    const commitOrder: string[] = [];
    let seq = 0;
    const N = 64 * 4;
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        for (let i = next++; i < N; i = next++) {
          const id = `o${i}`;
          await s.uow.withTransaction(async (tx) => {
            if (i % 5 === 0) await new Promise((r) => setImmediate(r)); // some callbacks await while holding the transaction
            const mySeq = seq++;
            tx.native.prepare('INSERT INTO orders (id, seq) VALUES (?, ?)').run(id, mySeq);
            tx.publish(topic, { envelope: env(id, `k${i % 8}`, { seq: mySeq }) });
            commitOrder.push(id); // callbacks of one unit of work run one after the other, in commit order
          });
        }
      }),
    );
    const log = logOf(s.db, topic);
    assert.equal(log.length, N, 'one log record per committed transaction');
    const pos = new Map(commitOrder.map((id, i) => [id, i]));
    for (let p = 0; p < 4; p++) {
      const part = log.filter((r) => r.partition === p);
      assert.deepEqual(
        part.map((r) => r.offset),
        part.map((_, i) => i),
        `partition ${p}: offsets 0..n-1, no gap`,
      );
      const order = part.map((r) => pos.get(r.id)!);
      assert.deepEqual(order, [...order].sort((a, b) => a - b), `partition ${p}: offsets follow commit order`);
    }
    for (const r of log) assert.equal(r.partition, partitionForKey(r.key!, 4), 'partitioned by key with the transport partitioner');
    for (let k = 0; k < 8; k++) {
      const seqs = log.filter((r) => r.key === `k${k}`).map((r) => pos.get(r.id)!);
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), `key k${k}: log order is commit order`);
    }
    const orders = s.db.db.prepare('SELECT id FROM orders').pluck().all() as string[];
    assert.deepEqual(new Set(orders), new Set(log.map((r) => r.id)), 'business rows and messages: the same ids');
    assert.equal(s.db.db.prepare('SELECT count(*) FROM herald_outbox').pluck().get(), 0, 'no outbox row in direct mode');

    await waitFor(() => received.length >= N, `${N} deliveries (woken after the commit, not by a 60 s poll)`, 2000);
    assert.ok(performance.now() - t0 < 5000);
    assert.equal(new Set(received.map((r) => r.id)).size, N);
    for (let p = 0; p < 4; p++) {
      const positions = received.filter((r) => r.partition === p).map((r) => Number(r.position));
      assert.deepEqual(positions, [...positions].sort((a, b) => a - b), `partition ${p}: delivered in offset order`);
    }
    await sub.close();
    await reading;
    await s.close();
  });

  it('a transaction that throws leaves no business row, no log record and the offsets unchanged; its batch-mates commit', async () => {
    const s = setup();
    const topic = 'orders.rollback';
    await s.transport.ensureTopic(topic, { partitions: 2 });
    await s.uow.withTransaction((tx) => tx.publish(topic, { envelope: env('before', 'k1') }));
    const before = counters(s.db);
    const results = await Promise.allSettled(
      [0, 1, 2].map((i) =>
        s.uow.withTransaction((tx) => {
          tx.native.prepare('INSERT INTO orders (id, seq) VALUES (?, ?)').run(`r${i}`, i);
          tx.publish(topic, [{ envelope: env(`r${i}-a`, 'k1') }, { envelope: env(`r${i}-b`, 'k2') }]);
          if (i !== 1) throw new Error(`boom ${i}`);
        }),
      ),
    );
    assert.deepEqual(
      results.map((r) => r.status),
      ['rejected', 'fulfilled', 'rejected'],
    );
    assert.deepEqual(
      logOf(s.db, topic).map((r) => r.id).sort(),
      ['before', 'r1-a', 'r1-b'],
    );
    assert.deepEqual(s.db.db.prepare('SELECT id FROM orders').pluck().all(), ['r1']);
    // Only r1's two messages moved the counters.
    const after = counters(s.db) as Array<{ next_offset: number }>;
    assert.equal(
      after.reduce((n, r) => n + r.next_offset, 0) - (before as Array<{ next_offset: number }>).reduce((n, r) => n + r.next_offset, 0),
      2,
    );

    // r0's offsets were given back when its savepoint rolled back: r1 took them, no gap.
    for (const p of [0, 1]) {
      const offsets = logOf(s.db, topic)
        .filter((r) => r.partition === p)
        .map((r) => r.offset);
      assert.deepEqual(
        offsets,
        offsets.map((_, i) => i),
        `partition ${p}: gap-free`,
      );
    }
    const lone = counters(s.db);
    await assert.rejects(
      s.uow.withTransaction((tx) => {
        tx.publish(topic, { envelope: env('x', 'k1') });
        throw new Error('rolled back');
      }),
      /rolled back/,
    );
    assert.deepEqual(counters(s.db), lone, 'offsets unchanged');
    assert.equal(logOf(s.db, topic).length, 3);
    await s.close();
  });

  it('an invalid envelope or one over the transport payload limit fails the transaction with the typed error and stores nothing', async () => {
    const s = setup({ maxPayloadBytes: 1000 });
    const topic = 'orders.bad';
    await s.transport.ensureTopic(topic, { partitions: 2 });
    const before = counters(s.db);
    const tooBig = env('big', 'k1', { pad: 'x'.repeat(2000) });
    await assert.rejects(
      s.uow.withTransaction((tx) => {
        tx.native.prepare('INSERT INTO orders (id, seq) VALUES (?, ?)').run('b1', 1);
        tx.publish(topic, [{ envelope: env('ok-1', 'k1') }, { envelope: tooBig }]);
      }),
      (e: unknown) => isHeraldError(e, 'HERALD_ERR_PAYLOAD_TOO_LARGE'),
    );
    const invalid = { specversion: '1.0', id: 'bad', source: '', type: 'order.placed' } as unknown as CloudEvent;
    await assert.rejects(
      s.uow.withTransaction((tx) => {
        tx.native.prepare('INSERT INTO orders (id, seq) VALUES (?, ?)').run('b2', 2);
        tx.publish(topic, { envelope: env('ok-2', 'k1') });
        tx.publish(topic, { envelope: invalid });
      }),
      (e: unknown) => isHeraldError(e, 'HERALD_ERR_ENVELOPE_INVALID'),
    );
    await assert.rejects(
      s.uow.withTransaction((tx) => tx.publish('bad topic!', { envelope: env('ok-3', 'k1') })),
      (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'),
    );
    assert.equal(logOf(s.db, topic).length, 0);
    assert.deepEqual(s.db.db.prepare('SELECT id FROM orders').pluck().all(), []);
    assert.deepEqual(counters(s.db), before);
    await s.close();
  });

  it('an unknown topic is created as transport.publish creates it; tx.schedule still writes a scheduled row', async () => {
    const s = setup({ defaultPartitions: 3 });
    await s.uow.withTransaction((tx) => {
      tx.publish('orders.new', { envelope: env('n1', 'k1') });
      tx.schedule({ topic: 'orders.new', message: { envelope: env('later', 'k1') }, deliverAt: Date.now() + 60_000 });
    });
    assert.equal(s.db.db.prepare("SELECT partitions FROM herald_topics WHERE name = 'orders.new'").pluck().get(), 3);
    assert.deepEqual(
      logOf(s.db, 'orders.new').map((r) => r.id),
      ['n1'],
    );
    assert.equal(s.db.db.prepare('SELECT count(*) FROM herald_scheduled').pluck().get(), 1);
    assert.deepEqual(await s.transport.ensureTopic('orders.new'), { topic: 'orders.new', partitions: 3 });
    // A topic created by a rolled-back transaction does not exist.
    await assert.rejects(
      s.uow.withTransaction((tx) => {
        tx.publish('orders.ghost', { envelope: env('g1', 'k1') });
        throw new Error('no');
      }),
    );
    assert.equal(s.db.db.prepare("SELECT count(*) FROM herald_topics WHERE name = 'orders.ghost'").pluck().get(), 0);
    await s.close();
  });

  it('the transport retention cap is enforced in the unit of work transaction', async () => {
    const s = setup({ retention: { maxRecordsPerPartition: 5 } });
    const topic = 'orders.capped';
    await s.transport.ensureTopic(topic, { partitions: 1 });
    await Promise.all(Array.from({ length: 20 }, (_, i) => s.uow.withTransaction((tx) => tx.publish(topic, { envelope: env(`c${i}`, 'k') }))));
    const log = logOf(s.db, topic);
    assert.deepEqual(
      log.map((r) => r.offset),
      [15, 16, 17, 18, 19],
    );
    await s.close();
  });

  it('a transport on another file, or on the unit of work connection itself, is HERALD_ERR_INVALID_ARGUMENT naming the files', async () => {
    const a = freshPath();
    const b = freshPath();
    const transport = createSqliteTransport({ path: b });
    assert.throws(
      () => createSqliteUnitOfWork({ path: a, transport }),
      (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && e.message.includes(a) && e.message.includes(b),
    );
    const shared = openDatabase({ path: b });
    const onShared = createSqliteTransport({ database: shared });
    assert.throws(
      () => createSqliteUnitOfWork({ database: shared, transport: onShared }),
      (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && e.message.includes(b),
    );
    // The same file through another connection (a relative path included) is accepted.
    const rel = createSqliteUnitOfWork({ path: b.startsWith(process.cwd()) ? b.slice(process.cwd().length + 1) : b, transport });
    await rel.close();
    await onShared.close();
    shared.close();
    await transport.close();
  });

  it('a consumer in another process receives the committed messages, in commit order per key', async () => {
    const s = setup({ pollMs: 5 });
    const topic = 'orders.remote';
    await s.transport.ensureTopic(topic, { partitions: 4 });
    const consumer = await fork(['consume', s.path, topic, 'remote']);
    try {
      const N = 200;
      await Promise.all(
        Array.from({ length: N }, (_, i) =>
          s.uow.withTransaction((tx) => {
            tx.native.prepare('INSERT INTO orders (id, seq) VALUES (?, ?)').run(`m${i}`, i);
            tx.publish(topic, { envelope: env(`m${i}`, `k${i % 5}`) });
          }),
        ),
      );
      const deliveries = (): Array<Record<string, unknown>> => consumer.messages.filter((m) => m.type === 'delivery');
      // The child's transport notices the other connection's commits by polling (pollMs 5).
      const deadline = performance.now() + 10_000;
      while (new Set(deliveries().map((d) => d.id)).size < N && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.equal(new Set(deliveries().map((d) => d.id)).size, N, `${N} deliveries in the child`);
      for (let k = 0; k < 5; k++) {
        const ns = deliveries()
          .filter((d) => d.key === `k${k}`)
          .map((d) => Number(String(d.id).slice(1)));
        assert.deepEqual(ns, [...ns].sort((a, b) => a - b), `key k${k} in commit order`);
      }
    } finally {
      await stopChild(consumer);
      await s.close();
    }
  });

  it('SIGKILL of a process committing direct-mode transactions: exactly the committed rows have their messages, offsets gap-free', { timeout: 60_000 }, async () => {
    const path = freshPath();
    const db = openDatabase({ path });
    db.db.exec('CREATE TABLE orders (id TEXT PRIMARY KEY)');
    const topic = 'orders.crash';
    const t = createSqliteTransport({ database: db });
    await t.ensureTopic(topic, { partitions: 4 });
    await t.close();
    for (let run = 0; run < 2; run++) {
      const writer = await fork(['write', path, topic]);
      const committed = (): Array<Record<string, unknown>> => writer.messages.filter((m) => m.type === 'committed');
      const deadline = performance.now() + 30_000;
      while (committed().length < 300 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      assert.ok(committed().length >= 300, `run ${run}: the child committed ${committed().length} transactions`);
      const exited = new Promise((r) => writer.child.once('exit', r));
      writer.child.kill('SIGKILL');
      await exited;

      const orders = new Set(db.db.prepare('SELECT id FROM orders').pluck().all() as string[]);
      const log = logOf(db, topic);
      const ids = new Set(log.map((r) => r.id));
      assert.equal(ids.size, log.length, 'no message twice');
      const missing = [...orders].filter((id) => !ids.has(id));
      const orphans = [...ids].filter((id) => !orders.has(id));
      assert.deepEqual(missing, [], 'every committed business row has its message');
      assert.deepEqual(orphans, [], 'no message without its business row');
      for (const c of committed()) assert.ok(orders.has(String(c.id)), `reported commit ${String(c.id)} is stored`);
      for (let p = 0; p < 4; p++) {
        const offsets = log.filter((r) => r.partition === p).map((r) => r.offset);
        assert.deepEqual(
          offsets,
          offsets.map((_, i) => i),
          `partition ${p}: offsets gap-free`,
        );
        const next = db.db.prepare('SELECT next_offset FROM herald_partitions p JOIN herald_topics t ON t.id = p.topic_id WHERE t.name = ? AND p.partition = ?').pluck().get(topic, p);
        assert.equal(next, offsets.length, `partition ${p}: the counter matches the log`);
      }
      // The next run's ids continue from o0 again: clear the stores for it.
      db.db.exec(`DELETE FROM orders; DELETE FROM herald_log; UPDATE herald_partitions SET next_offset = 0`);
    }
    db.close();
  });
});

/** The fixture in a child process (`forkChild`), its arguments in HERALD_FIXTURE_ARGS. */
function fork(args: string[]) {
  return forkChild(FIXTURE, { name: `direct-${args[0]}`, env: { HERALD_FIXTURE_ARGS: JSON.stringify(args) } });
}
