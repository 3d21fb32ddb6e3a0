import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { z } from 'zod';
import { createConsumer, createMemoryTransport, createPublisher, defineEvent, isHeraldError, MemoryDeadLetterStore } from '@herald/core';
import { uniqueName, waitFor } from '@herald/testkit';
import { startOtel } from './index.ts';

test('startOtel: OTEL_SDK_DISABLED makes no provider; an unknown OTEL_TRACES_EXPORTER is a typed error naming it', async () => {
  const off = startOtel({ env: { OTEL_SDK_DISABLED: 'true' } });
  assert.equal(off.tracerProvider, undefined);
  await off.shutdown();
  assert.throws(
    () => startOtel({ env: { OTEL_TRACES_EXPORTER: 'jaeger-thrift' } }),
    (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && /jaeger-thrift/.test((e as Error).message),
  );
});

test('startOtel: spans of a publish and its handling reach the processors, with the service name as resource; metrics on request', async () => {
  const exporter = new InMemorySpanExporter();
  const otel = startOtel({ serviceName: 'orders', env: { OTEL_TRACES_EXPORTER: 'none' }, spanProcessors: [new SimpleSpanProcessor(exporter)], metrics: true });
  const topic = uniqueName('started');
  const Ev = defineEvent('started.thing', z.object({ n: z.number() }), { topic });
  const transport = createMemoryTransport();
  const consumer = createConsumer({ transport, group: 'g', deadLetters: new MemoryDeadLetterStore() });
  let handled = 0;
  consumer.handle(Ev, () => {
    handled++;
  });
  await consumer.start();
  await createPublisher({ transport, source: 'orders' }).publish(Ev, { n: 1 });
  await waitFor(() => handled === 1 && exporter.getFinishedSpans().length === 2);
  await consumer.close();
  const [send, processed] = exporter.getFinishedSpans();
  assert.equal(send!.name, `send ${topic}`);
  assert.equal(processed!.parentSpanContext?.spanId, send!.spanContext().spanId);
  assert.equal(send!.resource.attributes['service.name'], 'orders');
  assert.match(await otel.metrics!.metrics(), /herald_handled_total\{[^}]*group="g"[^}]*\} 1/);
  await otel.shutdown();
  await otel.shutdown(); // idempotent
});

test('startOtel: OTEL_METRICS_EXPORTER unset means no meter provider; prometheus, unknown names and a bad interval are typed errors', async () => {
  const off = startOtel({ env: { OTEL_TRACES_EXPORTER: 'none' } });
  assert.equal(off.meterProvider, undefined);
  await off.shutdown();
  assert.throws(
    () => startOtel({ env: { OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'prometheus' } }),
    (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && /serveMetrics/.test((e as Error).message),
  );
  assert.throws(
    () => startOtel({ env: { OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'statsd' } }),
    (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && /statsd/.test((e as Error).message),
  );
  assert.throws(
    () => startOtel({ env: { OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'console', OTEL_METRIC_EXPORT_INTERVAL: '1s' } }),
    (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && /OTEL_METRIC_EXPORT_INTERVAL "1s"/.test((e as Error).message),
  );
});

test('startOtel: OTEL_METRICS_EXPORTER=otlp exports Herald metrics with the service resource to the OTLP endpoint every OTEL_METRIC_EXPORT_INTERVAL', async (t) => {
  const received: { path: string; body: OtlpBody }[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ path: req.url ?? '', body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as OtlpBody });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  const { port } = server.address() as AddressInfo;
  const otel = startOtel({
    serviceName: 'orders',
    env: { OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}/`, OTEL_METRIC_EXPORT_INTERVAL: '100' },
  });
  t.after(() => otel.shutdown());
  assert.ok(otel.meterProvider);
  const topic = uniqueName('metered');
  const Ev = defineEvent('metered.thing', z.object({ n: z.number() }), { topic });
  const transport = createMemoryTransport();
  const consumer = createConsumer({ transport, group: 'g', deadLetters: new MemoryDeadLetterStore() });
  let handled = 0;
  consumer.handle(Ev, () => {
    handled++;
  });
  await consumer.start();
  await createPublisher({ transport, source: 'orders' }).publish(Ev, { n: 1 });
  await waitFor(() => handled === 1);
  await consumer.close();
  // The interval (100 ms, not the default 60 s) brings an export before shutdown.
  const names = (b: OtlpBody) => new Set(b.resourceMetrics.flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics.map((m) => m.name))));
  const request = await waitFor(() => received.find((r) => names(r.body).has('messaging.process.duration')), { timeoutMs: 5000 });
  assert.equal(request.path, '/v1/metrics');
  for (const name of ['messaging.client.sent.messages', 'messaging.client.consumed.messages', 'messaging.process.duration']) assert.ok(names(request.body).has(name), name);
  const resource = request.body.resourceMetrics[0]!.resource.attributes;
  assert.equal(resource.find((a) => a.key === 'service.name')?.value.stringValue, 'orders');
  await otel.shutdown();
});

interface OtlpBody {
  resourceMetrics: {
    resource: { attributes: { key: string; value: { stringValue?: string } }[] };
    scopeMetrics: { metrics: { name: string }[] }[];
  }[];
}
