// Step 2: the orders service. It writes an order to its own table and the OrderPlaced event to
// the outbox in ONE transaction; the relay publishes the outbox afterwards. A crash between the
// two can no longer lose the event or publish an order that was never saved.
import { createOutboxRelay, createPublisher, type Transaction } from '@herald/core';
import { createSqliteOutboxStore, createSqliteTransport, createSqliteUnitOfWork } from '@herald/sqlite';
import type Database from 'better-sqlite3';
import { databasePath } from './config.ts';
import { OrderPlaced } from './events.ts';

export async function startOrders(path: string) {
  const transport = createSqliteTransport({ path });
  const unitOfWork = createSqliteUnitOfWork({ path }); // its own connection: transactions span awaits
  // In a unit-of-work transaction: it waits its turn for the file's write lock (the other service may be migrating it).
  await unitOfWork.withTransaction((tx: Transaction<Database.Database>) => tx.native.exec('CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL, amount INTEGER NOT NULL)'));
  const publisher = createPublisher({ transport, source: 'tutorial/orders' });
  const outbox = createSqliteOutboxStore({ database: transport.database });
  const relay = createOutboxRelay({ store: outbox, transport, leases: transport.leases });
  await relay.start();

  return {
    async placeOrder(order: { orderId: string; customer: string; amount: number }): Promise<void> {
      const { topic, message } = await publisher.envelope(OrderPlaced, order); // validated here
      await unitOfWork.withTransaction((tx: Transaction<Database.Database>) => {
        tx.native.prepare('INSERT INTO orders (id, customer, amount) VALUES (?, ?, ?)').run(order.orderId, order.customer, order.amount);
        tx.publish(topic, message); // an outbox row, committed with the order
      });
    },
    async close(): Promise<void> {
      await relay.close();
      await unitOfWork.close();
      await outbox.close();
      await transport.close();
    },
  };
}

// Run as a process: node --import tsx orders.ts  (TUTORIAL_ORDERS orders, default 100)
if (import.meta.url === `file://${process.argv[1]}`) {
  const orders = await startOrders(databasePath());
  const count = Number(process.env.TUTORIAL_ORDERS ?? 100);
  for (let i = 1; i <= count; i++) await orders.placeOrder({ orderId: `order-${i}`, customer: `customer-${i % 7}`, amount: 100 * i });
  console.log(`placed ${count} orders`);
  await orders.close(); // the relay publishes what is left before it stops
}
