// The shop (examples/shop) under `herald start`, seen through the console in headless Chromium:
// orders appear; a declined payment's checkout saga shows its failed step and compensation in
// its timeline, and its order ends cancelled; stopping Shipping makes its lag rise on the chart
// while orders and payments go on; starting Shipping brings its lag back to zero, and the sagas
// whose shipping deadline passed meanwhile compensate (Shipping refuses them; refund + release,
// visible in their timeline). Screenshots: test-artifacts/console/shop-*.png.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freePort, waitFor } from '@herald/testkit';
import type { Browser, Page } from 'playwright-core';
import { chromiumSkipReason, type HeraldProcess, openBrowser, ROOT, screenshot, startHerald, WAIT_MS, waitNumber } from './browser-test-helpers.ts';

const SHOP = join(ROOT, 'examples', 'shop');
const SHIPPING_TIMEOUT_MS = 3000;

let skip = chromiumSkipReason();
if (!skip && !existsSync(join(SHOP, 'herald.config.json'))) {
  skip = 'examples/shop/herald.config.json is missing';
  console.warn(`# skipping: ${skip}`);
}

interface ShopConfig {
  backend: { kind: string; path: string };
  env?: Record<string, string>;
  services: Array<{ name: string; entry: string; env?: Record<string, string>; restart?: boolean }>;
  console?: { port: number };
  projections?: Array<{ name: string; module: string }>;
  views?: Array<{ category: string; module: string }>;
}

interface SagaRow {
  saga: string;
  key: string;
  state: string;
  failure?: { step?: string };
}

describe('console on the shop', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'herald-shop-console-'));
  let herald: HeraldProcess;
  let url = '';
  let browser: Browser;
  let page: Page;

  const get = async <T>(path: string): Promise<T> => (await (await fetch(`${url}${path}`)).json()) as T;
  const shot = (name: string): Promise<Buffer> => screenshot(page, `shop-${name}`);
  const fail = async (what: string, e: unknown): Promise<never> => {
    await shot(`failed-${what.replace(/\W+/g, '-')}`).catch(() => {});
    throw new Error(`${what}: ${(e as Error).message}\n--- herald output ---\n${herald.output().slice(-4000)}`);
  };
  const number = (testId: string, ok: (n: number) => boolean, what: string): Promise<void> => waitNumber(page, testId, ok, what, () => herald.output());
  const openStream = async (id: string): Promise<void> => {
    await page.getByTestId('stream-id-input').fill(id);
    await page.getByTestId('stream-id-input').press('Enter');
    await page.getByRole('heading', { name: new RegExp(`^${id} `) }).waitFor();
  };

  before(async () => {
    const [consolePort, orderPort] = [await freePort(), await freePort()];
    url = `http://127.0.0.1:${consolePort}`;
    const shop = JSON.parse(readFileSync(join(SHOP, 'herald.config.json'), 'utf8')) as ShopConfig;
    const abs = (p: string): string => (isAbsolute(p) ? p : resolve(SHOP, p));
    const config: ShopConfig = {
      ...shop,
      backend: { kind: 'sqlite', path: join(dir, 'shop.db') },
      env: { ...shop.env, ORDER_PORT: String(orderPort), SHIPPING_TIMEOUT_MS: String(SHIPPING_TIMEOUT_MS), SHIPPING_GRACE_MS: '1000' },
      services: shop.services.map((s) => ({
        ...s,
        entry: abs(s.entry),
        env: { ...s.env, ...(s.name === 'order' ? { PORT: String(orderPort) } : {}), ...(s.name === 'load' ? { LOAD_RATE: '10' } : {}) },
      })),
      console: { port: consolePort },
      projections: (shop.projections ?? []).map((p) => ({ ...p, module: abs(p.module) })),
      views: (shop.views ?? []).map((v) => ({ ...v, module: abs(v.module) })),
    };
    writeFileSync(join(dir, 'herald.config.json'), JSON.stringify(config, null, 2));
    herald = startHerald(join(dir, 'herald.config.json'));
    await waitFor(
      async () => {
        try {
          const s = await get<{ services: Array<{ state: string }>; topics: Array<{ name: string; published: number }> }>('/api/snapshot');
          return s.services.every((x) => x.state === 'running') && (s.topics.find((t) => t.name === 'orders')?.published ?? 0) >= 10;
        } catch {
          return false;
        }
      },
      { timeoutMs: 90_000, intervalMs: 500, what: () => `the shop running with orders flowing\n${herald.output().slice(-4000)}` },
    );
    ({ browser, page } = await openBrowser());
  });

  after(async () => {
    await browser?.close();
    await herald?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('loads; orders appear on the orders topic and as order streams', async () => {
    await page.goto(url);
    await page.getByText('Herald console — shop').waitFor();
    for (const s of ['order', 'payment', 'inventory', 'shipping', 'notification', 'analytics', 'load']) await page.getByTestId(`service-state-${s}`).filter({ hasText: 'running' }).waitFor();
    await number('published-orders', (n) => n > 0, 'orders published');
    await page.locator('[data-testid^="stream-link-order-"]').first().waitFor();
    await shot('01-loaded');
  });

  /** A compensated checkout saga whose failed step is `step`. */
  const findSaga = async (step: string): Promise<SagaRow | undefined> => {
    const { instances } = await get<{ instances: SagaRow[] }>('/api/sagas?state=compensated&limit=50');
    return instances.find((i) => i.failure?.step === step);
  };
  /** Opens a saga instance's timeline in the page and returns its lines. */
  const openSaga = async (saga: SagaRow): Promise<string[]> => {
    await page.getByTestId('saga-state-compensated').click();
    await page.getByTestId(`saga-row-${saga.key}`).getByRole('link').click();
    await page.getByTestId('saga-timeline').getByRole('heading', { name: `${saga.saga} ${saga.key}` }).waitFor();
    return page.getByTestId('saga-timeline').locator('li').allTextContents();
  };

  it("a declined payment's saga: its timeline shows the failed step and the compensation; the order ends cancelled", async () => {
    const saga = await waitFor(() => findSaga('payment'), { timeoutMs: WAIT_MS, intervalMs: 500, what: 'a checkout saga compensated after a declined payment' }).catch((e: unknown) => fail('declined saga', e));
    const lines = await openSaga(saga);
    assert.ok(lines.some((l) => /step-failed.*step=payment/.test(l)), `payment failed in the timeline: ${lines.join(' | ')}`);
    assert.equal(await page.getByTestId('saga-timeline').locator('li[data-kind="step-failed"]').getAttribute('class'), 'failed');
    assert.equal(await page.getByTestId('saga-timeline').locator('li[data-kind="compensated"]').count(), 1, `the instance compensated: ${lines.join(' | ')}`);
    assert.ok((await page.getByTestId('saga-timeline').locator('li.compensation').count()) >= 1, 'compensation lines are marked');
    await shot('02-declined-payment-saga');
    await openStream(`order-${saga.key}`); // the shop's order streams are `order-<orderId>`, the saga's key the order id
    await page.getByTestId('stream-state').getByText('payment_declined').first().waitFor();
    await shot('03-declined-payment-order');
    // the order's causation graph: placed → checkout requested → charge → declined → … → cancelled, nested by causation id
    await page.getByTestId('stream-event-1').getByRole('link', { name: 'causation graph' }).click();
    const tree = page.getByTestId('causation-tree');
    const node = 'li[data-testid^="causation-node-"]'; // handler lines are list items too
    await tree.locator(`ul.tree ${node}`).first().waitFor();
    const nodes = await tree.locator(node).count();
    const nested = await tree.locator(`ul.tree ul.tree ul.tree ${node}`).count();
    assert.ok(nodes >= 4 && nested >= 1, `a causation tree at least three levels deep (${nodes} nodes, ${nested} at depth ≥ 3)`);
    await shot('03b-declined-payment-causation');
  });

  it('stopping Shipping: orders and payments go on, its lag rises; late orders are compensated; starting it brings the lag to zero', async () => {
    await page.getByTestId('service-stop-shipping').click();
    await page.getByTestId('service-state-shipping').filter({ hasText: 'stopped' }).waitFor();
    const before = await get<{ topics: Array<{ name: string; published: number }> }>('/api/snapshot');
    const paymentsBefore = before.topics.find((t) => t.name === 'payments')?.published ?? 0;
    await number('lag-shipping-commands-shipping', (n) => n >= 5, 'Shipping lag to rise while it is stopped');
    await waitFor(async () => Number(await page.getByTestId('published-payments').textContent()) > paymentsBefore, {
      timeoutMs: WAIT_MS,
      intervalMs: 200,
      what: 'payments to go on while Shipping is stopped',
    });
    // the shipping deadline passes for the orders waiting on Shipping
    await new Promise((r) => setTimeout(r, SHIPPING_TIMEOUT_MS + 1000));
    await shot('04-shipping-stopped-lag-rising');
    await page.getByTestId('service-start-shipping').click();
    await page.getByTestId('service-state-shipping').filter({ hasText: 'running' }).waitFor();
    await number('lag-shipping-commands-shipping', (n) => n === 0, 'Shipping lag back to zero after start');
    await shot('05-shipping-started-lag-zero');
    // Shipping alone enforces the deadline (it refuses a ship command past it), so the late orders'
    // sagas compensate (refund, release) once it is back and answers them.
    const late = await waitFor(() => findSaga('shipping'), { timeoutMs: WAIT_MS, intervalMs: 500, what: 'a checkout saga compensated after its shipping deadline' }).catch((e: unknown) =>
      fail('shipping compensation', e),
    );
    const lines = await openSaga(late);
    assert.ok((await page.getByTestId('saga-timeline').locator('li[data-kind="compensation-completed"]').count()) >= 1, `compensations ran: ${lines.join(' | ')}`);
    await shot('06-late-order-compensated');
  });

  it('Ctrl-C (SIGTERM) stops every service; the supervisor exits 0', async () => {
    assert.equal(await herald.stop(), 0, herald.output().slice(-3000));
  });
});
