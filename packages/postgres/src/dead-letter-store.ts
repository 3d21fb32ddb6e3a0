/**
 * `DeadLetterStore` on PostgreSQL, with the semantics of core's `MemoryDeadLetterStore` (and
 * of the SQLite store): statuses dead / parked / redrive; a parked-keys table with a draining
 * flag; redriving any entry of a parked key marks all of that key's entries, which drain in
 * insertion order; `completeRedrive` deletes the entry and, when it was its key's last, unparks
 * the key in the same transaction; `failRedrive` stops the key draining; `discard` unparks keys
 * left empty. Lists are oldest first, paginated by id cursor.
 *
 * Fencing: a write given `fence` checks the lease row (`herald_leases`, same schema) inside its
 * own transaction, `FOR SHARE`, and throws `HERALD_ERR_LEASE_LOST` unless that owner and epoch
 * are still current — a stale owner can never write after losing its partition. (With the
 * `fenceCheck` option the check is delegated instead, and is then not atomic with the write.)
 * A parked key's writes lock its `herald_parked_keys` row, so concurrent park/redrive/complete
 * calls of one key are serialized.
 *
 * A row whose envelope no longer parses is returned with `envelope: null`, its `raw` intact,
 * and `corruption` set (`HERALD_ERR_CORRUPT_RECORD`). Every method is safe to call
 * concurrently from many processes. After `close()` every method rejects with `HERALD_ERR_CLOSED`.
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
import type pg from 'pg';
import { type PgDatabase, type PgDatabaseSource, resolveDatabase } from './database.ts';
import { assertFence, leaseLost } from './lease-store.ts';
import { ensureMigrated } from './migrations.ts';
import { LOG_COMPONENT } from './schema.ts';

export type PostgresDeadLetterStoreOptions = PgDatabaseSource & {
  /** Delegates fence checks (e.g. to a LeaseStore kept elsewhere). Default: the lease row in this schema, checked inside the write transaction. */
  readonly fenceCheck?: FenceCheck;
};

export interface PostgresDeadLetterEntry extends DeadLetterEntry {
  readonly corruption?: HeraldError;
}

interface Row {
  id: string;
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
  raw: string;
  position: string;
  error_code: string | null;
  error_message: string;
  error_stack: string | null;
  attempts: number;
  first_failed_at: string;
  last_failed_at: string;
}

interface KeyRow {
  grp: string;
  topic: string;
  key: string | null;
}

const COLUMNS = `id, grp, topic, partition, key, handler, event_id, type, status, parked_behind, envelope, raw, position, error_code, error_message, error_stack, attempts, first_failed_at, last_failed_at`;
const ID_WIDTH = 12;

export class PostgresDeadLetterStore implements DeadLetterStore {
  readonly database: PgDatabase;
  readonly #owned: boolean;
  readonly #fenceCheck: FenceCheck | undefined;
  readonly #ready: Promise<void>;
  #closed = false;
  #corruptRowsSeen = 0;

  constructor(options: PostgresDeadLetterStoreOptions) {
    const { database, owned } = resolveDatabase(options);
    this.database = database;
    this.#owned = owned;
    this.#fenceCheck = options.fenceCheck;
    this.#ready = ensureMigrated(database, [LOG_COMPONENT]);
    this.#ready.catch(() => {});
  }

  get corruptRowsSeen(): number {
    return this.#corruptRowsSeen;
  }

  async add(entry: NewDeadLetter, options: WriteOptions & { park?: boolean } = {}): Promise<DeadLetterEntry> {
    await this.#preFence(options.fence);
    return this.database.tx(async (c) => {
      await this.#fence(c, options.fence);
      const stored = await this.#insert(c, entry, 'dead', null);
      if (options.park && entry.key !== null) {
        await c.query(
          `INSERT INTO herald_parked_keys (grp, topic, key, partition, draining, parked_by) VALUES ($1, $2, $3, $4, false, $5)
           ON CONFLICT (grp, topic, key) DO UPDATE SET partition = excluded.partition, draining = false, parked_by = excluded.parked_by`,
          [entry.group, entry.topic, entry.key, entry.partition, Number(stored.id)],
        );
      }
      return stored;
    });
  }

  async parkMessage(entry: NewDeadLetter, options: WriteOptions = {}): Promise<DeadLetterEntry> {
    await this.#preFence(options.fence);
    if (entry.key === null) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'only a message with a key can be parked');
    return this.database.tx(async (c) => {
      await this.#fence(c, options.fence);
      const park = await parkRow(c, entry.group, entry.topic, entry.key!);
      if (!park) throw new HeraldError('HERALD_ERR_NOT_FOUND', `key "${entry.key}" is not parked in group "${entry.group}" on topic "${entry.topic}"`);
      return this.#insert(c, entry, park.draining ? 'redrive' : 'parked', park.parked_by === null ? null : formatId(park.parked_by));
    });
  }

  async parkedKeys(group: string, topic: string, partition?: number): Promise<readonly string[]> {
    await this.#enter();
    const r =
      partition === undefined
        ? await this.database.query<{ key: string }>(`SELECT key FROM herald_parked_keys WHERE grp = $1 AND topic = $2 ORDER BY seq`, [group, topic])
        : await this.database.query<{ key: string }>(`SELECT key FROM herald_parked_keys WHERE grp = $1 AND topic = $2 AND partition = $3 ORDER BY seq`, [group, topic, partition]);
    return r.rows.map((x) => x.key);
  }

  async get(id: string): Promise<DeadLetterEntry | undefined> {
    await this.#enter();
    const n = parseId(id);
    if (n === undefined) return undefined;
    const r = await this.database.query<Row>(`SELECT ${COLUMNS} FROM herald_dead_letters WHERE id = $1`, [n]);
    return r.rows[0] ? this.#entry(r.rows[0]) : undefined;
  }

  async list(filter: DeadLetterFilter = {}, page: { cursor?: string; limit?: number } = {}): Promise<DeadLetterPage> {
    await this.#enter();
    const limit = pageLimit(page.limit);
    const after = page.cursor === undefined ? -1 : Number(page.cursor);
    if (!Number.isInteger(after)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `bad dead-letter cursor "${page.cursor}"`);
    const params: unknown[] = [after];
    const where = ['id > $1', ...filterClauses(filter, params)];
    params.push(limit + 1);
    const r = await this.database.query<Row>(`SELECT ${COLUMNS} FROM herald_dead_letters WHERE ${where.join(' AND ')} ORDER BY id LIMIT $${params.length}`, params);
    const more = r.rows.length > limit;
    const entries = (more ? r.rows.slice(0, limit) : r.rows).map((x) => this.#entry(x));
    return more ? { entries, nextCursor: entries[entries.length - 1]!.id } : { entries };
  }

  async count(filter: DeadLetterFilter = {}): Promise<number> {
    await this.#enter();
    const params: unknown[] = [];
    const where = filterClauses(filter, params);
    const r = await this.database.query<{ n: string }>(`SELECT count(*) AS n FROM herald_dead_letters${where.length ? ` WHERE ${where.join(' AND ')}` : ''}`, params);
    return Number(r.rows[0]!.n);
  }

  async redrive(selector: DeadLetterSelector): Promise<number> {
    await this.#enter();
    const params: unknown[] = [];
    const sel = selectorClause(selector, params);
    return this.database.tx(async (c) => {
      const keys = (
        await c.query<KeyRow>(
          `SELECT DISTINCT d.grp, d.topic, d.key FROM herald_dead_letters d
           JOIN herald_parked_keys p ON p.grp = d.grp AND p.topic = d.topic AND p.key = d.key
           WHERE ${sel.replaceAll('$.', 'd.')}`,
          params,
        )
      ).rows;
      let n =
        (
          await c.query(
            `UPDATE herald_dead_letters d SET status = 'redrive'
             WHERE ${sel.replaceAll('$.', 'd.')} AND d.status <> 'redrive'
               AND NOT EXISTS (SELECT 1 FROM herald_parked_keys p WHERE p.grp = d.grp AND p.topic = d.topic AND p.key = d.key)`,
            params,
          )
        ).rowCount ?? 0;
      for (const k of keys) {
        await c.query(`UPDATE herald_parked_keys SET draining = true WHERE grp = $1 AND topic = $2 AND key = $3`, [k.grp, k.topic, k.key]);
        n += (await c.query(`UPDATE herald_dead_letters SET status = 'redrive' WHERE grp = $1 AND topic = $2 AND key = $3 AND status <> 'redrive'`, [k.grp, k.topic, k.key])).rowCount ?? 0;
      }
      return n;
    });
  }

  async pendingRedrives(group: string, topic: string, partitions: readonly number[], limit: number): Promise<readonly DeadLetterEntry[]> {
    await this.#enter();
    if (partitions.length === 0 || !(limit > 0)) return [];
    const r = await this.database.query<Row>(
      `SELECT ${COLUMNS} FROM herald_dead_letters WHERE status = 'redrive' AND grp = $1 AND topic = $2 AND partition = ANY($3::int[]) ORDER BY id LIMIT $4`,
      [group, topic, [...partitions], Math.floor(limit)],
    );
    return r.rows.map((x) => this.#entry(x));
  }

  async completeRedrive(id: string, options: WriteOptions = {}): Promise<{ unparked: boolean }> {
    await this.#preFence(options.fence);
    return this.database.tx(async (c) => {
      await this.#fence(c, options.fence);
      const n = parseId(id);
      const row = n === undefined ? undefined : (await c.query<KeyRow>(`DELETE FROM herald_dead_letters WHERE id = $1 RETURNING grp, topic, key`, [n])).rows[0];
      if (!row) return { unparked: false };
      return { unparked: await unparkIfEmpty(c, row) };
    });
  }

  async failRedrive(id: string, error: DeadLetterError, attempts: number, at: number, options: WriteOptions = {}): Promise<void> {
    await this.#preFence(options.fence);
    await this.database.tx(async (c) => {
      await this.#fence(c, options.fence);
      const n = parseId(id);
      const row =
        n === undefined
          ? undefined
          : (
              await c.query<KeyRow>(
                `UPDATE herald_dead_letters SET status = 'dead', error_code = $1, error_message = $2, error_stack = $3, attempts = $4, last_failed_at = $5 WHERE id = $6
                 RETURNING grp, topic, key`,
                [error.code ?? null, error.message, error.stack ?? null, attempts, at, n],
              )
            ).rows[0];
      if (!row) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no dead letter with id "${id}"`);
      if (row.key === null || !(await parkRow(c, row.grp, row.topic, row.key))) return;
      await c.query(`UPDATE herald_parked_keys SET draining = false WHERE grp = $1 AND topic = $2 AND key = $3`, [row.grp, row.topic, row.key]);
      await c.query(`UPDATE herald_dead_letters SET status = 'parked' WHERE grp = $1 AND topic = $2 AND key = $3 AND status = 'redrive' AND id <> $4`, [row.grp, row.topic, row.key, n]);
    });
  }

  async discard(selector: DeadLetterSelector): Promise<number> {
    await this.#enter();
    const params: unknown[] = [];
    const sel = selectorClause(selector, params).replaceAll('$.', '');
    return this.database.tx(async (c) => {
      const deleted = (await c.query<KeyRow>(`DELETE FROM herald_dead_letters WHERE ${sel} RETURNING grp, topic, key`, params)).rows;
      const seen = new Set<string>();
      for (const k of deleted) {
        const tag = `${k.grp}\u0000${k.topic}\u0000${k.key}`;
        if (seen.has(tag)) continue;
        seen.add(tag);
        await unparkIfEmpty(c, k);
      }
      return deleted.length;
    });
  }

  /** Idempotent. Closes the pool only when this store opened it. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#owned) await this.database.close();
  }

  async #insert(c: pg.PoolClient, entry: NewDeadLetter, status: DeadLetterStatus, parkedBehind: string | null): Promise<DeadLetterEntry> {
    const eventId = entry.envelope?.id ?? null;
    const type = entry.envelope?.type ?? null;
    const r = await c.query<{ id: string }>(
      `INSERT INTO herald_dead_letters (grp, topic, partition, key, handler, event_id, type, status, parked_behind, envelope, raw, position,
         error_code, error_message, error_stack, attempts, first_failed_at, last_failed_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) RETURNING id`,
      [
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
      ],
    );
    return Object.freeze({ ...entry, id: formatId(Number(r.rows[0]!.id)), eventId, type, status, parkedBehind });
  }

  #entry(r: Row): PostgresDeadLetterEntry {
    const id = formatId(Number(r.id));
    let envelope: CloudEvent | null = null;
    let corruption: HeraldError | undefined;
    if (r.envelope !== null) {
      try {
        envelope = decodeEnvelope(r.envelope);
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
      raw: r.raw,
      position: r.position,
      error,
      attempts: r.attempts,
      firstFailedAt: Number(r.first_failed_at),
      lastFailedAt: Number(r.last_failed_at),
      id,
      eventId: r.event_id,
      type: r.type,
      status: r.status,
      parkedBehind: r.parked_behind,
      ...(corruption ? { corruption } : {}),
    });
  }

  async #preFence(fence: LeaseFence | undefined): Promise<void> {
    await this.#enter();
    if (fence && this.#fenceCheck && !(await this.#fenceCheck(fence))) throw leaseLost(fence, undefined);
  }

  async #fence(c: pg.PoolClient, fence: LeaseFence | undefined): Promise<void> {
    if (fence && !this.#fenceCheck) await assertFence(c, fence);
  }

  async #enter(): Promise<void> {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'dead-letter store is closed');
    await this.#ready;
    this.database.assertOpen();
  }
}

async function parkRow(c: pg.PoolClient, group: string, topic: string, key: string): Promise<{ draining: boolean; parked_by: string | null } | undefined> {
  return (await c.query<{ draining: boolean; parked_by: string | null }>(`SELECT draining, parked_by FROM herald_parked_keys WHERE grp = $1 AND topic = $2 AND key = $3 FOR UPDATE`, [group, topic, key]))
    .rows[0];
}

async function unparkIfEmpty(c: pg.PoolClient, k: KeyRow): Promise<boolean> {
  if (k.key === null) return false;
  const r = await c.query(
    `DELETE FROM herald_parked_keys p WHERE grp = $1 AND topic = $2 AND key = $3
       AND NOT EXISTS (SELECT 1 FROM herald_dead_letters d WHERE d.grp = $1 AND d.topic = $2 AND d.key = $3)`,
    [k.grp, k.topic, k.key],
  );
  return (r.rowCount ?? 0) > 0;
}

function formatId(n: number | string): string {
  return String(n).padStart(ID_WIDTH, '0');
}

function parseId(id: string): number | undefined {
  const n = Number(id);
  return typeof id === 'string' && id.length > 0 && Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/** SQL conditions for `f`, pushing their parameters ($n numbered after those already in `params`). */
function filterClauses(f: DeadLetterFilter, params: unknown[], prefix = ''): string[] {
  const out: string[] = [];
  const add = (sql: (p: string) => string, v: unknown): void => {
    params.push(v);
    out.push(sql(`$${params.length}`));
  };
  if (f.group !== undefined) add((p) => `${prefix}grp = ${p}`, f.group);
  if (f.topic !== undefined) add((p) => `${prefix}topic = ${p}`, f.topic);
  if (f.type !== undefined) add((p) => `${prefix}type = ${p}`, f.type);
  if (f.key !== undefined) add((p) => `${prefix}key = ${p}`, f.key);
  if (f.status !== undefined) add((p) => `${prefix}status = ${p}`, f.status);
  if (f.errorContains !== undefined) add((p) => `strpos(lower(${prefix}error_message), lower(${p})) > 0`, f.errorContains);
  if (f.since !== undefined) add((p) => `${prefix}last_failed_at >= ${p}`, f.since);
  if (f.until !== undefined) add((p) => `${prefix}last_failed_at < ${p}`, f.until);
  return out;
}

/** The selector as one SQL condition whose columns are written `$.name` (the caller picks the qualifier). */
function selectorClause(selector: DeadLetterSelector, params: unknown[]): string {
  if ('ids' in selector) {
    const ids = selector.ids.map(parseId).filter((n): n is number => n !== undefined);
    params.push(ids);
    return `$.id = ANY($${params.length}::bigint[])`;
  }
  const clauses = filterClauses(selector.filter, params, '$.');
  return clauses.length ? `(${clauses.join(' AND ')})` : 'true';
}
