import assert from 'node:assert/strict';
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
