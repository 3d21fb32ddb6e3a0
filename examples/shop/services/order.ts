// Order: event-sourced orders behind HTTP, and the checkout saga's orchestrator.
//   POST /orders           place an order (201; 200 when that orderId exists already)
//   GET  /orders/:id       one order (404 when unknown)
//   GET  /orders?state=…   orders in a state, oldest first (cursor: ?after=<orderId>, limit ≤ 500)
//   GET  /stats            counts per state
// Each order is a stream `order-<id>`; its events go to the outbox in the append's transaction
// (attachEventStoreOutbox + checkoutMessage) and the relay publishes them. Replies from Payment,
// Inventory and Shipping are commands to the order's decider; a sweep times out shipments past
// their deadline.
import { randomUUID } from 'node:crypto';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { z } from 'zod';
import { createConsumer, HeraldError, isHeraldError, systemClock } from '@herald/core';
import { createCommandHandler } from '@herald/eventsourcing';
import { attachEventStoreOutbox, createSqliteProjection } from '@herald/sqlite';
import { checkoutMessage } from '../src/checkout.ts';
import {
  InventoryRejected,
  InventoryReleased,
  InventoryReserved,
  LineItem,
  OrderShipped,
  PaymentCharged,
  PaymentDeclined,
  PaymentRefunded,
  ShipmentCancelled,
} from '../src/events.ts';
import { type OrderCommand, orderDecider, type OrderEvent } from '../src/order.ts';
import { type OrderRow, orderSummary } from '../src/order-summary.ts';
import { configuredBackend, envNumber, log, message, openBackend, untilSignal } from '../src/runtime.ts';

const SERVICE = 'order';
const SOURCE = 'shop/order';
const port = envNumber('PORT', 4100);
const shippingTimeoutMs = envNumber('SHIPPING_TIMEOUT_MS', 120_000);
const clock = systemClock;

const { backend: spec, transport: transportSpec } = configuredBackend();
const backend = await openBackend(spec, transportSpec);
const store = backend.sqliteEventStore();
if (!store) throw new HeraldError('HERALD_ERR_NOT_CONFIGURED', 'the order service needs the SQLite event store on this backend');

const readModel = createSqliteProjection(store, orderSummary, { mode: 'inline' });
const detachOutbox = attachEventStoreOutbox(store, {
  route(e) {
    const out = checkoutMessage({ type: e.type, data: e.data } as OrderEvent);
    if (!out) return undefined;
    return message(SOURCE, out.definition, out.data, {
      id: e.id,
      time: e.recordedAt,
      causedBy: { id: e.causationId ?? e.id, correlationid: e.correlationId } as never,
    });
  },
});
const handle = createCommandHandler(store, orderDecider);
const decide = (orderId: string, command: OrderCommand, cause?: { id: string; correlationid?: string }) =>
  handle(`order-${orderId}`, command, cause ? { causationId: cause.id, correlationId: cause.correlationid ?? orderId } : { correlationId: orderId });

// ── replies: the saga's inbound side ─────────────────────────────────────────
const consumer = createConsumer({
  transport: backend.transport,
  group: SERVICE,
  deadLetters: backend.deadLetters,
  retry: { maxAttempts: 8, initialDelayMs: 50 },
  onError: (e) => log(SERVICE, `consumer: ${(e as Error)?.message ?? String(e)}`),
});
const now = () => clock.now();
consumer
  .handle(PaymentCharged, async (d, ctx) => void (await decide(d.orderId, { type: 'RecordPayment', outcome: { charged: true, paymentId: d.paymentId }, now: now() }, ctx.envelope)))
  .handle(PaymentDeclined, async (d, ctx) => void (await decide(d.orderId, { type: 'RecordPayment', outcome: { charged: false, reason: d.reason }, now: now() }, ctx.envelope)))
  .handle(PaymentRefunded, async (d, ctx) => void (await decide(d.orderId, { type: 'RecordRefund', now: now() }, ctx.envelope)))
  .handle(InventoryReserved, async (d, ctx) => void (await decide(d.orderId, { type: 'RecordReservation', outcome: { reserved: true, deadline: now() + shippingTimeoutMs }, now: now() }, ctx.envelope)))
  .handle(InventoryRejected, async (d, ctx) => void (await decide(d.orderId, { type: 'RecordReservation', outcome: { reserved: false, reason: d.reason }, now: now() }, ctx.envelope)))
  .handle(InventoryReleased, async (d, ctx) => void (await decide(d.orderId, { type: 'RecordRelease', now: now() }, ctx.envelope)))
  .handle(OrderShipped, async (d, ctx) => void (await decide(d.orderId, { type: 'RecordShipment', outcome: { shipped: true, trackingNo: d.trackingNo }, now: now() }, ctx.envelope)))
  .handle(ShipmentCancelled, async (d, ctx) => void (await decide(d.orderId, { type: 'RecordShipment', outcome: { shipped: false, reason: d.reason }, now: now() }, ctx.envelope)));

// ── shipping deadlines: a durable timer (the deadline is in the read model) swept every 500 ms ──
let sweeping = false;
const sweepTimer = setInterval(() => {
  if (sweeping) return;
  sweeping = true;
  (async () => {
    const due = await backend.sql.all<{ order_id: string }>(`SELECT order_id FROM shop_orders WHERE status = 'shipping' AND deadline <= ? ORDER BY deadline LIMIT 100`, now());
    for (const r of due) await decide(r.order_id, { type: 'TimeOutShipping', now: now() });
  })()
    .catch((e) => log(SERVICE, `deadline sweep: ${(e as Error)?.message ?? String(e)}`))
    .finally(() => (sweeping = false));
}, 500);

// ── HTTP ────────────────────────────────────────────────────────────────────
const PlaceOrderBody = z.object({
  orderId: z.string().regex(/^[A-Za-z0-9_.:-]{1,100}$/, 'letters, digits and _ . : - (1–100)').optional(),
  customer: z.string().min(1).max(200),
  email: z.string().email(),
  address: z.string().min(1).max(500),
  card: z.string().regex(/^\d{12,19}$/, '12 to 19 digits'),
  items: z.array(LineItem).min(1).max(100),
});
const STATES = ['paying', 'reserving', 'shipping', 'cancelling_shipment', 'compensating', 'completed', 'cancelled'];

const app = new Hono();
app.onError((e, c) => {
  if (isHeraldError(e) && (e.code === 'HERALD_ERR_INVALID_ARGUMENT' || e.code === 'HERALD_ERR_SCHEMA_INVALID')) return c.json({ error: e.code, message: e.message }, 400);
  log(SERVICE, `HTTP ${c.req.method} ${c.req.path}: ${(e as Error)?.stack ?? String(e)}`);
  return c.json({ error: isHeraldError(e) ? e.code : 'INTERNAL', message: (e as Error).message }, isHeraldError(e) && e.retryable ? 503 : 500);
});
app.post('/orders', async (c) => {
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'the request body must be JSON');
  }
  const parsed = PlaceOrderBody.safeParse(body);
  if (!parsed.success) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `bad order: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ')}`);
  }
  const { orderId = randomUUID(), ...rest } = parsed.data;
  const result = await decide(orderId, { type: 'PlaceOrder', data: { orderId, ...rest }, now: now() });
  const o = result.newState;
  return c.json({ orderId, status: o.status, total: o.details?.total }, result.newEvents.length > 0 ? 201 : 200);
});
app.get('/orders/:id', async (c) => {
  const row = await backend.sql.get<OrderRow>('SELECT * FROM shop_orders WHERE order_id = ?', c.req.param('id'));
  return row ? c.json(row) : c.json({ error: 'HERALD_ERR_NOT_FOUND', message: `no order "${c.req.param('id')}"` }, 404);
});
app.get('/orders', async (c) => {
  const state = c.req.query('state');
  if (state !== undefined && !STATES.includes(state)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `state must be one of ${STATES.join(', ')} (got "${state}")`);
  const limit = Number(c.req.query('limit') ?? 100);
  if (!Number.isInteger(limit) || limit < 1 || limit > 500) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `limit must be an integer from 1 to 500 (got "${c.req.query('limit')}")`);
  const after = c.req.query('after') ?? '';
  const rows = state
    ? await backend.sql.all<OrderRow>('SELECT * FROM shop_orders WHERE status = ? AND order_id > ? ORDER BY order_id LIMIT ?', state, after, limit)
    : await backend.sql.all<OrderRow>('SELECT * FROM shop_orders WHERE order_id > ? ORDER BY order_id LIMIT ?', after, limit);
  return c.json({ orders: rows, next: rows.length === limit ? rows[rows.length - 1]!.order_id : null });
});
app.get('/stats', async (c) => {
  const rows = await backend.sql.all<{ status: string; n: number }>('SELECT status, count(*) AS n FROM shop_orders GROUP BY status');
  return c.json(Object.fromEntries(rows.map((r) => [r.status, Number(r.n)])));
});

await consumer.start();
await backend.relay.start();
const server = serve({ fetch: app.fetch, port, hostname: '127.0.0.1' });
log(SERVICE, `listening on http://127.0.0.1:${port} (backend ${spec.kind})`);

untilSignal(SERVICE, async () => {
  await new Promise<void>((r) => {
    server.close(() => r());
    (server as { closeAllConnections?: () => void }).closeAllConnections?.();
  });
  clearInterval(sweepTimer);
  await consumer.close({ timeoutMs: 3000 });
  detachOutbox();
  await readModel.close();
  await backend.close();
});
