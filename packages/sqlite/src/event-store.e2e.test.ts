// Must show: 16 concurrent writers in 16 OS processes append to one stream on one SQLite file
// with expected versions. Every version exists exactly once, losers get a typed concurrency
// error carrying the expected and the actual version, retries converge, no event is lost, and
// a conflict never fails the other append of its process's group-commit batch.
//   ES_MP_EVENTS (default 40) sets the events per writer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import { assertDelivered } from '@herald/testkit';
import { createSqliteEventStore } from './event-store.ts';
import { tempDbPath } from './test-helpers.ts';

const WRITER = new URL('./fixtures/es-writer.ts', import.meta.url).pathname;
const WRITERS = 16;

test('16 writers in 16 processes, one stream: every version once, typed conflicts, retries converge, nothing lost', { timeout: 120_000 }, async (t) => {
  const perWriter = Number(process.env.ES_MP_EVENTS ?? 40);
  const { path, cleanup } = tempDbPath();
  const store = createSqliteEventStore({ path });
  const stream = 'account-contended';
  const children: ChildProcess[] = [];
  const reports = new Map<number, Record<string, unknown>>();
  try {
    const ready = new Set<number>();
    const finished = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`writers did not finish within 90 s: ${reports.size} of ${WRITERS} reported`)), 90_000);
      for (let w = 0; w < WRITERS; w++) {
        const child = fork(WRITER, {
          env: { ...process.env, ES_DB: path, ES_STREAM: stream, ES_WRITER: String(w), ES_COUNT: String(perWriter) },
          execArgv: ['--import', 'tsx'],
          stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        });
        children.push(child);
        child.on('message', (m: { type: string; writer: number }) => {
          if (m.type === 'ready') {
            ready.add(m.writer);
            if (ready.size === WRITERS) for (const c of children) c.send({ type: 'go' });
          } else {
            reports.set(m.writer, m);
            if (reports.size === WRITERS) {
              clearTimeout(timer);
              resolve();
            }
          }
        });
        child.on('exit', (code) => {
          if (code !== 0 && !reports.has(w)) reject(new Error(`writer ${w} exited with ${code} before reporting`));
        });
      }
    });
    await finished;
    const failed = [...reports.values()].filter((r) => r.type !== 'done');
    assert.deepEqual(failed, [], 'every writer finished');
    const events = [];
    for (let from: number | undefined = 1; from !== undefined; ) {
      const page = await store.readStream(stream, { fromVersion: from, maxCount: 1000 });
      events.push(...page.events);
      from = page.nextVersion;
    }
    const total = WRITERS * perWriter;
    assert.deepEqual(events.map((e) => e.streamVersion), Array.from({ length: total }, (_, i) => i + 1), 'every version exists exactly once');
    assertDelivered(
      Array.from({ length: total }, (_, i) => `w${i % WRITERS}-${Math.floor(i / WRITERS)}`),
      events.map((e) => e.id),
      { label: 'no event lost or duplicated' },
    );
    const conflicts = [...reports.values()].reduce((n, r) => n + (r.conflicts as number), 0);
    const bad = [...reports.values()].reduce((n, r) => n + (r.badConflicts as number), 0);
    const ownFailures = [...reports.values()].reduce((n, r) => n + (r.ownFailures as number), 0);
    t.diagnostic(`${total} events, ${conflicts} conflicts retried across ${WRITERS} processes`);
    assert.ok(conflicts > 0, 'writers in different processes did conflict');
    assert.equal(bad, 0, 'every conflict carried the expected version and an actual version ahead of it');
    assert.equal(ownFailures, 0, 'a conflict never failed the other append of its batch');
    for (let w = 0; w < WRITERS; w++) {
      const own = await store.readStream(`own-${w}`, { direction: 'backward', maxCount: 1 });
      assert.equal(own.streamVersion, reports.get(w)!.ownVersion, `writer ${w}'s own stream has every append`);
    }
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await store.close();
    cleanup();
  }
});
