/**
 * Versioned, idempotent migrations of Herald's PostgreSQL schema, by component.
 *
 * A component (`herald_log`: topics, log, offsets, leases, dead letters; `herald_eventstore`:
 * events, streams, checkpoints, snapshots, projections; later the outbox, inbox, sagas,
 * scheduler) is a name and an ordered list of migrations: migration n takes the component from
 * version n-1 to n. Versions are kept per component in `herald_meta` (component, version), so
 * components are added independently and a service's own tables can share the schema.
 *
 * `migrate()` runs in ONE transaction that first takes `pg_advisory_xact_lock` on a key derived
 * from the schema name: concurrent runners (several processes starting at once, `herald migrate`
 * beside a running service) queue behind each other, and each applies only what is still
 * missing, so running it any number of times, concurrently or not, has the effect of running
 * it once. DDL is transactional in PostgreSQL: a failed migration leaves nothing behind.
 *
 * A schema migrated by newer code (a stored version above what this code knows) is refused
 * with `HERALD_ERR_SCHEMA_TOO_NEW` before anything is changed.
 */
import { HeraldError } from '@herald/core';
import type pg from 'pg';
import { type PgConnectionOptions, PgDatabase } from './database.ts';

export interface PgComponent {
  /** Stable name, the key in `herald_meta`. */
  readonly name: string;
  /** Migration n (1-based) takes the component from version n-1 to n. Plain SQL, may hold several statements. */
  readonly migrations: readonly string[];
}

export interface MigrateOptions {
  /** A `PgDatabase`, or connection options (a pool is opened and closed for the run). */
  readonly database?: PgDatabase;
  readonly connection?: PgConnectionOptions;
  /** Components to migrate (default: every component this package defines). */
  readonly components?: readonly PgComponent[];
}

export interface MigrateResult {
  readonly schema: string;
  /** Per component: the version before and after. */
  readonly components: ReadonlyArray<{ readonly name: string; readonly from: number; readonly to: number }>;
}

const registry: PgComponent[] = [];

/** Adds a component to the default set `migrate()` applies (each store module registers its own). */
export function registerComponent(c: PgComponent): PgComponent {
  if (!registry.some((r) => r.name === c.name)) registry.push(c);
  return c;
}

/** The components registered so far (every module of this package that was imported). */
export function registeredComponents(): readonly PgComponent[] {
  return [...registry];
}

/**
 * Creates the schema if needed and applies every missing migration of `components`.
 * Idempotent and safe to run concurrently (see the module doc). Used by every store on first
 * use and by `herald migrate`.
 */
export async function migrate(options: MigrateOptions): Promise<MigrateResult> {
  let db = options.database;
  let owned = false;
  if (!db) {
    if (!options.connection) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'migrate needs `database` or `connection`');
    db = new PgDatabase(options.connection);
    owned = true;
  }
  const components = options.components ?? registeredComponents();
  const schema = db.schema;
  try {
    return await db.tx(async (client) => {
      await client.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [`herald.migrate:${schema}`]);
      await client.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
      await client.query(`SET LOCAL search_path TO "${schema}"`);
      await client.query(`CREATE TABLE IF NOT EXISTS herald_meta (component text PRIMARY KEY, version integer NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())`);
      const out: Array<{ name: string; from: number; to: number }> = [];
      const stored = await versions(client);
      // Refuse before changing anything.
      for (const c of components) {
        const v = stored.get(c.name) ?? 0;
        if (v > c.migrations.length) {
          throw new HeraldError(
            'HERALD_ERR_SCHEMA_TOO_NEW',
            `schema "${schema}" has component "${c.name}" at version ${v}, but this code knows only up to version ${c.migrations.length}: run newer code, or use another schema`,
            { details: { schema, component: c.name, storedVersion: v, codeVersion: c.migrations.length } },
          );
        }
      }
      for (const c of components) {
        const from = stored.get(c.name) ?? 0;
        for (let n = from + 1; n <= c.migrations.length; n++) await client.query(c.migrations[n - 1]!);
        if (from < c.migrations.length) {
          await client.query(
            `INSERT INTO herald_meta (component, version) VALUES ($1, $2) ON CONFLICT (component) DO UPDATE SET version = excluded.version, updated_at = now()`,
            [c.name, c.migrations.length],
          );
        }
        out.push({ name: c.name, from, to: c.migrations.length });
      }
      return { schema, components: out };
    });
  } finally {
    if (owned) await db.close();
  }
}

async function versions(client: pg.PoolClient): Promise<Map<string, number>> {
  const r = await client.query<{ component: string; version: number }>(`SELECT component, version FROM herald_meta`);
  return new Map(r.rows.map((row) => [row.component, row.version]));
}

/** Drops a schema and everything in it (tests and tear-down tools). */
export async function dropSchema(db: PgDatabase, schema = db.schema): Promise<void> {
  await db.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
}

const migrated = new WeakMap<PgDatabase, Map<string, Promise<unknown>>>();

/**
 * `migrate()` once per database object and component set (what stores call on first use). A
 * failed run is forgotten, so the next call tries again.
 */
export function ensureMigrated(db: PgDatabase, components: readonly PgComponent[]): Promise<void> {
  let m = migrated.get(db);
  if (!m) migrated.set(db, (m = new Map()));
  const key = components.map((c) => c.name).join(',');
  let p = m.get(key);
  if (!p) {
    p = migrate({ database: db, components });
    m.set(key, p);
    p.catch(() => m.delete(key));
  }
  return p.then(() => undefined);
}
