/**
 * `UnitOfWork` on PostgreSQL: a service's own writes, its outbox rows, its scheduled messages
 * and its inbox record commit in ONE local transaction on one pooled connection.
 *
 * `withTransaction(fn)` checks a client out of the pool, `BEGIN`s, and runs `fn` with
 * `tx.native` = that `pg` client: the service's own SQL runs in the transaction. `tx.publish`,
 * `tx.schedule` and `tx.cancelScheduled` check their arguments at once (a refusal throws inside
 * the callback, which then rolls back) and are written, in call order, after the callback
 * resolved and before `COMMIT`: outbox rows in one statement that also sends ONE `NOTIFY` (at
 * most one per commit; other processes' relays wake on it). Then `COMMIT` (`ROLLBACK` when the
 * callback throws: its error is rethrown unchanged). A callback that swallowed an SQL error
 * leaves the transaction aborted: the COMMIT then rolls back, and the caller gets
 * `HERALD_ERR_STORAGE`. After the commit, `afterCommit` callbacks run (errors go to `onError`),
 * then this process's outbox and scheduler stores on the schema are woken (`onWrite`).
 *
 * Transactions run concurrently, one connection each (the pool bounds them: `max`); a callback
 * holds its connection — and the row locks its statements took — until it settles: keep awaits
 * inside short. Do not call `withTransaction` from inside a callback (it would wait for a
 * second connection, and a pool of one would deadlock).
 *
 * Outbox ids: `txid * 10^6 + n` (`txid` = `pg_current_xact_id()`, n = the row's number in its
 * transaction, at most 10^6 rows per transaction): see outbox-store.ts for why relays never
 * read past a transaction still in flight.
 *
 * Inbox: `withInbox(key, fn)` first inserts the key (`ON CONFLICT DO NOTHING`) and runs `fn`
 * only when the insert took. Two concurrent attempts of one key: the second insert waits on the
 * unique index until the first transaction ends; if it committed, the second sees the conflict
 * and returns `{ duplicate: true }` without running `fn`; if it rolled back, the second goes on.
 * One effect either way. Records carry `handled_at` (the clock's now) for `purgeInbox`.
 * A key with `startedAt` also gets `duration_ms` (the attempt's duration, one UPDATE after `fn`).
 *
 * Failures: server and network errors are `HERALD_ERR_STORAGE` (retryable when transient: a
 * restart, a serialization failure, a deadlock) with the `pg` error as cause; nothing of the
 * transaction is stored. After `close()` calls reject with `HERALD_ERR_CLOSED`.
 */
import { type Clock, HeraldError, type InboxKey, type InboxRecord, type InboxResult, isHeraldError, type OutgoingMessage, partitionForKey, type ScheduledWrite, systemClock, type Transaction, type UnitOfWork } from '@herald/core';
import { checkInboxKey, partitionCount, RoundRobin } from '@herald/core/internal';
import type pg from 'pg';
import { type PgDatabase, type PgDatabaseSource, resolveDatabase, storageError } from './database.ts';
import {
  checkMaxPayload,
  checkTopic,
  encodeMessage,
  encodeScheduled,
  INSERT_SCHEDULED_SQL,
  notifyLocalWrite,
  outboxPartitions,
  ROWS_PER_TX,
  type ScheduledRow,
  scheduledParams,
  writeChannel,
} from './outbox-store-shared.ts';

export type PostgresUnitOfWorkOptions = PgDatabaseSource & {
  /** Outbox partitions (`partitionForKey(key) mod P`); fixed in the schema by the first opener (default 8). */
  readonly outboxPartitions?: number;
  /** Timestamps (created_at, handled_at). Default the system clock. */
  readonly clock?: Clock;
  /** Largest encoded envelope an outbox or scheduled row accepts, bytes (default 1 MiB); 0 disables. */
  readonly maxPayloadBytes?: number;
  /** Errors thrown by `afterCommit` callbacks and `onWrite` listeners (default: a process warning). */
  readonly onError?: (error: unknown) => void;
};

type Op =
  | { readonly kind: 'outbox'; readonly topic: string; readonly partition: number; readonly key: string | null; readonly body: string }
  | { readonly kind: 'schedule'; readonly row: ScheduledRow }
  | { readonly kind: 'cancel'; readonly id: string };

/** Creates a unit of work on `database` (shared pool) or on its own pool (`connection`). */
export function createPostgresUnitOfWork(options: PostgresUnitOfWorkOptions): PostgresUnitOfWork {
  return new PostgresUnitOfWork(options);
}

export class PostgresUnitOfWork implements UnitOfWork<pg.PoolClient> {
  readonly name = 'postgres';
  readonly database: PgDatabase;
  readonly #owned: boolean;
  readonly #clock: Clock;
  readonly #maxPayload: number;
  readonly #onError: (e: unknown) => void;
  readonly #rr = new RoundRobin();
  readonly #requestedPartitions: number | undefined;
  #partitions: Promise<number> | undefined;
  #closing: Promise<void> | undefined;
  #inFlight = 0;
  #idle: (() => void) | undefined;
  #transactions = 0;

  constructor(options: PostgresUnitOfWorkOptions) {
    this.#maxPayload = checkMaxPayload(options.maxPayloadBytes);
    if (options.outboxPartitions !== undefined) partitionCount(options.outboxPartitions);
    const { database, owned } = resolveDatabase(options);
    this.database = database;
    this.#owned = owned;
    this.#requestedPartitions = options.outboxPartitions;
    this.#clock = options.clock ?? systemClock;
    this.#onError = options.onError ?? ((e) => process.emitWarning(`unit of work: ${e instanceof Error ? e.message : String(e)}`, 'HeraldWarning'));
  }

  /** Transactions committed so far. */
  get transactions(): number {
    return this.#transactions;
  }

  /** The outbox partition count of the schema (migrates the schema on first use). */
  partitions(): Promise<number> {
    if (!this.#partitions) {
      const p = outboxPartitions(this.database, this.#requestedPartitions);
      this.#partitions = p;
      p.catch(() => {
        if (this.#partitions === p) this.#partitions = undefined;
      });
    }
    return this.#partitions;
  }

  withTransaction<R>(fn: (tx: Transaction<pg.PoolClient>) => Promise<R> | R): Promise<R> {
    return this.#run(fn, undefined) as Promise<R>;
  }

  withInbox<R>(key: InboxKey, fn: (tx: Transaction<pg.PoolClient>) => Promise<R> | R): Promise<InboxResult<R>> {
    try {
      checkInboxKey(key);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#run(fn, key) as Promise<InboxResult<R>>;
  }

  async inboxHas(key: InboxKey): Promise<boolean> {
    return (await this.inboxRecord(key)) !== undefined;
  }

  async inboxRecord(key: InboxKey): Promise<InboxRecord | undefined> {
    const k = checkInboxKey(key);
    this.#open();
    await this.partitions();
    const r = await this.database.query<{ handled_at: string; duration_ms: string | null }>('SELECT handled_at, duration_ms FROM herald_inbox WHERE grp = $1 AND handler = $2 AND source = $3 AND id = $4', [
      k.group,
      k.handler,
      k.source,
      k.id,
    ]);
    const row = r.rows[0];
    return row && { handledAt: Number(row.handled_at), durationMs: row.duration_ms === null ? undefined : Number(row.duration_ms) };
  }

  async purgeInbox(before: number): Promise<number> {
    if (typeof before !== 'number' || !Number.isFinite(before)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `purgeInbox takes epoch ms (got ${String(before)})`);
    this.#open();
    await this.partitions();
    const r = await this.database.query('DELETE FROM herald_inbox WHERE handled_at < $1', [before]);
    return r.rowCount ?? 0;
  }

  async #run(fn: (tx: Transaction<pg.PoolClient>) => unknown, inbox: InboxKey | undefined): Promise<unknown> {
    this.#open();
    if (typeof fn !== 'function') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'withTransaction takes a callback');
    this.#inFlight++;
    try {
      const partitions = await this.partitions();
      return await this.#transaction(fn, inbox, partitions);
    } finally {
      if (--this.#inFlight === 0) this.#idle?.();
    }
  }

  async #transaction(fn: (tx: Transaction<pg.PoolClient>) => unknown, inbox: InboxKey | undefined, partitions: number): Promise<unknown> {
    const db = this.database;
    let client: pg.PoolClient;
    try {
      client = await db.pool.connect();
    } catch (e) {
      throw storageError('could not connect', e);
    }
    let broken: Error | undefined;
    // A connection lost between two statements (a server restart) is reported as an 'error'
    // event of the checked-out client: record it (the next statement fails) instead of crashing.
    const onClientError = (e: Error): void => {
      broken ??= e;
    };
    client.on('error', onClientError);
    const tx = new PgTransaction(client, this, partitions);
    try {
      try {
        await client.query('BEGIN');
      } catch (e) {
        broken = e as Error;
        throw storageError('BEGIN failed', e);
      }
      let value: unknown;
      let duplicate = false;
      if (inbox) {
        let r: pg.QueryResult;
        try {
          r = await client.query('INSERT INTO herald_inbox (grp, handler, source, id, handled_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING', [
            inbox.group,
            inbox.handler,
            inbox.source,
            inbox.id,
            this.#clock.now(),
          ]);
        } catch (e) {
          throw storageError('inbox insert failed', e);
        }
        duplicate = r.rowCount === 0;
      }
      if (duplicate) {
        tx.finish();
        await client.query('ROLLBACK').catch((e: Error) => {
          broken = e;
        });
        return { duplicate: true };
      }
      try {
        value = await fn(tx);
      } finally {
        tx.finish();
      }
      try {
        // The attempt's duration, to the end of the callback: one more statement, only for a key with a start.
        if (inbox?.startedAt !== undefined) {
          await client.query('UPDATE herald_inbox SET duration_ms = $5 WHERE grp = $1 AND handler = $2 AND source = $3 AND id = $4', [
            inbox.group,
            inbox.handler,
            inbox.source,
            inbox.id,
            Math.max(0, Math.round(this.#clock.now() - inbox.startedAt)),
          ]);
        }
        await this.#flush(client, tx);
        const c = await client.query('COMMIT');
        // COMMIT of a transaction an earlier (swallowed) error aborted answers ROLLBACK.
        if (c.command === 'ROLLBACK') throw new HeraldError('HERALD_ERR_STORAGE', 'PostgreSQL: the transaction was aborted by an earlier failed statement (caught inside the callback?) and rolled back', { retryable: false });
      } catch (e) {
        throw isHeraldError(e) ? e : storageError('commit failed', e);
      }
      this.#transactions++;
      this.#afterCommit(tx);
      return inbox ? { duplicate: false, value } : value;
    } catch (e) {
      if (!broken) {
        try {
          await client.query('ROLLBACK');
        } catch (rollbackFailed) {
          broken = rollbackFailed as Error;
        }
      }
      throw e;
    } finally {
      client.off('error', onClientError);
      client.release(broken);
    }
  }

  /** Writes the transaction's buffered outbox, scheduled and cancel operations, in call order. */
  async #flush(client: pg.PoolClient, tx: PgTransaction): Promise<void> {
    const ops = tx.ops;
    const now = this.#clock.now();
    let notifiedOutbox = false;
    for (let i = 0; i < ops.length; ) {
      const kind = ops[i]!.kind;
      let j = i;
      while (j < ops.length && ops[j]!.kind === kind) j++;
      const run = ops.slice(i, j);
      i = j;
      if (kind === 'outbox') {
        const rows = run as Array<Extract<Op, { kind: 'outbox' }>>;
        // Row numbers continue after any row this transaction wrote before (ids txid*10^6 + n);
        // the NOTIFY rides on the first insert of the commit (one round trip, one NOTIFY).
        const r = await client.query<{ n: string }>(
          `WITH base AS (SELECT pg_current_xact_id()::text::numeric * ${ROWS_PER_TX} AS b),
                next AS (SELECT coalesce(max(o.id) - base.b + 1, 0) AS n FROM base LEFT JOIN herald_outbox o ON o.id >= base.b AND o.id < base.b + ${ROWS_PER_TX} GROUP BY base.b),
                ins AS (
                  INSERT INTO herald_outbox (id, partition, topic, key, envelope, created_at)
                  SELECT base.b + next.n + r.ord - 1, r.partition, r.topic, r.key, r.envelope, $6
                    FROM base, next, unnest($1::int[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS r(partition, topic, key, envelope, ord)
                   WHERE next.n + $5 <= ${ROWS_PER_TX}
                  RETURNING 1)
           SELECT (SELECT count(*) FROM ins)::text AS n${notifiedOutbox ? '' : ', pg_notify($7, $8)'}`,
          [rows.map((x) => x.partition), rows.map((x) => x.topic), rows.map((x) => x.key), rows.map((x) => x.body), rows.length, now, ...(notifiedOutbox ? [] : [writeChannel('outbox', this.database.schema), ''])],
        );
        if (Number(r.rows[0]!.n) !== rows.length) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `a transaction may write at most ${ROWS_PER_TX} outbox rows`);
        notifiedOutbox = true;
      } else if (kind === 'schedule') {
        const rows = (run as Array<Extract<Op, { kind: 'schedule' }>>).map((o) => o.row);
        await client.query(INSERT_SCHEDULED_SQL, scheduledParams(rows, now));
      } else {
        await client.query('DELETE FROM herald_scheduled WHERE id = ANY($1::text[])', [(run as Array<Extract<Op, { kind: 'cancel' }>>).map((o) => o.id)]);
      }
    }
    if (tx.wroteScheduled) await client.query('SELECT pg_notify($1, $2)', [writeChannel('scheduled', this.database.schema), '']);
  }

  #afterCommit(tx: PgTransaction): void {
    for (const fn of tx.afterCommitFns) {
      try {
        fn();
      } catch (e) {
        this.#onError(e);
      }
    }
    if (tx.wroteOutbox) notifyLocalWrite(this.database, 'outbox', this.#onError);
    if (tx.wroteScheduled) notifyLocalWrite(this.database, 'scheduled', this.#onError);
  }

  /** @internal the partition of an outbox row. */
  partitionOf(key: string | null, partitions: number): number {
    return key === null ? this.#rr.next(partitions) : partitionForKey(key, partitions);
  }

  /** @internal */
  get maxPayload(): number {
    return this.#maxPayload;
  }

  /** Waits for the transactions in flight, then closes the pool if this unit of work opened it. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#inFlight > 0) await new Promise<void>((r) => (this.#idle = r));
      if (this.#owned) await this.database.close();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #open(): void {
    if (this.#closing) throw new HeraldError('HERALD_ERR_CLOSED', 'PostgreSQL unit of work is closed');
    this.database.assertOpen();
  }
}

/** One callback's transaction; unusable once the callback has settled. */
class PgTransaction implements Transaction<pg.PoolClient> {
  readonly afterCommitFns: Array<() => void> = [];
  readonly ops: Op[] = [];
  wroteOutbox = false;
  wroteScheduled = false;
  #finished = false;

  constructor(
    readonly client: pg.PoolClient,
    readonly uow: PostgresUnitOfWork,
    readonly partitions: number,
  ) {}

  get native(): pg.PoolClient {
    this.#check();
    return this.client;
  }

  publish(topic: string, messages: OutgoingMessage | readonly OutgoingMessage[]): void {
    this.#check();
    checkTopic(topic);
    const list: readonly OutgoingMessage[] = Array.isArray(messages) ? messages : [messages as OutgoingMessage];
    const encoded = list.map((m, i) => encodeMessage(topic, m, i, this.uow.maxPayload));
    for (const r of encoded) this.ops.push({ kind: 'outbox', topic, partition: this.uow.partitionOf(r.key, this.partitions), key: r.key, body: r.body });
    if (encoded.length > 0) this.wroteOutbox = true;
  }

  schedule(write: ScheduledWrite): string {
    this.#check();
    const row = encodeScheduled(write, this.uow.maxPayload);
    this.ops.push({ kind: 'schedule', row });
    this.wroteScheduled = true;
    return row.id;
  }

  cancelScheduled(id: string): void {
    this.#check();
    if (typeof id !== 'string' || id === '') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `cancelScheduled takes a non-empty id (got ${String(id)})`);
    this.ops.push({ kind: 'cancel', id });
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
