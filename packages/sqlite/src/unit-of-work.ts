/**
 * `UnitOfWork` on the Herald SQLite file: a service's own tables, its outbox, its inbox and its
 * scheduled messages live in ONE database file and commit in one local transaction
 * (transactions across ATTACHed files are not atomic in WAL mode).
 *
 * The unit of work owns a connection of its own (`native`, a better-sqlite3 `Database`); do not
 * give it the connection a transport or an event store uses: a transaction held across `await`s
 * on a shared connection would swallow their writes.
 *
 * Transactions are serialized on that connection. Calls waiting in the queue are group-committed:
 * up to `maxBatch` callbacks run one after another in ONE `BEGIN IMMEDIATE` transaction, each in
 * its own SAVEPOINT. A callback that throws rolls back its savepoint only and rejects its own
 * caller; every caller is resolved after the COMMIT. If the transaction itself fails (the write
 * lock stayed busy past `busyTimeoutMs`, disk full), every caller of the batch is rejected with
 * `HERALD_ERR_STORAGE` (retryable) and nothing of the batch is stored.
 *
 * Asynchronous callbacks are allowed, and the write lock is held across their `await`s: other
 * connections — other processes, and this process's transport and event store — wait for it (up
 * to their `busyTimeoutMs`). Keep awaits inside a transaction short, and never await a write to
 * the same file through another connection inside the callback (it waits for a lock this
 * callback holds: it fails after busyTimeoutMs). Do not call `withTransaction` from inside a
 * callback (it queues behind the running one). Use `tx.native` only inside the callback.
 *
 * After the COMMIT: `afterCommit` callbacks run (errors go to `onError`), then the outbox and
 * scheduler stores of this process on the file are woken (`onWrite`). Other processes find the
 * rows by polling.
 *
 * Direct mode (`transport`: the SQLite transport on the SAME file): `tx.publish` appends the
 * messages to the transport's log (`herald_log`) inside the transaction, instead of writing
 * outbox rows for a relay. The messages exist iff the transaction commits; offsets come from the
 * log's counters read under the write lock, so per-partition order is commit order, across
 * processes. Validation, encoding, `maxPayloadBytes` (the transport's), the partitioner and
 * unknown topics (created with the transport's default partition count, in this transaction)
 * are the transport's `publish` rules; a refused message throws inside the callback. After the
 * COMMIT, this process's subscriptions to the touched topics are woken (other processes notice
 * the commit at their transport's `pollMs`). `tx.schedule` still writes scheduled rows. A
 * transport on another file, or on this unit of work's own connection, is refused
 * (`HERALD_ERR_INVALID_ARGUMENT`). Each `tx.publish` reads its partitions' counters and writes
 * them back in the transaction, so a rolled-back savepoint (the callback's, or one of yours)
 * gives its offsets back.
 *
 * Inbox: `withInbox` looks the key up under the write lock, so two processes handling the same
 * message serialize; the second sees the first's committed record and does not run `fn`. A key
 * with `startedAt` also stores the attempt's duration (`duration_ms`, one UPDATE after `fn`).
 */
import { type Clock, HeraldError, type InboxKey, type InboxRecord, type InboxResult, isHeraldError, type OutgoingMessage, type ScheduledWrite, systemClock, type Transaction, type UnitOfWork } from '@herald/core';
import { checkInboxKey, positiveInt } from '@herald/core/internal';
import type Database from 'better-sqlite3';
import { realpathSync } from 'node:fs';
import { BUSY, type DatabaseSource, resolveDatabase, type SqliteDatabase, storageError } from './database.ts';
import { LogAppender } from './log-append.ts';
import { fileOf, notifyWrite, OutboxWriter, outboxPartitions } from './outbox-writer.ts';
import { type DirectLog, directLogOf, SqliteTransport } from './transport.ts';

export type SqliteUnitOfWorkOptions = DatabaseSource & {
  /** Outbox partitions (`partitionForKey(key) mod P`); fixed in the file by the first opener (default 8). */
  readonly outboxPartitions?: number;
  /** Timestamps (created_at, handled_at). Default the system clock. */
  readonly clock?: Clock;
  /** Largest encoded envelope an outbox or scheduled row accepts, bytes (default 1 MiB, the transports' default); 0 disables. */
  readonly maxPayloadBytes?: number;
  /** Most callbacks group-committed in one transaction (default 256). */
  readonly maxBatch?: number;
  /** Errors thrown by `afterCommit` callbacks and `onWrite` listeners (default: a process warning). */
  readonly onError?: (error: unknown) => void;
  /**
   * Direct mode: the SQLite transport on this same file. `tx.publish` then appends to its log in
   * the transaction (no outbox rows, no relay). Absent: outbox rows. Another file is
   * `HERALD_ERR_INVALID_ARGUMENT`. The unit of work does not close it.
   */
  readonly transport?: SqliteTransport;
};

/** The transport's log and this connection's appender, in direct mode. */
interface Direct {
  readonly log: DirectLog;
  readonly appender: LogAppender;
}

interface Call {
  readonly fn: (tx: Transaction<Database.Database>) => unknown;
  readonly inbox: InboxKey | undefined;
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: unknown) => void;
}

/** Creates a unit of work on its own connection to the file (`path`) or on `database` (which must not be shared with a transport or event store). */
export function createSqliteUnitOfWork(options: SqliteUnitOfWorkOptions): SqliteUnitOfWork {
  return new SqliteUnitOfWork(options);
}

export class SqliteUnitOfWork implements UnitOfWork<Database.Database> {
  readonly name = 'sqlite';
  readonly database: SqliteDatabase;
  /** Outbox partition count of the file. */
  readonly partitions: number;
  /** Absolute path of the file (the key of in-process wake-ups). */
  readonly file: string;
  readonly #owned: boolean;
  readonly #clock: Clock;
  readonly #writer: OutboxWriter;
  readonly #direct: Direct | undefined;
  readonly #maxBatch: number;
  readonly #onError: (e: unknown) => void;
  readonly #queue: Call[] = [];
  #flushScheduled = false;
  #flushing: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #closed = false;
  readonly #s: Record<'begin' | 'commit' | 'rollback' | 'savepoint' | 'release' | 'rollbackTo' | 'inboxGet' | 'inboxPut' | 'inboxDuration', Database.Statement>;
  #transactions = 0;

  constructor(options: SqliteUnitOfWorkOptions) {
    const maxBatch = positiveInt('maxBatch', options.maxBatch ?? 256);
    const { database, owned } = resolveDatabase(options);
    try {
      this.database = database;
      this.#owned = owned;
      this.#clock = options.clock ?? systemClock;
      this.#maxBatch = maxBatch;
      this.#onError = options.onError ?? ((e) => process.emitWarning(`unit of work: ${e instanceof Error ? e.message : String(e)}`, 'HeraldWarning'));
      this.partitions = outboxPartitions(database, options.outboxPartitions);
      this.#writer = new OutboxWriter(this.partitions, options.maxPayloadBytes);
      this.file = fileOf(database);
      this.#direct = options.transport === undefined ? undefined : directTo(options.transport, database, this.file);
      const db = database.db;
      if (owned) db.pragma('busy_timeout = 0');
      this.#s = {
        begin: db.prepare('BEGIN IMMEDIATE'),
        commit: db.prepare('COMMIT'),
        rollback: db.prepare('ROLLBACK'),
        savepoint: db.prepare('SAVEPOINT herald_uow'),
        release: db.prepare('RELEASE herald_uow'),
        rollbackTo: db.prepare('ROLLBACK TO herald_uow'),
        inboxGet: db.prepare('SELECT handled_at, duration_ms FROM herald_inbox WHERE grp = ? AND handler = ? AND source = ? AND id = ?'),
        inboxPut: db.prepare('INSERT INTO herald_inbox (grp, handler, source, id, handled_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING'),
        inboxDuration: db.prepare('UPDATE herald_inbox SET duration_ms = ? WHERE grp = ? AND handler = ? AND source = ? AND id = ?'),
      };
    } catch (e) {
      if (owned) database.close();
      throw e;
    }
  }

  /** Group-commit transactions committed so far. */
  get transactions(): number {
    return this.#transactions;
  }

  withTransaction<R>(fn: (tx: Transaction<Database.Database>) => Promise<R> | R): Promise<R> {
    return this.#enqueue(fn, undefined) as Promise<R>;
  }

  withInbox<R>(key: InboxKey, fn: (tx: Transaction<Database.Database>) => Promise<R> | R): Promise<InboxResult<R>> {
    try {
      checkInboxKey(key);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#enqueue(fn, key) as Promise<InboxResult<R>>;
  }

  async inboxHas(key: InboxKey): Promise<boolean> {
    return (await this.inboxRecord(key)) !== undefined;
  }

  async inboxRecord(key: InboxKey): Promise<InboxRecord | undefined> {
    const k = checkInboxKey(key);
    this.#open();
    // Committed state only: never read on this connection while a group transaction is open.
    while (this.database.db.inTransaction) await (this.#flushing ?? new Promise((r) => setImmediate(r)));
    const row = this.database.read(() => this.#s.inboxGet.get(k.group, k.handler, k.source, k.id)) as { handled_at: number; duration_ms: number | null } | undefined;
    return row && { handledAt: row.handled_at, durationMs: row.duration_ms ?? undefined };
  }

  async purgeInbox(before: number): Promise<number> {
    if (typeof before !== 'number' || !Number.isFinite(before)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `purgeInbox takes epoch ms (got ${String(before)})`);
    return this.withTransaction(() => this.database.statement('DELETE FROM herald_inbox WHERE handled_at < ?').run(before).changes);
  }

  #enqueue(fn: (tx: Transaction<Database.Database>) => unknown, inbox: InboxKey | undefined): Promise<unknown> {
    try {
      this.#open();
      if (typeof fn !== 'function') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'withTransaction takes a callback');
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      this.#queue.push({ fn, inbox, resolve, reject });
      this.#scheduleFlush();
    });
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || this.#flushing) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      void this.#flush();
    });
  }

  #flush(): Promise<void> {
    if (this.#flushing) return this.#flushing;
    const run = async (): Promise<void> => {
      while (this.#queue.length > 0) {
        await this.#runBatch(this.#queue.splice(0, this.#maxBatch));
        if (this.#queue.length > 0) await new Promise<void>((r) => setImmediate(r));
      }
    };
    this.#flushing = run().finally(() => {
      this.#flushing = undefined;
      if (this.#queue.length > 0) this.#scheduleFlush(); // enqueued after the loop's last look
    });
    return this.#flushing;
  }

  async #runBatch(batch: Call[]): Promise<void> {
    try {
      if (this.database.closed) throw new HeraldError('HERALD_ERR_CLOSED', 'SQLite unit of work is closed');
      await this.#begin();
    } catch (e) {
      for (const c of batch) c.reject(e);
      return;
    }
    const done: Array<{ call: Call; value: unknown; tx: SqliteTransaction }> = [];
    const failed: Array<{ call: Call; error: unknown }> = [];
    let i = 0;
    try {
      for (; i < batch.length; i++) {
        const call = batch[i]!;
        const tx = new SqliteTransaction(this.database, this.#writer, this.#clock, this.#direct);
        this.#s.savepoint.run();
        try {
          let value: unknown;
          const k = call.inbox;
          // The inbox record first (one statement: inserted, or already there); the handler's failure rolls it back with the savepoint.
          if (k && this.#s.inboxPut.run(k.group, k.handler, k.source, k.id, this.#clock.now()).changes === 0) value = { duplicate: true };
          else {
            let r = call.fn(tx);
            if (isThenable(r)) r = await r;
            // The attempt's duration, to the end of the callback (the commit follows it in this batch).
            if (k?.startedAt !== undefined) this.#s.inboxDuration.run(Math.max(0, Math.round(this.#clock.now() - k.startedAt)), k.group, k.handler, k.source, k.id);
            value = k ? { duplicate: false, value: r } : r;
          }
          tx.finish();
          this.#s.release.run();
          done.push({ call, value, tx });
        } catch (error) {
          tx.finish();
          if (!this.database.db.inTransaction) throw error; // SQLite rolled the whole transaction back (I/O, full…)
          this.#s.rollbackTo.run();
          this.#s.release.run();
          failed.push({ call, error }); // the callback's own error, unchanged
        }
      }
      this.#s.commit.run();
      this.#transactions++;
    } catch (e) {
      if (this.database.db.inTransaction) {
        try {
          this.#s.rollback.run();
        } catch {
          // the connection rolled back already
        }
      }
      const error = isHeraldError(e) ? e : storageError('SQLite unit of work transaction failed', e);
      // Callbacks not run yet go back to the front of the queue; the others were rolled back with the batch.
      this.#queue.unshift(...batch.slice(i + 1));
      for (const d of done) d.call.reject(error);
      for (const f of failed) f.call.reject(f.error);
      batch[i]?.reject(error);
      return;
    }
    for (const f of failed) f.call.reject(f.error);
    if (this.#direct) this.#wakeReaders(done);
    let outbox = false;
    let scheduled = false;
    for (const d of done) {
      outbox ||= d.tx.wroteOutbox;
      scheduled ||= d.tx.wroteScheduled;
      for (const fn of d.tx.afterCommitFns) {
        try {
          fn();
        } catch (e) {
          this.#onError(e);
        }
      }
      d.call.resolve(d.value);
    }
    if (outbox) notifyWrite(this.file, 'outbox', this.#onError);
    if (scheduled) notifyWrite(this.file, 'scheduled', this.#onError);
  }

  /** Direct mode, after the COMMIT: the transport's readers in this process fetch the committed appends now. */
  #wakeReaders(done: ReadonlyArray<{ tx: SqliteTransaction }>): void {
    let heads: Map<string, number[]> | undefined;
    for (const d of done) {
      const h = d.tx.logHeads;
      if (!h) continue;
      if (!heads) heads = new Map();
      for (const [topic, next] of h) {
        const all = heads.get(topic);
        if (!all) heads.set(topic, [...next]);
        else for (let p = 0; p < next.length; p++) all[p] = Math.max(all[p]!, next[p]!);
      }
    }
    if (heads) for (const [topic, next] of heads) this.#direct!.log.appended(topic, next);
  }

  /** BEGIN IMMEDIATE without blocking the event loop: while another connection holds the write lock, retry on a timer (1 → 8 ms) up to busyTimeoutMs. */
  async #begin(): Promise<void> {
    const deadline = performance.now() + this.database.busyTimeoutMs;
    for (let delay = 1; ; delay = Math.min(8, delay * 2)) {
      if (this.#tryBegin() !== BUSY) return;
      if (performance.now() >= deadline) {
        throw new HeraldError('HERALD_ERR_STORAGE', `SQLite write lock on "${this.database.path}" stayed busy for ${this.database.busyTimeoutMs} ms`, { details: { sqliteCode: 'SQLITE_BUSY' } });
      }
      await new Promise((r) => setTimeout(r, delay));
      if (this.database.closed) throw new HeraldError('HERALD_ERR_CLOSED', 'SQLite unit of work is closed');
    }
  }

  #tryBegin(): void | typeof BUSY {
    // PRAGMA busy_timeout acts when it is prepared, not when a prepared statement runs: set it
    // with db.pragma(). A connection of our own stays at 0 (the wait is ours, on timers).
    const db = this.database.db;
    if (!this.#owned) db.pragma('busy_timeout = 0');
    try {
      this.#s.begin.run();
    } catch (e) {
      if ((e as { code?: unknown })?.code === 'SQLITE_BUSY') return BUSY;
      throw storageError('SQLite BEGIN IMMEDIATE failed', e);
    } finally {
      if (!this.#owned) db.pragma(`busy_timeout = ${this.database.busyTimeoutMs}`);
    }
  }

  /** Runs the queued transactions, then closes the connection if this unit of work opened it. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      while (this.#queue.length > 0 || this.#flushing || this.#flushScheduled) {
        await (this.#flushing ?? this.#flush());
        await new Promise<void>((r) => setImmediate(r));
      }
      this.#closed = true;
      if (this.#owned) this.database.close();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #open(): void {
    if (this.#closed || this.#closing) throw new HeraldError('HERALD_ERR_CLOSED', 'SQLite unit of work is closed');
    this.database.assertOpen();
  }
}

/** One callback's view of the group transaction; unusable once the callback has settled. */
class SqliteTransaction implements Transaction<Database.Database> {
  readonly afterCommitFns: Array<() => void> = [];
  wroteOutbox = false;
  wroteScheduled = false;
  /** Direct mode: per topic, per partition the next offset after this callback's appends (-1 untouched). */
  logHeads: Map<string, number[]> | undefined;
  #finished = false;

  constructor(
    readonly database: SqliteDatabase,
    readonly writer: OutboxWriter,
    readonly clock: Clock,
    readonly direct: Direct | undefined,
  ) {}

  get native(): Database.Database {
    this.#check();
    return this.database.db;
  }

  publish(topic: string, messages: OutgoingMessage | readonly OutgoingMessage[]): void {
    this.#check();
    if (this.direct) {
      const list: readonly OutgoingMessage[] = Array.isArray(messages) ? messages : [messages as OutgoingMessage];
      const { next } = this.direct.log.append(this.direct.appender, topic, list, this.clock.now());
      if (next.length === 0) return;
      this.logHeads ??= new Map();
      const all = this.logHeads.get(topic);
      if (!all) this.logHeads.set(topic, [...next]);
      else for (let p = 0; p < next.length; p++) all[p] = Math.max(all[p]!, next[p]!);
      return;
    }
    if (this.writer.writeOutbox(this.database, topic, messages, this.clock.now()) > 0) this.wroteOutbox = true;
  }

  schedule(write: ScheduledWrite): string {
    this.#check();
    const id = this.writer.writeScheduled(this.database, write, this.clock.now());
    this.wroteScheduled = true;
    return id;
  }

  cancelScheduled(id: string): void {
    this.#check();
    if (typeof id !== 'string' || id === '') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `cancelScheduled takes a non-empty id (got ${String(id)})`);
    this.database.statement('DELETE FROM herald_scheduled WHERE id = ?').run(id);
  }

  afterCommit(fn: () => void): void {
    this.#check();
    if (typeof fn !== 'function') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'afterCommit takes a function');
    this.afterCommitFns.push(fn);
  }

  finish(): void {
    this.#finished = true;
  }

  #check(): void {
    if (this.#finished) throw new HeraldError('HERALD_ERR_CLOSED', 'this transaction has ended: use tx only inside its withTransaction callback');
  }
}

/** Direct mode on `transport`: refused unless its database is the unit of work's file. */
function directTo(transport: SqliteTransport, database: SqliteDatabase, file: string): Direct {
  if (!(transport instanceof SqliteTransport)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', '`transport` must be a SqliteTransport from createSqliteTransport()');
  const log = directLogOf(transport);
  if (log.database === database) {
    // The transport's own publishes would join this unit of work's open transactions.
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `direct mode needs the transport on its own connection to "${file}", not the unit of work's (open the unit of work with \`path\`)`);
  }
  const theirs = fileOf(log.database);
  if (canonical(theirs) !== canonical(file)) {
    throw new HeraldError(
      'HERALD_ERR_INVALID_ARGUMENT',
      `direct mode needs the transport on the unit of work's own file: the unit of work is on "${file}", the transport on "${theirs}" (transactions across files are not atomic; use the outbox and a relay)`,
      { details: { unitOfWork: file, transport: theirs } },
    );
  }
  return { log, appender: new LogAppender(database, log.maxRecordsPerPartition) };
}

function canonical(file: string): string {
  try {
    return realpathSync(file);
  } catch {
    return file; // an in-memory database's id: equal only to itself
  }
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}
