/**
 * Integration suites and the servers they need. A suite whose server is absent skips with a
 * message naming it on a laptop, and fails in CI: with `CI=true` or `HERALD_REQUIRE_SERVERS=1`
 * absence is an error.
 *
 *   const skip = await serverSkipReason('NATS JetStream', 4222);
 *   describe('nats', { skip }, () => { … });
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const serversRequired = process.env.CI === 'true' || process.env.HERALD_REQUIRE_SERVERS === '1';

/** Whether something accepts TCP connections on host:port within `timeoutMs`. */
export function isListening(port: number, host = '127.0.0.1', timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.connect(port, host, () => done(true));
  });
}

/**
 * Undefined when the server is up; otherwise a skip reason naming it — or, when servers are
 * required (CI), an Error thrown so the suite fails instead of skipping.
 */
export async function serverSkipReason(name: string, port: number, host = '127.0.0.1'): Promise<string | undefined> {
  if (await isListening(port, host)) return undefined;
  const reason = `${name} is not reachable on ${host}:${port}; start it to run this suite`;
  if (serversRequired) throw new Error(`${reason} (servers are required here: CI or HERALD_REQUIRE_SERVERS=1)`);
  console.warn(`# skipping: ${reason}`);
  return reason;
}

/** A free TCP port on loopback (asks the OS for one). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

export interface PrivateServerOptions {
  /** Shown in errors. */
  readonly name: string;
  readonly command: string;
  /** Arguments given the port and the private data folder. */
  readonly args: (port: number, dir: string) => string[];
  /** How long start and restart may take, ms (default 15 000). */
  readonly startTimeoutMs?: number;
}

/**
 * A throwaway server on its own port and data folder (nats-server, redis-server…), for restart
 * and reconnect tests that must not disturb the shared servers other suites use.
 */
export class PrivateServer {
  readonly port: number;
  readonly dir: string;
  #child: ChildProcess | undefined;
  readonly #o: PrivateServerOptions;

  private constructor(o: PrivateServerOptions, port: number, dir: string) {
    this.#o = o;
    this.port = port;
    this.dir = dir;
  }

  static async start(o: PrivateServerOptions): Promise<PrivateServer> {
    const s = new PrivateServer(o, await freePort(), mkdtempSync(join(tmpdir(), `herald-${o.name.replace(/\W+/g, '-')}-`)));
    await s.#spawn();
    return s;
  }

  /** Stops the process (SIGTERM, then SIGKILL after 5 s) and waits for it to exit. Keeps the data folder. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      child.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      child.kill(signal);
    });
  }

  /** Stops and starts again on the same port and folder. */
  async restart(): Promise<void> {
    await this.stop();
    await this.#spawn();
  }

  /** Stops the server and deletes its folder. */
  async dispose(): Promise<void> {
    await this.stop('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }

  async #spawn(): Promise<void> {
    const child = spawn(this.#o.command, this.#o.args(this.port, this.dir), { stdio: ['ignore', 'ignore', 'pipe'] });
    this.#child = child;
    let stderr = '';
    child.stderr?.on('data', (b: Buffer) => {
      stderr = (stderr + b.toString()).slice(-4000);
    });
    const end = Date.now() + (this.#o.startTimeoutMs ?? 15_000);
    while (!(await isListening(this.port, '127.0.0.1', 200))) {
      if (child.exitCode !== null) throw new Error(`${this.#o.name} exited with ${child.exitCode} on start: ${stderr}`);
      if (Date.now() > end) {
        child.kill('SIGKILL');
        throw new Error(`${this.#o.name} did not listen on ${this.port} in time: ${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
