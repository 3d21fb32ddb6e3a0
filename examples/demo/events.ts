import { z } from 'zod';
import { defineEvent } from '@herald/core';

export const OrderPlaced = defineEvent(
  'shop.order.placed',
  z.object({
    orderId: z.string(),
    customer: z.string(),
    items: z.array(z.object({ sku: z.string(), qty: z.number().int().positive() })).min(1),
    address: z.string(),
  }),
  { version: 1, topic: 'orders', keyField: 'orderId' },
);

export const OrderShipped = defineEvent(
  'shop.order.shipped',
  z.object({ orderId: z.string(), trackingNo: z.string() }),
  { version: 1, topic: 'shipments', keyField: 'orderId' },
);
