/**
 * The checkout saga on one PostgreSQL schema, for the crash loop (tests only, not exported): the
 * saga runtime on `PostgresUnitOfWork` + `PostgresSagaStore`, the four participant services
 * (inbox + outbox on the same unit of work), the outbox relay and the scheduler, on the
 * PostgreSQL transport. As a child process:
 *
 *   node --import tsx saga-crash.fixture.ts <schema>     env HERALD_PG_PORT, CHECKOUT_SHIPPING_TIMEOUT_MS
 *
 * prints "ready" once every part has started, then runs until killed ("stop" on stdin closes it).
 *
 * The testkit's checkout services read and write their records synchronously inside the
 * transaction (`CheckoutKv`); on PostgreSQL every read is a round trip, so each service
 * transaction loads the (small) `checkout_kv` table first, serves `get` from it and writes its
 * `put`s and effect-log rows before the callback returns — still inside the same transaction.
 */
import { createInterface } from 'node:readline';
import { createOutboxRelay, createScheduler, type InboxKey, type InboxResult, type Transaction, type UnitOfWork } from '@herald/core';
import { createSagaRuntime } from '@herald/eventsourcing';
import { type CheckoutKv, createCheckoutSaga, startCheckoutServices } from '@herald/testkit';
import type pg from 'pg';
import { PgDatabase } from './database.ts';
import { PostgresDeadLetterStore } from './dead-letter-store.ts';
import { PostgresLeaseStore } from './lease-store.ts';
import { createPostgresOutboxStore } from './outbox-store.ts';
import { createPostgresSagaStore } from './saga-store.ts';
import { createPostgresSchedulerStore } from './scheduler-store.ts';
import { PG_BASE } from './test-helpers.ts';
import { createPostgresTransport } from './transport.ts';
import { createPostgresUnitOfWork } from './unit-of-work.ts';

export const CHECKOUT_TABLES = `
  CREATE TABLE IF NOT EXISTS checkout_kv (key text PRIMARY KEY, value text NOT NULL);
  CREATE TABLE IF NOT EXISTS checkout_effects (seq bigserial PRIMARY KEY, service text NOT NULL, type text NOT NULL, order_id text NOT NULL, message_id text NOT NULL);
`;

/** What a service transaction sees: the records loaded at its start, and what it wrote. */
interface KvNative {
  readonly values: Map<string, unknown>;
  readonly puts: Map<string, unknown>;
  readonly effects: Array<[string, string, string, string]>;
}

const pgCheckoutKv: CheckoutKv<KvNative> = {
  get: (tx, key) => tx.native.values.get(key),
  put(tx, key, value) {
    tx.native.values.set(key, value);
    tx.native.puts.set(key, value);
  },
  record(tx, e) {
    tx.native.effects.push([e.service, e.type, e.orderId, e.messageId]);
  },
};

/** A unit of work whose callbacks see `KvNative` over a `PostgresUnitOfWork` transaction. */
function kvUnitOfWork(inner: UnitOfWork<pg.PoolClient>): UnitOfWork<KvNative> {
  const wrap = async <R>(tx: Transaction<pg.PoolClient>, fn: (tx: Transaction<KvNative>) => Promise<R> | R): Promise<R> => {
    const rows = await tx.native.query<{ key: string; value: string }>('SELECT key, value FROM checkout_kv');
    const native: KvNative = { values: new Map(rows.rows.map((r) => [r.key, JSON.parse(r.value)])), puts: new Map(), effects: [] };
    const view: Transaction<KvNative> = {
      native,
      publish: (topic, messages) => tx.publish(topic, messages),
      schedule: (w) => tx.schedule(w),
      cancelScheduled: (id) => tx.cancelScheduled(id),
      afterCommit: (f) => tx.afterCommit(f),
    };
    const value = await fn(view);
    if (native.puts.size > 0) {
      await tx.native.query('INSERT INTO checkout_kv (key, value) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [
        [...native.puts.keys()],
        [...native.puts.values()].map((v) => JSON.stringify(v)),
      ]);
    }
    for (const e of native.effects) await tx.native.query('INSERT INTO checkout_effects (service, type, order_id, message_id) VALUES ($1, $2, $3, $4)', e);
    return value;
  };
  return {
    name: inner.name,
    withTransaction: <R>(fn: (tx: Transaction<KvNative>) => Promise<R> | R) => inner.withTransaction((tx) => wrap(tx, fn)),
    withInbox: <R>(key: InboxKey, fn: (tx: Transaction<KvNative>) => Promise<R> | R): Promise<InboxResult<R>> => inner.withInbox(key, (tx) => wrap(tx, fn)),
    inboxHas: (key) => inner.inboxHas(key),
    inboxRecord: (key) => inner.inboxRecord(key),
    purgeInbox: (before) => inner.purgeInbox(before),
  };
}

// Child-process mode.
if (process.argv[1]?.endsWith('saga-crash.fixture.ts')) {
  const schema = process.argv[2]!;
  const timeout = process.env.CHECKOUT_SHIPPING_TIMEOUT_MS;
  const database = new PgDatabase({ ...PG_BASE, schema, max: 12, connectTimeoutMs: 5000 });
  const unitOfWork = createPostgresUnitOfWork({ database });
  await unitOfWork.partitions();
  await database.query(CHECKOUT_TABLES);
  const store = createPostgresSagaStore({ database });
  await store.migrate();
  const transport = createPostgresTransport({ database, leaseMs: 1000, heartbeatMs: 100, pollMs: 20 });
  const deadLetters = new PostgresDeadLetterStore({ database });
  const leases = new PostgresLeaseStore({ database });
  const outbox = await createPostgresOutboxStore({ database });
  const scheduled = createPostgresSchedulerStore({ database });
  const relay = createOutboxRelay({ store: outbox, transport, leases, pollMs: 20, leaseMs: 1000 });
  const scheduler = createScheduler({ store: scheduled, transport, leases, pollMs: 50, leaseMs: 1000 });
  const runtime = createSagaRuntime({
    sagas: [createCheckoutSaga(timeout ? { shippingTimeoutMs: Number(timeout) } : {})],
    store,
    unitOfWork,
    transport,
    deadLetters,
    source: 'checkout-saga',
    consumer: { retry: { maxAttempts: 20, initialDelayMs: 10, maxDelayMs: 200 } },
  });
  const services = await startCheckoutServices({ transport, deadLetters, unitOfWork: kvUnitOfWork(unitOfWork), kv: pgCheckoutKv });
  await relay.start();
  await scheduler.start();
  await runtime.start();
  process.stdout.write('ready\n');
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line.trim() !== 'stop') return;
    void (async () => {
      await Promise.all([services.close(), runtime.close()]);
      await Promise.all([relay.close(), scheduler.close()]);
      await unitOfWork.close();
      await transport.close();
      await Promise.all([deadLetters.close(), leases.close(), outbox.close(), scheduled.close()]);
      await database.close();
      process.exit(0);
    })();
  });
}
