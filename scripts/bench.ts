/**
 * `npm run bench` — Herald's throughput and latency, side by side with the raw peer measured
 * in the same run (STYLE rule 12): the memory and SQLite transports, then every broker
 * transport and the event store through their packages' own benchmark modules
 * (`packages/<name>/src/<name>.bench.ts`). Prints one table and the goals on stdout; with
 * `--json`, prints JSON on stdout and the table on stderr. Progress goes to stderr.
 *
 *   npm run bench [-- --json] [-- --only <section>[,<section>…]]
 *
 * Sections, in order: memory, sqlite, nats, redis (with BullMQ), rabbitmq, kafka (librdkafka
 * mock via kcat unless KAFKA_BROKERS is set), mqtt, event-store, outbox, postgres. A broker section whose server
 * does not accept connections is skipped with a message; a section that fails is reported and
 * the run goes on.
 *
 * Sizes (environment):
 *   BENCH_MESSAGES          messages per memory row (default 100000); also caps every other section's size when set
 *   BENCH_SQLITE_MESSAGES   messages per SQLite row (default 50000)
 *   BENCH_RUNS              runs per row where a section repeats (memory, SQLite, Redis, RabbitMQ); the table shows the median (default 3)
 *   BENCH_BATCH             messages per publish call in the memory/SQLite batched rows (default 1000)
 *   BENCH_CONCURRENCY       concurrent single-message publishers, SQLite (default 64)
 *   BENCH_RATE              open-loop rate of the SQLite, Redis and RabbitMQ latency rows, msg/s (default 5000; NATS and Kafka are fixed at 5000)
 *   BENCH_LATENCY_SECONDS   duration of the SQLite and Redis latency rows (default 5; RabbitMQ, NATS and Kafka use 4 s)
 *   BENCH_KEYS              distinct partition keys, memory/SQLite (default 256; 0 = no keys; the broker modules use 256)
 *   BENCH_NATS_MESSAGES     messages per NATS throughput row (default 20000; the module takes at most 50000)
 *   BENCH_REDIS_MESSAGES    messages per Redis throughput row (default 30000)
 *   BENCH_RABBITMQ_MESSAGES messages per RabbitMQ throughput run (default 30000)
 *   BENCH_KAFKA_MESSAGES    messages per Kafka pipelined row (default 10000; at most 10000 on the mock)
 *   BENCH_MQTT_MESSAGES     messages per MQTT case (default 100000)
 *   BENCH_EVENTS            events per event-store row (default 50000)
 *   BENCH_OUTBOX_MESSAGES   messages per outbox/inbox row (default 50000)
 *   BENCH_PG_EVENTS         events per PostgreSQL event-store row (default 50000; Emmett single-event and raw single-row rows take at most 20000)
 *   BENCH_PG_MESSAGES       messages per PostgreSQL transport row (default 20000; pg-boss at most 10000)
 *   BENCH_REBUILD_EVENTS    events of the event store's projection rebuild row (default 1000000; 0 skips it)
 *   BENCH_CPU_PROF_DIR      analysis only: write a CPU profile of each SQLite consumer process there
 *   BENCH_OBS_RUNS          interleaved rounds of the observability section (default 5; each round runs all four modes)
 *   BENCH_POLL_MS           analysis only: the SQLite consumer's cross-process poll period, ms (default: the transport's own default)
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { envInt, KEY_COUNT, PAYLOAD_BYTES, progress, type Row, type Section, SECTIONS } from './bench/common.ts';
import { memoryRows } from './bench/memory.ts';
import { runSection, SECTION_TITLES, type TransportConfig } from './bench/transports.ts';

interface Goal {
  readonly section: Section;
  readonly text: string;
  /** undefined: not measured, or reported without a goal. */
  readonly met: boolean | undefined;
  readonly detail: string;
}

interface SectionRun {
  readonly section: Section;
  readonly seconds: number;
  readonly loadAvgAtStart: number;
  readonly loadAvgAtEnd: number;
  /** CPU-seconds: this process (and its reaped children), the broker servers, everything else. */
  readonly cpu?: { readonly own: number; readonly servers: number; readonly other: number; readonly otherShare: number };
  readonly rows: number;
  readonly skipped?: string;
  readonly failed?: string;
  readonly note?: string;
}

const args = process.argv.slice(2);
const json = args.includes('--json');
const onlyIdx = args.indexOf('--only');
if (onlyIdx >= 0 && (args[onlyIdx + 1] ?? '--').startsWith('--')) throw new Error(`--only needs a section: ${SECTIONS.join(', ')} (comma-separated for several)`);
const onlyArg = onlyIdx >= 0 ? args[onlyIdx + 1] : process.env.BENCH_ONLY;
const only = onlyArg === undefined || onlyArg === '' ? undefined : new Set(onlyArg.split(',').map((x) => x.trim()));
for (const s of only ?? []) if (!(SECTIONS as readonly string[]).includes(s)) throw new Error(`--only takes one or more of ${SECTIONS.join(', ')}, comma-separated (got ${onlyArg})`);
const selected = SECTIONS.filter((s) => !only || only.has(s));

const messagesSet = process.env.BENCH_MESSAGES !== undefined && process.env.BENCH_MESSAGES !== '';
const runs = Math.max(1, envInt('BENCH_RUNS', 3));
const memMessages = envInt('BENCH_MESSAGES', 100_000);
const sqliteMessages = envInt('BENCH_SQLITE_MESSAGES', messagesSet ? memMessages : 50_000);
const batch = Math.max(1, envInt('BENCH_BATCH', 1000));
const concurrency = Math.max(1, envInt('BENCH_CONCURRENCY', 64));
const rate = Math.max(1, envInt('BENCH_RATE', 5000));
const latencySeconds = Math.max(1, envInt('BENCH_LATENCY_SECONDS', 5));
const pollMs = process.env.BENCH_POLL_MS ? Math.max(1, envInt('BENCH_POLL_MS', 50)) : undefined;
/** A section's own variable, else its default capped by BENCH_MESSAGES when that is set (quick runs). */
const sized = (name: string, fallback: number): number => Math.max(1, envInt(name, messagesSet ? Math.min(fallback, memMessages) : fallback));
const transports: TransportConfig = {
  nats: sized('BENCH_NATS_MESSAGES', 20_000),
  redis: sized('BENCH_REDIS_MESSAGES', 30_000),
  rabbitmq: sized('BENCH_RABBITMQ_MESSAGES', 30_000),
  kafka: sized('BENCH_KAFKA_MESSAGES', 10_000),
  mqtt: sized('BENCH_MQTT_MESSAGES', 100_000),
  events: sized('BENCH_EVENTS', 50_000),
  outbox: sized('BENCH_OUTBOX_MESSAGES', 50_000),
  pgEvents: sized('BENCH_PG_EVENTS', 50_000),
  pgMessages: sized('BENCH_PG_MESSAGES', 20_000),
  runs,
  rate,
  latencySeconds,
};
// The event-store module reads BENCH_REBUILD_EVENTS itself (default 1,000,000); a quick run
// (BENCH_MESSAGES set) scales it down with the rest.
if (messagesSet && (process.env.BENCH_REBUILD_EVENTS ?? '') === '') process.env.BENCH_REBUILD_EVENTS = String(Math.min(1_000_000, memMessages * 10));
const rebuildEvents = envInt('BENCH_REBUILD_EVENTS', 1_000_000);

const machine = {
  node: process.version,
  cpus: availableParallelism(),
  cpuModel: cpus()[0]?.model ?? 'unknown',
  platform: `${process.platform} ${process.arch}`,
  commit: gitCommit(),
  loadAvgAtStart: loadavg()[0]!,
  loadAvgAtEnd: 0,
};

// Everything a section or a library prints goes to stderr; stdout carries only the result.
const stdoutWrite = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr) as typeof process.stdout.write;

const started = performance.now();
const cpuAtStart = cpuSample();
const rows: Row[] = [];
const sections: SectionRun[] = [];
const log = (line: string): void => progress(`  ${line}`);

for (const section of selected) {
  const t0 = performance.now();
  const load0 = loadavg()[0]!;
  const cpu0 = cpuSample();
  progress(`[${section}] ${SECTION_TITLES[section]} — ${new Date().toISOString().slice(11, 19)}, ${((t0 - started) / 1000).toFixed(0)} s into the run`);
  let got: Row[] = [];
  let skipped: string | undefined;
  let failed: string | undefined;
  let note: string | undefined;
  try {
    if (section === 'memory') {
      progress(`  ${memMessages} messages × ${runs} runs`);
      got = await memoryRows({ messages: memMessages, runs, batch });
    } else if (section === 'sqlite') {
      progress(`  ${sqliteMessages} messages × ${runs} runs`);
      const sqlite = await import('./bench/sqlite.ts').catch((e: unknown) => ({ error: e }));
      if ('error' in sqlite) skipped = `SQLite rows skipped: ${(sqlite.error as Error).message}`;
      else got = await sqlite.sqliteRows({ messages: sqliteMessages, runs, batch, concurrency, rate, latencySeconds, ...(pollMs !== undefined ? { pollMs } : {}) });
    } else if (section === 'observability') {
      const obsRuns = Math.max(1, envInt('BENCH_OBS_RUNS', 5));
      progress(`  ${sqliteMessages} messages × ${obsRuns} rounds × 5 modes`);
      const [sqlite, obs] = await Promise.all([import('./bench/sqlite.ts'), import('./bench/observability.ts')]);
      const c = { messages: sqliteMessages, runs: obsRuns, batch, concurrency, rate, latencySeconds };
      got = await obs.observabilityRows({ runs: obsRuns, messages: sqliteMessages, batch, run: (mode) => sqlite.endToEndRun(c, { validate: true, latency: false, observe: mode }) });
    } else {
      const r = await runSection(section, transports, log);
      if ('skipped' in r) skipped = r.skipped;
      else {
        got = r.rows;
        note = r.note;
      }
    }
  } catch (e) {
    failed = e instanceof Error ? (e.stack ?? e.message) : String(e);
  }
  rows.push(...got);
  const secs = (performance.now() - t0) / 1000;
  const cpu = cpuDelta(cpu0, cpuSample(), secs);
  sections.push({
    section,
    seconds: secs,
    loadAvgAtStart: load0,
    loadAvgAtEnd: loadavg()[0]!,
    rows: got.length,
    ...(cpu ? { cpu } : {}),
    ...(skipped ? { skipped } : {}),
    ...(failed ? { failed: failed.split('\n')[0]! } : {}),
    ...(note ? { note } : {}),
  });
  if (skipped) progress(`  skipped: ${skipped}`);
  if (failed) progress(`  FAILED: ${failed}`);
  progress(`  ${section}: ${secs.toFixed(0)} s${cpu ? `, other processes ${pct(cpu.otherShare)} of the machine` : ''}`);
}

machine.loadAvgAtEnd = loadavg()[0]!;
const seconds = (performance.now() - started) / 1000;
const contention = cpuDelta(cpuAtStart, cpuSample(), seconds);
const goals = evaluateGoals(rows);
const table = render(rows, goals, sections, seconds);
process.stdout.write = stdoutWrite;
if (json) {
  process.stderr.write(table);
  process.stdout.write(
    `${JSON.stringify(
      {
        machine,
        contention: contention ?? null,
        config: {
          sections: selected,
          runs,
          memMessages,
          sqliteMessages,
          batch,
          concurrency,
          rate,
          latencySeconds,
          keys: KEY_COUNT,
          payloadBytes: PAYLOAD_BYTES,
          pollMs: pollMs ?? null,
          natsMessages: transports.nats,
          redisMessages: transports.redis,
          rabbitmqMessages: transports.rabbitmq,
          kafkaMessages: transports.kafka,
          kafkaBrokers: process.env.KAFKA_BROKERS ?? null,
          mqttMessages: transports.mqtt,
          events: transports.events,
          outboxMessages: transports.outbox,
          rebuildEvents,
        },
        sections,
        rows,
        goals,
        seconds,
      },
      null,
      2,
    )}\n`,
  );
} else process.stdout.write(table);

function evaluateGoals(all: readonly Row[]): Goal[] {
  const find = (prefix: string): Row | undefined => all.find((r) => r.case.startsWith(prefix));
  const ran = (section: Section): boolean => sections.some((x) => x.section === section && x.rows > 0);
  const out: Goal[] = [];

  if (ran('sqlite')) {
    const raw = find('better-sqlite3');
    for (const name of ['sqlite e2e (2 processes), validation off', 'sqlite e2e (2 processes), validation on']) {
      const r = find(name);
      const ratio = r && raw ? r.rate / raw.rate : undefined;
      out.push({
        section: 'sqlite',
        text: `SQLite e2e ≥ 50 % of raw batched insert — ${name.replace('sqlite e2e (2 processes), ', '')}`,
        met: ratio === undefined ? undefined : ratio >= 0.5,
        detail: ratio === undefined ? 'not measured' : `${pct(ratio)} (${fmtRate(r!.rate)} vs ${fmtRate(raw!.rate)} msg/s); ${margin(ratio, 0.5, r!.rate)}`,
      });
    }
  }
  if (ran('observability')) {
    const obsGoal = (prefix: string, text: string, floor: number | undefined): void => {
      const r = find(prefix);
      const cost = r?.ratio === undefined ? undefined : 1 - r.ratio;
      out.push({
        section: 'observability',
        text,
        met: cost === undefined || floor === undefined ? undefined : 1 - cost >= floor,
        detail:
          cost === undefined
            ? 'not measured'
            : `throughput cost ${pct(cost)} (${fmtRate(r!.rate)} msg/s, ratio ${r!.ratio!.toFixed(3)} vs no subscriber)${(r as { cpuCost?: number }).cpuCost !== undefined ? `; CPU per message +${pct((r as { cpuCost?: number }).cpuCost!)}` : ''}${floor === undefined ? ' — reported, no goal' : ''}`,
      });
    };
    obsGoal('no-subscriber helpers', 'instrumentation present, no subscriber: ≤ 2 % throughput cost (estimate, see the row)', 0.98);
    obsGoal('sqlite e2e, metrics only', 'metrics only: ≤ 5 % throughput cost', 0.95);
    obsGoal('sqlite e2e, tracing ParentBased 1 %', 'tracing at ParentBased 1 % sampling: ≤ 15 % throughput cost', 0.85);
    obsGoal('sqlite e2e, tracing 100 %', 'tracing at 100 % sampling', undefined);
    obsGoal('sqlite e2e, tracing ParentBased 1 % sampled, bindContext false', 'tracing at 1 % without binding the context', undefined);
  }
  if (ran('memory')) {
    const pub = find('memory publish, batches');
    out.push({
      section: 'memory',
      text: 'memory publish ≥ 1,000,000 msg/s (createEnvelope included)',
      met: pub ? pub.rate >= 1_000_000 : undefined,
      detail: pub ? `${fmtRate(pub.rate)} msg/s (${pct(pub.rate / 1_000_000)} of goal)${pub.rate < 1_000_000 ? `; missed by ${(1_000_000 / pub.rate).toFixed(1)}×` : ''}` : 'not measured',
    });
  }
  if (ran('sqlite')) {
    const lat = find('sqlite latency');
    out.push({
      section: 'sqlite',
      text: `SQLite p99 < 10 ms at ${rate.toLocaleString('en-US')} msg/s (2 processes, open loop)`,
      met: lat?.p99Ms === undefined ? undefined : lat.p99Ms < 10,
      detail: lat?.p99Ms === undefined ? 'not measured' : `p99 ${lat.p99Ms.toFixed(2)} ms, p50 ${lat.p50Ms!.toFixed(2)} ms; ${lat.p99Ms < 10 ? `${(10 - lat.p99Ms).toFixed(2)} ms under` : `${(lat.p99Ms - 10).toFixed(2)} ms over`}`,
    });
  }

  // Transports: every Herald row with a raw peer. Throughput ≥ 80 % of the peer; open-loop
  // latency p99 ≤ 1.2 × the peer's p99 + 1 ms. Rows with judged = false are listed, not judged.
  const byCase = new Map(all.map((r) => [r.case, r]));
  for (const section of ['nats', 'redis', 'rabbitmq', 'kafka', 'mqtt'] as const) {
    for (const r of all) {
      if (r.suite !== section || r.ratioVs === undefined) continue;
      const peer = byCase.get(r.ratioVs);
      if (!peer) continue;
      const judged = r.judged !== false;
      if (r.kind === 'latency') {
        if (r.p99Ms === undefined || peer.p99Ms === undefined) continue;
        const limit = 1.2 * peer.p99Ms + 1;
        const ok = r.p99Ms <= limit;
        out.push({
          section,
          text: `${r.case}: p99 ≤ 1.2 × raw p99 + 1 ms`,
          met: judged ? ok : undefined,
          detail: `p99 ${r.p99Ms.toFixed(2)} ms vs raw ${peer.p99Ms.toFixed(2)} ms → limit ${limit.toFixed(2)} ms; ${ok ? `${(limit - r.p99Ms).toFixed(2)} ms under` : `${(r.p99Ms - limit).toFixed(2)} ms over (${(r.p99Ms / limit).toFixed(2)}× the limit)`}; p50 ${r.p50Ms?.toFixed(2) ?? '?'} vs ${peer.p50Ms?.toFixed(2) ?? '?'} ms; kept ${fmtRate(r.rate)} msg/s${judged ? '' : ' — reported, not judged'}`,
        });
      } else {
        const ratio = r.ratio ?? r.rate / peer.rate;
        out.push({
          section,
          text: `${r.case}: ≥ 80 % of the raw client's throughput`,
          met: judged ? ratio >= 0.8 : undefined,
          detail: `${pct(ratio)} (${fmtRate(r.rate)} vs ${fmtRate(peer.rate)} msg/s); ${margin(ratio, 0.8, r.rate)}${judged ? '' : ' — reported, not judged'}`,
        });
      }
    }
  }
  if (ran('mqtt')) out.push({ section: 'mqtt', text: 'MQTT p99 ≤ 1.2 × raw p99 + 1 ms at 5,000 msg/s', met: undefined, detail: 'not measured: the MQTT module has no open-loop row (its cases are closed loop; their p50/p99 are in the table)' });

  // Event store: the goals of packages/sqlite/src/event-store.bench.ts.
  if (ran('event-store')) {
    const es = all.filter((r) => r.suite === 'event-store');
    const get = (part: string): Row | undefined => es.find((r) => r.case.includes(part));
    const rawB = get('raw better-sqlite3 insert, 1000 rows per transaction');
    const ratioGoal = (part: string, goal: number, text: string): void => {
      const r = get(part);
      const ratio = r && rawB ? r.rate / rawB.rate : undefined;
      out.push({
        section: 'event-store',
        text,
        met: ratio === undefined ? undefined : ratio >= goal,
        detail: ratio === undefined ? 'not measured' : `${pct(ratio)} (${fmtRate(r!.rate)} vs ${fmtRate(rawB!.rate)} events/s); ${margin(ratio, goal, r!.rate)}`,
      });
    };
    ratioGoal('herald append, 1 event/append, 64 concurrent callers', 0.5, 'event store: 1-event appends × 64 callers ≥ 50 % of raw batched insert');
    ratioGoal('herald append, 100 events/append, 64 concurrent callers', 0.8, 'event store: 100-event appends × 64 callers ≥ 80 % of raw batched insert');
    const replay = get('herald replay');
    out.push({
      section: 'event-store',
      text: 'event store: replay ≥ 150,000 events/s',
      met: replay ? replay.rate >= 150_000 : undefined,
      detail: replay ? `${fmtRate(replay.rate)} events/s (${pct(replay.rate / 150_000)} of goal)` : 'not measured',
    });
    const emmett = es.filter((r) => r.case.includes('emmett'));
    if (emmett.length === 0) out.push({ section: 'event-store', text: 'event store: ahead of Emmett', met: undefined, detail: 'not measured (no Emmett row: see the progress log)' });
    for (const e of emmett) {
      const h = e.ratioVs ? byCase.get(e.ratioVs) : undefined;
      if (!h) continue;
      out.push({
        section: 'event-store',
        text: `event store: ahead of Emmett — ${e.case.replace('event store: ', '')}`,
        met: h.rate > e.rate,
        detail: `Herald ${fmtRate(h.rate)} vs Emmett ${fmtRate(e.rate)} events/s = ${(h.rate / e.rate).toFixed(2)}× (Herald row: ${h.case.replace('event store: ', '')})`,
      });
    }
  }
  // PostgreSQL: the goals of packages/postgres/src/postgres.bench.ts (issue 5).
  if (ran('postgres')) {
    const pgRows = all.filter((r) => r.suite === 'postgres');
    const get = (part: string): Row | undefined => pgRows.find((r) => r.case.includes(part));
    const hundred = get('Herald: 100-event appends');
    const single = get('Herald: single-event appends');
    out.push({
      section: 'postgres',
      text: 'pg: 100-event appends ≥ 50 % of the raw multi-row insert',
      met: hundred?.ratio === undefined ? undefined : hundred.ratio >= 0.5,
      detail: hundred?.ratio === undefined ? 'not measured' : `${pct(hundred.ratio)} (${fmtRate(hundred.rate)} events/s); ${margin(hundred.ratio, 0.5, hundred.rate)}`,
    });
    out.push({
      section: 'postgres',
      text: 'pg: single-event appends from 64 callers ≥ 12,000 events/s',
      met: single ? single.rate >= 12_000 : undefined,
      detail: single ? `${fmtRate(single.rate)} events/s (${pct(single.rate / 12_000)} of goal; ${single.ratio !== undefined ? `${single.ratio.toFixed(2)}× raw single-row commits` : 'no raw row'})` : 'not measured',
    });
    for (const [mine, peer, what] of [
      ['Herald: single-event appends', 'Emmett: single-event appends', 'single-event appends'],
      ['Herald: 100-event appends', 'Emmett: 100-event appends', '100-event appends'],
      ['Herald transport', 'pg-boss', 'transport vs pg-boss send + work'],
    ] as const) {
      const h = get(mine);
      const p = get(peer);
      out.push({
        section: 'postgres',
        text: `pg: ahead of ${peer.split(':')[0]} — ${what}`,
        met: h && p ? h.rate > p.rate : undefined,
        detail: h && p ? `Herald ${fmtRate(h.rate)} vs ${fmtRate(p.rate)} /s = ${(h.rate / p.rate).toFixed(2)}×` : 'not measured (see the progress log)',
      });
    }
  }
  // Outbox: packages/sqlite/src/outbox.bench.ts — end to end (write + outbox, relayed) against direct publish.
  if (ran('outbox')) {
    const e2e = all.find((r) => r.suite === 'outbox' && r.case.startsWith('outbox: end to end'));
    const ratio = e2e?.ratio;
    out.push({
      section: 'outbox',
      text: 'outbox end to end (business row + outbox row per transaction, relayed) ≥ 50 % of direct publish',
      met: ratio === undefined ? undefined : ratio >= 0.5,
      detail: ratio === undefined || !e2e ? 'not measured' : `${pct(ratio)} (${fmtRate(e2e.rate)} msg/s); ${margin(ratio, 0.5, e2e.rate)}`,
    });
  }
  return out;
}

/** How far a ratio is from its goal: points above, or points below and the rate that would meet it. */
function margin(ratio: number, goal: number, rate: number): string {
  if (ratio >= goal) return `met by ${((ratio - goal) * 100).toFixed(1)} points`;
  return `missed by ${((goal - ratio) * 100).toFixed(1)} points (needs ${fmtRate((rate * goal) / ratio)}/s, ${(goal / ratio).toFixed(2)}× the measured rate)`;
}

function render(all: readonly Row[], gs: readonly Goal[], runsBySection: readonly SectionRun[], secs: number): string {
  const head = ['#', 'case', 'messages', 'rate (/s)', 'p50 ms', 'p99 ms', 'vs #', 'ratio vs peer'];
  const index = new Map(all.map((r, i) => [r.case, i + 1]));
  const cells = (r: Row): string[] => [
    String(index.get(r.case)),
    r.case,
    r.messages.toLocaleString('en-US'),
    fmtRate(r.rate),
    r.p50Ms === undefined ? '' : r.p50Ms.toFixed(2),
    r.p99Ms === undefined ? '' : r.p99Ms.toFixed(2),
    r.ratioVs === undefined ? '' : String(index.get(r.ratioVs) ?? '?'),
    r.ratio === undefined ? '' : `${r.ratio.toFixed(3)} (${pct(r.ratio)})`,
  ];
  const body: string[][] = [];
  for (const s of runsBySection) {
    const own = all.filter((r) => r.suite === s.section);
    if (own.length === 0) continue;
    body.push(['', `**${SECTION_TITLES[s.section]}**`, '', '', '', '', '', '']);
    for (const r of own) body.push(cells(r));
  }
  const width = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const right = [true, false, true, true, true, true, true, true];
  const line = (c: string[]): string => `| ${c.map((x, i) => (right[i] ? x.padStart(width[i]!) : x.padEnd(width[i]!))).join(' | ')} |`;
  const lines = [line(head), `|${width.map((w, i) => (right[i] ? `${'-'.repeat(w + 1)}:` : `:${'-'.repeat(w + 1)}`)).join('|')}|`, ...body.map(line)];
  lines.push('');
  lines.push(
    `${machine.node}, ${machine.cpus} CPUs (${machine.cpuModel}), ${machine.platform}, commit ${machine.commit}; payload ${PAYLOAD_BYTES} B JSON in a CloudEvents envelope; ${secs.toFixed(0)} s in all; 1-min load average ${machine.loadAvgAtStart.toFixed(2)} at start, ${machine.loadAvgAtEnd.toFixed(2)} at end.`,
  );
  if (contention) {
    lines.push(
      `CPU during the run: this benchmark ${contention.own.toFixed(1)} CPU-seconds, the broker servers ${contention.servers.toFixed(1)}, other processes ${contention.other.toFixed(1)} (${pct(contention.otherShare)} of the machine's ${machine.cpus} CPUs).${contention.otherShare > 0.1 ? ' The machine was shared: expect these figures to be low and noisy.' : ''}`,
    );
  }
  lines.push('Ratios: the row\'s rate ÷ the rate of row "vs #", measured in the same run (on open-loop latency rows the rate only shows the sender kept up: compare p50/p99).');
  lines.push('Sections:');
  for (const s of runsBySection) {
    const status = s.skipped ? `skipped — ${s.skipped}` : s.failed ? `FAILED — ${s.failed}` : `${s.rows} rows`;
    const cpu = s.cpu ? `; other processes ${pct(s.cpu.otherShare)} of the machine, servers ${s.cpu.servers.toFixed(1)} CPU-s` : '';
    lines.push(`  - ${s.section}: ${s.seconds.toFixed(0)} s, load ${s.loadAvgAtStart.toFixed(2)} → ${s.loadAvgAtEnd.toFixed(2)}${cpu}; ${status}${s.note ? `. ${s.note}` : ''}`);
  }
  const noted = all.filter((r) => r.note);
  if (noted.length) {
    lines.push('Notes (memory and SQLite rows: median of the runs):');
    for (const r of noted) lines.push(`  - ${r.case}: ${r.note}${r.runs ? `; runs ${r.runs.map(fmtRate).join(', ')} msg/s` : ''}`);
  }
  lines.push('');
  lines.push('Goals:');
  for (const g of gs) lines.push(`  ${g.met === undefined ? '–' : g.met ? '✓' : '✗'} ${g.text}: ${g.detail}`);
  const met = gs.filter((g) => g.met === true).length;
  const unmet = gs.filter((g) => g.met === false).length;
  lines.push(`  ${met} met, ${unmet} not met, ${gs.length - met - unmet} not judged.`);
  return `${lines.join('\n')}\n`;
}

function fmtRate(x: number): string {
  return Math.round(x).toLocaleString('en-US');
}

function pct(x: number): string {
  return `${(x * 100).toFixed(1)} %`;
}

function gitCommit(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no', '--', 'packages'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return dirty ? `${head} (packages/ modified)` : head;
  } catch {
    return 'unknown';
  }
}

interface CpuSample {
  /** Busy CPU-seconds of the whole machine since boot. */
  readonly machine: number;
  /** CPU-seconds of this process and its waited-for children. */
  readonly own: number;
  /** CPU-seconds of each broker server process, by pid. */
  readonly servers: ReadonlyMap<number, number>;
}

// (A function, not a constant: cpuSample runs at the top level before a constant here would be initialized.)
/**
 * The shared broker servers the sections use: per command, the longest-running process. Other
 * sessions' tests also start private servers (a second beam.smp, nats-server…); those count as
 * other processes. The shared servers' CPU still includes whatever other sessions send them.
 */
function isServer(comm: string): boolean {
  return comm === 'nats-server' || comm === 'redis-server' || comm === 'beam.smp' || comm === 'mosquitto';
}

/** Command, start time (clock ticks since boot) and utime + stime (+ cutime + cstime with `children`, seconds) of a /proc/<pid>/stat line. */
function statOf(stat: string, children: boolean): { comm: string; start: number; seconds: number } {
  const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
  // Fields after the command name start at field 3: utime is field 14, stime 15, cutime 16, cstime 17, starttime 22.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
  return { comm, start: f[19]!, seconds: (f[11]! + f[12]! + (children ? f[13]! + f[14]! : 0)) / 100 }; // USER_HZ, 100 on Linux
}

/** Linux only (/proc); undefined elsewhere. */
function cpuSample(): CpuSample | undefined {
  try {
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, , , irq, softirq, steal] = cpu;
    const own = statOf(readFileSync('/proc/self/stat', 'utf8'), true).seconds;
    const oldest = new Map<string, { pid: number; start: number; seconds: number }>();
    for (const d of readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const s = statOf(readFileSync(`/proc/${d}/stat`, 'utf8'), false);
        const seen = oldest.get(s.comm);
        if (isServer(s.comm) && (!seen || s.start < seen.start)) oldest.set(s.comm, { pid: Number(d), start: s.start, seconds: s.seconds });
      } catch {
        // gone meanwhile
      }
    }
    const servers = new Map([...oldest.values()].map((x) => [x.pid, x.seconds]));
    return { machine: (user! + nice! + system! + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / 100, own, servers };
  } catch {
    return undefined;
  }
}

function cpuDelta(a: CpuSample | undefined, b: CpuSample | undefined, wallSeconds: number): { own: number; servers: number; other: number; otherShare: number } | undefined {
  if (!a || !b) return undefined;
  const own = b.own - a.own;
  let servers = 0;
  for (const [pid, s] of b.servers) if (a.servers.has(pid)) servers += s - a.servers.get(pid)!;
  const other = Math.max(0, b.machine - a.machine - own - servers);
  return { own, servers, other, otherShare: other / (wallSeconds * availableParallelism()) };
}
