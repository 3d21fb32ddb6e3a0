/**
 * The shop's books, checked across every service's tables once the system is quiet:
 *
 * - every order Order knows is in exactly one terminal state: its stream has exactly one
 *   OrderCompleted or OrderCancelled event, and its read-model row says the same;
 * - every order the load generator had accepted (`placedIds`) is there: none lost;
 * - its checkout saga ended the same way (completed ↔ completed, compensated ↔ cancelled), none
 *   stuck;
 * - Analytics agrees with Order order by order, and its per-minute counts and revenue add up;
 * - Notification wrote "placed" for every order and exactly one of "completed"/"cancelled",
 *   the one matching Order;
 * - Payment, Inventory and Shipping agree with each outcome (charged / declined / refunded;
 *   reserved / rejected / released; shipped or not), and no stock was lost or invented;
 * - no message of the shop's consumer groups is in the dead-letter store.
 *
 *   node --import tsx examples/shop/src/check.ts [--config examples/shop/herald.config.json] [--record placed.txt]
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { DeadLetterStore } from '@herald/core';
import type { EventStore, SagaInstance, SagaStore } from '@herald/eventsourcing';
import type { Sql } from './runtime.ts';

export const SHOP_GROUPS = ['order', 'saga.checkout', 'payment', 'inventory', 'shipping', 'notification', 'analytics'] as const;

export interface ShopReport {
  readonly ok: boolean;
  readonly problems: readonly string[];
  readonly orders: number;
  readonly open: number;
  readonly completed: number;
  readonly cancelled: Readonly<Record<string, number>>;
  /** Cents, from Order. */
  readonly revenue: number;
  readonly analytics: { readonly placed: number; readonly completed: number; readonly cancelled: number; readonly revenue: number; readonly conversion: number; readonly minutes: number; readonly peakPerMinute: number };
  readonly notifications: number;
  readonly deadLetters: number;
}

interface OrderRow {
  order_id: string;
  status: string;
  reason: string | null;
  total: number;
}

const n = (v: unknown): number => Number(v ?? 0);

export interface ShopStores {
  readonly sql: Sql;
  readonly events: EventStore;
  readonly sagas: SagaStore;
  readonly deadLetters: DeadLetterStore;
}

export async function checkShop({ sql, events: store, sagas, deadLetters }: ShopStores, placedIds?: readonly string[]): Promise<ShopReport> {
  const problems: string[] = [];
  const problem = (what: string, ids: readonly string[]): void => {
    if (ids.length > 0) problems.push(`${what}: ${ids.length} (${ids.slice(0, 5).join(', ')}${ids.length > 5 ? ', …' : ''})`);
  };

  const orders = await sql.all<OrderRow>('SELECT order_id, status, reason, total FROM shop_orders ORDER BY order_id');
  const byId = new Map(orders.map((o) => [o.order_id, o]));
  problem('orders not in a terminal state', orders.filter((o) => o.status !== 'completed' && o.status !== 'cancelled').map((o) => `${o.order_id}=${o.status}`));

  // the event store: exactly one terminal event per order stream
  const terminal = new Map<string, string[]>();
  const placedStreams = new Set<string>();
  for (let after = 0n; ; ) {
    const page = await store.readAll({ category: 'order', after, maxCount: 10_000 });
    for (const e of page.events) {
      const id = e.streamId.slice('order-'.length);
      if (e.type === 'OrderPlaced') placedStreams.add(id);
      if (e.type === 'OrderCompleted' || e.type === 'OrderCancelled') terminal.set(id, [...(terminal.get(id) ?? []), e.type]);
    }
    if (page.isEnd || page.events.length === 0) break;
    after = page.position;
  }
  problem('order streams without exactly one terminal event', [...placedStreams].filter((id) => terminal.get(id)?.length !== 1).map((id) => `${id}:${(terminal.get(id) ?? []).join('+') || 'none'}`));
  problem('order streams whose terminal event disagrees with the read model', [...terminal].filter(([id, t]) => byId.get(id)?.status !== (t[0] === 'OrderCompleted' ? 'completed' : 'cancelled')).map(([id]) => id));
  problem('orders in the read model without a stream', orders.filter((o) => !placedStreams.has(o.order_id)).map((o) => o.order_id));
  if (placedIds) problem('orders accepted over HTTP but unknown to Order (lost)', [...new Set(placedIds)].filter((id) => !byId.has(id)));

  // the checkout saga
  const instances = new Map<string, SagaInstance>();
  for (let cursor: string | undefined; ; ) {
    const page = await sagas.list({ saga: 'checkout', limit: 1000, ...(cursor ? { cursor } : {}) });
    for (const i of page.items) instances.set(i.key, i);
    if (!page.next) break;
    cursor = page.next;
  }
  const sagaEnd = (o: OrderRow): string => (o.status === 'completed' ? 'completed' : o.status === 'cancelled' ? 'compensated' : 'running');
  problem('checkouts that ended otherwise than their order', orders.filter((o) => instances.get(o.order_id)?.status !== sagaEnd(o)).map((o) => `${o.order_id}: ${o.status} vs ${instances.get(o.order_id)?.status ?? 'none'}`));
  problem('stuck checkouts', [...instances.values()].filter((i) => i.status === 'stuck').map((i) => `${i.key} at ${i.step}: ${i.error?.message ?? ''}`));

  // Analytics
  const an = await sql.all<{ order_id: string; outcome: string | null; total: number }>('SELECT order_id, outcome, total FROM shop_analytics_orders');
  const anById = new Map(an.map((a) => [a.order_id, a]));
  problem('orders Analytics never saw', orders.filter((o) => !anById.has(o.order_id)).map((o) => o.order_id));
  problem('orders only Analytics knows', an.filter((a) => !byId.has(a.order_id)).map((a) => a.order_id));
  problem('orders whose outcome in Analytics differs from Order', orders.filter((o) => anById.has(o.order_id) && anById.get(o.order_id)!.outcome !== o.status).map((o) => `${o.order_id}: ${o.status} vs ${anById.get(o.order_id)!.outcome}`));
  const minutes = (await sql.get<{ m: number; placed: number; completed: number; cancelled: number; revenue: number; peak: number }>(
    'SELECT count(*) AS m, sum(placed) AS placed, sum(completed) AS completed, sum(cancelled) AS cancelled, sum(revenue) AS revenue, max(placed) AS peak FROM shop_analytics_minutes',
  ))!;
  const completed = orders.filter((o) => o.status === 'completed');
  const cancelledRows = orders.filter((o) => o.status === 'cancelled');
  const revenue = completed.reduce((s, o) => s + n(o.total), 0);
  const analytics = {
    placed: n(minutes.placed),
    completed: n(minutes.completed),
    cancelled: n(minutes.cancelled),
    revenue: n(minutes.revenue),
    conversion: n(minutes.placed) === 0 ? 0 : n(minutes.completed) / n(minutes.placed),
    minutes: n(minutes.m),
    peakPerMinute: n(minutes.peak),
  };
  if (analytics.placed !== orders.length) problems.push(`Analytics counts ${analytics.placed} orders placed, Order has ${orders.length}`);
  if (analytics.completed !== completed.length) problems.push(`Analytics counts ${analytics.completed} completed, Order has ${completed.length}`);
  if (analytics.cancelled !== cancelledRows.length) problems.push(`Analytics counts ${analytics.cancelled} cancelled, Order has ${cancelledRows.length}`);
  if (analytics.revenue !== revenue) problems.push(`Analytics revenue ${analytics.revenue}, Order's completed orders total ${revenue}`);

  // Notification
  const notes = await sql.all<{ order_id: string; kind: string }>('SELECT order_id, kind FROM shop_notifications');
  const kinds = new Map<string, Set<string>>();
  for (const x of notes) kinds.set(x.order_id, (kinds.get(x.order_id) ?? new Set()).add(x.kind));
  problem('orders without a "placed" message', orders.filter((o) => !kinds.get(o.order_id)?.has('placed')).map((o) => o.order_id));
  problem(
    'orders whose customer message disagrees with Order',
    orders
      .filter((o) => {
        const k = kinds.get(o.order_id) ?? new Set();
        return o.status === 'completed' ? !k.has('completed') || k.has('cancelled') : o.status === 'cancelled' ? !k.has('cancelled') || k.has('completed') : false;
      })
      .map((o) => o.order_id),
  );
  problem('messages about orders Order does not know', [...kinds.keys()].filter((id) => !byId.has(id)));

  // Payment, Inventory, Shipping
  const pay = new Map((await sql.all<{ order_id: string; status: string }>('SELECT order_id, status FROM shop_payments')).map((r) => [r.order_id, r.status]));
  const res = new Map((await sql.all<{ order_id: string; status: string }>('SELECT order_id, status FROM shop_reservations')).map((r) => [r.order_id, r.status]));
  const ship = new Map((await sql.all<{ order_id: string; status: string }>('SELECT order_id, status FROM shop_shipments')).map((r) => [r.order_id, r.status]));
  const expectPay = (o: OrderRow): string => (o.status === 'completed' ? 'charged' : o.reason === 'payment_declined' ? 'declined' : 'refunded');
  const expectRes = (o: OrderRow): string | undefined => (o.status === 'completed' ? 'reserved' : o.reason === 'out_of_stock' ? 'rejected' : o.reason === 'shipping_failed' ? 'released' : undefined);
  const terminalOrders = [...completed, ...cancelledRows];
  problem('payments that disagree with the order', terminalOrders.filter((o) => pay.get(o.order_id) !== expectPay(o)).map((o) => `${o.order_id}: ${o.status}/${o.reason ?? ''} vs ${pay.get(o.order_id) ?? 'none'}`));
  problem('reservations that disagree with the order', terminalOrders.filter((o) => res.get(o.order_id) !== expectRes(o)).map((o) => `${o.order_id}: ${o.status}/${o.reason ?? ''} vs ${res.get(o.order_id) ?? 'none'}`));
  problem('shipments that disagree with the order', terminalOrders.filter((o) => (ship.get(o.order_id) === 'shipped') !== (o.status === 'completed')).map((o) => `${o.order_id}: ${o.status} vs ${ship.get(o.order_id) ?? 'none'}`));
  const held = new Map<string, number>();
  for (const r of await sql.all<{ items: string }>(`SELECT items FROM shop_reservations WHERE status = 'reserved'`)) {
    for (const i of JSON.parse(r.items) as Array<{ sku: string; qty: number }>) held.set(i.sku, (held.get(i.sku) ?? 0) + i.qty);
  }
  const stock = await sql.all<{ sku: string; initial: number; available: number }>('SELECT sku, initial, available FROM shop_stock');
  problem('SKUs whose stock does not add up (initial − available ≠ reserved)', stock.filter((s) => n(s.initial) - n(s.available) !== (held.get(s.sku) ?? 0)).map((s) => `${s.sku}: ${s.initial}−${s.available}≠${held.get(s.sku) ?? 0}`));

  let dead = 0;
  for (const group of SHOP_GROUPS) dead += await deadLetters.count({ group });
  if (dead > 0) problems.push(`dead letters in the shop's groups: ${dead}`);

  const cancelled: Record<string, number> = {};
  for (const o of cancelledRows) cancelled[o.reason ?? 'unknown'] = (cancelled[o.reason ?? 'unknown'] ?? 0) + 1;
  return {
    ok: problems.length === 0,
    problems,
    orders: orders.length,
    open: orders.length - terminalOrders.length,
    completed: completed.length,
    cancelled,
    revenue,
    analytics,
    notifications: notes.length,
    deadLetters: dead,
  };
}

export function formatReport(r: ShopReport): string {
  const cancelled = Object.values(r.cancelled).reduce((a, b) => a + b, 0);
  const lines = [
    `orders ${r.orders}: completed ${r.completed}, cancelled ${cancelled} (${Object.entries(r.cancelled).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}), open ${r.open}`,
    `revenue €${(r.revenue / 100).toFixed(2)}; Analytics: placed ${r.analytics.placed}, completed ${r.analytics.completed}, cancelled ${r.analytics.cancelled}, revenue €${(r.analytics.revenue / 100).toFixed(2)}, conversion ${(r.analytics.conversion * 100).toFixed(1)} %, ${r.analytics.minutes} minute(s), peak ${r.analytics.peakPerMinute} orders/min`,
    `notifications ${r.notifications}; dead letters ${r.deadLetters}`,
    ...(r.open > 0 ? [`NOT QUIET: ${r.open} order(s) still in checkout — run the check once the services have caught up (the problems below include them)`] : []),
    r.ok ? 'CHECK OK: every order in exactly one terminal state; Analytics, Notification, Payment, Inventory and Shipping agree' : `CHECK FAILED:\n  ${r.problems.join('\n  ')}`,
  ];
  return lines.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { configuredBackend } = await import('./runtime.ts');
  const { openBackend } = await import('./backend.ts');
  const args = process.argv.slice(2);
  const opt = (name: string): string | undefined => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const config = opt('--config');
  const env = { ...process.env };
  if (config) {
    const file = resolve(config);
    const c = JSON.parse(readFileSync(file, 'utf8')) as { backend: unknown; env?: Record<string, string> };
    Object.assign(env, c.env, { HERALD_CONFIG: file, HERALD_BACKEND_JSON: JSON.stringify(c.backend) });
  }
  const record = opt('--record');
  const { backend: spec, transport } = configuredBackend(env);
  const backend = await openBackend(spec, transport, env);
  try {
    const placed = record ? readFileSync(record, 'utf8').split('\n').filter(Boolean) : undefined;
    const report = await checkShop({ sql: backend.sql, events: backend.eventStore(), sagas: backend.sagaStore(), deadLetters: backend.deadLetters }, placed);
    console.log(formatReport(report));
    process.exitCode = report.ok ? 0 : 1;
  } finally {
    await backend.close();
  }
}
