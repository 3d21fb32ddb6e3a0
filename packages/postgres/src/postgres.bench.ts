/**
 * PostgreSQL benchmark: Herald's event store and transport beside the raw `pg` client and the
 * peers, measured in the same run on the same server (a fresh schema per row, dropped after):
 *
 * - raw `pg`: 1,000-row multi-row INSERTs of the same events into a table shaped like Herald's
 *   (same columns and unique indexes) — the ceiling for batched appends; and single-row INSERT
 *   commits from 64 callers over 16 connections — the ceiling for single-event appends;
 * - Herald: single-event appends from 64 concurrent callers (group-committed into one
 *   statement per batch), and 100-event appends from 64 concurrent callers;
 * - `@event-driven-io/emmett-postgresql`: the same two append shapes;
 * - transport: Herald's PostgreSQL transport (64 concurrent single-message publishers, one
 *   consumer group reading and acking) against pg-boss 10 `send` + `work` (same shape).
 *
 * Events are 256-byte JSON payloads; a caller opens a new stream every 50 events.
 *
 *   node --import tsx packages/postgres/src/postgres.bench.ts          (standalone, BENCH_EVENTS)
 *   npm run bench -- --only postgres                                    (from the bench script)
 *
 * Progress goes to `log`; rows are returned (and printed as a table when run standalone).
 */
import { randomUUID } from 'node:crypto';
import type { Delivery } from '@herald/core';
import pg from 'pg';
import { type PgConnectionOptions, PgDatabase } from './database.ts';
import { createPostgresEventStore } from './event-store.ts';
import { createPostgresTransport } from './transport.ts';

export interface BenchRow {
  case: string;
  messages: number;
  rate: number;
  p50?: number;
  p99?: number;
  peer?: string;
  ratio?: number;
}

export interface BenchOptions {
  /** Events per event-store row (default 50 000). */
  events: number;
  /** Messages per transport row (default 20 000). */
  messages?: number;
  log: (line: string) => void;
  connection?: PgConnectionOptions;
}

const PAYLOAD_BYTES = 256;
const CALLERS = 64;
const STREAM_LENGTH = 50;
const PAD = 'x'.repeat(PAYLOAD_BYTES);

function payload(n: number): { n: number; pad: string } {
  const fixed = JSON.stringify({ n, pad: '' }).length;
  return { n, pad: PAD.slice(0, PAYLOAD_BYTES - fixed) };
}

export const ROW = {
  rawMulti: 'raw pg: 1000-row INSERTs (ceiling)',
  rawSingle: 'raw pg: single-row commits, 64 callers on 16 connections',
  single: 'Herald: single-event appends, 64 callers',
  hundred: 'Herald: 100-event appends, 64 callers',
  emmettSingle: 'Emmett: single-event appends, 64 callers',
  emmettHundred: 'Emmett: 100-event appends, 64 callers',
  transport: 'Herald transport: publish + consume, 64 publishers',
  pgBoss: 'pg-boss 10: send + work, 64 senders',
} as const;

function base(o: BenchOptions): PgConnectionOptions {
  return o.connection ?? { host: '127.0.0.1', port: Number(process.env.HERALD_PG_PORT ?? 5432), user: 'postgres', database: process.env.HERALD_PG_DATABASE ?? 'test' };
}

function connString(c: PgConnectionOptions, schema?: string): string {
  const opts = schema ? `?options=${encodeURIComponent(`-c search_path=${schema}`)}` : '';
  return `postgres://${c.user ?? 'postgres'}@${c.host ?? '127.0.0.1'}:${c.port ?? 5432}/${c.database ?? 'test'}${opts}`;
}

async function admin<T>(c: PgConnectionOptions, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: connString(c) });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

async function withSchema<T>(c: PgConnectionOptions, fn: (schema: string) => Promise<T>): Promise<T> {
  const schema = `hb_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
  await admin(c, (a) => a.query(`CREATE SCHEMA "${schema}"`));
  try {
    return await fn(schema);
  } finally {
    await admin(c, (a) => a.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)).catch(() => {});
  }
}

/** Runs `callers` loops that together call `step(i, caller, seq)` for i in [0, total): caller = i % callers, seq = its own count. */
async function concurrently(total: number, callers: number, step: (i: number, caller: number, seq: number) => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: callers }, async (_, caller) => {
      for (let i = caller, seq = 0; i < total; i += callers, seq++) await step(i, caller, seq);
    }),
  );
  return (performance.now() - t0) / 1000;
}

/** Each caller writes its own streams, a new one every 50 events (or every append when larger). */
function streamOf(caller: number, seq: number, perAppend: number): string {
  const streamLen = Math.max(STREAM_LENGTH, perAppend);
  return `bench-c${caller}-${Math.floor((seq * perAppend) / streamLen)}`;
}

const RAW_TABLE = `CREATE TABLE raw_events (
  position bigint PRIMARY KEY, tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(), stream_id text NOT NULL, version integer NOT NULL, event_id text NOT NULL,
  type text NOT NULL, schema_version integer NOT NULL, data text NOT NULL, metadata text, correlation_id text, causation_id text, recorded_at bigint NOT NULL, category text NOT NULL);
  CREATE UNIQUE INDEX ON raw_events (stream_id, version); CREATE UNIQUE INDEX ON raw_events (event_id); CREATE INDEX ON raw_events (category, position)`;

async function rawMulti(c: PgConnectionOptions, n: number): Promise<number> {
  return withSchema(c, async (schema) => {
    const client = new pg.Client({ connectionString: connString(c, schema) });
    await client.connect();
    try {
      await client.query(RAW_TABLE);
      const t0 = performance.now();
      for (let i = 0; i < n; i += 1000) {
        const k = Math.min(1000, n - i);
        const cols: unknown[][] = [[], [], [], [], [], [], []];
        for (let j = 0; j < k; j++) {
          const x = i + j;
          cols[0]!.push(x + 1);
          cols[1]!.push(`s-${Math.floor(x / STREAM_LENGTH)}`);
          cols[2]!.push((x % STREAM_LENGTH) + 1);
          cols[3]!.push(randomUUID());
          cols[4]!.push(JSON.stringify(payload(x)));
          cols[5]!.push(Date.now());
          cols[6]!.push('s');
        }
        await client.query(
          `INSERT INTO raw_events (position, stream_id, version, event_id, type, schema_version, data, recorded_at, category)
           SELECT p, s, v, e, 'bench.event', 1, d, r, c FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $6::bigint[], $7::text[]) AS u(p, s, v, e, d, r, c)`,
          cols,
        );
      }
      return n / ((performance.now() - t0) / 1000);
    } finally {
      await client.end();
    }
  });
}

async function rawSingle(c: PgConnectionOptions, n: number): Promise<number> {
  return withSchema(c, async (schema) => {
    const pool = new pg.Pool({ connectionString: connString(c, schema), max: 16 });
    try {
      await pool.query(RAW_TABLE);
      const secs = await concurrently(n, CALLERS, async (x, caller, seq) => {
        await pool.query(
          `INSERT INTO raw_events (position, stream_id, version, event_id, type, schema_version, data, recorded_at, category) VALUES ($1, $2, $3, $4, 'bench.event', 1, $5, $6, 's')`,
          [x + 1, streamOf(caller, seq, 1), (seq % STREAM_LENGTH) + 1, randomUUID(), JSON.stringify(payload(x)), Date.now()],
        );
      });
      return n / secs;
    } finally {
      await pool.end();
    }
  });
}

async function heraldAppends(c: PgConnectionOptions, n: number, perAppend: number): Promise<number> {
  return withSchema(c, async (schema) => {
    const database = new PgDatabase({ ...c, schema, max: 4 });
    const store = createPostgresEventStore({ database });
    try {
      await store.ready();
      const appends = Math.ceil(n / perAppend);
      const secs = await concurrently(appends, CALLERS, async (a, caller, seq) => {
        const events = Array.from({ length: perAppend }, (_, j) => ({ type: 'bench.event', data: payload(a * perAppend + j) }));
        await store.appendToStream(streamOf(caller, seq, perAppend), events);
      });
      return (appends * perAppend) / secs;
    } finally {
      await store.close();
      await database.close();
    }
  });
}

type Emmett = typeof import('@event-driven-io/emmett-postgresql');

async function emmettAppends(emmett: Emmett, c: PgConnectionOptions, n: number, perAppend: number): Promise<number> {
  return withSchema(c, async (schema) => {
    const es = emmett.getPostgreSQLEventStore(connString(c, schema), { schema: { autoMigration: 'CreateOrUpdate' } });
    try {
      await es.appendToStream('warm-up', [{ type: 'bench.event', data: payload(0) }]);
      const appends = Math.ceil(n / perAppend);
      const secs = await concurrently(appends, CALLERS, async (a, caller, seq) => {
        const events = Array.from({ length: perAppend }, (_, j) => ({ type: 'bench.event', data: payload(a * perAppend + j) }));
        await es.appendToStream(streamOf(caller, seq, perAppend), events);
      });
      return (appends * perAppend) / secs;
    } finally {
      await es.close();
    }
  });
}

async function heraldTransport(c: PgConnectionOptions, n: number): Promise<number> {
  return withSchema(c, async (schema) => {
    const pubDb = new PgDatabase({ ...c, schema, max: 4 });
    const subDb = new PgDatabase({ ...c, schema, max: 4 });
    const pub = createPostgresTransport({ database: pubDb });
    const con = createPostgresTransport({ database: subDb, commitIntervalMs: 20 });
    try {
      await pub.ensureTopic('bench', { partitions: 8 });
      const sub = con.subscribe('bench', { group: 'bench', maxInFlight: 4096 });
      let got = 0;
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      const reading = (async () => {
        for await (const d of sub as AsyncIterable<Delivery>) {
          d.ack();
          if (++got === n) done();
        }
      })();
      const t0 = performance.now();
      await concurrently(n, CALLERS, async (i) => {
        const envelope = { specversion: '1.0', id: `m-${i}`, source: 'bench', type: 'bench.event', datacontenttype: 'application/json', data: payload(i) };
        await pub.publish('bench', [{ key: `k${i % 256}`, envelope: envelope as never }]);
      });
      await all;
      const rate = n / ((performance.now() - t0) / 1000);
      await sub.close({ timeoutMs: 2000 });
      await reading;
      return rate;
    } finally {
      await pub.close({ timeoutMs: 500 });
      await con.close({ timeoutMs: 500 });
      await pubDb.close();
      await subDb.close();
    }
  });
}

async function pgBoss(c: PgConnectionOptions, n: number): Promise<number> {
  const { default: PgBoss } = await import('pg-boss');
  return withSchema(c, async (schema) => {
    const boss = new PgBoss({ connectionString: connString(c), schema, max: 16 });
    boss.on('error', () => {});
    await boss.start();
    try {
      await boss.createQueue('bench');
      let got = 0;
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      // Four workers fetching 100 jobs at a time, polling every 0.5 s (the smallest interval pg-boss 10 accepts).
      for (let w = 0; w < 4; w++) {
        await boss.work('bench', { batchSize: 100, pollingIntervalSeconds: 0.5 }, async (jobs) => {
          got += jobs.length;
          if (got >= n) done();
        });
      }
      const t0 = performance.now();
      await concurrently(n, CALLERS, async (i) => {
        await boss.send('bench', payload(i));
      });
      await all;
      return n / ((performance.now() - t0) / 1000);
    } finally {
      await boss.stop({ graceful: false, wait: true, timeout: 2000 }).catch(() => {});
    }
  });
}

export async function runBench(options: BenchOptions): Promise<BenchRow[]> {
  const c = base(options);
  const n = options.events;
  const m = options.messages ?? Math.min(20_000, n);
  const log = options.log;
  const rows: BenchRow[] = [];
  const push = (r: BenchRow): void => {
    rows.push(r);
    log(`${r.case}: ${Math.round(r.rate).toLocaleString('en-US')}/s${r.ratio !== undefined ? ` (${r.ratio.toFixed(2)}× ${r.peer})` : ''}`);
  };
  const rawM = await rawMulti(c, n);
  push({ case: ROW.rawMulti, messages: n, rate: rawM });
  const rawS = await rawSingle(c, Math.min(n, 20_000));
  push({ case: ROW.rawSingle, messages: Math.min(n, 20_000), rate: rawS });
  const single = await heraldAppends(c, n, 1);
  push({ case: ROW.single, messages: n, rate: single, peer: ROW.rawSingle, ratio: single / rawS });
  const hundred = await heraldAppends(c, n, 100);
  push({ case: ROW.hundred, messages: n, rate: hundred, peer: ROW.rawMulti, ratio: hundred / rawM });
  let emmett: Emmett | undefined;
  try {
    emmett = await import('@event-driven-io/emmett-postgresql');
  } catch (e) {
    log(`Emmett rows skipped: @event-driven-io/emmett-postgresql could not be loaded: ${(e as Error).message}`);
  }
  if (emmett) {
    const en = Math.min(n, 20_000);
    const es = await emmettAppends(emmett, c, en, 1);
    push({ case: ROW.emmettSingle, messages: en, rate: es, peer: ROW.rawSingle, ratio: es / rawS });
    const eh = await emmettAppends(emmett, c, n, 100);
    push({ case: ROW.emmettHundred, messages: n, rate: eh, peer: ROW.rawMulti, ratio: eh / rawM });
  }
  const tr = await heraldTransport(c, m);
  push({ case: ROW.transport, messages: m, rate: tr });
  try {
    const bm = Math.min(m, 10_000);
    const boss = await pgBoss(c, bm);
    push({ case: ROW.pgBoss, messages: bm, rate: boss });
    rows[rows.length - 2]!.peer = ROW.pgBoss;
    rows[rows.length - 2]!.ratio = tr / boss;
  } catch (e) {
    log(`pg-boss row skipped: ${(e as Error).message}`);
  }
  return rows;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const events = Number(process.env.BENCH_EVENTS ?? 50_000);
  const rows = await runBench({ events, log: (l) => process.stderr.write(`${l}\n`) });
  for (const r of rows) console.log(`${r.case.padEnd(62)} ${Math.round(r.rate).toString().padStart(8)}/s${r.ratio !== undefined ? `  ${r.ratio.toFixed(2)}× ${r.peer}` : ''}`);
}
