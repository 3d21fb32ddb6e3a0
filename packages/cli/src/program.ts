/**
 * The `herald` command line (commander). `runCli(argv)` parses, runs one command and returns
 * its exit code (see output.ts); it never calls `process.exit` itself.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type DeadLetterEntry, type DeadLetterFilter, type DeadLetterSelector, type DeadLetterStatus, HeraldError } from '@herald/core';
import { Command, CommanderError, Option } from 'commander';
import { openBackend } from './backend.ts';
import { drawCausationTree } from './causation-tree.ts';
import { DEFAULT_CONFIG_FILE, type HeraldConfig, loadConfig } from './config.ts';
import { EXIT_OK, EXIT_USAGE, type Io, printJson, printTable, processIo, reportError, UsageError } from './output.ts';

const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

interface GlobalOptions {
  config?: string;
}

export async function runCli(argv: readonly string[], io: Io = processIo): Promise<number> {
  let json = argv.includes('--json');
  let code = EXIT_OK;
  const program = buildProgram(io, (c) => {
    code = c;
  });
  try {
    await program.parseAsync(argv as string[], { from: 'user' });
    return code;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return EXIT_OK;
      return EXIT_USAGE; // commander already printed the message
    }
    json = json || false;
    return reportError(io, e, json);
  }
}

function configOf(cmd: Command): HeraldConfig {
  const g = cmd.optsWithGlobals<GlobalOptions>();
  return loadConfig(g.config ?? DEFAULT_CONFIG_FILE);
}

function positiveInt(name: string) {
  return (raw: string): number => {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`${name} must be a positive integer (got "${raw}")`);
    return n;
  };
}

const STATUSES: readonly DeadLetterStatus[] = ['dead', 'parked', 'redrive'];

function filterOf(o: { group?: string; topic?: string; type?: string; key?: string; status?: string }): DeadLetterFilter {
  if (o.status !== undefined && !STATUSES.includes(o.status as DeadLetterStatus)) throw new UsageError(`--status must be one of ${STATUSES.join(', ')} (got "${o.status}")`);
  return {
    ...(o.group ? { group: o.group } : {}),
    ...(o.topic ? { topic: o.topic } : {}),
    ...(o.type ? { type: o.type } : {}),
    ...(o.key ? { key: o.key } : {}),
    ...(o.status ? { status: o.status as DeadLetterStatus } : {}),
  };
}

/** A dead letter id as typed (`7`) or as stored (`000000000007`). */
function normalizeId(id: string): string {
  return /^\d+$/.test(id) ? id.padStart(12, '0') : id;
}

function summary(e: DeadLetterEntry): Record<string, unknown> {
  return { id: e.id, group: e.group, topic: e.topic, partition: e.partition, key: e.key, type: e.type, eventId: e.eventId, handler: e.handler, status: e.status, attempts: e.attempts, error: e.error, firstFailedAt: e.firstFailedAt, lastFailedAt: e.lastFailedAt };
}

export function buildProgram(io: Io, setCode: (code: number) => void): Command {
  const program = new Command('herald')
    .description('Herald: run event-driven services, inspect and redrive dead letters, read streams, rebuild projections')
    .version('0.1.0')
    .option('-c, --config <file>', 'config file', DEFAULT_CONFIG_FILE)
    .showHelpAfterError('(run "herald --help" for usage)')
    // before any subcommand is added: subcommands copy these settings when created
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) });

  // ── run ────────────────────────────────────────────────────────────────────────────────
  for (const [name, description] of [
    ['start', 'run every service of the config as its own process (restarted on crash) and serve the console'],
    ['dev', 'like start, and each service restarts when one of its files changes (node --watch)'],
  ] as const) {
    program
      .command(name)
      .description(description)
      .option('-p, --port <port>', 'console port (default: config console.port, else 4000; 0 = any free port)', (v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`--port must be an integer from 0 to 65535 (got "${v}")`);
        return n;
      })
      .option('--no-console', 'run the services without the console')
      .option('--only <names>', 'comma-separated services to run (default: all)')
      .action(async (opts: { port?: number; console: boolean; only?: string }, cmd: Command) => {
        const config = configOf(cmd);
        const { runServices } = await import('./start.ts'); // the console server (hono, vite) only when needed
        setCode(await runServices(config, { watch: name === 'dev', console: opts.console, ...(opts.port !== undefined ? { port: opts.port } : {}), ...(opts.only ? { only: opts.only.split(',').map((s) => s.trim()) } : {}) }, io));
      });
  }

  // ── status ─────────────────────────────────────────────────────────────────────────────
  program
    .command('status')
    .description('services (when "herald start" runs), topics, partitions and consumer lag per group, dead letters')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const config = configOf(cmd);
      const backend = await openBackend(config);
      try {
        const [topics, deadLetters, services] = await Promise.all([backend.topics(), backend.deadLetters.count(), fetchServices(config.console.port)]);
        if (opts.json) {
          printJson(io, { name: config.name, services, topics, deadLetters: { total: deadLetters } });
          return;
        }
        io.out(`${config.name} — ${config.backend.kind === 'sqlite' ? config.backend.path : `postgres ${redactUrl(config.backend.url)}`}\n\n`);
        if (services) printTable(io, ['SERVICE', 'STATE', 'PID', 'RESTARTS', 'UPTIME_S'], services.map((s) => [s.name, s.state, s.pid, s.restarts, Math.round(s.uptimeMs / 1000)]));
        else io.out(`services: no supervisor answering on port ${config.console.port} ("herald start" not running)\n`);
        io.out('\n');
        printTable(
          io,
          ['TOPIC', 'PARTITIONS', 'PUBLISHED', 'GROUP', 'HANDLED', 'LAG'],
          topics.flatMap((t) => (t.groups.length === 0 ? [[t.name, t.partitions, t.published, null, null, null]] : t.groups.map((g) => [t.name, t.partitions, t.published, g.group, g.handled, g.lag]))),
        );
        io.out(`\ndead letters: ${deadLetters}\n`);
      } finally {
        await backend.close();
      }
    });

  // ── dlq ────────────────────────────────────────────────────────────────────────────────
  const dlq = program.command('dlq').description('dead letters: list, show, redrive, discard');
  const filterOptions = (c: Command): Command =>
    c
      .option('--group <group>', 'consumer group')
      .option('--topic <topic>', 'topic')
      .option('--type <type>', 'event type')
      .option('--key <key>', 'partition key')
      .addOption(new Option('--status <status>', 'status').choices(STATUSES as string[]));

  filterOptions(dlq.command('list').description('list dead letters, oldest first'))
    .option('--limit <n>', 'entries per page (1–1000)', positiveInt('--limit'), 100)
    .option('--cursor <cursor>', 'continue after this cursor (from the previous page)')
    .option('--json', 'print JSON')
    .action(async (opts: { group?: string; topic?: string; type?: string; key?: string; status?: string; limit: number; cursor?: string; json?: boolean }, cmd: Command) => {
      const backend = await openBackend(configOf(cmd));
      try {
        const filter = filterOf(opts);
        const [page, total] = await Promise.all([backend.deadLetters.list(filter, { limit: opts.limit, ...(opts.cursor ? { cursor: opts.cursor } : {}) }), backend.deadLetters.count(filter)]);
        if (opts.json) {
          printJson(io, { total, entries: page.entries.map(summary), nextCursor: page.nextCursor ?? null });
          return;
        }
        printTable(
          io,
          ['ID', 'GROUP', 'TOPIC', 'TYPE', 'KEY', 'STATUS', 'ATTEMPTS', 'LAST_FAILED', 'ERROR'],
          page.entries.map((e) => [Number(e.id), e.group, e.topic, e.type, e.key, e.status, e.attempts, new Date(e.lastFailedAt).toISOString(), e.error.message]),
        );
        io.out(`${page.entries.length} of ${total}${page.nextCursor ? ` — next page: --cursor ${page.nextCursor}` : ''}\n`);
      } finally {
        await backend.close();
      }
    });

  dlq
    .command('show')
    .description('one dead letter: envelope, raw bytes, error and stack')
    .argument('<id>', 'dead letter id')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { json?: boolean }, cmd: Command) => {
      const backend = await openBackend(configOf(cmd));
      try {
        const e = await backend.deadLetters.get(normalizeId(id));
        if (!e) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no dead letter with id "${id}"`);
        if (opts.json) {
          printJson(io, { entry: e });
          return;
        }
        const { envelope, raw, error, ...rest } = e;
        for (const [k, v] of Object.entries(rest)) io.out(`${k}: ${v === null ? '-' : String(v)}\n`);
        io.out(`error: ${error.code ? `${error.code}: ` : ''}${error.message}\n`);
        if (error.stack) io.out(`stack:\n${error.stack}\n`);
        io.out(`envelope:\n${envelope ? JSON.stringify(envelope, null, 2) : `(unreadable; raw: ${raw})`}\n`);
      } finally {
        await backend.close();
      }
    });

  for (const verb of ['redrive', 'discard'] as const) {
    filterOptions(
      dlq
        .command(verb)
        .description(
          verb === 'redrive'
            ? "mark dead letters for redrive to their own group (its running consumer picks them up); a parked key's entries drain in order"
            : 'delete dead letters; a parked key with none left is unparked',
        ),
    )
      .option('--id <ids...>', 'dead letter ids')
      .option('--all', 'every dead letter matching the filter options (or every one, without filters)')
      .option('--json', 'print JSON')
      .action(async (opts: { id?: string[]; all?: boolean; group?: string; topic?: string; type?: string; key?: string; status?: string; json?: boolean }, cmd: Command) => {
        const filter = filterOf(opts);
        const hasFilter = Object.keys(filter).length > 0;
        if (opts.id && (opts.all || hasFilter)) throw new UsageError('give either --id or filter options / --all, not both');
        if (!opts.id && !opts.all) throw new UsageError(`say which dead letters to ${verb}: --id <ids...>, or filter options with --all (e.g. --group shipping --all)`);
        const backend = await openBackend(configOf(cmd));
        try {
          let selector: DeadLetterSelector;
          if (opts.id) {
            const ids = opts.id.map(normalizeId);
            for (const [i, id] of ids.entries()) if (!(await backend.deadLetters.get(id))) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no dead letter with id "${opts.id[i]}"`);
            selector = { ids };
          } else {
            selector = { filter };
          }
          const n = verb === 'redrive' ? await backend.deadLetters.redrive(selector) : await backend.deadLetters.discard(selector);
          if (opts.json) printJson(io, verb === 'redrive' ? { marked: n } : { discarded: n });
          else io.out(verb === 'redrive' ? `${n} dead letter(s) marked for redrive\n` : `${n} dead letter(s) discarded\n`);
        } finally {
          await backend.close();
        }
      });
  }

  // ── streams ────────────────────────────────────────────────────────────────────────────
  program
    .command('streams')
    .description('event streams')
    .command('read')
    .description("read a stream's events forward")
    .argument('<id>', 'stream id')
    .option('--from <version>', 'first version', positiveInt('--from'), 1)
    .option('--limit <n>', 'most events (1–1000)', positiveInt('--limit'), 100)
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { from: number; limit: number; json?: boolean }, cmd: Command) => {
      if (opts.limit > 1000) throw new UsageError(`--limit must be at most 1000 (got ${opts.limit})`);
      const backend = await openBackend(configOf(cmd));
      try {
        const r = await backend.eventStore.readStream(id, { fromVersion: opts.from, maxCount: opts.limit });
        if (r.streamVersion === 0) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no stream "${id}"`);
        if (opts.json) {
          printJson(io, { streamId: r.streamId, streamVersion: r.streamVersion, streamExists: r.streamExists, events: r.events, nextVersion: r.nextVersion ?? null });
          return;
        }
        printTable(
          io,
          ['VERSION', 'POSITION', 'TYPE', 'RECORDED', 'DATA'],
          r.events.map((e) => [e.streamVersion, e.position, e.type, new Date(e.recordedAt).toISOString(), JSON.stringify(e.data)]),
        );
        io.out(`${r.events.length} event(s); stream version ${r.streamVersion}${r.nextVersion ? ` — more: --from ${r.nextVersion}` : ''}\n`);
      } finally {
        await backend.close();
      }
    });

  // ── causation ──────────────────────────────────────────────────────────────────────────
  program
    .command('causation')
    .description('the causation graph of a correlation id: which message caused which, in which service, which handlers took each, how long they took, which failed')
    .argument('<correlation-id>', 'correlation id (a message id for a flow that started without one)')
    .option('--limit <n>', 'most messages read from each source: log, event store, dead letters (1–100000)', positiveInt('--limit'), 1000)
    .option('--json', 'print the graph as JSON ({ correlationId, roots, size, missing })')
    .action(async (correlationId: string, opts: { limit: number; json?: boolean }, cmd: Command) => {
      if (opts.limit > 100_000) throw new UsageError(`--limit must be at most 100000 (got ${opts.limit})`);
      const backend = await openBackend(configOf(cmd));
      try {
        const graph = await backend.causation(correlationId, opts.limit);
        if (graph.size === 0) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no message carries correlation id "${correlationId}" (log, event store and dead letters searched)`);
        if (opts.json) printJson(io, graph);
        else io.out(`${drawCausationTree(graph).join('\n')}\n`);
      } finally {
        await backend.close();
      }
    });

  // ── projections ────────────────────────────────────────────────────────────────────────
  program
    .command('projections')
    .description('projections (read models)')
    .command('rebuild')
    .description('rebuild a projection listed in the config from position 0 into new tables, then swap them in')
    .argument('<name>', 'projection name (config "projections")')
    .option('--batch <n>', 'events per batch (1–10000)', positiveInt('--batch'), 1000)
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { batch: number; json?: boolean }, cmd: Command) => {
      const backend = await openBackend(configOf(cmd));
      const cliProgress = (await import('cli-progress')).default;
      const bar = opts.json || !process.stderr.isTTY ? null : new cliProgress.SingleBar({ format: `${name} [{bar}] {percentage}% | {value}/{total} positions | {events} events`, hideCursor: true }, cliProgress.Presets.shades_classic);
      try {
        let started = false;
        const result = await backend.rebuildProjection(name, {
          batchSize: opts.batch,
          onProgress: (p) => {
            if (!bar) return;
            if (!started) {
              bar.start(Number(p.head), 0, { events: 0 });
              started = true;
            }
            bar.setTotal(Number(p.head));
            bar.update(Number(p.position), { events: p.events });
          },
        });
        bar?.stop();
        if (opts.json) printJson(io, { projection: name, ...result });
        else io.out(`${name}: rebuilt, ${result.events} event(s) applied\n`);
      } finally {
        bar?.stop();
        await backend.close();
      }
    });

  // ── migrate ────────────────────────────────────────────────────────────────────────────
  program
    .command('migrate')
    .description("create or upgrade the backend's schema (idempotent)")
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const config = configOf(cmd);
      const b = config.backend;
      const where = b.kind === 'sqlite' ? b.path : `${redactUrl(b.url)} schema ${b.schema ?? 'herald'}`;
      let created = false;
      if (b.kind === 'sqlite') {
        mkdirSync(dirname(b.path), { recursive: true });
        created = !existsSync(b.path);
      }
      const backend = await openBackend(config, { create: true });
      try {
        const versions = await backend.schemaVersions();
        if (opts.json) printJson(io, { backend: b.kind, ...(b.kind === 'sqlite' ? { path: b.path, created } : { schema: b.schema ?? 'herald' }), versions });
        else io.out(`${where}: ${created ? 'created' : 'up to date'} (${Object.entries(versions).map(([k, v]) => `${k} v${v}`).join(', ')})\n`);
      } finally {
        await backend.close();
      }
    });

  // ── bench ──────────────────────────────────────────────────────────────────────────────
  program
    .command('bench')
    .description('run the benchmarks (npm run bench in the Herald repository); arguments pass through, e.g. herald bench -- --only sqlite')
    .allowUnknownOption()
    .argument('[args...]', 'passed to the bench script')
    .action(async (args: string[]) => {
      if (!existsSync(join(REPO_ROOT, 'scripts', 'bench.ts'))) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no scripts/bench.ts under ${REPO_ROOT}: herald bench runs inside the Herald repository`);
      const code = await new Promise<number>((resolve, reject) => {
        const child = spawn('npm', ['run', 'bench', '--', ...args], { cwd: REPO_ROOT, stdio: 'inherit' });
        child.once('error', reject);
        child.once('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0)));
      });
      setCode(code === 0 ? EXIT_OK : 1);
    });

  return program;
}

/** A connection URL without its password, for messages. */
function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
}

async function fetchServices(port: number): Promise<Array<{ name: string; state: string; pid: number | null; restarts: number; uptimeMs: number }> | null> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/api/services`, { signal: AbortSignal.timeout(1000) });
    if (!r.ok) return null;
    return ((await r.json()) as { services: Array<{ name: string; state: string; pid: number | null; restarts: number; uptimeMs: number }> }).services;
  } catch {
    return null;
  }
}
