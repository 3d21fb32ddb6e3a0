/**
 * An in-memory unit of work: `UnitOfWork` + `OutboxStore` + `SchedulerStore` in one object,
 * for tests and for services that keep their state in memory. Nothing survives the process.
 *
 * "Own writes" go through `tx.native`, a small key/value staging API (`put`, `get`, `delete`
 * by table and key): they are staged, applied on commit together with the outbox rows,
 * scheduled messages and inbox record of the same transaction, and discarded on rollback.
 * `read(table, key)` reads committed data.
 *
 * Transactions are serialized (one runs at a time, in call order), as on SQLite. `markSent`
 * and `markFired` are fenced through the `LeaseStore` the unit of work was created with
 * (`leases`, default a fresh `MemoryLeaseStore`): relays and schedulers must use that store.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { type Clock, systemClock } from './clock.ts';
import { HeraldError } from './errors.ts';
import { type LeaseFence, type LeaseStore, MemoryLeaseStore } from './lease.ts';
import { partitionCount } from './options.ts';
import type { OutboxBacklog, OutboxRecord, OutboxStore, ScheduledRecord, SchedulerStore } from './outbox.ts';
import { partitionForKey, RoundRobin } from './partitioner.ts';
import { type OutgoingMessage, TOPIC_NAME_RE } from './transport.ts';
import { checkInboxKey } from './outbox-encoding.ts';
import type { InboxKey, InboxRecord, InboxResult, ScheduledWrite, Transaction, UnitOfWork } from './unit-of-work.ts';

/** The staging API a memory transaction's `native` offers. Reads see the transaction's own writes. */
export interface MemoryTx {
  put(table: string, key: string, value: unknown): void;
  get(table: string, key: string): unknown;
  delete(table: string, key: string): void;
}

export interface MemoryUnitOfWorkOptions {
  /** Outbox partition count (default 8). */
  readonly partitions?: number;
  readonly clock?: Clock;
  /** The lease store relays and schedulers lease through; `markSent`/`markFired` validate fences against it (default: a new MemoryLeaseStore on `clock`). */
  readonly leases?: LeaseStore;
  /** Errors thrown by `afterCommit` callbacks and `onWrite` listeners (default: ignored). */
  readonly onError?: (error: unknown) => void;
}

interface Row extends OutboxRecord {
  sentAt: number | undefined;
}

interface Scheduled extends ScheduledRecord {
  readonly seq: number;
  fired: boolean;
}

const DELETED = Symbol('deleted');

export class MemoryUnitOfWork implements UnitOfWork<MemoryTx>, OutboxStore, SchedulerStore {
  readonly name = 'memory';
  readonly partitions: number;
  readonly leases: LeaseStore;
  readonly #clock: Clock;
  readonly #onError: (error: unknown) => void;
  readonly #tables = new Map<string, Map<string, unknown>>();
  /** Per partition: rows in id order; the first `sent[p]` rows are sent. */
  readonly #rows: Row[][];
  readonly #sent: number[];
  readonly #scheduled = new Map<string, Scheduled>();
  readonly #inbox = new Map<string, InboxRecord>();
  /** Woken after a commit that wrote outbox rows or scheduled messages (one set: a spurious wake-up costs one read). */
  readonly #listeners = new Set<() => void>();
  readonly #roundRobin = new RoundRobin();
  #nextId = 1;
  #seq = 0;
  #queue: Promise<unknown> = Promise.resolve();
  /** Set while a serialized call of this unit of work runs (nested calls would deadlock). */
  readonly #inside = new AsyncLocalStorage<{ active: boolean }>();

  constructor(options: MemoryUnitOfWorkOptions = {}) {
    this.partitions = partitionCount(options.partitions ?? 8);
    this.#clock = options.clock ?? systemClock;
    this.leases = options.leases ?? new MemoryLeaseStore({ clock: this.#clock });
    this.#onError = options.onError ?? (() => {});
    this.#rows = Array.from({ length: this.partitions }, () => []);
    this.#sent = new Array<number>(this.partitions).fill(0);
  }

  /** This object as the relay's store (it is its own OutboxStore). */
  get outbox(): OutboxStore {
    return this;
  }

  /** This object as the scheduler's store (it is its own SchedulerStore). */
  get scheduler(): SchedulerStore {
    return this;
  }

  /** Committed value of `key` in `table` (undefined when absent). */
  read(table: string, key: string): unknown {
    return this.#tables.get(table)?.get(key);
  }

  // ── UnitOfWork ───────────────────────────────────────────────────────────

  withTransaction<R>(fn: (tx: Transaction<MemoryTx>) => Promise<R> | R): Promise<R> {
    return this.#serial(async () => {
      const { tx, commit } = this.#begin();
      const value = await fn(tx);
      commit(undefined);
      return value;
    });
  }

  withInbox<R>(key: InboxKey, fn: (tx: Transaction<MemoryTx>) => Promise<R> | R): Promise<InboxResult<R>> {
    try {
      checkInboxKey(key);
    } catch (e) {
      return Promise.reject(e);
    }
    const k = inboxKey(key);
    return this.#serial(async (): Promise<InboxResult<R>> => {
      if (this.#inbox.has(k)) return { duplicate: true };
      const { tx, commit } = this.#begin();
      const value = await fn(tx);
      commit({ key: k, durationMs: key.startedAt === undefined ? undefined : Math.max(0, Math.round(this.#clock.now() - key.startedAt)) });
      return { duplicate: false, value };
    });
  }

  async inboxHas(key: InboxKey): Promise<boolean> {
    return this.#inbox.has(inboxKey(key));
  }

  async inboxRecord(key: InboxKey): Promise<InboxRecord | undefined> {
    return this.#inbox.get(inboxKey(key));
  }

  purgeInbox(before: number): Promise<number> {
    return this.#serial(async () => {
      let n = 0;
      for (const [k, { handledAt }] of this.#inbox) {
        if (handledAt < before) {
          this.#inbox.delete(k);
          n++;
        }
      }
      return n;
    });
  }

  // ── OutboxStore ──────────────────────────────────────────────────────────

  async pending(partition: number, limit: number, after?: string): Promise<readonly OutboxRecord[]> {
    const rows = this.#partitionRows(partition);
    const afterN = after === undefined ? 0 : Number(after);
    const out: OutboxRecord[] = [];
    for (let i = this.#sent[partition]!; i < rows.length && out.length < limit; i++) {
      const r = rows[i]!;
      if (Number(r.id) > afterN) out.push(record(r));
    }
    return out;
  }

  markSent(partition: number, upTo: string, fence: LeaseFence): Promise<boolean> {
    const rows = this.#partitionRows(partition);
    return this.#serial(async () => {
      if (!(await this.leases.validate(fence))) return false;
      const now = this.#clock.now();
      const limit = Number(upTo);
      let i = this.#sent[partition]!;
      while (i < rows.length && Number(rows[i]!.id) <= limit) rows[i++]!.sentAt = now;
      this.#sent[partition] = i;
      return true;
    });
  }

  async backlog(): Promise<OutboxBacklog> {
    let count = 0;
    let oldest: number | undefined;
    for (let p = 0; p < this.partitions; p++) {
      const rows = this.#rows[p]!;
      const first = rows[this.#sent[p]!];
      count += rows.length - this.#sent[p]!;
      if (first && (oldest === undefined || first.createdAt < oldest)) oldest = first.createdAt;
    }
    return { count, oldestCreatedAt: oldest };
  }

  purgeSent(sentBefore: number, limit: number): Promise<number> {
    return this.#serial(async () => {
      let n = 0;
      for (let p = 0; p < this.partitions && n < limit; p++) {
        const rows = this.#rows[p]!;
        let k = 0;
        while (k < this.#sent[p]! && n < limit && rows[k]!.sentAt! < sentBefore) {
          k++;
          n++;
        }
        rows.splice(0, k);
        this.#sent[p]! -= k;
      }
      return n;
    });
  }

  /** Calls `listener` after each commit that wrote outbox rows or scheduled messages (both the relay's and the scheduler's wake-up). */
  onWrite(listener: () => void): () => void {
    return subscribe(this.#listeners, listener);
  }

  // ── SchedulerStore ───────────────────────────────────────────────────────

  schedule(writes: readonly ScheduledWrite[]): Promise<readonly string[]> {
    return this.#serial(async () => {
      const ids = writes.map((w) => this.#addScheduled(w));
      if (writes.length > 0) this.#inside.exit(() => this.#notify());
      return ids;
    });
  }

  cancel(id: string): Promise<boolean> {
    return this.#serial(async () => this.#cancelScheduled(id));
  }

  async due(now: number, limit: number): Promise<readonly ScheduledRecord[]> {
    return [...this.#scheduled.values()]
      .filter((s) => !s.fired && s.deliverAt <= now)
      .sort((a, b) => a.deliverAt - b.deliverAt || a.seq - b.seq)
      .slice(0, limit)
      .map(({ id, topic, message, deliverAt }) => ({ id, topic, message, deliverAt }));
  }

  markFired(ids: readonly string[], fence: LeaseFence): Promise<boolean> {
    return this.#serial(async () => {
      if (!(await this.leases.validate(fence))) return false;
      for (const id of ids) {
        const s = this.#scheduled.get(id);
        if (s) s.fired = true;
      }
      return true;
    });
  }

  async nextDue(): Promise<number | undefined> {
    let next: number | undefined;
    for (const s of this.#scheduled.values()) if (!s.fired && (next === undefined || s.deliverAt < next)) next = s.deliverAt;
    return next;
  }

  async pendingCount(): Promise<number> {
    let n = 0;
    for (const s of this.#scheduled.values()) if (!s.fired) n++;
    return n;
  }

  // ── internals ────────────────────────────────────────────────────────────

  /**
   * Runs `fn` after every earlier call. Called from inside a transaction callback it would wait
   * for that transaction, which waits for it: refused with a typed error instead of hanging.
   */
  #serial<R>(fn: () => Promise<R>): Promise<R> {
    if (this.#inside.getStore()?.active) {
      return Promise.reject(new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'memory unit of work: called from inside one of its own transactions (nested withTransaction / withInbox, or a store call in the callback); transactions are serialized, so it would wait for itself'));
    }
    const inside = (): Promise<R> => {
      const token = { active: true };
      return this.#inside.run(token, fn).finally(() => {
        token.active = false;
      });
    };
    const run = this.#queue.then(inside, inside);
    this.#queue = run.catch(() => {});
    return run;
  }

  #partitionRows(partition: number): Row[] {
    const rows = this.#rows[partition];
    if (!rows) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `outbox partition ${partition} is out of range 0..${this.partitions - 1}`);
    return rows;
  }

  /** A transaction's staging area; `commit` applies it (called inside the serialized section). */
  #begin(): { tx: Transaction<MemoryTx>; commit: (inbox: { key: string; durationMs: number | undefined } | undefined) => void } {
    const staged = new Map<string, Map<string, unknown>>();
    const outbox: Array<{ topic: string; message: OutgoingMessage }> = [];
    const scheduled: ScheduledWrite[] = [];
    const cancelled: string[] = [];
    const after: Array<() => void> = [];
    let open = true;
    const check = (): void => {
      if (!open) throw new HeraldError('HERALD_ERR_CLOSED', 'the transaction has already ended: use tx only inside its callback');
    };
    const native: MemoryTx = {
      put: (table, key, value) => {
        check();
        let t = staged.get(table);
        if (!t) staged.set(table, (t = new Map()));
        t.set(key, value);
      },
      get: (table, key) => {
        const t = staged.get(table);
        if (t?.has(key)) {
          const v = t.get(key);
          return v === DELETED ? undefined : v;
        }
        return this.read(table, key);
      },
      delete: (table, key) => native.put(table, key, DELETED),
    };
    const tx: Transaction<MemoryTx> = {
      native,
      publish: (topic, messages) => {
        check();
        checkTopic(topic);
        for (const message of Array.isArray(messages) ? (messages as readonly OutgoingMessage[]) : [messages as OutgoingMessage]) {
          if (!message?.envelope) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `tx.publish to "${topic}" needs messages of the form { envelope, key? }`);
          outbox.push({ topic, message });
        }
      },
      schedule: (write) => {
        check();
        checkScheduled(write);
        scheduled.push(write);
        return write.id ?? write.message.envelope.id;
      },
      cancelScheduled: (id) => {
        check();
        cancelled.push(id);
      },
      afterCommit: (fn) => {
        check();
        after.push(fn);
      },
    };
    const commit = (inbox: { key: string; durationMs: number | undefined } | undefined): void => {
      open = false;
      const now = this.#clock.now();
      for (const [table, writes] of staged) {
        let t = this.#tables.get(table);
        if (!t) this.#tables.set(table, (t = new Map()));
        for (const [k, v] of writes) {
          if (v === DELETED) t.delete(k);
          else t.set(k, v);
        }
      }
      for (const { topic, message } of outbox) {
        const key = message.key ?? message.envelope.partitionkey;
        const partition = key === undefined ? this.#roundRobin.next(this.partitions) : partitionForKey(key, this.partitions);
        this.#rows[partition]!.push({ id: String(this.#nextId++), partition, topic, message, createdAt: now, sentAt: undefined });
      }
      for (const w of scheduled) this.#addScheduled(w);
      for (const id of cancelled) this.#cancelScheduled(id);
      if (inbox !== undefined) this.#inbox.set(inbox.key, { handledAt: now, durationMs: inbox.durationMs });
      // Listeners and afterCommit callbacks start work of their own (a relay's drain): not "inside".
      this.#inside.exit(() => {
        if (outbox.length > 0 || scheduled.length > 0) this.#notify();
        for (const fn of after) {
          try {
            fn();
          } catch (e) {
            this.#onError(e);
          }
        }
      });
    };
    return { tx, commit };
  }

  #addScheduled(w: ScheduledWrite): string {
    checkScheduled(w);
    const id = w.id ?? w.message.envelope.id;
    if (!this.#scheduled.has(id)) this.#scheduled.set(id, { id, topic: w.topic, message: w.message, deliverAt: w.deliverAt, seq: this.#seq++, fired: false });
    return id;
  }

  #cancelScheduled(id: string): boolean {
    const s = this.#scheduled.get(id);
    if (!s || s.fired) return false;
    this.#scheduled.delete(id);
    return true;
  }

  #notify(): void {
    for (const l of this.#listeners) {
      try {
        l();
      } catch (e) {
        this.#onError(e);
      }
    }
  }
}

/** Checks a scheduled write's shape; shared by the backends. */
export function checkScheduled(w: ScheduledWrite): void {
  if (!w || typeof w.topic !== 'string' || !w.message?.envelope) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'a scheduled write needs { topic, message: { envelope }, deliverAt }');
  checkTopic(w.topic);
  if (!Number.isFinite(w.deliverAt)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `deliverAt of a message scheduled to "${w.topic}" must be finite epoch ms (got ${w.deliverAt})`);
  if (w.id !== undefined && (typeof w.id !== 'string' || w.id.length === 0)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `a scheduled message id must be a non-empty string (got ${String(w.id)})`);
}

function checkTopic(topic: string): void {
  if (typeof topic !== 'string' || !TOPIC_NAME_RE.test(topic)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `topic ${JSON.stringify(topic)} is not a valid topic name (1–200 of letters, digits, '.', '_', '-')`);
}

function inboxKey(k: InboxKey): string {
  return `${k.group}\u0000${k.handler}\u0000${k.source}\u0000${k.id}`;
}

function record(r: Row): OutboxRecord {
  return { id: r.id, partition: r.partition, topic: r.topic, message: r.message, createdAt: r.createdAt };
}

function subscribe(set: Set<() => void>, listener: () => void): () => void {
  set.add(listener);
  return () => set.delete(listener);
}
