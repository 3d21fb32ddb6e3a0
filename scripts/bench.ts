/**
 * `npm run bench` — Herald's throughput and latency, side by side with the raw peer measured
 * in the same run (STYLE rule 12). Prints a table on stdout; with `--json`, prints JSON on
 * stdout and the table on stderr. Progress goes to stderr.
 *
 *   npm run bench [-- --json] [-- --only memory|sqlite]
 *
 * Sizes (environment):
 *   BENCH_MESSAGES          messages per memory row (default 100000); also the SQLite rows' size when BENCH_SQLITE_MESSAGES is unset
 *   BENCH_SQLITE_MESSAGES   messages per SQLite row (default 50000)
 *   BENCH_RUNS              runs per row; the table shows the median (default 3)
 *   BENCH_BATCH             messages per publish call in the batched rows (default 1000)
 *   BENCH_CONCURRENCY       concurrent single-message publishers (default 64)
 *   BENCH_RATE              open-loop rate of the latency row, msg/s (default 5000)
 *   BENCH_LATENCY_SECONDS   duration of the latency row (default 5)
 *   BENCH_KEYS              distinct partition keys (default 256; 0 = no keys)
 *   BENCH_CPU_PROF_DIR      analysis only: write a CPU profile of each SQLite consumer process there
 *   BENCH_POLL_MS           analysis only: the SQLite consumer's cross-process poll period, ms (default: the transport's own default)
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { envInt, KEY_COUNT, PAYLOAD_BYTES, progress, type Row } from './bench/common.ts';
import { memoryRows } from './bench/memory.ts';

interface Goal {
  readonly text: string;
  readonly met: boolean | undefined;
  readonly detail: string;
}

const args = process.argv.slice(2);
const json = args.includes('--json');
const onlyIdx = args.indexOf('--only');
const only = onlyIdx >= 0 ? args[onlyIdx + 1] : process.env.BENCH_ONLY;
if (only !== undefined && only !== 'memory' && only !== 'sqlite') throw new Error(`--only takes memory or sqlite (got ${only})`);

const runs = Math.max(1, envInt('BENCH_RUNS', 3));
const memMessages = envInt('BENCH_MESSAGES', 100_000);
const sqliteMessages = envInt('BENCH_SQLITE_MESSAGES', process.env.BENCH_MESSAGES ? memMessages : 50_000);
const batch = Math.max(1, envInt('BENCH_BATCH', 1000));
const concurrency = Math.max(1, envInt('BENCH_CONCURRENCY', 64));
const rate = Math.max(1, envInt('BENCH_RATE', 5000));
const latencySeconds = Math.max(1, envInt('BENCH_LATENCY_SECONDS', 5));
const pollMs = process.env.BENCH_POLL_MS ? Math.max(1, envInt('BENCH_POLL_MS', 50)) : undefined;

const machine = {
  node: process.version,
  cpus: availableParallelism(),
  cpuModel: cpus()[0]?.model ?? 'unknown',
  platform: `${process.platform} ${process.arch}`,
  commit: gitCommit(),
  loadAvgAtStart: loadavg()[0]!,
  loadAvgAtEnd: 0,
};

const started = performance.now();
const cpuAtStart = cpuSample();
const rows: Row[] = [];
const skipped: string[] = [];

if (only !== 'sqlite') {
  progress(`memory rows: ${memMessages} messages × ${runs} runs`);
  rows.push(...(await memoryRows({ messages: memMessages, runs, batch })));
}
if (only !== 'memory') {
  progress(`sqlite rows: ${sqliteMessages} messages × ${runs} runs`);
  const sqlite = await import('./bench/sqlite.ts').catch((e: unknown) => ({ error: e }));
  if ('error' in sqlite) skipped.push(`SQLite rows skipped: ${(sqlite.error as Error).message}`);
  else rows.push(...(await sqlite.sqliteRows({ messages: sqliteMessages, runs, batch, concurrency, rate, latencySeconds, ...(pollMs !== undefined ? { pollMs } : {}) })));
}

machine.loadAvgAtEnd = loadavg()[0]!;
const contention = otherCpu(cpuAtStart, cpuSample(), (performance.now() - started) / 1000);
const goals = evaluateGoals(rows);
const seconds = (performance.now() - started) / 1000;
const table = render(rows, goals, skipped, seconds);
if (json) {
  process.stderr.write(table);
  process.stdout.write(
    `${JSON.stringify(
      {
        machine,
        contention,
        config: { runs, memMessages, sqliteMessages, batch, concurrency, rate, latencySeconds, keys: KEY_COUNT, payloadBytes: PAYLOAD_BYTES, pollMs: pollMs ?? null },
        rows,
        goals,
        skipped,
        seconds,
      },
      null,
      2,
    )}\n`,
  );
} else process.stdout.write(table);

function evaluateGoals(all: readonly Row[]): Goal[] {
  const find = (prefix: string): Row | undefined => all.find((r) => r.case.startsWith(prefix));
  const out: Goal[] = [];
  const raw = find('better-sqlite3');
  for (const name of ['sqlite e2e (2 processes), validation off', 'sqlite e2e (2 processes), validation on']) {
    const r = find(name);
    const ratio = r && raw ? r.rate / raw.rate : undefined;
    out.push({
      text: `SQLite e2e ≥ 50% of raw batched insert — ${name.replace('sqlite e2e (2 processes), ', '')}`,
      met: ratio === undefined ? undefined : ratio >= 0.5,
      detail: ratio === undefined ? 'not measured' : `${pct(ratio)} (${fmtRate(r!.rate)} vs ${fmtRate(raw!.rate)} msg/s)`,
    });
  }
  const pub = find('memory publish, batches');
  out.push({
    text: 'memory publish ≥ 1,000,000 msg/s (createEnvelope included)',
    met: pub ? pub.rate >= 1_000_000 : undefined,
    detail: pub ? `${fmtRate(pub.rate)} msg/s (${pct(pub.rate / 1_000_000)} of goal)` : 'not measured',
  });
  const lat = find('sqlite latency');
  out.push({
    text: `p99 < 10 ms at ${rate.toLocaleString('en-US')} msg/s (SQLite, 2 processes, open loop)`,
    met: lat?.p99Ms === undefined ? undefined : lat.p99Ms < 10,
    detail: lat?.p99Ms === undefined ? 'not measured' : `p99 ${lat.p99Ms.toFixed(2)} ms, p50 ${lat.p50Ms!.toFixed(2)} ms`,
  });
  return out;
}

function render(all: readonly Row[], gs: readonly Goal[], skips: readonly string[], secs: number): string {
  const head = ['case', 'messages', 'rate (msg/s)', 'p50 ms', 'p99 ms', 'ratio vs raw peer'];
  const body = all.map((r) => [
    r.case,
    r.messages.toLocaleString('en-US'),
    fmtRate(r.rate),
    r.p50Ms === undefined ? '' : r.p50Ms.toFixed(2),
    r.p99Ms === undefined ? '' : r.p99Ms.toFixed(2),
    r.ratio === undefined ? (r.ratioVs === undefined ? '—' : '') : `${r.ratio.toFixed(3)} (${pct(r.ratio)})`,
  ]);
  const width = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const right = [false, true, true, true, true, true];
  const line = (cells: string[]): string => `| ${cells.map((c, i) => (right[i] ? c.padStart(width[i]!) : c.padEnd(width[i]!))).join(' | ')} |`;
  const lines = [line(head), `|${width.map((w, i) => (right[i] ? `${'-'.repeat(w + 1)}:` : `:${'-'.repeat(w + 1)}`)).join('|')}|`, ...body.map(line)];
  lines.push('');
  lines.push(`${machine.node}, ${machine.cpus} CPUs (${machine.cpuModel}), commit ${machine.commit}; payload ${PAYLOAD_BYTES} B JSON in a CloudEvents envelope; ${KEY_COUNT} partition keys; median of ${runs} runs; ${secs.toFixed(0)} s in all; 1-min load average ${machine.loadAvgAtStart.toFixed(2)} at start, ${machine.loadAvgAtEnd.toFixed(2)} at end.`);
  if (contention) {
    lines.push(
      `Other processes used ${contention.otherCpuSeconds.toFixed(1)} CPU-seconds during the run (${pct(contention.otherShare)} of the machine's ${machine.cpus} CPUs); this benchmark used ${contention.ownCpuSeconds.toFixed(1)}.${contention.otherShare > 0.1 ? ' The machine was shared: expect these figures to be low and noisy.' : ''}`,
    );
  }
  const peers = [...new Set(all.filter((r) => r.ratioVs).map((r) => r.ratioVs!))];
  if (peers.length) lines.push(`Ratios: each row's rate ÷ its peer's rate (${peers.map((p) => `"${p}"`).join(', ')}), same run.`);
  for (const r of all) if (r.note) lines.push(`  - ${r.case}: ${r.note}; runs ${r.runs.map(fmtRate).join(', ')} msg/s`);
  for (const s of skips) lines.push(s);
  lines.push('');
  lines.push('Goals:');
  for (const g of gs) lines.push(`  ${g.met === undefined ? '–' : g.met ? '✓' : '✗'} ${g.text}: ${g.detail}`);
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
}

/** Linux only (/proc); undefined elsewhere. */
function cpuSample(): CpuSample | undefined {
  try {
    const hz = 100; // USER_HZ, 100 on Linux
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, , , irq, softirq, steal] = cpu;
    const self = readFileSync('/proc/self/stat', 'utf8');
    const f = self.slice(self.lastIndexOf(')') + 2).split(' ').map(Number);
    // Fields after the command name start at field 3: utime is field 14, stime 15, cutime 16, cstime 17.
    const own = (f[11]! + f[12]! + f[13]! + f[14]!) / hz;
    return { machine: (user! + nice! + system! + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / hz, own };
  } catch {
    return undefined;
  }
}

function otherCpu(a: CpuSample | undefined, b: CpuSample | undefined, wallSeconds: number): { otherCpuSeconds: number; ownCpuSeconds: number; otherShare: number } | undefined {
  if (!a || !b) return undefined;
  const own = b.own - a.own;
  const other = Math.max(0, b.machine - a.machine - own);
  return { otherCpuSeconds: other, ownCpuSeconds: own, otherShare: other / (wallSeconds * availableParallelism()) };
}
