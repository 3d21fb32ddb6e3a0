// PostgresUnitOfWork and PostgresOutboxStore beyond the contracts: out-of-order commits never
// let a relay skip or reorder a row (the xmin bound), one NOTIFY per commit, an aborted
// transaction does not commit, bad input is typed. One fresh schema per test.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createEnvelope, createOutboxRelay, type HeraldErrorCode, isHeraldError, type OutgoingMessage } from '@herald/core';
import { assertDelivered, PublishLog, serverSkipReason, sleep, waitFor } from '@herald/testkit';
import pg from 'pg';
import { PgDatabase } from './database.ts';
import { PostgresLeaseStore } from './lease-store.ts';
import { writeChannel } from './outbox-store-shared.ts';
import { createPostgresOutboxStore } from './outbox-store.ts';
import { dropSchema, freshConnection, PG_BASE, PG_PORT } from './test-helpers.ts';
import { createPostgresUnitOfWork } from './unit-of-work.ts';

const skip = await serverSkipReason('PostgreSQL', PG_PORT);
const schemas: string[] = [];
const closers: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of closers.reverse()) await c().catch(() => {});
  for (const s of schemas) await dropSchema(s).catch(() => {});
});

function message(id: string, key: string): OutgoingMessage {
  return { envelope: createEnvelope({ type: 'test.outboxed', source: 'urn:herald:test', id, data: { id }, partitionkey: key }), key };
}

async function setup(partitions = 1): Promise<{ database: PgDatabase; uow: ReturnType<typeof createPostgresUnitOfWork> }> {
  const c = freshConnection();
  schemas.push(c.schema!);
  const database = new PgDatabase(c);
  closers.push(() => database.close());
  const uow = createPostgresUnitOfWork({ database, outboxPartitions: partitions });
  closers.push(() => uow.close());
  await uow.partitions();
  await database.query('CREATE TABLE kv (k text PRIMARY KEY, v text NOT NULL)');
  return { database, uow };
}

async function rawClient(schema?: string): Promise<pg.Client> {
  const c = new pg.Client({ ...PG_BASE, ...(schema ? { options: `-c search_path=${schema}` } : {}) });
  c.on('error', () => {});
  await c.connect();
  closers.push(() => c.end());
  return c;
}

describe('postgres unit of work', { skip }, () => {
  it('A inserts row n and stays open, B inserts n+1 and commits: the relay publishes nothing past n until A commits, then n before n+1, none lost', async () => {
    const { database, uow } = await setup(1);
    // A trigger makes A's transaction stop right AFTER its outbox row is inserted (so a
    // sequence would give A's row the lower number), until the test releases a lock.
    const holder = await rawClient();
    await holder.query('SELECT pg_advisory_lock(4242)');
    await database.query(`CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.envelope LIKE '%"A-1"%' THEN PERFORM pg_advisory_xact_lock(4242); END IF; RETURN NEW; END $$`);
    await database.query('CREATE TRIGGER hold AFTER INSERT ON herald_outbox FOR EACH ROW EXECUTE FUNCTION hold()');

    const topic = 'orders';
    const a = uow.withTransaction(async (tx) => {
      await tx.native.query(`INSERT INTO kv VALUES ('a', 'A')`);
      tx.publish(topic, message('A-1', 'k-held'));
    });
    await waitFor(async () => (await database.query(`SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted`)).rowCount === 1, {
      timeoutMs: 5000,
      what: 'transaction A to hold its inserted outbox row open',
    });
    await uow.withTransaction(async (tx) => {
      await tx.native.query(`INSERT INTO kv VALUES ('b', 'B')`);
      tx.publish(topic, [message('B-1', 'k-held'), message('B-2', 'k-other')]);
    });

    const outbox = await createPostgresOutboxStore({ database, visibilityWaitMs: 0 });
    const leases = new PostgresLeaseStore({ database });
    closers.push(() => leases.close());
    assert.deepEqual(await outbox.pending(0, 10), [], 'B committed, but its rows wait behind A, still in flight');
    const log = new PublishLog();
    const relay = createOutboxRelay({ store: outbox, leases, transport: log.transport('r'), name: 'held', pollMs: 20, leaseMs: 2000 });
    closers.push(() => relay.close({ timeoutMs: 1000 }));
    await relay.start();
    await sleep(400);
    assert.deepEqual(log.ids(), [], 'nothing published while A is open: B-1 (same key) must not overtake A-1, B-2 must not move the sent mark past it');
    assert.equal((await outbox.backlog()).count, 2, "B's two rows are unsent");

    await holder.query('SELECT pg_advisory_unlock(4242)');
    await a;
    await waitFor(() => log.entries.length >= 3, { timeoutMs: 5000, what: () => `3 published (have ${log.ids().join(', ')})` });
    await waitFor(async () => (await outbox.backlog()).count === 0, { timeoutMs: 5000, what: 'the backlog to drain' });
    await sleep(100);
    assertDelivered(['A-1', 'B-1', 'B-2'], log.ids(), { label: 'after A commits' });
    assert.deepEqual(log.ids(), ['A-1', 'B-1', 'B-2'], 'A (whose transaction started writing first) before B');
  });

  it('pending orders ids numerically, also across a power of ten (ids are numeric, not text)', async () => {
    const { database } = await setup(1);
    const outbox = await createPostgresOutboxStore({ database, visibilityWaitMs: 0 });
    // Ids as transactions around txid 1000 would get them (txid * 10^6 + n), committed long ago.
    const ids = ['999000000', '999000001', '1000000000', '1001000000', '10000000000'];
    // The outbox reads only ids below the snapshot's xmin: on a young cluster (fresh CI machine)
    // txid 10000 is still in the future, so move the counter past it first (each autocommit
    // txid_current() takes one).
    const txid = async (): Promise<number> => Number((await database.query<{ t: string }>('SELECT txid_current()::text AS t')).rows[0]!.t);
    while ((await txid()) <= 10_001);
    for (const [i, id] of [...ids].reverse().entries()) {
      await database.query(`INSERT INTO herald_outbox (id, partition, topic, key, envelope, created_at) VALUES ($1, 0, 't', 'k', $2, 0)`, [
        id,
        JSON.stringify(message(`row-${ids.length - 1 - i}`, 'k').envelope),
      ]);
    }
    const rows = await outbox.pending(0, 10);
    assert.deepEqual(
      rows.map((r) => r.id),
      ids,
      'numeric order (as text, "1000000000" would sort before "999000000")',
    );
    assert.deepEqual(
      (await outbox.pending(0, 2, '999000001')).map((r) => r.id),
      ['1000000000', '1001000000'],
    );
  });

  it('sends one NOTIFY per commit, however many publish calls it made; a rollback sends none', async () => {
    const { database, uow } = await setup(4);
    const listener = await rawClient();
    let notes = 0;
    listener.on('notification', (n) => {
      if (n.channel === writeChannel('outbox', database.schema)) notes++;
    });
    await listener.query(`LISTEN "${writeChannel('outbox', database.schema)}"`);
    await uow.withTransaction((tx) => {
      for (let i = 0; i < 5; i++) tx.publish('t', [message(`n-${i}`, `k${i}`), message(`m-${i}`, `k${i}`)]);
    });
    await assert.rejects(
      uow.withTransaction((tx) => {
        tx.publish('t', message('rolled', 'k'));
        throw new Error('no');
      }),
      /no/,
    );
    await uow.withTransaction(async (tx) => {
      await tx.native.query(`INSERT INTO kv VALUES ('x', 'no outbox')`);
    });
    await sleep(200);
    assert.equal(notes, 1, 'one NOTIFY for the commit with ten rows, none for the rollback or the commit without outbox rows');
  });

  it('a relay in another process (here: a pool the in-process wake-up does not reach) wakes on the NOTIFY of a commit, without polling', async () => {
    const { database, uow } = await setup(2);
    // Opened by URL: the in-process wake-up is keyed by host/port/database, so only the NOTIFY can reach this store.
    const other = new PgDatabase({ connectionString: `postgres://${PG_BASE.user}@${PG_BASE.host}:${PG_BASE.port}/${PG_BASE.database}`, schema: database.schema, max: 2 });
    closers.push(() => other.close());
    const outbox = await createPostgresOutboxStore({ database: other });
    const leases = new PostgresLeaseStore({ database: other });
    closers.push(() => leases.close());
    const log = new PublishLog();
    const relay = createOutboxRelay({ store: outbox, leases, transport: log.transport('far'), name: 'far', pollMs: 3_600_000, leaseMs: 5000 });
    closers.push(() => relay.close({ timeoutMs: 1000 }));
    await relay.start();
    await waitFor(() => relay.stats().partitions === 2, { timeoutMs: 5000, what: 'the relay to own both partitions' });
    await sleep(300); // its first drains found nothing, and its LISTEN connection is up
    await uow.withTransaction((tx) => tx.publish('t', [message('far-1', 'a'), message('far-2', 'b')]));
    await waitFor(() => log.entries.length >= 2, { timeoutMs: 3000, what: 'the NOTIFY to wake the relay' });
    assertDelivered(['far-1', 'far-2'], log.ids());
  });

  it('refuses to start on an outbox whose ids come from another cluster (a restored dump): HERALD_ERR_STORAGE naming it', async () => {
    const { database } = await setup(2);
    await database.query(`INSERT INTO herald_outbox_marks (partition, upto, sent_at) VALUES (0, 99999999999999999999, 0)`);
    const uow2 = createPostgresUnitOfWork({ database });
    await assert.rejects(uow2.partitions(), (e: unknown) => isHeraldError(e, 'HERALD_ERR_STORAGE') && !(e as { retryable: boolean }).retryable && /another cluster/.test((e as Error).message));
    await assert.rejects(createPostgresOutboxStore({ database }), (e: unknown) => isHeraldError(e, 'HERALD_ERR_STORAGE'));
  });

  it('a callback that swallowed an SQL error does not commit: HERALD_ERR_STORAGE, nothing stored', async () => {
    const { database, uow } = await setup(2);
    let afterCommit = false;
    await assert.rejects(
      uow.withTransaction(async (tx) => {
        await tx.native.query(`INSERT INTO kv VALUES ('lost', 'v')`);
        tx.publish('t', message('lost-1', 'k'));
        tx.afterCommit(() => {
          afterCommit = true;
        });
        await tx.native.query('SELECT * FROM no_such_table').catch(() => {});
      }),
      (e: unknown) => isHeraldError(e, 'HERALD_ERR_STORAGE') && /aborted/.test((e as Error).message),
    );
    assert.equal(afterCommit, false);
    assert.equal((await database.query(`SELECT 1 FROM kv WHERE k = 'lost'`)).rowCount, 0);
    assert.equal((await database.query('SELECT 1 FROM herald_outbox')).rowCount, 0);
  });

  it('refuses bad input with typed errors naming it, inside the callback, storing nothing', async () => {
    const { database, uow } = await setup(2);
    const cases: Array<[string, (tx: Parameters<Parameters<typeof uow.withTransaction>[0]>[0]) => void, HeraldErrorCode, RegExp]> = [
      ['a bad topic', (tx) => tx.publish('bad topic!', message('x', 'k')), 'HERALD_ERR_INVALID_ARGUMENT', /topic/],
      ['no envelope', (tx) => tx.publish('t', {} as OutgoingMessage), 'HERALD_ERR_INVALID_ARGUMENT', /envelope/],
      ['a bad deliverAt', (tx) => tx.schedule({ topic: 't', message: message('s', 'k'), deliverAt: Number.NaN }), 'HERALD_ERR_INVALID_ARGUMENT', /deliverAt/],
      ['an empty cancel id', (tx) => tx.cancelScheduled(''), 'HERALD_ERR_INVALID_ARGUMENT', /cancelScheduled/],
    ];
    for (const [what, fn, code, re] of cases) {
      await assert.rejects(
        uow.withTransaction(async (tx) => {
          await tx.native.query(`INSERT INTO kv VALUES ('bad', 'v')`);
          fn(tx);
        }),
        (e: unknown) => isHeraldError(e, code) && re.test((e as Error).message),
        what,
      );
    }
    const small = createPostgresUnitOfWork({ database, maxPayloadBytes: 200 });
    await assert.rejects(
      small.withTransaction((tx) => tx.publish('t', { envelope: createEnvelope({ type: 'x', source: 'urn:x', data: { pad: 'p'.repeat(500) } }) })),
      (e: unknown) => isHeraldError(e, 'HERALD_ERR_PAYLOAD_TOO_LARGE'),
    );
    assert.equal((await database.query('SELECT 1 FROM kv')).rowCount, 0);
    assert.equal((await database.query('SELECT 1 FROM herald_outbox')).rowCount, 0);
    await assert.rejects(
      createPostgresOutboxStore({ database, partitions: 3 }),
      (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && /2 partitions/.test((e as Error).message),
    );
    await assert.rejects(uow.withInbox({ group: 'g', handler: '', source: 's', id: 'i' }, () => 1), (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && /handler/.test((e as Error).message));
    const tx = await uow.withTransaction((t) => t);
    assert.throws(() => tx.publish('t', message('late', 'k')), (e: unknown) => isHeraldError(e, 'HERALD_ERR_CLOSED'), 'tx is unusable after its callback');
  });
});
