/**
 * OpenTelemetry metrics from Herald's diagnostics channels: the same series as the Prometheus
 * path (metrics.ts), with the same meaning, through the OpenTelemetry Metrics API, named after
 * the messaging semantic conventions where they have a name (`messaging.client.sent.messages`,
 * `messaging.client.consumed.messages`, `messaging.process.duration`) and `herald.*` for the rest.
 *
 * Hot-path cost. Counters are observable counters backed by plain numbers: a channel event
 * does one Map lookup per label and `value++` (series.ts's `SeriesTree`); the SDK sees the
 * totals only at collection. Histograms (`messaging.process.duration`, event-store appends)
 * are synchronous and record with an attributes object built once per label set, never per
 * message. Gauges are read from the stores at collection: one lag read feeds both lag gauges.
 *
 * Attribute sets are bounded by what a service declares (topics, groups, handlers, event
 * types, partitions, error codes or classes); no attribute carries an id.
 */
import { type Attributes, type BatchObservableCallback, type Meter, type MeterProvider, metrics, type Observable } from '@opentelemetry/api';
import {
  ageSeconds,
  BATCH_SIZE_BUCKETS,
  type ChannelSink,
  DURATION_BUCKETS,
  errorType,
  type MetricSources,
  readDeadLetters,
  readLag,
  readOutboxes,
  subscribeChannels,
} from './channel-metrics.ts';
import { SeriesTree } from './series.ts';

export interface OtelMetricsOptions extends MetricSources {
  /**
   * Where the instruments are created (default: the global one of @opentelemetry/api, read
   * now: the API has no proxy meter, so register the global provider before calling this).
   */
  readonly meterProvider?: MeterProvider;
  /** `messaging.system` on the messaging metrics (default 'herald', as on spans). */
  readonly system?: string;
}

export interface OtelMetrics {
  /**
   * Unsubscribes from the channels and removes the collection callbacks: the next collection
   * reports none of Herald's series. The meter provider stays the caller's. Idempotent.
   */
  close(): void;
}

/** The metric names (instrument names) this module creates. */
export const OTEL_METRIC = {
  sent: 'messaging.client.sent.messages',
  consumed: 'messaging.client.consumed.messages',
  processDuration: 'messaging.process.duration',
  handlerFailures: 'herald.handler.failures',
  retries: 'herald.handler.retries',
  deadLettered: 'herald.dead_letter.messages',
  relayed: 'herald.outbox.relayed.messages',
  appendDuration: 'herald.event_store.append.duration',
  appendBatchSize: 'herald.event_store.append.batch_size',
  lagMessages: 'herald.consumer.lag.messages',
  lagAge: 'herald.consumer.lag.age',
  deadLetterEntries: 'herald.dead_letter.entries',
  outboxBacklog: 'herald.outbox.backlog.messages',
  outboxAge: 'herald.outbox.backlog.age',
  sagaInstances: 'herald.saga.instances',
} as const;

const A = {
  system: 'messaging.system',
  operation: 'messaging.operation.name',
  destination: 'messaging.destination.name',
  group: 'messaging.consumer.group.name',
  partition: 'messaging.destination.partition.id',
  eventType: 'cloudevents.event_type',
  errorType: 'error.type',
  handler: 'herald.handler.name',
  store: 'herald.event_store.name',
  deadLetterStatus: 'herald.dead_letter.status',
  outbox: 'herald.outbox.name',
  saga: 'herald.saga.name',
  sagaStatus: 'herald.saga.status',
} as const;

interface Count {
  value: number;
  readonly attributes: Attributes;
}

/**
 * Subscribes OpenTelemetry instruments to the channels and registers the collection-time
 * callbacks. Instruments are created once, here; `close()` stops updating them.
 */
export function instrumentMetrics(options: OtelMetricsOptions = {}): OtelMetrics {
  const meter: Meter = (options.meterProvider ?? metrics.getMeterProvider()).getMeter('@herald/otel', '0.1.0');
  const system = options.system ?? 'herald';
  const now = options.now ?? Date.now;
  const durationBounds = [...(options.durationBuckets ?? DURATION_BUCKETS)];
  const registered: { callback: BatchObservableCallback; observables: Observable[] }[] = [];
  const onCollect = (callback: BatchObservableCallback, observables: Observable[]) => {
    meter.addBatchObservableCallback(callback, observables);
    registered.push({ callback, observables });
  };

  // ── counters: plain numbers per label set, reported at collection ──
  const counters: { instrument: Observable; series: Count[] }[] = [];
  const counter = (name: string, unit: string, description: string, depth: number, attributes: (v: readonly string[]) => Attributes) => {
    const series: Count[] = [];
    counters.push({ instrument: meter.createObservableCounter(name, { unit, description }), series });
    return new SeriesTree<Count>(depth, (values) => {
      const s = { value: 0, attributes: attributes(values) };
      series.push(s);
      return s;
    });
  };
  const withError = (attributes: Attributes, error: string): Attributes => (error === '' ? attributes : { ...attributes, [A.errorType]: error });
  const sent = counter(OTEL_METRIC.sent, '{message}', 'Messages a producer attempted to send (with error.type when the send failed)', 3, ([topic, type, error]) =>
    withError({ [A.system]: system, [A.operation]: 'send', [A.destination]: topic!, ...(type === '' ? {} : { [A.eventType]: type! }) }, error!),
  );
  const consumed = counter(OTEL_METRIC.consumed, '{message}', 'Deliveries received by a consumer group', 2, ([group, topic]) => ({
    [A.system]: system,
    [A.operation]: 'receive',
    [A.destination]: topic!,
    [A.group]: group!,
  }));
  const failures = counter(OTEL_METRIC.handlerFailures, '{attempt}', 'Handler attempts that failed', 5, ([group, topic, handler, type, error]) => ({
    [A.group]: group!,
    [A.destination]: topic!,
    [A.handler]: handler!,
    [A.eventType]: type!,
    [A.errorType]: error!,
  }));
  const groupTopicHandler = ([group, topic, handler]: readonly string[]): Attributes => ({ [A.group]: group!, [A.destination]: topic!, [A.handler]: handler! });
  const retries = counter(OTEL_METRIC.retries, '{attempt}', 'Failed handler attempts scheduled for a retry', 3, groupTopicHandler);
  const deadLettered = counter(OTEL_METRIC.deadLettered, '{message}', 'Messages stored as dead letters', 3, groupTopicHandler);
  const relayed = counter(OTEL_METRIC.relayed, '{message}', 'Outbox rows published by a relay', 1, ([topic]) => ({ [A.destination]: topic! }));
  const countersCallback: BatchObservableCallback = (result) => {
    for (const { instrument, series } of counters) for (const s of series) result.observe(instrument, s.value, s.attributes);
  };
  onCollect(
    countersCallback,
    counters.map((c) => c.instrument),
  );

  // ── histograms: synchronous, one attributes object per label set ──
  const processDuration = meter.createHistogram(OTEL_METRIC.processDuration, {
    unit: 's',
    description: 'Duration of one handler attempt (with error.type when it failed)',
    advice: { explicitBucketBoundaries: durationBounds },
  });
  const processAttributes = new SeriesTree<Attributes>(5, ([group, topic, handler, type, error]) =>
    withError({ [A.system]: system, [A.operation]: 'process', [A.destination]: topic!, [A.group]: group!, [A.handler]: handler!, [A.eventType]: type! }, error!),
  );
  const appendDuration = meter.createHistogram(OTEL_METRIC.appendDuration, {
    unit: 's',
    description: 'Event-store append latency, queueing and group commit included (with error.type when it failed)',
    advice: { explicitBucketBoundaries: durationBounds },
  });
  const appendAttributes = new SeriesTree<Attributes>(2, ([store, error]) => withError({ [A.store]: store! }, error!));
  const appendSize = meter.createHistogram(OTEL_METRIC.appendBatchSize, {
    unit: '{event}',
    description: 'Events per event-store append',
    advice: { explicitBucketBoundaries: [...BATCH_SIZE_BUCKETS] },
  });
  const storeAttributes = new SeriesTree<Attributes>(1, ([store]) => ({ [A.store]: store! }));

  // ── the channel events (inline on hot paths: small and never throwing) ──
  const sink: ChannelSink = {
    sent(topic, type) {
      sent.of(topic, type, '').value++;
    },
    publishFailed(topic, operation, count, error) {
      // An envelope built for an outbox ('create') that failed was never a send attempt.
      if (operation === 'send') sent.of(topic, '', errorType(error)).value += count;
    },
    delivered(group, topic) {
      consumed.of(group, topic).value++;
    },
    handled(group, topic, handler, type, seconds, error) {
      const failure = error === undefined ? '' : errorType(error);
      processDuration.record(seconds, processAttributes.of(group, topic, handler, type, failure));
      if (failure !== '') failures.of(group, topic, handler, type, failure).value++;
    },
    retried(group, topic, handler) {
      retries.of(group, topic, handler).value++;
    },
    deadLettered(group, topic, handler) {
      deadLettered.of(group, topic, handler).value++;
    },
    appended(store, seconds, count, error) {
      appendDuration.record(seconds, appendAttributes.of(store, error === undefined ? '' : errorType(error)));
      appendSize.record(count, storeAttributes.of(store));
    },
    relayed(topic, count) {
      relayed.of(topic).value += count;
    },
  };
  const unsubscribe = subscribeChannels(sink, options.monotonic);

  // ── gauges read at collection ──
  if (options.lagSources?.length) {
    const lagMessages = meter.createObservableGauge(OTEL_METRIC.lagMessages, { unit: '{message}', description: 'Messages after the consumer group’s committed position' });
    const lagAge = meter.createObservableGauge(OTEL_METRIC.lagAge, { unit: 's', description: 'Age of the oldest message after the group’s committed position (0 when none)' });
    const lagAttributes = new SeriesTree<Attributes>(3, ([group, topic, partition]) => ({ [A.group]: group!, [A.destination]: topic!, [A.partition]: partition! }));
    const sources = options.lagSources;
    onCollect(
      async (result) => {
        const lag = await readLag(sources); // one read for both gauges
        const t = now();
        for (const l of lag) {
          const attributes = lagAttributes.of(l.group, l.topic, String(l.partition));
          result.observe(lagMessages, l.messages, attributes);
          result.observe(lagAge, ageSeconds(l.oldestUnhandledAt, t), attributes);
        }
      },
      [lagMessages, lagAge],
    );
  }
  if (options.deadLetters?.length) {
    const entries = meter.createObservableGauge(OTEL_METRIC.deadLetterEntries, { unit: '{message}', description: 'Entries in the dead-letter store, by group and status' });
    const deadLetters = options.deadLetters;
    onCollect(
      async (result) => {
        for (const { group, status, count } of await readDeadLetters(deadLetters)) result.observe(entries, count, { [A.group]: group, [A.deadLetterStatus]: status });
      },
      [entries],
    );
  }
  if (options.outboxes && Object.keys(options.outboxes).length > 0) {
    const backlog = meter.createObservableGauge(OTEL_METRIC.outboxBacklog, { unit: '{message}', description: 'Unsent outbox rows' });
    const age = meter.createObservableGauge(OTEL_METRIC.outboxAge, { unit: 's', description: 'Age of the oldest unsent outbox row (0 when none)' });
    const outboxes = options.outboxes;
    onCollect(
      async (result) => {
        for (const o of await readOutboxes(outboxes, now())) {
          const attributes = { [A.outbox]: o.name };
          result.observe(backlog, o.count, attributes);
          result.observe(age, o.oldestSeconds, attributes);
        }
      },
      [backlog, age],
    );
  }
  if (options.sagaStores?.length) {
    const instances = meter.createObservableGauge(OTEL_METRIC.sagaInstances, { unit: '{instance}', description: 'Saga instances by saga and status' });
    const stores = options.sagaStores;
    onCollect(
      async (result) => {
        const totals = new Map<string, { saga: string; status: string; count: number }>();
        for (const store of stores) {
          for (const s of await store.countByStatus()) {
            const key = JSON.stringify([s.saga, s.status]);
            const t = totals.get(key);
            if (t) t.count += s.count;
            else totals.set(key, { saga: s.saga, status: s.status, count: s.count });
          }
        }
        for (const t of totals.values()) result.observe(instances, t.count, { [A.saga]: t.saga, [A.sagaStatus]: t.status });
      },
      [instances],
    );
  }

  let closed = false;
  return {
    close() {
      if (closed) return;
      closed = true;
      unsubscribe();
      for (const { callback, observables } of registered) meter.removeBatchObservableCallback(callback, observables);
    },
  };
}
