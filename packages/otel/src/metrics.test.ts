import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { z } from 'zod';
import { createConsumer, createMemoryTransport, createOutboxRelay, createPublisher, defineEvent, MemoryDeadLetterStore, MemoryUnitOfWork, PermanentError } from '@herald/core';
import { InMemoryEventStore } from '@herald/eventsourcing';
import { createSqliteTransport, SqliteDeadLetterStore } from '@herald/sqlite';
import { uniqueName, waitFor } from '@herald/testkit';
import { createMetrics, serveMetrics } from './index.ts';
import { type MetricFamily, parsePrometheusText } from './exposition.ts';

function tempPath(t: { after(fn: () => void): void }): string {
  const path = join(tmpdir(), `herald-otel-${randomUUID()}.db`);
  t.after(() => {
    for (const s of ['', '-wal', '-shm']) rmSync(path + s, { force: true });
  });
  return path;
}

function series(families: Map<string, MetricFamily>, name: string, labels: Record<string, string>): number[] {
  const family = families.get(name) ?? families.get(name.replace(/_(bucket|sum|count)$/, ''));
  assert.ok(family, `family ${name}`);
  return family.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).map((s) => s.value);
}
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

test('/metrics with a paused consumer: lag in messages and seconds rises by what was published and by the time passed, then falls to zero', async (t) => {
  const path = tempPath(t);
  const topic = uniqueName('orders');
  const Placed = defineEvent('order.placed', z.object({ orderId: z.string() }), { topic, keyField: 'orderId' });
  const transport = createSqliteTransport({ path, leaseMs: 2000, heartbeatMs: 100, pollMs: 5 });
  const deadLetters = new SqliteDeadLetterStore({ path });
  let now = Date.now();
  const metrics = createMetrics({ lagSources: [transport], deadLetters: [{ store: deadLetters, groups: ['shipping'] }], now: () => now });
  const server = await serveMetrics(metrics, { port: 0 });
  t.after(async () => {
    metrics.close();
    await server.close();
  });
  const scrape = async () => {
    const res = await fetch(server.url);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    return parsePrometheusText(await res.text()); // throws on anything invalid
  };
  const lag = (f: Map<string, MetricFamily>) => series(f, 'herald_consumer_lag_messages', { group: 'shipping', topic });
  const age = (f: Map<string, MetricFamily>) => series(f, 'herald_consumer_lag_seconds', { group: 'shipping', topic });

  // The consumer is "paused": its handler waits on a gate, so nothing is committed.
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let handled = 0;
  const consumer = createConsumer({ transport, group: 'shipping', deadLetters });
  consumer.handle(Placed, async () => {
    await gate;
    handled++;
  });
  await consumer.start();
  await waitFor(async () => lag(await scrape()).length === 8, { timeoutMs: 5000 }); // the group registered its 8 partitions
  const publisher = createPublisher({ transport, source: 'orders-service' });

  const f0 = await scrape();
  assert.equal(sum(lag(f0)), 0);
  assert.deepEqual([...new Set(age(f0))], [0]);

  const t1 = Date.now();
  for (let i = 0; i < 10; i++) await publisher.publish(Placed, { orderId: `o-${i}` });
  const t2 = Date.now();
  now = t2 + 5000;
  const f1 = await scrape();
  assert.equal(sum(lag(f1)), 10, 'ten messages behind');
  const oldest1 = Math.max(...age(f1));
  assert.ok(oldest1 >= 5 && oldest1 <= 5 + (t2 - t1) / 1000 + 0.001, `oldest unhandled is 5 s plus the publishing time old (got ${oldest1})`);

  for (let i = 10; i < 15; i++) await publisher.publish(Placed, { orderId: `o-${i}` });
  now += 3000;
  const f2 = await scrape();
  assert.equal(sum(lag(f2)), 15, 'five more behind');
  const oldest2 = Math.max(...age(f2));
  assert.ok(Math.abs(oldest2 - oldest1 - 3) < 1e-6, `the oldest unhandled message aged by the 3 s that passed (${oldest1} → ${oldest2})`);

  open();
  now = Date.now();
  const f3 = await waitFor(
    async () => {
      const f = await scrape();
      return sum(lag(f)) === 0 ? f : undefined;
    },
    { timeoutMs: 5000 },
  );
  assert.equal(handled, 15);
  assert.deepEqual([...new Set(age(f3))], [0]);
  assert.equal(sum(series(f3, 'herald_published_total', { topic, type: 'order.placed' })), 15);
  assert.equal(sum(series(f3, 'herald_delivered_total', { group: 'shipping', topic })), 15);
  assert.equal(sum(series(f3, 'herald_handled_total', { group: 'shipping', topic, handler: 'order.placed' })), 15);
  assert.equal(sum(series(f3, 'herald_handler_duration_seconds_count', { group: 'shipping', topic, outcome: 'ok' })), 15);
  assert.deepEqual(series(f3, 'herald_dead_letters', { group: 'shipping' }), [0, 0, 0]);
  await consumer.close();
  await transport.close();
  await deadLetters.close();
});

test('failures, retries and dead letters are counted; the dead-letter depth is read from the store', async (t) => {
  const topic = uniqueName('pay');
  const Pay = defineEvent('payment.due', z.object({ n: z.number() }), { topic });
  const transport = createMemoryTransport();
  const deadLetters = new MemoryDeadLetterStore();
  const metrics = createMetrics({ lagSources: [transport], deadLetters: [{ store: deadLetters, groups: ['bank'] }] });
  t.after(() => metrics.close());
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
  const f = parsePrometheusText(await metrics.metrics());
  const labels = { group: 'bank', topic, handler: 'payment.due' };
  assert.equal(sum(series(f, 'herald_handled_total', labels)), 1);
  assert.equal(sum(series(f, 'herald_handler_failed_total', labels)), 4, 'three attempts of n=1, one of n=2');
  assert.equal(sum(series(f, 'herald_retried_total', labels)), 2);
  assert.equal(sum(series(f, 'herald_dead_lettered_total', labels)), 2);
  assert.equal(series(f, 'herald_dead_letters', { group: 'bank', status: 'dead' })[0], 2);
  assert.equal(sum(series(f, 'herald_published_total', { topic })), 3);
  assert.equal(sum(series(f, 'herald_consumer_lag_messages', { group: 'bank', topic })), 0);
});

test('outbox backlog and age, saga instances by status and event-store appends are exported', async (t) => {
  const uow = new MemoryUnitOfWork();
  let now = Date.now();
  const sagas = { countByStatus: async () => [{ saga: 'checkout', status: 'running', count: 2 }, { saga: 'checkout', status: 'stuck', count: 1 }] };
  const metrics = createMetrics({ outboxes: { orders: uow }, sagaStores: [sagas], now: () => now });
  t.after(() => metrics.close());
  const topic = uniqueName('outboxed');
  const publisher = createPublisher({ transport: createMemoryTransport(), source: 'svc' });
  const Ev = defineEvent('outboxed.thing', z.object({ n: z.number() }), { topic });
  const before = Date.now();
  await uow.withTransaction(async (tx) => {
    for (let n = 0; n < 3; n++) tx.publish(topic, (await publisher.envelope(Ev, { n })).message);
  });
  now = before + 4000;
  let f = parsePrometheusText(await metrics.metrics());
  assert.deepEqual(series(f, 'herald_outbox_backlog_messages', { outbox: 'orders' }), [3]);
  const age = series(f, 'herald_outbox_oldest_age_seconds', { outbox: 'orders' })[0]!;
  assert.ok(age <= 4 && age >= 4 - (Date.now() - before) / 1000, `oldest row about 4 s old (got ${age})`);
  assert.deepEqual(series(f, 'herald_saga_instances', { saga: 'checkout', status: 'stuck' }), [1]);
  assert.deepEqual(series(f, 'herald_saga_instances', { saga: 'checkout', status: 'running' }), [2]);
  const transport = createMemoryTransport();
  const relay = createOutboxRelay({ store: uow, transport, leases: uow.leases, pollMs: 10 });
  await relay.start();
  await waitFor(async () => (await uow.backlog()).count === 0);
  await relay.close();
  f = parsePrometheusText(await metrics.metrics());
  assert.deepEqual(series(f, 'herald_outbox_backlog_messages', { outbox: 'orders' }), [0]);
  assert.deepEqual(series(f, 'herald_outbox_oldest_age_seconds', { outbox: 'orders' }), [0]);
  assert.equal(sum(series(f, 'herald_outbox_relayed_total', { topic })), 3);
  const store = new InMemoryEventStore();
  await store.appendToStream(uniqueName('stream'), [{ type: 'a.b', data: {} }, { type: 'a.b', data: {} }]);
  f = parsePrometheusText(await metrics.metrics());
  assert.deepEqual(series(f, 'herald_event_store_append_batch_size_count', { store: 'memory' }), [1]);
  assert.deepEqual(series(f, 'herald_event_store_append_batch_size_sum', { store: 'memory' }), [2]);
  assert.deepEqual(series(f, 'herald_event_store_append_duration_seconds_count', { store: 'memory', outcome: 'ok' }), [1]);
});

test('the exposition parser refuses what Prometheus would refuse', () => {
  const ok = '# HELP a_total x\n# TYPE a_total counter\na_total{l="v\\"q"} 1\n';
  assert.equal(parsePrometheusText(ok).get('a_total')!.samples[0]!.labels.l, 'v"q');
  for (const bad of [
    'a_total 1\n# TYPE a_total counter\n', // sample before TYPE
    '# TYPE a counter\na{1l="x"} 1\n', // bad label name
    '# TYPE a counter\na{l="x} 1\n', // unclosed
    '# TYPE a counter\na 1x\n', // bad value
    '# TYPE a counter\na 1\na 2\n', // duplicate series
    '# TYPE h histogram\nh_bucket{le="1"} 2\nh_count 2\n', // no +Inf
    '# TYPE h histogram\nh_bucket{le="1"} 3\nh_bucket{le="+Inf"} 2\nh_count 2\n', // not cumulative
    '# TYPE a bogus\n',
  ]) {
    assert.throws(() => parsePrometheusText(bad), (e: Error & { code?: string }) => e.code === 'HERALD_ERR_DECODE', bad);
  }
});
