// Step 1: the event both services agree on — a name, a version, a schema, a topic and the field
// that keys it (all events of one order stay in order).
import { z } from 'zod';
import { defineEvent } from '@herald/core';

export const OrderPlaced = defineEvent(
  'tutorial.order.placed',
  z.object({ orderId: z.string(), customer: z.string(), amount: z.number().int().positive() }),
  { version: 1, topic: 'tutorial-orders', keyField: 'orderId' },
);
