/**
 * Prometheus metrics from Herald's diagnostics channels (counters, histograms) and from the
 * stores and transports read at scrape time (lag, dead-letter depth, outbox backlog, sagas).
 * prom-client underneath; `serveMetrics` / `metricsHandler` expose `/metrics`.
 *
 * Label sets are bounded by what a service declares (topics, groups, handlers, event types,
 * partitions); no label carries an id.
 */
import { Gauge, Registry } from 'prom-client';
import {
  ageSeconds,
  BATCH_SIZE_BUCKETS,
  type ChannelSink,
  DURATION_BUCKETS,
  type MetricSources,
  readDeadLetters,
  readLag,
  readOutboxes,
  subscribeChannels,
} from './channel-metrics.ts';
import type { PartitionLag } from '@herald/core';
import { FastCounter, FastHistogram } from './series.ts';

export type { SagaCountSource } from './channel-metrics.ts';

export interface MetricsOptions extends MetricSources {
  /** Registry to register in (default: a new one). */
  readonly registry?: Registry;
  /** Metric name prefix (default 'herald_'). */
  readonly prefix?: string;
}

export interface HeraldMetrics {
  readonly registry: Registry;
  /** The exposition text (what `/metrics` serves). */
  metrics(): Promise<string>;
  /** Unsubscribes from the channels (the registry keeps its metrics). Idempotent. */
  close(): void;
}

/** Subscribes metrics to the channels and registers the scrape-time gauges. */
export function createMetrics(options: MetricsOptions = {}): HeraldMetrics {
  const registry = options.registry ?? new Registry();
  const p = options.prefix ?? 'herald_';
  const now = options.now ?? Date.now;
  const registers = [registry];
  const buckets = [...(options.durationBuckets ?? DURATION_BUCKETS)];

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
  const appendSize = new FastHistogram(`${p}event_store_append_batch_size`, 'Events per append', registry, ['store'], BATCH_SIZE_BUCKETS);
  const relayed = new FastCounter(`${p}outbox_relayed_total`, 'Outbox rows published by a relay', registry, ['topic']);

  // One lag read per scrape: the messages gauge (collected first) reads, the seconds gauge
  // takes that reading (or reads again when collected alone).
  let lagReading: Promise<PartitionLag[]> | undefined;
  const readAll = (): Promise<PartitionLag[]> => readLag(options.lagSources);
  new Gauge({
    name: `${p}consumer_lag_messages`,
    help: 'Messages after the group’s committed position',
    labelNames: ['group', 'topic', 'partition'] as const,
    registers,
    async collect() {
      this.reset();
      lagReading = readAll();
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
      const reading = lagReading ?? readAll();
      lagReading = undefined;
      const t = now();
      for (const l of await reading) {
        this.set({ group: l.group, topic: l.topic, partition: String(l.partition) }, ageSeconds(l.oldestUnhandledAt, t));
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
        for (const { group, status, count } of await readDeadLetters(options.deadLetters)) this.set({ group, status }, count);
      },
    });
  }
  if (options.outboxes && Object.keys(options.outboxes).length > 0) {
    const backlogs = () => readOutboxes(options.outboxes, now());
    new Gauge({
      name: `${p}outbox_backlog_messages`,
      help: 'Unsent outbox rows',
      labelNames: ['outbox'] as const,
      registers,
      async collect() {
        this.reset();
        for (const { name, count } of await backlogs()) this.set({ outbox: name }, count);
      },
    });
    new Gauge({
      name: `${p}outbox_oldest_age_seconds`,
      help: 'Age of the oldest unsent outbox row (0 when none)',
      labelNames: ['outbox'] as const,
      registers,
      async collect() {
        this.reset();
        for (const { name, oldestSeconds } of await backlogs()) this.set({ outbox: name }, oldestSeconds);
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

  // ── the channel events (inline on hot paths: small and never throwing) ──
  const sink: ChannelSink = {
    sent(topic, type) {
      published.of(topic, type).value++;
    },
    publishFailed(topic) {
      publishFailed.of(topic).value++;
    },
    delivered(group, topic) {
      delivered.of(group, topic).value++;
    },
    handled(group, topic, handler, type, seconds, error) {
      const ok = error === undefined;
      duration.observe(duration.of(group, topic, handler, ok ? 'ok' : 'error'), seconds);
      (ok ? handled : failed).of(group, topic, handler, type).value++;
    },
    retried(group, topic, handler) {
      retried.of(group, topic, handler).value++;
    },
    deadLettered(group, topic, handler) {
      deadLettered.of(group, topic, handler).value++;
    },
    appended(store, seconds, count, error) {
      appendDuration.observe(appendDuration.of(store, error === undefined ? 'ok' : 'error'), seconds);
      appendSize.observe(appendSize.of(store), count);
    },
    relayed(topic, count) {
      relayed.of(topic).value += count;
    },
  };
  const unsubscribe = subscribeChannels(sink, options.monotonic);
  return {
    registry,
    metrics: () => registry.metrics(),
    close: unsubscribe,
  };
}
