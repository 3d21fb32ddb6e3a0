/**
 * The broker sections of `npm run bench` and the event-store section: each package's own
 * benchmark module (`packages/<name>/src/<name>.bench.ts`, `runBench({ messages, log, … })`),
 * which measures Herald and the raw client side by side in the same run. This file only checks
 * that the server answers, calls the module with the sizes of this run, and turns its rows into
 * the table's rows (a section prefix on the case, the peer row resolved, the row's kind for the
 * goals). It measures nothing itself.
 *
 * A section whose server is not listening is skipped with a message (`isListening` from
 * @herald/testkit); a section whose module throws is reported as failed and the run goes on.
 */
import { isListening } from '@herald/testkit';
import type { Row, Section } from './common.ts';

/**
 * Imports a module of packages/ by path at run time, only when its section runs (the bench
 * modules are not in the packages' `exports`). Not a static import: TypeScript refuses a `.ts`
 * specifier that crosses into another project (TS2878), even type-only; the types come from
 * `typeof import('…/x.bench.js')`, which resolves to the same source and is erased.
 */
function load<T>(path: string): Promise<T> {
  return import(new URL(`../../packages/${path}`, import.meta.url).href) as Promise<T>;
}

/** The row shape every package's `runBench` returns. */
interface ModuleRow {
  case: string;
  messages: number;
  rate: number;
  p50?: number;
  p99?: number;
  peer?: string;
  ratio?: number;
}

export interface TransportConfig {
  readonly nats: number;
  readonly redis: number;
  readonly rabbitmq: number;
  readonly kafka: number;
  readonly mqtt: number;
  readonly events: number;
  /** Messages per outbox/inbox row (BENCH_OUTBOX_MESSAGES). */
  readonly outbox: number;
  /** Events per PostgreSQL event-store row (BENCH_PG_EVENTS). */
  readonly pgEvents: number;
  /** Messages per PostgreSQL transport / pg-boss row (BENCH_PG_MESSAGES). */
  readonly pgMessages: number;
  readonly runs: number;
  readonly rate: number;
  readonly latencySeconds: number;
}

export type SectionResult = { readonly rows: Row[]; readonly note?: string } | { readonly skipped: string };

type BrokerSection = Exclude<Section, 'memory' | 'sqlite' | 'observability'>;

export const SECTION_TITLES: Record<Section, string> = {
  memory: 'memory transport',
  sqlite: 'SQLite transport',
  nats: 'NATS JetStream',
  redis: 'Redis Streams + BullMQ',
  rabbitmq: 'RabbitMQ',
  kafka: 'Kafka',
  mqtt: 'MQTT bridge',
  'event-store': 'event store (SQLite)',
  outbox: 'outbox, relay and inbox (SQLite)',
  postgres: 'PostgreSQL: event store and transport beside raw pg, Emmett and pg-boss',
  observability: 'observability: SQLite e2e with no subscriber, metrics, tracing 1 % and 100 %',
};

/** host and port of the first entry of a server list such as `nats://a:4222,b:4222` or `127.0.0.1:4222`. */
function endpoint(spec: string, defaultPort: number): { host: string; port: number } {
  const first = spec.split(',')[0]!.trim();
  const url = new URL(first.includes('://') ? first : `tcp://${first}`);
  return { host: url.hostname || '127.0.0.1', port: Number(url.port || defaultPort) };
}

async function reachable(name: string, where: { host: string; port: number }): Promise<string | undefined> {
  if (await isListening(where.port, where.host, 1000)) return undefined;
  return `${name} is not reachable on ${where.host}:${where.port}; start it to measure this section`;
}

/**
 * Module rows → table rows; `prefix` goes before cases that do not name their section already
 * (undefined: the module's names are kept). The raw row a Herald row is compared with is the row whose case is
 * its `peer` (Redis, RabbitMQ, MQTT, event store) or, where `peer` names the client rather than
 * a row (NATS, Kafka: 'raw @nats-io/jetstream', 'raw kafkajs'), the row just before it, which
 * those modules always push first.
 */
function adapt(section: BrokerSection, prefix: string | undefined, rows: readonly ModuleRow[], kindOf: (r: ModuleRow) => Row['kind'], judged: boolean): Row[] {
  const named = (r: ModuleRow): string => (prefix === undefined ? r.case : `${prefix} ${r.case}`);
  return rows.map((r, i) => {
    let peer: ModuleRow | undefined;
    if (r.peer !== undefined) {
      peer = rows.find((p) => p.case === r.peer);
      if (!peer && i > 0 && rows[i - 1]!.peer === undefined) peer = rows[i - 1];
    }
    const out: Row = {
      suite: section,
      case: named(r),
      messages: r.messages,
      rate: r.rate,
      ...(r.p50 !== undefined ? { p50Ms: r.p50 } : {}),
      ...(r.p99 !== undefined ? { p99Ms: r.p99 } : {}),
      ...(peer ? { ratioVs: named(peer), ratio: r.ratio ?? r.rate / peer.rate } : {}),
      kind: kindOf(r),
      judged,
    };
    return out;
  });
}

/** Open-loop rows of the broker modules are the ones with percentiles. */
const byPercentiles = (r: ModuleRow): Row['kind'] => (r.p99 !== undefined ? 'latency' : 'throughput');

export async function runSection(section: BrokerSection, c: TransportConfig, log: (line: string) => void): Promise<SectionResult> {
  switch (section) {
    case 'nats': {
      const skip = await reachable('NATS', endpoint(process.env.NATS_URL ?? '127.0.0.1:4222', 4222));
      if (skip) return { skipped: skip };
      const m = await load<typeof import('../../packages/nats/src/nats.bench.js')>('nats/src/nats.bench.ts');
      return { rows: adapt(section, 'nats', await m.runBench({ messages: c.nats, log }), byPercentiles, true), note: 'NATS: one run per row; open-loop rows fixed at 5,000 msg/s by the module' };
    }
    case 'redis': {
      const port = Number(process.env.HERALD_REDIS_PORT ?? 6379);
      const skip = await reachable('Redis', { host: '127.0.0.1', port });
      if (skip) return { skipped: skip };
      const m = await load<typeof import('../../packages/redis/src/redis.bench.js')>('redis/src/redis.bench.ts');
      const rows = await m.runBench({ messages: c.redis, log, port, rate: c.rate, latencySeconds: c.latencySeconds, runs: c.runs });
      return { rows: adapt(section, undefined, rows, byPercentiles, true), note: `Redis: throughput rows median of ${c.runs} interleaved runs; BullMQ and latency rows one run` };
    }
    case 'rabbitmq': {
      const url = process.env.HERALD_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
      const skip = await reachable('RabbitMQ', endpoint(url, 5672));
      if (skip) return { skipped: skip };
      const m = await load<typeof import('../../packages/rabbitmq/src/rabbitmq.bench.js')>('rabbitmq/src/rabbitmq.bench.ts');
      const rows = await m.runBench({ messages: c.rabbitmq, log, rate: c.rate, runs: c.runs, url });
      return { rows: adapt(section, undefined, rows, byPercentiles, true), note: `RabbitMQ: every row median of ${c.runs} runs, Herald and raw interleaved` };
    }
    case 'kafka': {
      const brokers = process.env.KAFKA_BROKERS;
      if (brokers) {
        const skip = await reachable('Kafka (KAFKA_BROKERS)', endpoint(brokers, 9092));
        if (skip) return { skipped: skip };
      } else {
        const { kcatAvailable } = await load<typeof import('../../packages/kafka/src/mock-cluster.js')>('kafka/src/mock-cluster.ts');
        if (!kcatAvailable()) return { skipped: 'Kafka: KAFKA_BROKERS is unset and kcat (host of the librdkafka mock cluster) is not installed' };
      }
      const m = await load<typeof import('../../packages/kafka/src/kafka.bench.js')>('kafka/src/kafka.bench.ts');
      // On the librdkafka mock the rows are reported, not judged: it is an in-memory test double
      // in one kcat process, not a broker whose figures mean anything for production.
      const prefix = brokers ? 'kafka' : 'kafka (mock)';
      return {
        rows: adapt(section, prefix, await m.runBench({ messages: c.kafka, log }), byPercentiles, Boolean(brokers)),
        note: brokers ? `Kafka: KAFKA_BROKERS ${brokers}; one run per row` : 'Kafka: librdkafka mock cluster (kcat), 4 partitions; one run per row; reported, not judged',
      };
    }
    case 'mqtt': {
      const url = process.env.HERALD_MQTT_URL ?? 'mqtt://127.0.0.1:1883';
      const skip = await reachable('MQTT broker', endpoint(url, 1883));
      if (skip) return { skipped: skip };
      const m = await load<typeof import('../../packages/mqtt/src/mqtt.bench.js')>('mqtt/src/mqtt.bench.ts');
      // Closed loop (a device bounded by 16 unacknowledged publishes and 500 ahead of the sink):
      // the latencies include that queueing, so no row is an open-loop latency row.
      return { rows: adapt(section, undefined, await m.runBench({ messages: c.mqtt, log }), () => 'throughput', true), note: 'MQTT: one run per row; closed loop, so p50/p99 include the device’s own queueing' };
    }
    case 'event-store': {
      const m = await load<typeof import('../../packages/sqlite/src/event-store.bench.js')>('sqlite/src/event-store.bench.ts');
      return { rows: adapt(section, 'event store:', await m.runBench({ events: c.events, log }), () => 'throughput', true), note: 'event store: one run per row; rates are events/s' };
    }
    case 'postgres': {
      const port = Number(process.env.HERALD_PG_PORT ?? 5432);
      const skip = await reachable('PostgreSQL', { host: '127.0.0.1', port });
      if (skip) return { skipped: skip };
      const m = await load<typeof import('../../packages/postgres/src/postgres.bench.js')>('postgres/src/postgres.bench.ts');
      const rows = await m.runBench({ events: c.pgEvents, messages: c.pgMessages, log });
      return { rows: adapt(section, 'pg:', rows, () => 'throughput', true), note: 'PostgreSQL: one run per row, all rows in one run on the shared server; rates are events/s or messages/s' };
    }
    case 'outbox': {
      const m = await load<typeof import('../../packages/sqlite/src/outbox.bench.js')>('sqlite/src/outbox.bench.ts');
      const rows = await m.runBench({ messages: c.outbox, log, runs: c.runs });
      const o = m.inboxOverheadMicros(rows);
      const overhead = o ? `; inbox overhead ${o.inbox.toFixed(1)} µs/message (transaction + inbox ${o.transactionAndInbox.toFixed(1)} µs/message)` : '';
      return { rows: adapt(section, 'outbox:', rows, () => 'throughput', true), note: `outbox: median of ${c.runs} interleaved runs per row${overhead}; ${m.cpuSummary(rows)}` };
    }
  }
}
