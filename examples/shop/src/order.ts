/**
 * The Order aggregate, event-sourced: one stream `order-<id>` per order. Placing an order
 * records it and asks for its checkout; the checkout saga (checkout.ts) answers with complete or
 * cancel. Pure: no I/O, no clock (times come in the commands).
 *
 *   none ──PlaceOrder──▶ placed ──CompleteOrder──▶ completed
 *                          └─────CancelOrder────▶ cancelled
 *
 * Commands that do not fit the state decide nothing (placing an order twice, a complete or cancel
 * delivered again), so the aggregate is its own deduplication: a command handled twice has one
 * effect. An order ends in exactly one terminal state: once completed it cannot be cancelled.
 */
import { HeraldError } from '@herald/core';
import type { Decider } from '@herald/eventsourcing';
import type { CancelReason, LineItem } from './events.ts';

export type OrderStatus = 'none' | 'placed' | 'completed' | 'cancelled';

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
  | { type: 'CheckoutRequested'; data: { orderId: string; total: number; card: string; address: string; items: readonly LineItem[]; placedAt: number } }
  | { type: 'OrderCompleted'; data: Who & { trackingNo: string; at: number } }
  | { type: 'OrderCancelled'; data: Who & { reason: CancelReason; refunded: boolean; at: number } };

export type OrderCommand =
  | { type: 'PlaceOrder'; data: Omit<OrderDetails, 'total' | 'placedAt'>; now: number }
  | { type: 'CompleteOrder'; trackingNo: string; now: number }
  | { type: 'CancelOrder'; reason: CancelReason; refunded: boolean; now: number };

export interface Order {
  readonly status: OrderStatus;
  readonly details: OrderDetails | undefined;
  readonly reason: CancelReason | undefined;
  readonly trackingNo: string | undefined;
}

const initial: Order = { status: 'none', details: undefined, reason: undefined, trackingNo: undefined };

export const totalOf = (items: readonly LineItem[]): number => items.reduce((s, i) => s + i.qty * i.price, 0);

function who(o: Order): Who {
  const d = o.details!;
  return { orderId: d.orderId, customer: d.customer, email: d.email, total: d.total };
}

/** The status an event moves an order to (the read model uses it too). */
export const STATUS_AFTER: Readonly<Partial<Record<OrderEvent['type'], OrderStatus>>> = {
  OrderPlaced: 'placed',
  OrderCompleted: 'completed',
  OrderCancelled: 'cancelled',
};

export const orderDecider: Decider<OrderCommand, Order, OrderEvent> = {
  initialState: () => initial,

  decide(c, o) {
    switch (c.type) {
      case 'PlaceOrder': {
        if (o.status !== 'none') return []; // placing the same order again changes nothing
        const { items } = c.data;
        if (items.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `order "${c.data.orderId}" has no items`);
        const placed: OrderDetails = { ...c.data, total: totalOf(items), placedAt: c.now };
        return [
          { type: 'OrderPlaced', data: placed },
          { type: 'CheckoutRequested', data: { orderId: placed.orderId, total: placed.total, card: placed.card, address: placed.address, items: placed.items, placedAt: placed.placedAt } },
        ];
      }
      case 'CompleteOrder':
        if (o.status !== 'placed') return [];
        return { type: 'OrderCompleted', data: { ...who(o), trackingNo: c.trackingNo, at: c.now } };
      case 'CancelOrder':
        if (o.status !== 'placed') return [];
        return { type: 'OrderCancelled', data: { ...who(o), reason: c.reason, refunded: c.refunded, at: c.now } };
    }
  },

  evolve(o, e) {
    switch (e.type) {
      case 'OrderPlaced':
        return { ...o, status: 'placed', details: e.data };
      case 'OrderCompleted':
        return { ...o, status: 'completed', trackingNo: e.data.trackingNo };
      case 'OrderCancelled':
        return { ...o, status: 'cancelled', reason: e.data.reason };
      default:
        return o;
    }
  },
};
