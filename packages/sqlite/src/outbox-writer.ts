/**
 * Writing outbox and scheduled rows on the Herald SQLite file, from whichever connection holds
 * the write transaction: the unit of work's (`Transaction.publish` / `schedule`) or the event
 * store's (appends routed to the outbox, see `attachEventStoreOutbox`). Also the in-process
 * wake-up: writers call `notifyWrite(file, kind)` after their commit, and every outbox or
 * scheduler store of this process on the same file calls its `onWrite` listeners.
 *
 * Every message is checked before its row is written: the topic name (`TOPIC_NAME_RE`), the
 * envelope (`ensureEnvelope`: `HERALD_ERR_ENVELOPE_INVALID`), the key (a string), and its
 * encoded size (`maxPayloadBytes`, default 1 MiB like the transports: `HERALD_ERR_PAYLOAD_TOO_LARGE`),
 * so a relay never meets a row the transport would refuse for its size. A refused message
 * throws inside the caller's transaction, which then rolls back.
 */
import { HeraldError, isHeraldError, type LeaseFence, type OutgoingMessage, partitionForKey, type ScheduledWrite } from '@herald/core';
import { checkOutboxTopic, type EncodedOutgoing, encodeOutgoing, nonNegativeInt, partitionCount, RoundRobin, storedOutgoing } from '@herald/core/internal';
import { type DatabaseSource, resolveDatabase, type SqliteDatabase } from './database.ts';
import { assertFence } from './lease-store.ts';

/** Default outbox partition count (fixed in the file when the first store or unit of work opens it). */
export const DEFAULT_OUTBOX_PARTITIONS = 8;
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

/**
 * The outbox partition count stored in the file; the first caller fixes it (`requested`, or 8).
 * A different explicit count later is `HERALD_ERR_INVALID_ARGUMENT`: rows already written
 * carry partitions of the stored count.
 */
export function outboxPartitions(database: SqliteDatabase, requested?: number): number {
  if (requested !== undefined) partitionCount(requested);
  const read = (): number | undefined => database.statement('SELECT partitions FROM herald_outbox_settings WHERE id = 1').pluck().get() as number | undefined;
  let stored = database.read(read);
  if (stored === undefined) {
    stored = database.immediate(() => {
      const now = read();
      if (now !== undefined) return now;
      const p = requested ?? DEFAULT_OUTBOX_PARTITIONS;
      database.statement('INSERT INTO herald_outbox_settings (id, partitions) VALUES (1, ?)').run(p);
      return p;
    });
  }
  if (requested !== undefined && requested !== stored) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `outboxPartitions is ${requested} but "${database.path}" has an outbox of ${stored} partitions (fixed when it was created)`, {
      details: { path: database.path, requested, stored },
    });
  }
  return stored;
}

export type WriteKind = 'outbox' | 'scheduled';

const listeners = new Map<string, Set<() => void>>();
const memoryIds = new WeakMap<SqliteDatabase, string>();
let memorySeq = 0;

/** The file a connection writes to (absolute path), the key of the in-process wake-ups. */
export function fileOf(database: SqliteDatabase): string {
  const main = (database.db.pragma('database_list') as Array<{ name: string; file: string }>).find((d) => d.name === 'main');
  if (main && main.file !== '') return main.file;
  let id = memoryIds.get(database);
  if (id === undefined) memoryIds.set(database, (id = `:memory:${++memorySeq}`));
  return id;
}

/** Registers `listener` for writes of `kind` committed in this process on `file`. Returns the remover. */
export function onFileWrite(file: string, kind: WriteKind, listener: () => void): () => void {
  const k = `${kind}\u0000${file}`;
  let set = listeners.get(k);
  if (!set) listeners.set(k, (set = new Set()));
  set.add(listener);
  return () => {
    set.delete(listener);
    if (set.size === 0 && listeners.get(k) === set) listeners.delete(k);
  };
}

/** Calls the listeners of `kind` on `file`; a listener that throws does not stop the others. */
export function notifyWrite(file: string, kind: WriteKind, onError: (e: unknown) => void): void {
  const set = listeners.get(`${kind}\u0000${file}`);
  if (!set) return;
  for (const l of [...set]) {
    try {
      l();
    } catch (e) {
      onError(e);
    }
  }
}

/** Checks and encodes outgoing messages, and writes them as rows; one per connection that writes. */
export class OutboxWriter {
  readonly partitions: number;
  readonly #maxPayload: number;
  readonly #rr = new RoundRobin();

  constructor(partitions: number, maxPayloadBytes: number = DEFAULT_MAX_PAYLOAD) {
    this.partitions = partitions;
    this.#maxPayload = nonNegativeInt('maxPayloadBytes', maxPayloadBytes);
  }

  /** Inserts one outbox row per message, in order. Inside a write transaction of `database`. */
  writeOutbox(database: SqliteDatabase, topic: string, messages: OutgoingMessage | readonly OutgoingMessage[], now: number): number {
    checkOutboxTopic(topic);
    const list: readonly OutgoingMessage[] = Array.isArray(messages) ? messages : [messages as OutgoingMessage];
    const rows = list.map((m, i) => this.#encode(topic, m, i));
    const insert = database.statement('INSERT INTO herald_outbox (partition, topic, key, envelope, created_at) VALUES (?, ?, ?, ?, ?)');
    for (const r of rows) insert.run(r.key === null ? this.#rr.next(this.partitions) : partitionForKey(r.key, this.partitions), topic, r.key, r.body, now);
    return rows.length;
  }

  /** Inserts a scheduled row unless its id is already there (the first is kept); returns the id. */
  writeScheduled(database: SqliteDatabase, write: ScheduledWrite, now: number): string {
    if (typeof write !== 'object' || write === null) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'a scheduled write must be an object { topic, message, deliverAt }');
    checkOutboxTopic(write.topic);
    if (typeof write.deliverAt !== 'number' || !Number.isFinite(write.deliverAt)) {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `deliverAt must be a finite number of epoch ms (got ${String(write.deliverAt)})`);
    }
    const r = this.#encode(write.topic, write.message, 0);
    const id = write.id ?? r.envelope.id;
    if (typeof id !== 'string' || id === '') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `a scheduled message id must be a non-empty string (got ${String(id)})`);
    database
      .statement('INSERT INTO herald_scheduled (id, topic, key, envelope, deliver_at, created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING')
      .run(id, write.topic, r.key, r.body, Math.floor(write.deliverAt), now);
    return id;
  }

  #encode(topic: string, m: OutgoingMessage, i: number): EncodedOutgoing {
    return encodeOutgoing(topic, m, i, this.#maxPayload);
  }
}


/** Reads a stored outbox or scheduled row back as a message; an unreadable envelope is `HERALD_ERR_CORRUPT_RECORD` naming the row. */
export const storedMessage = storedOutgoing;

/** Inside a write transaction of `database`: whether `fence` is still the current lease (`assertFence`, as a boolean for the stores whose fenced writes answer false). */
export function fenceHolds(database: SqliteDatabase, fence: LeaseFence): boolean {
  try {
    assertFence(database, fence);
    return true;
  } catch (e) {
    if (isHeraldError(e, 'HERALD_ERR_LEASE_LOST')) return false;
    throw e;
  }
}

/**
 * What the outbox and scheduler stores share: the database (opened from a path, or shared and
 * then not closed), the file their in-process wake-ups are keyed by, `onWrite`, an idempotent
 * `close()`, and the closed check (`HERALD_ERR_CLOSED`).
 */
export abstract class FileStore {
  readonly database: SqliteDatabase;
  /** Absolute path of the file (the key of in-process wake-ups). */
  readonly file: string;
  readonly #owned: boolean;
  readonly #kind: WriteKind;
  readonly #label: string;
  #closed = false;

  protected constructor(source: DatabaseSource, kind: WriteKind, label: string, init: (database: SqliteDatabase) => void) {
    const { database, owned } = resolveDatabase(source);
    try {
      this.database = database;
      this.#owned = owned;
      this.#kind = kind;
      this.#label = label;
      this.file = fileOf(database);
      init(database);
    } catch (e) {
      if (owned) database.close();
      throw e;
    }
  }

  /** Calls `listener` after each commit in this process that wrote rows of this kind to the file. Returns the remover. */
  onWrite(listener: () => void): () => void {
    this.assertOpen();
    return onFileWrite(this.file, this.#kind, listener);
  }

  /** Idempotent. Closes the database only when this store opened it from a path. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#owned) this.database.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  protected assertOpen(): void {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', `${this.#label} is closed`);
    this.database.assertOpen();
  }
}
