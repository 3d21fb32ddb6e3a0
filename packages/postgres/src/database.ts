/**
 * One PostgreSQL schema shared by Herald's PostgreSQL backend: the event store, the
 * partitioned log, the consumer-group offsets, the leases and the dead letters live in the same
 * schema, so a fenced write can check its lease in the same transaction as the write itself.
 *
 * A `PgDatabase` is a `pg.Pool` bound to one schema through the connection's `search_path`
 * (every statement Herald runs uses unqualified names), with the settings every connection
 * gets at startup: `statement_timeout`, `application_name`, TLS (passed to `pg` as is), pool
 * size and connect timeout. Stores create and migrate the schema on first use
 * (`ensureMigrated` in migrations.ts).
 *
 * Failures: errors of the server or the network (connection refused or reset, the server
 * shutting down, a statement timeout, serialization/deadlock) become `HERALD_ERR_STORAGE`
 * (retryable) with the `pg` error as `cause`. After a server restart the pool drops its broken
 * connections and opens new ones on the next query: nothing to do but retry. Errors of idle
 * pooled connections are swallowed (counted in `idleErrors`), so a restart never crashes the
 * process. After `close()` every method rejects with `HERALD_ERR_CLOSED`.
 */
import { HeraldError, isHeraldError } from '@herald/core';
import pg from 'pg';

export type PgSsl = NonNullable<pg.PoolConfig['ssl']>;

export interface PgConnectionOptions {
  /** A `postgres://` URL; the other fields override its parts. */
  readonly connectionString?: string;
  readonly host?: string;
  readonly port?: number;
  readonly user?: string;
  readonly password?: string;
  readonly database?: string;
  /** The schema Herald's tables live in (default `herald`); created if missing. Letters, digits and `_`, at most 63. */
  readonly schema?: string;
  /** Pool size: most connections open at once (default 10). */
  readonly max?: number;
  /** TLS options passed to `pg` as they are (`true`, or `{ ca, cert, key, rejectUnauthorized, servername }`). Default: none. */
  readonly ssl?: PgSsl;
  /** `statement_timeout` of every connection, ms (default 30 000); 0 disables. A statement running longer fails with HERALD_ERR_STORAGE. */
  readonly statementTimeoutMs?: number;
  /** How long opening a connection may take, ms (default 10 000); 0 waits forever. */
  readonly connectTimeoutMs?: number;
  /** How long an idle pooled connection stays open, ms (default 30 000). */
  readonly idleTimeoutMs?: number;
  /** `application_name` shown in `pg_stat_activity` (default `herald`). */
  readonly applicationName?: string;
}

/** Give a `PgDatabase` to share one pool (and its migrations) between stores, or connection options. */
export type PgDatabaseSource = { readonly database: PgDatabase } | { readonly connection: PgConnectionOptions };

const SCHEMA_RE = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** Opens a pool on `options.schema` (nothing connects until the first query). */
export function createPgDatabase(options: PgConnectionOptions = {}): PgDatabase {
  return new PgDatabase(options);
}

export class PgDatabase {
  readonly schema: string;
  readonly pool: pg.Pool;
  /** Options the pool was opened with (used to open the LISTEN connection). */
  readonly options: PgConnectionOptions;
  #closed = false;
  #closing: Promise<void> | undefined;
  #idleErrors = 0;
  readonly #onClose: Array<() => void> = [];

  constructor(options: PgConnectionOptions = {}) {
    const schema = options.schema ?? 'herald';
    if (typeof schema !== 'string' || !SCHEMA_RE.test(schema)) {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `schema must be an identifier of letters, digits and _ (at most 63), got ${JSON.stringify(schema)}`);
    }
    for (const k of ['max', 'statementTimeoutMs', 'connectTimeoutMs', 'idleTimeoutMs', 'port'] as const) {
      const v = options[k];
      if (v !== undefined && (!Number.isInteger(v) || v < (k === 'max' || k === 'port' ? 1 : 0))) {
        throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${k} must be a ${k === 'max' || k === 'port' ? 'positive' : 'non-negative'} integer (got ${String(v)})`);
      }
    }
    this.schema = schema;
    this.options = options;
    this.pool = new pg.Pool(clientConfig(options, schema, options.max ?? 10));
    // An idle connection dropped by a server restart must not crash the process.
    this.pool.on('error', () => {
      this.#idleErrors++;
    });
  }

  /** Errors of idle pooled connections (a server restart shows here). */
  get idleErrors(): number {
    return this.#idleErrors;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** One statement on a pooled connection. */
  async query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: readonly unknown[]): Promise<pg.QueryResult<R>> {
    this.assertOpen();
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.pool.query<R>(text, values as unknown[]);
      } catch (e) {
        if (refusedAtConnect(e) && attempt < CONNECT_RETRIES && !this.#closed) {
          await new Promise((r) => setTimeout(r, 25 * 2 ** attempt));
          continue;
        }
        throw storageError(`query failed`, e);
      }
    }
  }

  /**
   * Runs `fn` in a transaction on one pooled connection: BEGIN, `fn`, COMMIT (ROLLBACK when it
   * throws, and the error is rethrown; a connection that broke is discarded).
   */
  async tx<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    this.assertOpen();
    let client: pg.PoolClient | undefined;
    for (let attempt = 0; !client; attempt++) {
      try {
        client = await this.pool.connect();
      } catch (e) {
        if (!(refusedAtConnect(e) && attempt < CONNECT_RETRIES && !this.#closed)) throw storageError('could not connect', e);
        await new Promise((r) => setTimeout(r, 25 * 2 ** attempt));
      }
    }
    let broken: unknown;
    // A checked-out client has no listener of the pool's: a connection dropped between two
    // statements (a server restart) would emit an unhandled 'error' and end the process.
    const onError = (e: Error): void => {
      broken = e;
    };
    client.on('error', onError);
    try {
      await client.query('BEGIN');
      const out = await fn(client);
      await client.query('COMMIT');
      return out;
    } catch (e) {
      try {
        await client.query('ROLLBACK');
      } catch (rollbackFailed) {
        broken = rollbackFailed;
      }
      // Errors of the server or the connection become HERALD_ERR_STORAGE; errors thrown by `fn` itself pass through.
      throw isHeraldError(e) || !isPgError(e) ? e : storageError('transaction failed', e);
    } finally {
      client.removeListener('error', onError);
      client.release(broken instanceof Error ? broken : undefined);
    }
  }

  /** Runs `fn` mapping failures to HERALD_ERR_STORAGE (Herald errors pass through). */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    this.assertOpen();
    try {
      return await fn();
    } catch (e) {
      throw isHeraldError(e) ? e : storageError('operation failed', e);
    }
  }

  /** A new client outside the pool with the same settings (LISTEN connections). Not connected yet. */
  newClient(): pg.Client {
    return new pg.Client(clientConfig(this.options, this.schema, 1));
  }

  assertOpen(): void {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', `PostgreSQL database (schema "${this.schema}") is closed`);
  }

  /** Runs `fn` when the database closes (the LISTEN connection of notifier.ts closes with it). */
  onClose(fn: () => void): void {
    this.#onClose.push(fn);
  }

  /** Ends the pool (waits for checked-out connections) and whatever registered `onClose`. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      for (const fn of this.#onClose.splice(0)) fn();
      await this.pool.end().catch(() => {});
    })();
    return this.#closing;
  }
}

function clientConfig(o: PgConnectionOptions, schema: string, max: number): pg.PoolConfig {
  const cfg: pg.PoolConfig = {
    max,
    connectionTimeoutMillis: o.connectTimeoutMs ?? 10_000,
    idleTimeoutMillis: o.idleTimeoutMs ?? 30_000,
    application_name: o.applicationName ?? 'herald',
    statement_timeout: o.statementTimeoutMs ?? 30_000,
    // search_path at connection startup: every statement of every pooled connection sees the schema.
    options: `-c search_path=${schema}`,
  };
  if (o.connectionString !== undefined) cfg.connectionString = o.connectionString;
  if (o.host !== undefined) cfg.host = o.host;
  if (o.port !== undefined) cfg.port = o.port;
  if (o.user !== undefined) cfg.user = o.user;
  if (o.password !== undefined) cfg.password = o.password;
  if (o.database !== undefined) cfg.database = o.database;
  if (o.ssl !== undefined) cfg.ssl = o.ssl;
  if (cfg.statement_timeout === 0) delete cfg.statement_timeout;
  return cfg;
}

/** Resolves a store's `database` or `connection` option; `owned` is true when the store opened it. */
export function resolveDatabase(source: PgDatabaseSource): { database: PgDatabase; owned: boolean } {
  if ('database' in source && source.database instanceof PgDatabase) return { database: source.database, owned: false };
  if ('connection' in source && source.connection) return { database: new PgDatabase(source.connection), owned: true };
  throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'give `database` (a PgDatabase) or `connection` (connection options)');
}

/** Refusals that happen only while opening a connection (nothing was sent): too many connections, the server starting up. */
function refusedAtConnect(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return code === '53300' || code === '57P03';
}
/** How often a refused connection is tried again (25 ms doubling: about 0.8 s in all). */
const CONNECT_RETRIES = 5;

/** SQLSTATE classes and codes that mean "try again": connection, resources, shutdown, timeouts, serialization. */
export function isTransientPgError(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  if (typeof code !== 'string') return isPgError(e); // connection terminated, pool timeouts
  if (/^(08|53|57|58)/.test(code)) return true; // connection, resources, operator intervention (shutdown, statement timeout 57014), system
  if (code === '40001' || code === '40P01') return true; // serialization failure, deadlock
  return ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN'].includes(code);
}

/** An error of the server, the connection or the pool (not one thrown by user code). */
export function isPgError(e: unknown): boolean {
  if (typeof (e as { code?: unknown })?.code === 'string') return true;
  const m = (e as Error)?.message;
  return typeof m === 'string' && /Connection terminated|timeout exceeded when trying to connect|connection error|Client was closed|not queryable/i.test(m);
}

export function storageError(what: string, cause: unknown): HeraldError {
  if (isHeraldError(cause)) return cause;
  const code = (cause as { code?: unknown })?.code;
  return new HeraldError('HERALD_ERR_STORAGE', `PostgreSQL: ${what}: ${(cause as Error)?.message ?? String(cause)}`, {
    cause,
    retryable: isTransientPgError(cause),
    details: typeof code === 'string' ? { sqlstate: code } : {},
  });
}

/** Quotes an identifier (already checked to be plain). */
export function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
