/**
 * Test support: transports on the shared RabbitMQ with a random namespace per test file, and
 * clean-up that deletes every queue and exchange they declared (and nothing else).
 */
import { randomUUID } from 'node:crypto';
import { Connection } from 'rabbitmq-client';
import { createRabbitMqTransport, type RabbitMqTransport, type RabbitMqTransportOptions } from './transport.ts';

export const RABBITMQ_PORT = Number(process.env.HERALD_RABBITMQ_PORT ?? 5672);
export const RABBITMQ_URL = process.env.HERALD_RABBITMQ_URL ?? `amqp://guest:guest@127.0.0.1:${RABBITMQ_PORT}`;

/** Group membership fast enough that partitions move within the contract's ~1 s waits. */
export const FAST_MEMBERSHIP = { heartbeatMs: 100, memberTimeoutMs: 1000, joinSettleMs: 100, revokeTimeoutMs: 2000 } as const;

export function testNamespace(label: string): string {
  return `herald-test-${label}-${randomUUID().slice(0, 8)}`;
}

/** Makes transports and remembers what they declared, so `cleanup()` can delete it. */
export class TestBroker {
  readonly transports: RabbitMqTransport[] = [];
  readonly extraQueues = new Set<string>();
  readonly extraExchanges = new Set<string>();

  constructor(
    readonly namespace: string,
    readonly defaults: RabbitMqTransportOptions = {},
    readonly url: string = RABBITMQ_URL,
  ) {}

  create(options: RabbitMqTransportOptions = {}): RabbitMqTransport {
    const t = createRabbitMqTransport({
      url: this.url,
      namespace: this.namespace,
      // A safety net: if clean-up never runs, RabbitMQ drops idle test queues after 10 minutes.
      queueExpiresMs: 600_000,
      connection: { retryLow: 100, retryHigh: 1000 },
      ...FAST_MEMBERSHIP,
      ...this.defaults,
      ...options,
    });
    this.transports.push(t);
    return t;
  }

  /** Deletes every queue and exchange the transports declared. */
  async cleanup(): Promise<void> {
    await Promise.all(this.transports.map((t) => t.close({ timeoutMs: 200 }).catch(() => {})));
    const queues = new Set(this.extraQueues);
    const exchanges = new Set(this.extraExchanges);
    for (const t of this.transports) {
      const d = t.declaredNames();
      for (const q of d.queues) queues.add(q);
      for (const e of d.exchanges) exchanges.add(e);
    }
    if (queues.size === 0 && exchanges.size === 0) return;
    const conn = new Connection({ url: this.url, connectionTimeout: 5000, retryLow: 100, retryHigh: 500 });
    conn.on('error', () => {});
    try {
      await conn.onConnect(5000);
      for (const queue of queues) await conn.queueDelete({ queue }).catch(() => {});
      for (const exchange of exchanges) await conn.exchangeDelete({ exchange }).catch(() => {});
    } finally {
      await conn.close().catch(() => {});
    }
  }
}
