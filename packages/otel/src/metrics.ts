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
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

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

  const published = new Counter({ name: `${p}published_total`, help: 'Messages published (confirmed by the transport), by topic and event type', labelNames: ['topic', 'type'] as const, registers });
  const publishFailed = new Counter({ name: `${p}publish_failed_total`, help: 'Publish calls that failed, by topic', labelNames: ['topic'] as const, registers });
  const delivered = new Counter({ name: `${p}delivered_total`, help: 'Deliveries received by a consumer group', labelNames: ['group', 'topic'] as const, registers });
  const handled = new Counter({ name: `${p}handled_total`, help: 'Messages handled successfully', labelNames: ['group', 'topic', 'handler', 'type'] as const, registers });
  const failed = new Counter({ name: `${p}handler_failed_total`, help: 'Handler attempts that failed', labelNames: ['group', 'topic', 'handler', 'type'] as const, registers });
  const retried = new Counter({ name: `${p}retried_total`, help: 'Failed attempts scheduled for a retry', labelNames: ['group', 'topic', 'handler'] as const, registers });
  const deadLettered = new Counter({ name: `${p}dead_lettered_total`, help: 'Messages stored as dead letters', labelNames: ['group', 'topic', 'handler'] as const, registers });
  const duration = new Histogram({ name: `${p}handler_duration_seconds`, help: 'Handler attempt duration', labelNames: ['group', 'topic', 'handler', 'outcome'] as const, buckets, registers });
  const appendDuration = new Histogram({ name: `${p}event_store_append_duration_seconds`, help: 'Event-store append latency (queue + group commit)', labelNames: ['store', 'outcome'] as const, buckets, registers });
  const appendSize = new Histogram({ name: `${p}event_store_append_batch_size`, help: 'Events per append', labelNames: ['store'] as const, buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000], registers });
  const relayed = new Counter({ name: `${p}outbox_relayed_total`, help: 'Outbox rows published by a relay', labelNames: ['topic'] as const, registers });

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
  // Labelled children cached per (group, topic, handler[, type]): prom-client hashes a label
  // object on every call otherwise, which is most of the per-message cost.
  interface HandleSeries {
    ok: { observe(v: number): void };
    error: { observe(v: number): void };
    handled: Map<string, { inc(): void }>;
    failed: Map<string, { inc(): void }>;
  }
  const handleSeries = new Map<string, HandleSeries>();
  const seriesFor = (m: HandleMessage): HandleSeries => {
    const key = `${m.group}\u0000${m.topic}\u0000${m.handler}`;
    let s = handleSeries.get(key);
    if (!s) {
      s = {
        ok: duration.labels(m.group, m.topic, m.handler, 'ok'),
        error: duration.labels(m.group, m.topic, m.handler, 'error'),
        handled: new Map(),
        failed: new Map(),
      };
      handleSeries.set(key, s);
    }
    return s;
  };
  const countOf = (map: Map<string, { inc(): void }>, counter: typeof handled, m: HandleMessage): { inc(): void } => {
    let c = map.get(m.envelope.type);
    if (!c) map.set(m.envelope.type, (c = counter.labels(m.group, m.topic, m.handler, m.envelope.type)));
    return c;
  };
  const deliveredSeries = new Map<string, { inc(): void }>();
  const publishSub = {
    asyncEnd(m: PublishMessage) {
      if (m.operation !== 'send' || m.error !== undefined || !m.messages) return;
      for (const msg of m.messages) published.inc({ topic: m.topic ?? '', type: msg.envelope.type });
    },
    error(m: PublishMessage) {
      publishFailed.inc({ topic: m.topic ?? '' });
    },
  };
  const handleSub = {
    start(m: HandleMessage & Timed) {
      m[START] = mono();
    },
    asyncEnd(m: HandleMessage & Timed) {
      const ok = m.error === undefined;
      const s = seriesFor(m);
      (ok ? s.ok : s.error).observe((mono() - (m[START] ?? mono())) / 1000);
      (ok ? countOf(s.handled, handled, m) : countOf(s.failed, failed, m)).inc();
    },
  };
  const appendSub = {
    start(m: AppendMessage & Timed) {
      m[START] = mono();
    },
    asyncEnd(m: AppendMessage & Timed) {
      appendDuration.observe({ store: m.store, outcome: m.error === undefined ? 'ok' : 'error' }, (mono() - (m[START] ?? mono())) / 1000);
      appendSize.observe({ store: m.store }, m.count);
    },
  };
  const relaySub = {
    asyncEnd(m: { topic: string; messages: readonly unknown[]; error?: unknown }) {
      if (m.error === undefined) relayed.inc({ topic: m.topic }, m.messages.length);
    },
  };
  const onDeliver = (m: unknown) => {
    const d = m as DeliverMessage;
    const key = `${d.group}\u0000${d.delivery.topic}`;
    let c = deliveredSeries.get(key);
    if (!c) deliveredSeries.set(key, (c = delivered.labels(d.group, d.delivery.topic)));
    c.inc();
  };
  const onRetry = (m: unknown) => {
    const r = m as RetryMessage;
    retried.inc({ group: r.group, topic: r.topic, handler: r.handler });
  };
  const onDeadLetter = (m: unknown) => {
    const r = m as DeadLetterMessage;
    deadLettered.inc({ group: r.group, topic: r.topic, handler: r.handler });
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
