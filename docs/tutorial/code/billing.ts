// Step 3: the billing service. A consumer group on the orders topic; each OrderPlaced becomes an
// invoice, written in ONE transaction with the inbox record of the event: a redelivered event
// (after a crash, a rebalance, a relay's resend) finds its record and changes nothing.
import { createConsumer, type Transaction } from '@herald/core';
import { createSqliteTransport, createSqliteUnitOfWork, SqliteDeadLetterStore } from '@herald/sqlite';
import type Database from 'better-sqlite3';
import { databasePath } from './config.ts';
import { OrderPlaced } from './events.ts';

export async function startBilling(path: string) {
  const transport = createSqliteTransport({ path });
  const unitOfWork = createSqliteUnitOfWork({ path });
  // In a unit-of-work transaction: it waits its turn for the file's write lock (the other service may be migrating it).
  await unitOfWork.withTransaction((tx: Transaction<Database.Database>) => tx.native.exec('CREATE TABLE IF NOT EXISTS invoices (order_id TEXT NOT NULL, amount INTEGER NOT NULL)')); // no unique key: the inbox alone keeps it exact
  const deadLetters = new SqliteDeadLetterStore({ database: transport.database });
  const consumer = createConsumer({ transport, group: 'billing', deadLetters, unitOfWork });

  consumer.handle(OrderPlaced, async (order, ctx) => {
    await ctx.transaction((tx: Transaction<Database.Database>) => {
      tx.native.prepare('INSERT INTO invoices (order_id, amount) VALUES (?, ?)').run(order.orderId, order.amount);
    });
  });
  await consumer.start();

  return {
    stats: () => consumer.stats(),
    async close(): Promise<void> {
      await consumer.close(); // drains: running handlers finish, offsets are committed
      await unitOfWork.close();
      await deadLetters.close();
      await transport.close();
    },
  };
}

// Run as a process: node --import tsx billing.ts  — Ctrl-C stops it cleanly
if (import.meta.url === `file://${process.argv[1]}`) {
  const billing = await startBilling(databasePath());
  console.log('billing: waiting for orders (Ctrl-C stops)');
  const stop = async (): Promise<void> => {
    await billing.close();
    console.log(`billing: invoiced ${billing.stats().handled} orders`);
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
}
