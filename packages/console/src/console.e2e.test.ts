// The console in headless Chromium against a running system: `herald start` with the fixture
// services (a publisher, a billing worker that dead-letters every 10th order, a shipper).
// Screenshots go to test-artifacts/console/.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { freePort, serversRequired, waitFor } from '@herald/testkit';
import type { Browser, Page } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));
const ARTIFACTS = join(ROOT, 'test-artifacts', 'console');
const WAIT_MS = Number(process.env.HERALD_CONSOLE_WAIT_MS ?? 30_000);

let skip: string | false = false;
if (!existsSync(CHROMIUM)) {
  const reason = `${CHROMIUM} is missing (apt-get install -y chromium); the console's browser test needs it`;
  if (serversRequired) throw new Error(`${reason} (required here: CI or HERALD_REQUIRE_SERVERS=1)`);
  console.warn(`# skipping: ${reason}`);
  skip = reason;
}

interface ServiceInfo {
  name: string;
  state: string;
  pid: number | null;
}

describe('console in the browser', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'herald-console-'));
  let cli: ChildProcess;
  let cliExit: Promise<number | null>;
  let output = '';
  let url = '';
  let browser: Browser;
  let page: Page;

  const snapshot = async (): Promise<{ services: ServiceInfo[]; topics: Array<{ name: string; published: number; groups: Array<{ group: string; lag: number }> }> }> =>
    (await (await fetch(`${url}/api/snapshot`)).json()) as never;
  const shot = (name: string): Promise<Buffer> => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
  const text = async (testId: string): Promise<string> => (await page.getByTestId(testId).textContent({ timeout: WAIT_MS })) ?? '';
  /** Waits until the number shown in `testId` satisfies `ok`. */
  const waitNumber = (testId: string, ok: (n: number) => boolean, what: string): Promise<unknown> =>
    page.waitForFunction(
      `(() => { const el = document.querySelector('[data-testid="${testId}"]'); return el !== null && (${ok.toString()})(Number(el.textContent)); })()`,
      null,
      { timeout: WAIT_MS, polling: 100 },
    ).catch(async (e: unknown) => {
      await shot(`failed-${testId}`).catch(() => {});
      throw new Error(`${what}: ${(e as Error).message}\n--- herald output ---\n${output.slice(-3000)}`);
    });

  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
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
    cli = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(ROOT, 'packages/cli/src/main.ts'), '--config', join(dir, 'herald.config.json'), 'start'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    cli.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    cli.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    cliExit = new Promise((resolve) => cli.once('exit', (code) => resolve(code)));
    await waitFor(
      async () => {
        try {
          const s = await snapshot();
          return s.services.every((x) => x.state === 'running') && (s.topics[0]?.published ?? 0) > 0;
        } catch {
          return false;
        }
      },
      { timeoutMs: 60_000, intervalMs: 250, what: () => `herald start to run every service and publish\n${output.slice(-3000)}` },
    );
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    page = await browser.newPage({ viewport: { width: 1300, height: 1000 } });
    page.setDefaultTimeout(WAIT_MS);
  });

  after(async () => {
    await browser?.close();
    if (cli && cli.exitCode === null) {
      cli.kill('SIGKILL');
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('loads, shows the services and the topic with its consumer groups', async () => {
    await page.goto(url);
    await page.getByText('Herald console — fixture').waitFor();
    await page.getByTestId('live').filter({ hasText: 'live' }).waitFor();
    for (const s of ['publisher', 'billing', 'shipping']) assert.equal(await text(`service-state-${s}`), 'running');
    await waitNumber('published-fixture-orders', (n) => n > 0, 'orders published');
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
  });

  it('stopping shipping makes its lag rise on the chart; starting it brings the lag back to zero', async () => {
    await page.getByTestId('service-stop-shipping').click();
    await page.getByTestId('service-state-shipping').filter({ hasText: 'stopped' }).waitFor();
    const stopped = (await snapshot()).services.find((s) => s.name === 'shipping')!;
    assert.equal(stopped.pid, null);
    await waitNumber('lag-fixture-orders-shipping', (n) => n >= 20, 'shipping lag to rise while it is stopped');
    const label = (await page.getByTestId('lag-chart').locator('svg').getAttribute('aria-label')) ?? '';
    const charted = Number(/fixture-orders \/ shipping (\d+) msgs/.exec(label)?.[1]);
    assert.ok(charted >= 20, `the chart shows the lag (${label})`);
    assert.equal(await text('service-state-billing'), 'running', 'the other services keep running');
    await shot('05-shipping-stopped-lag-rising');
    await page.getByTestId('service-start-shipping').click();
    await page.getByTestId('service-state-shipping').filter({ hasText: 'running' }).waitFor();
    await waitNumber('lag-fixture-orders-shipping', (n) => n === 0, 'shipping lag back to zero after start');
    await shot('06-shipping-started-lag-zero');
  });

  it('Ctrl-C (SIGTERM) stops every process cleanly', async () => {
    const pids = (await snapshot()).services.map((s) => s.pid).filter((p): p is number => p !== null);
    assert.equal(pids.length, 3);
    cli.kill('SIGTERM');
    assert.equal(await cliExit, 0, output.slice(-2000));
    const alive = (pid: number): boolean => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    assert.deepEqual(pids.filter(alive), [], 'no service process left running');
    assert.match(output, /herald: stopped/);
  });
});
