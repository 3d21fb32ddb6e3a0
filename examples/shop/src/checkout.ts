/**
 * The checkout saga's outgoing side: the one message (if any) each stored Order event causes on
 * the wire. Pure, and a function of the event alone: the event-store outbox calls it inside the
 * append's transaction, so an order's events and the commands they send commit together. The
 * message's id is the stored event's id, so a message the relay sends twice is one message to
 * the receiver's inbox.
 */
import type { MessageDefinition } from '@herald/core';
import { CancelShipment, ChargePayment, OrderCancelled, OrderCompleted, OrderPlaced, RefundPayment, ReleaseInventory, ReserveInventory, ShipOrder } from './events.ts';
import type { OrderEvent } from './order.ts';

export interface Outgoing<T = unknown> {
  readonly definition: MessageDefinition<T>;
  readonly data: T;
}

const out = <T>(definition: MessageDefinition<T>, data: T): Outgoing => ({ definition, data }) as Outgoing;

export function checkoutMessage(e: OrderEvent): Outgoing | undefined {
  switch (e.type) {
    case 'OrderPlaced': {
      const d = e.data;
      return out(OrderPlaced, { orderId: d.orderId, customer: d.customer, email: d.email, total: d.total, items: [...d.items], placedAt: d.placedAt });
    }
    case 'PaymentRequested':
      return out(ChargePayment, { orderId: e.data.orderId, amount: e.data.amount, card: e.data.card });
    case 'PaymentConfirmed':
      return out(ReserveInventory, { orderId: e.data.orderId, items: [...e.data.items] });
    case 'InventoryConfirmed':
      return out(ShipOrder, { orderId: e.data.orderId, address: e.data.address, items: [...e.data.items], deadline: e.data.deadline });
    case 'ShippingTimedOut':
      return out(CancelShipment, { orderId: e.data.orderId });
    case 'RefundRequested':
      return out(RefundPayment, { orderId: e.data.orderId, amount: e.data.amount });
    case 'ReleaseRequested':
      return out(ReleaseInventory, { orderId: e.data.orderId });
    case 'OrderCompleted': {
      const { at, ...d } = e.data;
      return out(OrderCompleted, { ...d, completedAt: at });
    }
    case 'OrderCancelled': {
      const { at, ...d } = e.data;
      return out(OrderCancelled, { ...d, cancelledAt: at });
    }
    case 'CompensationStarted':
    case 'RefundConfirmed':
    case 'ReleaseConfirmed':
      return undefined;
  }
}
