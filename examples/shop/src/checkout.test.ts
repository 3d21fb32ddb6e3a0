// The shop's domain without I/O: the Order decider (given/when/then) and the checkout saga
// (SagaSpecification), each path of the checkout including its compensations.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { send } from '@herald/eventsourcing';
import { DeciderSpecification, SagaSpecification } from '@herald/testkit';
import { cancelReason, checkoutSaga, orderMessage } from './checkout.ts';
import {
  CancelOrder,
  ChargePayment,
  CheckoutRequested,
  CompleteOrder,
  InventoryRejected,
  InventoryReleased,
  InventoryReserved,
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
import { type OrderEvent, orderDecider } from './order.ts';

const items = [{ sku: 'sku-1', qty: 2, price: 500 }];
const details = { orderId: 'o-1', customer: 'Ada', email: 'ada@example.com', address: '1 Main St', card: '4242424242424242', items };
const placed: OrderEvent = { type: 'OrderPlaced', data: { ...details, total: 1000, placedAt: 1 } };
const requested: OrderEvent = { type: 'CheckoutRequested', data: { orderId: 'o-1', total: 1000, card: details.card, address: details.address, items, placedAt: 1 } };
const who = { orderId: 'o-1', customer: 'Ada', email: 'ada@example.com', total: 1000 };

describe('Order decider', () => {
  const given = DeciderSpecification.for(orderDecider);

  it('placing an order records it and asks for its checkout', () =>
    given([]).when({ type: 'PlaceOrder', data: details, now: 1 }).then([placed, requested]));

  it('placing the same order again decides nothing', () => given([placed, requested]).when({ type: 'PlaceOrder', data: details, now: 2 }).thenNothingHappened());

  it('refuses an order without items', () => void given([]).when({ type: 'PlaceOrder', data: { ...details, items: [] }, now: 1 }).thenThrows('HERALD_ERR_INVALID_ARGUMENT'));

  it('completes a placed order', () =>
    given([placed, requested]).when({ type: 'CompleteOrder', trackingNo: 'TRK-1', now: 5 }).then({ type: 'OrderCompleted', data: { ...who, trackingNo: 'TRK-1', at: 5 } }));

  it('ends in exactly one terminal state: a completed order is not cancelled, a repeated complete does nothing', () => {
    const completed: OrderEvent = { type: 'OrderCompleted', data: { ...who, trackingNo: 'TRK-1', at: 5 } };
    given([placed, requested, completed]).when({ type: 'CancelOrder', reason: 'out_of_stock', refunded: true, now: 6 }).thenNothingHappened();
    given([placed, requested, completed]).when({ type: 'CompleteOrder', trackingNo: 'TRK-1', now: 6 }).thenNothingHappened();
  });

  it('cancels a placed order with the reason', () =>
    given([placed, requested])
      .when({ type: 'CancelOrder', reason: 'payment_declined', refunded: false, now: 5 })
      .then({ type: 'OrderCancelled', data: { ...who, reason: 'payment_declined', refunded: false, at: 5 } }));

  it('every stored event causes one message: the public event or the checkout request', () => {
    assert.equal(orderMessage(placed).definition.topic, 'orders');
    assert.equal(orderMessage(requested).definition.type, CheckoutRequested.type);
  });
});

describe('checkout saga', () => {
  const saga = checkoutSaga({ shippingTimeoutMs: 60_000 });
  const given = SagaSpecification.for(saga);
  const { event } = SagaSpecification;
  const start = event(CheckoutRequested, { ...requested.data, items } as never);
  const charged = event(PaymentCharged, { orderId: 'o-1', paymentId: 'pay-1', amount: 1000 });
  const reserved = event(InventoryReserved, { orderId: 'o-1' });

  it('charges the card first', () => given([]).when(start).then({ status: 'running', sent: [send(ChargePayment, { orderId: 'o-1', amount: 1000, card: details.card })] }));

  it('reserves after the charge, ships with a deadline after the reservation, completes the order once shipped', () => {
    given([start]).when(charged).thenSent([send(ReserveInventory, { orderId: 'o-1', items })]);
    given([start, charged]).when(reserved).thenSent([send(ShipOrder, { orderId: 'o-1', address: '1 Main St', items, deadline: 1 + 60_000 })]);
    given([start, charged, reserved])
      .when(event(OrderShipped, { orderId: 'o-1', trackingNo: 'TRK-1' }))
      .then({ status: 'completed', sent: [send(CompleteOrder, { orderId: 'o-1', trackingNo: 'TRK-1' })] });
  });

  it('a declined card cancels the order with nothing to undo', () =>
    given([start])
      .when(event(PaymentDeclined, { orderId: 'o-1', reason: 'card declined' }))
      .then({ status: 'compensated', sent: [send(CancelOrder, { orderId: 'o-1', reason: 'payment_declined', refunded: false })] }));

  it('out of stock refunds the charge, then cancels', () => {
    const rejected = event(InventoryRejected, { orderId: 'o-1', sku: 'sku-1', reason: 'out of stock' });
    given([start, charged]).when(rejected).then({ status: 'compensating', sent: [send(RefundPayment, { orderId: 'o-1', amount: 1000 })] });
    given([start, charged, rejected])
      .when(event(PaymentRefunded, { orderId: 'o-1', amount: 1000 }))
      .then({ status: 'compensated', sent: [send(CancelOrder, { orderId: 'o-1', reason: 'out_of_stock', refunded: true })] });
  });

  it('Shipping refusing (deadline passed) releases, refunds, cancels', () => {
    const refused = event(ShipmentCancelled, { orderId: 'o-1', reason: 'deadline passed' });
    given([start, charged, reserved]).when(refused).thenSent([send(ReleaseInventory, { orderId: 'o-1' })]);
    given([start, charged, reserved, refused, event(InventoryReleased, { orderId: 'o-1' })])
      .when(event(PaymentRefunded, { orderId: 'o-1', amount: 1000 }))
      .then({ status: 'compensated', sent: [send(CancelOrder, { orderId: 'o-1', reason: 'shipping_failed', refunded: true })] });
  });

  it('waits for Shipping without a timer of its own: Shipping alone decides shipped or refused', () =>
    given([start, charged]).when(reserved).then({ status: 'running', timerPending: false }));

  it('maps the failed step to the reason Order records', () => {
    assert.equal(cancelReason({ step: 'payment', reason: 'x', at: 0 }), 'payment_declined');
    assert.equal(cancelReason({ step: 'inventory', reason: 'x', at: 0 }), 'out_of_stock');
    assert.equal(cancelReason({ step: 'shipping', reason: 'x', at: 0 }), 'shipping_failed');
  });
});
