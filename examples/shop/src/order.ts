/**
 * The Order aggregate, event-sourced: one stream `order-<id>` per order. It is also the checkout
 * saga's state: Order orchestrates Payment, Inventory and Shipping by recording what it asked for
 * and what they answered (an event per request sent and per answer), and `checkoutMessage` turns
 * each stored event into the one command or public event it causes. Both are pure (no I/O, no clock: times come in the commands).
 *
 *   placed ─▶ paying ──charged──▶ reserving ──reserved──▶ shipping ──shipped──▶ completed
 *               │ declined           │ rejected              │ deadline passed: cancel shipment
 *               ▼                    ▼                       ▼
 *           cancelled           compensating (refund)   cancelling_shipment ──shipped──▶ completed
 *                                    │                       │ cancelled by Shipping
 *                                    ▼                       ▼
 *                                cancelled ◀───────── compensating (refund + release)
 *
 * Replies that do not fit the current state (a redelivery, a late answer) decide nothing, so
 * the aggregate is its own deduplication: a reply handled twice has one effect. Shipping is the
 * authority on whether an order shipped: a shipment confirmed after Order asked to cancel it
 * still completes the order.
 */
import { HeraldError } from '@herald/core';
import type { Decider } from '@herald/eventsourcing';
import type { CancelReason, LineItem } from './events.ts';

export type OrderStatus = 'none' | 'paying' | 'reserving' | 'shipping' | 'cancelling_shipment' | 'compensating' | 'completed' | 'cancelled';
export const TERMINAL: readonly OrderStatus[] = ['completed', 'cancelled'];

export interface OrderDetails {
  readonly orderId: string;
  readonly customer: string;
  readonly email: string;
  readonly address: string;
  readonly card: string;
  readonly items: readonly LineItem[];
  /** Cents. */
  readonly total: number;
  readonly placedAt: number;
}

interface Who {
  readonly orderId: string;
  readonly customer: string;
  readonly email: string;
  readonly total: number;
}

export type OrderEvent =
  | { type: 'OrderPlaced'; data: OrderDetails }
  | { type: 'PaymentRequested'; data: { orderId: string; amount: number; card: string } }
  | { type: 'PaymentConfirmed'; data: { orderId: string; paymentId: string; items: readonly LineItem[] } }
  | { type: 'InventoryConfirmed'; data: { orderId: string; address: string; items: readonly LineItem[]; deadline: number } }
  | { type: 'ShippingTimedOut'; data: { orderId: string; at: number } }
  | { type: 'CompensationStarted'; data: { orderId: string; reason: CancelReason } }
  | { type: 'RefundRequested'; data: { orderId: string; amount: number } }
  | { type: 'ReleaseRequested'; data: { orderId: string } }
  | { type: 'RefundConfirmed'; data: { orderId: string } }
  | { type: 'ReleaseConfirmed'; data: { orderId: string } }
  | { type: 'OrderCompleted'; data: Who & { trackingNo: string; at: number } }
  | { type: 'OrderCancelled'; data: Who & { reason: CancelReason; refunded: boolean; at: number } };

export type OrderCommand =
  | { type: 'PlaceOrder'; data: Omit<OrderDetails, 'total' | 'placedAt'>; now: number }
  | { type: 'RecordPayment'; outcome: { charged: true; paymentId: string } | { charged: false; reason: string }; now: number }
  | { type: 'RecordReservation'; outcome: { reserved: true; deadline: number } | { reserved: false; reason: string }; now: number }
  | { type: 'RecordShipment'; outcome: { shipped: true; trackingNo: string } | { shipped: false; reason: string }; now: number }
  | { type: 'TimeOutShipping'; now: number }
  | { type: 'RecordRefund'; now: number }
  | { type: 'RecordRelease'; now: number };

export interface Order {
  readonly status: OrderStatus;
  readonly details: OrderDetails | undefined;
  readonly deadline: number | undefined;
  readonly reason: CancelReason | undefined;
  readonly trackingNo: string | undefined;
  /** While compensating: what is still to be confirmed. */
  readonly pending: { readonly refund: boolean; readonly release: boolean; readonly refunded: boolean };
}

const initial: Order = { status: 'none', details: undefined, deadline: undefined, reason: undefined, trackingNo: undefined, pending: { refund: false, release: false, refunded: false } };

export const totalOf = (items: readonly LineItem[]): number => items.reduce((s, i) => s + i.qty * i.price, 0);

function who(o: Order): Who {
  const d = o.details!;
  return { orderId: d.orderId, customer: d.customer, email: d.email, total: d.total };
}

function compensate(o: Order, reason: CancelReason, refund: boolean, release: boolean, now: number): OrderEvent[] {
  const d = o.details!;
  // nothing to undo: cancelled at once
  if (!refund && !release) return [{ type: 'OrderCancelled', data: { ...who(o), reason, refunded: false, at: now } }];
  const events: OrderEvent[] = [{ type: 'CompensationStarted', data: { orderId: d.orderId, reason } }];
  if (refund) events.push({ type: 'RefundRequested', data: { orderId: d.orderId, amount: d.total } });
  if (release) events.push({ type: 'ReleaseRequested', data: { orderId: d.orderId } });
  return events;
}

function confirm(o: Order, which: 'refund' | 'release', now: number): OrderEvent[] {
  if (o.status !== 'compensating' || !o.pending[which]) return [];
  const d = o.details!;
  const done: OrderEvent = which === 'refund' ? { type: 'RefundConfirmed', data: { orderId: d.orderId } } : { type: 'ReleaseConfirmed', data: { orderId: d.orderId } };
  const left = { ...o.pending, [which]: false };
  if (left.refund || left.release) return [done];
  return [done, { type: 'OrderCancelled', data: { ...who(o), reason: o.reason!, refunded: o.pending.refunded || which === 'refund', at: now } }];
}

/** The status an event moves an order to (events not listed keep it). The read model uses it too. */
export const STATUS_AFTER: Readonly<Partial<Record<OrderEvent['type'], OrderStatus>>> = {
  OrderPlaced: 'paying',
  PaymentConfirmed: 'reserving',
  InventoryConfirmed: 'shipping',
  ShippingTimedOut: 'cancelling_shipment',
  CompensationStarted: 'compensating',
  OrderCompleted: 'completed',
  OrderCancelled: 'cancelled',
};

export const orderDecider: Decider<OrderCommand, Order, OrderEvent> = {
  initialState: () => initial,

  decide(c, o) {
    switch (c.type) {
      case 'PlaceOrder': {
        if (o.status !== 'none') return []; // placing the same order again changes nothing
        const items = c.data.items;
        if (items.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `order "${c.data.orderId}" has no items`);
        const placed: OrderDetails = { ...c.data, total: totalOf(items), placedAt: c.now };
        return [
          { type: 'OrderPlaced', data: placed },
          { type: 'PaymentRequested', data: { orderId: placed.orderId, amount: placed.total, card: placed.card } },
        ];
      }
      case 'RecordPayment': {
        if (o.status !== 'paying') return [];
        const d = o.details!;
        if (c.outcome.charged) return { type: 'PaymentConfirmed', data: { orderId: d.orderId, paymentId: c.outcome.paymentId, items: d.items } };
        return compensate(o, 'payment_declined', false, false, c.now);
      }
      case 'RecordReservation': {
        if (o.status !== 'reserving') return [];
        const d = o.details!;
        if (c.outcome.reserved) return { type: 'InventoryConfirmed', data: { orderId: d.orderId, address: d.address, items: d.items, deadline: c.outcome.deadline } };
        return compensate(o, 'out_of_stock', true, false, c.now);
      }
      case 'RecordShipment': {
        if (o.status !== 'shipping' && o.status !== 'cancelling_shipment') return [];
        if (c.outcome.shipped) return { type: 'OrderCompleted', data: { ...who(o), trackingNo: c.outcome.trackingNo, at: c.now } };
        return compensate(o, 'shipping_failed', true, true, c.now);
      }
      case 'TimeOutShipping':
        if (o.status !== 'shipping' || o.deadline === undefined || c.now < o.deadline) return [];
        return { type: 'ShippingTimedOut', data: { orderId: o.details!.orderId, at: c.now } };
      case 'RecordRefund':
        return confirm(o, 'refund', c.now);
      case 'RecordRelease':
        return confirm(o, 'release', c.now);
    }
  },

  evolve(o, e) {
    const status = STATUS_AFTER[e.type] ?? o.status;
    switch (e.type) {
      case 'OrderPlaced':
        return { ...o, status, details: e.data };
      case 'InventoryConfirmed':
        return { ...o, status, deadline: e.data.deadline };
      case 'CompensationStarted':
        return { ...o, status, reason: e.data.reason };
      case 'RefundRequested':
        return { ...o, pending: { ...o.pending, refund: true } };
      case 'ReleaseRequested':
        return { ...o, pending: { ...o.pending, release: true } };
      case 'RefundConfirmed':
        return { ...o, pending: { ...o.pending, refund: false, refunded: true } };
      case 'ReleaseConfirmed':
        return { ...o, pending: { ...o.pending, release: false } };
      case 'OrderCompleted':
        return { ...o, status, trackingNo: e.data.trackingNo };
      case 'OrderCancelled':
        return { ...o, status, reason: e.data.reason };
      default:
        return { ...o, status };
    }
  },
};
