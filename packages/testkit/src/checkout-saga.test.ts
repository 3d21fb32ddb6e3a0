// The checkout saga in memory: the saga runtime and four participant services as real consumers
// on the memory transport, one MemoryUnitOfWork (inbox + outbox + scheduled timers) with its
// outbox relay and scheduler, and a ManualClock for the shipping timeout. Each path is checked
// on the final state, on the exact messages the saga received and sent (its timeline), and on
// what the participants saw on the transport. The same paths as pure given/when/then at the end.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type CloudEvent, createConsumer, createMemoryTransport, createOutboxRelay, createPublisher, createScheduler, MemoryDeadLetterStore, MemoryUnitOfWork } from '@herald/core';
import { createSagaRuntime, MemorySagaStore, type SagaInstance, SagaSpecification, send } from '@herald/eventsourcing';
import {
  CancelOrder,
  CHECKOUT_SHIPPING_TIMED_OUT,
  CHECKOUT_UNTIL_SHIPPING,
  checkoutConversation,
  checkoutOrder,
  waitForCheckout,
  ChargePayment,
  CHECKOUT_TOPICS,
  type CheckoutServices,
  checkoutSaga,
  CompleteOrder,
  FLAKY_PAYER_CUSTOMER,
  InventoryReleased,
  InventoryReservationFailed,
  InventoryReserved,
  memoryCheckoutKv,
  NOWHERE,
  OrderPlaced,
  OrderShipped,
  OUT_OF_STOCK_SKU,
  PaymentFailed,
  PaymentRefunded,
  PaymentRefundFailed,
  PaymentSucceeded,
  REFUND_BROKEN_CUSTOMER,
  RefundPayment,
  ReleaseInventory,
  ReserveInventory,
  ShipOrder,
  startCheckoutServices,
} from './checkout-saga.ts';
import { waitFor } from './helpers.ts';
import { ManualClock } from './manual-clock.ts';

const SAGA_SOURCE = 'checkout-saga';
/** The conversation of an order whose payment succeeded and whose reservation failed. */
const PAID_THEN_OUT_OF_STOCK = [`<${OrderPlaced.type}`, `>${ChargePayment.type}`, `<${PaymentSucceeded.type}`, `>${ReserveInventory.type}`, `<${InventoryReservationFailed.type}`];

describe('checkout saga (memory transport, MemoryUnitOfWork, ManualClock)', () => {
  const clock = new ManualClock();
  const transport = createMemoryTransport({ clock });
  const deadLetters = new MemoryDeadLetterStore();
  const uow = new MemoryUnitOfWork({ clock });
  const store = new MemorySagaStore();
  const relay = createOutboxRelay({ store: uow, transport, leases: uow.leases, clock });
  const scheduler = createScheduler({ store: uow, transport, leases: uow.leases, clock });
  const runtime = createSagaRuntime({ sagas: [checkoutSaga], store, unitOfWork: uow, transport, deadLetters, source: SAGA_SOURCE, clock });
  const shop = createPublisher({ transport, source: 'shop', clock });
  const seen = new Map<string, CloudEvent[]>();
  const observer = createConsumer({ transport, group: 'observer', deadLetters, clock });
  let services: CheckoutServices;

  before(async () => {
    for (const t of CHECKOUT_TOPICS) {
      await transport.ensureTopic(t);
      observer.handleEnvelope(t, '*', (e) => {
        const k = e.partitionkey ?? '';
        seen.set(k, [...(seen.get(k) ?? []), e]);
      });
    }
    services = await startCheckoutServices({ transport, deadLetters, unitOfWork: uow, kv: memoryCheckoutKv, clock });
    await Promise.all([relay.start(), scheduler.start(), runtime.start(), observer.start()]);
  });
  after(async () => {
    await Promise.all([services.close(), runtime.close(), observer.close()]);
    await Promise.all([relay.close(), scheduler.close()]);
  });

  const order = checkoutOrder;

  const settled = (orderId: string, status: SagaInstance['status']): Promise<SagaInstance> => waitForCheckout(store, orderId, status);
  const conversation = (orderId: string): Promise<string[]> => checkoutConversation(store, orderId);

  /** Types the participants and the observer saw on the shop topics for an order, one list per topic. */
  async function onTheWire(orderId: string, count: number): Promise<Record<string, string[]>> {
    await waitFor(() => (seen.get(orderId)?.length ?? 0) >= count, { what: () => `${count} messages for ${orderId} (seen ${seen.get(orderId)?.map((e) => e.type).join(', ')})` });
    const byTopic: Record<string, string[]> = {};
    for (const e of seen.get(orderId)!) {
      const topic = e.type.split('.').slice(0, 2).join('.');
      (byTopic[topic] ??= []).push(e.type);
    }
    return byTopic;
  }

  it('the happy path: payment, reservation, shipping, then CompleteOrder', async () => {
    await shop.publish(OrderPlaced, order('o-ok'));
    const i = await settled('o-ok', 'completed');
    assert.deepEqual(i.state, { ...order('o-ok'), paymentId: 'pay-o-ok', reservationId: 'res-o-ok', trackingId: 'track-o-ok' });
    assert.deepEqual(i.completed, ['payment', 'inventory', 'shipping']);
    assert.deepEqual(await conversation('o-ok'), [
      ...CHECKOUT_UNTIL_SHIPPING,
      `<${OrderShipped.type}`,
      `>${CompleteOrder.type}`,
    ]);
    const wire = await onTheWire('o-ok', 9);
    assert.deepEqual(wire, {
      'shop.order': ['shop.order.placed', 'shop.order.complete', 'shop.order.completed'],
      'shop.payment': ['shop.payment.charge', 'shop.payment.succeeded'],
      'shop.inventory': ['shop.inventory.reserve', 'shop.inventory.reserved'],
      'shop.shipping': ['shop.shipping.ship', 'shop.shipping.shipped'],
    });
    assert.deepEqual(uow.read('checkout', 'order:o-ok'), { status: 'completed' });
    // Causation: every message the saga sent names the message that caused it, and keeps the order's correlation id.
    const placed = seen.get('o-ok')!.find((e) => e.type === OrderPlaced.type)!;
    for (const e of seen.get('o-ok')!.filter((x) => x.source === SAGA_SOURCE)) {
      assert.equal(e.correlationid, placed.id, `${e.type} carries the order's correlation id`);
      assert.ok(e.causationid, `${e.type} names its cause`);
    }
  });

  it('a payment failure cancels the order without compensating anything', async () => {
    await shop.publish(OrderPlaced, order('o-declined', { amount: 5000 }));
    const i = await settled('o-declined', 'compensated');
    assert.deepEqual(i.failure, { step: 'payment', reason: 'card declined', at: i.failure!.at });
    assert.deepEqual(await conversation('o-declined'), [`<${OrderPlaced.type}`, `>${ChargePayment.type}`, `<${PaymentFailed.type}`, `>${CancelOrder.type}`]);
    const wire = await onTheWire('o-declined', 5);
    assert.deepEqual(wire, {
      'shop.order': ['shop.order.placed', 'shop.order.cancel', 'shop.order.cancelled'],
      'shop.payment': ['shop.payment.charge', 'shop.payment.failed'],
    });
    assert.equal(uow.read('checkout', 'payment:o-declined'), undefined, 'nothing was charged');
    assert.deepEqual(uow.read('checkout', 'order:o-declined'), { status: 'cancelled', reason: 'payment: card declined' });
  });

  it('an inventory failure refunds the payment, then cancels the order', async () => {
    await shop.publish(OrderPlaced, order('o-nostock', { items: [{ sku: OUT_OF_STOCK_SKU, qty: 1 }] }));
    const i = await settled('o-nostock', 'compensated');
    assert.equal(i.failure?.step, 'inventory');
    assert.deepEqual(await conversation('o-nostock'), [
      ...PAID_THEN_OUT_OF_STOCK,
      `>${RefundPayment.type}`,
      `<${PaymentRefunded.type}`,
      `>${CancelOrder.type}`,
    ]);
    assert.deepEqual(uow.read('checkout', 'payment:o-nostock'), { paymentId: 'pay-o-nostock', amount: 120, refunded: true });
    assert.equal(uow.read('checkout', 'reservation:o-nostock'), undefined);
    assert.deepEqual(uow.read('checkout', 'order:o-nostock'), { status: 'cancelled', reason: `inventory: ${OUT_OF_STOCK_SKU} is out of stock` });
  });

  it('a shipping timeout releases the stock and refunds the payment (reverse order), then cancels', async () => {
    await shop.publish(OrderPlaced, order('o-lost', { address: NOWHERE }));
    await waitFor(async () => {
      const i = await store.get('checkout', 'o-lost');
      return i?.step === 'shipping' && i.timer !== undefined;
    }, { what: 'the saga to wait for shipping' });
    assert.equal((await store.get('checkout', 'o-lost'))?.status, 'running');
    await clock.advance(59_000);
    assert.equal((await store.get('checkout', 'o-lost'))?.status, 'running', 'no timeout before its time');
    await clock.advance(1_000);
    const i = await settled('o-lost', 'compensated');
    assert.match(i.failure!.reason, /timed out: no reply within 60000 ms/);
    assert.deepEqual(await conversation('o-lost'), CHECKOUT_SHIPPING_TIMED_OUT);
    assert.deepEqual(uow.read('checkout', 'payment:o-lost'), { paymentId: 'pay-o-lost', amount: 120, refunded: true });
    assert.deepEqual(uow.read('checkout', 'reservation:o-lost'), { reservationId: 'res-o-lost', released: true });
    assert.deepEqual(uow.read('checkout', 'order:o-lost'), { status: 'cancelled', reason: 'shipping: timed out: no reply within 60000 ms after 1 attempt' });
  });

  it('a refund refused on every attempt leaves the instance stuck with its error, listed and counted', async () => {
    await shop.publish(OrderPlaced, order('o-stuck', { customerId: REFUND_BROKEN_CUSTOMER, items: [{ sku: OUT_OF_STOCK_SKU, qty: 1 }] }));
    const i = await settled('o-stuck', 'stuck');
    assert.deepEqual(i.error, { step: 'payment', message: 'refunds are refused for this account', attempts: 3, at: i.error!.at });
    assert.deepEqual(await conversation('o-stuck'), [
      ...PAID_THEN_OUT_OF_STOCK,
      `>${RefundPayment.type}`,
      `<${PaymentRefundFailed.type}`,
      `>${RefundPayment.type}`,
      `<${PaymentRefundFailed.type}`,
      `>${RefundPayment.type}`,
      `<${PaymentRefundFailed.type}`,
      'stuck payment',
    ]);
    const listed = await store.list({ saga: 'checkout', status: 'stuck' });
    assert.deepEqual(listed.items.map((x) => x.key), ['o-stuck']);
    const counts = await store.countByStatus();
    assert.equal(counts.find((c) => c.saga === 'checkout' && c.status === 'stuck')?.count, 1);
    assert.equal(runtime.stats().stuck, 1);
    assert.equal(uow.read('checkout', 'order:o-stuck'), undefined, 'a stuck order is not cancelled behind the operator’s back');
  });

  it('an unanswered charge is resent after its timeout (a new message id) and charged once', async () => {
    await shop.publish(OrderPlaced, order('o-flaky', { customerId: FLAKY_PAYER_CUSTOMER }));
    await waitFor(async () => {
      const i = await store.get('checkout', 'o-flaky');
      return i?.step === 'payment' && i.timer !== undefined && uow.read('checkout', 'ignored:o-flaky') === true;
    }, { what: 'the first charge to be ignored' });
    await clock.advance(30_000);
    const i = await settled('o-flaky', 'completed');
    assert.deepEqual(await conversation('o-flaky'), [`<${OrderPlaced.type}`, `>${ChargePayment.type}`, '<timer payment', ...CHECKOUT_UNTIL_SHIPPING.slice(1), `<${OrderShipped.type}`, `>${CompleteOrder.type}`]);
    const charges = (await store.timeline('checkout', 'o-flaky')).items.filter((e) => e.kind === 'sent' && e.type === ChargePayment.type);
    assert.deepEqual(charges.map((e) => e.messageId), [`${i.id}:payment:action:1:0`, `${i.id}:payment:action:2:0`], 'the resend is attempt 2, with its own id');
    assert.deepEqual(uow.read('checkout', 'payment:o-flaky'), { paymentId: 'pay-o-flaky', amount: 120, refunded: false }, 'charged once');
  });

  it('nothing was dead-lettered and no redelivery had a second effect', async () => {
    assert.equal(await deadLetters.count(), 0);
    assert.equal(runtime.stats().duplicates, 0);
  });
});

describe('checkout saga (SagaSpecification)', () => {
  const given = SagaSpecification.for(checkoutSaga);
  const { event, timeout } = SagaSpecification;
  const placed = event(OrderPlaced, { orderId: 'o-1', customerId: 'c-1', amount: 120, items: [{ sku: 'book', qty: 2 }], address: '1 Main St' });
  const paid = event(PaymentSucceeded, { orderId: 'o-1', paymentId: 'pay-1', amount: 120 });
  const reserved = event(InventoryReserved, { orderId: 'o-1', reservationId: 'res-1' });

  it('order placed → charge', () => given([]).when(placed).then({ status: 'running', sent: [send(ChargePayment, { orderId: 'o-1', customerId: 'c-1', amount: 120 })] }));
  it('paid → reserve', () => given([placed]).when(paid).then({ sent: [send(ReserveInventory, { orderId: 'o-1', items: [{ sku: 'book', qty: 2 }] })] }));
  it('shipped → complete', () =>
    given([placed, paid, reserved]).when(event(OrderShipped, { orderId: 'o-1', trackingId: 't-1' })).then({ status: 'completed', sent: [send(CompleteOrder, { orderId: 'o-1', trackingId: 't-1' })] }));
  it('payment failed → cancel', () =>
    given([placed]).when(event(PaymentFailed, { orderId: 'o-1', reason: 'card declined' })).then({ status: 'compensated', sent: [send(CancelOrder, { orderId: 'o-1', reason: 'payment: card declined' })] }));
  it('reservation failed → refund', () =>
    given([placed, paid]).when(event(InventoryReservationFailed, { orderId: 'o-1', reason: 'none left' })).then({ status: 'compensating', sent: [send(RefundPayment, { orderId: 'o-1', paymentId: 'pay-1', amount: 120 })] }));
  it('shipping timeout → release, then refund, then cancel', () => {
    given([placed, paid, reserved]).when(timeout()).then({ status: 'compensating', sent: [send(ReleaseInventory, { orderId: 'o-1', reservationId: 'res-1' })] });
    given([placed, paid, reserved, timeout()])
      .when(event(InventoryReleased, { orderId: 'o-1', reservationId: 'res-1' }))
      .then({ sent: [send(RefundPayment, { orderId: 'o-1', paymentId: 'pay-1', amount: 120 })] });
    given([placed, paid, reserved, timeout(), event(InventoryReleased, { orderId: 'o-1', reservationId: 'res-1' })])
      .when(event(PaymentRefunded, { orderId: 'o-1', paymentId: 'pay-1' }))
      .then({ status: 'compensated', sent: [send(CancelOrder, { orderId: 'o-1', reason: 'shipping: timed out: no reply within 60000 ms after 1 attempt' })] });
  });
});
