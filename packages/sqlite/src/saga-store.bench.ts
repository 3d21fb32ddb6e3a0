/**
 * Saga benchmark on SQLite: transitions per second through the saga runtime's transaction path
 * (`runtime.handle`, the path a delivery takes minus the transport), side by side in the same
 * run with raw better-sqlite3 writing the same rows.
 *
 *   node --import tsx packages/sqlite/src/saga-store.bench.ts [instances=5000]
 *   (or `runBench({ instances, log })`)
 *
 * The saga: start → step "work" (sends one command, arms a 60 s timeout) → reply → step "done"
 * (one command, no reply) → completed. So each instance makes 2 transitions; each transition is
 * one transaction with: the inbox record, the instance (insert, or update with a revision
 * check), 3–5 timeline rows, 1 outbox row, and a scheduled timer (insert) or its cancel
 * (delete). The state is about 256 bytes of JSON. 64 instances run at once (the unit of work
 * group-commits their transactions).
 *
 * Rows (rate = transitions/s; ratio = Herald / the raw row):
 * - raw better-sqlite3: the same statements on the same shape of tables, one transaction per
 *   transition, and 64 transitions per transaction (what group commit can reach);
 * - Herald runtime.handle, 64 concurrent instances (read committed instance, decideSaga, build
 *   and validate envelopes, withInbox transaction);
 * - decideSaga alone (no I/O): the pure transition's cost.
 */
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEnvelope, createMemoryTransport, defineCommand, defineEvent, MemoryDeadLetterStore, type StandardSchemaV1 } from '@herald/core';
import { createSagaRuntime, decideSaga, defineSaga, onSuccess, send, type SagaInstance } from '@herald/eventsourcing';
import Database from 'better-sqlite3';
import { createSqliteSagaStore } from './saga-store.ts';
import { createSqliteUnitOfWork } from './unit-of-work.ts';

export interface SagaBenchRow {
  case: string;
  messages: number;
  rate: number;
  peer?: string;
  ratio?: number;
}

const CONCURRENCY = 64;
const PAD = 'x'.repeat(200);

type Data = { id: string; pad: string };
const schema: StandardSchemaV1<unknown, Data> = {
  '~standard': { version: 1, vendor: 'bench', validate: (v) => (typeof (v as Data)?.id === 'string' ? { value: v as Data } : { issues: [{ message: 'id' }] }) },
};
const Started = defineEvent('bench.started', schema, { topic: 'bench', keyField: 'id' });
const Work = defineCommand('bench.work', schema, { topic: 'bench.work', keyField: 'id' });
const Worked = defineEvent('bench.worked', schema, { topic: 'bench.work', keyField: 'id' });
const Done = defineCommand('bench.done', schema, { topic: 'bench.work', keyField: 'id' });

const saga = defineSaga<Data, Data>({
  name: 'bench',
  startedBy: { event: Started, key: (d) => d.id, init: (d) => d },
  steps: [
    { name: 'work', action: (s) => send(Work, s), replies: [onSuccess(Worked)], timeoutMs: 60_000 },
    { name: 'done', action: (s) => send(Done, s) },
  ],
});

function tempFile(label: string): { path: string; remove: () => void } {
  const path = join(tmpdir(), `herald-saga-bench-${process.pid}-${randomUUID().slice(0, 8)}-${label}.db`);
  return { path, remove: () => ['', '-wal', '-shm', '-journal'].forEach((s) => rmSync(path + s, { force: true })) };
}

async function herald(instances: number): Promise<number> {
  const { path, remove } = tempFile('herald');
  const unitOfWork = createSqliteUnitOfWork({ path });
  const store = createSqliteSagaStore({ path });
  const runtime = createSagaRuntime({ sagas: [saga], store, unitOfWork, transport: createMemoryTransport(), deadLetters: new MemoryDeadLetterStore(), source: 'bench' });
  const env = (type: string, id: string, n: number) => createEnvelope({ type, source: 'bench-client', id: `${id}-${n}`, data: { id, pad: PAD }, partitionkey: id });
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (let i = next++; i < instances; i = next++) {
        const id = `i-${i}`;
        await runtime.handle('bench', env(Started.type, id, 0));
        await runtime.handle('bench', env(Worked.type, id, 1));
      }
    }),
  );
  const ms = performance.now() - t0;
  const done = await store.list({ status: 'completed', limit: 1 });
  if (done.items.length === 0) throw new Error('bench: no instance completed');
  await runtime.close();
  await unitOfWork.close();
  store.close();
  remove();
  return (instances * 2 * 1000) / ms;
}

function raw(instances: number, perTxn: number): number {
  const { path, remove } = tempFile(`raw-${perTxn}`);
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec(`
    CREATE TABLE inbox (grp TEXT NOT NULL, handler TEXT NOT NULL, source TEXT NOT NULL, id TEXT NOT NULL, handled_at INTEGER NOT NULL, PRIMARY KEY (grp, handler, source, id)) WITHOUT ROWID;
    CREATE TABLE sagas (seq INTEGER PRIMARY KEY AUTOINCREMENT, saga TEXT NOT NULL, key TEXT NOT NULL, instance_id TEXT NOT NULL, status TEXT NOT NULL, revision INTEGER NOT NULL, body TEXT NOT NULL, started_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, UNIQUE (saga, key));
    CREATE TABLE timeline (seq INTEGER PRIMARY KEY AUTOINCREMENT, saga TEXT NOT NULL, key TEXT NOT NULL, instance_id TEXT NOT NULL, entry TEXT NOT NULL);
    CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, partition INTEGER NOT NULL, topic TEXT NOT NULL, key TEXT, envelope TEXT NOT NULL, created_at INTEGER NOT NULL);
    CREATE TABLE scheduled (id TEXT PRIMARY KEY, topic TEXT NOT NULL, key TEXT, envelope TEXT NOT NULL, deliver_at INTEGER NOT NULL, created_at INTEGER NOT NULL) WITHOUT ROWID;
  `);
  const s = {
    inboxGet: db.prepare('SELECT 1 FROM inbox WHERE grp = ? AND handler = ? AND source = ? AND id = ?'),
    inboxPut: db.prepare('INSERT INTO inbox VALUES (?, ?, ?, ?, ?)'),
    revision: db.prepare('SELECT revision, body FROM sagas WHERE saga = ? AND key = ?'),
    insert: db.prepare('INSERT INTO sagas (saga, key, instance_id, status, revision, body, started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
    update: db.prepare('UPDATE sagas SET status = ?, revision = ?, body = ?, updated_at = ? WHERE saga = ? AND key = ? AND revision = ?'),
    timeline: db.prepare('INSERT INTO timeline (saga, key, instance_id, entry) VALUES (?, ?, ?, ?)'),
    outbox: db.prepare('INSERT INTO outbox (partition, topic, key, envelope, created_at) VALUES (?, ?, ?, ?, ?)'),
    schedule: db.prepare('INSERT OR IGNORE INTO scheduled VALUES (?, ?, ?, ?, ?, ?)'),
    cancel: db.prepare('DELETE FROM scheduled WHERE id = ?'),
  };
  const now = Date.now();
  const body = JSON.stringify({ saga: 'bench', key: 'k', id: 'x', status: 'running', state: { id: 'k', pad: PAD }, step: 'work', attempt: 1, completed: [], toCompensate: [], revision: 1 });
  const envelope = JSON.stringify(createEnvelope({ type: Work.type, source: 'bench', data: { id: 'k', pad: PAD } }));
  const entry = JSON.stringify({ at: now, kind: 'sent', step: 'work', type: Work.type, messageId: 'm' });
  // One transition = the rows the saga writes for it (start: insert + timer; reply: update + cancel).
  const transition = (i: number): void => {
    const key = `i-${i >> 1}`;
    const start = (i & 1) === 0;
    if (s.inboxGet.get('saga.bench', 'h', 'c', `${key}-${i & 1}`)) return;
    s.inboxPut.run('saga.bench', 'h', 'c', `${key}-${i & 1}`, now);
    const cur = s.revision.get('bench', key) as { revision: number; body: string } | undefined;
    if (start) s.insert.run('bench', key, key, 'running', 1, body, now, now);
    else if (s.update.run('completed', cur!.revision + 1, body, now, 'bench', key, cur!.revision).changes !== 1) throw new Error('conflict');
    for (let e = 0; e < (start ? 3 : 5); e++) s.timeline.run('bench', key, key, entry);
    s.outbox.run(i % 8, 'bench.work', key, envelope, now);
    if (start) s.schedule.run(`${key}:work:action:1`, 'saga.bench', key, envelope, now + 60_000, now);
    else s.cancel.run(`${key}:work:action:1`);
  };
  const total = instances * 2;
  const tx = db.transaction((from: number, to: number) => {
    for (let i = from; i < to; i++) transition(i);
  });
  const t0 = performance.now();
  for (let i = 0; i < total; i += perTxn) tx.immediate(i, Math.min(total, i + perTxn));
  const ms = performance.now() - t0;
  db.close();
  remove();
  return (total * 1000) / ms;
}

function pure(instances: number): number {
  const t0 = performance.now();
  for (let i = 0; i < instances; i++) {
    const d1 = decideSaga(saga, undefined, { kind: 'event', type: Started.type, data: { id: `i-${i}`, pad: PAD } }, { now: 0, newId: () => `n${i}` });
    const d2 = decideSaga(saga, d1.instance as SagaInstance<Data>, { kind: 'event', type: Worked.type, data: { id: `i-${i}`, pad: PAD } }, { now: 1, newId: () => 'x' });
    if (d2.instance?.status !== 'completed') throw new Error('bench: pure transition did not complete');
  }
  return (instances * 2 * 1000) / (performance.now() - t0);
}

export async function runBench(options: { instances: number; log: (line: string) => void }): Promise<SagaBenchRow[]> {
  const n = options.instances;
  const rows: SagaBenchRow[] = [];
  options.log(`saga bench: ${n} instances, ${n * 2} transitions per row`);
  const raw1 = raw(n, 1);
  rows.push({ case: 'raw better-sqlite3, 1 transition per txn', messages: n * 2, rate: raw1 });
  const raw64 = raw(n, CONCURRENCY);
  rows.push({ case: `raw better-sqlite3, ${CONCURRENCY} transitions per txn`, messages: n * 2, rate: raw64 });
  const h = await herald(n);
  rows.push({ case: `Herald saga runtime.handle, ${CONCURRENCY} instances at once`, messages: n * 2, rate: h, peer: `raw ${CONCURRENCY}/txn`, ratio: h / raw64 });
  rows.push({ case: 'decideSaga alone (no I/O)', messages: n * 2, rate: pure(n) });
  return rows;
}

if (process.argv[1]?.endsWith('saga-store.bench.ts')) {
  const instances = Number(process.argv[2] ?? 5000);
  const rows = await runBench({ instances, log: (l) => process.stderr.write(`${l}\n`) });
  console.log('| case | transitions | rate (/s) | vs | ratio |');
  console.log('|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.case} | ${r.messages} | ${Math.round(r.rate)} | ${r.peer ?? ''} | ${r.ratio === undefined ? '' : r.ratio.toFixed(2)} |`);
}
