// The shop's messages on the wire: every definition names its topic and takes the order id as its
// partition key, so everything about one order stays in order on every topic.
//
//   orders              Order's public events (choreography: Notification, Analytics)
//   checkout            Order → the checkout saga: an order to check out (with card and address)
//   order-commands      the checkout saga → Order: complete, cancel
//   payment-commands    Order → Payment: charge, refund
//   payments            Payment → Order: charged, declined, refunded
//   inventory-commands  Order → Inventory: reserve, release
//   inventory           Inventory → Order: reserved, rejected, released
//   shipping-commands   Order → Shipping: ship (with a deadline)
//   shipments           Shipping → Order: shipped, refused (ShipmentCancelled: deadline passed)
import { z } from 'zod';
import { defineCommand, defineEvent } from '@herald/core';

const key = { keyField: 'orderId' } as const;

export const LineItem = z.object({
  sku: z.string().min(1).max(64),
  qty: z.number().int().positive().max(1000),
  /** Unit price in cents. */
  price: z.number().int().nonnegative(),
});
export type LineItem = z.infer<typeof LineItem>;

/** Why an order ended cancelled. */
export const CancelReason = z.enum(['payment_declined', 'out_of_stock', 'shipping_failed']);
export type CancelReason = z.infer<typeof CancelReason>;

// ── Order's public events ────────────────────────────────────────────────────
export const OrderPlaced = defineEvent(
  'shop.order.placed',
  z.object({ orderId: z.string(), customer: z.string(), email: z.string(), total: z.number().int(), items: z.array(LineItem).min(1), placedAt: z.number() }),
  { version: 1, topic: 'orders', ...key },
);
export const OrderCompleted = defineEvent(
  'shop.order.completed',
  z.object({ orderId: z.string(), customer: z.string(), email: z.string(), total: z.number().int(), trackingNo: z.string(), completedAt: z.number() }),
  { version: 1, topic: 'orders', ...key },
);
export const OrderCancelled = defineEvent(
  'shop.order.cancelled',
  z.object({ orderId: z.string(), customer: z.string(), email: z.string(), total: z.number().int(), reason: CancelReason, refunded: z.boolean(), cancelledAt: z.number() }),
  { version: 1, topic: 'orders', ...key },
);

// ── between Order and the checkout saga ──────────────────────────────────────
export const CheckoutRequested = defineEvent(
  'shop.checkout.requested',
  z.object({ orderId: z.string(), total: z.number().int(), card: z.string(), address: z.string(), items: z.array(LineItem).min(1), placedAt: z.number() }),
  { version: 1, topic: 'checkout', ...key },
);
export const CompleteOrder = defineCommand('shop.order.complete', z.object({ orderId: z.string(), trackingNo: z.string() }), { version: 1, topic: 'order-commands', ...key });
export const CancelOrder = defineCommand('shop.order.cancel', z.object({ orderId: z.string(), reason: CancelReason, refunded: z.boolean() }), {
  version: 1,
  topic: 'order-commands',
  ...key,
});

// ── Payment ─────────────────────────────────────────────────────────────────
export const ChargePayment = defineCommand(
  'shop.payment.charge',
  z.object({ orderId: z.string(), amount: z.number().int().nonnegative(), card: z.string().regex(/^\d{12,19}$/) }),
  { version: 1, topic: 'payment-commands', ...key },
);
export const RefundPayment = defineCommand('shop.payment.refund', z.object({ orderId: z.string(), amount: z.number().int().nonnegative() }), {
  version: 1,
  topic: 'payment-commands',
  ...key,
});
export const PaymentCharged = defineEvent('shop.payment.charged', z.object({ orderId: z.string(), paymentId: z.string(), amount: z.number().int() }), {
  version: 1,
  topic: 'payments',
  ...key,
});
export const PaymentDeclined = defineEvent('shop.payment.declined', z.object({ orderId: z.string(), reason: z.string() }), { version: 1, topic: 'payments', ...key });
export const PaymentRefunded = defineEvent('shop.payment.refunded', z.object({ orderId: z.string(), amount: z.number().int() }), { version: 1, topic: 'payments', ...key });

// ── Inventory ───────────────────────────────────────────────────────────────
export const ReserveInventory = defineCommand('shop.inventory.reserve', z.object({ orderId: z.string(), items: z.array(LineItem).min(1) }), {
  version: 1,
  topic: 'inventory-commands',
  ...key,
});
export const ReleaseInventory = defineCommand('shop.inventory.release', z.object({ orderId: z.string() }), { version: 1, topic: 'inventory-commands', ...key });
export const InventoryReserved = defineEvent('shop.inventory.reserved', z.object({ orderId: z.string() }), { version: 1, topic: 'inventory', ...key });
export const InventoryRejected = defineEvent('shop.inventory.rejected', z.object({ orderId: z.string(), sku: z.string(), reason: z.string() }), {
  version: 1,
  topic: 'inventory',
  ...key,
});
export const InventoryReleased = defineEvent('shop.inventory.released', z.object({ orderId: z.string() }), { version: 1, topic: 'inventory', ...key });

// ── Shipping ────────────────────────────────────────────────────────────────
export const ShipOrder = defineCommand(
  'shop.shipping.ship',
  z.object({ orderId: z.string(), address: z.string(), items: z.array(LineItem).min(1), /** Epoch ms: Shipping refuses to ship after it. */ deadline: z.number() }),
  { version: 1, topic: 'shipping-commands', ...key },
);
export const OrderShipped = defineEvent('shop.shipping.shipped', z.object({ orderId: z.string(), trackingNo: z.string() }), { version: 1, topic: 'shipments', ...key });
export const ShipmentCancelled = defineEvent('shop.shipping.cancelled', z.object({ orderId: z.string(), reason: z.string() }), {
  version: 1,
  topic: 'shipments',
  ...key,
});

/** Every topic of the shop. */
export const TOPICS = ['orders', 'checkout', 'order-commands', 'payment-commands', 'payments', 'inventory-commands', 'inventory', 'shipping-commands', 'shipments'] as const;
