// Analytics: a CQRS read model of the order events (consumer group 'analytics' on 'orders' —
// choreography). Per order its outcome; per minute orders placed, completed, cancelled and
// revenue; conversion = completed / placed. Inbox: each event counts once.
import { OrderCancelled, OrderCompleted, OrderPlaced } from '../src/events.ts';
import { inInbox, runConsumerService } from '../src/service.ts';

const DDL = `CREATE TABLE IF NOT EXISTS shop_analytics_orders (
  order_id TEXT PRIMARY KEY,
  total INTEGER NOT NULL,
  placed_at BIGINT NOT NULL,
  outcome TEXT CHECK (outcome IN ('completed', 'cancelled')),
  reason TEXT,
  ended_at BIGINT
);
CREATE TABLE IF NOT EXISTS shop_analytics_minutes (
  minute BIGINT PRIMARY KEY,
  placed INTEGER NOT NULL DEFAULT 0,
  completed INTEGER NOT NULL DEFAULT 0,
  cancelled INTEGER NOT NULL DEFAULT 0,
  revenue INTEGER NOT NULL DEFAULT 0
)`;

const minuteOf = (ms: number): number => Math.floor(ms / 60_000) * 60_000;
const bump = (column: 'placed' | 'completed' | 'cancelled') =>
  `INSERT INTO shop_analytics_minutes (minute, ${column}, revenue) VALUES (?, 1, ?)
   ON CONFLICT (minute) DO UPDATE SET ${column} = shop_analytics_minutes.${column} + 1, revenue = shop_analytics_minutes.revenue + excluded.revenue`;

await runConsumerService('analytics', DDL, ({ backend, consumer, source }) => {
  consumer.handle(OrderPlaced, (o, ctx) =>
    inInbox(backend, source, ctx, async (tx) => {
      const n = await tx.sql.run('INSERT INTO shop_analytics_orders (order_id, total, placed_at) VALUES (?, ?, ?) ON CONFLICT (order_id) DO NOTHING', o.orderId, o.total, o.placedAt);
      if (n > 0) await tx.sql.run(bump('placed'), minuteOf(o.placedAt), 0);
    }),
  );
  consumer.handle(OrderCompleted, (o, ctx) =>
    inInbox(backend, source, ctx, async (tx) => {
      const n = await tx.sql.run(`UPDATE shop_analytics_orders SET outcome = 'completed', ended_at = ? WHERE order_id = ? AND outcome IS NULL`, o.completedAt, o.orderId);
      if (n > 0) await tx.sql.run(bump('completed'), minuteOf(o.completedAt), o.total);
    }),
  );
  consumer.handle(OrderCancelled, (o, ctx) =>
    inInbox(backend, source, ctx, async (tx) => {
      const n = await tx.sql.run(`UPDATE shop_analytics_orders SET outcome = 'cancelled', reason = ?, ended_at = ? WHERE order_id = ? AND outcome IS NULL`, o.reason, o.cancelledAt, o.orderId);
      if (n > 0) await tx.sql.run(bump('cancelled'), minuteOf(o.cancelledAt), 0);
    }),
  );
});
