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
import { createEnvelope, partitionForKey } from '@herald/core';
import { jetstreamManager } from '@nats-io/jetstream';
import { serverSkipReason, uniqueName } from '@herald/testkit';
import { consumerPrefix, createNatsTransport, streamName } from './index.ts';
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

test('a stalled member (SIGSTOP past its lease, then SIGCONT) cannot move the group’s position: its late acks reach a deleted consumer', { skip, timeout: 60_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'herald-nats-stall-'));
  const ns = testNamespace();
  const topic = uniqueName('stall');
  const group = uniqueName('g');
  const publisher = await createNatsTransport({ prefix: ns.prefix, leaseBucket: ns.leaseBucket });
  const jsm = await jetstreamManager(publisher.connection);
  await publisher.ensureTopic(topic, { partitions: PARTITIONS });
  const env = { KT_TOPIC: topic, KT_GROUP: group, KT_LEASE_MS: '1000', KT_PREFIX: ns.prefix, KT_BUCKET: ns.leaseBucket };
  const [a, b] = (await Promise.all(['A', 'B'].map((n) => startMember(n, dir, env)))) as [Member, Member];
  try {
    const [ownedA] = await waitBalanced([a, b]);
    let key = '';
    for (let i = 0; key === ''; i++) if (ownedA!.includes(partitionForKey(`stall-${i}`, PARTITIONS))) key = `stall-${i}`;
    const partition = partitionForKey(key, PARTITIONS);
    const send = (seq: number, stall = false) => publisher.publish(topic, [{ key, envelope: createEnvelope({ type: 'kill.item', source: 'kill-test', data: { k: key, seq, ...(stall ? { stall } : {}) } }) }]);
    const consumers = async (): Promise<Array<{ name: string; floor: number }>> => {
      const out: Array<{ name: string; floor: number }> = [];
      for await (const ci of jsm.consumers.list(streamName(ns.prefix, topic))) {
        // 2.9 reports floor 0 until the first ack: a fresh consumer is at its start position.
        const floor = ci.ack_floor.consumer_seq > 0 ? ci.ack_floor.stream_seq : Math.max(0, (ci.config.opt_start_seq ?? 1) - 1);
        if (ci.name.startsWith(consumerPrefix(group, partition))) out.push({ name: ci.name, floor });
      }
      return out;
    };

    let stopped = false;
    a.child.on('message', (m: { type?: string }) => {
      if (m.type === 'stalling' && !stopped) {
        stopped = true;
        a.child.kill('SIGSTOP');
      }
    });
    await send(0, true);
    await waitFor(() => stopped, 'A to stall on the first message', 5000);
    const [before] = await consumers();
    let head = 0;
    for (let seq = 1; seq < 10; seq++) head = Number((await send(seq))[0]!.position);

    const seqsOf = (m: Member): number[] => rowsOf(m).filter((r) => r.k === key).map((r) => r.seq);
    await waitFor(() => seqsOf(b).length >= 10, 'B to handle the stalled partition', 10_000);
    assert.deepEqual(seqsOf(b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'B handles the message A never acked, then the rest, in order');
    const deadline = Date.now() + 3000;
    let after = await consumers();
    while ((after.length !== 1 || after[0]!.floor < head) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      after = await consumers();
    }
    assert.equal(after.length, 1, `one consumer for the partition after the take-over: ${JSON.stringify(after)}`);
    assert.notEqual(after[0]!.name, before!.name, 'B reads through its own (new epoch) consumer; A’s was deleted');
    assert.equal(after[0]!.floor, head, 'B committed the head of the partition');

    a.child.kill('SIGCONT');
    await waitFor(() => a.messages.some((m) => m.type === 'resumed'), 'A to resume', 5000);
    await new Promise((r) => setTimeout(r, 1500)); // a few lease rounds: room for any late ack by A
    const still = await consumers();
    assert.ok(!still.some((c) => c.name === before!.name), 'A’s old consumer stays deleted: its late acks have nowhere to land');
    for (const c of still) assert.ok(c.floor >= head, `the group's position stays at or past B's commit (${c.name}: ${c.floor} < ${head})`);
    await send(10);
    await waitFor(() => seqsOf(a).length + seqsOf(b).length === 12, 'seq 10 handled once', 5000);
    assert.deepEqual(seqsOf(a).filter((x) => x !== 10), [0], 'A re-handled nothing it had lost');
    const fenced = a.messages.filter((m) => m.type === 'error' && m.code === 'HERALD_ERR_LEASE_LOST').length;
    t.diagnostic(`partition ${partition}: A stalled holding seq 0; B took over through a new consumer (${before!.name} → ${after[0]!.name}) and committed ${head}; A's late writes refused: ${fenced}`);
  } finally {
    if (a.child.signalCode === null && a.child.exitCode === null) a.child.kill('SIGCONT');
    await Promise.all([a, b].map(stop));
    await publisher.close();
    await ns.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
});
