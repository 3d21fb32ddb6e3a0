/**
 * A throwaway Kafka "cluster" for tests: librdkafka's mock cluster, hosted by `kcat`
 * (`kcat -X test.mock.num.brokers=1 -b 127.0.0.1:1 -C -t <warmup>`). It speaks the Kafka
 * protocol on an ephemeral loopback port and keeps everything in memory.
 *
 * What the mock of librdkafka 2.0.2 (Debian's kcat 1.7.1) does NOT do, measured here:
 * - no CreateTopics (and no controller in its metadata): topics are auto-created on first
 *   metadata request with 4 partitions, so a requested partition count other than 4 cannot
 *   be honoured;
 * - a new (empty) consumer group completes its first join only after a fixed 3 000 ms; any
 *   later rebalance waits `session.timeout.ms − 1 000` ms (or the session timeout when it is
 *   ≤ 1 000 ms) before it elects a leader, whether or not every member has rejoined;
 * - a member whose JoinGroup waits longer than its session timeout is expired while waiting,
 *   so sessions must exceed 3 000 ms for a first join to succeed;
 * - offsets may not be committed while the group is "Joining" (a real broker accepts commits
 *   of the current generation during PreparingRebalance);
 * - a group whose last member left stays "Joining" for session − 1 000 ms: a member joining
 *   meanwhile waits for the rest of that time;
 * - a follower's SyncGroup that arrives after the leader's is answered INVALID_REQUEST (a real
 *   broker answers it with the assignment); a member that joined but did not sync stays in the
 *   group until its session expires;
 * - no persistence, no restart (the process dies with its data), no replication, no ACLs.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';

export interface MockCluster {
  /** `host:port` of the single mock broker. */
  readonly brokers: readonly string[];
  /** Kills kcat (and with it every topic, offset and group). Idempotent. */
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface MockClusterOptions {
  /** The kcat binary (default `kcat`). */
  readonly command?: string;
  /** How long to wait for the port, ms (default 10 000). */
  readonly startTimeoutMs?: number;
}

/** Whether `kcat` can be run here (the mock cluster's host). */
export function kcatAvailable(command = 'kcat'): boolean {
  const r = spawnSync(command, ['-V'], { stdio: 'ignore' });
  return r.status === 0;
}

/**
 * Starts one mock broker in a `kcat` child process and resolves with its address. The port is
 * read from librdkafka's "Mock cluster enabled … replaced with HOST:PORT" log line, falling
 * back to `ss -ltnp` filtered by the kcat pid.
 */
export async function startMockCluster(options: MockClusterOptions = {}): Promise<MockCluster> {
  const command = options.command ?? 'kcat';
  const child: ChildProcess = spawn(command, ['-X', 'test.mock.num.brokers=1', '-b', '127.0.0.1:1', '-C', '-q', '-t', `herald-warmup-${randomUUID().slice(0, 8)}`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  const address = await new Promise<string>((resolve, reject) => {
    const deadline = Date.now() + (options.startTimeoutMs ?? 10_000);
    let settled = false;
    const finish = (err: Error | undefined, value?: string): void => {
      if (settled) return;
      settled = true;
      clearInterval(poll);
      if (err) reject(err);
      else resolve(value!);
    };
    child.stderr!.on('data', (b: Buffer) => {
      stderr = (stderr + b.toString()).slice(-8000);
      const m = /replaced with ([0-9.]+:\d+)/.exec(stderr);
      if (m) finish(undefined, m[1]!);
    });
    child.once('error', (e) => finish(new Error(`cannot start ${command} for the Kafka mock cluster: ${e.message}`)));
    const poll = setInterval(() => {
      if (exited) return finish(new Error(`${command} exited before the mock cluster listened: ${stderr}`));
      const fromSs = listeningPortOf(child.pid);
      if (fromSs) return finish(undefined, `127.0.0.1:${fromSs}`);
      if (Date.now() > deadline) finish(new Error(`the Kafka mock cluster did not listen within the time limit: ${stderr}`));
    }, 100);
  }).catch((e: unknown) => {
    child.kill('SIGKILL');
    throw e;
  });
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= new Promise<void>((resolve) => {
      if (exited) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
    return stopping;
  };
  return { brokers: [address], stop, [Symbol.asyncDispose]: stop };
}

function listeningPortOf(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  const r = spawnSync('ss', ['-ltnpH'], { encoding: 'utf8' });
  if (r.status !== 0 || typeof r.stdout !== 'string') return undefined;
  for (const line of r.stdout.split('\n')) {
    if (!line.includes(`pid=${pid},`)) continue;
    const m = /127\.0\.0\.1:(\d+)/.exec(line);
    if (m) return Number(m[1]);
  }
  return undefined;
}
