/**
 * What every shop service opens: the backend named by configuration alone. The supervisor
 * (`herald start`) passes `HERALD_BACKEND_JSON` (and `HERALD_CONFIG`, whose `transport` entry
 * names a broker); run by hand, a service falls back to `SHOP_DB` or `.herald/shop.db`.
 *
 * - `{ "kind": "sqlite", "path": … }`: one database file holds the transport's log, the dead
 *   letters, the event store, every service's own tables, their inboxes and the outbox, so a
 *   service's writes and the messages they cause commit in one local transaction.
 * - `{ "kind": "postgres", "url": …, "schema": … }` + `"transport": { "kind": "nats", … }`:
 *   the same services on PostgreSQL and NATS JetStream (see `openBackend`).
 *
 * Services write their own tables through `Sql`, a four-method view over the backend's
 * connection (`?` placeholders; portable DDL), so the same handler code runs on both.
 */
import { readFileSync } from 'node:fs';
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import {
  type CloudEvent,
  type Consumer,
  createConsumer,
  createEnvelope,
  createOutboxRelay,
  type DeadLetterStore,
  HeraldError,
  type LeaseStore,
  type MessageContext,
  type MessageDefinition,
  type OutboxRelay,
  type OutgoingMessage,
  type Transaction,
  type Transport,
  type UnitOfWork,
} from '@herald/core';
import type { EventStore, SagaStore } from '@herald/eventsourcing';
import {
  createSqliteEventStore,
  createSqliteOutboxStore,
  createSqliteSagaStore,
  createSqliteTransport,
  createSqliteUnitOfWork,
  openDatabase,
  type SqliteDatabase,
  SqliteDeadLetterStore,
  type SqliteEventStore,
  type SqliteSagaStore,
} from '@herald/sqlite';
import type Database from 'better-sqlite3';

export type BackendSpec = { readonly kind: 'sqlite'; readonly path: string } | { readonly kind: 'postgres'; readonly url: string; readonly schema?: string };
export interface TransportSpec {
  readonly kind: 'nats';
  readonly servers: string;
}

/** The backend (and broker) this process was configured with. */
export function configuredBackend(env: NodeJS.ProcessEnv = process.env): { backend: BackendSpec; transport: TransportSpec | undefined } {
  let transport: TransportSpec | undefined;
  if (env.HERALD_TRANSPORT_JSON) transport = parse(env.HERALD_TRANSPORT_JSON, 'HERALD_TRANSPORT_JSON') as TransportSpec;
  else if (env.HERALD_CONFIG) transport = (parse(readFileSync(env.HERALD_CONFIG, 'utf8'), env.HERALD_CONFIG) as { transport?: TransportSpec }).transport;
  if (env.HERALD_BACKEND_JSON) {
    const backend = parse(env.HERALD_BACKEND_JSON, 'HERALD_BACKEND_JSON') as BackendSpec;
    if (backend?.kind === 'sqlite' && typeof backend.path === 'string') {
      // relative paths are relative to the config file, as the CLI resolves them
      const base = env.HERALD_CONFIG ? dirname(env.HERALD_CONFIG) : process.cwd();
      return { backend: { kind: 'sqlite', path: resolve(base, backend.path) }, transport };
    }
    if (backend?.kind === 'postgres' && typeof backend.url === 'string') return { backend, transport };
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `HERALD_BACKEND_JSON must be {"kind":"sqlite","path":…} or {"kind":"postgres","url":…} (got ${env.HERALD_BACKEND_JSON})`);
  }
  return { backend: { kind: 'sqlite', path: resolve(env.SHOP_DB ?? '.herald/shop.db') }, transport };
}

function parse(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${what} is not valid JSON: ${(cause as Error).message}`, { cause });
  }
}

/** A service's own tables, through the backend's connection or transaction. `?` placeholders. */
export interface Sql {
  /** Runs a statement; resolves to the number of rows it changed. */
  run(sql: string, ...params: unknown[]): Promise<number>;
  get<T>(sql: string, ...params: unknown[]): Promise<T | undefined>;
  all<T>(sql: string, ...params: unknown[]): Promise<T[]>;
}

const statements = new WeakMap<Database.Database, Map<string, Database.Statement>>();

/** `Sql` over a better-sqlite3 connection (synchronous underneath: safe inside a transaction callback). */
export function sqliteSql(db: Database.Database): Sql {
  let cache = statements.get(db);
  if (!cache) statements.set(db, (cache = new Map()));
  const prep = (sql: string): Database.Statement => {
    let s = cache.get(sql);
    if (!s) cache.set(sql, (s = db.prepare(sql)));
    return s;
  };
  return {
    run: async (sql, ...p) => prep(sql).run(...p).changes,
    get: async <T>(sql: string, ...p: unknown[]) => prep(sql).get(...p) as T | undefined,
    all: async <T>(sql: string, ...p: unknown[]) => prep(sql).all(...p) as T[],
  };
}

/** What a handler's transaction offers: the service's tables and the outbox, committed together. */
export interface ShopTx {
  readonly sql: Sql;
  /** Records a message in the outbox; the relay publishes it after commit. */
  publish<T>(definition: MessageDefinition<T>, data: T): void;
}

export interface Backend {
  readonly spec: BackendSpec;
  readonly transport: Transport;
  readonly deadLetters: DeadLetterStore;
  /** Where relays, schedulers and consumer groups lease partitions. */
  readonly leases: LeaseStore;
  /** The service's own writes + outbox + inbox in one local transaction. */
  readonly unitOfWork: UnitOfWork;
  /** Reads and migrations outside any transaction. */
  readonly sql: Sql;
  /** Runs DDL (several statements). */
  exec(ddl: string): Promise<void>;
  /** The event store (opened on first use). */
  eventStore(): EventStore;
  /** The SQLite event store, when the backend is SQLite. */
  sqliteEventStore(): SqliteEventStore | undefined;
  /** The saga store (opened on first use). */
  sagaStore(): SagaStore;
  /** Publishes the outbox (every service runs one; relays share the outbox's partitions by lease). */
  readonly relay: OutboxRelay;
  /** `Sql` over a transaction's native handle. */
  txSql(tx: Transaction): Sql;
  close(): Promise<void>;
}

/** Opens the configured backend: the one switch between SQLite and PostgreSQL + NATS. */
export async function openBackend(spec: BackendSpec, transportSpec?: TransportSpec): Promise<Backend> {
  if (spec.kind === 'sqlite') {
    if (transportSpec) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `the shop on SQLite uses the SQLite log as its transport; drop "transport" (got ${transportSpec.kind})`);
    mkdirSync(dirname(spec.path), { recursive: true });
    const database = openDatabase({ path: spec.path });
    const transport = createSqliteTransport({ database });
    const deadLetters = new SqliteDeadLetterStore({ database });
    // the unit of work holds its transactions across awaits: it gets a connection of its own
    const unitOfWork = createSqliteUnitOfWork({ path: spec.path });
    const outbox = createSqliteOutboxStore({ database });
    const relay = createOutboxRelay({ store: outbox, transport, leases: transport.leases, name: 'shop', pollMs: 50, onError: (e) => log('relay', String((e as Error)?.message ?? e)) });
    let store: SqliteEventStore | undefined;
    const eventStore = (): SqliteEventStore => (store ??= createSqliteEventStore({ database }));
    let sagas: SqliteSagaStore | undefined;
    return {
      spec,
      transport,
      deadLetters,
      leases: transport.leases,
      unitOfWork,
      relay,
      sql: sqliteSql(database.db),
      exec: async (ddl) => void database.db.exec(ddl),
      eventStore,
      sqliteEventStore: eventStore,
      sagaStore: () => (sagas ??= createSqliteSagaStore({ database })),
      txSql: (tx) => sqliteSql(tx.native as Database.Database),
      async close() {
        await relay.close({ timeoutMs: 3000 });
        await store?.close();
        sagas?.close();
        await transport.close({ timeoutMs: 3000 });
        await unitOfWork.close?.();
        await outbox.close();
        await deadLetters.close();
        database.close();
      },
    };
  }
  throw new HeraldError('HERALD_ERR_NOT_CONFIGURED', `the postgres backend needs the PostgreSQL stores of @herald/postgres, which this build does not have yet (${spec.url})`);
}

/** Builds a message for `tx.publish` (validated synchronously; the key is the definition's key field). */
export function message<T>(
  source: string,
  definition: MessageDefinition<T>,
  data: T,
  options: { causedBy?: CloudEvent; correlationid?: string; causationid?: string; id?: string; time?: number } = {},
): { topic: string; message: OutgoingMessage } {
  const result = definition.schema['~standard'].validate(data);
  if (result instanceof Promise) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `"${definition.type}": the shop's schemas validate synchronously`);
  if (result.issues) {
    throw new HeraldError('HERALD_ERR_SCHEMA_INVALID', `"${definition.type}" v${definition.version}: ${result.issues.map((i) => `${(i.path ?? []).map((p) => (typeof p === 'object' ? String(p.key) : String(p))).join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  }
  const value = result.value as Record<string, unknown>;
  const key = definition.keyField !== undefined ? String(value[definition.keyField]) : undefined;
  const cause = options.causedBy;
  const correlationid = cause ? (cause.correlationid ?? cause.id) : options.correlationid;
  const causationid = cause ? cause.id : options.causationid;
  const envelope = createEnvelope(
    {
      type: definition.type,
      source,
      data: value,
      dataschema: definition.dataschema,
      ...(options.id !== undefined ? { id: options.id } : {}),
      ...(key !== undefined ? { partitionkey: key } : {}),
      ...(correlationid !== undefined ? { correlationid } : {}),
      ...(causationid !== undefined ? { causationid } : {}),
    },
    options.time ?? Date.now(),
  );
  return { topic: definition.topic!, message: key === undefined ? { envelope } : { envelope, key } };
}

/**
 * Inbox: runs `fn` through `ctx.transaction` — one transaction of the consumer's unit of work
 * that also records the delivered message (group, handler, source, id); a message already
 * recorded is skipped. Answers published through `tx.publish` go to the outbox in the same
 * transaction and carry the delivered message as their cause (correlation and causation ids).
 */
export async function inInbox(backend: Backend, source: string, ctx: MessageContext, fn: (tx: ShopTx) => Promise<void>): Promise<void> {
  await ctx.transaction((tx) =>
    fn({
      sql: backend.txSql(tx),
      publish(definition, data) {
        const m = message(source, definition, data, { causedBy: ctx.envelope });
        tx.publish(m.topic, m.message);
      },
    }),
  );
}

export interface ConsumerService {
  readonly name: string;
  readonly source: string;
  readonly backend: Backend;
  readonly consumer: Consumer;
}

/**
 * The life of a consuming service: open the configured backend, create its tables (`ddl`,
 * idempotent), let `setup` register handlers, start the consumer (group = the service name) and
 * the outbox relay, and on SIGTERM/SIGINT drain the consumer, stop the relay, close the stores.
 */
export async function runConsumerService(name: string, ddl: string, setup: (s: ConsumerService) => void | Promise<void>): Promise<ConsumerService> {
  const { backend: spec, transport } = configuredBackend();
  const backend = await openBackend(spec, transport);
  await backend.exec(ddl);
  const consumer = createConsumer({
    transport: backend.transport,
    group: name,
    deadLetters: backend.deadLetters,
    unitOfWork: backend.unitOfWork,
    retry: { maxAttempts: 8, initialDelayMs: 50 },
    onError: (e) => log(name, `consumer: ${(e as Error)?.message ?? String(e)}`),
  });
  const service = { name, source: `shop/${name}`, backend, consumer };
  await setup(service);
  await consumer.start();
  await backend.relay.start();
  log(name, `running (backend ${spec.kind})`);
  untilSignal(name, async () => {
    await consumer.close({ timeoutMs: 3000 });
    await backend.close();
  });
  return service;
}

/**
 * Runs a service until SIGTERM or SIGINT, then calls `stop` once (close consumers with drain,
 * relay, stores) and exits 0; a second signal, or `stop` taking longer than `graceMs`, exits 1.
 */
export function untilSignal(service: string, stop: () => Promise<void>, graceMs = 8000): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) process.exit(1);
    stopping = true;
    log(service, `${signal}: stopping`);
    const timer = setTimeout(() => {
      log(service, `did not stop within ${graceMs} ms`);
      process.exit(1);
    }, graceMs);
    timer.unref();
    stop().then(
      () => {
        log(service, 'stopped');
        process.exit(0);
      },
      (e) => {
        log(service, `stop failed: ${(e as Error)?.stack ?? String(e)}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

/** One line to stderr, prefixed by the service name (the supervisor adds its own prefix too). */
export function log(service: string, line: string): void {
  process.stderr.write(`${new Date().toISOString()} ${service}: ${line}\n`);
}

/** A number from the environment, or `fallback`; anything else is a typed error naming the variable. */
export function envNumber(name: string, fallback: number, env: NodeJS.ProcessEnv = process.env): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${name} must be a number (got ${JSON.stringify(raw)})`);
  return n;
}
