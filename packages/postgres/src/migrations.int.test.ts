// Migrations and connection settings against the shared server: idempotent under concurrent
// runners, refusal of a schema migrated by newer code (typed), statement_timeout and
// application_name on every pooled connection, one schema per instance.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { isHeraldError } from '@herald/core';
import { serverSkipReason } from '@herald/testkit';
import { PgDatabase } from './database.ts';
import { ensureMigrated, migrate, type PgComponent } from './migrations.ts';
import { EVENT_STORE_COMPONENT, LOG_COMPONENT } from './schema.ts';
import { dropSchema, freshConnection, PG_PORT } from './test-helpers.ts';

const skip = await serverSkipReason('PostgreSQL', PG_PORT);
const schemas: string[] = [];
after(async () => {
  for (const s of schemas) await dropSchema(s).catch(() => {});
});

function fresh(extra: Parameters<typeof freshConnection>[0] = {}): PgDatabase {
  const c = freshConnection(extra);
  schemas.push(c.schema!);
  return new PgDatabase(c);
}

describe('postgres migrations and connection settings', { skip }, () => {
  it('eight concurrent runners apply each migration once; running again changes nothing', async () => {
    const first = fresh();
    const dbs = [first, ...Array.from({ length: 7 }, () => new PgDatabase(first.options))];
    try {
      const results = await Promise.all(dbs.map((database) => migrate({ database, components: [LOG_COMPONENT, EVENT_STORE_COMPONENT] })));
      const applied = results.flatMap((r) => r.components.filter((c) => c.from < c.to));
      assert.equal(applied.length, 2, `each component migrated by exactly one runner (got ${JSON.stringify(applied)})`);
      const again = await migrate({ database: first, components: [LOG_COMPONENT, EVENT_STORE_COMPONENT] });
      const log = LOG_COMPONENT.migrations.length;
      const es = EVENT_STORE_COMPONENT.migrations.length;
      assert.deepEqual(again.components.map((c) => [c.name, c.from, c.to]), [
        ['herald_log', log, log],
        ['herald_eventstore', es, es],
      ]);
      const meta = await first.query<{ component: string; version: number }>('SELECT component, version FROM herald_meta ORDER BY component');
      assert.deepEqual(meta.rows.map((r) => [r.component, r.version]), [
        ['herald_eventstore', es],
        ['herald_log', log],
      ]);
    } finally {
      for (const d of dbs) await d.close();
    }
  });

  it('a schema migrated by newer code is refused with HERALD_ERR_SCHEMA_TOO_NEW, nothing changed', async () => {
    const database = fresh();
    try {
      const v2: PgComponent = { name: 'herald_test_component', migrations: ['CREATE TABLE t_one (id int)', 'CREATE TABLE t_two (id int)'] };
      await migrate({ database, components: [v2] });
      const v1: PgComponent = { name: 'herald_test_component', migrations: ['CREATE TABLE t_one (id int)'] };
      const other: PgComponent = { name: 'herald_other', migrations: ['CREATE TABLE t_other (id int)'] };
      await assert.rejects(
        () => ensureMigrated(database, [other, v1]),
        (e: unknown) => {
          assert.ok(isHeraldError(e, 'HERALD_ERR_SCHEMA_TOO_NEW'), `typed error (got ${String(e)})`);
          assert.match((e as Error).message, /herald_test_component.*version 2.*up to version 1/);
          assert.deepEqual((e as { details: Record<string, unknown> }).details, { schema: database.schema, component: 'herald_test_component', storedVersion: 2, codeVersion: 1 });
          return true;
        },
      );
      const t = await database.query<{ n: string }>(`SELECT count(*) AS n FROM pg_tables WHERE schemaname = $1 AND tablename = 't_other'`, [database.schema]);
      assert.equal(t.rows[0]!.n, '0', 'the other component was not migrated either');
    } finally {
      await database.close();
    }
  });

  it('every pooled connection has the schema, statement_timeout and application_name', async () => {
    const database = fresh({ statementTimeoutMs: 200, applicationName: 'herald-test-app' });
    try {
      await ensureMigrated(database, [LOG_COMPONENT]);
      const r = await database.query<{ sp: string; st: string; app: string }>(`SELECT current_setting('search_path') AS sp, current_setting('statement_timeout') AS st, current_setting('application_name') AS app`);
      assert.deepEqual(r.rows[0], { sp: database.schema, st: '200ms', app: 'herald-test-app' });
      await assert.rejects(
        () => database.query('SELECT pg_sleep(2)'),
        (e: unknown) => isHeraldError(e, 'HERALD_ERR_STORAGE') && e.retryable && (e as { details: { sqlstate?: string } }).details.sqlstate === '57014',
        'a statement past statement_timeout fails with a retryable HERALD_ERR_STORAGE naming SQLSTATE 57014',
      );
      assert.throws(() => new PgDatabase({ schema: 'bad-name; drop' }), (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
      assert.throws(() => new PgDatabase({ max: 0 }), (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
    } finally {
      await database.close();
    }
    await assert.rejects(() => database.query('SELECT 1'), (e: unknown) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
  });
});
