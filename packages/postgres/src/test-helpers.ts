// Test helpers: the shared PostgreSQL server on 127.0.0.1:5432 (trust auth, database `test`),
// one random schema per test, dropped at the end.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { type PgConnectionOptions, PgDatabase } from './database.ts';

export const PG_PORT = Number(process.env.HERALD_PG_PORT ?? 5432);
export const PG_BASE: PgConnectionOptions = { host: '127.0.0.1', port: PG_PORT, user: 'postgres', database: process.env.HERALD_PG_DATABASE ?? 'test' };

/** A fresh schema name (lower case, so it needs no quoting in psql). */
export function schemaName(prefix = 'ht'): string {
  return `${prefix}_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
}

/** Connection options on a fresh schema. */
export function freshConnection(extra: Partial<PgConnectionOptions> = {}): PgConnectionOptions {
  return { ...PG_BASE, schema: schemaName(), max: 2, ...extra }; // small pools: many suites share the server's max_connections
}

/** Drops `schema` on the shared server (its own short-lived connection). */
export async function dropSchema(schema: string, base: PgConnectionOptions = PG_BASE): Promise<void> {
  const c = new pg.Client({ host: base.host, port: base.port, user: base.user, database: base.database });
  c.on('error', () => {});
  try {
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await c.end().catch(() => {});
  }
}

/** A database on a fresh schema, and its cleanup (closes the pool, drops the schema). */
export function freshDatabase(extra: Partial<PgConnectionOptions> = {}): { database: PgDatabase; cleanup: () => Promise<void> } {
  const database = new PgDatabase(freshConnection(extra));
  return {
    database,
    cleanup: async () => {
      await database.close();
      await dropSchema(database.schema);
    },
  };
}
