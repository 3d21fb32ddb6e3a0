// A private throwaway PostgreSQL cluster on its own port and data folder, for restart tests that
// must not disturb the shared server: `initdb` and `pg_ctl` from the server's bin folder, run as
// the `postgres` user (they refuse root). The folder is owned by postgres and removed at the end.
import { execFile } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, serversRequired } from '@herald/testkit';
import type { PgConnectionOptions } from './database.ts';

const run = promisify(execFile);
export const PG_BIN = process.env.HERALD_PG_BIN ?? '/usr/lib/postgresql/15/bin';

/** Why a private cluster cannot be made here (undefined when it can). */
export function privateClusterSkipReason(): string | undefined {
  const reason = !existsSync(join(PG_BIN, 'initdb'))
    ? `no PostgreSQL binaries in ${PG_BIN} (set HERALD_PG_BIN)`
    : process.getuid?.() !== 0
      ? 'a private cluster needs root to run initdb/pg_ctl as the postgres user (runuser)'
      : undefined;
  if (reason === undefined) return undefined;
  // Skip on a laptop; in CI a restart suite that cannot run is a failure, not a skip.
  if (serversRequired) throw new Error(`${reason} (servers are required here: CI or HERALD_REQUIRE_SERVERS=1)`);
  console.warn(`# skipping: ${reason}`);
  return reason;
}

export class PrivatePostgres {
  readonly port: number;
  readonly dir: string;
  readonly #data: string;

  private constructor(port: number, dir: string) {
    this.port = port;
    this.dir = dir;
    this.#data = join(dir, 'data');
  }

  static async start(): Promise<PrivatePostgres> {
    const dir = mkdtempSync(join(tmpdir(), 'herald-pg-'));
    const uid = Number((await run('id', ['-u', 'postgres'])).stdout.trim());
    const gid = Number((await run('id', ['-g', 'postgres'])).stdout.trim());
    chownSync(dir, uid, gid);
    const s = new PrivatePostgres(await freePort(), dir);
    await s.#as('initdb', ['-D', s.#data, '-A', 'trust', '-U', 'postgres', '--no-sync']);
    await s.#ctl('start');
    await s.#as('createdb', ['-h', '127.0.0.1', '-p', String(s.port), '-U', 'postgres', 'test']);
    return s;
  }

  get connection(): PgConnectionOptions {
    return { host: '127.0.0.1', port: this.port, user: 'postgres', database: 'test' };
  }

  /** `pg_ctl restart`; `mode` 'immediate' is a crash (recovery replays the WAL), 'fast' a clean shutdown. */
  async restart(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await this.#ctl('restart', mode);
  }

  async stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await this.#ctl('stop', mode);
  }

  async startAgain(): Promise<void> {
    await this.#ctl('start');
  }

  async dispose(): Promise<void> {
    await this.#ctl('stop', 'immediate').catch(() => {});
    rmSync(this.dir, { recursive: true, force: true });
  }

  async #ctl(action: 'start' | 'restart' | 'stop', mode?: 'fast' | 'immediate'): Promise<void> {
    const args = ['-D', this.#data, '-l', join(this.dir, 'log'), '-w', '-t', '60'];
    if (action !== 'stop') args.push('-o', `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=on`);
    if (mode) args.push('-m', mode);
    await this.#as('pg_ctl', [...args, action]);
  }

  async #as(bin: string, args: string[]): Promise<void> {
    await run('runuser', ['-u', 'postgres', '--', join(PG_BIN, bin), ...args], { timeout: 90_000 });
  }
}
