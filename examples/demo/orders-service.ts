// The orders service: places DEMO_ORDERS orders on the 'orders' topic, in batches.
import { createPublisher } from '@herald/core';
import { createSqliteTransport } from '@herald/sqlite';
import { OrderPlaced } from './events.ts';

const path = process.env.DEMO_DB!;
const total = Number(process.env.DEMO_ORDERS ?? 2000);
const transport = createSqliteTransport({ path });
const publisher = createPublisher({ transport, source: 'demo/orders' });

for (let i = 0; i < total; i += 100) {
  const batch = [];
  for (let j = i; j < Math.min(total, i + 100); j++) {
    batch.push({
      definition: OrderPlaced,
      data: {
        orderId: `order-${j % 250}`, // 250 customers' carts: many orders share a key, kept in order
        customer: `customer-${j % 250}`,
        items: [{ sku: `sku-${j % 17}`, qty: 1 + (j % 3) }],
        // every 97th order has an address the shipping service cannot use: it is dead-lettered
        address: j % 97 === 0 ? 'nowhere' : `${j} Demo Street`,
      },
    });
  }
  await publisher.publishBatch(batch);
  process.send?.({ published: Math.min(total, i + 100) });
  await new Promise((r) => setTimeout(r, 5));
}
await transport.close();
