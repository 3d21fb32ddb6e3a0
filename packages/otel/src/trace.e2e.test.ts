// One trace across two OS processes on one SQLite file:
//   this process: PlaceOrder command → handler writes OrderPlaced to the outbox (same transaction
//   as its business row) → relay publishes it; later handles PaymentRequested.
//   child process: handles OrderPlaced → publishes PaymentRequested.
// Spans of both processes are checked together: the child prints its spans as JSON lines.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SpanKind } from '@opentelemetry/api';
import { createConsumer, createOutboxRelay, createPublisher } from '@herald/core';
import { createSqliteOutboxStore, createSqliteTransport, createSqliteUnitOfWork, SqliteDeadLetterStore, SqliteLeaseStore } from '@herald/sqlite';
import { waitFor } from '@herald/testkit';
import { flow, type SpanRecord, testTracing, toSpanRecord } from './fixtures/flow.ts';

const CHILD = fileURLToPath(new URL('./fixtures/billing-process.ts', import.meta.url));

const { exporter } = testTracing();

function startChild(path: string, suffix: string): { proc: ChildProcess; spans: SpanRecord[]; ready: Promise<void>; stopped: Promise<void> } {
  const proc = spawn(process.execPath, ['--import', 'tsx', CHILD, path, suffix], { stdio: ['pipe', 'pipe', 'inherit'] });
  const spans: SpanRecord[] = [];
  let ready!: () => void;
  let stopped!: () => void;
  const r = new Promise<void>((res) => (ready = res));
  const s = new Promise<void>((res) => (stopped = res));
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    const m = JSON.parse(line) as { span?: SpanRecord; ready?: boolean; stopped?: boolean };
    if (m.span) spans.push(m.span);
    if (m.ready) ready();
    if (m.stopped) stopped();
  });
  proc.on('exit', () => stopped());
  return { proc, spans, ready: r, stopped: s };
}

test('command → event via outbox → handler in another process → event → handler: one trace, parent/child and the relay link', async (t) => {
  const path = join(tmpdir(), `herald-otel-${randomUUID()}.db`);
  t.after(() => {
    for (const suffix of ['', '-wal', '-shm']) rmSync(path + suffix, { force: true });
  });
  const suffix = randomUUID().slice(0, 8);
  const { PlaceOrder, OrderPlaced, PaymentRequested } = flow(suffix);
  const transport = createSqliteTransport({ path, leaseMs: 2000, heartbeatMs: 100, pollMs: 5 });
  const deadLetters = new SqliteDeadLetterStore({ path });
  const uow = createSqliteUnitOfWork({ path });
  const outbox = createSqliteOutboxStore({ path });
  const leases = new SqliteLeaseStore({ path });
  const relay = createOutboxRelay({ store: outbox, transport, leases, pollMs: 10 });
  const publisher = createPublisher({ transport, source: 'orders-service' });
  await uow.withTransaction((tx) => {
    tx.native.exec('CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY)');
  });

  const orders = createConsumer({ transport, group: 'orders', deadLetters });
  orders.handle(PlaceOrder, async (cmd, ctx) => {
    const { topic, message } = await publisher.envelope(OrderPlaced, cmd, { causedBy: ctx.envelope });
    await uow.withTransaction((tx) => {
      tx.native.prepare('INSERT INTO orders (id) VALUES (?)').run(cmd.orderId);
      tx.publish(topic, message);
    });
  });
  let paid = 0;
  const bank = createConsumer({ transport, group: 'bank', deadLetters });
  bank.handle(PaymentRequested, () => {
    paid++;
  });
  const child = startChild(path, suffix);
  t.after(() => {
    if (child.proc.exitCode === null) child.proc.kill('SIGKILL');
  });
  await child.ready;
  await orders.start();
  await bank.start();
  await relay.start();

  await publisher.publish(PlaceOrder, { orderId: 'o-1', email: 'ann@example.com' });
  await waitFor(() => paid === 1, { timeoutMs: 10_000 });
  child.proc.stdin!.write('stop\n');
  await child.stopped;
  await relay.close();
  await orders.close();
  await bank.close();
  await transport.close();
  await deadLetters.close();
  await outbox.close();
  await leases.close();
  await uow.close();

  const local = exporter.getFinishedSpans().map((s) => toSpanRecord(s, 'orders'));
  const all = [...local, ...child.spans];
  const named = (name: string, process: string): SpanRecord => {
    const found = all.filter((s) => s.name === name && s.process === process && s.name.split(' ')[0] !== undefined);
    assert.equal(found.length, 1, `one "${name}" in ${process} (spans: ${all.map((s) => `${s.process}:${s.name}`).join(', ')})`);
    return found[0]!;
  };
  const sendCommand = named(`send commands-${suffix}`, 'orders');
  const processCommand = named(`process commands-${suffix}`, 'orders');
  const create = named(`create orders-${suffix}`, 'orders');
  const relaySend = named(`send orders-${suffix}`, 'orders');
  const processOrder = named(`process orders-${suffix}`, 'billing');
  const sendPayment = named(`send payments-${suffix}`, 'billing');
  const processPayment = named(`process payments-${suffix}`, 'orders');

  const traceId = sendCommand.traceId;
  assert.equal(sendCommand.parentSpanId, undefined, 'the command publish starts the trace');
  for (const s of [processCommand, create, processOrder, sendPayment, processPayment]) assert.equal(s.traceId, traceId, `${s.process}:${s.name} is in the trace`);
  assert.equal(processCommand.parentSpanId, sendCommand.spanId);
  assert.equal(create.parentSpanId, processCommand.spanId, 'the outbox write is made inside the command handler');
  assert.equal(processOrder.parentSpanId, create.spanId, 'the other process continues from the envelope written to the outbox');
  assert.equal(sendPayment.parentSpanId, processOrder.spanId);
  assert.equal(processPayment.parentSpanId, sendPayment.spanId, 'and back into the first process');
  assert.notEqual(relaySend.traceId, traceId, 'the relay works in a trace of its own');
  assert.deepEqual(relaySend.links, [{ traceId, spanId: create.spanId, reason: 'outbox' }]);
  assert.deepEqual(
    [sendCommand, processCommand, create, relaySend, processOrder, sendPayment, processPayment].map((s) => s.kind),
    [SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.PRODUCER, SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.PRODUCER, SpanKind.CONSUMER],
  );
  assert.equal(processOrder.attributes['messaging.consumer.group.name'], 'billing');
  assert.equal(processOrder.attributes['messaging.message.id'], create.attributes['messaging.message.id']);
  assert.equal(processPayment.attributes['messaging.message.conversation_id'], processCommand.attributes['messaging.message.id'], 'the correlation id runs through all three hops');
});
