/**
 * `DeadLetterStore` on the Herald SQLite file, with the semantics of core's
 * `MemoryDeadLetterStore`: statuses dead / parked / redrive; a parked-keys table with a
 * draining flag; redriving any entry of a parked key marks all of that key's entries, which
 * drain in insertion order; `completeRedrive` deletes the entry and, when it was its key's
 * last, unparks the key in the same transaction; `failRedrive` stops the key draining;
 * `discard` unparks keys left empty. Lists are oldest first, paginated by id cursor.
 *
 * Fencing: a write given `fence` checks the lease row (same file, `herald_leases`) inside its
 * own `BEGIN IMMEDIATE` transaction and throws `HERALD_ERR_LEASE_LOST` unless that owner and
 * epoch are still current, so a stale owner can never write after losing its partition. (With
 * the `fenceCheck` option the check is delegated instead, and is then not atomic with the write.)
 *
 * Both the raw bytes and the envelope JSON are stored. A row whose envelope column no longer
 * parses as an envelope does not break reads: `get`, `list` and `pendingRedrives` return it
 * with `envelope: null`, its `raw` intact, and `corruption` set to a
 * `HERALD_ERR_CORRUPT_RECORD` error naming the row; `corruptRowsSeen` counts such reads.
 *
 * Every method is safe to call concurrently from many processes. After `close()` every method
 * rejects with `HERALD_ERR_CLOSED`.
 */
import {
  type CloudEvent,
  type DeadLetterEntry,
  type DeadLetterError,
  type DeadLetterFilter,
  type DeadLetterPage,
  type DeadLetterSelector,
  type DeadLetterStatus,
  type DeadLetterStore,
  decodeEnvelope,
  type FenceCheck,
  HeraldError,
  type LeaseFence,
  type NewDeadLetter,
  type WriteOptions,
} from '@herald/core';
import { pageLimit } from '@herald/core/internal';
import { type DatabaseSource, resolveDatabase, type SqliteDatabase } from './database.ts';
import { assertFence, leaseLost } from './lease-store.ts';

export type SqliteDeadLetterStoreOptions = DatabaseSource & {
  /**
   * Delegates fence checks (e.g. to a LeaseStore kept elsewhere). Default: the lease row in
   * this file, checked atomically inside the write transaction.
   */
  readonly fenceCheck?: FenceCheck;
};

/** A dead letter as read back; `corruption` is set when the stored envelope could not be read. */
export interface SqliteDeadLetterEntry extends DeadLetterEntry {
  readonly corruption?: HeraldError;
}

interface Row {
  id: number;
  grp: string;
  topic: string;
  partition: number;
  key: string | null;
  handler: string;
  event_id: string | null;
  type: string | null;
  status: DeadLetterStatus;
  parked_behind: string | null;
  envelope: string | null;
  raw: string | Buffer;
  position: string;
  error_code: string | null;
  error_message: string;
  error_stack: string | null;
  attempts: number;
  first_failed_at: number;
  last_failed_at: number;
}

const COLUMNS = `id, grp, topic, partition, key, handler, event_id, type, status, parked_behind, envelope, raw, position, error_code, error_message, error_stack, attempts, first_failed_at, last_failed_at`;
const ID_WIDTH = 12;

export class SqliteDeadLetterStore implements DeadLetterStore {
  readonly database: SqliteDatabase;
  readonly #owned: boolean;
  readonly #fenceCheck: FenceCheck | undefined;
  #closed = false;
  #corruptRowsSeen = 0;

  constructor(options: SqliteDeadLetterStoreOptions) {
    const { database, owned } = resolveDatabase(options);
    this.database = database;
    this.#owned = owned;
    this.#fenceCheck = options.fenceCheck;
  }

  /** Rows read so far whose stored envelope could not be decoded (returned with `corruption`). */
  get corruptRowsSeen(): number {
    return this.#corruptRowsSeen;
  }

  async add(entry: NewDeadLetter, options: WriteOptions & { park?: boolean } = {}): Promise<DeadLetterEntry> {
    await this.#preFence(options.fence);
    return this.database.immediateAsync(() => {
      this.#fence(options.fence);
      const stored = this.#insert(entry, 'dead', null);
      if (options.park && entry.key !== null) {
        this.database
          .statement(
            `INSERT INTO herald_parked_keys (grp, topic, key, partition, draining, parked_by) VALUES (?, ?, ?, ?, 0, ?)
             ON CONFLICT (grp, topic, key) DO UPDATE SET partition = excluded.partition, draining = 0, parked_by = excluded.parked_by`,
          )
          .run(entry.group, entry.topic, entry.key, entry.partition, Number(stored.id));
      }
      return stored;
    });
  }

  async parkMessage(entry: NewDeadLetter, options: WriteOptions = {}): Promise<DeadLetterEntry> {
    await this.#preFence(options.fence);
    return this.database.immediateAsync(() => {
      this.#fence(options.fence);
      if (entry.key === null) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'only a message with a key can be parked');
      const park = this.#parkRow(entry.group, entry.topic, entry.key);
      if (!park) throw new HeraldError('HERALD_ERR_NOT_FOUND', `key "${entry.key}" is not parked in group "${entry.group}" on topic "${entry.topic}"`);
      // Parked behind the dead letter that parked the key (not an older dead letter of the same key).
      return this.#insert(entry, park.draining ? 'redrive' : 'parked', park.parked_by === null ? null : formatId(park.parked_by));
    });
  }

  async parkedKeys(group: string, topic: string, partition?: number): Promise<readonly string[]> {
    this.#open();
    return this.database.read(() => {
      const rows =
        partition === undefined
          ? this.database.statement(`SELECT key FROM herald_parked_keys WHERE grp = ? AND topic = ? ORDER BY seq`).all(group, topic)
          : this.database.statement(`SELECT key FROM herald_parked_keys WHERE grp = ? AND topic = ? AND partition = ? ORDER BY seq`).all(group, topic, partition);
      return (rows as { key: string }[]).map((r) => r.key);
    });
  }

  async get(id: string): Promise<DeadLetterEntry | undefined> {
    this.#open();
    const n = parseId(id);
    if (n === undefined) return undefined;
    const row = this.database.read(() => this.database.statement(`SELECT ${COLUMNS} FROM herald_dead_letters WHERE id = ?`).get(n) as Row | undefined);
    return row ? this.#entry(row) : undefined;
  }

  async list(filter: DeadLetterFilter = {}, page: { cursor?: string; limit?: number } = {}): Promise<DeadLetterPage> {
    this.#open();
    const limit = pageLimit(page.limit);
    const after = page.cursor === undefined ? -1 : Number(page.cursor);
    if (!Number.isInteger(after)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `bad dead-letter cursor "${page.cursor}"`);
    const params: unknown[] = [after];
    const where = ['id > ?', ...filterClauses(filter, params)];
    params.push(limit + 1);
    const rows = this.database.read(
      () => this.database.statement(`SELECT ${COLUMNS} FROM herald_dead_letters WHERE ${where.join(' AND ')} ORDER BY id LIMIT ?`).all(...params) as Row[],
    );
    const more = rows.length > limit;
    const entries = (more ? rows.slice(0, limit) : rows).map((r) => this.#entry(r));
    return more ? { entries, nextCursor: entries[entries.length - 1]!.id } : { entries };
  }

  async count(filter: DeadLetterFilter = {}): Promise<number> {
    this.#open();
    const params: unknown[] = [];
    const where = filterClauses(filter, params);
    const sql = `SELECT count(*) AS n FROM herald_dead_letters${where.length ? ` WHERE ${where.join(' AND ')}` : ''}`;
    return this.database.read(() => (this.database.statement(sql).get(...params) as { n: number }).n);
  }

  async redrive(selector: DeadLetterSelector): Promise<number> {
    this.#open();
    const params: unknown[] = [];
    const sel = selectorClause(selector, params);
    return this.database.immediateAsync(() => {
      // Keys of the chosen entries that are parked: all their entries drain, in order.
      const keys = this.database
        .statement(
          `SELECT DISTINCT d.grp AS grp, d.topic AS topic, d.key AS key FROM herald_dead_letters d
           JOIN herald_parked_keys p ON p.grp = d.grp AND p.topic = d.topic AND p.key = d.key
           WHERE ${sel.replaceAll('$.', 'd.')}`,
        )
        .all(...params) as { grp: string; topic: string; key: string }[];
      let n = Number(
        this.database
          .statement(
            `UPDATE herald_dead_letters SET status = 'redrive'
             WHERE ${sel.replaceAll('$.', 'herald_dead_letters.')} AND status <> 'redrive'
               AND NOT EXISTS (SELECT 1 FROM herald_parked_keys p
                               WHERE p.grp = herald_dead_letters.grp AND p.topic = herald_dead_letters.topic AND p.key = herald_dead_letters.key)`,
          )
          .run(...params).changes,
      );
      for (const k of keys) {
        this.database.statement(`UPDATE herald_parked_keys SET draining = 1 WHERE grp = ? AND topic = ? AND key = ?`).run(k.grp, k.topic, k.key);
        n += Number(
          this.database
            .statement(`UPDATE herald_dead_letters SET status = 'redrive' WHERE grp = ? AND topic = ? AND key = ? AND status <> 'redrive'`)
            .run(k.grp, k.topic, k.key).changes,
        );
      }
      return n;
    });
  }

  async pendingRedrives(group: string, topic: string, partitions: readonly number[], limit: number): Promise<readonly DeadLetterEntry[]> {
    this.#open();
    if (partitions.length === 0 || !(limit > 0)) return [];
    const rows = this.database.read(
      () =>
        this.database
          .statement(
            `SELECT ${COLUMNS} FROM herald_dead_letters
             WHERE status = 'redrive' AND grp = ? AND topic = ? AND partition IN (SELECT value FROM json_each(?))
             ORDER BY id LIMIT ?`,
          )
          .all(group, topic, JSON.stringify(partitions), Math.floor(limit)) as Row[],
    );
    return rows.map((r) => this.#entry(r));
  }

  async completeRedrive(id: string, options: WriteOptions = {}): Promise<{ unparked: boolean }> {
    await this.#preFence(options.fence);
    return this.database.immediateAsync(() => {
      this.#fence(options.fence);
      const n = parseId(id);
      const row =
        n === undefined ? undefined : (this.database.statement(`SELECT grp, topic, key FROM herald_dead_letters WHERE id = ?`).get(n) as KeyRow | undefined);
      if (!row) return { unparked: false };
      this.database.statement(`DELETE FROM herald_dead_letters WHERE id = ?`).run(n);
      return { unparked: this.#unparkIfEmpty(row) };
    });
  }

  async failRedrive(id: string, error: DeadLetterError, attempts: number, at: number, options: WriteOptions = {}): Promise<void> {
    await this.#preFence(options.fence);
    await this.database.immediateAsync(() => {
      this.#fence(options.fence);
      const n = parseId(id);
      const row =
        n === undefined ? undefined : (this.database.statement(`SELECT grp, topic, key FROM herald_dead_letters WHERE id = ?`).get(n) as KeyRow | undefined);
      if (!row) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no dead letter with id "${id}"`);
      this.database
        .statement(
          `UPDATE herald_dead_letters SET status = 'dead', error_code = ?, error_message = ?, error_stack = ?, attempts = ?, last_failed_at = ? WHERE id = ?`,
        )
        .run(error.code ?? null, error.message, error.stack ?? null, attempts, at, n);
      if (row.key === null || !this.#parkRow(row.grp, row.topic, row.key)) return;
      this.database.statement(`UPDATE herald_parked_keys SET draining = 0 WHERE grp = ? AND topic = ? AND key = ?`).run(row.grp, row.topic, row.key);
      this.database
        .statement(`UPDATE herald_dead_letters SET status = 'parked' WHERE grp = ? AND topic = ? AND key = ? AND status = 'redrive' AND id <> ?`)
        .run(row.grp, row.topic, row.key, n);
    });
  }

  async discard(selector: DeadLetterSelector): Promise<number> {
    this.#open();
    const params: unknown[] = [];
    const sel = selectorClause(selector, params).replaceAll('$.', '');
    return this.database.immediateAsync(() => {
      const chosen = this.database.statement(`SELECT DISTINCT grp, topic, key FROM herald_dead_letters WHERE ${sel}`).all(...params) as KeyRow[];
      const n = Number(this.database.statement(`DELETE FROM herald_dead_letters WHERE ${sel}`).run(...params).changes);
      for (const k of chosen) this.#unparkIfEmpty(k);
      return n;
    });
  }

  /** Idempotent. Closes the database only when this store opened it from a path. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#owned) this.database.close();
  }

  #insert(entry: NewDeadLetter, status: DeadLetterStatus, parkedBehind: string | null): DeadLetterEntry {
    const eventId = entry.envelope?.id ?? null;
    const type = entry.envelope?.type ?? null;
    const r = this.database
      .statement(
        `INSERT INTO herald_dead_letters (grp, topic, partition, key, handler, event_id, type, status, parked_behind, envelope, raw, position,
           error_code, error_message, error_stack, attempts, first_failed_at, last_failed_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        entry.group,
        entry.topic,
        entry.partition,
        entry.key,
        entry.handler,
        eventId,
        type,
        status,
        parkedBehind,
        entry.envelope === null ? null : JSON.stringify(entry.envelope),
        entry.raw,
        entry.position,
        entry.error.code ?? null,
        entry.error.message,
        entry.error.stack ?? null,
        entry.attempts,
        entry.firstFailedAt,
        entry.lastFailedAt,
      );
    return Object.freeze({ ...entry, id: formatId(Number(r.lastInsertRowid)), eventId, type, status, parkedBehind });
  }

  #entry(r: Row): SqliteDeadLetterEntry {
    const id = formatId(r.id);
    const raw = typeof r.raw === 'string' ? r.raw : Buffer.isBuffer(r.raw) ? r.raw.toString('utf8') : String(r.raw ?? '');
    let envelope: CloudEvent | null = null;
    let corruption: HeraldError | undefined;
    if (r.envelope !== null) {
      try {
        envelope = decodeEnvelope(typeof r.envelope === 'string' ? r.envelope : String(r.envelope));
      } catch (cause) {
        this.#corruptRowsSeen++;
        corruption = new HeraldError('HERALD_ERR_CORRUPT_RECORD', `dead letter ${id} has an unreadable stored envelope: ${(cause as Error).message}`, {
          cause,
          details: { id, group: r.grp, topic: r.topic },
        });
      }
    }
    const error: { code?: string; message: string; stack?: string } = { message: r.error_message };
    if (r.error_code !== null) error.code = r.error_code;
    if (r.error_stack !== null) error.stack = r.error_stack;
    return Object.freeze({
      group: r.grp,
      topic: r.topic,
      partition: r.partition,
      key: r.key,
      handler: r.handler,
      envelope,
      raw,
      position: r.position,
      error,
      attempts: r.attempts,
      firstFailedAt: r.first_failed_at,
      lastFailedAt: r.last_failed_at,
      id,
      eventId: r.event_id,
      type: r.type,
      status: r.status,
      parkedBehind: r.parked_behind,
      ...(corruption ? { corruption } : {}),
    });
  }

  #parkRow(group: string, topic: string, key: string): { draining: number; parked_by: number | null } | undefined {
    return this.database.statement(`SELECT draining, parked_by FROM herald_parked_keys WHERE grp = ? AND topic = ? AND key = ?`).get(group, topic, key) as
      | { draining: number; parked_by: number | null }
      | undefined;
  }

  #unparkIfEmpty(k: KeyRow): boolean {
    if (k.key === null) return false;
    const left = this.database.statement(`SELECT 1 FROM herald_dead_letters WHERE grp = ? AND topic = ? AND key = ? LIMIT 1`).get(k.grp, k.topic, k.key);
    if (left) return false;
    return this.database.statement(`DELETE FROM herald_parked_keys WHERE grp = ? AND topic = ? AND key = ?`).run(k.grp, k.topic, k.key).changes > 0;
  }

  /** Delegated (non-atomic) fence check, before the transaction. */
  async #preFence(fence: LeaseFence | undefined): Promise<void> {
    this.#open();
    if (fence && this.#fenceCheck && !(await this.#fenceCheck(fence))) throw leaseLost(fence, undefined);
  }

  /** Same-file fence check, inside the write transaction. */
  #fence(fence: LeaseFence | undefined): void {
    if (fence && !this.#fenceCheck) assertFence(this.database, fence);
  }

  #open(): void {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'dead-letter store is closed');
    this.database.assertOpen();
  }
}

interface KeyRow {
  grp: string;
  topic: string;
  key: string | null;
}

function formatId(n: number): string {
  return String(n).padStart(ID_WIDTH, '0');
}

function parseId(id: string): number | undefined {
  const n = Number(id);
  return typeof id === 'string' && id.length > 0 && Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/** SQL conditions for `f` (columns unqualified), pushing their parameters. */
function filterClauses(f: DeadLetterFilter, params: unknown[], prefix = ''): string[] {
  const out: string[] = [];
  const add = (sql: string, v: unknown): void => {
    out.push(sql);
    params.push(v);
  };
  if (f.group !== undefined) add(`${prefix}grp = ?`, f.group);
  if (f.topic !== undefined) add(`${prefix}topic = ?`, f.topic);
  if (f.type !== undefined) add(`${prefix}type = ?`, f.type);
  if (f.key !== undefined) add(`${prefix}key = ?`, f.key);
  if (f.status !== undefined) add(`${prefix}status = ?`, f.status);
  if (f.errorContains !== undefined) add(`herald_icontains(${prefix}error_message, ?) = 1`, f.errorContains);
  if (f.since !== undefined) add(`${prefix}last_failed_at >= ?`, f.since);
  if (f.until !== undefined) add(`${prefix}last_failed_at < ?`, f.until);
  return out;
}

/** The selector as one SQL condition whose columns are written `$.name` (the caller picks the qualifier). */
function selectorClause(selector: DeadLetterSelector, params: unknown[]): string {
  if ('ids' in selector) {
    const ids = selector.ids.map(parseId).filter((n): n is number => n !== undefined);
    params.push(JSON.stringify(ids));
    return `$.id IN (SELECT value FROM json_each(?))`;
  }
  const clauses = filterClauses(selector.filter, params, '$.');
  return clauses.length ? `(${clauses.join(' AND ')})` : '1';
}
