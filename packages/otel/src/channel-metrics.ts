/**
 * What both metrics paths share: which channel events feed which series (the Prometheus
 * registry of metrics.ts and the OpenTelemetry meter of otel-metrics.ts are two sinks of one
 * subscription skeleton), the label values taken from each channel message, and the
 * collection-time reads of the stores (lag, dead-letter depth, outbox backlog, sagas).
 */
import {
  type AppendMessage,
  channels,
  type DeadLetterMessage,
  type DeadLetterStatus,
  type DeadLetterStore,
  type DeliverMessage,
  type HandleMessage,
  isHeraldError,
  type LagSource,
  type OutboxStore,
  type PartitionLag,
  type PublishMessage,
  type RelayMessage,
  type RetryMessage,
} from '@herald/core';

/** What the saga gauge reads (a `SagaStore` of @herald/eventsourcing has it). */
export interface SagaCountSource {
  countByStatus(): Promise<readonly { readonly saga: string; readonly status: string; readonly count: number }[]>;
}

/** The sources both metrics paths read at collection time, and their clocks and buckets. */
export interface MetricSources {
  /** Transports (or anything) reporting consumer lag, read at each collection. */
  readonly lagSources?: readonly LagSource[];
  /** Dead-letter stores whose depth (entries by group and status) is read at each collection. */
  readonly deadLetters?: readonly { readonly store: DeadLetterStore; readonly groups: readonly string[] }[];
  /** Outbox stores (backlog and oldest age) read at each collection, by name. */
  readonly outboxes?: Readonly<Record<string, OutboxStore>>;
  /** Saga stores whose instances by saga and status are read at each collection. */
  readonly sagaStores?: readonly SagaCountSource[];
  /** Wall clock for ages, epoch ms (default Date.now). */
  readonly now?: () => number;
  /** Monotonic clock for durations, ms (default performance.now). */
  readonly monotonic?: () => number;
  /** Histogram buckets for handler and append duration, seconds (default `DURATION_BUCKETS`). */
  readonly durationBuckets?: readonly number[];
}

export const DURATION_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
export const BATCH_SIZE_BUCKETS: readonly number[] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];
export const DEAD_LETTER_STATUSES: readonly DeadLetterStatus[] = ['dead', 'parked', 'redrive'];

/**
 * The per-event updates a metrics path implements. Called inline on Herald's hot paths from
 * the channel subscribers: must be quick and must not throw. `error` is undefined on success.
 */
export interface ChannelSink {
  /** One message of a send that the transport confirmed. */
  sent(topic: string, type: string): void;
  /** A publish operation ('send', or 'create' for an outbox write) that rejected. */
  publishFailed(topic: string, operation: 'send' | 'create', count: number, error: unknown): void;
  /** A delivery the router received. */
  delivered(group: string, topic: string): void;
  /** One handler attempt ended. */
  handled(group: string, topic: string, handler: string, type: string, seconds: number, error: unknown): void;
  retried(group: string, topic: string, handler: string): void;
  deadLettered(group: string, topic: string, handler: string): void;
  /** One event-store append ended. */
  appended(store: string, seconds: number, count: number, error: unknown): void;
  /** Outbox rows a relay published. */
  relayed(topic: string, count: number): void;
}

/**
 * Subscribes `sink` to the channels; returns the unsubscribe function (idempotent). Each call
 * keeps its own start times on the channel messages, so two paths can listen at once.
 */
export function subscribeChannels(sink: ChannelSink, monotonic: () => number = () => performance.now()): () => void {
  const START = Symbol('herald.metrics.start');
  type Timed = { [START]?: number };
  const publishSub = {
    asyncEnd(m: PublishMessage) {
      if (m.operation !== 'send' || m.error !== undefined || !m.messages) return;
      const topic = m.topic ?? '';
      for (const msg of m.messages) sink.sent(topic, msg.envelope.type);
    },
    error(m: PublishMessage) {
      sink.publishFailed(m.topic ?? '', m.operation, m.count, m.error);
    },
  };
  const handleSub = {
    start(m: HandleMessage & Timed) {
      m[START] = monotonic();
    },
    asyncEnd(m: HandleMessage & Timed) {
      sink.handled(m.group, m.topic, m.handler, m.envelope.type, (monotonic() - (m[START] ?? monotonic())) / 1000, m.error);
    },
  };
  const appendSub = {
    start(m: AppendMessage & Timed) {
      m[START] = monotonic();
    },
    asyncEnd(m: AppendMessage & Timed) {
      sink.appended(m.store, (monotonic() - (m[START] ?? monotonic())) / 1000, m.count, m.error);
    },
  };
  const relaySub = {
    asyncEnd(m: RelayMessage) {
      if (m.error === undefined) sink.relayed(m.topic, m.messages.length);
    },
  };
  const onDeliver = (m: unknown) => {
    const d = m as DeliverMessage;
    sink.delivered(d.group, d.delivery.topic);
  };
  const onRetry = (m: unknown) => {
    const r = m as RetryMessage;
    sink.retried(r.group, r.topic, r.handler);
  };
  const onDeadLetter = (m: unknown) => {
    const r = m as DeadLetterMessage;
    sink.deadLettered(r.group, r.topic, r.handler);
  };
  channels.publish.subscribe(publishSub as never);
  channels.handle.subscribe(handleSub as never);
  channels.append.subscribe(appendSub as never);
  channels.relay.subscribe(relaySub as never);
  channels.deliver.subscribe(onDeliver);
  channels.retry.subscribe(onRetry);
  channels.deadLetter.subscribe(onDeadLetter);
  let closed = false;
  return () => {
    if (closed) return;
    closed = true;
    channels.publish.unsubscribe(publishSub as never);
    channels.handle.unsubscribe(handleSub as never);
    channels.append.unsubscribe(appendSub as never);
    channels.relay.unsubscribe(relaySub as never);
    channels.deliver.unsubscribe(onDeliver);
    channels.retry.unsubscribe(onRetry);
    channels.deadLetter.unsubscribe(onDeadLetter);
  };
}

/**
 * A low-cardinality name for a failure (OpenTelemetry `error.type`): a Herald error's code,
 * else the error's class name, else '_OTHER'.
 */
export function errorType(error: unknown): string {
  if (isHeraldError(error)) return error.code;
  if (error instanceof Error) return error.constructor.name || error.name || '_OTHER';
  return '_OTHER';
}

/** Seconds from epoch ms `at` to `now` (0 when `at` is undefined or in the future). */
export function ageSeconds(at: number | undefined, now: number): number {
  return at === undefined ? 0 : Math.max(0, (now - at) / 1000);
}

/** Every source's lag, flattened. */
export async function readLag(sources: readonly LagSource[] | undefined): Promise<PartitionLag[]> {
  return (await Promise.all((sources ?? []).map((s) => s.lag()))).flat();
}

/** Dead-letter entries per configured group and status. */
export async function readDeadLetters(
  deadLetters: MetricSources['deadLetters'],
): Promise<{ group: string; status: DeadLetterStatus; count: number }[]> {
  const out: { group: string; status: DeadLetterStatus; count: number }[] = [];
  for (const { store, groups } of deadLetters ?? []) {
    for (const group of groups) {
      for (const status of DEAD_LETTER_STATUSES) out.push({ group, status, count: await store.count({ group, status }) });
    }
  }
  return out;
}

/** Each named outbox's unsent rows and the age of the oldest, seconds. */
export async function readOutboxes(outboxes: MetricSources['outboxes'], now: number): Promise<{ name: string; count: number; oldestSeconds: number }[]> {
  return Promise.all(
    Object.entries(outboxes ?? {}).map(async ([name, store]) => {
      const backlog = await store.backlog();
      return { name, count: backlog.count, oldestSeconds: ageSeconds(backlog.oldestCreatedAt, now) };
    }),
  );
}
