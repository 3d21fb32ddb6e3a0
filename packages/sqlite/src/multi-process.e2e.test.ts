// Several OS processes in one consumer group on one SQLite file: a member killed with SIGKILL
// mid-stream loses nothing and breaks no per-key order; a stalled member (SIGSTOP past its
// lease) cannot commit for partitions it lost.
//   HERALD_MP_MESSAGES (default 20000) sets the size of the kill test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { createEnvelope, partitionForKey } from '@herald/core';
import { type ChildHandle, forkChild, stopChild } from '@herald/testkit';
import { createSqliteTransport } from './index.ts';

const MEMBER = new URL('./fixtures/group-member.ts', import.meta.url).pathname;
const PARTITIONS = 8;

type Member = ChildHandle;

function startMember(name: string, env: Record<string, string>): Promise<Member> {
  return forkChild(MEMBER, { name, env: { ...env, MP_MEMBER: name } });
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

/** Waits until every member owns a share and together they own every partition. */
async function waitBalanced(members: Member[], partitions: number): Promise<number[][]> {
  const end = Date.now() + 15_000;
  for (;;) {
    const owned = await Promise.all(members.map(assignment));
    const all = owned.flat();
    if (owned.every((o) => o.length > 0) && new Set(all).size === partitions && all.length === partitions) return owned;
    if (Date.now() > end) throw new Error(`group did not balance within 15 s: ${JSON.stringify(owned)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const stop = (m: Member): Promise<void> => stopChild(m);

function setup(): { dir: string; db: string; results: Database.Database; resultsPath: string } {
  const dir = mkdtempSync(join(tmpdir(), 'herald-mp-'));
  const resultsPath = join(dir, 'results.db');
  const results = new Database(resultsPath);
  results.pragma('journal_mode = WAL');
  results.exec('CREATE TABLE handled (id INTEGER PRIMARY KEY AUTOINCREMENT, member TEXT NOT NULL, k TEXT NOT NULL, seq INTEGER NOT NULL, partition INTEGER NOT NULL)');
  return { dir, db: join(dir, 'log.db'), results, resultsPath };
}

test('3 processes, one group, one file: SIGKILL of a member mid-stream loses nothing and keeps per-key order', { timeout: 180_000 }, async (t) => {
  const N = Number(process.env.HERALD_MP_MESSAGES ?? 20_000);
  const KEYS = 64;
  const { dir, db, results, resultsPath } = setup();
  const topic = 'mp-kill';
  const transport = createSqliteTransport({ path: db });
  await transport.ensureTopic(topic, { partitions: PARTITIONS });
  const env = { MP_DB: db, MP_RESULTS: resultsPath, MP_TOPIC: topic, MP_LEASE_MS: '1000' };
  const members = await Promise.all(['m0', 'm1', 'm2'].map((n) => startMember(n, env)));
  try {
    const owned = await waitBalanced(members, PARTITIONS);
    t.diagnostic(`balanced: ${owned.map((o, i) => `m${i}=[${o.join(',')}]`).join(' ')}`);
    const byM0 = results.prepare("SELECT count(*) AS n FROM handled WHERE member = 'm0'");
    const distinct = results.prepare('SELECT count(*) AS n FROM (SELECT DISTINCT k, seq FROM handled)');
    const handledCount = (): number => (distinct.get() as { n: number }).n;
    // Publish in batches while the members consume; kill m0 a quarter of the way in.
    let killedAt = -1;
    const publishing = (async () => {
      for (let i = 0; i < N; i += 250) {
        const batch = [];
        for (let j = i; j < Math.min(N, i + 250); j++) {
          const k = `k${j % KEYS}`;
          batch.push({ key: k, envelope: createEnvelope({ type: 'mp.item', source: 'mp-test', data: { k, seq: Math.floor(j / KEYS) } }) });
        }
        await transport.publish(topic, batch);
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    // Kill m0 while it is working: once it has handled a share and before the stream ends.
    await waitFor(() => (byM0.get() as { n: number }).n >= N / 20, 'm0 to handle a share before the kill', 60_000);
    members[0]!.child.kill('SIGKILL');
    killedAt = handledCount();
    await publishing;
    await waitFor(() => handledCount() === N, `all ${N} messages handled (have ${handledCount()})`, 120_000);

    for (const m of members) {
      const errors = m.messages.filter((x) => x.type === 'error');
      if (errors.length) t.diagnostic(`${m.name} reported ${errors.length} handled error(s): ${[...new Set(errors.map((e) => e.code))].join(', ')}`);
    }
    const rows = results.prepare('SELECT member, k, seq FROM handled ORDER BY id').all() as Array<{ member: string; k: string; seq: number }>;
    const first = new Map<string, string>();
    const orderByKey = new Map<string, number[]>();
    let duplicates = 0;
    const duplicateFirstBy = new Map<string, number>();
    for (const r of rows) {
      const id = `${r.k}/${r.seq}`;
      const firstBy = first.get(id);
      if (firstBy !== undefined) {
        duplicates++;
        duplicateFirstBy.set(firstBy, (duplicateFirstBy.get(firstBy) ?? 0) + 1);
        continue;
      }
      first.set(id, r.member);
      const list = orderByKey.get(r.k) ?? [];
      list.push(r.seq);
      orderByKey.set(r.k, list);
    }
    const perKey = Math.ceil(N / KEYS);
    const missing: string[] = [];
    for (let j = 0; j < N; j++) if (!first.has(`k${j % KEYS}/${Math.floor(j / KEYS)}`)) missing.push(`k${j % KEYS}/${Math.floor(j / KEYS)}`);
    assert.deepEqual(missing, [], `missing messages: ${missing.slice(0, 20).join(', ')}`);
    for (const [k, seqs] of orderByKey) {
      const expected = Array.from({ length: seqs.length }, (_, i) => i);
      assert.deepEqual(seqs, expected, `first handlings of key ${k} out of order`);
      assert.ok(seqs.length === perKey || seqs.length === perKey - 1);
    }
    const perMember = results.prepare('SELECT member, count(*) AS n FROM handled GROUP BY member ORDER BY member').all() as Array<{ member: string; n: number }>;
    const byMember = Object.fromEntries(perMember.map((r) => [r.member, r.n]));
    assert.ok((byMember.m0 ?? 0) > 0 && (byMember.m1 ?? 0) > 0 && (byMember.m2 ?? 0) > 0, `every member handled a share: ${JSON.stringify(byMember)}`);
    for (const [by, n] of duplicateFirstBy) assert.equal(by, 'm0', `${n} duplicate(s) first handled by surviving member ${by}: only the killed member's uncommitted window may repeat`);
    const summary = `${N} messages over ${KEYS} keys, 3 members; m0 SIGKILLed when ${killedAt} were handled; rows per member ${JSON.stringify(byMember)}; duplicates ${duplicates}, all first handled by the killed m0`;
    t.diagnostic(summary);
    console.log(`# multi-process kill: ${summary}`);
  } finally {
    await Promise.all(members.map(stop));
    await transport.close();
    results.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a stalled member (SIGSTOP past its lease, then SIGCONT) cannot commit for partitions it lost', { timeout: 60_000 }, async (t) => {
  const { dir, db, results, resultsPath } = setup();
  const topic = 'mp-stall';
  const transport = createSqliteTransport({ path: db });
  await transport.ensureTopic(topic, { partitions: PARTITIONS });
  const env = { MP_DB: db, MP_RESULTS: resultsPath, MP_TOPIC: topic, MP_LEASE_MS: '1000' };
  const [a, b] = await Promise.all(['A', 'B'].map((n) => startMember(n, env))) as [Member, Member];
  const log = new Database(db, { readonly: true });
  try {
    const [ownedA] = await waitBalanced([a, b], PARTITIONS);
    let key = '';
    for (let i = 0; key === ''; i++) if (ownedA!.includes(partitionForKey(`stall-${i}`, PARTITIONS))) key = `stall-${i}`;
    const partition = partitionForKey(key, PARTITIONS);
    const send = (seq: number, stall = false) =>
      transport.publish(topic, [{ key, envelope: createEnvelope({ type: 'mp.item', source: 'mp-test', data: { k: key, seq, ...(stall ? { stall } : {}) } }) }]);

    // A takes the first message and stops (SIGSTOP) before it can ack or commit it.
    let stopped = false;
    a.child.on('message', (m: { type?: string }) => {
      if (m.type === 'stalling' && !stopped) {
        stopped = true;
        a.child.kill('SIGSTOP');
      }
    });
    await send(0, true);
    await waitFor(() => stopped, 'A to stall on the first message', 5000);
    for (let seq = 1; seq < 10; seq++) await send(seq);

    // B takes the partition once A's lease expires, and handles everything from A's committed position.
    const rowsOf = (member: string) =>
      results.prepare('SELECT seq FROM handled WHERE member = ? AND k = ? ORDER BY id').all(member, key).map((r) => (r as { seq: number }).seq);
    await waitFor(() => rowsOf('B').length >= 10, 'B to handle the stalled partition', 10_000);
    assert.deepEqual(rowsOf('B'), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'B handles the message A never committed, then the rest, in order');
    const committedOf = () =>
      (log.prepare("SELECT o.committed FROM herald_offsets o JOIN herald_topics t ON t.id = o.topic_id WHERE t.name = ? AND o.grp = 'g' AND o.partition = ?").get(topic, partition) as { committed: number }).committed;
    const head = (log.prepare('SELECT max(l.offset) AS o FROM herald_log l JOIN herald_topics t ON t.id = l.topic_id WHERE t.name = ? AND l.partition = ?').get(topic, partition) as { o: number }).o;
    await waitFor(() => committedOf() === head, 'B to commit the head of the partition', 3000);

    const epochOf = () =>
      (log.prepare("SELECT epoch FROM herald_leases WHERE scope = ? AND resource = ?").get(`log:${topic}:g`, String(partition)) as { epoch: number }).epoch;
    const epochWhileStopped = epochOf();

    // A wakes up. Its ack of the stalled message must not move the group's position; if the group
    // hands the partition back to A (it rejoined), that is a new lease from B's committed offset.
    a.child.kill('SIGCONT');
    await waitFor(() => a.messages.some((m) => m.type === 'resumed'), 'A to resume', 5000);
    await new Promise((r) => setTimeout(r, 1500)); // a few lease rounds: room for any late commit by A
    assert.equal(committedOf(), head, `the committed offset of partition ${partition} stays at B's ${head}`);
    const owners = await Promise.all([a, b].map(assignment));
    const ownerNow = owners[0]!.includes(partition) ? 'A' : owners[1]!.includes(partition) ? 'B' : 'nobody';
    if (ownerNow === 'A') assert.ok(epochOf() > epochWhileStopped, 'A owns the partition again only under a newer lease epoch');
    await send(10);
    await waitFor(() => rowsOf('A').length + rowsOf('B').length === 12, 'seq 10 handled once', 5000);
    assert.deepEqual(rowsOf('A').filter((x) => x !== 10), [0], 'A re-handled nothing it had lost');
    assert.deepEqual(rowsOf('B').filter((x) => x !== 10), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await waitFor(() => committedOf() > head, 'the group to commit past seq 10', 2000);
    const fenced = a.messages.filter((m) => m.type === 'error' && m.code === 'HERALD_ERR_LEASE_LOST').length;
    t.diagnostic(`partition ${partition}: A stalled with seq 0 unacked; B re-handled it and committed ${head}; after SIGCONT the partition is with ${ownerNow} (lease epoch ${epochWhileStopped} → ${epochOf()}); A's late writes refused by fencing: ${fenced}`);
  } finally {
    if (a.child.signalCode === null && a.child.exitCode === null) a.child.kill('SIGCONT');
    await Promise.all([a, b].map(stop));
    log.close();
    await transport.close();
    results.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
