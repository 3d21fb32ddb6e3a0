// Two consumer processes in one group on the shared RabbitMQ; one is SIGKILLed mid-stream.
// Every message is handled, the first handlings of each key come in publish order, and the only
// duplicates are messages the killed member had handled but not (yet) acked — RabbitMQ returns
// its unacked messages to the head of each partition queue, in order, when its connection dies,
// and the survivor takes the partitions once its view drops the dead member (memberTimeoutMs).
//   HERALD_RMQ_KILL_MESSAGES (default 10000) sets the size.
import assert from 'node:assert/strict';
import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createEnvelope } from '@herald/core';
import { serverSkipReason } from '@herald/testkit';
import { Names } from './names.ts';
import { RABBITMQ_PORT, RABBITMQ_URL, TestBroker, testNamespace } from './test-helpers.ts';

const MEMBER = new URL('./fixtures/kill-member.ts', import.meta.url).pathname;
const PARTITIONS = 8;
const skip = await serverSkipReason('RabbitMQ', RABBITMQ_PORT);

interface Member {
  readonly name: string;
  readonly child: ChildProcess;
  readonly messages: Array<Record<string, unknown>>;
}

function startMember(name: string, env: Record<string, string>): Promise<Member> {
  const child = fork(MEMBER, { env: { ...process.env, ...env, KM_MEMBER: name }, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
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

async function waitFor(cond: () => boolean, what: () => string, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function assignment(m: Member): Promise<number[]> {
  const before = m.messages.length;
  m.child.send({ type: 'assignment' });
  await waitFor(() => m.messages.slice(before).some((x) => x.type === 'assignment'), () => `assignment of ${m.name}`, 2000);
  return m.messages.slice(before).find((x) => x.type === 'assignment')!.partitions as number[];
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

describe('rabbitmq: a group member SIGKILLed mid-stream', { skip }, () => {
  const namespace = testNamespace('kill');
  const broker = new TestBroker(namespace);
  after(() => broker.cleanup());

  it('2 processes, one group: every message handled, per-key order kept, duplicates only from the killed member', { timeout: 120_000 }, async (t) => {
    const N = Number(process.env.HERALD_RMQ_KILL_MESSAGES ?? 10_000);
    const KEYS = 64;
    const dir = mkdtempSync(join(tmpdir(), 'herald-rmq-kill-'));
    const resultsPath = join(dir, 'handled.log');
    writeFileSync(resultsPath, '');
    const topic = 'kill';
    const transport = broker.create();
    await transport.ensureTopic(topic, { partitions: PARTITIONS });
    const names = new Names(namespace);
    for (let p = 0; p < PARTITIONS; p++) broker.extraQueues.add(names.groupQueue(topic, 'g', p));
    const env = { KM_URL: RABBITMQ_URL, KM_NAMESPACE: namespace, KM_TOPIC: topic, KM_RESULTS: resultsPath, KM_HANDLER_MS: '2' };
    const members = await Promise.all(['m0', 'm1'].map((n) => startMember(n, env)));
    const rows = (): string[][] => readFileSync(resultsPath, 'utf8').split('\n').filter(Boolean).map((l) => l.split(' '));
    try {
      const end = Date.now() + 15_000;
      for (;;) {
        const owned = await Promise.all(members.map(assignment));
        const all = owned.flat();
        if (owned.every((o) => o.length > 0) && all.length === PARTITIONS && new Set(all).size === PARTITIONS) {
          t.diagnostic(`balanced: m0=[${owned[0]!.join(',')}] m1=[${owned[1]!.join(',')}]`);
          break;
        }
        if (Date.now() > end) throw new Error(`group did not balance: ${JSON.stringify(owned)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      // Publish in paced batches (~5000/s) while the members consume; kill m0 a tenth of the way in.
      const publishing = (async () => {
        for (let i = 0; i < N; i += 50) {
          const batch = [];
          for (let j = i; j < Math.min(N, i + 50); j++) {
            const k = `k${j % KEYS}`;
            batch.push({ key: k, envelope: createEnvelope({ type: 'kill.item', source: 'kill-test', data: { k, seq: Math.floor(j / KEYS) } }) });
          }
          await transport.publish(topic, batch);
          await new Promise((r) => setTimeout(r, 10));
        }
      })();
      await waitFor(() => rows().filter((r) => r[0] === 'm0').length >= N / 10, () => 'm0 to handle a tenth before the kill', 60_000);
      members[0]!.child.kill('SIGKILL');
      const killedAt = rows().length;
      await publishing;
      const distinct = (): number => new Set(rows().map((r) => `${r[1]}/${r[2]}`)).size;
      await waitFor(() => distinct() === N, () => `all ${N} messages handled (have ${distinct()})`, 60_000);
      await new Promise((r) => setTimeout(r, 300)); // room for a late duplicate to show

      const first = new Map<string, string>();
      const orderByKey = new Map<string, number[]>();
      const duplicateFirstBy = new Map<string, number>();
      let duplicates = 0;
      const byMember: Record<string, number> = {};
      let redelivered = 0;
      for (const [member, k, seqText, , attempt] of rows()) {
        if (member === 'm1' && Number(attempt) > 1) redelivered++;
        byMember[member!] = (byMember[member!] ?? 0) + 1;
        const id = `${k}/${seqText}`;
        const firstBy = first.get(id);
        if (firstBy !== undefined) {
          duplicates++;
          duplicateFirstBy.set(firstBy, (duplicateFirstBy.get(firstBy) ?? 0) + 1);
          continue;
        }
        first.set(id, member!);
        orderByKey.set(k!, [...(orderByKey.get(k!) ?? []), Number(seqText)]);
      }
      const missing: string[] = [];
      for (let j = 0; j < N; j++) if (!first.has(`k${j % KEYS}/${Math.floor(j / KEYS)}`)) missing.push(`k${j % KEYS}/${Math.floor(j / KEYS)}`);
      assert.deepEqual(missing, [], `missing messages: ${missing.slice(0, 20).join(', ')}`);
      for (const [k, seqs] of orderByKey) {
        assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i), `first handlings of key ${k} out of order`);
      }
      assert.ok((byMember.m0 ?? 0) > 0 && (byMember.m1 ?? 0) > 0, `both members handled a share: ${JSON.stringify(byMember)}`);
      for (const [by, n] of duplicateFirstBy) assert.equal(by, 'm0', `${n} duplicate(s) first handled by the surviving member ${by}`);
      const errors = members[1]!.messages.filter((x) => x.type === 'error');
      const summary = `${N} messages over ${KEYS} keys and ${PARTITIONS} partitions, 2 members; m0 SIGKILLed when ${killedAt} were handled; handlings per member ${JSON.stringify(byMember)}; duplicates ${duplicates}, all first handled by the killed m0; the survivor got ${redelivered} message(s) with attempt > 1 (m0's unacked ones, returned by the broker); survivor reported ${errors.length} handled error(s)${errors.length ? ` (${[...new Set(errors.map((e) => e.code))].join(', ')})` : ''}`;
      t.diagnostic(summary);
      console.log(`# rabbitmq kill: ${summary}`);
    } finally {
      await Promise.all(members.map(stop));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
