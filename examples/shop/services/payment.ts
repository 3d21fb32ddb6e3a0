// Payment: charges and refunds cards (consumer group 'payment' on 'payment-commands').
// Declines, on purpose, cards ending in PAYMENT_DECLINE_SUFFIXES (comma-separated, default
// "0002") and a fraction PAYMENT_DECLINE_RATE (0–1, default 0) of the other orders, chosen by a
// hash of the order id (the same order is always decided the same way). Every command is
// handled in one transaction with its inbox record and its reply (outbox).
import { HeraldError, murmur2 } from '@herald/core';
import { ChargePayment, PaymentCharged, PaymentDeclined, PaymentRefunded, RefundPayment } from '../src/events.ts';
import { envNumber } from '../src/runtime.ts';
import { inInbox, runConsumerService } from '../src/service.ts';

const suffixes = (process.env.PAYMENT_DECLINE_SUFFIXES ?? '0002').split(',').map((s) => s.trim()).filter(Boolean);
const rate = envNumber('PAYMENT_DECLINE_RATE', 0);
if (rate < 0 || rate > 1) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `PAYMENT_DECLINE_RATE must be within 0–1 (got ${rate})`);

/** Why a card is declined, or undefined when it is charged. */
export function declineReason(orderId: string, card: string): string | undefined {
  if (suffixes.some((s) => card.endsWith(s))) return `card ending in ${card.slice(-4)} declined`;
  if (rate > 0 && (murmur2(Buffer.from(orderId)) >>> 0) % 10_000 < rate * 10_000) return 'declined by the issuer';
  return undefined;
}

const DDL = `CREATE TABLE IF NOT EXISTS shop_payments (
  order_id TEXT PRIMARY KEY,
  payment_id TEXT NOT NULL,
  amount INTEGER NOT NULL,
  card_last4 TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('charged', 'declined', 'refunded')),
  reason TEXT,
  updated_at BIGINT NOT NULL
)`;

interface PaymentRow {
  payment_id: string;
  amount: number;
  status: string;
  reason: string | null;
}

await runConsumerService('payment', DDL, ({ backend, consumer, source }) => {
  consumer.handle(ChargePayment, (cmd, ctx) =>
    inInbox(backend, source, ctx, async (tx) => {
      const known = await tx.sql.get<PaymentRow>('SELECT payment_id, amount, status, reason FROM shop_payments WHERE order_id = ?', cmd.orderId);
      if (known) {
        // asked again (a new command, not a redelivery): the same answer
        if (known.status === 'declined') tx.publish(PaymentDeclined, { orderId: cmd.orderId, reason: known.reason ?? 'declined' });
        else tx.publish(PaymentCharged, { orderId: cmd.orderId, paymentId: known.payment_id, amount: Number(known.amount) });
        return;
      }
      const reason = declineReason(cmd.orderId, cmd.card);
      const paymentId = `pay-${ctx.envelope.id}`;
      await tx.sql.run(
        'INSERT INTO shop_payments (order_id, payment_id, amount, card_last4, status, reason, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
        cmd.orderId,
        paymentId,
        cmd.amount,
        cmd.card.slice(-4),
        reason ? 'declined' : 'charged',
        reason ?? null,
        ctx.clock.now(),
      );
      if (reason) tx.publish(PaymentDeclined, { orderId: cmd.orderId, reason });
      else tx.publish(PaymentCharged, { orderId: cmd.orderId, paymentId, amount: cmd.amount });
    }),
  );
  consumer.handle(RefundPayment, (cmd, ctx) =>
    inInbox(backend, source, ctx, async (tx) => {
      const changed = await tx.sql.run(`UPDATE shop_payments SET status = 'refunded', updated_at = ? WHERE order_id = ? AND status = 'charged'`, ctx.clock.now(), cmd.orderId);
      const row = await tx.sql.get<PaymentRow>('SELECT amount FROM shop_payments WHERE order_id = ?', cmd.orderId);
      // refunded now, or earlier (nothing left to refund): either way the saga may go on
      tx.publish(PaymentRefunded, { orderId: cmd.orderId, amount: changed > 0 ? Number(row?.amount ?? 0) : 0 });
    }),
  );
});
