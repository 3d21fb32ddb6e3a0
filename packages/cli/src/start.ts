/**
 * `herald start` / `herald dev`: the supervisor and the console server in one process.
 *
 * Each service runs as `node --import tsx <entry>` in the config's folder, with the environment
 * of this process + the config's `env` + the service's `env` + `HERALD_SERVICE` (its name),
 * `HERALD_CONFIG` (absolute config path) and `HERALD_BACKEND_JSON` (the config's backend object,
 * paths absolute). `dev` adds `--watch` (node restarts the service when one of its files changes).
 * SIGINT / SIGTERM stop every service (SIGTERM, then SIGKILL after 5 s), close the console and
 * the stores, and resolve with exit code 0; a second signal exits at once with code 130.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { createConsoleServer, type ConsoleServer } from '@herald/console';
import { HeraldError } from '@herald/core';
import { openBackend } from './backend.ts';
import type { HeraldConfig } from './config.ts';
import { EXIT_OK, type Io } from './output.ts';
import { type SupervisedService, Supervisor, type SupervisorOptions } from './supervisor.ts';

export interface RunOptions {
  readonly watch?: boolean;
  /** Serve the console (default true). */
  readonly console?: boolean;
  /** Console port (default config.console.port). */
  readonly port?: number;
  /** Run only these services. */
  readonly only?: readonly string[];
  readonly supervisor?: SupervisorOptions;
}

/** The loader every service is started with (resolved from the CLI, so services outside the repository find it too). */
const TSX = import.meta.resolve('tsx');

/** How a config's service becomes a supervised process. */
export function serviceProcesses(config: HeraldConfig, options: { watch?: boolean; only?: readonly string[] } = {}): SupervisedService[] {
  if (options.only) {
    for (const name of options.only) {
      if (!config.services.some((s) => s.name === name)) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no service named "${name}" in ${config.file} (known: ${config.services.map((s) => s.name).join(', ')})`);
    }
  }
  const backendJson = JSON.stringify(config.backend);
  return config.services
    .filter((s) => !options.only || options.only.includes(s.name))
    .map((s) => ({
      name: s.name,
      command: process.execPath,
      args: [...(options.watch ? ['--watch'] : []), '--import', TSX, s.entry],
      cwd: config.dir,
      env: { ...process.env, ...config.env, ...s.env, HERALD_SERVICE: s.name, HERALD_CONFIG: config.file, HERALD_BACKEND_JSON: backendJson },
      restart: s.restart,
    }));
}

export async function runServices(config: HeraldConfig, options: RunOptions, io: Io): Promise<number> {
  if (config.backend.kind === 'sqlite') mkdirSync(dirname(config.backend.path), { recursive: true });
  const backend = await openBackend(config, { create: true, loadViews: true });
  const processes = serviceProcesses(config, options);
  const supervisor = new Supervisor(processes, options.supervisor);
  let server: ConsoleServer | undefined;
  try {
    if (options.console !== false) {
      server = await createConsoleServer({
        sources: backend,
        services: supervisor,
        port: options.port ?? config.console.port,
        log: (line) => io.err(`herald: ${line}\n`),
      });
    }
  } catch (e) {
    await backend.close();
    if ((e as { code?: unknown }).code === 'EADDRINUSE') {
      throw Object.assign(new Error(`console port ${options.port ?? config.console.port} is in use: give another with --port <n> (0 = any free port) or console.port in ${config.file}`), { code: 'EADDRINUSE' });
    }
    throw e;
  }
  supervisor.startAll();
  io.err(`herald: ${config.name}: ${processes.length} service(s) on ${config.backend.kind}${server ? `; console at ${server.url.replace('127.0.0.1', 'localhost')}` : ''} — Ctrl-C stops everything\n`);

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) {
        io.err(`herald: ${signal} again: exiting now\n`);
        process.exit(130);
      }
      stopping = true;
      io.err(`herald: ${signal}: stopping ${processes.length} service(s)…\n`);
      void (async () => {
        await supervisor.close();
        await server?.close();
        await backend.close();
        process.off('SIGINT', onInt);
        process.off('SIGTERM', onTerm);
        io.err('herald: stopped\n');
        resolve(EXIT_OK);
      })();
    };
    const onInt = (): void => stop('SIGINT');
    const onTerm = (): void => stop('SIGTERM');
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
  });
}
