// The checkout saga on one SQLite file, in one process: saga runtime, participant services,
// outbox relay and scheduler on the SQLite transport, unit of work and saga store. Every path is
// checked on the final state, on the exact messages the saga received and sent (its timeline),
// and on the services' records in the same file. The shipping timeout runs on the real clock.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createPublisher } from '@herald/core';
import { CHECKOUT_SHIPPING_TIMED_OUT, CHECKOUT_UNTIL_SHIPPING, checkoutConversation, checkoutOrder as order, NOWHERE, OrderPlaced, type OrderPlacedData, OUT_OF_STOCK_SKU, REFUND_BROKEN_CUSTOMER, waitFor, waitForCheckout } from '@herald/testkit';
import { type CheckoutNode, startCheckoutNode } from './checkout-saga.fixture.ts';
import { tempDbPath } from './test-helpers.ts';

const SHIPPING_TIMEOUT_MS = 3000; // long enough that a loaded CI machine still ships the happy path in time

describe('checkout saga on SQLite (one file, one process)', () => {
  const { path, cleanup } = tempDbPath();
  let node: CheckoutNode;
  before(async () => {
    node = await startCheckoutNode({ path, shippingTimeoutMs: SHIPPING_TIMEOUT_MS });
  });
  after(async () => {
    await node.close();
    cleanup();
  });
  const publish = (o: OrderPlacedData) => createPublisher({ transport: node.transport, source: 'shop' }).publish(OrderPlaced, o);

  it('the happy path completes the order', async () => {
    await publish(order('o-ok'));
    const i = await waitForCheckout(node.store, 'o-ok', 'completed');
    assert.deepEqual(i.state, { ...order('o-ok'), paymentId: 'pay-o-ok', reservationId: 'res-o-ok', trackingId: 'track-o-ok' });
    assert.deepEqual(await checkoutConversation(node.store, 'o-ok'), [...CHECKOUT_UNTIL_SHIPPING, '<shop.shipping.shipped', '>shop.order.complete']);
    await waitFor(() => node.read('order:o-ok'), { what: 'the orders service to complete o-ok' });
    assert.deepEqual(node.read('order:o-ok'), { status: 'completed' });
    assert.deepEqual(node.read('payment:o-ok'), { paymentId: 'pay-o-ok', amount: 120, refunded: false });
  });

  it('a payment failure cancels the order', async () => {
    await publish(order('o-declined', { amount: 5000 }));
    await waitForCheckout(node.store, 'o-declined', 'compensated');
    assert.deepEqual(await checkoutConversation(node.store, 'o-declined'), ['<shop.order.placed', '>shop.payment.charge', '<shop.payment.failed', '>shop.order.cancel']);
    await waitFor(() => node.read('order:o-declined'), { what: 'the orders service to cancel o-declined' });
    assert.deepEqual(node.read('order:o-declined'), { status: 'cancelled', reason: 'payment: card declined' });
    assert.equal(node.read('payment:o-declined'), undefined);
  });

  it('an inventory failure refunds the payment and cancels', async () => {
    await publish(order('o-nostock', { items: [{ sku: OUT_OF_STOCK_SKU, qty: 1 }] }));
    await waitForCheckout(node.store, 'o-nostock', 'compensated');
    assert.deepEqual(await checkoutConversation(node.store, 'o-nostock'), [
      '<shop.order.placed',
      '>shop.payment.charge',
      '<shop.payment.succeeded',
      '>shop.inventory.reserve',
      '<shop.inventory.reservation-failed',
      '>shop.payment.refund',
      '<shop.payment.refunded',
      '>shop.order.cancel',
    ]);
    await waitFor(() => node.read('order:o-nostock'), { what: 'the orders service to cancel o-nostock' });
    assert.deepEqual(node.read('payment:o-nostock'), { paymentId: 'pay-o-nostock', amount: 120, refunded: true });
  });

  it('a shipping timeout releases the stock, refunds the payment and cancels', async () => {
    await publish(order('o-lost', { address: NOWHERE }));
    const i = await waitForCheckout(node.store, 'o-lost', 'compensated');
    assert.match(i.failure!.reason, new RegExp(`no reply within ${SHIPPING_TIMEOUT_MS} ms`));
    assert.deepEqual(await checkoutConversation(node.store, 'o-lost'), CHECKOUT_SHIPPING_TIMED_OUT);
    await waitFor(() => node.read('order:o-lost'), { what: 'the orders service to cancel o-lost' });
    assert.deepEqual(node.read('reservation:o-lost'), { reservationId: 'res-o-lost', released: true });
    assert.deepEqual(node.read('payment:o-lost'), { paymentId: 'pay-o-lost', amount: 120, refunded: true });
  });

  it('a refund refused past its retries leaves the instance stuck, listed by status and counted', async () => {
    await publish(order('o-stuck', { customerId: REFUND_BROKEN_CUSTOMER, items: [{ sku: OUT_OF_STOCK_SKU, qty: 1 }] }));
    const i = await waitForCheckout(node.store, 'o-stuck', 'stuck');
    assert.deepEqual(i.error, { step: 'payment', message: 'refunds are refused for this account', attempts: 3, at: i.error!.at });
    assert.deepEqual((await node.store.list({ status: 'stuck' })).items.map((x) => x.key), ['o-stuck']);
    assert.equal((await node.store.countByStatus()).find((c) => c.status === 'stuck')?.count, 1);
    assert.equal(await node.deadLetters.count(), 0, 'a stuck saga is not a dead letter: every message was handled');
  });
});
