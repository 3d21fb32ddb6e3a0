// The tutorial's code, run as the tutorial runs it: orders and billing as two OS processes on one
// SQLite file. Billing is SIGKILLed while it works and started again; every order is invoiced
// exactly once (the outbox lost nothing, the inbox applied nothing twice), and SIGTERM stops it
// cleanly.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { waitFor } from '@herald/testkit';
import { openDatabase } from '@herald/sqlite';

const here = new URL('.', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'herald-tutorial-'));
const path = join(dir, 'tutorial.db');
after(() => rmSync(dir, { recursive: true, force: true }));
const ORDERS = Number(process.env.TUTORIAL_TEST_ORDERS ?? 300);

function run(file: string, env: Record<string, string> = {}): { child: ChildProcess; exited: Promise<{ code: number | null; signal: string | null }>; out: string[] } {
  const out: string[] = [];
  const child = spawn(process.execPath, ['--import', 'tsx', join(here, file)], { env: { ...process.env, TUTORIAL_DB: path, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (d: Buffer) => out.push(d.toString()));
  child.stderr!.on('data', (d: Buffer) => out.push(d.toString()));
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, exited, out };
}

test('two services: every order is invoiced exactly once, across a crash of billing', { timeout: 240_000 }, async () => {
  let billing = run('billing.ts');
  const orders = run('orders.ts', { TUTORIAL_ORDERS: String(ORDERS) });
  // A cold start (tsx compiling on a fresh clone, two cores shared with other suites) can take a while.
  await waitFor(() => billing.out.join('').includes('waiting for orders'), { timeoutMs: 90_000, intervalMs: 50, what: () => `billing is up (its output so far: ${JSON.stringify(billing.out.join('').slice(-2000))})` });
  const db = openDatabase({ path });
  try {
    const invoiced = (): number => (db.db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE name = 'invoices'").get() as { n: number }).n === 0 ? 0 : (db.db.prepare('SELECT count(*) AS n FROM invoices').get() as { n: number }).n;

    // crash billing while it works, start it again
    await waitFor(() => invoiced() >= ORDERS / 10, { timeoutMs: 60_000, intervalMs: 20, what: 'billing has invoiced some orders' });
    billing.child.kill('SIGKILL');
    assert.equal((await billing.exited).signal, 'SIGKILL');
    billing = run('billing.ts');

    assert.deepEqual(await orders.exited, { code: 0, signal: null }, orders.out.join(''));
    await waitFor(() => invoiced() >= ORDERS, { timeoutMs: 60_000, intervalMs: 50, what: () => `all ${ORDERS} orders invoiced (now ${invoiced()})` });
    await new Promise((r) => setTimeout(r, 500)); // a duplicate would show up now
    const rows = db.db.prepare('SELECT order_id, count(*) AS n, sum(amount) AS amount FROM invoices GROUP BY order_id').all() as Array<{ order_id: string; n: number; amount: number }>;
    assert.equal(rows.length, ORDERS, 'one invoice per order');
    assert.deepEqual(rows.filter((r) => r.n !== 1), [], 'no order invoiced twice');
    const expected = db.db.prepare('SELECT sum(amount) AS s FROM orders').get() as { s: number };
    assert.equal(rows.reduce((s, r) => s + r.amount, 0), expected.s);

    billing.child.kill('SIGTERM');
    assert.deepEqual(await billing.exited, { code: 0, signal: null }, 'billing stops cleanly on SIGTERM');
  } finally {
    db.close();
    billing.child.kill('SIGKILL');
    orders.child.kill('SIGKILL');
  }
});
