/**
 * Prometheus metrics from Herald's diagnostics channels (counters, histograms) and from the
 * stores and transports read at scrape time (lag, dead-letter depth, outbox backlog, sagas).
 * prom-client underneath; `serveMetrics` / `metricsHandler` expose `/metrics`.
 *
 * Label sets are bounded by what a service declares (topics, groups, handlers, event types,
 * partitions); no label carries an id.
 */
import {
  type DeadLetterMessage,
  type DeadLetterStatus,
  type DeadLetterStore,
  type DeliverMessage,
  channels,
  type HandleMessage,
  type LagSource,
  type OutboxStore,
  type PartitionLag,
  type PublishMessage,
  type RetryMessage,
  type AppendMessage,
} from '@herald/core';
import { Gauge, Registry } from 'prom-client';
import { FastCounter, FastHistogram } from './series.ts';

/** What the saga gauge reads (a `SagaStore` of @herald/eventsourcing has it). */
export interface SagaCountSource {
  countByStatus(): Promise<readonly { readonly saga: string; readonly status: string; readonly count: number }[]>;
}

export interface MetricsOptions {
  /** Registry to register in (default: a new one). */
  readonly registry?: Registry;
  /** Metric name prefix (default 'herald_'). */
  readonly prefix?: string;
  /** Transports (or anything) reporting consumer lag, read at each scrape. */
  readonly lagSources?: readonly LagSource[];
  /** Dead-letter stores whose depth (entries by group and status) is read at each scrape. */
  readonly deadLetters?: readonly { readonly store: DeadLetterStore; readonly groups: readonly string[] }[];
  /** Outbox stores (backlog and oldest age) read at each scrape, by name. */
  readonly outboxes?: Readonly<Record<string, OutboxStore>>;
  /** Saga stores whose instances by saga and status are read at each scrape. */
  readonly sagaStores?: readonly SagaCountSource[];
  /** Wall clock for ages, epoch ms (default Date.now). */
  readonly now?: () => number;
  /** Monotonic clock for durations, ms (default performance.now). */
  readonly monotonic?: () => number;
  /** Histogram buckets for handler duration, seconds. */
  readonly durationBuckets?: readonly number[];
}

export interface HeraldMetrics {
  readonly registry: Registry;
  /** The exposition text (what `/metrics` serves). */
  metrics(): Promise<string>;
  /** Unsubscribes from the channels (the registry keeps its metrics). Idempotent. */
  close(): void;
}

const START = Symbol('herald.metrics.start');
const DEAD_LETTER_STATUSES: readonly DeadLetterStatus[] = ['dead', 'parked', 'redrive'];

/** Subscribes metrics to the channels and registers the scrape-time gauges. */
export function createMetrics(options: MetricsOptions = {}): HeraldMetrics {
  const registry = options.registry ?? new Registry();
  const p = options.prefix ?? 'herald_';
  const now = options.now ?? Date.now;
  const mono = options.monotonic ?? (() => performance.now());
  const registers = [registry];
  const buckets = [...(options.durationBuckets ?? [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])];

  // Channel-driven series (updated on the per-message paths, see series.ts).
  const published = new FastCounter(`${p}published_total`, 'Messages published (confirmed by the transport), by topic and event type', registry, ['topic', 'type']);
  const publishFailed = new FastCounter(`${p}publish_failed_total`, 'Publish calls that failed, by topic', registry, ['topic']);
  const delivered = new FastCounter(`${p}delivered_total`, 'Deliveries received by a consumer group', registry, ['group', 'topic']);
  const handled = new FastCounter(`${p}handled_total`, 'Messages handled successfully', registry, ['group', 'topic', 'handler', 'type']);
  const failed = new FastCounter(`${p}handler_failed_total`, 'Handler attempts that failed', registry, ['group', 'topic', 'handler', 'type']);
  const retried = new FastCounter(`${p}retried_total`, 'Failed attempts scheduled for a retry', registry, ['group', 'topic', 'handler']);
  const deadLettered = new FastCounter(`${p}dead_lettered_total`, 'Messages stored as dead letters', registry, ['group', 'topic', 'handler']);
  const duration = new FastHistogram(`${p}handler_duration_seconds`, 'Handler attempt duration', registry, ['group', 'topic', 'handler', 'outcome'], buckets);
  const appendDuration = new FastHistogram(`${p}event_store_append_duration_seconds`, 'Event-store append latency (queue + group commit)', registry, ['store', 'outcome'], buckets);
  const appendSize = new FastHistogram(`${p}event_store_append_batch_size`, 'Events per append', registry, ['store'], [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]);
  const relayed = new FastCounter(`${p}outbox_relayed_total`, 'Outbox rows published by a relay', registry, ['topic']);

  // One lag read per scrape: the messages gauge (collected first) reads, the seconds gauge
  // takes that reading (or reads again when collected alone).
  let lagReading: Promise<PartitionLag[]> | undefined;
  const readLag = (): Promise<PartitionLag[]> => Promise.all((options.lagSources ?? []).map((s) => s.lag())).then((all) => all.flat());
  new Gauge({
    name: `${p}consumer_lag_messages`,
    help: 'Messages after the group’s committed position',
    labelNames: ['group', 'topic', 'partition'] as const,
    registers,
    async collect() {
      this.reset();
      lagReading = readLag();
      for (const l of await lagReading) this.set({ group: l.group, topic: l.topic, partition: String(l.partition) }, l.messages);
    },
  });
  new Gauge({
    name: `${p}consumer_lag_seconds`,
    help: 'Age of the oldest message after the group’s committed position (0 when none)',
    labelNames: ['group', 'topic', 'partition'] as const,
    registers,
    async collect() {
      this.reset();
      const reading = lagReading ?? readLag();
      lagReading = undefined;
      const t = now();
      for (const l of await reading) {
        this.set({ group: l.group, topic: l.topic, partition: String(l.partition) }, l.oldestUnhandledAt === undefined ? 0 : Math.max(0, (t - l.oldestUnhandledAt) / 1000));
      }
    },
  });
  if (options.deadLetters?.length) {
    new Gauge({
      name: `${p}dead_letters`,
      help: 'Entries in the dead-letter store, by group and status',
      labelNames: ['group', 'status'] as const,
      registers,
      async collect() {
        this.reset();
        for (const { store, groups } of options.deadLetters!) {
          for (const group of groups) {
            for (const status of DEAD_LETTER_STATUSES) this.set({ group, status }, await store.count({ group, status }));
          }
        }
      },
    });
  }
  if (options.outboxes && Object.keys(options.outboxes).length > 0) {
    const backlogs = async () => Promise.all(Object.entries(options.outboxes!).map(async ([name, store]) => ({ name, backlog: await store.backlog() })));
    new Gauge({
      name: `${p}outbox_backlog_messages`,
      help: 'Unsent outbox rows',
      labelNames: ['outbox'] as const,
      registers,
      async collect() {
        this.reset();
        for (const { name, backlog } of await backlogs()) this.set({ outbox: name }, backlog.count);
      },
    });
    new Gauge({
      name: `${p}outbox_oldest_age_seconds`,
      help: 'Age of the oldest unsent outbox row (0 when none)',
      labelNames: ['outbox'] as const,
      registers,
      async collect() {
        this.reset();
        const t = now();
        for (const { name, backlog } of await backlogs()) this.set({ outbox: name }, backlog.oldestCreatedAt === undefined ? 0 : Math.max(0, (t - backlog.oldestCreatedAt) / 1000));
      },
    });
  }
  if (options.sagaStores?.length) {
    const stores = options.sagaStores;
    new Gauge({
      name: `${p}saga_instances`,
      help: 'Saga instances by saga and status',
      labelNames: ['saga', 'status'] as const,
      registers,
      async collect() {
        this.reset();
        for (const store of stores) for (const s of await store.countByStatus()) this.inc({ saga: s.saga, status: s.status }, s.count);
      },
    });
  }

  // ── channel subscribers (inline on hot paths: small and never throwing) ──
  type Timed = { [START]?: number };
  const publishSub = {
    asyncEnd(m: PublishMessage) {
      if (m.operation !== 'send' || m.error !== undefined || !m.messages) return;
      for (const msg of m.messages) {
        const topic = m.topic ?? '';
        const type = msg.envelope.type;
        published.of(topic, type).value++;
      }
    },
    error(m: PublishMessage) {
      const topic = m.topic ?? '';
      publishFailed.of(topic).value++;
    },
  };
  const handleSub = {
    start(m: HandleMessage & Timed) {
      m[START] = mono();
    },
    asyncEnd(m: HandleMessage & Timed) {
      const ok = m.error === undefined;
      duration.observe(duration.of(m.group, m.topic, m.handler, ok ? 'ok' : 'error'), (mono() - (m[START] ?? mono())) / 1000);
      (ok ? handled : failed).of(m.group, m.topic, m.handler, m.envelope.type).value++;
    },
  };
  const appendSub = {
    start(m: AppendMessage & Timed) {
      m[START] = mono();
    },
    asyncEnd(m: AppendMessage & Timed) {
      appendDuration.observe(appendDuration.of(m.store, m.error === undefined ? 'ok' : 'error'), (mono() - (m[START] ?? mono())) / 1000);
      appendSize.observe(appendSize.of(m.store), m.count);
    },
  };
  const relaySub = {
    asyncEnd(m: { topic: string; messages: readonly unknown[]; error?: unknown }) {
      if (m.error === undefined) relayed.of(m.topic).value += m.messages.length;
    },
  };
  const onDeliver = (m: unknown) => {
    const d = m as DeliverMessage;
    delivered.of(d.group, d.delivery.topic).value++;
  };
  const onRetry = (m: unknown) => {
    const r = m as RetryMessage;
    retried.of(r.group, r.topic, r.handler).value++;
  };
  const onDeadLetter = (m: unknown) => {
    const r = m as DeadLetterMessage;
    deadLettered.of(r.group, r.topic, r.handler).value++;
  };
  channels.publish.subscribe(publishSub as never);
  channels.handle.subscribe(handleSub as never);
  channels.append.subscribe(appendSub as never);
  channels.relay.subscribe(relaySub as never);
  channels.deliver.subscribe(onDeliver);
  channels.retry.subscribe(onRetry);
  channels.deadLetter.subscribe(onDeadLetter);
  let closed = false;
  return {
    registry,
    metrics: () => registry.metrics(),
    close() {
      if (closed) return;
      closed = true;
      channels.publish.unsubscribe(publishSub as never);
      channels.handle.unsubscribe(handleSub as never);
      channels.append.unsubscribe(appendSub as never);
      channels.relay.unsubscribe(relaySub as never);
      channels.deliver.unsubscribe(onDeliver);
      channels.retry.unsubscribe(onRetry);
      channels.deadLetter.unsubscribe(onDeadLetter);
    },
  };
}
