// Inventory: stock per SKU and reservations (consumer group 'inventory' on 'inventory-commands').
// A reservation takes every item or none; releasing it (the saga's compensation) puts the stock
// back. Stock of a SKU starts at INVENTORY_STOCK[sku] (a JSON object, default {"sku-rare": 40})
// or INVENTORY_DEFAULT_STOCK (default 1 000 000) when first seen.
import { HeraldError } from '@herald/core';
import { InventoryRejected, InventoryReleased, InventoryReserved, type LineItem, ReleaseInventory, ReserveInventory } from '../src/events.ts';
import { envNumber, type Sql } from '../src/runtime.ts';
import { inInbox, runConsumerService } from '../src/service.ts';

const defaultStock = envNumber('INVENTORY_DEFAULT_STOCK', 1_000_000);
let stock: Record<string, number>;
try {
  stock = JSON.parse(process.env.INVENTORY_STOCK ?? '{"sku-rare": 40}') as Record<string, number>;
} catch (cause) {
  throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `INVENTORY_STOCK must be a JSON object of SKU → count (got ${process.env.INVENTORY_STOCK})`, { cause });
}

const DDL = `CREATE TABLE IF NOT EXISTS shop_stock (
  sku TEXT PRIMARY KEY,
  initial INTEGER NOT NULL,
  available INTEGER NOT NULL CHECK (available >= 0)
);
CREATE TABLE IF NOT EXISTS shop_reservations (
  order_id TEXT PRIMARY KEY,
  items TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('reserved', 'rejected', 'released')),
  reason TEXT,
  updated_at BIGINT NOT NULL
)`;

async function available(sql: Sql, sku: string): Promise<number> {
  const initial = stock[sku] ?? defaultStock;
  await sql.run('INSERT INTO shop_stock (sku, initial, available) VALUES (?, ?, ?) ON CONFLICT (sku) DO NOTHING', sku, initial, initial);
  const row = await sql.get<{ available: number }>('SELECT available FROM shop_stock WHERE sku = ?', sku);
  return Number(row!.available);
}

await runConsumerService('inventory', DDL, ({ backend, consumer, source }) => {
  consumer.handle(ReserveInventory, (cmd, ctx) =>
    inInbox(backend, source, ctx, async (tx) => {
      const known = await tx.sql.get<{ status: string; reason: string | null; items: string }>('SELECT status, reason, items FROM shop_reservations WHERE order_id = ?', cmd.orderId);
      if (known) {
        if (known.status === 'rejected') tx.publish(InventoryRejected, { orderId: cmd.orderId, sku: '', reason: known.reason ?? 'rejected' });
        else if (known.status === 'reserved') tx.publish(InventoryReserved, { orderId: cmd.orderId });
        else tx.publish(InventoryRejected, { orderId: cmd.orderId, sku: '', reason: 'reservation already released' });
        return;
      }
      const need = new Map<string, number>();
      for (const i of cmd.items) need.set(i.sku, (need.get(i.sku) ?? 0) + i.qty);
      for (const [sku, qty] of need) {
        const have = await available(tx.sql, sku);
        if (have < qty) {
          const reason = `out of stock: ${sku} (${have} left, ${qty} wanted)`;
          await tx.sql.run(`INSERT INTO shop_reservations (order_id, items, status, reason, updated_at) VALUES (?, ?, 'rejected', ?, ?)`, cmd.orderId, JSON.stringify(cmd.items), reason, ctx.clock.now());
          tx.publish(InventoryRejected, { orderId: cmd.orderId, sku, reason });
          return;
        }
      }
      for (const [sku, qty] of need) await tx.sql.run('UPDATE shop_stock SET available = available - ? WHERE sku = ?', qty, sku);
      await tx.sql.run(`INSERT INTO shop_reservations (order_id, items, status, updated_at) VALUES (?, ?, 'reserved', ?)`, cmd.orderId, JSON.stringify(cmd.items), ctx.clock.now());
      tx.publish(InventoryReserved, { orderId: cmd.orderId });
    }),
  );
  consumer.handle(ReleaseInventory, (cmd, ctx) =>
    inInbox(backend, source, ctx, async (tx) => {
      const r = await tx.sql.get<{ status: string; items: string }>('SELECT status, items FROM shop_reservations WHERE order_id = ?', cmd.orderId);
      if (r?.status === 'reserved') {
        for (const i of JSON.parse(r.items) as LineItem[]) await tx.sql.run('UPDATE shop_stock SET available = available + ? WHERE sku = ?', i.qty, i.sku);
        await tx.sql.run(`UPDATE shop_reservations SET status = 'released', updated_at = ? WHERE order_id = ?`, ctx.clock.now(), cmd.orderId);
      }
      // released now or earlier, or never reserved: nothing is held for this order any more
      tx.publish(InventoryReleased, { orderId: cmd.orderId });
    }),
  );
});
