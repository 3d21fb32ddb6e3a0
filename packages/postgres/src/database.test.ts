// PgDatabase without a server: option checks (typed errors naming the option) and what reaches
// the pg pool — TLS options untouched, statement_timeout (0 = none), application_name, search_path.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { isHeraldError } from '@herald/core';
import { PgDatabase } from './database.ts';

type PoolOptions = { ssl?: unknown; statement_timeout?: number; application_name?: string; options?: string; max?: number; connectionTimeoutMillis?: number };
const optionsOf = (db: PgDatabase): PoolOptions => (db.pool as unknown as { options: PoolOptions }).options;

it('passes TLS, statement_timeout, application_name, pool size and the schema to every pooled connection', async () => {
  const ssl = { rejectUnauthorized: true, ca: '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----', servername: 'db.internal' };
  const db = new PgDatabase({ schema: 'orders', ssl, statementTimeoutMs: 1500, applicationName: 'orders-svc', max: 7, connectTimeoutMs: 250 });
  const o = optionsOf(db);
  assert.deepEqual(o.ssl, ssl, 'TLS options reach pg as given');
  assert.equal(o.statement_timeout, 1500);
  assert.equal(o.application_name, 'orders-svc');
  assert.equal(o.options, '-c search_path=orders');
  assert.equal(o.max, 7);
  assert.equal(o.connectionTimeoutMillis, 250);
  await db.close();
  const none = new PgDatabase({ statementTimeoutMs: 0 });
  assert.equal(optionsOf(none).statement_timeout, undefined, '0 disables statement_timeout');
  assert.equal(optionsOf(none).options, '-c search_path=herald', 'the default schema');
  await none.close();
});

it('refuses bad options with HERALD_ERR_INVALID_ARGUMENT naming the option', () => {
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ schema: 'a-b' }, /schema/],
    [{ schema: 'x'.repeat(64) }, /schema/],
    [{ max: 0 }, /max/],
    [{ statementTimeoutMs: -1 }, /statementTimeoutMs/],
    [{ connectTimeoutMs: 1.5 }, /connectTimeoutMs/],
    [{ port: 0 }, /port/],
  ];
  for (const [o, re] of bad) {
    assert.throws(() => new PgDatabase(o as never), (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && re.test((e as Error).message), JSON.stringify(o));
  }
});
