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
    const close = t.close.bind(t);
    t.close = (o?: { timeoutMs?: number }) => {
      const p = close(o);
      void p.finally(() => this.#closed.add(t));
      return p;
    };
    this.transports.push(t);
    return t;
  }

  readonly #closed = new Set<RabbitMqTransport>();

  /**
   * Deletes what closed transports declared and no open one uses, then creates a transport.
   * Quorum queues cost the broker file descriptors (about 2.5 each; the shared broker has ~900),
   * so a suite must not keep every scenario's queues until it ends.
   */
  async reapAndCreate(options: RabbitMqTransportOptions = {}): Promise<RabbitMqTransport> {
    const closed = this.transports.filter((t) => this.#closed.has(t));
    if (closed.length > 0) {
      const open = this.transports.filter((t) => !this.#closed.has(t));
      const inUse = new Set(open.flatMap((t) => [...t.declaredNames().queues, ...t.declaredNames().exchanges]));
      const queues = new Set<string>();
      const exchanges = new Set<string>();
      for (const t of closed) {
        for (const q of t.declaredNames().queues) if (!inUse.has(q)) queues.add(q);
        for (const e of t.declaredNames().exchanges) if (!inUse.has(e)) exchanges.add(e);
      }
      await this.#delete(queues, exchanges);
      for (const t of closed) {
        this.transports.splice(this.transports.indexOf(t), 1);
        this.#closed.delete(t);
      }
    }
    return this.create(options);
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
    await this.#delete(queues, exchanges);
    this.transports.length = 0;
  }

  async #delete(queues: ReadonlySet<string>, exchanges: ReadonlySet<string>): Promise<void> {
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
