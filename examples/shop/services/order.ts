// Order: event-sourced orders behind HTTP, and the checkout saga's runtime.
//   POST /orders           place an order (201; 200 when that orderId exists already)
//   GET  /orders/:id       one order, with its checkout saga (404 when unknown)
//   GET  /orders?state=…   orders in a state, by id (cursor: ?after=<orderId>, limit ≤ 500)
//   GET  /stats            counts per state
// Each order is a stream `order-<id>`; each of its events is written to the outbox in the
// append's transaction (attachEventStoreOutbox + orderMessage) and the relay publishes it.
// `shop.checkout.requested` starts the checkout saga (group saga.checkout); its steps, timers
// (the scheduler) and messages commit with its inbox record. The saga answers on
// 'order-commands' with complete or cancel, which this service's consumer (group 'order')
// turns into the order's terminal event.
import { randomUUID } from 'node:crypto';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { z } from 'zod';
import { createConsumer, createScheduler, HeraldError, isHeraldError, systemClock } from '@herald/core';
import { createCommandHandler, createSagaRuntime } from '@herald/eventsourcing';
import { openBackend } from '../src/backend.ts';
import { checkoutSaga, orderMessage } from '../src/checkout.ts';
import { CancelOrder, CompleteOrder, LineItem } from '../src/events.ts';
import { type OrderCommand, orderDecider, type OrderEvent } from '../src/order.ts';
import { type OrderRow, orderSummaryProjection } from '../src/order-summary.ts';
import { configuredBackend, envNumber, log, message, untilSignal } from '../src/runtime.ts';

const SERVICE = 'order';
const SOURCE = 'shop/order';
const port = envNumber('PORT', 4100);
const clock = systemClock;
const now = (): number => clock.now();

const { backend: spec, transport: transportSpec } = configuredBackend();
const backend = await openBackend(spec, transportSpec);
const store = backend.eventStore();

const readModel = await backend.inlineProjection(orderSummaryProjection);
const stopOutbox = backend.routeToOutbox('order', (e) => {
  const out = orderMessage({ type: e.type, data: e.data } as OrderEvent);
  return message(SOURCE, out.definition, out.data, { id: e.id, time: e.recordedAt, correlationid: e.correlationId, causationid: e.causationId });
});
const handle = createCommandHandler(store, orderDecider);
const decide = (orderId: string, command: OrderCommand, cause?: { id: string; correlationid?: string }) =>
  handle(`order-${orderId}`, command, cause ? { causationId: cause.id, correlationId: cause.correlationid ?? orderId } : { correlationId: orderId });

// ── the checkout saga: runtime, store and the scheduler that sends its timers ──
const sagas = backend.sagaStore();
const scheduler = createScheduler({ store: backend.schedulerStore(), transport: backend.transport, leases: backend.leases, name: 'shop', pollMs: 100, onError: (e) => log(SERVICE, `scheduler: ${(e as Error)?.message ?? String(e)}`) });
const saga = createSagaRuntime({
  sagas: [checkoutSaga({ shippingTimeoutMs: envNumber('SHIPPING_TIMEOUT_MS', 120_000) })],
  store: sagas,
  unitOfWork: backend.unitOfWork as never,
  transport: backend.transport,
  deadLetters: backend.deadLetters,
  source: 'shop/checkout',
  consumer: { retry: { maxAttempts: 20, initialDelayMs: 10, maxDelayMs: 500 }, onError: (e) => log(SERVICE, `saga: ${(e as Error)?.message ?? String(e)}`) },
  onStuck: (i) => log(SERVICE, `checkout of ${i.key} is STUCK at ${i.step}: ${i.error?.message ?? ''}`),
});

// ── the saga's answers ──
const consumer = createConsumer({
  transport: backend.transport,
  group: SERVICE,
  deadLetters: backend.deadLetters,
  retry: { maxAttempts: 8, initialDelayMs: 50 },
  onError: (e) => log(SERVICE, `consumer: ${(e as Error)?.message ?? String(e)}`),
});
consumer
  .handle(CompleteOrder, async (d, ctx) => void (await decide(d.orderId, { type: 'CompleteOrder', trackingNo: d.trackingNo, now: now() }, ctx.envelope)))
  .handle(CancelOrder, async (d, ctx) => void (await decide(d.orderId, { type: 'CancelOrder', reason: d.reason, refunded: d.refunded, now: now() }, ctx.envelope)));

// ── HTTP ────────────────────────────────────────────────────────────────────
const PlaceOrderBody = z.object({
  orderId: z.string().regex(/^[A-Za-z0-9_.:-]{1,100}$/, 'letters, digits and _ . : - (1–100)').optional(),
  customer: z.string().min(1).max(200),
  email: z.string().email(),
  address: z.string().min(1).max(500),
  card: z.string().regex(/^\d{12,19}$/, '12 to 19 digits'),
  items: z.array(LineItem).min(1).max(100),
});
const STATES = ['placed', 'completed', 'cancelled'];

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
  const id = c.req.param('id');
  const row = await backend.sql.get<OrderRow>('SELECT * FROM shop_orders WHERE order_id = ?', id);
  if (!row) return c.json({ error: 'HERALD_ERR_NOT_FOUND', message: `no order "${id}"` }, 404);
  const checkout = await sagas.get('checkout', id);
  return c.json({ ...row, checkout: checkout ? { status: checkout.status, step: checkout.step ?? null, completed: checkout.completed, failure: checkout.failure ?? null } : null });
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
  const rows = await backend.sql.all<{ status: string; n: number | string }>('SELECT status, count(*) AS n FROM shop_orders GROUP BY status');
  return c.json(Object.fromEntries(rows.map((r) => [r.status, Number(r.n)])));
});

await consumer.start();
await saga.start();
await scheduler.start();
await backend.relay.start();
const server = serve({ fetch: app.fetch, port, hostname: '127.0.0.1' });
log(SERVICE, `listening on http://127.0.0.1:${port} (backend ${spec.kind})`);

untilSignal(SERVICE, async () => {
  await new Promise<void>((r) => {
    server.close(() => r());
    (server as { closeAllConnections?: () => void }).closeAllConnections?.();
  });
  await Promise.all([consumer.close({ timeoutMs: 3000 }), saga.close({ timeoutMs: 3000 })]);
  await scheduler.close({ timeoutMs: 2000 });
  await stopOutbox();
  await readModel.close();
  await backend.close();
});
