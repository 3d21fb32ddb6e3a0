// Two processes in one consumer group on NATS JetStream; one is SIGKILLed mid-stream. Every
// message is handled, the first handlings of each key come in order, and every duplicate was
// first handled by the killed member (its unacknowledged window is what repeats).
//   HERALD_KILL_MESSAGES (default 10000) sets the size.
import assert from 'node:assert/strict';
import { type ChildProcess, fork } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createEnvelope } from '@herald/core';
import { serverSkipReason, uniqueName } from '@herald/testkit';
import { createNatsTransport } from './index.ts';
import { testNamespace } from './test-helpers.ts';

const skip = await serverSkipReason('NATS JetStream', 4222);
const MEMBER = new URL('./fixtures/group-member.ts', import.meta.url).pathname;
const PARTITIONS = 8;

interface Member {
  readonly name: string;
  readonly child: ChildProcess;
  readonly out: string;
  readonly messages: Array<Record<string, unknown>>;
}

function startMember(name: string, dir: string, env: Record<string, string>): Promise<Member> {
  const out = join(dir, `${name}.log`);
  const child = fork(MEMBER, { env: { ...process.env, ...env, KT_MEMBER: name, KT_OUT: out }, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const m: Member = { name, child, out, messages: [] };
  child.on('message', (msg) => m.messages.push(msg as Record<string, unknown>));
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`member ${name} did not start within 20 s`)), 20_000);
    child.on('message', (msg: { type?: string }) => {
      if (msg.type === 'started') {
        clearTimeout(t);
        resolve(m);
      }
    });
    child.on('exit', (code, signal) => {
      if (code !== 0 && signal === null) reject(new Error(`member ${name} exited with ${code}`));
    });
  });
}

async function waitFor(cond: () => boolean, what: string, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function assignment(m: Member): Promise<number[]> {
  const before = m.messages.length;
  m.child.send({ type: 'assignment' });
  await waitFor(() => m.messages.slice(before).some((x) => x.type === 'assignment'), `assignment of ${m.name}`, 2000);
  return m.messages.slice(before).find((x) => x.type === 'assignment')!.partitions as number[];
}

async function waitBalanced(members: Member[]): Promise<number[][]> {
  const end = Date.now() + 15_000;
  for (;;) {
    const owned = await Promise.all(members.map(assignment));
    const all = owned.flat();
    if (owned.every((o) => o.length > 0) && new Set(all).size === PARTITIONS && all.length === PARTITIONS) return owned;
    if (Date.now() > end) throw new Error(`group did not balance within 15 s: ${JSON.stringify(owned)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function stop(m: Member): Promise<void> {
  if (m.child.exitCode !== null || m.child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => m.child.kill('SIGKILL'), 5000);
    m.child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    m.child.send({ type: 'close' });
  });
}

interface Row {
  readonly us: number;
  readonly member: string;
  readonly k: string;
  readonly seq: number;
}

function rowsOf(m: Member): Row[] {
  if (!existsSync(m.out)) return [];
  const rows: Row[] = [];
  for (const line of readFileSync(m.out, 'utf8').split('\n')) {
    const f = line.split('\t');
    if (f.length !== 5) continue; // a line cut by SIGKILL
    rows.push({ us: Number(f[0]), member: f[1]!, k: f[2]!, seq: Number(f[3]) });
  }
  return rows;
}

test('2 processes, one group: SIGKILL of a member mid-stream loses nothing and keeps per-key order', { skip, timeout: 120_000 }, async (t) => {
  const N = Number(process.env.HERALD_KILL_MESSAGES ?? 10_000);
  const KEYS = 64;
  const dir = mkdtempSync(join(tmpdir(), 'herald-nats-kill-'));
  const topic = uniqueName('kill');
  const ns = testNamespace();
  const publisher = await createNatsTransport({ prefix: ns.prefix, leaseBucket: ns.leaseBucket });
  await publisher.ensureTopic(topic, { partitions: PARTITIONS });
  const env = { KT_TOPIC: topic, KT_GROUP: uniqueName('g'), KT_LEASE_MS: '1000', KT_PREFIX: ns.prefix, KT_BUCKET: ns.leaseBucket };
  const members = await Promise.all(['m0', 'm1'].map((n) => startMember(n, dir, env)));
  try {
    const owned = await waitBalanced(members);
    t.diagnostic(`balanced: ${owned.map((o, i) => `m${i}=[${o.join(',')}]`).join(' ')}`);
    const all = (): Row[] => [...rowsOf(members[0]!), ...rowsOf(members[1]!)];
    const distinct = (): number => new Set(all().map((r) => `${r.k}/${r.seq}`)).size;
    const publishing = (async () => {
      for (let i = 0; i < N; i += 250) {
        const batch = [];
        for (let j = i; j < Math.min(N, i + 250); j++) {
          const k = `k${j % KEYS}`;
          batch.push({ key: k, envelope: createEnvelope({ type: 'kill.item', source: 'kill-test', data: { k, seq: Math.floor(j / KEYS) } }) });
        }
        await publisher.publish(topic, batch);
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    await waitFor(() => rowsOf(members[0]!).length >= N / 10, 'm0 to handle a share before the kill', 60_000);
    members[0]!.child.kill('SIGKILL');
    const killedAt = distinct();
    await publishing;
    await waitFor(() => distinct() === N, `all ${N} messages handled`, 60_000);
    await new Promise((r) => setTimeout(r, 300)); // room for stray duplicates to show

    const rows = all().sort((a, b) => a.us - b.us);
    const first = new Map<string, string>();
    const orderByKey = new Map<string, number[]>();
    const duplicateFirstBy = new Map<string, number>();
    let duplicates = 0;
    for (const r of rows) {
      const id = `${r.k}/${r.seq}`;
      const by = first.get(id);
      if (by !== undefined) {
        duplicates++;
        duplicateFirstBy.set(by, (duplicateFirstBy.get(by) ?? 0) + 1);
        continue;
      }
      first.set(id, r.member);
      orderByKey.set(r.k, [...(orderByKey.get(r.k) ?? []), r.seq]);
    }
    const missing: string[] = [];
    for (let j = 0; j < N; j++) if (!first.has(`k${j % KEYS}/${Math.floor(j / KEYS)}`)) missing.push(`k${j % KEYS}/${Math.floor(j / KEYS)}`);
    assert.deepEqual(missing, [], `missing messages: ${missing.slice(0, 20).join(', ')}`);
    for (const [k, seqs] of orderByKey) {
      assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i), `first handlings of key ${k} out of order`);
    }
    const byMember = { m0: rowsOf(members[0]!).length, m1: rowsOf(members[1]!).length };
    assert.ok(byMember.m0 > 0 && byMember.m1 > 0, `both members handled a share: ${JSON.stringify(byMember)}`);
    for (const [by, n] of duplicateFirstBy) assert.equal(by, 'm0', `${n} duplicate(s) first handled by the surviving ${by}: only the killed member's unacknowledged window may repeat`);
    const summary = `${N} messages over ${KEYS} keys, 2 members; m0 SIGKILLed when ${killedAt} were handled; rows per member ${JSON.stringify(byMember)}; duplicates ${duplicates}, all first handled by the killed m0`;
    t.diagnostic(summary);
    console.log(`# nats kill: ${summary}`);
  } finally {
    await Promise.all(members.map(stop));
    await publisher.close();
    await ns.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
});
