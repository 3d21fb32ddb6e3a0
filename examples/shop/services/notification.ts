// Notification: writes the messages a customer would get (consumer group 'notification' on
// 'orders' — choreography: Order does not know it exists). One message per (order, kind), in the
// same transaction as the inbox record.
import { OrderCancelled, OrderCompleted, OrderPlaced } from '../src/events.ts';
import { inInbox, runConsumerService } from '../src/service.ts';

const DDL = `CREATE TABLE IF NOT EXISTS shop_notifications (
  order_id TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('placed', 'completed', 'cancelled')),
  email TEXT NOT NULL,
  message TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (order_id, kind)
)`;

const money = (cents: number): string => `€${(cents / 100).toFixed(2)}`;
const REASONS: Record<string, string> = {
  payment_declined: 'your payment was declined',
  out_of_stock: 'an item is out of stock; your payment was refunded',
  shipping_failed: 'we could not ship it in time; your payment was refunded',
};

const INSERT = 'INSERT INTO shop_notifications (order_id, kind, email, message, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (order_id, kind) DO NOTHING';

await runConsumerService('notification', DDL, ({ backend, consumer, source }) => {
  consumer.handle(OrderPlaced, (o, ctx) =>
    inInbox(backend, source, ctx, async (tx) => {
      await tx.sql.run(
        INSERT,
        o.orderId,
        'placed',
        o.email,
        `Hello ${o.customer}, we received your order ${o.orderId} (${money(o.total)}).`,
        ctx.clock.now(),
      );
    }),
  );
  consumer.handle(OrderCompleted, (o, ctx) =>
    inInbox(backend, source, ctx, async (tx) => {
      await tx.sql.run(
        INSERT,
        o.orderId,
        'completed',
        o.email,
        `Your order ${o.orderId} is on its way: tracking number ${o.trackingNo}.`,
        ctx.clock.now(),
      );
    }),
  );
  consumer.handle(OrderCancelled, (o, ctx) =>
    inInbox(backend, source, ctx, async (tx) => {
      await tx.sql.run(
        INSERT,
        o.orderId,
        'cancelled',
        o.email,
        `Your order ${o.orderId} was cancelled: ${REASONS[o.reason] ?? o.reason}.`,
        ctx.clock.now(),
      );
    }),
  );
});
