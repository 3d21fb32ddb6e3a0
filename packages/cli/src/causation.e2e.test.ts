// `herald causation` on a SQLite file written by a real flow (runCausationFlow): the tree in the
// terminal (nesting, services, an inbox handler's duration, the declined payment with its error),
// `--json` as the CausationGraph, exit 3 when nothing carries the id.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CausationGraph, CausationNode } from '@herald/core';
import { createSqliteTransport, createSqliteUnitOfWork, openDatabase, SqliteDeadLetterStore } from '@herald/sqlite';
import { runCausationFlow } from './causation-test-flow.ts';
import { runCli } from './program.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-cli-causation-'));
const config = join(dir, 'herald.config.json');
const CORRELATION = 'corr-checkout-1';

async function herald(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(['--config', config, ...args], { out: (t) => (stdout += t), err: (t) => (stderr += t) });
  return { code, stdout, stderr };
}

before(async () => {
  writeFileSync(config, JSON.stringify({ name: 'causation', backend: { kind: 'sqlite', path: 'data/flow.db' } }));
  mkdirSync(join(dir, 'data'));
  const path = join(dir, 'data', 'flow.db');
  const database = openDatabase({ path });
  const transport = createSqliteTransport({ database, pollMs: 5 });
  const deadLetters = new SqliteDeadLetterStore({ database });
  const unitOfWork = createSqliteUnitOfWork({ path });
  try {
    await runCausationFlow({ transport, deadLetters, unitOfWork, correlationId: CORRELATION });
  } finally {
    await transport.close();
    await deadLetters.close();
    await unitOfWork.close();
    database.close();
  }
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('herald causation (SQLite)', () => {
  it('draws the tree: messages nested by cause, services, handlers with durations, the failure with its error', async () => {
    const r = await herald('causation', CORRELATION);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    const at = (re: RegExp): number => {
      const i = lines.findIndex((l) => re.test(l));
      assert.ok(i >= 0, `a line matching ${re} in:\n${r.stdout}`);
      return i;
    };
    assert.match(lines[0]!, /^correlation corr-checkout-1: 3 message\(s\)$/);
    const place = at(/^order\.place {2}shop\/order {2}topic commands\/\d+@\d+ {2}\+0 ms$/);
    const placeHandler = at(/^│ {2}✓ orders\/order\.place {2}(\d+) ms {2}\(inbox\)$/);
    const placed = at(/^└─ order\.placed {2}shop\/order {2}topic orders\/\d+@\d+ {2}\+\d+ ms$/);
    const billing = at(/^ {3}│ {2}✓ billing\/order\.placed {2}[\d.]+ ms {2}\(inbox\)$/);
    const charge = at(/^ {3}└─ payment\.requested {2}shop\/billing {2}topic payments\/\d+@\d+, dead letter #\d+ \(dead\) {2}\+\d+ ms {2}✗ failed$/);
    const declined = at(/^ {9}✗ bank\/payment\.requested {2}1 attempt {2}\(dead letter\) {2}card declined$/);
    assert.deepEqual([place, placeHandler, placed, billing, charge, declined], [1, 2, 3, 4, 5, 6], r.stdout);
    const duration = Number(/(\d+) ms/.exec(lines[placeHandler]!)![1]);
    assert.ok(duration >= 25 && duration < 5000, `the inbox keeps the handler's ≥ 30 ms: ${lines[placeHandler]}`);
    assert.doesNotMatch(r.stdout, /o-2/);
  });

  it('--json prints the CausationGraph', async () => {
    const r = await herald('causation', CORRELATION, '--json');
    assert.equal(r.code, 0, r.stderr);
    const g = JSON.parse(r.stdout) as CausationGraph;
    assert.equal(g.correlationId, CORRELATION);
    assert.equal(g.size, 3);
    assert.deepEqual(g.missing, []);
    const flat = (n: CausationNode, depth = 0): string[] => [`${'  '.repeat(depth)}${n.type} ${n.source}${n.failed ? ' FAILED' : ''}`, ...n.children.flatMap((c) => flat(c, depth + 1))];
    assert.deepEqual(g.roots.flatMap((n) => flat(n)), ['order.place shop/order', '  order.placed shop/order', '    payment.requested shop/billing FAILED']);
    const place = g.roots[0]!;
    assert.deepEqual(place.handlers.map((h) => [h.from, h.group, h.handler, h.failed]), [['inbox', 'orders', 'order.place', false]]);
    assert.ok(place.handlers[0]!.durationMs! >= 25);
    const failure = place.children[0]!.children[0]!.handlers.find((h) => h.failed)!;
    assert.deepEqual([failure.from, failure.group, failure.error, failure.attempts], ['dead letter', 'bank', 'card declined', 1]);
  });

  it('exits 3 with one line when nothing carries the correlation id; a bad --limit is a usage error', async () => {
    const [none, noneJson, badLimit] = await Promise.all([herald('causation', 'corr-nobody'), herald('causation', 'corr-nobody', '--json'), herald('causation', CORRELATION, '--limit', '0')]);
    assert.equal(none.code, 3);
    assert.equal(none.stderr, 'herald: HERALD_ERR_NOT_FOUND: no message carries correlation id "corr-nobody" (log, event store and dead letters searched)\n');
    assert.equal(none.stdout, '');
    assert.equal(noneJson.code, 3);
    assert.equal((JSON.parse(noneJson.stdout) as { error: { code: string } }).error.code, 'HERALD_ERR_NOT_FOUND');
    assert.equal(badLimit.code, 2);
    assert.match(badLimit.stderr, /--limit must be a positive integer/);
  });
});
