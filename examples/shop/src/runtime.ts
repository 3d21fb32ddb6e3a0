/**
 * What every shop process shares: which backend the configuration names, SQL over it, building
 * messages, logging and shutdown. The supervisor (`herald start`) passes `HERALD_BACKEND_JSON`
 * (and `HERALD_CONFIG`, whose `transport` entry names a broker); run by hand, a service falls
 * back to `SHOP_DB` or `.herald/shop.db`. `backend.ts` opens the stores.
 *
 * Services write their own tables through `Sql`, a four-method view over the backend's
 * connection (`?` placeholders; portable DDL), so the same handler code runs on both.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { type CloudEvent, createEnvelope, HeraldError, type MessageDefinition, type OutgoingMessage } from '@herald/core';
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
