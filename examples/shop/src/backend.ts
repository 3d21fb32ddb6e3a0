/**
 * Opening the configured backend: the ONE place that knows SQLite from PostgreSQL + NATS.
 * Every service gets the same `Backend` and never asks which one it has.
 *
 * - `sqlite`: one database file holds the transport's log, the dead letters, the event store,
 *   the saga store, every service's own tables, their inboxes, the outbox and the scheduled
 *   messages, so a service's writes and the messages they cause commit in one local transaction.
 *   Order's events reach the outbox inside the append's transaction (`attachEventStoreOutbox`).
 * - `postgres` (+ `transport: nats`, else the PostgreSQL log): the same stores in one schema
 *   (`schema`, default `herald`), NATS JetStream as the broker (`HERALD_NATS_PREFIX` names its
 *   streams, default `herald`). PostgreSQL has no event-store → outbox hook yet, so there Order's
 *   events are relayed from the event store by a checkpointed subscription (`relayFromStore`):
 *   at least once, each message's id being its event's id, so consumers' inboxes drop resends.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import {
  createOutboxRelay,
  type DeadLetterStore,
  HeraldError,
  type LeaseStore,
  type OutboxRelay,
  type OutgoingMessage,
  type SchedulerStore,
  type Transaction,
  type Transport,
  type UnitOfWork,
} from '@herald/core';
import type { EventStore, RecordedEvent, SagaStore } from '@herald/eventsourcing';
import { createNatsTransport } from '@herald/nats';
import {
  createPgDatabase,
  createPostgresEventStore,
  createPostgresOutboxStore,
  createPostgresProjection,
  createPostgresSagaStore,
  createPostgresSchedulerStore,
  createPostgresTransport,
  createPostgresUnitOfWork,
  type PostgresEventStore,
  PostgresDeadLetterStore,
  PostgresLeaseStore,
} from '@herald/postgres';
import {
  attachEventStoreOutbox,
  createSqliteEventStore,
  createSqliteOutboxStore,
  createSqliteProjection,
  createSqliteSagaStore,
  createSqliteSchedulerStore,
  createSqliteTransport,
  createSqliteUnitOfWork,
  openDatabase,
  SqliteDeadLetterStore,
  type SqliteEventStore,
} from '@herald/sqlite';
import type Database from 'better-sqlite3';
import type pg from 'pg';
import { type ShopProjection, sqliteProjection } from './order-summary.ts';
import { type BackendSpec, log, type Sql, sqliteSql, type TransportSpec } from './runtime.ts';

/** The message a stored event causes (undefined: none). */
export type Route = (event: RecordedEvent) => { readonly topic: string; readonly message: OutgoingMessage } | undefined;

export interface Backend {
  readonly spec: BackendSpec;
  readonly transport: Transport;
  readonly deadLetters: DeadLetterStore;
  /** Where relays and schedulers lease partitions (the outbox and scheduler stores fence against it). */
  readonly leases: LeaseStore;
  /** The service's own writes + outbox + inbox in one local transaction. */
  readonly unitOfWork: UnitOfWork;
  /** Publishes the outbox (every service runs one; relays share the outbox's partitions by lease). Not started. */
  readonly relay: OutboxRelay;
  /** Reads and migrations outside any transaction. */
  readonly sql: Sql;
  /** `Sql` over a unit-of-work transaction. */
  txSql(tx: Transaction): Sql;
  /** Runs DDL (several statements). */
  exec(ddl: string): Promise<void>;
  /** Opened on first use, closed by `close()`. */
  eventStore(): EventStore;
  sagaStore(): SagaStore;
  schedulerStore(): SchedulerStore;
  /** Registers an inline projection of the event store (its writes commit with each append). */
  inlineProjection(projection: ShopProjection): Promise<{ close(): Promise<void> }>;
  /** Sends what `route` maps each appended event of `category` to, through the outbox. Returns the stopper. */
  routeToOutbox(category: string, route: Route): () => Promise<void>;
  close(): Promise<void>;
}

/** Opens the configured backend. */
export async function openBackend(spec: BackendSpec, transportSpec?: TransportSpec, env: NodeJS.ProcessEnv = process.env): Promise<Backend> {
  return spec.kind === 'sqlite' ? openSqlite(spec, transportSpec) : openPostgres(spec, transportSpec, env);
}

function openSqlite(spec: Extract<BackendSpec, { kind: 'sqlite' }>, transportSpec: TransportSpec | undefined): Backend {
  if (transportSpec) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `on SQLite the shop uses the SQLite log as its transport; drop "transport" (got "${transportSpec.kind}")`);
  mkdirSync(dirname(spec.path), { recursive: true });
  const database = openDatabase({ path: spec.path });
  const transport = createSqliteTransport({ database });
  const deadLetters = new SqliteDeadLetterStore({ database });
  // the unit of work holds its transactions across awaits: it gets a connection of its own
  const unitOfWork = createSqliteUnitOfWork({ path: spec.path, transport }); // direct mode: tx.publish appends to the log in the transaction
  const outbox = createSqliteOutboxStore({ database });
  const relay = createOutboxRelay({ store: outbox, transport, leases: transport.leases, name: 'shop', pollMs: 50, onError: (e) => log('relay', (e as Error)?.message ?? String(e)) });
  let events: SqliteEventStore | undefined;
  let sagas: ReturnType<typeof createSqliteSagaStore> | undefined;
  let scheduled: ReturnType<typeof createSqliteSchedulerStore> | undefined;
  const eventStore = (): SqliteEventStore => (events ??= createSqliteEventStore({ database }));
  return {
    spec,
    transport,
    deadLetters,
    leases: transport.leases,
    unitOfWork,
    relay,
    sql: sqliteSql(database.db),
    txSql: (tx) => sqliteSql(tx.native as Database.Database),
    exec: async (ddl) => void database.db.exec(ddl),
    eventStore,
    sagaStore: () => (sagas ??= createSqliteSagaStore({ database })),
    schedulerStore: () => (scheduled ??= createSqliteSchedulerStore({ database })),
    inlineProjection: async (p) => createSqliteProjection(eventStore(), sqliteProjection(p), { mode: 'inline' }),
    routeToOutbox(category, route) {
      const detach = attachEventStoreOutbox(eventStore(), { route: (e) => (e.streamId.startsWith(`${category}-`) ? route(e) : undefined) });
      return async () => detach();
    },
    async close() {
      await relay.close({ timeoutMs: 3000 });
      await events?.close();
      await transport.close({ timeoutMs: 3000 });
      await unitOfWork.close();
      await scheduled?.close();
      sagas?.close();
      await outbox.close();
      await deadLetters.close();
      database.close();
    },
  };
}

/** `?` placeholders → `$1, $2, …` (the shop's SQL has no `?` inside literals). */
export const toPg = (sql: string): string => {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
};

/** `Sql` over a pg pool or client. */
export function pgSql(q: { query(text: string, values?: unknown[]): Promise<pg.QueryResult> }): Sql {
  return {
    run: async (sql, ...p) => (await q.query(toPg(sql), p)).rowCount ?? 0,
    get: async <T>(sql: string, ...p: unknown[]) => (await q.query(toPg(sql), p)).rows[0] as T | undefined,
    all: async <T>(sql: string, ...p: unknown[]) => (await q.query(toPg(sql), p)).rows as T[],
  };
}

async function openPostgres(spec: Extract<BackendSpec, { kind: 'postgres' }>, transportSpec: TransportSpec | undefined, env: NodeJS.ProcessEnv): Promise<Backend> {
  const schema = spec.schema ?? 'herald';
  const database = createPgDatabase({ connectionString: spec.url, schema, applicationName: `shop/${env.HERALD_SERVICE ?? 'tool'}` });
  await database.pool.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
  const transport: Transport = transportSpec
    ? await createNatsTransport({ servers: transportSpec.servers.split(',').map((s) => s.trim()), prefix: env.HERALD_NATS_PREFIX ?? 'herald', leaseBucket: `${env.HERALD_NATS_PREFIX ?? 'herald'}_leases` })
    : createPostgresTransport({ database });
  const leases = new PostgresLeaseStore({ database });
  const deadLetters = new PostgresDeadLetterStore({ database });
  const unitOfWork = createPostgresUnitOfWork({ database });
  const outbox = await createPostgresOutboxStore({ database });
  const relay = createOutboxRelay({ store: outbox, transport, leases, name: 'shop', pollMs: 50, onError: (e) => log('relay', (e as Error)?.message ?? String(e)) });
  let events: PostgresEventStore | undefined;
  let sagas: ReturnType<typeof createPostgresSagaStore> | undefined;
  let scheduled: ReturnType<typeof createPostgresSchedulerStore> | undefined;
  const eventStore = (): PostgresEventStore => (events ??= createPostgresEventStore({ database }));
  const stoppers: Array<() => Promise<void>> = [];
  return {
    spec,
    transport,
    deadLetters,
    leases,
    unitOfWork,
    relay,
    sql: pgSql(database.pool),
    txSql: (tx) => pgSql(tx.native as pg.PoolClient),
    exec: async (ddl) => void (await database.pool.query(ddl)),
    eventStore,
    sagaStore: () => (sagas ??= createPostgresSagaStore({ database })),
    schedulerStore: () => (scheduled ??= createPostgresSchedulerStore({ database })),
    async inlineProjection(p) {
      return createPostgresProjection(
        eventStore(),
        {
          name: p.name,
          category: p.category,
          tables: p.tables,
          async handle(evts, ctx) {
            for (const [sql, params] of p.writes(evts)) await ctx.query(toPg(sql), params);
          },
        },
        { mode: 'inline' },
      );
    },
    routeToOutbox(category, route) {
      const stop = relayFromStore(eventStore(), transport, category, route);
      stoppers.push(stop);
      return stop;
    },
    async close() {
      for (const stop of stoppers) await stop();
      await relay.close({ timeoutMs: 3000 });
      await events?.close();
      await transport.close({ timeoutMs: 3000 });
      await unitOfWork.close();
      await scheduled?.close();
      await sagas?.close();
      await outbox.close();
      await deadLetters.close();
      await leases.close();
      await database.close();
    },
  };
}

/**
 * The event store as the outbox: a checkpointed catch-up subscription of `category` publishes
 * each event's message, then stores the position. A crash between the two publishes again
 * (same message id): at least once, per-key order kept (one reader, events in position order).
 */
function relayFromStore(store: EventStore, transport: Transport, category: string, route: Route): () => Promise<void> {
  const sub = store.subscribe({ checkpoint: `shop-relay-${category}`, category });
  const done = (async () => {
    for await (const e of sub) {
      const out = route(e);
      for (let attempt = 1; out; attempt++) {
        try {
          await transport.publish(out.topic, [out.message]);
          break;
        } catch (err) {
          log('relay', `${out.topic}: ${(err as Error).message} (attempt ${attempt})`);
          await new Promise((r) => setTimeout(r, Math.min(5000, 100 * 2 ** attempt)));
        }
      }
      await sub.commit(e.position);
    }
  })().catch((err) => log('relay', `event-store relay stopped: ${(err as Error)?.message ?? String(err)}`));
  let stopping: Promise<void> | undefined;
  return () => (stopping ??= sub.close().then(() => done));
}
