// Shipping: ships reserved orders (consumer group 'shipping' on 'shipping-commands'). Shipping
// is the authority on whether an order shipped: a ship command past its deadline is refused
// (the checkout saga then releases, refunds and cancels), and asked again it gives the same
// answer. SHIPPING_DELAY_MS (default 0) is the time a shipment takes.
import { sleepWith } from '@herald/core';
import { OrderShipped, ShipmentCancelled, ShipOrder } from '../src/events.ts';
import { envNumber } from '../src/runtime.ts';
import { inInbox, runConsumerService } from '../src/service.ts';

const delayMs = envNumber('SHIPPING_DELAY_MS', 0);

const DDL = `CREATE TABLE IF NOT EXISTS shop_shipments (
  order_id TEXT PRIMARY KEY,
  status TEXT NOT NULL CHECK (status IN ('shipped', 'cancelled')),
  tracking_no TEXT,
  reason TEXT,
  updated_at BIGINT NOT NULL
)`;

interface ShipmentRow {
  status: string;
  tracking_no: string | null;
  reason: string | null;
}

await runConsumerService('shipping', DDL, ({ backend, consumer, source }) => {
  consumer.handle(ShipOrder, async (cmd, ctx) => {
    if (delayMs > 0) await sleepWith(ctx.clock, delayMs, ctx.signal);
    await inInbox(backend, source, ctx, async (tx) => {
      const known = await tx.sql.get<ShipmentRow>('SELECT status, tracking_no, reason FROM shop_shipments WHERE order_id = ?', cmd.orderId);
      if (known) {
        if (known.status === 'shipped') tx.publish(OrderShipped, { orderId: cmd.orderId, trackingNo: known.tracking_no! });
        else tx.publish(ShipmentCancelled, { orderId: cmd.orderId, reason: known.reason ?? 'cancelled' });
        return;
      }
      const now = ctx.clock.now();
      if (now > cmd.deadline) {
        const reason = `deadline passed ${now - cmd.deadline} ms before shipping`;
        await tx.sql.run(`INSERT INTO shop_shipments (order_id, status, reason, updated_at) VALUES (?, 'cancelled', ?, ?)`, cmd.orderId, reason, now);
        tx.publish(ShipmentCancelled, { orderId: cmd.orderId, reason });
        return;
      }
      const trackingNo = `TRK-${ctx.envelope.id.slice(-12)}`;
      await tx.sql.run(`INSERT INTO shop_shipments (order_id, status, tracking_no, updated_at) VALUES (?, 'shipped', ?, ?)`, cmd.orderId, trackingNo, now);
      tx.publish(OrderShipped, { orderId: cmd.orderId, trackingNo });
    });
  });
});
