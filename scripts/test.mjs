#!/usr/bin/env node
// Runs every test file with node's own test runner, in one invocation so there is one summary.
// On Node 20 a folder or glob argument finds no .ts tests, so files are listed explicitly.
//   node scripts/test.mjs [--tier unit|contract|int|e2e] [filter…]
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const args = process.argv.slice(2);
let tier;
const filters = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--tier') tier = args[++i];
  else filters.push(args[i]);
}

const files = [];
function walk(dir) {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name === 'dist' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.ts')) files.push(relative(root, p));
  }
}
for (const top of ['packages', 'examples', 'scripts', 'docs']) {
  try { walk(join(root, top)); } catch { /* folder absent */ }
}
const tierOf = (f) => (f.endsWith('.contract.test.ts') ? 'contract' : f.endsWith('.int.test.ts') ? 'int' : f.endsWith('.e2e.test.ts') ? 'e2e' : 'unit');
const chosen = files
  .filter((f) => !tier || tierOf(f) === tier)
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
if (chosen.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
const concurrency = process.env.HERALD_TEST_CONCURRENCY ?? '2';
const r = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-reporter=spec', `--test-concurrency=${concurrency}`, ...chosen],
  { stdio: 'inherit', cwd: root, env: process.env },
);
process.exit(r.status ?? 1);
