/**
 * A consuming service's life: open the configured backend, create its tables, register its
 * handlers, run consumer + outbox relay, drain and close on SIGTERM/SIGINT.
 */
import { type Consumer, createConsumer, type MessageContext, type MessageDefinition } from '@herald/core';
import { type Backend, openBackend } from './backend.ts';
import { configuredBackend, log, message, type Sql, untilSignal } from './runtime.ts';

/** What a handler's transaction offers: the service's tables and its publishes, committed together. */
export interface ShopTx {
  readonly sql: Sql;
  /** Publishes a message when the transaction commits (on SQLite: appended to the log in it; on PostgreSQL: through the outbox and its relay). */
  publish<T>(definition: MessageDefinition<T>, data: T): void;
}

/**
 * Inbox: runs `fn` through `ctx.transaction` — one transaction of the consumer's unit of work
 * that also records the delivered message (group, handler, source, id); a message already
 * recorded is skipped. Answers published through `tx.publish` are written in the same
 * transaction (to the log on SQLite, to the outbox on PostgreSQL) and carry the delivered message as their cause (correlation and causation ids).
 */
export async function inInbox(backend: Backend, source: string, ctx: MessageContext, fn: (tx: ShopTx) => Promise<void>): Promise<void> {
  await ctx.transaction((tx) =>
    fn({
      sql: backend.txSql(tx),
      publish(definition, data) {
        const m = message(source, definition, data, { causedBy: ctx.envelope });
        tx.publish(m.topic, m.message);
      },
    }),
  );
}

export interface ConsumerService {
  readonly name: string;
  readonly source: string;
  readonly backend: Backend;
  readonly consumer: Consumer;
}

/**
 * The life of a consuming service: open the configured backend, create its tables (`ddl`,
 * idempotent), let `setup` register handlers, start the consumer (group = the service name) and
 * the outbox relay, and on SIGTERM/SIGINT drain the consumer, stop the relay, close the stores.
 */
export async function runConsumerService(name: string, ddl: string, setup: (s: ConsumerService) => void | Promise<void>): Promise<ConsumerService> {
  const { backend: spec, transport } = configuredBackend();
  const backend = await openBackend(spec, transport);
  await backend.exec(ddl);
  const consumer = createConsumer({
    transport: backend.transport,
    group: name,
    deadLetters: backend.deadLetters,
    unitOfWork: backend.unitOfWork,
    retry: { maxAttempts: 8, initialDelayMs: 50 },
    onError: (e) => log(name, `consumer: ${(e as Error)?.message ?? String(e)}`),
  });
  const service = { name, source: `shop/${name}`, backend, consumer };
  await setup(service);
  await consumer.start();
  await backend.relay.start();
  log(name, `running (backend ${spec.kind})`);
  untilSignal(name, async () => {
    await consumer.close({ timeoutMs: 3000 });
    await backend.close();
  });
  return service;
}

