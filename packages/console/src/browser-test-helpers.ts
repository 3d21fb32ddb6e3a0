/**
 * Shared by the console's browser tests: Debian chromium through playwright-core, `herald start`
 * as a child process, and waits on numbers shown in the page.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serversRequired } from '@herald/testkit';
import type { Browser, Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const ARTIFACTS = join(ROOT, 'test-artifacts', 'console');
/** Bound of every wait in the browser tests (HERALD_CONSOLE_WAIT_MS, default 30 s). */
export const WAIT_MS = Number(process.env.HERALD_CONSOLE_WAIT_MS ?? 30_000);
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

/** A skip reason when chromium is missing; under CI (HERALD_REQUIRE_SERVERS=1) it throws instead. */
export function chromiumSkipReason(): string | false {
  if (existsSync(CHROMIUM)) return false;
  const reason = `${CHROMIUM} is missing (apt-get install -y chromium); the console's browser tests need it`;
  if (serversRequired) throw new Error(`${reason} (required here: CI or HERALD_REQUIRE_SERVERS=1)`);
  console.warn(`# skipping: ${reason}`);
  return reason;
}

export async function openBrowser(): Promise<{ browser: Browser; page: Page }> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  const page = await browser.newPage({ viewport: { width: 1300, height: 1000 } });
  page.setDefaultTimeout(WAIT_MS);
  return { browser, page };
}

export interface HeraldProcess {
  readonly child: ChildProcess;
  /** Everything it wrote so far (stdout and stderr, the services' prefixed lines included). */
  output(): string;
  readonly exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after `graceMs` if still running. */
  stop(graceMs?: number): Promise<number | null>;
}

/** `herald --config <config> start`, run from the repository root. */
export function startHerald(config: string): HeraldProcess {
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(ROOT, 'packages/cli/src/main.ts'), '--config', config, 'start'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    output: () => out,
    exited,
    stop: async (graceMs = 15_000) => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** A screenshot into test-artifacts/console/<name>.png. */
export function screenshot(page: Page, name: string): Promise<Buffer> {
  return page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/**
 * Waits until the number shown by `[data-testid=testId]` satisfies `ok` (a self-contained arrow
 * function: it runs in the page). On time-out: a screenshot `failed-<testId>` and an error with
 * `what` and the tail of `context()` (the herald output).
 */
export async function waitNumber(page: Page, testId: string, ok: (n: number) => boolean, what: string, context: () => string): Promise<void> {
  try {
    await page.waitForFunction(
      `(() => { const el = document.querySelector('[data-testid="${testId}"]'); return el !== null && (${ok.toString()})(Number(el.textContent)); })()`,
      null,
      { timeout: WAIT_MS, polling: 100 },
    );
  } catch (e) {
    await screenshot(page, `failed-${testId}`).catch(() => {});
    throw new Error(`${what}: ${(e as Error).message}\n--- herald output ---\n${context().slice(-4000)}`);
  }
}

/** Whether a process with this pid still exists. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
