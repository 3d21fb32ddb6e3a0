// The outbox across a PostgreSQL crash restart, on a private throwaway cluster (own port and data
// folder, initdb/pg_ctl as the postgres user; `PrivatePostgres`) so other suites are not
// disturbed. Writers keep committing business rows + outbox rows while the cluster restarts
// (`pg_ctl restart -m immediate`: a crash, recovery replays the WAL); the relay publishes to a
// recording transport that survives (it lives in this process); each commit also schedules a
// timer fired by a scheduler. Afterwards: every acknowledged commit's business row is there,
// every acknowledged message was published and every acknowledged timer fired (at least once),
// per-key order kept, and the relay and scheduler resumed by themselves. A commit whose answer was lost in the
// crash is ambiguous: it may or may not have committed, and is not counted either way.
// Size: HERALD_PG_RELAY_RESTART_COMMITS (default 240).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createEnvelope, createOutboxRelay, createScheduler } from '@herald/core';
import { assertDelivered, assertOrderPerKey, PublishLog, sleep, waitFor } from '@herald/testkit';
import { PgDatabase } from './database.ts';
import { PostgresLeaseStore } from './lease-store.ts';
import { createPostgresOutboxStore } from './outbox-store.ts';
import { createPostgresSchedulerStore } from './scheduler-store.ts';
import { PrivatePostgres, privateClusterSkipReason } from './private-postgres.ts';
import { schemaName } from './test-helpers.ts';
import { createPostgresUnitOfWork } from './unit-of-work.ts';

const skip = privateClusterSkipReason();
const COMMITS = Number(process.env.HERALD_PG_RELAY_RESTART_COMMITS ?? 240);
const WRITERS = 4;
let server: PrivatePostgres | undefined;

describe('postgres outbox relay across a server restart (private cluster)', { skip }, () => {
  before(async () => {
    server = await PrivatePostgres.start();
  });
  after(async () => {
    await server?.dispose();
  });

  it('writers and the relay go on by themselves: every acknowledged commit published, per-key order kept', { timeout: 180_000 }, async () => {
    const connection = { ...server!.connection, schema: schemaName(), connectTimeoutMs: 2000, statementTimeoutMs: 10_000 };
    const writeDb = new PgDatabase(connection);
    const relayDb = new PgDatabase(connection);
    const uow = createPostgresUnitOfWork({ database: writeDb, outboxPartitions: 4 });
    await uow.partitions();
    await writeDb.query('CREATE TABLE orders (id text PRIMARY KEY, key text NOT NULL)');
    const outbox = await createPostgresOutboxStore({ database: relayDb });
    const leases = new PostgresLeaseStore({ database: relayDb });
    const log = new PublishLog();
    const relay = createOutboxRelay({
      store: outbox,
      leases,
      transport: log.transport('relay'),
      name: 'restart',
      pollMs: 50,
      leaseMs: 2000,
      retryInitialDelayMs: 20,
      retryMaxDelayMs: 500,
      onError: () => {},
    });
    const scheduled = createPostgresSchedulerStore({ database: relayDb });
    const scheduler = createScheduler({ store: scheduled, leases, transport: log.transport('scheduler'), name: 'restart', pollMs: 50, leaseMs: 2000, retryInitialDelayMs: 20, retryMaxDelayMs: 500, onError: () => {} });
    let stop = false;
    try {
    await relay.start();
    await scheduler.start();

    // Each writer owns two keys and commits one after the other: per key, acknowledgement order
    // is commit order, the order the relay must keep.
    const acked: Array<{ id: string; key: string }> = [];
    const ambiguous = new Set<string>();
    let failures = 0;
    let done = 0;
    const writer = async (w: number): Promise<void> => {
      const keys = [`w${w}-a`, `w${w}-b`];
      for (let n = 0; done < COMMITS && !stop; n++) {
        const key = keys[n % 2]!;
        for (let attempt = 0; !stop; attempt++) {
          const id = `w${w}-${n}-${attempt}`;
          try {
            await uow.withTransaction(async (tx) => {
              await tx.native.query('INSERT INTO orders (id, key) VALUES ($1, $2)', [id, key]);
              tx.publish('orders', { envelope: createEnvelope({ type: 'order.placed', source: 'urn:herald:restart', id, data: { n }, partitionkey: key }), key });
              // A durable timer in the same transaction (as a saga's), due a moment later.
              tx.schedule({ topic: 'reminders', message: { envelope: createEnvelope({ type: 'order.remind', source: 'urn:herald:restart', id: `timer-${id}`, data: { n } }) }, deliverAt: Date.now() + 30 });
            });
            acked.push({ id, key });
            done++;
            break;
          } catch {
            failures++;
            ambiguous.add(id);
            await sleep(50);
          }
        }
      }
    };
    const writing = Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
    await waitFor(() => done >= COMMITS / 3, { timeoutMs: 60_000, what: 'a third of the commits before the restart' });
    const publishedBefore = log.ids('relay').length;
    await server!.restart('immediate');
    const ackedAtRestart = done;
    await writing;
    await waitFor(() => acked.every((a) => log.ids('relay').includes(a.id)), {
      timeoutMs: 60_000,
      what: () => `every acknowledged message published (${acked.filter((a) => !log.ids('relay').includes(a.id)).length} missing)`,
    });
    await waitFor(async () => (await outbox.backlog()).count === 0, { timeoutMs: 30_000, what: 'the backlog to drain' });
    await waitFor(() => acked.every((a) => log.ids('scheduler').includes(`timer-${a.id}`)), {
      timeoutMs: 30_000,
      what: () => `every acknowledged timer fired (${acked.filter((a) => !log.ids('scheduler').includes(`timer-${a.id}`)).length} missing)`,
    });
    await waitFor(async () => (await scheduled.pendingCount()) === 0, { timeoutMs: 30_000, what: 'the fired timers to be marked' });
    const stats = relay.stats();

    const ackedIds = new Set(acked.map((a) => a.id));
    const stored = await writeDb.query<{ id: string }>('SELECT id FROM orders');
    const storedIds = new Set(stored.rows.map((r) => r.id));
    for (const a of acked) assert.ok(storedIds.has(a.id), `acknowledged business row ${a.id} survived the crash`);
    assertDelivered(
      acked.map((a) => a.id),
      log.ids('relay').filter((id) => ackedIds.has(id)),
      { allowDuplicates: true, label: 'relay across a crash restart' },
    );
    // A committed row is published whether or not its writer heard back: an ambiguous id is
    // published exactly when its row was stored.
    for (const id of ambiguous) assert.equal(log.ids('relay').includes(id), storedIds.has(id), `ambiguous ${id}: published iff stored`);
    assertDelivered(
      acked.map((a) => `timer-${a.id}`),
      log.ids('scheduler').filter((id) => ackedIds.has(id.slice('timer-'.length))),
      { allowDuplicates: true, label: 'timers across a crash restart' },
    );
    const byKey = new Map<string, string[]>();
    for (const a of acked) byKey.set(a.key, [...(byKey.get(a.key) ?? []), a.id]);
    try {
      assertOrderPerKey(
        byKey,
        log.entries.filter((e) => e.by === 'relay' && ackedIds.has(e.id)),
        { allowDuplicates: true, label: 'relay across a crash restart' },
      );
    } catch (e) {
      // Diagnostics: the stored ids of the first key out of order.
      const key = /key "([^"]+)"/.exec((e as Error).message)?.[1];
      if (key) {
        const rows = await relayDb.query<{ id: string; partition: number; eid: string }>(
          `SELECT id::text AS id, partition, (envelope::json)->>'id' AS eid FROM herald_outbox WHERE key = $1 ORDER BY id`,
          [key],
        );
        console.log(`outbox rows of ${key} by id: ${rows.rows.map((r) => `${r.eid}@${r.id}/p${r.partition}`).join(' ')}`);
        console.log(`relay log of ${key}: ${log.entries.filter((x) => x.key === key && x.by === 'relay').map((x) => x.id).join(' ')}`);
      }
      throw e;
    }
    assert.ok(log.ids('relay').length > publishedBefore, 'the relay published after the restart by itself');
    assert.ok(failures > 0 || stats.failures > 0, 'the restart was felt (failed commits or relay calls): the test really crossed it');
    console.log(
      `relay restart: ${acked.length} commits acknowledged (${ackedAtRestart} before the crash), ${failures} failed commit attempts (${[...ambiguous].filter((id) => storedIds.has(id)).length} of them committed anyway), ` +
        `published ${log.ids('relay').length} (${log.ids('relay').length - new Set(log.ids('relay')).size} duplicates), timers fired ${log.ids('scheduler').length}, relay failures ${stats.failures}, resent ${stats.resent}`,
    );
    } finally {
      stop = true;
      await relay.close({ timeoutMs: 1000 });
      await scheduler.close({ timeoutMs: 1000 });
      await uow.close();
      await Promise.all([outbox.close(), scheduled.close(), leases.close()]);
      await Promise.all([writeDb.close(), relayDb.close()]);
    }
  });
});
