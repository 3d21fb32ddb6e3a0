/**
 * Small helpers shared by the contract suites, exported for adapter authors' own tests:
 * bounded polling with a message of what was awaited, delivery-set assertions that name
 * missing and extra ids, unique names, and a scope that closes everything a test opened.
 */
import { AssertionError } from 'node:assert';
import { randomUUID } from 'node:crypto';

/** Default bound of every wait in the contract suites. */
export const DEFAULT_WAIT_MS = 2000;

export interface WaitForOptions {
  /** Give up after this long (default 2000 ms). */
  readonly timeoutMs?: number;
  /** Poll period (default 5 ms). */
  readonly intervalMs?: number;
  /** What is awaited, for the failure message; a function is evaluated at failure time (to show state). */
  readonly what?: string | (() => string);
}

/**
 * Polls `cond` until it returns truthy (resolving with that value) or the time is up, then
 * throws an AssertionError "timed out after N ms waiting for: <what>". A `cond` that throws
 * fails the wait at once with that error.
 */
export async function waitFor<T>(cond: () => T | Promise<T>, options: WaitForOptions = {}): Promise<NonNullable<T>> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_WAIT_MS;
  const intervalMs = options.intervalMs ?? 5;
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v as NonNullable<T>;
    if (performance.now() >= deadline) {
      const what = typeof options.what === 'function' ? safe(options.what) : (options.what ?? cond.toString());
      throw new AssertionError({ message: `timed out after ${timeoutMs} ms waiting for: ${what}` });
    }
    await sleep(Math.min(intervalMs, Math.max(1, deadline - performance.now())));
  }
}

/** Real-time sleep (for the suites, which run against real backends). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface DeliveredDiff {
  /** Expected ids never received. */
  readonly missing: string[];
  /** Received ids that were not expected. */
  readonly extra: string[];
  /** Expected ids received more than once, with their counts. */
  readonly duplicated: Array<{ id: string; times: number }>;
}

/** Compares what was expected with what was received (a multiset). */
export function diffDelivered(expectedIds: Iterable<string>, receivedIds: Iterable<string>): DeliveredDiff {
  const expected = new Set(expectedIds);
  const counts = new Map<string, number>();
  for (const id of receivedIds) counts.set(id, (counts.get(id) ?? 0) + 1);
  const missing = [...expected].filter((id) => !counts.has(id));
  const extra = [...counts.keys()].filter((id) => !expected.has(id));
  const duplicated = [...counts].filter(([id, n]) => n > 1 && expected.has(id)).map(([id, times]) => ({ id, times }));
  return { missing, extra, duplicated };
}

/**
 * Asserts that exactly `expectedIds` were received. Fails naming the MISSING ids, the EXTRA
 * ids and (unless `allowDuplicates`) the DUPLICATED ones, each list capped at 20 with a count.
 */
export function assertDelivered(
  expectedIds: Iterable<string>,
  receivedIds: Iterable<string>,
  options: { allowDuplicates?: boolean; label?: string } = {},
): void {
  const d = diffDelivered(expectedIds, receivedIds);
  const dupBad = !options.allowDuplicates && d.duplicated.length > 0;
  if (d.missing.length === 0 && d.extra.length === 0 && !dupBad) return;
  const parts = [
    `${options.label ? `${options.label}: ` : ''}delivered messages differ from those expected`,
    `MISSING (${d.missing.length}): ${list(d.missing)}`,
    `EXTRA (${d.extra.length}): ${list(d.extra)}`,
  ];
  if (!options.allowDuplicates) parts.push(`DUPLICATED (${d.duplicated.length}): ${list(d.duplicated.map((x) => `${x.id}×${x.times}`))}`);
  throw new AssertionError({ message: parts.join('\n  ') });
}

/**
 * Asserts that, for every key, the received sequence of ids is the expected one (duplicates
 * of an already-seen id are ignored when `allowDuplicates`). Names the first key out of order.
 */
export function assertOrderPerKey(
  expectedByKey: ReadonlyMap<string, readonly string[]>,
  received: ReadonlyArray<{ key: string | undefined; id: string }>,
  options: { allowDuplicates?: boolean; label?: string } = {},
): void {
  const got = new Map<string, string[]>();
  for (const r of received) {
    const k = r.key ?? '(none)';
    let l = got.get(k);
    if (!l) got.set(k, (l = []));
    if (options.allowDuplicates && l.includes(r.id)) continue;
    l.push(r.id);
  }
  for (const [key, want] of expectedByKey) {
    const have = got.get(key) ?? [];
    const n = Math.max(want.length, have.length);
    for (let i = 0; i < n; i++) {
      if (want[i] !== have[i]) {
        throw new AssertionError({
          message:
            `${options.label ? `${options.label}: ` : ''}key "${key}" out of order at index ${i}: expected ${want[i] ?? '(end)'}, got ${have[i] ?? '(end)'}\n` +
            `  expected: ${list(want.slice(Math.max(0, i - 3), i + 4))}\n  received: ${list(have.slice(Math.max(0, i - 3), i + 4))}`,
        });
      }
    }
  }
}

/** A fresh name with a readable prefix: `t-<uuid>` for topics, `g-<uuid>` for groups. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${randomUUID()}`;
}

/** How many times the suites repeat (the `CONTRACT_STRESS` environment variable; default 1). */
export function stressCount(): number {
  const raw = process.env.CONTRACT_STRESS;
  if (raw === undefined || raw === '') return 1;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`CONTRACT_STRESS must be a positive integer (got ${JSON.stringify(raw)})`);
  return n;
}

/**
 * Everything a test opens, closed in reverse order when the test ends (passed or failed).
 * Each closer is bounded (default 5 s) so a hanging close fails the test instead of hanging it.
 */
export class Scope {
  readonly #closers: Array<{ what: string; fn: () => unknown }> = [];
  readonly #closeTimeoutMs: number;

  constructor(options: { closeTimeoutMs?: number } = {}) {
    this.#closeTimeoutMs = options.closeTimeoutMs ?? 5000;
  }

  /** Registers `fn` to run at the end; returns `value` for chaining. */
  defer<T>(what: string, fn: () => unknown, value?: T): T {
    this.#closers.push({ what, fn });
    return value as T;
  }

  /** Runs every closer (reverse order) and throws the first failure, after running all. */
  async close(): Promise<void> {
    const errors: unknown[] = [];
    while (this.#closers.length > 0) {
      const { what, fn } = this.#closers.pop()!;
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          Promise.resolve().then(fn),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new AssertionError({ message: `${what} did not finish within ${this.#closeTimeoutMs} ms` })), this.#closeTimeoutMs);
          }),
        ]);
      } catch (e) {
        errors.push(e);
      } finally {
        clearTimeout(timer);
      }
    }
    if (errors.length > 0) throw errors[0];
  }
}

/** Runs `fn` with a fresh Scope and closes it however `fn` ends; a close failure fails only a passing test. */
export async function withScope<T>(fn: (scope: Scope) => Promise<T>): Promise<T> {
  const scope = new Scope();
  let result: T;
  try {
    result = await fn(scope);
  } catch (e) {
    await scope.close().catch(() => {});
    throw e;
  }
  await scope.close();
  return result;
}

function list(ids: readonly string[]): string {
  if (ids.length === 0) return '[]';
  const shown = ids.slice(0, 20).join(', ');
  return ids.length > 20 ? `[${shown}, … ${ids.length - 20} more]` : `[${shown}]`;
}

function safe(f: () => string): string {
  try {
    return f();
  } catch (e) {
    return `(could not describe: ${(e as Error).message})`;
  }
}
