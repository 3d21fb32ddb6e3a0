import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createEnvelope, type Delivery } from '@herald/core';
import { tempDbPath, waitFor } from './test-helpers.ts';
import { createSqliteTransport } from './transport.ts';

const FIXTURE = fileURLToPath(new URL('./multi-process.fixture.ts', import.meta.url));
const cleanups: Array<() => void | Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

interface Child {
  readonly proc: ChildProcess;
  readonly lines: string[];
  readonly exited: Promise<number | null>;
}

function child(...args: string[]): Child {
  const proc = spawn(process.execPath, ['--import', 'tsx', FIXTURE, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: string[] = [];
  let buf = '';
  proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  cleanups.push(() => {
    if (proc.exitCode === null) proc.kill();
  });
  return { proc, lines, exited };
}

/** Waits for a child process to get going: a precondition (process start-up), not an assertion, so it may take longer than 2 s on a loaded machine. */
async function started(what: string, check: () => boolean): Promise<void> {
  const deadline = performance.now() + 15_000;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`child process never got going: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function fresh(): string {
  const { path, cleanup } = tempDbPath();
  cleanups.push(cleanup);
  return path;
}

describe('SqliteTransport across OS processes', () => {
  it('two publishing processes and this one share a topic: unique gap-free offsets, per-key order, nothing lost', async () => {
    const path = fresh();
    const topic = `mp-${process.pid}-a`;
    const t = createSqliteTransport({ path, pollMs: 10 });
    cleanups.push(() => t.close({ timeoutMs: 200 }));
    await t.ensureTopic(topic, { partitions: 4 });
    const got: Delivery[] = [];
    const sub = t.subscribe(topic, { group: 'reader' });
    void (async () => {
      for await (const d of sub) {
        got.push(d);
        d.ack();
      }
    })();
    const a = child('publish', path, topic, 'a', '600', '7');
    const b = child('publish', path, topic, 'b', '600', '13');
    const local = (async () => {
      for (let j = 0; j < 200; j++) {
        await t.publish(topic, [{ envelope: createEnvelope({ type: 'mp.test', source: 'c', id: `c-${j}`, data: { prefix: 'c', n: j } }), key: `c-k${j % 5}` }]);
      }
    })();
    await started('publishers to finish', () => a.lines.includes('done') && b.lines.includes('done'));
    await local;
    assert.equal(await a.exited, 0);
    assert.equal(await b.exited, 0);
    await waitFor(() => got.length >= 1400, `1400 deliveries (got ${got.length})`);
    await sub.close();

    const ids = got.map((d) => d.envelope!.id);
    assert.equal(new Set(ids).size, 1400, 'no duplicates');
    const lastPos = new Map<number, number>();
    const lastN = new Map<string, number>();
    for (const d of got) {
      const pos = Number(d.position);
      assert.equal(pos, (lastPos.get(d.partition) ?? -1) + 1, `partition ${d.partition}: offsets gap-free and increasing`);
      lastPos.set(d.partition, pos);
      const n = (d.envelope!.data as { n: number }).n;
      assert.ok(n > (lastN.get(d.key!) ?? -1), `key ${d.key}: publish order kept`);
      lastN.set(d.key!, n);
    }
  });

  it('two consuming processes in one group split the partitions and together receive every message once', async () => {
    const path = fresh();
    const topic = `mp-${process.pid}-b`;
    const t = createSqliteTransport({ path });
    cleanups.push(() => t.close({ timeoutMs: 200 }));
    await t.ensureTopic(topic, { partitions: 8 });
    const x = child('consume', path, topic, 'split', 'member-x');
    const y = child('consume', path, topic, 'split', 'member-y');
    const assignment = (c: Child): number[] => {
      const last = c.lines.filter((l) => l.startsWith('{"assigned"')).at(-1);
      return last ? (JSON.parse(last) as { assigned: number[] }).assigned : [];
    };
    await started('both members to own four partitions', () => assignment(x).length === 4 && assignment(y).length === 4);
    assert.deepEqual([...assignment(x), ...assignment(y)].sort(), [0, 1, 2, 3, 4, 5, 6, 7]);

    const n = 400;
    for (let i = 0; i < n; i += 50) {
      await t.publish(
        topic,
        Array.from({ length: 50 }, (_, j) => ({ envelope: createEnvelope({ type: 'mp.test', source: 'p', id: `m-${i + j}`, data: { n: i + j } }), key: `key-${(i + j) % 23}` })),
      );
    }
    const delivered = (c: Child): Array<{ id: string; partition: number }> => c.lines.filter((l) => l.startsWith('{"id"')).map((l) => JSON.parse(l));
    await waitFor(() => delivered(x).length + delivered(y).length >= n, 'every message to reach one of the members');
    const dx = delivered(x);
    const dy = delivered(y);
    assert.ok(dx.length > 0 && dy.length > 0, `both members got work (${dx.length} / ${dy.length})`);
    for (const d of dx) assert.ok(assignment(x).includes(d.partition));
    for (const d of dy) assert.ok(assignment(y).includes(d.partition));
    const all = [...dx, ...dy].map((d) => d.id);
    assert.equal(new Set(all).size, n, 'every message exactly once across the two processes');
    for (const c of [x, y]) c.proc.stdin!.write('stop\n');
    await started('members to close', () => x.lines.includes('closed') && y.lines.includes('closed'));
    assert.equal(await x.exited, 0);
    assert.equal(await y.exited, 0);
    const offsets = t.database.db
      .prepare(`SELECT sum(committed + 1) AS n FROM herald_offsets o JOIN herald_topics t ON t.id = o.topic_id WHERE t.name = ? AND o.grp = 'split'`)
      .get(topic) as { n: number };
    assert.equal(offsets.n, n, 'the members committed every offset before leaving');
  });
});
