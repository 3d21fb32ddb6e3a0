/**
 * What the outbox, inbox and scheduler contracts run on: a backend's unit of work with its
 * outbox and scheduler stores and the lease store they fence against, plus "own writes" on
 * the backend's native handle (so atomicity can be tested: a rolled-back transaction leaves
 * neither the business row nor the outbox row).
 *
 *   describeOutboxContract('sqlite', async ({ clock }) => {
 *     const file = tmpFile();
 *     const db = openSqliteUnitOfWork(file, { clock });
 *     return {
 *       uow: db, outbox: db.outbox, scheduler: db.scheduler, leases: db.leases,
 *       put: (tx, key, value) => { tx.native.prepare('INSERT OR REPLACE INTO kv VALUES (?, ?)').run(key, value); },
 *       get: async (key) => db.database.prepare('SELECT v FROM kv WHERE k = ?').pluck().get(key),
 *       reopen: async () => …the same, on a second connection to `file`…,
 *       close: () => db.close(),
 *     };
 *   });
 *
 * The factory must return EMPTY stores (no outbox rows, no scheduled messages, no inbox
 * records) and use `clock` for every timestamp it stores (createdAt, sentAt, inbox records)
 * and for its leases. The contracts publish through a recording transport of their own: the
 * store is under test, not the broker.
 */
import {
  type CloudEvent,
  type Clock,
  createEnvelope,
  type LeaseStore,
  type OutboxStore,
  type OutgoingMessage,
  type PublishReceipt,
  type SchedulerStore,
  type Transaction,
  type Transport,
  type TransportCapabilities,
  type UnitOfWork,
} from '@herald/core';
import { flushMicrotasks } from './manual-clock.ts';
import { sleep } from './helpers.ts';

export interface UnitOfWorkHarness<Native = unknown> {
  readonly uow: UnitOfWork<Native>;
  readonly outbox: OutboxStore;
  readonly scheduler: SchedulerStore;
  /** The lease store `markSent` / `markFired` validate fences against. */
  readonly leases: LeaseStore;
  /** Writes `key` = `value` to the service's own table through `tx.native`. */
  put(tx: Transaction<Native>, key: string, value: string): void | Promise<void>;
  /** The committed value of `key` (undefined when absent), read outside any transaction. */
  get(key: string): Promise<string | undefined>;
  /**
   * Optional: a second harness on the same data through a new connection, as another process
   * would open it. Scenarios with two relays or schedulers, and the restart scenario, use it
   * when present (then the second one can only learn of writes by polling).
   */
  reopen?(): Promise<UnitOfWorkHarness<Native>>;
  /** Closes what the factory opened (must accept being called after reopen's harness closed). */
  close(): Promise<void>;
}

export interface UnitOfWorkFactoryOptions {
  /** The clock the stores must use for their timestamps and leases. */
  readonly clock: Clock;
}

export type UnitOfWorkFactory<Native = unknown> = (options: UnitOfWorkFactoryOptions) => Promise<UnitOfWorkHarness<Native>>;

export interface PublishedEntry {
  readonly topic: string;
  readonly id: string;
  readonly key: string | undefined;
  /** The label of the transport view that published it (which relay or scheduler). */
  readonly by: string;
}

export interface RecordingBehaviour {
  /** Called before each publish call (1-based count for this view); return 'fail' to reject storing nothing, 'store-then-fail' to record then reject, 'hang' to record and never resolve. */
  readonly decide?: (call: number, topic: string, messages: readonly OutgoingMessage[]) => 'ok' | 'fail' | 'store-then-fail' | 'hang' | undefined;
}

/** A log of everything published through its transport views (one view per relay or scheduler). */
export class PublishLog {
  readonly entries: PublishedEntry[] = [];
  /** Publish calls per view label. */
  readonly calls = new Map<string, number>();

  ids(by?: string): string[] {
    return this.entries.filter((e) => by === undefined || e.by === by).map((e) => e.id);
  }

  /** A Transport whose publish records into this log (subscribe is not supported). */
  transport(by: string, behaviour: RecordingBehaviour = {}): Transport {
    return new RecordingTransport(this, by, behaviour);
  }
}

const CAPABILITIES: TransportCapabilities = {
  ackModel: 'message',
  assignment: 'local',
  consumerGroups: false,
  persistent: false,
  replay: false,
  nativeDelay: false,
  maxPayloadBytes: Number.POSITIVE_INFINITY,
  multiProcess: false,
  ackDeadlineMs: 0,
  durability: 'a test log in memory',
};

class RecordingTransport implements Transport {
  readonly name = 'recording';
  readonly capabilities = CAPABILITIES;

  constructor(
    readonly log: PublishLog,
    readonly by: string,
    readonly behaviour: RecordingBehaviour,
  ) {}

  async ensureTopic(topic: string): Promise<{ topic: string; partitions: number }> {
    return { topic, partitions: 1 };
  }

  async publish(topic: string, messages: readonly OutgoingMessage[]): Promise<readonly PublishReceipt[]> {
    const call = (this.log.calls.get(this.by) ?? 0) + 1;
    this.log.calls.set(this.by, call);
    const what = this.behaviour.decide?.(call, topic, messages) ?? 'ok';
    // A broker stores a call some time after it was made: calls that overlap may land in either
    // order (the transport promises order within one call only), so an overtaking relay shows.
    await sleep(Math.floor(Math.random() * 3));
    if (what === 'fail') throw new Error(`recording transport: publish call ${call} of "${this.by}" fails (test)`);
    for (const m of messages) this.log.entries.push({ topic, id: m.envelope.id, key: m.key ?? m.envelope.partitionkey, by: this.by });
    if (what === 'store-then-fail') throw new Error(`recording transport: publish call ${call} of "${this.by}" stored its messages, then failed (test)`);
    if (what === 'hang') return new Promise<never>(() => {});
    return messages.map((_, i) => ({ topic, partition: 0, position: String(this.log.entries.length - messages.length + i) }));
  }

  subscribe(): never {
    throw new Error('the recording transport cannot subscribe');
  }

  async close(): Promise<void> {}

  async [Symbol.asyncDispose](): Promise<void> {}
}

/** A message for `key` with a readable id. */
export function contractMessage(run: string, key: string | undefined, n: number, now: number = Date.now()): OutgoingMessage {
  const envelope: CloudEvent = createEnvelope(
    {
      type: 'contract.outboxed',
      source: 'urn:herald:contract',
      id: `${run}-${key ?? 'nokey'}-${n}`,
      data: { key, n },
      ...(key !== undefined ? { partitionkey: key } : {}),
    },
    now,
  );
  return key === undefined ? { envelope } : { envelope, key };
}

/**
 * Starts something whose first step waits on a clock timer (a relay or scheduler on a
 * ManualClock): advances the clock by 0 until `start()` resolves (bounded).
 */
export async function startOn(clock: Clock & { advance?(ms: number): Promise<number> }, start: () => Promise<void>): Promise<void> {
  let done = false;
  let failed: unknown;
  const p = start().then(
    () => {
      done = true;
    },
    (e) => {
      failed = e;
      done = true;
    },
  );
  const deadline = performance.now() + 5000;
  while (!done && clock.advance && performance.now() < deadline) {
    await clock.advance(0);
    await flushMicrotasks();
    if (!done) await sleep(1);
  }
  await p;
  if (failed !== undefined) throw failed;
}
