// The console in headless Chromium against a running system: `herald start` with the fixture
// services (a publisher, a billing worker that dead-letters every 10th order, a shipper; both
// consumers handle in inbox transactions, which keep their durations).
// Screenshots go to test-artifacts/console/.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { freePort, waitFor } from '@herald/testkit';
import type { Browser, Locator, Page } from 'playwright-core';
import { chromiumSkipReason, type HeraldProcess, openBrowser, processAlive, screenshot, startHerald, WAIT_MS, waitNumber } from './browser-test-helpers.ts';

const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));

interface ServiceInfo {
  name: string;
  state: string;
  pid: number | null;
}

describe('console in the browser', { skip: chromiumSkipReason() }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'herald-console-'));
  let herald: HeraldProcess;
  let url = '';
  let browser: Browser;
  let page: Page;

  const snapshot = async (): Promise<{ services: ServiceInfo[]; topics: Array<{ name: string; published: number }> }> => (await (await fetch(`${url}/api/snapshot`)).json()) as never;
  const shot = (name: string): Promise<Buffer> => screenshot(page, name);
  const text = async (testId: string): Promise<string> => (await page.getByTestId(testId).textContent({ timeout: WAIT_MS })) ?? '';
  const number = (testId: string, ok: (n: number) => boolean, what: string): Promise<void> => waitNumber(page, testId, ok, what, () => herald.output());
  /** The computed CSS color of an element (in the page: this file has no DOM types). */
  const colorOf = (l: Locator): Promise<string> => l.evaluate((el) => (globalThis as unknown as { getComputedStyle(e: unknown): { color: string } }).getComputedStyle(el).color);

  before(async () => {
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    writeFileSync(
      join(dir, 'herald.config.json'),
      JSON.stringify({
        name: 'fixture',
        backend: { kind: 'sqlite', path: 'data/fixture.db' },
        env: { FIXTURE_INTERVAL_MS: '100', FIXTURE_FAIL_EVERY: '10' },
        services: [
          { name: 'publisher', entry: join(FIXTURES, 'publisher.ts') },
          { name: 'billing', entry: join(FIXTURES, 'worker.ts') },
          { name: 'shipping', entry: join(FIXTURES, 'shipper.ts') },
        ],
        views: [{ category: 'order', module: join(FIXTURES, 'order-view.ts') }],
        console: { port },
      }),
    );
    herald = startHerald(join(dir, 'herald.config.json'));
    await waitFor(
      async () => {
        try {
          const s = await snapshot();
          return s.services.every((x) => x.state === 'running') && (s.topics[0]?.published ?? 0) > 0;
        } catch {
          return false;
        }
      },
      { timeoutMs: 60_000, intervalMs: 250, what: () => `herald start to run every service and publish\n${herald.output().slice(-3000)}` },
    );
    ({ browser, page } = await openBrowser());
  });

  after(async () => {
    await browser?.close();
    await herald?.stop(2000);
    rmSync(dir, { recursive: true, force: true });
  });

  it('loads, shows the services and the topic with its consumer groups', async () => {
    await page.goto(url);
    await page.getByText('Herald console — fixture').waitFor();
    await page.getByTestId('live').filter({ hasText: 'live' }).waitFor();
    for (const s of ['publisher', 'billing', 'shipping']) assert.equal(await text(`service-state-${s}`), 'running');
    await number('published-fixture-orders', (n) => n > 0, 'orders published');
    await page.getByTestId('topic-row-fixture-orders-billing').waitFor();
    await page.getByTestId('lag-chart').locator('polyline').first().waitFor();
    await shot('01-loaded');
  });

  it('redrives a dead letter by a click, and it disappears', async () => {
    const row = page.locator('[data-testid^="dead-letter-row-"]').first();
    await row.waitFor();
    const id = (await row.getAttribute('data-testid'))!.replace('dead-letter-row-', '');
    await page.getByTestId(`dead-letter-inspect-${id}`).click();
    await page.getByTestId('dead-letter-detail').getByText(/card declined for order-\d+/).first().waitFor();
    await shot('02-dead-letter-inspected');
    await page.getByTestId(`dead-letter-redrive-${id}`).click();
    await page.getByTestId(`dead-letter-row-${id}`).waitFor({ state: 'detached' });
    const r = await fetch(`${url}/api/dead-letters/${id}`);
    assert.equal(r.status, 404, 'the redriven dead letter was handled and removed from the store');
    await shot('03-dead-letter-redriven');
  });

  it('time travel: a stream shows its state after each event', async () => {
    await page.locator('[data-testid^="stream-link-order-"]').first().click();
    await page.getByTestId('stream-state').getByText('"status": "paid"').waitFor();
    await page.getByTestId('time-travel').fill('1');
    await page.getByTestId('stream-state').getByText('"status": "placed"').waitFor();
    assert.match(await text('stream-state'), /"events": 1/);
    await shot('04-time-travel');
    // the order's correlation id: its two stored events and the message on the topic
    await page.getByTestId('stream-event-1').getByRole('link', { name: 'causation graph' }).click();
    const tree = page.getByTestId('causation-tree');
    await tree.locator('strong', { hasText: 'fixture.order.placed' }).waitFor();
    assert.deepEqual((await tree.locator('strong').allTextContents()).sort(), ['OrderPaid', 'OrderPlaced', 'fixture.order.placed']);
  });

  it("a declined order's causation graph: the service, shipping's handler with its duration, billing's failure in red with the error", async () => {
    const { entries } = (await (await fetch(`${url}/api/dead-letters?group=billing&status=dead`)).json()) as { entries: Array<{ id: string }> };
    assert.ok(entries.length > 0, 'a declined order in the dead letters');
    const { entry } = (await (await fetch(`${url}/api/dead-letters/${entries[0]!.id}`)).json()) as { entry: { envelope: { id: string; correlationid: string } } };
    await page.getByTestId('correlation-input').fill(entry.envelope.correlationid);
    await page.getByRole('button', { name: 'Show' }).click();
    const node = page.getByTestId(`causation-node-${entry.envelope.id}`);
    await node.locator('.service').filter({ hasText: 'fixture/publisher' }).waitFor();
    assert.match((await node.locator('.muted').first().textContent()) ?? '', /topic fixture-orders\/\d+@\d+, dead letter #\d+ \(dead\)/);
    const shipped = node.getByTestId('causation-handler').filter({ hasText: 'shipping/fixture.order.placed' });
    await shipped.waitFor();
    assert.match((await shipped.textContent()) ?? '', /^✓ shipping\/fixture\.order\.placed [\d.]+ ms \(inbox\)$/);
    const failed = node.locator('[data-testid="causation-handler"][data-failed="true"]');
    assert.match((await failed.textContent()) ?? '', /^✗ billing\/fixture\.order\.placed · 1 attempt \(dead letter\): card declined for order-\d+$/);
    assert.equal(await failed.getAttribute('title'), (await failed.locator('.handler-error').textContent())!.slice(2), 'the error on hover too');
    assert.equal(await colorOf(failed), 'rgb(185, 28, 28)', 'the failed handler is red');
    assert.equal(await colorOf(node.locator('strong')), 'rgb(185, 28, 28)', 'the failed message is red');
    await node.scrollIntoViewIfNeeded();
    await shot('04b-declined-order-causation');
  });

  it('stopping shipping makes its lag rise on the chart; starting it brings the lag back to zero', async () => {
    await page.getByTestId('service-stop-shipping').click();
    await page.getByTestId('service-state-shipping').filter({ hasText: 'stopped' }).waitFor();
    const stopped = (await snapshot()).services.find((s) => s.name === 'shipping')!;
    assert.equal(stopped.pid, null);
    await number('lag-fixture-orders-shipping', (n) => n >= 20, 'shipping lag to rise while it is stopped');
    const label = (await page.getByTestId('lag-chart').locator('svg').getAttribute('aria-label')) ?? '';
    const charted = Number(/fixture-orders \/ shipping (\d+) msgs/.exec(label)?.[1]);
    assert.ok(charted >= 20, `the chart shows the lag (${label})`);
    await waitFor(
      async () => {
        const secondsLabel = (await page.getByTestId('lag-seconds-chart').locator('svg').getAttribute('aria-label')) ?? '';
        return Number(/fixture-orders \/ shipping ([\d.]+) s/.exec(secondsLabel)?.[1]) >= 1;
      },
      { timeoutMs: 10_000, what: 'the lag-seconds chart to show shipping’s oldest unhandled message at least 1 s old' },
    );
    assert.equal(await text('service-state-billing'), 'running', 'the other services keep running');
    await shot('05-shipping-stopped-lag-rising');
    await page.getByTestId('service-start-shipping').click();
    await page.getByTestId('service-state-shipping').filter({ hasText: 'running' }).waitFor();
    await number('lag-fixture-orders-shipping', (n) => n === 0, 'shipping lag back to zero after start');
    await shot('06-shipping-started-lag-zero');
  });

  it('Ctrl-C (SIGTERM) stops every process cleanly', async () => {
    const pids = (await snapshot()).services.map((s) => s.pid).filter((p): p is number => p !== null);
    assert.equal(pids.length, 3);
    assert.equal(await herald.stop(), 0, herald.output().slice(-2000));
    assert.deepEqual(pids.filter(processAlive), [], 'no service process left running');
    assert.match(herald.output(), /herald: stopped/);
  });
});
