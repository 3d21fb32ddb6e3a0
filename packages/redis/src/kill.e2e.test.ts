// Two consumer processes in one group on the shared Redis; one is SIGKILLed mid-stream. Every
// message must be handled, the first handlings of each key must come in publish order, and
// every duplicate must be a message the killed member had handled but not committed.
//   HERALD_REDIS_KILL_MESSAGES (default 20000) sets the size.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { fork, type ChildProcess } from 'node:child_process';
import { Redis } from 'ioredis';
import { createEnvelope } from '@herald/core';
import { serverSkipReason } from '@herald/testkit';
import { createRedisTransport } from './transport.ts';

const PORT = 6379;
const MEMBER = new URL('./fixtures/group-member.ts', import.meta.url).pathname;
const PARTITIONS = 8;
const skip = await serverSkipReason('Redis', PORT);

interface Member {
  readonly name: string;
  readonly child: ChildProcess;
  readonly messages: Array<Record<string, unknown>>;
}

function startMember(name: string, env: Record<string, string>): Promise<Member> {
  const child = fork(MEMBER, { env: { ...process.env, ...env, MP_MEMBER: name }, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const m: Member = { name, child, messages: [] };
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

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
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

test('2 processes, one group: SIGKILL of a member mid-stream loses nothing, keeps per-key order, duplicates only from the killed member', { skip, timeout: 180_000 }, async (t) => {
  const N = Number(process.env.HERALD_REDIS_KILL_MESSAGES ?? 20_000);
  const KEYS = 64;
  const prefix = `herald-kill-${randomUUID().slice(0, 8)}`;
  const topic = 'kill';
  const resultsKey = `${prefix}:~results`;
  const redis = new Redis({ port: PORT });
  const transport = createRedisTransport({ connection: { port: PORT }, prefix });
  const members: Member[] = [];
  try {
    await transport.ensureTopic(topic, { partitions: PARTITIONS });
    const env = { MP_PORT: String(PORT), MP_PREFIX: prefix, MP_TOPIC: topic, MP_LEASE_MS: '1000', MP_RESULTS: resultsKey };
    members.push(...(await Promise.all(['m0', 'm1'].map((n) => startMember(n, env)))));
    const owned = await waitBalanced(members);
    t.diagnostic(`balanced: ${owned.map((o, i) => `m${i}=[${o.join(',')}]`).join(' ')}`);

    const rows = async (): Promise<string[]> => redis.lrange(resultsKey, 0, -1);
    const distinct = async (): Promise<number> => new Set((await rows()).map((r) => r.slice(r.indexOf('|') + 1))).size;
    // Publish in batches while the members consume; kill m0 once it has handled a share.
    const publishing = (async () => {
      for (let i = 0; i < N; i += 250) {
        const batch = [];
        for (let j = i; j < Math.min(N, i + 250); j++) {
          const k = `k${j % KEYS}`;
          batch.push({ key: k, envelope: createEnvelope({ type: 'mp.item', source: 'kill-test', data: { k, seq: Math.floor(j / KEYS) } }) });
        }
        await transport.publish(topic, batch);
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    await waitFor(async () => (await rows()).filter((r) => r.startsWith('m0|')).length >= N / 20, 'm0 to handle a share before the kill', 60_000);
    members[0]!.child.kill('SIGKILL');
    const killedAt = await distinct();
    await publishing;
    await waitFor(async () => (await distinct()) === N, `all ${N} messages handled`, 120_000);
    await new Promise((r) => setTimeout(r, 300)); // late duplicates, if any, would land now

    const all = await rows();
    const first = new Map<string, string>();
    const orderByKey = new Map<string, number[]>();
    const byMember: Record<string, number> = {};
    let duplicates = 0;
    const duplicateFirstBy = new Map<string, number>();
    for (const r of all) {
      const [member, k, seqText] = r.split('|') as [string, string, string];
      byMember[member] = (byMember[member] ?? 0) + 1;
      const id = `${k}/${seqText}`;
      const firstBy = first.get(id);
      if (firstBy !== undefined) {
        duplicates++;
        duplicateFirstBy.set(firstBy, (duplicateFirstBy.get(firstBy) ?? 0) + 1);
        continue;
      }
      first.set(id, member);
      const list = orderByKey.get(k) ?? [];
      list.push(Number(seqText));
      orderByKey.set(k, list);
    }
    const missing: string[] = [];
    for (let j = 0; j < N; j++) if (!first.has(`k${j % KEYS}/${Math.floor(j / KEYS)}`)) missing.push(`k${j % KEYS}/${Math.floor(j / KEYS)}`);
    assert.deepEqual(missing, [], `missing messages: ${missing.slice(0, 20).join(', ')}`);
    for (const [k, seqs] of orderByKey) {
      assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i), `first handlings of key ${k} out of order`);
    }
    assert.ok((byMember.m0 ?? 0) > 0 && (byMember.m1 ?? 0) > 0, `both members handled a share: ${JSON.stringify(byMember)}`);
    for (const [by, n] of duplicateFirstBy) assert.equal(by, 'm0', `${n} duplicate(s) first handled by surviving member ${by}: only the killed member's uncommitted window may repeat`);
    const errors = members[1]!.messages.filter((x) => x.type === 'error');
    const summary =
      `${N} messages over ${KEYS} keys, 2 members; m0 SIGKILLed when ${killedAt} were handled; handlings per member ${JSON.stringify(byMember)}; ` +
      `duplicates ${duplicates} (all first handled by the killed m0); survivor reported ${errors.length} handled error(s)${errors.length ? ` (${[...new Set(errors.map((e) => e.code))].join(', ')})` : ''}`;
    t.diagnostic(summary);
    console.log(`# redis kill test: ${summary}`);
  } finally {
    await Promise.all(members.map(stop));
    await transport.close();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await redis.unlink(...keys);
    } while (cursor !== '0');
    await redis.quit();
  }
});
