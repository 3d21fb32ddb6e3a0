/**
 * The console's browser app (packages/console/app, Preact) is built by Vite into
 * packages/console/dist-app. `ensureAppBuilt()` builds it when the built files are missing or
 * older than any source file, once per process (concurrent callers share the build), so
 * `npm start` on a fresh checkout needs no separate build step. Each build writes a folder of
 * its own and swaps it in by renames, so two processes building at once (two test files) never
 * serve a half-written app.
 */
import { existsSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const APP_SOURCE_DIR = fileURLToPath(new URL('../app/', import.meta.url));
export const APP_DIST_DIR = fileURLToPath(new URL('../dist-app/', import.meta.url));

function newest(dir: string): number {
  let t = 0;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const s = statSync(p);
    t = Math.max(t, s.isDirectory() ? newest(p) : s.mtimeMs);
  }
  return t;
}

/** True when dist-app is missing or older than the newest file under app/. */
export function appBuildStale(): boolean {
  const index = join(APP_DIST_DIR, 'index.html');
  if (!existsSync(index)) return true;
  return statSync(index).mtimeMs < newest(APP_SOURCE_DIR);
}

let building: Promise<void> | null = null;

/** Builds the app if stale. Resolves when dist-app is current; rejects with Vite's error. */
export function ensureAppBuilt(options: { force?: boolean; log?: (line: string) => void } = {}): Promise<void> {
  if (!options.force && !appBuildStale()) return Promise.resolve();
  building ??= (async () => {
    const started = performance.now();
    const { build } = await import('vite');
    const dist = APP_DIST_DIR.replace(/\/$/, '');
    const fresh = `${dist}.build-${process.pid}`;
    const old = `${dist}.old-${process.pid}`;
    try {
      await build({
        root: APP_SOURCE_DIR,
        base: './',
        logLevel: 'warn',
        configFile: false,
        oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
        build: { outDir: fresh, emptyOutDir: true, sourcemap: false },
      });
      try {
        if (existsSync(dist)) renameSync(dist, old);
        renameSync(fresh, dist);
      } catch (e) {
        if (!existsSync(join(dist, 'index.html'))) throw e; // another process swapped its build in meanwhile: that one serves
      }
    } finally {
      rmSync(fresh, { recursive: true, force: true });
      rmSync(old, { recursive: true, force: true });
    }
    options.log?.(`console app built in ${Math.round(performance.now() - started)} ms`);
  })().finally(() => {
    building = null;
  });
  return building;
}
