// The shipping service: consumer group 'shipping' on 'orders'; ships each order and publishes
// OrderShipped. An unusable address is a PermanentError: straight to dead letters.
import { createConsumer, createPublisher, PermanentError } from '@herald/core';
import { createSqliteTransport, SqliteDeadLetterStore } from '@herald/sqlite';
import { OrderPlaced, OrderShipped } from './events.ts';

const path = process.env.DEMO_DB!;
const total = Number(process.env.DEMO_ORDERS ?? 2000);
const transport = createSqliteTransport({ path });
const deadLetters = new SqliteDeadLetterStore({ path });
const publisher = createPublisher({ transport, source: 'demo/shipping' });
const lastSeen = new Map<string, string>();
let outOfOrder = 0;

const consumer = createConsumer({ transport, group: 'shipping', deadLetters, retry: { maxAttempts: 3, initialDelayMs: 10 } });
consumer.handle(OrderPlaced, async (order, ctx) => {
  // per-key order check: publish times of one key never go backwards
  const prev = lastSeen.get(order.orderId);
  if (prev !== undefined && ctx.envelope.time! < prev) outOfOrder++;
  lastSeen.set(order.orderId, ctx.envelope.time!);
  if (order.address === 'nowhere') throw new PermanentError(`cannot ship ${order.orderId}: no such address "${order.address}"`);
  await publisher.publish(OrderShipped, { orderId: order.orderId, trackingNo: `TRK-${ctx.envelope.id.slice(0, 8)}` }, { causedBy: ctx.envelope });
});
await consumer.start();

const timer = setInterval(() => {
  const s = consumer.stats();
  process.send?.({ handled: s.handled, deadLettered: s.deadLettered, outOfOrder });
  if (s.handled + s.deadLettered >= total) {
    clearInterval(timer);
    void consumer.close().then(async () => {
      await deadLetters.close();
      await transport.close();
      process.exit(0);
    });
  }
}, 100);
