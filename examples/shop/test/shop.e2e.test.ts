// The shop end to end: the six services and the load generator as separate OS processes under
// the CLI's supervisor, on a temporary SQLite file, under load for SHOP_SECONDS (default 20).
// A third of the way in Shipping is stopped, a third later started again (orders whose
// shipping deadline passed meanwhile are cancelled and compensated: refund + release). Then the load stops,
// the system goes quiet, and the check runs across every service's tables. Then everything is
// stopped with SIGTERM (each process must exit 0) and started again: the orders are still there,
// more are placed, and the books still balance (nothing handled twice).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { isLagSource } from '@herald/core';
import { freePort, waitFor } from '@herald/testkit';
import { checkShop, formatReport, SHOP_GROUPS } from '../src/check.ts';
import { type Backend, openBackend } from '../src/runtime.ts';

const seconds = Number(process.env.SHOP_SECONDS ?? 20);
const rate = Number(process.env.SHOP_RATE ?? 15);
const outageMs = (seconds / 3) * 1000;
// default: ¾ of the outage, so orders waiting for Shipping while it is down miss their deadline
// and are compensated; SHOP_SHIPPING_TIMEOUT_MS longer than the outage: every such order ships
const shippingTimeoutMs = Number(process.env.SHOP_SHIPPING_TIMEOUT_MS ?? Math.round(outageMs * 0.75));
const graceMs = 1000;
const here = new URL('..', import.meta.url).pathname;

// The CLI's supervisor, as `herald start` runs it. @herald/cli exports no module API, and a
// relative import across projects cannot be compiled: loaded by URL, with the part used typed here.
interface ServiceStatus {
  readonly name: string;
  readonly state: string;
  readonly lastExit: { readonly code: number | null; readonly signal: string | null } | null;
}
interface Supervisor {
  startAll(): void;
  startService(name: string): ServiceStatus;
  stopService(name: string): Promise<ServiceStatus>;
  status(): ServiceStatus[];
  close(): Promise<void>;
}
interface HeraldConfig {
  readonly backend: { readonly kind: 'sqlite'; readonly path: string };
  readonly env: Readonly<Record<string, string>>;
  readonly services: ReadonlyArray<{ readonly name: string; readonly env: Readonly<Record<string, string>>; readonly restart: boolean }>;
}
const cli = new URL('../../../packages/cli/src/', import.meta.url);
const { loadConfig } = (await import(new URL('config.ts', cli).href)) as { loadConfig(path: string): HeraldConfig };
const { serviceProcesses } = (await import(new URL('start.ts', cli).href)) as { serviceProcesses(config: HeraldConfig): unknown[] };
const { Supervisor } = (await import(new URL('supervisor.ts', cli).href)) as {
  Supervisor: new (services: unknown[], options: { onOutput?: (name: string, stream: string, line: string) => void; onNotice?: (name: string, message: string) => void; stopTimeoutMs?: number }) => Supervisor;
};
const dir = mkdtempSync(join(tmpdir(), 'herald-shop-'));
after(() => rmSync(dir, { recursive: true, force: true }));

interface Run {
  readonly supervisor: Supervisor;
  readonly output: string[];
}

function start(config: HeraldConfig, load: Record<string, string>): Run {
  const output: string[] = [];
  const cfg: HeraldConfig = { ...config, services: config.services.map((s) => (s.name === 'load' ? { ...s, env: { ...s.env, ...load }, restart: false } : s)) };
  const supervisor = new Supervisor(serviceProcesses(cfg), {
    onOutput: (name, _stream, line) => output.push(`[${name}] ${line}`),
    onNotice: (name, message) => output.push(`[${name}] herald: ${message}`),
    stopTimeoutMs: 8000,
  });
  supervisor.startAll();
  return { supervisor, output };
}

async function stats(url: string): Promise<Record<string, number>> {
  const res = await fetch(`${url}/stats`);
  return (await res.json()) as Record<string, number>;
}

const count = async (b: Backend, sql: string): Promise<number> => Number((await b.sql.get<{ n: number }>(sql))!.n);

/** Messages a group (default: every shop group) has not committed yet. */
async function lag(b: Backend, group?: string): Promise<number> {
  assert.ok(isLagSource(b.transport));
  try {
    return (await b.transport.lag(group ? { group } : {})).filter((p) => (SHOP_GROUPS as readonly string[]).includes(p.group)).reduce((s, p) => s + p.messages, 0);
  } catch {
    // SqliteTransport.lag() failed here ("Too many parameter values", @herald/sqlite lag.ts): the same figure from the log's tables
    const groups = group ? [group] : SHOP_GROUPS;
    return count(
      b,
      `SELECT coalesce(sum(p.next_offset - 1 - o.committed), 0) AS n FROM herald_offsets o JOIN herald_partitions p ON p.topic_id = o.topic_id AND p.partition = o.partition
        WHERE o.grp IN (${groups.map((g) => `'${g}'`).join(', ')})`,
    );
  }
}

/** Quiet: every order terminal, the outbox sent, every group caught up. */
async function quiet(b: Backend, url: string, timeoutMs: number): Promise<Record<string, number>> {
  return waitFor(
    async () => {
      const s = await stats(url);
      if (Object.keys(s).some((k) => k !== 'completed' && k !== 'cancelled')) return undefined;
      if ((await b.relay.backlog()).count > 0 || (await lag(b)) > 0) return undefined;
      return s;
    },
    { timeoutMs, intervalMs: 250, what: 'every order terminal, the outbox empty and every group caught up' },
  );
}

test(`the shop under load for ${seconds} s, Shipping stopped and restarted, then a clean stop and a resume`, { timeout: (seconds + 180) * 1000 }, async (t) => {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const record = join(dir, 'placed.txt');
  const base = loadConfig(join(here, 'herald.config.json'));
  const config: HeraldConfig = {
    ...base,
    backend: { kind: 'sqlite', path: join(dir, 'shop.db') },
    // a short shipping deadline, so orders reserved while Shipping is down are cancelled and
    // compensated (refund + release) when it comes back; little of the scarce SKU, so some run out
    env: { ...base.env, ORDER_PORT: String(port), SHIPPING_TIMEOUT_MS: String(shippingTimeoutMs), SHIPPING_GRACE_MS: String(graceMs) },
    services: base.services.map((s) =>
      s.name === 'order' ? { ...s, env: { ...s.env, PORT: String(port) } } : s.name === 'inventory' ? { ...s, env: { ...s.env, INVENTORY_STOCK: '{"sku-rare": 6}' } } : s,
    ),
  };
  const backend = await openBackend(config.backend);
  t.after(() => backend.close());
  const stores = { sql: backend.sql, events: backend.eventStore(), sagas: backend.sagaStore(), deadLetters: backend.deadLetters };

  let run = start(config, { LOAD_RATE: String(rate), LOAD_SECONDS: String(seconds), LOAD_RECORD: record });
  const dump = (r: Run): void => void process.stderr.write(`--- service output (last 80 lines) ---\n${r.output.slice(-80).join('\n')}\n`);
  try {
    await waitFor(() => fetch(`${url}/stats`).then((r) => r.ok).catch(() => false), { timeoutMs: 30_000, intervalMs: 100, what: 'the order service answers' });

    // Shipping down for the middle third: orders and payments go on, Shipping's lag grows
    await new Promise((r) => setTimeout(r, outageMs));
    await run.supervisor.stopService('shipping');
    const shippedBefore = await count(backend, 'SELECT count(*) AS n FROM shop_shipments');
    const paymentsBefore = await count(backend, 'SELECT count(*) AS n FROM shop_payments');
    const lagBefore = await lag(backend, 'shipping');
    await new Promise((r) => setTimeout(r, outageMs));
    const lagDuring = await lag(backend, 'shipping');
    assert.ok((await count(backend, 'SELECT count(*) AS n FROM shop_payments')) > paymentsBefore, 'payments go on while Shipping is down');
    assert.equal(await count(backend, 'SELECT count(*) AS n FROM shop_shipments'), shippedBefore, 'nothing ships while Shipping is down');
    assert.ok(lagDuring > lagBefore, `Shipping's lag rises while it is down (${lagBefore} → ${lagDuring})`);
    run.supervisor.startService('shipping');

    // load stops by itself after SHOP_SECONDS; then Shipping catches up and the lag returns to zero
    await waitFor(() => run.supervisor.status().find((s) => s.name === 'load')?.state === 'stopped', { timeoutMs: (seconds + 30) * 1000, intervalMs: 100, what: 'the load generator finishes' });
    const final = await quiet(backend, url, 90_000);
    await waitFor(async () => (await lag(backend, 'shipping')) === 0, { timeoutMs: 10_000, intervalMs: 100, what: "Shipping's lag returns to zero" });
    const placed = readFileSync(record, 'utf8').split('\n').filter(Boolean);
    assert.ok(placed.length >= rate * seconds * 0.5, `the load generator placed orders (${placed.length})`);
    const report = await checkShop(stores, placed);
    process.stderr.write(`first run: ${JSON.stringify(final)}\n${formatReport(report)}\n`);
    assert.deepEqual(report.problems, []);
    assert.equal(report.orders, placed.length);
    assert.ok(report.completed > 0, 'orders complete');
    for (const reason of ['payment_declined', 'out_of_stock']) assert.ok((report.cancelled[reason] ?? 0) > 0, `some orders are cancelled for ${reason}`);
    if (shippingTimeoutMs + graceMs < outageMs) assert.ok((report.cancelled.shipping_failed ?? 0) > 0, 'orders that waited past their deadline for Shipping are cancelled and compensated');
    else assert.equal(report.cancelled.shipping_failed ?? 0, 0, 'with a deadline longer than the outage, every order waiting for Shipping ships');

    // SIGTERM to everything: each service drains and exits 0
    await run.supervisor.close();
    for (const s of run.supervisor.status()) {
      if (s.name === 'load') continue;
      assert.deepEqual({ name: s.name, code: s.lastExit?.code, signal: s.lastExit?.signal }, { name: s.name, code: 0, signal: null }, `${s.name} stops cleanly`);
    }

    // a second start resumes: the orders are there, new ones are placed and the books still balance
    run = start(config, { LOAD_RATE: String(rate), LOAD_ORDERS: '30', LOAD_RECORD: record });
    await waitFor(() => run.supervisor.status().find((s) => s.name === 'load')?.state === 'stopped', { timeoutMs: 60_000, intervalMs: 100, what: 'the second load finishes' });
    await quiet(backend, url, 60_000);
    const placedAll = readFileSync(record, 'utf8').split('\n').filter(Boolean);
    assert.equal(placedAll.length, placed.length + 30);
    const again = await checkShop(stores, placedAll);
    process.stderr.write(`after the restart:\n${formatReport(again)}\n`);
    assert.deepEqual(again.problems, []);
    assert.equal(again.orders, placedAll.length);
    assert.equal(again.analytics.placed, placedAll.length, 'Analytics counted every order once');
    assert.equal(again.notifications, 2 * placedAll.length, 'one "placed" and one final message per order');
    await run.supervisor.close();
  } catch (e) {
    dump(run);
    await run.supervisor.close();
    throw e;
  }
});
