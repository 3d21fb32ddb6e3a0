import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { waitFor } from '@herald/testkit';
import { type SupervisedService, Supervisor } from './supervisor.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-supervisor-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function script(name: string, body: string): string {
  const file = join(dir, name);
  writeFileSync(file, body);
  return file;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

// Runs until told to stop; writes its pid and a line of output.
const steady = script('steady.mjs', `console.log('up ' + process.pid); setInterval(() => {}, 1000);`);
// Crashes at once, counting its runs in a file.
const crashing = script(
  'crash.mjs',
  `import { appendFileSync } from 'node:fs'; appendFileSync(process.env.RUNS, 'x'); console.error('boom'); process.exit(3);`,
);
// Ignores SIGTERM.
const stubborn = script('stubborn.mjs', `process.on('SIGTERM', () => console.log('ignoring SIGTERM')); console.log('ready'); setInterval(() => {}, 1000);`);
// Spawns a grandchild that would outlive it, and writes the grandchild's pid.
const parent = script(
  'parent.mjs',
  `import { spawn } from 'node:child_process'; import { writeFileSync } from 'node:fs';
   const g = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
   writeFileSync(process.env.GRANDCHILD, String(g.pid)); setInterval(() => {}, 1000);`,
);

const node = (name: string, file: string, extra: Partial<SupervisedService> = {}): SupervisedService => ({ name, command: process.execPath, args: [file], env: { ...process.env, ...extra.env }, ...extra });

describe('Supervisor', () => {
  it('prefixes output per service and reports running with a pid', async () => {
    const lines: string[] = [];
    const sup = new Supervisor([node('steady', steady)], { onOutput: (s, stream, l) => lines.push(`${s}/${stream}: ${l}`), onNotice: () => {} });
    try {
      sup.startAll();
      await waitFor(() => lines.some((l) => l.startsWith('steady/stdout: up ')), { what: 'the first line of output' });
      const [st] = sup.status();
      assert.equal(st!.state, 'running');
      assert.ok(st!.pid && alive(st!.pid));
      assert.equal(lines[0], `steady/stdout: up ${st!.pid}`);
    } finally {
      await sup.close();
    }
  });

  it('restarts a crashing service with growing delays, and keeps it crashed when restart is false', async () => {
    const runs = join(dir, 'runs');
    const notices: string[] = [];
    const sup = new Supervisor([node('crash', crashing, { env: { ...process.env, RUNS: runs } })], {
      backoff: { initialMs: 40, maxMs: 160, resetAfterMs: 60_000 },
      onOutput: () => {},
      onNotice: (_s, m) => notices.push(m),
    });
    try {
      sup.startAll();
      await waitFor(() => notices.filter((m) => m.startsWith('crashed')).length >= 4, { timeoutMs: 10_000, what: 'four crashes' });
      assert.ok(readFileSync(runs, 'utf8').length >= 4);
      const delays = notices.filter((m) => m.startsWith('crashed')).map((m) => Number(/restarting in (\d+) ms/.exec(m)?.[1]));
      assert.deepEqual(delays.slice(0, 4), [40, 80, 160, 160], notices.join('\n'));
      assert.match(notices[0]!, /exited with code 3/);
      assert.ok(sup.status()[0]!.restarts >= 3);
    } finally {
      await sup.close();
    }
    const runsAfterClose = readFileSync(runs, 'utf8').length;
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(readFileSync(runs, 'utf8').length, runsAfterClose, 'no restart after close()');

    const once = join(dir, 'once');
    const noRestart = new Supervisor([node('crash', crashing, { env: { ...process.env, RUNS: once }, restart: false })], { onOutput: () => {}, onNotice: () => {} });
    noRestart.startAll();
    await waitFor(() => noRestart.status()[0]!.state === 'crashed', { what: 'state crashed' });
    assert.deepEqual(noRestart.status()[0]!.lastExit?.code, 3);
    await noRestart.close();
    assert.equal(readFileSync(once, 'utf8'), 'x');
  });

  it('stops and starts one service on request, leaving the others running', async () => {
    const sup = new Supervisor([node('a', steady), node('b', steady)], { onOutput: () => {}, onNotice: () => {} });
    try {
      sup.startAll();
      await waitFor(() => sup.status().every((s) => s.state === 'running'));
      const firstPid = sup.status()[0]!.pid!;
      const stopped = await sup.stopService('a');
      assert.equal(stopped.state, 'stopped');
      assert.equal(stopped.pid, null);
      assert.equal(alive(firstPid), false);
      assert.equal(sup.status()[1]!.state, 'running');
      const started = sup.startService('a');
      assert.equal(started.state, 'running');
      assert.notEqual(started.pid, firstPid);
      assert.equal(started.restarts, 0, 'a start on request is not a restart');
      assert.throws(() => sup.startService('nope'), (e: { code?: string }) => e.code === 'HERALD_ERR_NOT_FOUND');
    } finally {
      await sup.close();
    }
  });

  it('kills a child that ignores SIGTERM after stopTimeoutMs, and the grandchildren of every child on close', async () => {
    const grandchildFile = join(dir, 'grandchild');
    const sup = new Supervisor([node('stubborn', stubborn), node('parent', parent, { env: { ...process.env, GRANDCHILD: grandchildFile } })], {
      stopTimeoutMs: 300,
      onOutput: () => {},
      onNotice: () => {},
    });
    sup.startAll();
    await waitFor(() => existsSync(grandchildFile) && readFileSync(grandchildFile, 'utf8').length > 0, { timeoutMs: 5000 });
    const pids = [...sup.status().map((s) => s.pid!), Number(readFileSync(grandchildFile, 'utf8'))];
    assert.ok(pids.every(alive));
    await sup.close();
    assert.deepEqual(sup.status().map((s) => s.state), ['stopped', 'stopped']);
    await waitFor(() => pids.every((p) => !alive(p)), { timeoutMs: 2000, what: `every process gone: ${pids.filter(alive).join(', ')}` });
    await sup.close(); // idempotent
  });
});
