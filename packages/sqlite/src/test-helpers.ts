/**
 * Helpers for this package's tests (not exported from index.ts): throwaway database files
 * under the OS temp folder, a controllable wall clock, and bounded waiting.
 */
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Clock, systemClock } from '@herald/core';

/** A fresh database path; `cleanup()` removes it with its -wal and -shm files. */
export function tempDbPath(): { path: string; cleanup: () => void } {
  const path = join(tmpdir(), `herald-sqlite-${randomUUID()}.db`);
  return {
    path,
    cleanup: () => {
      for (const suffix of ['', '-wal', '-shm', '-journal']) rmSync(path + suffix, { force: true });
    },
  };
}

/** The system clock with a wall clock that tests can move forward (`advance`). Timers stay real. */
export class OffsetClock implements Clock {
  offsetMs = 0;
  now(): number {
    return Date.now() + this.offsetMs;
  }
  monotonic(): number {
    return performance.now() + this.offsetMs;
  }
  setTimer(fn: () => void, delayMs: number): { cancel(): void } {
    return systemClock.setTimer(fn, delayMs);
  }
  sleep(delayMs: number, signal?: AbortSignal): Promise<void> {
    return systemClock.sleep(delayMs, signal);
  }
  advance(ms: number): void {
    this.offsetMs += ms;
  }
}

/** Polls `check` every 5 ms until it returns a truthy value; fails after `timeoutMs` (≤ 2 s). */
export async function waitFor<T>(check: () => T | Promise<T>, what: string, timeoutMs = 2000): Promise<NonNullable<T>> {
  const deadline = performance.now() + Math.min(timeoutMs, 2000);
  for (;;) {
    const v = await check();
    if (v) return v as NonNullable<T>;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
