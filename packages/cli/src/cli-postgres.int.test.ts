// The herald CLI on a PostgreSQL backend (127.0.0.1:5432, database `test`, a random schema):
// migrate, dead letters, streams, status with topics and lag, the causation tree of a real flow.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type CausationGraph, createEnvelope } from '@herald/core';
import { createPgDatabase, createPostgresEventStore, createPostgresTransport, createPostgresUnitOfWork, PostgresDeadLetterStore } from '@herald/postgres';
import { serverSkipReason } from '@herald/testkit';
import { runCausationFlow } from './causation-test-flow.ts';
import { runCli } from './program.ts';

const PG_PORT = Number(process.env.HERALD_PG_PORT ?? 5432);
// trust auth: the password is ignored by the server, and must never be printed
const URL = `postgres://postgres:pw-not-printed@127.0.0.1:${PG_PORT}/${process.env.HERALD_PG_DATABASE ?? 'test'}`;
const skip = await serverSkipReason('PostgreSQL', PG_PORT);

describe('herald CLI on PostgreSQL', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'herald-cli-pg-'));
  const schema = `hcli_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
  const config = join(dir, 'herald.config.json');
  const herald = async (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
    let stdout = '';
    let stderr = '';
    const code = await runCli(['--config', config, ...args], { out: (t) => (stdout += t), err: (t) => (stderr += t) });
    return { code, stdout, stderr };
  };

  before(async () => {
    writeFileSync(config, JSON.stringify({ name: 'pg', backend: { kind: 'postgres', url: URL, schema } }));
  });
  after(async () => {
    const db = createPgDatabase({ connectionString: URL, schema: 'public', max: 1 });
    await db.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('migrates, then reads dead letters, a stream and topic lag written by the stores', async () => {
    const migrated = await herald('migrate', '--json');
    assert.equal(migrated.code, 0, migrated.stderr);
    const m = JSON.parse(migrated.stdout) as { backend: string; schema: string; versions: Record<string, number> };
    assert.equal(m.backend, 'postgres');
    assert.equal(m.schema, schema);
    assert.ok(Object.keys(m.versions).length >= 2 && Object.values(m.versions).every((v) => v >= 1), JSON.stringify(m.versions));
    assert.equal((await herald('migrate', '--json')).code, 0, 'migrate is idempotent');

    const database = createPgDatabase({ connectionString: URL, schema, max: 2 });
    try {
      const deadLetters = new PostgresDeadLetterStore({ database });
      const envelope = createEnvelope({ type: 'shop.order.placed', source: 'test', data: { orderId: 'o-1' }, extensions: { correlationid: 'c-1' } });
      await deadLetters.add({ group: 'billing', topic: 'orders', partition: 0, key: 'o-1', handler: 'h', envelope, raw: JSON.stringify(envelope), position: '0', error: { message: 'declined' }, attempts: 2, firstFailedAt: 1, lastFailedAt: 2 });
      const store = createPostgresEventStore({ database });
      await store.appendToStream('order-1', [{ type: 'OrderPlaced', data: { total: 3 }, correlationId: 'c-1' }]);
      const transport = createPostgresTransport({ database });
      await transport.ensureTopic('orders', { partitions: 2 });
      await transport.publish('orders', [1, 2, 3].map((n) => ({ envelope: createEnvelope({ type: 't', source: 'test', data: { n } }), key: `k${n}` })));
      await transport.close();
      await store.close();
      await deadLetters.close();
    } finally {
      await database.close();
    }

    const list = await herald('dlq', 'list', '--json');
    assert.equal(list.code, 0, list.stderr);
    const entries = (JSON.parse(list.stdout) as { entries: Array<{ group: string; error: { message: string } }> }).entries;
    assert.deepEqual(entries.map((e) => [e.group, e.error.message]), [['billing', 'declined']]);
    const stream = await herald('streams', 'read', 'order-1', '--json');
    assert.equal(stream.code, 0, stream.stderr);
    assert.deepEqual((JSON.parse(stream.stdout) as { events: Array<{ type: string }> }).events.map((e) => e.type), ['OrderPlaced']);
    assert.equal((await herald('streams', 'read', 'order-404')).code, 3);
    const status = await herald('status', '--json');
    assert.equal(status.code, 0, status.stderr);
    const st = JSON.parse(status.stdout) as { topics: Array<{ name: string; partitions: number; published: number }>; deadLetters: { total: number } };
    assert.deepEqual(st.topics.map((t) => [t.name, t.partitions, t.published]), [['orders', 2, 3]]);
    assert.equal(st.deadLetters.total, 1);
    const text = await herald('status');
    assert.match(text.stdout, /postgres:\*\*\*@127\.0\.0\.1/);
    assert.doesNotMatch(text.stdout + text.stderr, /pw-not-printed/, 'the password is not printed');
  });

  it('herald causation draws the tree of a real flow: nesting, an inbox duration, the declined payment; --json is the graph', async () => {
    const database = createPgDatabase({ connectionString: URL, schema, max: 6 });
    const transport = createPostgresTransport({ database, pollMs: 5 });
    const deadLetters = new PostgresDeadLetterStore({ database });
    const unitOfWork = createPostgresUnitOfWork({ database });
    try {
      await runCausationFlow({ transport, deadLetters, unitOfWork, correlationId: 'corr-pg-1' });
    } finally {
      await transport.close();
      await deadLetters.close();
      await unitOfWork.close();
      await database.close();
    }
    const r = await herald('causation', 'corr-pg-1');
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.equal(lines[0], 'correlation corr-pg-1: 3 message(s)', r.stdout);
    assert.match(lines[1]!, /^order\.place {2}shop\/order {2}topic commands\/\d+@\d+ {2}\+0 ms$/, r.stdout);
    assert.match(lines[2]!, /^│ {2}✓ orders\/order\.place {2}\d+ ms {2}\(inbox\)$/, r.stdout);
    assert.ok(Number(/(\d+) ms/.exec(lines[2]!)![1]) >= 25, `the inbox keeps the handler's ≥ 30 ms: ${lines[2]}`);
    assert.match(lines[3]!, /^└─ order\.placed {2}shop\/order /, r.stdout);
    assert.match(lines[5]!, /^ {3}└─ payment\.requested {2}shop\/billing {2}.*dead letter #\d+.* {2}✗ failed$/, r.stdout);
    assert.match(lines[6]!, /^ {9}✗ bank\/payment\.requested {2}1 attempt {2}\(dead letter\) {2}card declined$/, r.stdout);
    const g = JSON.parse((await herald('causation', 'corr-pg-1', '--json')).stdout) as CausationGraph;
    assert.deepEqual([g.correlationId, g.size, g.roots.length, g.roots[0]!.children[0]!.children[0]!.failed], ['corr-pg-1', 3, 1, true]);
    assert.equal((await herald('causation', 'corr-nobody')).code, 3);
  });
});
