/**
 * Order's read model: one row per order in `shop_orders`, written inline (in the same
 * transaction as the append), so `GET /orders/:id` right after `POST /orders` sees the order.
 * `herald projections rebuild order-summary` rebuilds it from the event store.
 */
import type { SqliteProjectionDefinition } from '@herald/sqlite';
import { type OrderEvent, STATUS_AFTER } from './order.ts';

export const orderSummary: SqliteProjectionDefinition = {
  name: 'order-summary',
  category: 'order',
  tables: {
    shop_orders: `CREATE TABLE {shop_orders} (
      order_id TEXT PRIMARY KEY,
      customer TEXT NOT NULL,
      email TEXT NOT NULL,
      total INTEGER NOT NULL,
      status TEXT NOT NULL,
      reason TEXT,
      tracking_no TEXT,
      placed_at INTEGER NOT NULL,
      updated_at INTEGER NOT NULL,
      version INTEGER NOT NULL
    );
    CREATE INDEX {shop_orders}_by_status ON {shop_orders} (status, order_id)`,
  },
  handle(events, ctx) {
    const insert = ctx.statement(
      `INSERT INTO {shop_orders} (order_id, customer, email, total, status, placed_at, updated_at, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING`,
    );
    const update = ctx.statement(
      `UPDATE {shop_orders} SET status = coalesce(?, status), reason = coalesce(?, reason), tracking_no = coalesce(?, tracking_no), updated_at = ?, version = ?
       WHERE order_id = ? AND version < ?`,
    );
    for (const r of events) {
      const e = { type: r.type, data: r.data } as OrderEvent;
      const id = (e.data as { orderId: string }).orderId;
      if (e.type === 'OrderPlaced') {
        insert.run(id, e.data.customer, e.data.email, e.data.total, STATUS_AFTER.OrderPlaced, e.data.placedAt, r.recordedAt, r.streamVersion);
        continue;
      }
      const reason = e.type === 'OrderCancelled' ? e.data.reason : null;
      const tracking = e.type === 'OrderCompleted' ? e.data.trackingNo : null;
      update.run(STATUS_AFTER[e.type] ?? null, reason, tracking, r.recordedAt, r.streamVersion, id, r.streamVersion);
    }
  },
};

export default orderSummary;

export interface OrderRow {
  order_id: string;
  customer: string;
  email: string;
  total: number;
  status: string;
  reason: string | null;
  tracking_no: string | null;
  placed_at: number;
  updated_at: number;
}
