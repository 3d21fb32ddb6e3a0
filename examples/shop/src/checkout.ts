/**
 * The checkout: an orchestrated saga (`defineSaga`), run by the Order service's saga runtime.
 * Started by `shop.checkout.requested` (Order records it with the order), keyed by order id:
 *
 *   payment    charge the card          declined → cancel (nothing to undo)
 *   inventory  reserve the items        rejected → refund, cancel
 *   shipping   ship by the deadline     refused (deadline passed) → release, refund, cancel
 *
 * and then tells Order: complete (with the tracking number) or cancel (with the reason).
 *
 * The shipping timeout is Shipping's to enforce: the ship command carries a deadline
 * (`shippingTimeoutMs` after the order was placed) and Shipping refuses it once that has passed,
 * so its answer — shipped or refused — is the only one, and a stopped Shipping delays it but can
 * never contradict it. (A timer in the saga that compensated on its own would race Shipping's
 * "shipped" still on its way: the first version of this shop did that, and its 60-second run
 * found 4 orders of 900 both shipped and cancelled, the answers having queued behind Shipping's
 * backlog after a restart.) Compensations wait for their answers without a time limit too: the
 * participants are durable and answer when they are back.
 *
 * Also here: `orderMessage`, the one message each stored Order event causes on the wire, written
 * to the outbox in the append's transaction. Its id is the event's id, so a message relayed twice
 * is one message to the receiver's inbox.
 */
import type { MessageDefinition } from '@herald/core';
import { defineSaga, onFailure, onSuccess, type SagaDefinition, type SagaFailure, send } from '@herald/eventsourcing';
import {
  CancelOrder,
  type CancelReason,
  ChargePayment,
  CheckoutRequested,
  CompleteOrder,
  InventoryRejected,
  InventoryReleased,
  InventoryReserved,
  type LineItem,
  OrderCancelled,
  OrderCompleted,
  OrderPlaced,
  OrderShipped,
  PaymentCharged,
  PaymentDeclined,
  PaymentRefunded,
  RefundPayment,
  ReleaseInventory,
  ReserveInventory,
  ShipmentCancelled,
  ShipOrder,
} from './events.ts';
import type { OrderEvent } from './order.ts';

export interface CheckoutState {
  readonly orderId: string;
  readonly total: number;
  readonly card: string;
  readonly address: string;
  readonly items: readonly LineItem[];
  readonly placedAt: number;
  readonly paymentId?: string;
  readonly trackingNo?: string;
}

export interface CheckoutOptions {
  /** Shipping must ship within this long of the order being placed, ms (default 120 000). */
  readonly shippingTimeoutMs?: number;
}

const REASON_BY_STEP: Readonly<Record<string, CancelReason>> = { payment: 'payment_declined', inventory: 'out_of_stock', shipping: 'shipping_failed' };

/** Why Order is told to cancel, from the step that failed. */
export function cancelReason(failure: SagaFailure | undefined): CancelReason {
  return REASON_BY_STEP[failure?.step ?? ''] ?? 'shipping_failed';
}

export function checkoutSaga(options: CheckoutOptions = {}): SagaDefinition<CheckoutState, typeof CheckoutRequested extends MessageDefinition<infer T> ? T : never> {
  const shippingTimeoutMs = options.shippingTimeoutMs ?? 120_000;
  return defineSaga({
    name: 'checkout',
    startedBy: { event: CheckoutRequested, key: (d) => d.orderId, init: (d): CheckoutState => ({ ...d }) },
    steps: [
      {
        name: 'payment',
        action: (s) => send(ChargePayment, { orderId: s.orderId, amount: s.total, card: s.card }),
        replies: [onSuccess(PaymentCharged, (s: CheckoutState, d) => ({ ...s, paymentId: d.paymentId })), onFailure(PaymentDeclined, { reason: (d) => d.reason })],
        compensation: { action: (s) => send(RefundPayment, { orderId: s.orderId, amount: s.total }), replies: [onSuccess(PaymentRefunded)] },
      },
      {
        name: 'inventory',
        action: (s) => send(ReserveInventory, { orderId: s.orderId, items: [...s.items] }),
        replies: [onSuccess(InventoryReserved), onFailure(InventoryRejected, { reason: (d) => d.reason })],
        compensation: { action: (s) => send(ReleaseInventory, { orderId: s.orderId }), replies: [onSuccess(InventoryReleased)] },
      },
      {
        name: 'shipping',
        action: (s) => send(ShipOrder, { orderId: s.orderId, address: s.address, items: [...s.items], deadline: s.placedAt + shippingTimeoutMs }),
        // no timer here: Shipping answers "shipped" or, past the deadline, "refused"
        replies: [onSuccess(OrderShipped, (s: CheckoutState, d) => ({ ...s, trackingNo: d.trackingNo })), onFailure(ShipmentCancelled, { reason: (d) => d.reason })],
      },
    ],
    onCompleted: (s) => send(CompleteOrder, { orderId: s.orderId, trackingNo: s.trackingNo ?? 'unknown' }),
    onCompensated: (s, failure) => send(CancelOrder, { orderId: s.orderId, reason: cancelReason(failure), refunded: failure?.step !== 'payment' }),
  });
}

export interface Outgoing<T = unknown> {
  readonly definition: MessageDefinition<T>;
  readonly data: T;
}

const out = <T>(definition: MessageDefinition<T>, data: T): Outgoing => ({ definition, data }) as Outgoing;

/** The message a stored Order event causes (every one of them causes one). */
export function orderMessage(e: OrderEvent): Outgoing {
  switch (e.type) {
    case 'OrderPlaced': {
      const d = e.data;
      return out(OrderPlaced, { orderId: d.orderId, customer: d.customer, email: d.email, total: d.total, items: [...d.items], placedAt: d.placedAt });
    }
    case 'CheckoutRequested':
      return out(CheckoutRequested, { ...e.data, items: [...e.data.items] });
    case 'OrderCompleted': {
      const { at, ...d } = e.data;
      return out(OrderCompleted, { ...d, completedAt: at });
    }
    case 'OrderCancelled': {
      const { at, ...d } = e.data;
      return out(OrderCancelled, { ...d, cancelledAt: at });
    }
  }
}
