import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Attributes } from '@opentelemetry/api';
import {
  AggregationTemporality,
  type DataPoint,
  type Histogram,
  InMemoryMetricExporter,
  MeterProvider,
  type MetricData,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { z } from 'zod';
import { createConsumer, createMemoryTransport, createOutboxRelay, createPublisher, defineEvent, MemoryDeadLetterStore, MemoryUnitOfWork, PermanentError } from '@herald/core';
import { InMemoryEventStore } from '@herald/eventsourcing';
import { createSqliteTransport, SqliteDeadLetterStore } from '@herald/sqlite';
import { uniqueName, waitFor } from '@herald/testkit';
import { createMetrics, instrumentMetrics, OTEL_METRIC } from './index.ts';
import { parsePrometheusText } from './exposition.ts';

function tempPath(t: { after(fn: () => void): void }): string {
  const path = join(tmpdir(), `herald-otel-${randomUUID()}.db`);
  t.after(() => {
    for (const s of ['', '-wal', '-shm']) rmSync(path + s, { force: true });
  });
  return path;
}

/** A meter provider whose reader exports only when `collect()` asks (cumulative, like Prometheus). */
function manualMeter(t: { after(fn: () => Promise<void>): void }) {
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
  const meterProvider = new MeterProvider({ readers: [reader] });
  t.after(() => meterProvider.shutdown());
  const collect = async (): Promise<Map<string, MetricData>> => {
    exporter.reset();
    await reader.forceFlush();
    const all = exporter.getMetrics().flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics));
    return new Map(all.map((m) => [m.descriptor.name, m]));
  };
  return { meterProvider, collect };
}

const matches = (attributes: Attributes, want: Attributes) => Object.entries(want).every(([k, v]) => (v === undefined ? !(k in attributes) : attributes[k] === v));
function points(data: Map<string, MetricData>, name: string, want: Attributes): DataPoint<unknown>[] {
  const m = data.get(name); // absent when nothing was recorded
  return ((m?.dataPoints ?? []) as DataPoint<unknown>[]).filter((p) => matches(p.attributes, want));
}
const values = (data: Map<string, MetricData>, name: string, want: Attributes) => points(data, name, want).map((p) => p.value as number);
const total = (data: Map<string, MetricData>, name: string, want: Attributes) => values(data, name, want).reduce((a, b) => a + b, 0);
const histogramCount = (data: Map<string, MetricData>, name: string, want: Attributes) =>
  points(data, name, want).reduce((a, p) => a + (p.value as Histogram).count, 0);

test('OpenTelemetry metrics with a paused consumer: lag messages and age rise, fall to zero once handled; sent, consumed and process duration counted', async (t) => {
  const path = tempPath(t);
  const topic = uniqueName('orders');
  const Placed = defineEvent('order.placed', z.object({ orderId: z.string() }), { topic, keyField: 'orderId' });
  const transport = createSqliteTransport({ path, leaseMs: 2000, heartbeatMs: 100, pollMs: 5 });
  const deadLetters = new SqliteDeadLetterStore({ path });
  let now = Date.now();
  const { meterProvider, collect } = manualMeter(t);
  const otel = instrumentMetrics({ meterProvider, lagSources: [transport], deadLetters: [{ store: deadLetters, groups: ['shipping'] }], now: () => now });
  t.after(() => otel.close());
  const group = { 'messaging.consumer.group.name': 'shipping', 'messaging.destination.name': topic };
  const lag = (d: Map<string, MetricData>) => values(d, OTEL_METRIC.lagMessages, group);
  const age = (d: Map<string, MetricData>) => values(d, OTEL_METRIC.lagAge, group);

  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let handled = 0;
  const consumer = createConsumer({ transport, group: 'shipping', deadLetters });
  consumer.handle(Placed, async () => {
    await gate;
    handled++;
  });
  await consumer.start();
  await waitFor(async () => lag(await collect()).length === 8, { timeoutMs: 5000 }); // the group's 8 partitions
  const d0 = await collect();
  assert.equal(lag(d0).reduce((a, b) => a + b, 0), 0);
  assert.deepEqual([...new Set(age(d0))], [0]);
  assert.ok(points(d0, OTEL_METRIC.lagMessages, group).every((p) => typeof p.attributes['messaging.destination.partition.id'] === 'string'));

  const publisher = createPublisher({ transport, source: 'orders-service' });
  const t1 = Date.now();
  for (let i = 0; i < 10; i++) await publisher.publish(Placed, { orderId: `o-${i}` });
  const t2 = Date.now();
  now = t2 + 5000;
  const d1 = await collect();
  assert.equal(total(d1, OTEL_METRIC.lagMessages, group), 10, 'ten messages behind');
  const oldest1 = Math.max(...age(d1));
  assert.ok(oldest1 >= 5 && oldest1 <= 5 + (t2 - t1) / 1000 + 0.001, `oldest unhandled is 5 s plus the publishing time old (got ${oldest1})`);

  for (let i = 10; i < 15; i++) await publisher.publish(Placed, { orderId: `o-${i}` });
  now += 3000;
  const d2 = await collect();
  assert.equal(total(d2, OTEL_METRIC.lagMessages, group), 15, 'five more behind');
  const oldest2 = Math.max(...age(d2));
  assert.ok(Math.abs(oldest2 - oldest1 - 3) < 1e-6, `the oldest unhandled message aged by the 3 s that passed (${oldest1} → ${oldest2})`);

  open();
  now = Date.now();
  const d3 = await waitFor(
    async () => {
      const d = await collect();
      return total(d, OTEL_METRIC.lagMessages, group) === 0 ? d : undefined;
    },
    { timeoutMs: 5000 },
  );
  assert.equal(handled, 15);
  assert.deepEqual([...new Set(age(d3))], [0]);
  assert.equal(total(d3, OTEL_METRIC.sent, { 'messaging.system': 'herald', 'messaging.operation.name': 'send', 'messaging.destination.name': topic, 'cloudevents.event_type': 'order.placed', 'error.type': undefined }), 15);
  assert.equal(total(d3, OTEL_METRIC.consumed, { ...group, 'messaging.operation.name': 'receive' }), 15);
  const processed = { ...group, 'messaging.operation.name': 'process', 'herald.handler.name': 'order.placed', 'error.type': undefined };
  assert.equal(histogramCount(d3, OTEL_METRIC.processDuration, processed), 15);
  const [p] = points(d3, OTEL_METRIC.processDuration, processed) as DataPoint<Histogram>[];
  assert.ok((p!.value.sum ?? 0) > 0, 'durations in seconds, recorded');
  assert.equal(d3.get(OTEL_METRIC.processDuration)!.descriptor.unit, 's');
  assert.deepEqual(values(d3, OTEL_METRIC.deadLetterEntries, { 'messaging.consumer.group.name': 'shipping' }), [0, 0, 0]);
  await consumer.close();
  await transport.close();
  await deadLetters.close();
});

test('OpenTelemetry metrics: failures, retries and dead letters counted as the Prometheus path counts them; close() stops the updates', async (t) => {
  const topic = uniqueName('pay');
  const Pay = defineEvent('payment.due', z.object({ n: z.number() }), { topic });
  const transport = createMemoryTransport();
  const deadLetters = new MemoryDeadLetterStore();
  const { meterProvider, collect } = manualMeter(t);
  const otel = instrumentMetrics({ meterProvider, system: 'memory', deadLetters: [{ store: deadLetters, groups: ['bank'] }] });
  const prom = createMetrics();
  t.after(() => {
    otel.close();
    prom.close();
  });
  const consumer = createConsumer({ transport, group: 'bank', deadLetters, retry: { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 1 } });
  consumer.handle(Pay, (d) => {
    if (d.n === 1) throw new Error('flaky forever');
    if (d.n === 2) throw new PermanentError('refused');
  });
  await consumer.start();
  const publisher = createPublisher({ transport, source: 'svc' });
  await publisher.publishBatch([0, 1, 2].map((n) => ({ definition: Pay, data: { n } })));
  await waitFor(async () => (await deadLetters.count({ group: 'bank' })) === 2);
  await consumer.close();

  const d = await collect();
  const where = { 'messaging.consumer.group.name': 'bank', 'messaging.destination.name': topic, 'herald.handler.name': 'payment.due' };
  assert.equal(histogramCount(d, OTEL_METRIC.processDuration, { ...where, 'messaging.system': 'memory', 'error.type': undefined }), 1, 'one success');
  assert.equal(histogramCount(d, OTEL_METRIC.processDuration, { ...where, 'error.type': 'Error' }), 3, 'three failed attempts of n=1');
  assert.equal(histogramCount(d, OTEL_METRIC.processDuration, { ...where, 'error.type': 'HERALD_ERR_PERMANENT' }), 1, 'one of n=2, its error code as error.type');
  assert.equal(total(d, OTEL_METRIC.handlerFailures, where), 4);
  assert.equal(total(d, OTEL_METRIC.handlerFailures, { ...where, 'error.type': 'Error' }), 3);
  assert.equal(total(d, OTEL_METRIC.retries, where), 2);
  assert.equal(total(d, OTEL_METRIC.deadLettered, where), 2);
  assert.deepEqual(values(d, OTEL_METRIC.deadLetterEntries, { 'messaging.consumer.group.name': 'bank', 'herald.dead_letter.status': 'dead' }), [2]);
  assert.equal(total(d, OTEL_METRIC.sent, { 'messaging.destination.name': topic }), 3);

  // The same events, the same numbers on the Prometheus side.
  const f = parsePrometheusText(await prom.metrics());
  const promTotal = (name: string) =>
    f.get(name)!.samples.filter((s) => s.labels.topic === topic && s.labels.group === 'bank').reduce((a, s) => a + s.value, 0);
  assert.equal(promTotal('herald_handler_failed_total'), total(d, OTEL_METRIC.handlerFailures, where));
  assert.equal(promTotal('herald_retried_total'), total(d, OTEL_METRIC.retries, where));
  assert.equal(promTotal('herald_dead_lettered_total'), total(d, OTEL_METRIC.deadLettered, where));

  otel.close();
  otel.close(); // idempotent
  const consumer2 = createConsumer({ transport, group: 'bank', deadLetters });
  consumer2.handle(Pay, () => {
    throw new PermanentError('refused after close');
  });
  await consumer2.start();
  await publisher.publish(Pay, { n: 2 });
  await waitFor(async () => (await deadLetters.count({ group: 'bank', status: 'dead' })) === 3);
  await consumer2.close();
  const after = await collect();
  assert.equal(histogramCount(after, OTEL_METRIC.processDuration, { ...where, 'error.type': 'HERALD_ERR_PERMANENT' }), 1, 'nothing recorded after close()');
  assert.equal(total(after, OTEL_METRIC.deadLettered, where), 2, 'nothing counted after close()');
  assert.deepEqual(
    values(after, OTEL_METRIC.deadLetterEntries, { 'messaging.consumer.group.name': 'bank', 'herald.dead_letter.status': 'dead' }),
    [2],
    'the store now holds 3, the gauge callback is gone (the SDK repeats the last cumulative value)',
  );
});

test('OpenTelemetry metrics: outbox backlog and age, saga instances, relayed rows and event-store appends', async (t) => {
  const uow = new MemoryUnitOfWork();
  let now = Date.now();
  const sagas = { countByStatus: async () => [{ saga: 'checkout', status: 'running', count: 2 }, { saga: 'checkout', status: 'stuck', count: 1 }] };
  const { meterProvider, collect } = manualMeter(t);
  const otel = instrumentMetrics({ meterProvider, outboxes: { orders: uow }, sagaStores: [sagas, sagas], now: () => now });
  t.after(() => otel.close());
  const topic = uniqueName('outboxed');
  const publisher = createPublisher({ transport: createMemoryTransport(), source: 'svc' });
  const Ev = defineEvent('outboxed.thing', z.object({ n: z.number() }), { topic });
  const before = Date.now();
  await uow.withTransaction(async (tx) => {
    for (let n = 0; n < 3; n++) tx.publish(topic, (await publisher.envelope(Ev, { n })).message);
  });
  now = before + 4000;
  let d = await collect();
  const orders = { 'herald.outbox.name': 'orders' };
  assert.deepEqual(values(d, OTEL_METRIC.outboxBacklog, orders), [3]);
  const age = values(d, OTEL_METRIC.outboxAge, orders)[0]!;
  assert.ok(age <= 4 && age >= 4 - (Date.now() - before) / 1000, `oldest row about 4 s old (got ${age})`);
  assert.deepEqual(values(d, OTEL_METRIC.sagaInstances, { 'herald.saga.name': 'checkout', 'herald.saga.status': 'stuck' }), [2], 'summed over the two stores');
  assert.equal(total(d, OTEL_METRIC.sent, { 'messaging.destination.name': topic }), 0, 'an outbox write is not a send');
  const transport = createMemoryTransport();
  const relay = createOutboxRelay({ store: uow, transport, leases: uow.leases, pollMs: 10 });
  await relay.start();
  await waitFor(async () => (await uow.backlog()).count === 0);
  await relay.close();
  d = await collect();
  assert.deepEqual(values(d, OTEL_METRIC.outboxBacklog, orders), [0]);
  assert.deepEqual(values(d, OTEL_METRIC.outboxAge, orders), [0]);
  assert.equal(total(d, OTEL_METRIC.relayed, { 'messaging.destination.name': topic }), 3);
  const store = new InMemoryEventStore();
  await store.appendToStream(uniqueName('stream'), [{ type: 'a.b', data: {} }, { type: 'a.b', data: {} }]);
  d = await collect();
  const [size] = points(d, OTEL_METRIC.appendBatchSize, { 'herald.event_store.name': 'memory' }) as DataPoint<Histogram>[];
  assert.equal(size!.value.count, 1);
  assert.equal(size!.value.sum, 2);
  assert.equal(histogramCount(d, OTEL_METRIC.appendDuration, { 'herald.event_store.name': 'memory', 'error.type': undefined }), 1);
});
