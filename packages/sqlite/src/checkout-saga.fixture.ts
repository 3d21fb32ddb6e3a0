/**
 * The checkout saga on one SQLite file, for this package's tests (not exported): the saga
 * runtime, the four participant services, the outbox relay and the scheduler, all on the same
 * file. Used in-process by checkout-saga.int.test.ts and as a child process by the e2e tests:
 *
 *   node --import tsx checkout-saga.fixture.ts <path> [direct]     env CHECKOUT_SHIPPING_TIMEOUT_MS, CHECKOUT_NO_SAGA=1
 *
 * prints "ready" once every part has started, then runs until killed ("stop" on stdin closes it).
 */
import { createInterface } from 'node:readline';
import { type Clock, createOutboxRelay, createScheduler, type Transaction } from '@herald/core';
import { createSagaRuntime, type SagaRuntime } from '@herald/eventsourcing';
import { type CheckoutKv, type CheckoutServices, createCheckoutSaga, startCheckoutServices } from '@herald/testkit';
import type Database from 'better-sqlite3';
import { openDatabase, type SqliteDatabase } from './database.ts';
import { SqliteDeadLetterStore } from './dead-letter-store.ts';
import { SqliteLeaseStore } from './lease-store.ts';
import { createSqliteOutboxStore } from './outbox-store.ts';
import { createSqliteSagaStore, type SqliteSagaStore } from './saga-store.ts';
import { createSqliteSchedulerStore } from './scheduler-store.ts';
import { createSqliteTransport, type SqliteTransport } from './transport.ts';
import { createSqliteUnitOfWork, type SqliteUnitOfWork } from './unit-of-work.ts';

const KV_TABLES = `
  CREATE TABLE IF NOT EXISTS checkout_kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS checkout_effects (seq INTEGER PRIMARY KEY, service TEXT NOT NULL, type TEXT NOT NULL, order_id TEXT NOT NULL, message_id TEXT NOT NULL);
`;

interface KvStatements {
  readonly get: Database.Statement;
  readonly put: Database.Statement;
  readonly record: Database.Statement;
}

const kvStatements = new WeakMap<Database.Database, KvStatements>();

/** The services' records in a table of the same file, written in the unit of work's transaction. */
export const sqliteCheckoutKv: CheckoutKv<Database.Database> = {
  get(tx: Transaction<Database.Database>, key: string): unknown {
    const row = statementsFor(tx.native).get.get(key) as { value: string } | undefined;
    return row === undefined ? undefined : JSON.parse(row.value);
  },
  put(tx: Transaction<Database.Database>, key: string, value: unknown): void {
    statementsFor(tx.native).put.run(key, JSON.stringify(value));
  },
  record(tx, e) {
    statementsFor(tx.native).record.run(e.service, e.type, e.orderId, e.messageId);
  },
};

function statementsFor(db: Database.Database): KvStatements {
  let s = kvStatements.get(db);
  if (!s) {
    s = {
      get: db.prepare('SELECT value FROM checkout_kv WHERE key = ?'),
      put: db.prepare('INSERT INTO checkout_kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'),
      record: db.prepare('INSERT INTO checkout_effects (service, type, order_id, message_id) VALUES (?, ?, ?, ?)'),
    };
    kvStatements.set(db, s);
  }
  return s;
}

export interface CheckoutNodeOptions {
  readonly path: string;
  readonly shippingTimeoutMs?: number;
  /** Run the participant services only (no saga runtime). */
  readonly noSaga?: boolean;
  /** The unit of work publishes in direct mode (appends to the transport's log in its transactions) instead of through the outbox and relay. */
  readonly direct?: boolean;
  readonly clock?: Clock;
}

export interface CheckoutNode {
  readonly transport: SqliteTransport;
  readonly unitOfWork: SqliteUnitOfWork;
  readonly store: SqliteSagaStore;
  readonly runtime: SagaRuntime<Database.Database> | undefined;
  readonly deadLetters: SqliteDeadLetterStore;
  /** Committed value of a service record (on a connection of its own). */
  read(key: string): unknown;
  close(): Promise<void>;
}

/** Starts the checkout (saga, services, relay, scheduler) on `path`. */
export async function startCheckoutNode(o: CheckoutNodeOptions): Promise<CheckoutNode> {
  const { path } = o;
  const clock = o.clock ? { clock: o.clock } : {};
  const transport = createSqliteTransport({ path, leaseMs: 1000, heartbeatMs: 100, pollMs: 10, ...clock });
  const deadLetters = new SqliteDeadLetterStore({ path });
  const leases = new SqliteLeaseStore({ path, ...clock });
  const unitOfWork = createSqliteUnitOfWork({ path, ...(o.direct ? { transport } : {}), ...clock });
  unitOfWork.database.db.exec(KV_TABLES);
  const reader: SqliteDatabase = openDatabase({ path });
  const outbox = createSqliteOutboxStore({ path, ...clock });
  const scheduled = createSqliteSchedulerStore({ path, ...clock });
  const relay = createOutboxRelay({ store: outbox, transport, leases, pollMs: 20, leaseMs: 1000, ...clock });
  const scheduler = createScheduler({ store: scheduled, transport, leases, pollMs: 50, leaseMs: 1000, ...clock });
  const store = createSqliteSagaStore({ path });
  const runtime = o.noSaga
    ? undefined
    : createSagaRuntime({
        sagas: [createCheckoutSaga({ ...(o.shippingTimeoutMs !== undefined ? { shippingTimeoutMs: o.shippingTimeoutMs } : {}) })],
        store,
        unitOfWork,
        transport,
        deadLetters,
        source: 'checkout-saga',
        consumer: { retry: { maxAttempts: 20, initialDelayMs: 10, maxDelayMs: 200 } },
        ...clock,
      });
  const services: CheckoutServices = await startCheckoutServices({ transport, deadLetters, unitOfWork, kv: sqliteCheckoutKv, ...clock });
  await relay.start();
  await scheduler.start();
  await runtime?.start();
  let closing: Promise<void> | undefined;
  return {
    transport,
    unitOfWork,
    store,
    runtime,
    deadLetters,
    read(key) {
      const row = reader.read(() => reader.statement('SELECT value FROM checkout_kv WHERE key = ?').get(key)) as { value: string } | undefined;
      return row === undefined ? undefined : JSON.parse(row.value);
    },
    close() {
      closing ??= (async () => {
        await Promise.all([services.close(), runtime?.close()]);
        await Promise.all([relay.close(), scheduler.close()]);
        await unitOfWork.close();
        await transport.close();
        for (const c of [store, deadLetters, leases, outbox, scheduled]) (c as { close?: () => unknown }).close?.();
        reader.close();
      })();
      return closing;
    },
  };
}


// Child-process mode.
if (process.argv[1]?.endsWith('checkout-saga.fixture.ts')) {
  const path = process.argv[2]!;
  const timeout = process.env.CHECKOUT_SHIPPING_TIMEOUT_MS;
  const node = await startCheckoutNode({ path, ...(timeout ? { shippingTimeoutMs: Number(timeout) } : {}), noSaga: process.env.CHECKOUT_NO_SAGA === '1', direct: process.argv[3] === 'direct' });
  process.stdout.write('ready\n');
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line.trim() === 'stop') void node.close().then(() => process.exit(0));
  });
}
