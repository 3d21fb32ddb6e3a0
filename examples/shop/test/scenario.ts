// The shop end to end, as a scenario both backends run: the six services and the load
// generator as separate OS processes under the CLI's supervisor (what `herald start` runs),
// configured by a config file alone, under load for `seconds`. A third of the way in Shipping
// is stopped, a third later started again (orders whose shipping deadline passed meanwhile are
// cancelled and compensated: refund + release). Then the load stops, the system goes quiet, and
// the check runs across every service's tables. Then everything is stopped with SIGTERM (each
// process must exit 0) and started again: the orders are still there, more are placed, and the
// books still balance (nothing handled twice).
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isLagSource } from '@herald/core';
import { freePort, waitFor } from '@herald/testkit';
import { type Backend, openBackend } from '../src/backend.ts';
import { checkShop, formatReport, SHOP_GROUPS, type ShopReport } from '../src/check.ts';
import type { BackendSpec, TransportSpec } from '../src/runtime.ts';

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
  readonly file: string;
  readonly env: Readonly<Record<string, string>>;
  readonly services: ReadonlyArray<{ readonly name: string; readonly entry: string; readonly env: Readonly<Record<string, string>>; readonly restart: boolean }>;
}
const cli = new URL('../../../packages/cli/src/', import.meta.url);
const { loadConfig } = (await import(new URL('config.ts', cli).href)) as { loadConfig(path: string): HeraldConfig };
const { serviceProcesses } = (await import(new URL('start.ts', cli).href)) as { serviceProcesses(config: HeraldConfig): unknown[] };
const { Supervisor } = (await import(new URL('supervisor.ts', cli).href)) as {
  Supervisor: new (services: unknown[], options: { onOutput?: (name: string, stream: string, line: string) => void; onNotice?: (name: string, message: string) => void; stopTimeoutMs?: number }) => Supervisor;
};
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

/**
 * Shipping's backlog: on a transport that reports lag (SQLite), the messages its group has not
 * committed; elsewhere (NATS reports none) the checkouts waiting at the shipping step.
 */
async function shippingBacklog(b: Backend): Promise<number> {
  if (isLagSource(b.transport)) return lag(b, 'shipping');
  const page = await b.sagaStore().list({ saga: 'checkout', status: 'running', limit: 1000 });
  return page.items.filter((i) => i.step === 'shipping').length;
}

/** Messages a group (default: every shop group) has not committed yet; 0 when the transport cannot say. */
async function lag(b: Backend, group?: string): Promise<number> {
  if (!isLagSource(b.transport)) return 0;
  const parts = await b.transport.lag(group ? { group } : {});
  return parts.filter((p) => (SHOP_GROUPS as readonly string[]).includes(p.group)).reduce((s, p) => s + p.messages, 0);
}

/**
 * Quiet: every order terminal, the outbox sent, every group caught up (where the transport
 * reports lag), then the check passes — retried for a while, since on a transport without lag
 * the last public events may still be on their way to Notification and Analytics.
 */
async function settle(b: Backend, url: string, timeoutMs: number, placed: readonly string[]): Promise<ShopReport> {
  await waitFor(
    async () => {
      const s = await stats(url);
      if (Object.keys(s).some((k) => k !== 'completed' && k !== 'cancelled')) return undefined;
      return (await b.relay.backlog()).count === 0 && (await lag(b)) === 0;
    },
    { timeoutMs, intervalMs: 250, what: 'every order terminal, the outbox empty and every group caught up' },
  );
  const stores = { sql: b.sql, events: b.eventStore(), sagas: b.sagaStore(), deadLetters: b.deadLetters };
  let report: ShopReport | undefined;
  await waitFor(async () => (report = await checkShop(stores, placed)).ok, { timeoutMs: 15_000, intervalMs: 500, what: () => `the check passes:\n${report ? formatReport(report) : ''}` }).catch(() => undefined);
  return report!;
}

export interface ShopScenario {
  /** Folder for the config file and the load generator's record. */
  readonly dir: string;
  readonly backend: BackendSpec;
  readonly transport?: TransportSpec;
  /** Added to the config's env (every service). */
  readonly env?: Readonly<Record<string, string>>;
  /** Seconds under load (the outage is the middle third). */
  readonly seconds: number;
  /** Orders per second. */
  readonly rate: number;
  /** Shipping deadline, ms (default ¾ of the outage: orders waiting for Shipping while it is down miss it and are compensated). */
  readonly shippingTimeoutMs?: number;
}

export async function runShopScenario(o: ShopScenario): Promise<void> {
  const { seconds, rate } = o;
  const outageMs = (seconds / 3) * 1000;
  const shippingTimeoutMs = o.shippingTimeoutMs ?? Math.round(outageMs * 0.75);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const record = join(o.dir, 'placed.txt');

  // the shop's own config, rewritten with this backend and ports: the services get nothing else
  const base = JSON.parse(readFileSync(join(here, 'herald.config.json'), 'utf8')) as {
    env: Record<string, string>;
    services: Array<{ name: string; entry: string; env: Record<string, string> }>;
  };
  const file = join(o.dir, 'herald.config.json');
  writeFileSync(
    file,
    JSON.stringify({
      ...base,
      backend: o.backend,
      ...(o.transport ? { transport: o.transport } : {}),
      // a short shipping deadline, so orders reserved while Shipping is down are cancelled and
      // compensated (refund + release) when it comes back; little of the scarce SKU, so some run out
      env: { ...base.env, ...o.env, ORDER_PORT: String(port), SHIPPING_TIMEOUT_MS: String(shippingTimeoutMs) },
      services: base.services.map((s) => ({
        ...s,
        entry: join(here, s.entry),
        env: s.name === 'order' ? { ...s.env, PORT: String(port) } : s.name === 'inventory' ? { ...s.env, INVENTORY_STOCK: '{"sku-rare": 1}' } : s.env,
      })),
      projections: [],
      views: [],
    }),
  );
  const config = loadConfig(file);
  const backend = await openBackend(o.backend, o.transport, { ...process.env, ...o.env });

  // a fifth of the orders want the scarce SKU, of which there is 1: some run out for sure
  let run = start(config, { LOAD_RATE: String(rate), LOAD_SECONDS: String(seconds), LOAD_RECORD: record, LOAD_RARE_RATE: '0.2' });
  const dump = (r: Run): void => void process.stderr.write(`--- service output (last 80 lines) ---\n${r.output.slice(-80).join('\n')}\n`);
  try {
    await waitFor(() => fetch(`${url}/stats`).then((r) => r.ok).catch(() => false), { timeoutMs: 30_000, intervalMs: 100, what: 'the order service answers' });
    // bad input: a 400 naming the field, and no order
    const bad = await fetch(`${url}/orders`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ orderId: 'bad-1', customer: 'X', email: 'x@example.com', address: 'A', card: '12', items: [] }) });
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { message: string }).message, /card: 12 to 19 digits; items: /);
    assert.equal((await fetch(`${url}/orders/bad-1`)).status, 404);

    // Shipping down for the middle third: orders and payments go on, nothing ships, its backlog grows
    await new Promise((r) => setTimeout(r, outageMs));
    await run.supervisor.stopService('shipping');
    const shippedBefore = await count(backend, 'SELECT count(*) AS n FROM shop_shipments');
    const paymentsBefore = await count(backend, 'SELECT count(*) AS n FROM shop_payments');
    const backlogBefore = await shippingBacklog(backend);
    await new Promise((r) => setTimeout(r, outageMs));
    // on a slow machine the first orders may only now reach Shipping: the outage lasts until they do
    const backlogDuring = await waitFor(async () => {
      const n = await shippingBacklog(backend);
      return n > backlogBefore ? n : undefined;
    }, { timeoutMs: 60_000, intervalMs: 250, what: "Shipping's backlog rises while it is down" });
    assert.ok((await count(backend, 'SELECT count(*) AS n FROM shop_payments')) > paymentsBefore, 'payments go on while Shipping is down');
    assert.equal(await count(backend, 'SELECT count(*) AS n FROM shop_shipments'), shippedBefore, 'nothing ships while Shipping is down');
    assert.ok(backlogDuring > backlogBefore, `Shipping's backlog rises while it is down (${backlogBefore} → ${backlogDuring})`);
    run.supervisor.startService('shipping');

    // load stops by itself after `seconds`; then Shipping catches up and its backlog returns to zero
    await waitFor(() => run.supervisor.status().find((s) => s.name === 'load')?.state === 'stopped', { timeoutMs: (seconds + 30) * 1000, intervalMs: 100, what: 'the load generator finishes' });
    const placed = readFileSync(record, 'utf8').split('\n').filter(Boolean);
    const report = await settle(backend, url, 90_000, placed);
    const backlogAfter = await shippingBacklog(backend);
    process.stderr.write(`${o.backend.kind}${o.transport ? ` + ${o.transport.kind}` : ''}: ${seconds} s at ${rate}/s; Shipping's backlog ${backlogBefore} → ${backlogDuring} (down ${(outageMs / 1000).toFixed(1)} s) → ${backlogAfter}\n${formatReport(report)}\n`);
    assert.equal(backlogAfter, 0, "Shipping's backlog returns to zero");
    assert.ok(placed.length >= rate * seconds * 0.5, `the load generator placed orders (${placed.length})`);
    assert.deepEqual(report.problems, []);
    assert.equal(report.orders, placed.length);
    assert.ok(report.completed > 0, 'orders complete');
    for (const reason of ['payment_declined', 'out_of_stock']) assert.ok((report.cancelled[reason] ?? 0) > 0, `some orders are cancelled for ${reason}`);
    if (shippingTimeoutMs < outageMs) assert.ok((report.cancelled.shipping_failed ?? 0) > 0, 'orders that waited past their deadline for Shipping are cancelled and compensated');
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
    const placedAll = readFileSync(record, 'utf8').split('\n').filter(Boolean);
    const again = await settle(backend, url, 60_000, placedAll);
    process.stderr.write(`after the restart:\n${formatReport(again)}\n`);
    assert.equal(placedAll.length, placed.length + 30);
    assert.deepEqual(again.problems, []);
    assert.equal(again.orders, placedAll.length);
    assert.equal(again.analytics.placed, placedAll.length, 'Analytics counted every order once');
    assert.equal(again.notifications, 2 * placedAll.length, 'one "placed" and one final message per order');
    await run.supervisor.close();
  } catch (e) {
    dump(run);
    await run.supervisor.close();
    throw e;
  } finally {
    await backend.close();
  }
}
