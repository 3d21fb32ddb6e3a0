/**
 * Child processes for multi-process tests: a TypeScript module forked with tsx and an IPC
 * channel. The child reports `{ type: 'started' }` once ready; every message it sends is kept
 * in `messages`; `stopChild` asks it to close (`{ type: 'close' }`) and SIGKILLs it if it has
 * not exited in time. A test can SIGKILL or SIGSTOP `child` itself.
 */
import { type ChildProcess, fork } from 'node:child_process';

export interface ChildHandle {
  readonly name: string;
  readonly child: ChildProcess;
  /** Every IPC message received from the child, in order. */
  readonly messages: Array<Record<string, unknown>>;
}

export interface ForkChildOptions {
  /** A label for messages and errors. */
  readonly name: string;
  /** Added to the parent's environment. */
  readonly env?: Record<string, string>;
  /** How long to wait for `{ type: 'started' }` (default 20 000 ms). */
  readonly startTimeoutMs?: number;
}

/** Forks `modulePath` under tsx; resolves once the child sent `{ type: 'started' }`, rejects if it exits first or stays silent. */
export function forkChild(modulePath: string, options: ForkChildOptions): Promise<ChildHandle> {
  const { name } = options;
  const timeoutMs = options.startTimeoutMs ?? 20_000;
  const child = fork(modulePath, { env: { ...process.env, ...options.env }, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const handle: ChildHandle = { name, child, messages: [] };
  child.on('message', (msg) => handle.messages.push(msg as Record<string, unknown>));
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`child ${name} did not start within ${timeoutMs} ms`)), timeoutMs);
    child.on('message', (msg: { type?: string }) => {
      if (msg.type === 'started') {
        clearTimeout(t);
        resolve(handle);
      }
    });
    child.on('exit', (code, signal) => {
      clearTimeout(t);
      if (code !== 0 && signal === null) reject(new Error(`child ${name} exited with ${code}`));
    });
  });
}

/** Asks the child to close and waits for its exit; SIGKILL after `timeoutMs` (default 5000). Resolves at once if it has exited. */
export function stopChild(h: ChildHandle, timeoutMs = 5000): Promise<void> {
  if (h.child.exitCode !== null || h.child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => h.child.kill('SIGKILL'), timeoutMs);
    h.child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    h.child.send({ type: 'close' });
  });
}
