import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SpanKind, trace } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { z } from 'zod';
import {
  createConsumer,
  createMemoryTransport,
  createOutboxRelay,
  createPublisher,
  createScheduler,
  defineCommand,
  defineEvent,
  MemoryDeadLetterStore,
  MemoryUnitOfWork,
  PermanentError,
} from '@herald/core';
import { createSagaRuntime, defineSaga, MemorySagaStore, onSuccess, send } from '@herald/eventsourcing';
import { uniqueName, waitFor } from '@herald/testkit';
import { testTracing } from './fixtures/flow.ts';

const { exporter, provider } = testTracing();

const tracer = provider.getTracer('test');

function spansOf(traceId: string): ReadableSpan[] {
  return exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
}
function one(spans: readonly ReadableSpan[], name: string): ReadableSpan {
  const found = spans.filter((s) => s.name === name);
  assert.equal(found.length, 1, `one span "${name}" (got ${found.length}: ${spans.map((s) => s.name).join(', ')})`);
  return found[0]!;
}
const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;

test('command → event → handler → event → handler: one trace, each span the child of the one before', async () => {
  const orders = uniqueName('orders');
  const payments = uniqueName('payments');
  const OrderPlaced = defineEvent('order.placed', z.object({ orderId: z.string() }), { topic: orders, keyField: 'orderId' });
  const PaymentRequested = defineEvent('payment.requested', z.object({ orderId: z.string() }), { topic: payments, keyField: 'orderId' });
  const transport = createMemoryTransport();
  const deadLetters = new MemoryDeadLetterStore();
  const publisher = createPublisher({ transport, source: 'orders-service' });
  const billing = createConsumer({ transport, group: 'billing', deadLetters });
  billing.handle(OrderPlaced, async (data, ctx) => {
    await publisher.publish(PaymentRequested, { orderId: data.orderId }, { causedBy: ctx.envelope });
  });
  let handled = 0;
  const bank = createConsumer({ transport, group: 'bank', deadLetters });
  bank.handle(PaymentRequested, () => {
    handled++;
  });
  await billing.start();
  await bank.start();
  const traceId = await tracer.startActiveSpan('place order', async (root) => {
    await publisher.publish(OrderPlaced, { orderId: 'o-1' });
    root.end();
    return root.spanContext().traceId;
  });
  await waitFor(() => handled === 1 && spansOf(traceId).length === 5);
  await billing.close();
  await bank.close();
  const spans = spansOf(traceId);
  const root = one(spans, 'place order');
  const send1 = one(spans, `send ${orders}`);
  const process1 = one(spans, `process ${orders}`);
  const send2 = one(spans, `send ${payments}`);
  const process2 = one(spans, `process ${payments}`);
  assert.equal(parentOf(send1), root.spanContext().spanId);
  assert.equal(parentOf(process1), send1.spanContext().spanId);
  assert.equal(parentOf(send2), process1.spanContext().spanId, 'a publish inside a handler is a child of the handler span');
  assert.equal(parentOf(process2), send2.spanContext().spanId);
  assert.equal(send1.kind, SpanKind.PRODUCER);
  assert.equal(process1.kind, SpanKind.CONSUMER);
  assert.equal(process1.attributes['messaging.consumer.group.name'], 'billing');
  assert.equal(process1.attributes['messaging.operation.type'], 'process');
  assert.equal(process1.attributes['messaging.destination.name'], orders);
  assert.equal(typeof process1.attributes['messaging.destination.partition.id'], 'string');
  assert.equal(process1.attributes['messaging.message.id'], send1.attributes['messaging.message.id']);
  assert.equal(send1.attributes['messaging.operation.type'], 'send');
  assert.equal(process2.attributes['messaging.message.conversation_id'], send1.attributes['messaging.message.id'], 'correlation id of the second event is the first event id');
});

test('outbox: the consumer span is the child of the write; the relay span is linked to it', async () => {
  const topic = uniqueName('shipments');
  const ShipmentRequested = defineEvent('shipment.requested', z.object({ orderId: z.string() }), { topic, keyField: 'orderId' });
  const transport = createMemoryTransport();
  const uow = new MemoryUnitOfWork();
  const publisher = createPublisher({ transport, source: 'orders-service' });
  const relay = createOutboxRelay({ store: uow, transport, leases: uow.leases, pollMs: 10 });
  const consumer = createConsumer({ transport, group: 'shipping', deadLetters: new MemoryDeadLetterStore() });
  let handled = 0;
  consumer.handle(ShipmentRequested, () => {
    handled++;
  });
  await consumer.start();
  await relay.start();
  const traceId = await tracer.startActiveSpan('place order', async (root) => {
    const { topic: t, message } = await publisher.envelope(ShipmentRequested, { orderId: 'o-2' });
    await uow.withTransaction((tx) => tx.publish(t, message));
    root.end();
    return root.spanContext().traceId;
  });
  await waitFor(() => handled === 1 && spansOf(traceId).length === 3);
  await relay.close();
  await consumer.close();
  const spans = spansOf(traceId);
  const create = one(spans, `create ${topic}`);
  const processed = one(spans, `process ${topic}`);
  assert.equal(parentOf(create), one(spans, 'place order').spanContext().spanId);
  assert.equal(parentOf(processed), create.spanContext().spanId, 'the consumer is the child of the outbox write');
  const relaySpans = exporter.getFinishedSpans().filter((s) => s.name === `send ${topic}`);
  assert.equal(relaySpans.length, 1);
  const relaySpan = relaySpans[0]!;
  assert.notEqual(relaySpan.spanContext().traceId, traceId, 'the relay runs in its own trace');
  assert.deepEqual(
    relaySpan.links.map((l) => [l.context.traceId, l.context.spanId, l.attributes?.['herald.link.reason']]),
    [[traceId, create.spanContext().spanId, 'outbox']],
  );
});

test('retries are sibling attempt spans with an error status; a redrive is in the same trace and linked to the producer', async () => {
  const topic = uniqueName('flaky');
  const Flaky = defineEvent('flaky.happened', z.object({ n: z.number() }), { topic, keyField: 'n' });
  const transport = createMemoryTransport();
  const deadLetters = new MemoryDeadLetterStore();
  const publisher = createPublisher({ transport, source: 'svc' });
  let calls = 0;
  let fixed = false;
  const consumer = createConsumer({ transport, group: 'g', deadLetters, retry: { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 1 }, redrivePollMs: 20 });
  consumer.handle(Flaky, () => {
    calls++;
    if (!fixed) throw new Error(`boom ${calls}`);
  });
  await consumer.start();
  const traceId = await tracer.startActiveSpan('cause', async (root) => {
    await publisher.publish(Flaky, { n: 1 });
    root.end();
    return root.spanContext().traceId;
  });
  await waitFor(async () => (await deadLetters.count({ group: 'g' })) === 1);
  fixed = true;
  assert.equal(await deadLetters.redrive({ filter: { group: 'g' } }), 1);
  await waitFor(() => calls === 3 && spansOf(traceId).filter((s) => s.name === `process ${topic}`).length === 3);
  await consumer.close();
  const spans = spansOf(traceId);
  const send = one(spans, `send ${topic}`);
  const attempts = spans.filter((s) => s.name === `process ${topic}`).sort((a, b) => Number(a.attributes['herald.attempt']) - Number(b.attributes['herald.attempt']) || Number(Boolean(a.attributes['herald.redrive'])) - Number(Boolean(b.attributes['herald.redrive'])));
  for (const a of attempts) assert.equal(parentOf(a), send.spanContext().spanId);
  const failedAttempts = attempts.filter((a) => a.status.code === 2);
  assert.equal(failedAttempts.length, 2);
  assert.deepEqual(failedAttempts.map((a) => a.attributes['herald.attempt']).sort(), [1, 2]);
  assert.equal(failedAttempts[0]!.events[0]?.name, 'exception');
  const redrive = attempts.find((a) => a.attributes['herald.redrive'] === true);
  assert.ok(redrive, 'a redrive span');
  assert.equal(redrive.status.code, 0);
  assert.deepEqual(
    redrive.links.map((l) => [l.context.spanId, l.attributes?.['herald.link.reason']]),
    [[send.spanContext().spanId, 'redrive']],
  );
});

test('a permanent failure is recorded with its error type; the trace context in the envelope is W3C', async () => {
  const topic = uniqueName('bad');
  const Bad = defineEvent('bad.thing', z.object({ n: z.number() }), { topic });
  const transport = createMemoryTransport();
  const deadLetters = new MemoryDeadLetterStore();
  const publisher = createPublisher({ transport, source: 'svc' });
  const seen: string[] = [];
  const consumer = createConsumer({ transport, group: 'g', deadLetters });
  consumer.handle(Bad, (_d, ctx) => {
    seen.push(ctx.envelope.traceparent ?? '');
    throw new PermanentError('no');
  });
  await consumer.start();
  await publisher.publish(Bad, { n: 1 });
  await waitFor(async () => (await deadLetters.count({ group: 'g' })) === 1);
  await consumer.close();
  const send = exporter.getFinishedSpans().find((s) => s.name === `send ${topic}`)!;
  assert.match(seen[0]!, /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
  assert.equal(seen[0], `00-${send.spanContext().traceId}-${send.spanContext().spanId}-01`);
  const processed = exporter.getFinishedSpans().find((s) => s.name === `process ${topic}`)!;
  assert.equal(processed.attributes['error.type'], 'HERALD_ERR_PERMANENT');
  assert.equal(trace.getActiveSpan(), undefined);
});

test('a message whose traceparent is not sampled gets no span; what its handler publishes stays in that unsampled trace', async () => {
  const topic = uniqueName('unsampled');
  const next = uniqueName('unsampled-next');
  const In = defineEvent('unsampled.in', z.object({ n: z.number() }), { topic });
  const Out = defineEvent('unsampled.out', z.object({ n: z.number() }), { topic: next });
  const transport = createMemoryTransport();
  const publisher = createPublisher({ transport, source: 'svc' });
  const consumer = createConsumer({ transport, group: 'g', deadLetters: new MemoryDeadLetterStore() });
  consumer.handle(In, async (d, ctx) => {
    await publisher.publish(Out, d, { causedBy: ctx.envelope });
  });
  const seen: string[] = [];
  const downstream = createConsumer({ transport, group: 'g2', deadLetters: new MemoryDeadLetterStore() });
  downstream.handle(Out, (_d, ctx) => {
    seen.push(ctx.envelope.traceparent!);
  });
  await consumer.start();
  await downstream.start();
  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
  await publisher.publishEnvelopes(topic, [
    { envelope: (await publisher.envelope(In, { n: 1 }, { traceparent: `00-${traceId}-00f067aa0ba902b7-00` })).message.envelope },
  ]);
  await waitFor(() => seen.length === 1);
  await consumer.close();
  await downstream.close();
  assert.equal(spansOf(traceId).length, 0, 'nothing recorded in an unsampled trace');
  assert.match(seen[0]!, new RegExp(`^00-${traceId}-[0-9a-f]{16}-00$`), 'the next hop carries the same unsampled trace');
});

test('saga steps: one span per step with the saga, instance and step, the child of the consumer span of the message that triggered it; a timer step too', async () => {
  const name = uniqueName('ship');
  const starts = uniqueName('shipments');
  const work = uniqueName('warehouse');
  const Id = z.object({ id: z.string() });
  const Started = defineEvent('shipment.started', Id, { topic: starts, keyField: 'id' });
  const Reserve = defineCommand('stock.reserve', Id, { topic: work, keyField: 'id' });
  const Reserved = defineEvent('stock.reserved', Id, { topic: work, keyField: 'id' });
  const Pack = defineCommand('parcel.pack', Id, { topic: work, keyField: 'id' });
  const Packed = defineEvent('parcel.packed', Id, { topic: work, keyField: 'id' });
  const saga = defineSaga<{ id: string }, { id: string }>({
    name,
    startedBy: { event: Started, key: (d) => d.id, init: (d) => ({ id: d.id }) },
    steps: [
      { name: 'reserve', action: (s) => send(Reserve, { id: s.id }), replies: [onSuccess(Reserved)] },
      // Nobody packs: the step's timeout timer (a message with no triggering envelope) ends it.
      { name: 'pack', action: (s) => send(Pack, { id: s.id }), replies: [onSuccess(Packed)], timeoutMs: 30 },
    ],
  });
  const transport = createMemoryTransport();
  const deadLetters = new MemoryDeadLetterStore();
  const uow = new MemoryUnitOfWork();
  const store = new MemorySagaStore();
  const relay = createOutboxRelay({ store: uow, transport, leases: uow.leases, pollMs: 10 });
  const scheduler = createScheduler({ store: uow, transport, leases: uow.leases, pollMs: 10 });
  const runtime = createSagaRuntime({ sagas: [saga], store, unitOfWork: uow, transport, deadLetters, source: 'shipping-saga' });
  const publisher = createPublisher({ transport, source: 'shop' });
  const reservedId = `${name}-reserved`;
  const warehouse = createConsumer({ transport, group: 'warehouse', deadLetters });
  warehouse.handle(Reserve, async (data, ctx) => {
    await publisher.publish(Reserved, data, { causedBy: ctx.envelope, id: reservedId });
  });
  await transport.ensureTopic(work);
  await warehouse.start();
  await runtime.start();
  await relay.start();
  await scheduler.start();
  const startId = `${name}-start`;
  await tracer.startActiveSpan('start shipment', async (root) => {
    await publisher.publish(Started, { id: 's-1' }, { id: startId });
    root.end();
  });
  const stepSpans = () => exporter.getFinishedSpans().filter((s) => s.name.startsWith(`saga ${name} `));
  let status: string | undefined;
  await waitFor(async () => (status = (await store.get(name, 's-1'))?.status) === 'compensated' && stepSpans().length === 3, {
    timeoutMs: 5000,
    what: () => `the saga timed out on "pack" (status ${status}, step spans ${stepSpans().map((s) => s.name).join(', ')})`,
  });
  await scheduler.close();
  await relay.close();
  await runtime.close();
  await warehouse.close();
  const instance = (await store.get(name, 's-1'))!;
  const finished = exporter.getFinishedSpans();
  const processOf = (topic: string, messageId: string | undefined): ReadableSpan => {
    const found = finished.filter((s) => s.name === `process ${topic}` && s.attributes['messaging.consumer.group.name'] === `saga.${name}` && (messageId === undefined || s.attributes['messaging.message.id'] === messageId));
    assert.equal(found.length, 1, `one saga consumer span on ${topic} for ${messageId ?? 'the timer'} (got ${found.length})`);
    return found[0]!;
  };
  // The step recorded is the instance's step when the message arrived (the start event's type for the first).
  const expected: Array<[string, ReadableSpan, string | undefined]> = [
    [Started.type, processOf(starts, startId), startId],
    ['reserve', processOf(work, reservedId), reservedId],
    ['pack', processOf(saga.topic, undefined), undefined],
  ];
  assert.deepEqual(
    stepSpans().map((s) => s.name).sort(),
    expected.map(([step]) => `saga ${name} ${step}`).sort(),
    'one span per step',
  );
  for (const [step, consumerSpan, messageId] of expected) {
    const span = one(stepSpans(), `saga ${name} ${step}`);
    assert.equal(span.kind, SpanKind.INTERNAL);
    assert.equal(span.attributes['herald.saga'], name);
    assert.equal(span.attributes['herald.saga.instance_id'], instance.id);
    assert.equal(span.attributes['herald.saga.step'], step);
    assert.equal(span.attributes['messaging.message.id'], messageId, messageId ? 'the triggering message' : 'a timer step has no triggering envelope');
    assert.equal(span.spanContext().traceId, consumerSpan.spanContext().traceId, `step ${step}: in the trace of the consumer span`);
    assert.equal(parentOf(span), consumerSpan.spanContext().spanId, `step ${step}: the child of the consumer span that handled its message`);
  }
});
