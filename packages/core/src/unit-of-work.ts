/**
 * Units of work: a service's own writes commit in one local transaction together with the
 * messages they cause (outbox, scheduled messages) or with the id of the message that caused
 * them (inbox). Backends implement `UnitOfWork` on their own connection: on SQLite the service's
 * tables, its outbox and its inbox live in one database file (transactions across attached
 * files are not atomic in WAL mode); on PostgreSQL in one database.
 *
 * Exactly-once effect covers only the writes made through `tx.native` inside the callback;
 * calls to the outside world from a handler stay at-least-once.
 */
import type { OutgoingMessage } from './transport.ts';

/** A message recorded in a transaction, relayed to `topic` after commit. */
export interface OutboxWrite {
  readonly topic: string;
  readonly message: OutgoingMessage;
}

/** A message recorded in a transaction, published to `topic` at or after `deliverAt`. */
export interface ScheduledWrite extends OutboxWrite {
  /** Epoch ms (the injected clock's `now()`). */
  readonly deliverAt: number;
  /** Stable id: scheduling the same id twice keeps the first (a saga timer id, say). Default: the envelope id. */
  readonly id?: string;
}

/**
 * What a transaction callback gets. `Native` is the backend's own handle for the service's
 * writes: the better-sqlite3 `Database` on SQLite, a `pg` client on PostgreSQL, a staging map
 * in memory. Everything done through it and through `publish`/`schedule` commits or rolls back
 * together.
 */
export interface Transaction<Native = unknown> {
  readonly native: Native;
  /**
   * Records messages (in order) to be published exactly when this transaction commits, never
   * after a rollback: in the outbox, which a relay publishes after commit — or, where the
   * backend can (the SQLite unit of work given the SQLite transport on the same file), appended
   * straight to the transport's log inside this transaction.
   */
  publish(topic: string, messages: OutgoingMessage | readonly OutgoingMessage[]): void;
  /** Records a delayed message; the scheduler publishes it at or after `deliverAt`. Returns its id. */
  schedule(write: ScheduledWrite): string;
  /** Cancels a scheduled message not yet published, in this transaction. */
  cancelScheduled(id: string): void;
  /** Runs `fn` once the transaction has committed (never after a rollback). Errors it throws are reported, not rethrown. */
  afterCommit(fn: () => void): void;
}

/** The identity an inbox records: (group, handler, source, id) — see docs/reference/consumer.md. */
export interface InboxKey {
  readonly group: string;
  readonly handler: string;
  /** The envelope's `source`. */
  readonly source: string;
  /** The envelope's `id`. */
  readonly id: string;
  /**
   * Not part of the identity: epoch ms (the unit of work's clock) the handler attempt started.
   * When set, the record keeps the attempt's duration, from here to the end of `fn` (just before
   * the commit). `ctx.transaction` sets it; a finite number or absent.
   */
  readonly startedAt?: number;
}

/** What the inbox holds for a recorded key. */
export interface InboxRecord {
  /** Epoch ms the record was written (when the transaction recorded the key). */
  readonly handledAt: number;
  /** Whole ms from the key's `startedAt` to the end of `fn`; undefined when the key had no `startedAt`. */
  readonly durationMs: number | undefined;
}

export type InboxResult<R> = { readonly duplicate: false; readonly value: R } | { readonly duplicate: true };

export interface UnitOfWork<Native = unknown> {
  /** Backend name, for logs ('memory', 'sqlite', 'postgres'). */
  readonly name: string;
  /**
   * Runs `fn` in one local transaction: commits when it resolves, rolls back when it throws
   * (the error is rethrown). Calls are serialized per unit of work where the backend needs it.
   */
  withTransaction<R>(fn: (tx: Transaction<Native>) => Promise<R> | R): Promise<R>;
  /**
   * Inbox: runs `fn` in a transaction that also records `key`. When `key` is already recorded,
   * `fn` does not run and the result is `{ duplicate: true }`.
   */
  withInbox<R>(key: InboxKey, fn: (tx: Transaction<Native>) => Promise<R> | R): Promise<InboxResult<R>>;
  /** Whether `key` is recorded (committed). */
  inboxHas(key: InboxKey): Promise<boolean>;
  /** The committed record of `key` (its `startedAt` is ignored), or undefined; like `inboxHas`, committed state only. */
  inboxRecord(key: InboxKey): Promise<InboxRecord | undefined>;
  /** Deletes inbox records older than `before` (epoch ms); returns how many. The retention is the caller's policy. */
  purgeInbox(before: number): Promise<number>;
}
