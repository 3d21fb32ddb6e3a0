/**
 * Order's read model: one row per order in `shop_orders`, written inline (in the same
 * transaction as the append), so `GET /orders/:id` right after `POST /orders` sees the order.
 * One definition for both backends (`?` placeholders, portable DDL); `orderSummary` is its SQLite
 * form, which `herald projections rebuild order-summary` rebuilds from the event store.
 */
import type { RecordedEvent } from '@herald/eventsourcing';
import type { SqliteProjectionDefinition } from '@herald/sqlite';
import { type OrderEvent, STATUS_AFTER } from './order.ts';

/** A projection as data: tables (DDL with `{table}` placeholders) and the statements a batch of events runs. */
export interface ShopProjection {
  readonly name: string;
  readonly category: string;
  readonly tables: Readonly<Record<string, string>>;
  /** Statements (`?` placeholders, `{table}` names) applying `events`, in order. */
  writes(events: readonly RecordedEvent[]): Array<readonly [sql: string, params: readonly unknown[]]>;
}

const INSERT = 'INSERT INTO {shop_orders} (order_id, customer, email, total, status, placed_at, updated_at, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING';
const UPDATE = `UPDATE {shop_orders} SET status = coalesce(?, status), reason = coalesce(?, reason), tracking_no = coalesce(?, tracking_no), updated_at = ?, version = ?
  WHERE order_id = ? AND version < ?`;

export const orderSummaryProjection: ShopProjection = {
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
      placed_at BIGINT NOT NULL,
      updated_at BIGINT NOT NULL,
      version INTEGER NOT NULL
    );
    CREATE INDEX {shop_orders}_by_status ON {shop_orders} (status, order_id)`,
  },
  writes(events) {
    return events.map((r) => {
      const e = { type: r.type, data: r.data } as OrderEvent;
      if (e.type === 'OrderPlaced') return [INSERT, [e.data.orderId, e.data.customer, e.data.email, e.data.total, STATUS_AFTER.OrderPlaced, e.data.placedAt, r.recordedAt, r.streamVersion]] as const;
      const reason = e.type === 'OrderCancelled' ? e.data.reason : null;
      const tracking = e.type === 'OrderCompleted' ? e.data.trackingNo : null;
      return [UPDATE, [STATUS_AFTER[e.type] ?? null, reason, tracking, r.recordedAt, r.streamVersion, e.data.orderId, r.streamVersion]] as const;
    });
  },
};

/** The SQLite form of a `ShopProjection`. */
export function sqliteProjection(p: ShopProjection): SqliteProjectionDefinition {
  return {
    name: p.name,
    category: p.category,
    tables: p.tables,
    handle(events, ctx) {
      for (const [sql, params] of p.writes(events)) ctx.statement(sql).run(...params);
    },
  };
}

export const orderSummary = sqliteProjection(orderSummaryProjection);
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
