/**
 * The process supervisor behind `herald start`: runs each service as its own OS process,
 * prefixes its output with the service name, restarts it after a crash with exponential
 * backoff, and stops or starts one service on request (the console's buttons).
 *
 * - A child runs in its own process group, so stopping it also stops anything it spawned.
 * - Crash = the child exited while it was meant to run (any exit code, or a signal the
 *   supervisor did not send). With `restart`, it is started again after
 *   `initialMs × 2^(n−1)` (n = crashes in a row, capped at `maxMs`); a run that lasted
 *   `resetAfterMs` or longer resets n. Without `restart` it stays `crashed`.
 * - A child that exits with code 0 on its own is `stopped` (it finished) and not restarted.
 * - `stopService` / `close` send SIGTERM to the group, wait up to `stopTimeoutMs`, then SIGKILL.
 *   They resolve once the child has exited. `close()` is idempotent; after it nothing restarts.
 * - If the supervisor's own process exits without `close()`, every child group still running
 *   gets SIGKILL from a synchronous exit hook: nothing is left orphaned.
 *
 * Times (uptime, backoff timers) go through the injected `Clock`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { ServiceInfo, ServiceState } from '@herald/console';
import { type Clock, HeraldError, systemClock, type TimerHandle } from '@herald/core';

export interface SupervisedService {
  readonly name: string;
  /** Executable (usually `process.execPath`). */
  readonly command: string;
  readonly args: readonly string[];
  readonly cwd?: string;
  /** The child's whole environment. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Restart after a crash (default true). */
  readonly restart?: boolean;
}

/** A service's state and figures: the console's `ServiceInfo` (the console draws what the supervisor reports). */
export type ServiceStatus = ServiceInfo;
export type { ServiceState };

export interface BackoffOptions {
  /** First restart delay, ms (default 500). */
  readonly initialMs?: number;
  /** Largest restart delay, ms (default 30 000). */
  readonly maxMs?: number;
  /** A run at least this long resets the backoff, ms (default 30 000). */
  readonly resetAfterMs?: number;
}

export interface SupervisorOptions {
  readonly clock?: Clock;
  readonly backoff?: BackoffOptions;
  /** How long a stopped child gets between SIGTERM and SIGKILL, ms (default 5000). */
  readonly stopTimeoutMs?: number;
  /** Each line a child writes; default: `[name] line` to this process's stdout / stderr. */
  readonly onOutput?: (service: string, stream: 'stdout' | 'stderr', line: string) => void;
  /** Lifecycle notes (started, crashed, restarting in N ms, stopped); default: to stderr. */
  readonly onNotice?: (service: string, message: string) => void;
}

interface Slot {
  readonly spec: SupervisedService;
  state: ServiceState;
  child: ChildProcess | null;
  startedAt: number;
  restarts: number;
  crashesInRow: number;
  lastExit: ServiceStatus['lastExit'];
  timer: TimerHandle | null;
  restartAt: number | null;
  /** Set while a stop was requested: the coming exit is expected. */
  stopping: boolean;
  exited: Promise<void> | null;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of live) killGroup(c, 'SIGKILL');
  });
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

export class Supervisor {
  readonly #slots = new Map<string, Slot>();
  readonly #clock: Clock;
  readonly #initialMs: number;
  readonly #maxMs: number;
  readonly #resetAfterMs: number;
  readonly #stopTimeoutMs: number;
  readonly #onOutput: NonNullable<SupervisorOptions['onOutput']>;
  readonly #onNotice: NonNullable<SupervisorOptions['onNotice']>;
  #closed: Promise<void> | null = null;

  constructor(services: readonly SupervisedService[], options: SupervisorOptions = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#initialMs = options.backoff?.initialMs ?? 500;
    this.#maxMs = options.backoff?.maxMs ?? 30_000;
    this.#resetAfterMs = options.backoff?.resetAfterMs ?? 30_000;
    this.#stopTimeoutMs = options.stopTimeoutMs ?? 5000;
    for (const [k, v] of Object.entries({ initialMs: this.#initialMs, maxMs: this.#maxMs, resetAfterMs: this.#resetAfterMs, stopTimeoutMs: this.#stopTimeoutMs })) {
      if (!Number.isFinite(v) || v < 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${k} must be a non-negative number of ms (got ${v})`);
    }
    const width = Math.max(0, ...services.map((s) => s.name.length));
    this.#onOutput =
      options.onOutput ??
      ((name, stream, line) => (stream === 'stdout' ? process.stdout : process.stderr).write(`${`[${name}]`.padEnd(width + 2)} ${line}\n`));
    this.#onNotice = options.onNotice ?? ((name, message) => process.stderr.write(`${`[${name}]`.padEnd(width + 2)} herald: ${message}\n`));
    for (const spec of services) {
      if (this.#slots.has(spec.name)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `service "${spec.name}" is listed twice`);
      this.#slots.set(spec.name, { spec, state: 'stopped', child: null, startedAt: 0, restarts: 0, crashesInRow: 0, lastExit: null, timer: null, restartAt: null, stopping: false, exited: null });
    }
    installExitHook();
  }

  /** Starts every service that is not running. */
  startAll(): void {
    for (const name of this.#slots.keys()) this.startService(name);
  }

  /** Starts one service (no-op when running; cancels a pending restart and starts now). Throws `HERALD_ERR_NOT_FOUND` for an unknown name. */
  startService(name: string): ServiceStatus {
    const slot = this.#slot(name);
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'the supervisor is shutting down');
    if (slot.state === 'running' || slot.state === 'stopping') return this.#status(slot);
    slot.timer?.cancel();
    slot.timer = null;
    slot.restartAt = null;
    slot.crashesInRow = slot.state === 'restarting' ? slot.crashesInRow : 0;
    this.#spawn(slot);
    return this.#status(slot);
  }

  /** Stops one service (SIGTERM, then SIGKILL after `stopTimeoutMs`); resolves when it has exited. It stays stopped until started. */
  async stopService(name: string): Promise<ServiceStatus> {
    const slot = this.#slot(name);
    await this.#stop(slot);
    return this.#status(slot);
  }

  status(): ServiceStatus[] {
    return [...this.#slots.values()].map((s) => this.#status(s));
  }

  /** Stops every service and cancels pending restarts. Idempotent; resolves when every child has exited. */
  close(): Promise<void> {
    this.#closed ??= Promise.all([...this.#slots.values()].map((s) => this.#stop(s))).then(() => undefined);
    return this.#closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #slot(name: string): Slot {
    const slot = this.#slots.get(name);
    if (!slot) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no service named "${name}" (known: ${[...this.#slots.keys()].join(', ') || 'none'})`);
    return slot;
  }

  #status(s: Slot): ServiceStatus {
    const now = this.#clock.monotonic();
    return {
      name: s.spec.name,
      state: s.state,
      pid: s.child?.pid ?? null,
      restarts: s.restarts,
      uptimeMs: s.state === 'running' || s.state === 'stopping' ? Math.round(now - s.startedAt) : 0,
      lastExit: s.lastExit,
      restartInMs: s.restartAt === null ? null : Math.max(0, Math.round(s.restartAt - now)),
    };
  }

  #spawn(slot: Slot): void {
    const { spec } = slot;
    const child = spawn(spec.command, [...spec.args], {
      cwd: spec.cwd,
      env: (spec.env ?? process.env) as NodeJS.ProcessEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    slot.child = child;
    slot.state = 'running';
    slot.stopping = false;
    slot.startedAt = this.#clock.monotonic();
    live.add(child);
    for (const stream of ['stdout', 'stderr'] as const) {
      const rl = createInterface({ input: child[stream]! });
      rl.on('line', (line) => this.#onOutput(spec.name, stream, line));
    }
    slot.exited = new Promise<void>((resolve) => {
      let done = false;
      const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (done) return;
        done = true;
        live.delete(child);
        killGroup(child, 'SIGKILL'); // whatever the child left running in its group

        this.#exited(slot, child, code, signal);
        resolve();
      };
      child.once('error', (e) => {
        this.#onNotice(spec.name, `could not start: ${e.message}`);
        finish(null, null);
      });
      child.once('exit', finish);
    });
  }

  #exited(slot: Slot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (slot.child !== child) return;
    slot.child = null;
    const ranMs = this.#clock.monotonic() - slot.startedAt;
    slot.lastExit = { code, signal, at: this.#clock.now() };
    if (slot.stopping || this.#closed) {
      slot.state = 'stopped';
      this.#onNotice(slot.spec.name, 'stopped');
      return;
    }
    if (code === 0) {
      slot.state = 'stopped';
      this.#onNotice(slot.spec.name, 'exited with code 0');
      return;
    }
    const how = signal ? `killed by ${signal}` : `exited with code ${code}`;
    if (slot.spec.restart === false) {
      slot.state = 'crashed';
      this.#onNotice(slot.spec.name, `crashed (${how}); not restarted (restart: false)`);
      return;
    }
    slot.crashesInRow = ranMs >= this.#resetAfterMs ? 1 : slot.crashesInRow + 1;
    const delay = Math.min(this.#maxMs, this.#initialMs * 2 ** (slot.crashesInRow - 1));
    slot.state = 'restarting';
    slot.restartAt = this.#clock.monotonic() + delay;
    this.#onNotice(slot.spec.name, `crashed (${how}); restarting in ${delay} ms`);
    slot.timer = this.#clock.setTimer(() => {
      slot.timer = null;
      slot.restartAt = null;
      if (slot.state !== 'restarting' || this.#closed) return;
      slot.restarts++;
      this.#spawn(slot);
    }, delay);
  }

  async #stop(slot: Slot): Promise<void> {
    slot.timer?.cancel();
    slot.timer = null;
    slot.restartAt = null;
    const child = slot.child;
    if (!child) {
      if (slot.state === 'restarting') slot.state = 'stopped';
      return;
    }
    if (!slot.stopping) {
      slot.stopping = true;
      slot.state = 'stopping';
      killGroup(child, 'SIGTERM');
    }
    const exited = slot.exited!;
    let timer: TimerHandle | undefined;
    const timedOut = await Promise.race([
      exited.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = this.#clock.setTimer(() => resolve(true), this.#stopTimeoutMs);
      }),
    ]);
    timer?.cancel();
    if (timedOut) {
      this.#onNotice(slot.spec.name, `did not stop within ${this.#stopTimeoutMs} ms: SIGKILL`);
      killGroup(child, 'SIGKILL');
      await exited;
    }
  }
}
