// The herald CLI against a SQLite file seeded here: output, exit codes, JSON. A few runs go through
// a child process (the real entry point and its exit code); the rest call runCli() in this
// process with the same arguments (one child costs 1–5 s of tsx start-up on a loaded machine).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { createEnvelope } from '@herald/core';
import { createSqliteEventStore, createSqliteTransport, openDatabase, SqliteDeadLetterStore } from '@herald/sqlite';
import { runCli } from './program.ts';

const MAIN = fileURLToPath(new URL('./main.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');
const dir = mkdtempSync(join(tmpdir(), 'herald-cli-'));
const dbPath = join(dir, 'data', 'test.db');
const config = join(dir, 'herald.config.json');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** `herald <args>` as a child process in the test folder. */
function heraldChild(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', TSX, MAIN, ...args], { cwd: dir, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** `herald --config <test config> <args>` through runCli() in this process. */
async function herald(...args: string[]): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const withConfig = args[0] === '--config' ? args : ['--config', config, ...args];
  const code = await runCli(withConfig, { out: (t) => (stdout += t), err: (t) => (stderr += t) });
  return { code, stdout, stderr };
}
const json = (r: Run): Record<string, unknown> => JSON.parse(r.stdout) as Record<string, unknown>;

before(async () => {
  writeFileSync(
    config,
    JSON.stringify({
      name: 'cli-test',
      backend: { kind: 'sqlite', path: 'data/test.db' },
      projections: [{ name: 'totals', module: 'totals.ts' }],
    }),
  );
  writeFileSync(
    join(dir, 'totals.ts'),
    `export default {
      name: 'totals',
      category: 'order',
      tables: { totals: 'CREATE TABLE {totals} (id TEXT PRIMARY KEY, total INTEGER NOT NULL)' },
      handle(events, ctx) {
        const up = ctx.statement('INSERT INTO {totals} (id, total) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET total = total + excluded.total');
        for (const e of events) up.run(e.streamId, e.data.amount ?? 0);
      },
    };\n`,
  );
  // a fresh database through `herald migrate`, then seeded through the stores
  const migrated = await herald('migrate', '--json');
  assert.equal(migrated.code, 0, migrated.stderr);
  assert.equal(json(migrated).created, true);

  const database = openDatabase({ path: dbPath });
  const deadLetters = new SqliteDeadLetterStore({ database });
  for (const [i, group] of ['billing', 'billing', 'shipping'].entries()) {
    const envelope = createEnvelope({ type: 'shop.order.placed', source: 'test', data: { orderId: `o-${i}` }, extensions: { partitionkey: `o-${i}` } });
    await deadLetters.add({
      group,
      topic: 'orders',
      partition: 0,
      key: `o-${i}`,
      handler: 'shop.order.placed',
      envelope,
      raw: JSON.stringify(envelope),
      position: String(i),
      error: { code: 'HERALD_ERR_PERMANENT', message: `declined ${i}` },
      attempts: 1,
      firstFailedAt: 1_700_000_000_000 + i,
      lastFailedAt: 1_700_000_000_000 + i,
    });
  }
  const store = createSqliteEventStore({ database });
  await store.appendToStream('order-1', [
    { type: 'OrderPlaced', data: { amount: 30 } },
    { type: 'OrderPaid', data: { amount: 12 } },
  ]);
  await store.appendToStream('order-2', [{ type: 'OrderPlaced', data: { amount: 5 } }]);
  const transport = createSqliteTransport({ database });
  await transport.ensureTopic('orders', { partitions: 2 });
  await transport.publish('orders', [1, 2, 3, 4, 5].map((n) => ({ envelope: createEnvelope({ type: 't', source: 'test', data: { n } }), key: `k${n}` })));
  await transport.close();
  await store.close();
  await deadLetters.close();
  database.close();
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('herald CLI', () => {
  it('exits 2 on usage errors: unknown option, missing config, bad config field, no selector', async () => {
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ name: 'x', backend: { kind: 'sqlite', path: 'a.db' }, services: [{ name: 'a', entry: 'missing.ts' }] }));
    const [unknown, missing, bad, noSelector, both] = await Promise.all([
      heraldChild('dlq', 'list', '--bogus'),
      herald('--config', join(dir, 'nope.json'), 'dlq', 'list'),
      herald('--config', join(dir, 'bad.json'), 'status'),
      herald('dlq', 'redrive'),
      herald('dlq', 'discard', '--id', '1', '--all', '--json'),
    ]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown option '--bogus'/);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^herald: HERALD_ERR_INVALID_ARGUMENT: no config file at .*nope\.json/);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /bad\.json: services\[0\]\.entry names a file that does not exist/);
    assert.equal(noSelector.code, 2);
    assert.match(noSelector.stderr, /--id <ids\.\.\.>, or filter options with --all/);
    assert.equal(both.code, 2);
    assert.deepEqual(json(both), { error: { code: 'HERALD_ERR_INVALID_ARGUMENT', message: 'give either --id or filter options / --all, not both' } });
  });

  it('lists, shows and filters dead letters; a missing id exits 3', async () => {
    const [all, billing, show, text, missing] = await Promise.all([
      heraldChild('dlq', 'list', '--json'),
      herald('dlq', 'list', '--group', 'billing', '--limit', '1', '--json'),
      herald('dlq', 'show', '2', '--json'),
      herald('dlq', 'list'),
      heraldChild('dlq', 'show', '999'),
    ]);
    assert.equal(all.code, 0, all.stderr);
    const entries = json(all).entries as Array<{ id: string; group: string; error: { message: string } }>;
    assert.deepEqual(entries.map((e) => [Number(e.id), e.group, e.error.message]), [
      [1, 'billing', 'declined 0'],
      [2, 'billing', 'declined 1'],
      [3, 'shipping', 'declined 2'],
    ]);
    assert.equal(json(all).total, 3);
    assert.equal(json(billing).total, 2);
    assert.equal((json(billing).entries as unknown[]).length, 1);
    assert.equal(typeof json(billing).nextCursor, 'string');
    const entry = json(show).entry as { envelope: { data: { orderId: string } }; raw: string };
    assert.equal(entry.envelope.data.orderId, 'o-1');
    assert.match(text.stdout, /^ID\s+GROUP\s+TOPIC/);
    assert.match(text.stdout, /3 of 3/);
    assert.equal(missing.code, 3);
    assert.match(missing.stderr, /HERALD_ERR_NOT_FOUND: no dead letter with id "999"/);
  });

  it('reads a stream (3 when it does not exist), reports topics, rebuilds a projection', async () => {
    const [stream, page, none, status, rebuild, unknownProjection] = await Promise.all([
      herald('streams', 'read', 'order-1', '--json'),
      herald('streams', 'read', 'order-1', '--from', '2', '--limit', '1'),
      herald('streams', 'read', 'order-404'),
      herald('status', '--json'),
      herald('projections', 'rebuild', 'totals', '--json'),
      herald('projections', 'rebuild', 'nope'),
    ]);
    assert.equal(stream.code, 0, stream.stderr);
    const s = json(stream) as { streamVersion: number; events: Array<{ type: string; position: string; data: unknown }> };
    assert.equal(s.streamVersion, 2);
    assert.deepEqual(s.events.map((e) => [e.type, e.position]), [
      ['OrderPlaced', '1'],
      ['OrderPaid', '2'],
    ]);
    assert.match(page.stdout, /^VERSION\s+POSITION\s+TYPE/);
    assert.match(page.stdout, /OrderPaid/);
    assert.doesNotMatch(page.stdout, /OrderPlaced/);
    assert.equal(none.code, 3);
    assert.match(none.stderr, /no stream "order-404"/);
    assert.equal(status.code, 0, status.stderr);
    const st = json(status) as { services: unknown; topics: Array<{ name: string; partitions: number; published: number }>; deadLetters: { total: number } };
    assert.equal(st.services, null);
    assert.deepEqual(st.topics.map((t) => [t.name, t.partitions, t.published]), [['orders', 2, 5]]);
    assert.equal(st.deadLetters.total, 3);
    assert.equal(rebuild.code, 0, rebuild.stderr);
    assert.equal(json(rebuild).events, 3);
    const database = openDatabase({ path: dbPath });
    try {
      assert.deepEqual(database.db.prepare('SELECT id, total FROM totals ORDER BY id').all(), [
        { id: 'order-1', total: 42 },
        { id: 'order-2', total: 5 },
      ]);
    } finally {
      database.close();
    }
    assert.equal(unknownProjection.code, 3);
    assert.match(unknownProjection.stderr, /no projection named "nope".*known: totals/);
  });

  it('redrives by id and discards by filter (run last: it changes the seeded dead letters)', async () => {
    const redrive = await herald('dlq', 'redrive', '--id', '1', '--json');
    assert.equal(redrive.code, 0, redrive.stderr);
    assert.deepEqual(json(redrive), { marked: 1 });
    const missing = await herald('dlq', 'redrive', '--id', '1', '77');
    assert.equal(missing.code, 3);
    const discard = await herald('dlq', 'discard', '--group', 'shipping', '--all', '--json');
    assert.deepEqual(json(discard), { discarded: 1 });
    const left = json(await herald('dlq', 'list', '--json')).entries as Array<{ id: string; status: string }>;
    assert.deepEqual(left.map((e) => [Number(e.id), e.status]), [
      [1, 'redrive'],
      [2, 'dead'],
    ]);
  });
});
