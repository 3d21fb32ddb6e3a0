/**
 * The consumer process of the SQLite end-to-end rows. Started by scripts/bench/sqlite.ts as
 * `node --import tsx scripts/bench/sqlite-consumer.ts` on the same database file, with its
 * `WorkerConfig` as JSON in BENCH_WORKER_CONFIG; reports to the parent over the IPC channel:
 *
 *   child → parent  { kind: 'ready' }                 subscribed, every partition owned
 *   child → parent  { kind: 'warm' }                  the warm-up messages are handled
 *   child → parent  { kind: 'done', ...WorkerResult } the measured messages are handled and acked
 *
 * Latency mode: each payload carries its intended send time (`t`, epoch µs); the handler takes
 * `performance.timeOrigin + performance.now()` (the same machine clock as the parent) and
 * records the difference.
 */
import { createConsumer } from '@herald/core';
import { createSqliteTransport, SqliteDeadLetterStore } from '@herald/sqlite';
import { epochMicros, EVENT_TYPE, ItemEvent, percentile, type Item } from './common.ts';
import type { ObserveMode } from './observability.ts';

export interface WorkerConfig {
  readonly path: string;
  readonly topic: string;
  readonly group: string;
  readonly partitions: number;
  readonly warmup: number;
  readonly expected: number;
  readonly validate: boolean;
  readonly latency: boolean;
  /** Override of the transport's cross-process poll period, ms; absent: the transport default. */
  readonly pollMs?: number;
  /** Observability rows: what to subscribe to Herald's channels in this process (scripts/bench/observability.ts). */
  readonly observe?: ObserveMode;
}

export interface WorkerResult {
  /** Epoch µs right after the last measured message was acked. */
  readonly endUs: number;
  readonly handled: number;
  readonly deadLettered: number;
  /** Errors the router reported through onError. */
  readonly errors: number;
  /** Latency mode: µs from each message's intended send time to its handler. */
  readonly p50Us?: number;
  readonly p99Us?: number;
  readonly maxUs?: number;
  /** CPU time (user + system) of this process from the warm-up's end to the last message, µs. */
  readonly cpuUs?: number;
}

function send(message: unknown): void {
  process.send!(message);
}

const parsed = JSON.parse(process.env.BENCH_WORKER_CONFIG ?? 'null') as WorkerConfig | null;
if (!parsed || !process.send) throw new Error('scripts/bench/sqlite-consumer.ts is started by scripts/bench/sqlite.ts (needs BENCH_WORKER_CONFIG and an IPC channel)');
const config: WorkerConfig = parsed;

const transport = createSqliteTransport({ path: config.path, synchronous: 'NORMAL', ...(config.pollMs !== undefined ? { pollMs: config.pollMs } : {}) });
const deadLetters = new SqliteDeadLetterStore({ database: transport.database });
// Keep the process alive until the measured messages are handled, whatever the transport's
// timers do (its poll and lease timers were unref'd when this was written; the IPC channel
// does not hold the process either).
const keepAlive = setInterval(() => {}, 1000);
let errors = 0;
const consumer = createConsumer({
  transport,
  group: config.group,
  deadLetters,
  validate: config.validate,
  onError: (e) => {
    if (errors++ < 5) process.stderr.write(`bench consumer: ${(e as Error).message}\n`);
  },
});

const total = config.warmup + config.expected;
const latencies = config.latency ? new Float64Array(config.expected) : undefined;
let count = 0;
let warmSent = config.warmup === 0;
let cpuAtWarm = process.cpuUsage();
let finish!: (endUs: number) => void;
const finished = new Promise<number>((r) => (finish = r));

function onMessage(t: number): void {
  const now = latencies ? epochMicros() : 0;
  const i = count++;
  if (latencies && i >= config.warmup) latencies[i - config.warmup] = now - t;
  if (!warmSent && count === config.warmup) {
    warmSent = true;
    cpuAtWarm = process.cpuUsage();
    send({ kind: 'warm' });
  }
  // setImmediate runs after the router's synchronous ack of this delivery.
  if (count === total) setImmediate(() => finish(epochMicros()));
}

if (config.validate) consumer.handle(ItemEvent, (data: Item) => onMessage(data.t), { topic: config.topic });
else consumer.handleEnvelope(config.topic, EVENT_TYPE, (e) => onMessage((e.data as Item).t));
const unobserve = config.observe === undefined ? undefined : await (await import('./observability.ts')).observe(config.observe, transport);
await consumer.start();
while (consumer.assignment(config.topic).length < config.partitions) await new Promise((r) => setTimeout(r, 5));
send({ kind: 'ready' });

const endUs = await finished;
clearInterval(keepAlive);
const stats = consumer.stats();
const cpu = process.cpuUsage(cpuAtWarm);
let result: WorkerResult = { endUs, handled: stats.handled - config.warmup, deadLettered: stats.deadLettered, errors, cpuUs: cpu.user + cpu.system };
if (latencies) {
  latencies.sort();
  result = { ...result, p50Us: percentile(latencies, 0.5), p99Us: percentile(latencies, 0.99), maxUs: latencies[latencies.length - 1]! };
}
send({ kind: 'done', ...result });
await unobserve?.();
await consumer.close();
await deadLetters.close();
await transport.close();
process.disconnect();
