// Notification: writes the messages a customer would get (consumer group 'notification' on
// 'orders' — choreography: Order does not know it exists). One message per (order, kind), in the
// same transaction as the inbox record.
import type { MessageContext } from '@herald/core';
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
  /** Writes the customer's message about an order, once per (order, kind). */
  const notify = (ctx: MessageContext, orderId: string, kind: string, email: string, text: string): Promise<void> =>
    inInbox(backend, source, ctx, async (tx) => void (await tx.sql.run(INSERT, orderId, kind, email, text, ctx.clock.now())));
  consumer.handle(OrderPlaced, (o, ctx) => notify(ctx, o.orderId, 'placed', o.email, `Hello ${o.customer}, we received your order ${o.orderId} (${money(o.total)}).`));
  consumer.handle(OrderCompleted, (o, ctx) => notify(ctx, o.orderId, 'completed', o.email, `Your order ${o.orderId} is on its way: tracking number ${o.trackingNo}.`));
  consumer.handle(OrderCancelled, (o, ctx) => notify(ctx, o.orderId, 'cancelled', o.email, `Your order ${o.orderId} was cancelled: ${REASONS[o.reason] ?? o.reason}.`));
});
