// Three outbox relay processes on one SQLite file relay rows over many keys to the SQLite
// transport while the service keeps writing; one relay is SIGKILLed mid-way. Afterwards every
// row was published, each key's first publications are in write order, and every duplicate is
// a row the killed relay had handed to the transport (its unconfirmed window), never one of a
// clean hand-over.
//   HERALD_RELAY_E2E_ROWS (default 6000) sets the number of rows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { createEnvelope } from '@herald/core';
import { type ChildHandle, forkChild, stopChild, waitFor } from '@herald/testkit';
import { createSqliteOutboxStore, createSqliteTransport, createSqliteUnitOfWork } from './index.ts';

const RELAY = new URL('./fixtures/outbox-relay.ts', import.meta.url).pathname;

test('3 relay processes, one file: SIGKILL of one mid-way publishes every row, keeps per-key order, duplicates only from the killed relay', { timeout: 180_000 }, async (t) => {
  const N = Number(process.env.HERALD_RELAY_E2E_ROWS ?? 6000);
  const KEYS = 48;
  const dir = mkdtempSync(join(tmpdir(), 'herald-relay-e2e-'));
  const path = join(dir, 'service.db');
  const resultsPath = join(dir, 'results.db');
  const results = new Database(resultsPath);
  results.pragma('journal_mode = WAL');
  results.exec('CREATE TABLE attempted (member TEXT NOT NULL, id TEXT NOT NULL)');
  const topic = 'relayed';
  const uow = createSqliteUnitOfWork({ path, outboxPartitions: 8 });
  uow.database.db.exec('CREATE TABLE orders (k TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (k, seq))');
  const transport = createSqliteTransport({ path });
  await transport.ensureTopic(topic, { partitions: 4 });
  const outbox = createSqliteOutboxStore({ path });
  const log = new Database(path, { readonly: true });
  const published = log.prepare('SELECT count(*) FROM herald_log l JOIN herald_topics t ON t.id = l.topic_id WHERE t.name = ?').pluck();
  const env = { RELAY_DB: path, RELAY_RESULTS: resultsPath };
  const relays: ChildHandle[] = [];
  try {
    // Relays join one after the other: clean hand-overs while rows are already flowing.
    relays.push(await forkChild(RELAY, { name: 'r0', env: { ...env, RELAY_MEMBER: 'r0', RELAY_HOLD_MS: '50' }, startTimeoutMs: 60_000 }));
    let written = 0;
    let othersJoined = false;
    let killed = false;
    const writing = (async () => {
      for (let i = 0; i < N; ) {
        // Near the end and before the kill, small slow transactions: rows keep coming for r0 to publish.
        const size = !killed && i >= N - Math.min(1000, N / 5) ? 5 : 100;
        const end = Math.min(N, i + size);
        await uow.withTransaction((tx) => {
          for (let j = i; j < end; j++) {
            const k = `k${j % KEYS}`;
            const seq = Math.floor(j / KEYS);
            tx.native.prepare('INSERT INTO orders (k, seq) VALUES (?, ?)').run(k, seq);
            tx.publish(topic, { key: k, envelope: createEnvelope({ type: 'order.placed', source: 'relay-e2e', id: `${k}/${seq}`, data: { k, seq } }) });
          }
        });
        written = i = end;
        // A fifth of the rows before the other relays join, the rest paced after.
        while (!othersJoined && written >= N / 5) await new Promise((r) => setTimeout(r, 10));
        await new Promise((r) => setTimeout(r, size === 5 ? 20 : 25));
      }
    })();
    relays.push(await forkChild(RELAY, { name: 'r1', env: { ...env, RELAY_MEMBER: 'r1' }, startTimeoutMs: 60_000 }));
    relays.push(await forkChild(RELAY, { name: 'r2', env: { ...env, RELAY_MEMBER: 'r2' }, startTimeoutMs: 60_000 }));
    othersJoined = true;
    // Kill r0 once the three share the work and r0 has published since, while rows are still being written.
    const attemptsOf = results.prepare('SELECT count(*) FROM attempted WHERE member = ?').pluck();
    const r0Before = attemptsOf.get('r0') as number;
    await waitFor(() => (attemptsOf.get('r1') as number) > 0 && (attemptsOf.get('r2') as number) > 0 && (attemptsOf.get('r0') as number) > r0Before + 50, {
      timeoutMs: 60_000,
      what: () => `the three relays to publish (attempts r0 ${String(attemptsOf.get('r0'))} (${r0Before} before the others joined), r1 ${String(attemptsOf.get('r1'))}, r2 ${String(attemptsOf.get('r2'))}; written ${written} of ${N})`,
    });
    assert.ok(written < N, 'the kill happens while rows are still being written');
    // SIGKILL r0 right after a publish of its was stored and before the relay saw it confirmed: its unconfirmed window.
    const r0 = relays[0]!;
    const seenPublishes = r0.messages.filter((m) => m.type === 'published').length;
    await waitFor(() => r0.messages.filter((m) => m.type === 'published').length > seenPublishes, { timeoutMs: 20_000, what: 'r0 to publish again' });
    r0.child.kill('SIGKILL');
    killed = true;
    const window = Number(r0.messages.filter((m) => m.type === 'published').at(-1)!.count);
    const killedAt = published.get(topic) as number;
    await writing;
    await waitFor(async () => (await outbox.backlog()).count === 0, { timeoutMs: 60_000, what: () => `the outbox to drain (written ${written})` });

    const rows = log
      .prepare('SELECT l.envelope FROM herald_log l JOIN herald_topics t ON t.id = l.topic_id WHERE t.name = ? ORDER BY l.partition, l.offset')
      .pluck()
      .all(topic) as string[];
    const firstSeqs = new Map<string, number[]>();
    const seen = new Map<string, number>();
    for (const raw of rows) {
      const e = JSON.parse(raw) as { id: string; data: { k: string; seq: number } };
      const n = seen.get(e.id) ?? 0;
      seen.set(e.id, n + 1);
      if (n > 0) continue;
      const list = firstSeqs.get(e.data.k) ?? [];
      list.push(e.data.seq);
      firstSeqs.set(e.data.k, list);
    }
    const missing: string[] = [];
    for (let j = 0; j < N; j++) if (!seen.has(`k${j % KEYS}/${Math.floor(j / KEYS)}`)) missing.push(`k${j % KEYS}/${Math.floor(j / KEYS)}`);
    assert.deepEqual(missing.slice(0, 20), [], `${missing.length} rows never published`);
    for (const [k, seqs] of firstSeqs) assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i), `first publications of ${k} out of write order`);
    const duplicated = [...seen].filter(([, n]) => n > 1).map(([id]) => id);
    const byKilled = new Set(results.prepare("SELECT id FROM attempted WHERE member = 'r0'").pluck().all() as string[]);
    const unexplained = duplicated.filter((id) => !byKilled.has(id));
    assert.deepEqual(unexplained.slice(0, 20), [], `${unexplained.length} duplicates the killed relay never handed to the transport (a clean hand-over published twice)`);
    assert.ok(duplicated.length >= 1, `the rows of r0's unconfirmed publish (${window}) were published again`);
    const perMember = results.prepare('SELECT member, count(*) AS n FROM attempted GROUP BY member ORDER BY member').all() as Array<{ member: string; n: number }>;
    assert.ok(perMember.length === 3 && perMember.every((m) => m.n > 0), `every relay published a share: ${JSON.stringify(perMember)}`);
    const errors = relays.flatMap((r) => r.messages.filter((m) => m.type === 'error').map((m) => `${r.name}:${String(m.code)}`));
    const summary = `${N} rows over ${KEYS} keys, 3 relays; r0 SIGKILLed with a publish of ${window} stored but unconfirmed, when ${killedAt} were published; published ${rows.length} (duplicates ${rows.length - N}, all handed to the transport by r0); attempts per relay ${JSON.stringify(Object.fromEntries(perMember.map((m) => [m.member, m.n])))}; relay errors ${errors.length ? [...new Set(errors)].join(', ') : 'none'}`;
    t.diagnostic(summary);
    console.log(`# relay kill: ${summary}`);
  } finally {
    await Promise.all(relays.map((r) => stopChild(r)));
    log.close();
    await outbox.close();
    await transport.close();
    await uow.close();
    results.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
