// The flow the `herald causation` tests draw, on any backend: a command with a correlation id;
// its handler (in `ctx.transaction`, ≥ 30 ms) publishes an event; that event's handler (in
// `ctx.transaction`) publishes a payment request; the bank's handler declines it into the dead
// letters. Resolves when the dead letter is stored and every consumer is closed.
import { z } from 'zod';
import { createConsumer, createPublisher, type DeadLetterStore, defineCommand, defineEvent, PermanentError, type Transport, type UnitOfWork } from '@herald/core';
import { sleep, waitFor } from '@herald/testkit';

export async function runCausationFlow(options: { transport: Transport; deadLetters: DeadLetterStore; unitOfWork: UnitOfWork; correlationId: string }): Promise<void> {
  const { transport, deadLetters, unitOfWork, correlationId } = options;
  const Place = defineCommand('order.place', z.object({ orderId: z.string() }), { topic: 'commands', keyField: 'orderId' });
  const Placed = defineEvent('order.placed', z.object({ orderId: z.string() }), { topic: 'orders', keyField: 'orderId' });
  const Charge = defineEvent('payment.requested', z.object({ orderId: z.string() }), { topic: 'payments', keyField: 'orderId' });
  const publisher = createPublisher({ transport, source: 'shop/order' });
  const billingPublisher = createPublisher({ transport, source: 'shop/billing' });
  const orders = createConsumer({ transport, group: 'orders', deadLetters, unitOfWork });
  orders.handle(Place, async (cmd, ctx) => {
    await ctx.transaction(() => sleep(30));
    await publisher.publish(Placed, cmd, { causedBy: ctx.envelope });
  });
  const billing = createConsumer({ transport, group: 'billing', deadLetters, unitOfWork });
  billing.handle(Placed, async (e, ctx) => {
    await ctx.transaction(() => undefined);
    await billingPublisher.publish(Charge, e, { causedBy: ctx.envelope });
  });
  const bank = createConsumer({ transport, group: 'bank', deadLetters });
  bank.handle(Charge, () => {
    throw new PermanentError('card declined');
  });
  const consumers = [orders, billing, bank];
  try {
    for (const c of consumers) await c.start();
    await publisher.publish(Place, { orderId: 'o-1' }, { correlationid: correlationId });
    await publisher.publish(Place, { orderId: 'o-2' }); // another correlation: not in the graph
    await waitFor(async () => (await deadLetters.count({ group: 'bank' })) === 2, { timeoutMs: 15_000, what: 'both payment requests declined into the dead letters' });
  } finally {
    for (const c of consumers) await c.close();
  }
}
