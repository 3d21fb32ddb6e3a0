/**
 * The e-commerce checkout, as a reference saga for tests and examples: the saga definition, its
 * messages, and small participant services (payments, inventory, shipping, orders) that run as
 * real consumers on any transport and write through any `UnitOfWork` (inbox + outbox), so the
 * same scenario runs in memory, on SQLite and across processes.
 *
 *   order placed ─▶ payment ─▶ inventory reservation ─▶ shipping ─▶ CompleteOrder
 *   payment fails                    ─▶ CancelOrder
 *   reservation fails ─▶ RefundPayment ─▶ CancelOrder
 *   shipping times out ─▶ ReleaseInventory ─▶ RefundPayment ─▶ CancelOrder
 *
 * The services decide from the data: an amount above `DECLINE_ABOVE` is declined, an item with
 * sku `OUT_OF_STOCK_SKU` cannot be reserved, address `NOWHERE` is never answered by shipping (the
 * timeout path), customer `REFUND_BROKEN_CUSTOMER` gets every refund refused (the stuck path),
 * and the first charge of customer `FLAKY_PAYER_CUSTOMER` is never answered (the retry path).
 * Every service is idempotent by order id (a resend replies with the original result) and
 * handles each message id once (inbox).
 */
import {
  type Clock,
  createConsumer,
  createPublisher,
  defineCommand,
  defineEvent,
  type Consumer,
  type DeadLetterStore,
  type MessageDefinition,
  type StandardSchemaV1,
  type Transaction,
  type Transport,
  type UnitOfWork,
} from '@herald/core';
import { defineSaga, onFailure, onSuccess, send, type SagaDefinition, type SagaInstance, type SagaStatus, type SagaStore } from '@herald/eventsourcing';
import { waitFor } from './helpers.ts';

type FieldKind = 'string' | 'number' | 'items' | 'string?';

/** A dependency-free Standard Schema for flat records (plus an items array). */
function record<T>(fields: Readonly<Record<string, FieldKind>>): StandardSchemaV1<unknown, T> {
  return {
    '~standard': {
      version: 1,
      vendor: 'herald-testkit',
      validate: (v: unknown) => {
        if (typeof v !== 'object' || v === null) return { issues: [{ message: 'expected an object' }] };
        const o = v as Record<string, unknown>;
        const issues: StandardSchemaV1.Issue[] = [];
        for (const [name, kind] of Object.entries(fields)) {
          const x = o[name];
          const ok =
            kind === 'string' ? typeof x === 'string' && x.length > 0
            : kind === 'string?' ? x === undefined || typeof x === 'string'
            : kind === 'number' ? typeof x === 'number' && Number.isFinite(x)
            : Array.isArray(x) && x.every((i) => typeof i?.sku === 'string' && Number.isInteger(i?.qty) && i.qty > 0);
          if (!ok) issues.push({ message: `expected ${kind}`, path: [name] });
        }
        return issues.length > 0 ? { issues } : { value: v as T };
      },
    },
  };
}

export interface CheckoutItem {
  readonly sku: string;
  readonly qty: number;
}
export interface OrderPlacedData {
  readonly orderId: string;
  readonly customerId: string;
  readonly amount: number;
  readonly items: readonly CheckoutItem[];
  readonly address: string;
}
type OrderRef = { readonly orderId: string };

const o = { keyField: 'orderId' } as const;
export const OrderPlaced = defineEvent('shop.order.placed', record<OrderPlacedData>({ orderId: 'string', customerId: 'string', amount: 'number', items: 'items', address: 'string' }), { ...o, topic: 'shop.orders' });
export const CompleteOrder = defineCommand('shop.order.complete', record<OrderRef & { trackingId: string }>({ orderId: 'string', trackingId: 'string' }), { ...o, topic: 'shop.orders' });
export const CancelOrder = defineCommand('shop.order.cancel', record<OrderRef & { reason: string }>({ orderId: 'string', reason: 'string' }), { ...o, topic: 'shop.orders' });
export const OrderCompleted = defineEvent('shop.order.completed', record<OrderRef>({ orderId: 'string' }), { ...o, topic: 'shop.orders' });
export const OrderCancelled = defineEvent('shop.order.cancelled', record<OrderRef & { reason: string }>({ orderId: 'string', reason: 'string' }), { ...o, topic: 'shop.orders' });

export const ChargePayment = defineCommand('shop.payment.charge', record<OrderRef & { customerId: string; amount: number }>({ orderId: 'string', customerId: 'string', amount: 'number' }), { ...o, topic: 'shop.payments' });
export const PaymentSucceeded = defineEvent('shop.payment.succeeded', record<OrderRef & { paymentId: string; amount: number }>({ orderId: 'string', paymentId: 'string', amount: 'number' }), { ...o, topic: 'shop.payments' });
export const PaymentFailed = defineEvent('shop.payment.failed', record<OrderRef & { reason: string }>({ orderId: 'string', reason: 'string' }), { ...o, topic: 'shop.payments' });
export const RefundPayment = defineCommand('shop.payment.refund', record<OrderRef & { paymentId: string; amount: number }>({ orderId: 'string', paymentId: 'string', amount: 'number' }), { ...o, topic: 'shop.payments' });
export const PaymentRefunded = defineEvent('shop.payment.refunded', record<OrderRef & { paymentId: string }>({ orderId: 'string', paymentId: 'string' }), { ...o, topic: 'shop.payments' });
export const PaymentRefundFailed = defineEvent('shop.payment.refund-failed', record<OrderRef & { reason: string }>({ orderId: 'string', reason: 'string' }), { ...o, topic: 'shop.payments' });

export const ReserveInventory = defineCommand('shop.inventory.reserve', record<OrderRef & { items: readonly CheckoutItem[] }>({ orderId: 'string', items: 'items' }), { ...o, topic: 'shop.inventory' });
export const InventoryReserved = defineEvent('shop.inventory.reserved', record<OrderRef & { reservationId: string }>({ orderId: 'string', reservationId: 'string' }), { ...o, topic: 'shop.inventory' });
export const InventoryReservationFailed = defineEvent('shop.inventory.reservation-failed', record<OrderRef & { reason: string }>({ orderId: 'string', reason: 'string' }), { ...o, topic: 'shop.inventory' });
export const ReleaseInventory = defineCommand('shop.inventory.release', record<OrderRef & { reservationId: string }>({ orderId: 'string', reservationId: 'string' }), { ...o, topic: 'shop.inventory' });
export const InventoryReleased = defineEvent('shop.inventory.released', record<OrderRef & { reservationId: string }>({ orderId: 'string', reservationId: 'string' }), { ...o, topic: 'shop.inventory' });

export const ShipOrder = defineCommand('shop.shipping.ship', record<OrderRef & { address: string }>({ orderId: 'string', address: 'string' }), { ...o, topic: 'shop.shipping' });
export const OrderShipped = defineEvent('shop.shipping.shipped', record<OrderRef & { trackingId: string }>({ orderId: 'string', trackingId: 'string' }), { ...o, topic: 'shop.shipping' });

/** Topics the checkout uses (besides the saga's own `saga.checkout`). */
export const CHECKOUT_TOPICS = ['shop.orders', 'shop.payments', 'shop.inventory', 'shop.shipping'] as const;

export const DECLINE_ABOVE = 1000;
export const OUT_OF_STOCK_SKU = 'out-of-stock';
export const NOWHERE = 'nowhere';
export const REFUND_BROKEN_CUSTOMER = 'refund-broken';
/** The payments service ignores the first charge request of this customer's orders (the saga's timeout resends it). */
export const FLAKY_PAYER_CUSTOMER = 'flaky-payer';

export interface CheckoutState {
  readonly orderId: string;
  readonly customerId: string;
  readonly amount: number;
  readonly items: readonly CheckoutItem[];
  readonly address: string;
  readonly paymentId?: string;
  readonly reservationId?: string;
  readonly trackingId?: string;
}

export interface CheckoutSagaOptions {
  /** Per-attempt wait for the payment and inventory replies, ms (default 30 000). */
  readonly replyTimeoutMs?: number;
  /** Wait for shipping, ms (default 60 000): past it the order is compensated. */
  readonly shippingTimeoutMs?: number;
  /** Attempts of a refund or release before the instance is stuck (default 3). */
  readonly compensationAttempts?: number;
}

export function createCheckoutSaga(options: CheckoutSagaOptions = {}): SagaDefinition<CheckoutState, OrderPlacedData> {
  const replyTimeoutMs = options.replyTimeoutMs ?? 30_000;
  const compensation = { timeoutMs: replyTimeoutMs, retry: { maxAttempts: options.compensationAttempts ?? 3 } };
  return defineSaga<CheckoutState, OrderPlacedData>({
    name: 'checkout',
    startedBy: {
      event: OrderPlaced,
      key: (d) => d.orderId,
      init: (d) => ({ orderId: d.orderId, customerId: d.customerId, amount: d.amount, items: d.items, address: d.address }),
    },
    steps: [
      {
        name: 'payment',
        action: (s) => send(ChargePayment, { orderId: s.orderId, customerId: s.customerId, amount: s.amount }),
        replies: [onSuccess(PaymentSucceeded, (s: CheckoutState, d) => ({ ...s, paymentId: d.paymentId })), onFailure(PaymentFailed, { reason: (d) => d.reason })],
        compensation: {
          ...compensation,
          // A timed-out charge may have gone through: refund by order id (the service knows the payment, if any).
          action: (s) => send(RefundPayment, { orderId: s.orderId, paymentId: s.paymentId ?? 'unknown', amount: s.amount }),
          replies: [onSuccess(PaymentRefunded), onFailure(PaymentRefundFailed, { reason: (d) => d.reason })],
        },
        timeoutMs: replyTimeoutMs,
        retry: { maxAttempts: 2 },
      },
      {
        name: 'inventory',
        action: (s) => send(ReserveInventory, { orderId: s.orderId, items: s.items }),
        replies: [onSuccess(InventoryReserved, (s: CheckoutState, d) => ({ ...s, reservationId: d.reservationId })), onFailure(InventoryReservationFailed, { reason: (d) => d.reason })],
        compensation: {
          ...compensation,
          action: (s) => send(ReleaseInventory, { orderId: s.orderId, reservationId: s.reservationId ?? 'unknown' }),
          replies: [onSuccess(InventoryReleased)],
        },
        timeoutMs: replyTimeoutMs,
        retry: { maxAttempts: 2 },
      },
      {
        name: 'shipping',
        action: (s) => send(ShipOrder, { orderId: s.orderId, address: s.address }),
        replies: [onSuccess(OrderShipped, (s: CheckoutState, d) => ({ ...s, trackingId: d.trackingId }))],
        timeoutMs: options.shippingTimeoutMs ?? 60_000,
      },
    ],
    onCompleted: (s) => send(CompleteOrder, { orderId: s.orderId, trackingId: s.trackingId ?? 'unknown' }),
    onCompensated: (s, f) => send(CancelOrder, { orderId: s.orderId, reason: f ? `${f.step}: ${f.reason}` : 'unknown' }),
  });
}

export const checkoutSaga = createCheckoutSaga();

/** Where the participant services keep their records, inside the unit of work's transaction. */
export interface CheckoutKv<Native> {
  get(tx: Transaction<Native>, key: string): unknown;
  put(tx: Transaction<Native>, key: string, value: unknown): void;
  /** Optional effect log: called once per command a service handled (not for inbox duplicates), in its transaction. */
  record?(tx: Transaction<Native>, effect: CheckoutEffect): void;
}

export interface CheckoutEffect {
  readonly service: string;
  readonly type: string;
  readonly orderId: string;
  readonly messageId: string;
}

/** `CheckoutKv` on `MemoryUnitOfWork` (table `checkout`); read committed values with `uow.read('checkout', key)`. */
export const memoryCheckoutKv: CheckoutKv<{ get(table: string, key: string): unknown; put(table: string, key: string, value: unknown): void }> = {
  get: (tx, key) => tx.native.get('checkout', key),
  put: (tx, key, value) => tx.native.put('checkout', key, value),
};

/** The services' records, by key: `payment:<order>`, `reservation:<order>`, `shipment:<order>`, `order:<order>`. */
export interface PaymentRecord {
  readonly paymentId: string;
  readonly amount: number;
  readonly refunded: boolean;
}
export interface ReservationRecord {
  readonly reservationId: string;
  readonly released: boolean;
}
export interface OrderRecord {
  readonly status: 'completed' | 'cancelled';
  readonly reason?: string;
}

export interface CheckoutServicesOptions<Native> {
  readonly transport: Transport;
  readonly deadLetters: DeadLetterStore;
  readonly unitOfWork: UnitOfWork<Native>;
  readonly kv: CheckoutKv<Native>;
  readonly clock?: Clock;
  /** CloudEvents source of the services' replies (default 'checkout-services'). */
  readonly source?: string;
  /** Per-service counters of handled commands, e.g. for "no effect twice". */
  readonly onHandled?: (service: string, type: string, orderId: string) => void;
}

export interface CheckoutServices {
  readonly consumers: readonly Consumer[];
  close(): Promise<void>;
}

/** Starts the four participant services as consumers (groups `shop.payments-service`, `shop.inventory-service`, `shop.shipping-service`, `shop.orders-service`). */
export async function startCheckoutServices<Native>(options: CheckoutServicesOptions<Native>): Promise<CheckoutServices> {
  const { transport, deadLetters, unitOfWork: uow, kv } = options;
  const source = options.source ?? 'checkout-services';
  const publisher = createPublisher({ transport, source, ...(options.clock ? { clock: options.clock } : {}) });
  const consumers: Consumer[] = [];
  const service = (group: string): Consumer => {
    const c = createConsumer({ transport, group, deadLetters, ...(options.clock ? { clock: options.clock } : {}), retry: { maxAttempts: 20, initialDelayMs: 10, maxDelayMs: 200 } });
    consumers.push(c);
    return c;
  };
  // Runs `fn` once per message id (inbox); the replies it returns go out through the outbox.
  function handler<T extends OrderRef>(group: string, def: MessageDefinition<T>, fn: (tx: Transaction<Native>, data: T) => ReadonlyArray<{ def: MessageDefinition<any>; data: unknown }>) {
    return async (data: T, ctx: { envelope: import('@herald/core').CloudEvent; handler: string }): Promise<void> => {
      const r = await uow.withInbox({ group, handler: ctx.handler, source: ctx.envelope.source, id: ctx.envelope.id }, async (tx) => {
        const replies = fn(tx, data);
        kv.record?.(tx, { service: group, type: def.type, orderId: data.orderId, messageId: ctx.envelope.id });
        for (const reply of replies) {
          const { topic, message } = await publisher.envelope(reply.def, reply.data, { causedBy: ctx.envelope });
          tx.publish(topic, message);
        }
      });
      if (!r.duplicate) options.onHandled?.(group, def.type, data.orderId);
    };
  }

  const payments = service('shop.payments-service');
  payments.handle(ChargePayment, handler('shop.payments-service', ChargePayment, (tx, d) => {
    const k = `payment:${d.orderId}`;
    const existing = kv.get(tx, k) as PaymentRecord | undefined;
    if (existing) return [{ def: PaymentSucceeded, data: { orderId: d.orderId, paymentId: existing.paymentId, amount: existing.amount } }];
    if (d.customerId === FLAKY_PAYER_CUSTOMER && kv.get(tx, `ignored:${d.orderId}`) === undefined) {
      kv.put(tx, `ignored:${d.orderId}`, true);
      return [];
    }
    if (d.amount > DECLINE_ABOVE) return [{ def: PaymentFailed, data: { orderId: d.orderId, reason: 'card declined' } }];
    const rec: PaymentRecord = { paymentId: `pay-${d.orderId}`, amount: d.amount, refunded: false };
    kv.put(tx, k, rec);
    kv.put(tx, `customer:${d.orderId}`, d.customerId);
    return [{ def: PaymentSucceeded, data: { orderId: d.orderId, paymentId: rec.paymentId, amount: rec.amount } }];
  }));
  payments.handle(RefundPayment, handler('shop.payments-service', RefundPayment, (tx, d) => {
    if (kv.get(tx, `customer:${d.orderId}`) === REFUND_BROKEN_CUSTOMER) return [{ def: PaymentRefundFailed, data: { orderId: d.orderId, reason: 'refunds are refused for this account' } }];
    const k = `payment:${d.orderId}`;
    const existing = kv.get(tx, k) as PaymentRecord | undefined;
    if (existing && !existing.refunded) kv.put(tx, k, { ...existing, refunded: true });
    // Nothing charged (or refunded already): nothing to undo, still a success.
    return [{ def: PaymentRefunded, data: { orderId: d.orderId, paymentId: existing?.paymentId ?? d.paymentId } }];
  }));

  const inventory = service('shop.inventory-service');
  inventory.handle(ReserveInventory, handler('shop.inventory-service', ReserveInventory, (tx, d) => {
    const k = `reservation:${d.orderId}`;
    const existing = kv.get(tx, k) as ReservationRecord | undefined;
    if (existing) return [{ def: InventoryReserved, data: { orderId: d.orderId, reservationId: existing.reservationId } }];
    if (d.items.some((i) => i.sku === OUT_OF_STOCK_SKU)) return [{ def: InventoryReservationFailed, data: { orderId: d.orderId, reason: `${OUT_OF_STOCK_SKU} is out of stock` } }];
    const rec: ReservationRecord = { reservationId: `res-${d.orderId}`, released: false };
    kv.put(tx, k, rec);
    return [{ def: InventoryReserved, data: { orderId: d.orderId, reservationId: rec.reservationId } }];
  }));
  inventory.handle(ReleaseInventory, handler('shop.inventory-service', ReleaseInventory, (tx, d) => {
    const k = `reservation:${d.orderId}`;
    const existing = kv.get(tx, k) as ReservationRecord | undefined;
    if (existing && !existing.released) kv.put(tx, k, { ...existing, released: true });
    return [{ def: InventoryReleased, data: { orderId: d.orderId, reservationId: existing?.reservationId ?? d.reservationId } }];
  }));

  const shipping = service('shop.shipping-service');
  shipping.handle(ShipOrder, handler('shop.shipping-service', ShipOrder, (tx, d) => {
    if (d.address === NOWHERE) return []; // never answered: the saga's shipping timeout fires
    const k = `shipment:${d.orderId}`;
    const trackingId = (kv.get(tx, k) as string | undefined) ?? `track-${d.orderId}`;
    kv.put(tx, k, trackingId);
    return [{ def: OrderShipped, data: { orderId: d.orderId, trackingId } }];
  }));

  const orders = service('shop.orders-service');
  orders.handle(CompleteOrder, handler('shop.orders-service', CompleteOrder, (tx, d) => {
    const k = `order:${d.orderId}`;
    if (kv.get(tx, k) === undefined) kv.put(tx, k, { status: 'completed' } satisfies OrderRecord);
    return [{ def: OrderCompleted, data: { orderId: d.orderId } }];
  }));
  orders.handle(CancelOrder, handler('shop.orders-service', CancelOrder, (tx, d) => {
    const k = `order:${d.orderId}`;
    if (kv.get(tx, k) === undefined) kv.put(tx, k, { status: 'cancelled', reason: d.reason } satisfies OrderRecord);
    return [{ def: OrderCancelled, data: { orderId: d.orderId, reason: d.reason } }];
  }));

  for (const t of CHECKOUT_TOPICS) await transport.ensureTopic(t);
  await Promise.all(consumers.map((c) => c.start()));
  return { consumers, close: async () => void (await Promise.all(consumers.map((c) => c.close()))) };
}

/**
 * What a checkout instance received and sent, in order, from its timeline: `<type` received (the
 * start event too), `>type` sent, `<timer <step>` a timer fired, `stuck <step>`.
 */
export async function checkoutConversation(store: SagaStore, orderId: string): Promise<string[]> {
  const out: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await store.timeline('checkout', orderId, { ...(cursor ? { cursor } : {}) });
    for (const e of page.items) {
      if (e.kind === 'started' || e.kind === 'received') out.push(`<${e.type}`);
      else if (e.kind === 'sent') out.push(`>${e.type}`);
      else if (e.kind === 'timer-fired') out.push(`<timer ${e.step}`);
      else if (e.kind === 'stuck') out.push(`stuck ${e.step}`);
    }
    cursor = page.next;
  } while (cursor);
  return out;
}

/** Waits until the checkout instance of `orderId` has `status`; returns it. */
export async function waitForCheckout(store: SagaStore, orderId: string, status: SagaStatus, timeoutMs = 15_000): Promise<SagaInstance> {
  let now: string | undefined;
  return waitFor(
    async () => {
      const i = await store.get('checkout', orderId);
      now = i?.status;
      return i?.status === status ? i : undefined;
    },
    { timeoutMs, what: () => `order ${orderId} to be ${status} (now ${now ?? 'not started'})` },
  );
}

/** An order that goes through every step (override fields to take another path). */
export function checkoutOrder(orderId: string, over: Partial<OrderPlacedData> = {}): OrderPlacedData {
  return { orderId, customerId: 'c-1', amount: 120, items: [{ sku: 'book', qty: 2 }], address: '1 Main St', ...over };
}

/** The conversation of an order up to the shipping request (payment and reservation succeeded). */
export const CHECKOUT_UNTIL_SHIPPING: readonly string[] = Object.freeze([
  `<${OrderPlaced.type}`,
  `>${ChargePayment.type}`,
  `<${PaymentSucceeded.type}`,
  `>${ReserveInventory.type}`,
  `<${InventoryReserved.type}`,
  `>${ShipOrder.type}`,
]);

/** The whole conversation of an order whose shipping timed out: release, then refund, then cancel. */
export const CHECKOUT_SHIPPING_TIMED_OUT: readonly string[] = Object.freeze([
  ...CHECKOUT_UNTIL_SHIPPING,
  '<timer shipping',
  `>${ReleaseInventory.type}`,
  `<${InventoryReleased.type}`,
  `>${RefundPayment.type}`,
  `<${PaymentRefunded.type}`,
  `>${CancelOrder.type}`,
]);
