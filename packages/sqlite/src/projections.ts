/**
 * Projections into SQLite tables the user defines, in the event store's database file (so a
 * projection's writes, its checkpoint and — inline — the append itself share one transaction).
 *
 *   const summary = createSqliteProjection(store, {
 *     name: 'order-summary',
 *     category: 'order',
 *     tables: { order_summary: 'CREATE TABLE {order_summary} (id TEXT PRIMARY KEY, total INTEGER NOT NULL)' },
 *     handle(events, ctx) {
 *       const up = ctx.statement('INSERT INTO {order_summary} (id, total) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET total = total + excluded.total');
 *       for (const e of events) up.run(e.streamId, (e.data as { amount: number }).amount);
 *     },
 *   }, { mode: 'async' });
 *   …
 *   await waitForPosition(summary, result.position, { timeoutMs: 2000 });
 *   db.prepare('SELECT total FROM order_summary WHERE id = ?').get(id); // readers use the plain name
 *
 * Tables: `tables` maps each logical table name to its DDL, where `{name}` stands for the
 * physical table (and prefixes index names: `CREATE INDEX {t}_by_x ON {t} (x)`). The live
 * tables carry the logical names; `handle` must write through `ctx.statement`/`ctx.table` so
 * that a rebuild can point it at the shadow tables.
 *
 * Checkpoint: one row per projection in `herald_es_projections` (`position`, `generation`,
 * `status`), written in the same transaction as the projection's writes.
 * - inline: the store calls `handle` inside each append's savepoint (throwing fails that
 *   append only) and moves the position to the batch's head at its end. Every process that
 *   appends should register the same inline projections; if one did not, the next batch
 *   written by a process that has it first applies the missing events, in that transaction.
 * - async: a runner reads a page after the checkpoint, then in one write transaction re-reads
 *   the checkpoint, applies only events after it (idempotent by position: two runners or a
 *   replayed batch have one effect) and moves it. A throwing `handle` is retried with backoff
 *   (`retry`), then the projection is marked failed in its row (seen by every process).
 *
 * Rebuild: creates the next generation's tables (`<table>__g<n>`) from the current DDL, fills
 * them from position 0 in batches (one write transaction each, reads still served by the live
 * tables), then in ONE write transaction applies what was appended meanwhile up to the head,
 * drops the live tables, renames the shadow ones to the logical names and sets the checkpoint
 * to the head. Readers in other connections see the old tables or the new ones, never neither.
 * A rebuild interrupted by a crash resumes from its stored shadow position.
 */
import { type Clock, HeraldError, isHeraldError, systemClock } from '@herald/core';
import type {
  Projection,
  ProjectionMode,
  ProjectionRetryOptions,
  ProjectionStatus,
  RebuildOptions,
  RebuildResult,
  RecordedEvent,
  WaitOptions,
} from '@herald/eventsourcing';
import { categoryOf, checkCategory, checkRebuildOptions, closedError, invalidArgument, projectionFailed, resolveRetry, retryDelay, wants } from '@herald/eventsourcing/internal';
import type Database from 'better-sqlite3';
import type { SqliteDatabase } from './database.ts';
import { lastPosition, READ_ALL_SYNC, type SqliteEventStore } from './event-store.ts';

export interface SqliteProjectionContext {
  /** The connection (inside Herald's write transaction: do not begin or commit). */
  readonly db: Database.Database;
  /** The physical name of a logical table in the generation being written. */
  table(name: string): string;
  /** A prepared statement, cached; `{name}` placeholders of this projection's tables become physical names. */
  statement(sql: string): Database.Statement;
}

export interface SqliteProjectionDefinition {
  readonly name: string;
  /** Logical table name → DDL with `{name}` placeholders. */
  readonly tables: Readonly<Record<string, string>>;
  /** Only events of this category. */
  readonly category?: string;
  /** Only events of these types. */
  readonly eventTypes?: readonly string[];
  /** Applies a batch (in position order) inside Herald's write transaction. Synchronous. */
  handle(events: readonly RecordedEvent[], ctx: SqliteProjectionContext): void;
}

export interface SqliteProjectionOptions {
  readonly mode: ProjectionMode;
  /** Async: events per batch (default 512). */
  readonly batchSize?: number;
  readonly retry?: ProjectionRetryOptions;
  /** Timeouts and backoff (default the system clock). */
  readonly clock?: Clock;
  /** How often `waitForPosition` re-reads the checkpoint written by other processes, ms (default 5). */
  readonly pollMs?: number;
}

interface ProjectionRow {
  kind: string;
  position: number;
  generation: number;
  status: string;
  rebuild_position: number | null;
  tables: string;
  error: string | null;
}

const TABLE_RE = /^[A-Za-z_][A-Za-z0-9_]{0,100}$/;

/** Creates the projection's tables if needed, registers it and starts it (an inline one catches up first). */
export function createSqliteProjection(store: SqliteEventStore, definition: SqliteProjectionDefinition, options: SqliteProjectionOptions): SqliteProjection {
  return new SqliteProjection(store, definition, options);
}

/** The stored checkpoint of any projection in the file (0n when unknown): what another process sees. */
export function projectionPosition(database: SqliteDatabase, name: string): bigint {
  const p = database.read(() => database.statement('SELECT position FROM herald_es_projections WHERE name = ?').pluck().get(name) as number | undefined);
  return BigInt(p ?? 0);
}

class Context implements SqliteProjectionContext {
  readonly db: Database.Database;
  readonly #names: ReadonlyMap<string, string>;
  readonly #cache = new Map<string, Database.Statement>();
  readonly #re: RegExp;

  constructor(db: Database.Database, names: ReadonlyMap<string, string>) {
    this.db = db;
    this.#names = names;
    this.#re = new RegExp(`\\{(${[...names.keys()].join('|')})\\}`, 'g');
  }

  table(name: string): string {
    const t = this.#names.get(name);
    if (t === undefined) throw invalidArgument(`"${name}" is not a table of this projection (tables: ${[...this.#names.keys()].join(', ')})`);
    return t;
  }

  resolve(sql: string): string {
    // Names are plain identifiers (checked), so they need no quoting and can prefix index names.
    return sql.replace(this.#re, (_, n: string) => this.#names.get(n)!);
  }

  statement(sql: string): Database.Statement {
    let st = this.#cache.get(sql);
    if (!st) {
      st = this.db.prepare(this.resolve(sql));
      this.#cache.set(sql, st);
    }
    return st;
  }
}

export class SqliteProjection implements Projection {
  readonly name: string;
  readonly mode: ProjectionMode;
  readonly #store: SqliteEventStore;
  readonly #db: SqliteDatabase;
  readonly #def: SqliteProjectionDefinition;
  readonly #category: string | undefined;
  readonly #clock: Clock;
  readonly #batch: number;
  readonly #retry: Required<ProjectionRetryOptions>;
  readonly #pollMs: number;
  readonly #live: Context;
  readonly #notify = new Set<() => void>();
  #closed = false;
  #failure: unknown;
  #rebuilding: Promise<RebuildResult> | undefined;
  #unhook: (() => void) | undefined;
  #unlisten: (() => void) | undefined;
  #wake: (() => void) | undefined;
  #dirty = true;
  #loop: Promise<void> | undefined;
  #loopEnded = true;

  constructor(store: SqliteEventStore, def: SqliteProjectionDefinition, options: SqliteProjectionOptions) {
    if (typeof def?.name !== 'string' || def.name.length === 0 || def.name.length > 200) throw invalidArgument('a projection needs a name of 1–200 characters');
    if (typeof def.handle !== 'function') throw invalidArgument(`projection "${def.name}" needs handle()`);
    if (typeof def.tables !== 'object' || def.tables === null || Object.keys(def.tables).length === 0) throw invalidArgument(`projection "${def.name}" needs at least one table`);
    for (const [t, ddl] of Object.entries(def.tables)) {
      if (!TABLE_RE.test(t) || t.startsWith('herald_')) throw invalidArgument(`projection "${def.name}": table name "${t}" must be an identifier (letters, digits, _) not starting with herald_`);
      if (typeof ddl !== 'string' || !ddl.includes(`{${t}}`)) throw invalidArgument(`projection "${def.name}": the DDL of "${t}" must create {${t}}`);
    }
    if (options?.mode !== 'inline' && options?.mode !== 'async') throw invalidArgument(`mode must be 'inline' or 'async' (got ${String(options?.mode)})`);
    this.name = def.name;
    this.mode = options.mode;
    this.#store = store;
    this.#db = store.database;
    this.#def = def;
    this.#category = checkCategory(def.category);
    this.#clock = options.clock ?? systemClock;
    this.#batch = options.batchSize ?? 512;
    if (!Number.isInteger(this.#batch) || this.#batch < 1 || this.#batch > 10_000) throw invalidArgument(`batchSize must be an integer from 1 to 10000 (got ${this.#batch})`);
    this.#retry = resolveRetry(options.retry);
    this.#pollMs = options.pollMs ?? 5;
    this.#live = new Context(this.#db.db, new Map(Object.keys(def.tables).map((t) => [t, t])));
    this.#register();
    this.#unlisten = store.onAppend(() => {
      this.#dirty = true;
      const w = this.#wake;
      this.#wake = undefined;
      w?.();
      for (const n of [...this.#notify]) n();
    });
    if (this.mode === 'inline') {
      let inBatch = false;
      this.#unhook = store.addInlineHook({
        begin: (head) => {
          try {
            this.#catchUpLive(head);
          } catch (e) {
            // The read model cannot include what was appended without it: no append may commit.
            throw projectionFailed(this.name, BigInt(this.#row()?.position ?? 0), e);
          }
          inBatch = true;
        },
        apply: (events) => {
          if (inBatch) this.#applyFiltered(events, this.#live);
        },
        end: (head) => {
          if (!inBatch) return;
          inBatch = false;
          this.#db.statement('UPDATE herald_es_projections SET position = ?, updated_at = ? WHERE name = ? AND position < ?').run(head, this.#clock.now(), this.name, head);
        },
      });
      // Catch up with what is already stored, in one transaction.
      this.#db.immediate(() => this.#catchUpLive(this.#head()));
    } else {
      this.#loop = this.#run();
    }
  }

  get failure(): unknown {
    return this.#failure;
  }

  status(): ProjectionStatus {
    if (this.#closed) return 'closed';
    const row = this.#row();
    if (row?.status === 'failed') return 'failed';
    if (row?.status === 'rebuilding' || this.#rebuilding) return 'rebuilding';
    return 'live';
  }

  async position(): Promise<bigint> {
    return BigInt(this.#row()?.position ?? 0);
  }

  waitForPosition(position: bigint, options: WaitOptions = {}): Promise<void> {
    if (typeof position !== 'bigint' || position < 0n) return Promise.reject(invalidArgument(`waitForPosition takes a non-negative bigint (got ${String(position)})`));
    if (this.#closed) return Promise.reject(closedError(`projection "${this.name}"`));
    const timeoutMs = options.timeoutMs ?? 5000;
    const check = (): boolean => {
      const row = this.#row();
      if (row?.status === 'failed') throw this.#failure ?? projectionFailed(this.name, BigInt(row.position), new Error(row.error ?? 'failed in another process'));
      return BigInt(row?.position ?? 0) >= position;
    };
    try {
      if (check()) return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise<void>((resolve, reject) => {
      let poll: NodeJS.Timeout | undefined;
      const finish = (e?: unknown): void => {
        timer.cancel();
        clearTimeout(poll);
        this.#notify.delete(look);
        options.signal?.removeEventListener('abort', onAbort);
        if (e === undefined) resolve();
        else reject(e);
      };
      const look = (): void => {
        if (this.#closed) return finish(closedError(`projection "${this.name}"`));
        try {
          if (check()) finish();
        } catch (e) {
          finish(e);
        }
      };
      const tick = (): void => {
        look();
        if (this.#notify.has(look)) poll = setTimeout(tick, this.#pollMs);
      };
      const onAbort = (): void => finish(options.signal?.reason);
      const timer = this.#clock.setTimer(() => {
        const reached = BigInt(this.#row()?.position ?? 0);
        finish(
          new HeraldError('HERALD_ERR_WAIT_TIMEOUT', `projection "${this.name}" did not reach position ${position} within ${timeoutMs} ms (it is at ${reached})`, {
            details: { projection: this.name, position: String(position), reached: String(reached), timeoutMs },
          }),
        );
      }, timeoutMs);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.#notify.add(look);
      poll = setTimeout(tick, this.#pollMs);
    });
  }

  rebuild(options: RebuildOptions = {}): Promise<RebuildResult> {
    if (this.#closed) return Promise.reject(closedError(`projection "${this.name}"`));
    const batch = checkRebuildOptions(options);
    this.#rebuilding ??= this.#rebuild(batch, options).finally(() => {
      this.#rebuilding = undefined;
    });
    return this.#rebuilding;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#unhook?.();
    this.#unlisten?.();
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
    for (const n of [...this.#notify]) n();
    await this.#loop;
    await this.#rebuilding?.catch(() => {});
  }

  // --------------------------------------------------------------------------------------

  #row(): ProjectionRow | undefined {
    return this.#db.read(() => this.#db.statement('SELECT kind, position, generation, status, rebuild_position, tables, error FROM herald_es_projections WHERE name = ?').get(this.name)) as
      | ProjectionRow
      | undefined;
  }

  #head(): bigint {
    return BigInt(lastPosition(this.#db));
  }

  /** Creates the live tables and the registry row on first use; a restart clears a failed status. */
  #register(): void {
    const db = this.#db;
    db.immediate(() => {
      const row = this.#row();
      const now = this.#clock.now();
      if (!row) {
        for (const ddl of Object.values(this.#def.tables)) db.db.exec(this.#live.resolve(ddl));
        db.statement(
          `INSERT INTO herald_es_projections (name, kind, position, generation, status, rebuild_position, tables, error, updated_at) VALUES (?, ?, 0, 0, 'live', NULL, ?, NULL, ?)`,
        ).run(this.name, this.mode, JSON.stringify(this.#def.tables), now);
        return;
      }
      const status = row.status === 'failed' ? (row.rebuild_position !== null ? 'rebuilding' : 'live') : row.status;
      db.statement('UPDATE herald_es_projections SET kind = ?, status = ?, error = NULL, updated_at = ? WHERE name = ?').run(this.mode, status, now, this.name);
    });
  }

  #applyFiltered(events: readonly RecordedEvent[], ctx: Context): number {
    let mine: RecordedEvent[] | undefined;
    for (let i = 0; i < events.length; i++) {
      const e = events[i]!;
      const ok = (this.#category === undefined || categoryOf(e.streamId) === this.#category) && wants(this.#def, e.type);
      if (ok) {
        if (mine) mine.push(e);
      } else if (!mine) mine = events.slice(0, i);
    }
    const list = mine ?? events;
    if (list.length > 0) this.#def.handle(list, ctx);
    return list.length;
  }

  /** Inside a write transaction: applies to the live tables every event between the checkpoint and `head`. */
  #catchUpLive(head: bigint): void {
    let position = BigInt(this.#row()?.position ?? 0);
    if (position >= head) return;
    while (position < head) {
      const page = this.#store[READ_ALL_SYNC]({ after: position, maxCount: 10_000, ...(this.#category !== undefined ? { category: this.#category } : {}) });
      const upTo = page.events.filter((e) => e.position <= head);
      this.#applyFiltered(upTo, this.#live);
      if (page.isEnd || upTo.length < page.events.length) break;
      position = page.position;
    }
    this.#db.statement('UPDATE herald_es_projections SET position = ?, updated_at = ? WHERE name = ? AND position < ?').run(head, this.#clock.now(), this.name, head);
  }

  async #run(): Promise<void> {
    this.#loopEnded = false;
    try {
      await this.#runLoop();
    } finally {
      this.#loopEnded = true;
    }
  }

  async #runLoop(): Promise<void> {
    let attempt = 0;
    while (!this.#closed) {
      const row = this.#row();
      if (!row || row.status === 'failed') return;
      this.#dirty = false;
      const from = BigInt(row.position);
      let advanced = false;
      try {
        const page = await this.#store.readAll({ after: from, maxCount: this.#batch, ...(this.#category !== undefined ? { category: this.#category } : {}) });
        if (this.#closed) return;
        if (page.position > from) {
          advanced = await this.#db.immediateAsync(() => {
            // Idempotent by position: apply only what is after the checkpoint as it is now.
            const now = BigInt(this.#row()?.position ?? 0);
            if (now >= page.position) return false;
            this.#applyFiltered(page.events.filter((e) => e.position > now), this.#live);
            this.#db.statement('UPDATE herald_es_projections SET position = ?, updated_at = ? WHERE name = ?').run(page.position, this.#clock.now(), this.name);
            return true;
          });
        }
        attempt = 0;
        if (advanced) for (const n of [...this.#notify]) n();
        if (!page.isEnd) {
          await new Promise<void>((r) => setImmediate(r));
          continue;
        }
      } catch (e) {
        if (this.#closed) return;
        if (isHeraldError(e, 'HERALD_ERR_CLOSED')) {
          // The store (or its database) was closed under the runner: stop; waiters see CLOSED.
          for (const n of [...this.#notify]) n();
          return;
        }
        attempt++;
        if (attempt >= this.#retry.maxAttempts) {
          this.#fail(from, e);
          return;
        }
        await this.#clock.sleep(retryDelay(this.#retry, attempt)).catch(() => {});
        continue;
      }
      if (this.#dirty) continue;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  #fail(position: bigint, cause: unknown): void {
    this.#failure = projectionFailed(this.name, position, cause);
    try {
      this.#db.immediate(() =>
        this.#db.statement(`UPDATE herald_es_projections SET status = 'failed', error = ?, updated_at = ? WHERE name = ?`).run((this.#failure as Error).message, this.#clock.now(), this.name),
      );
    } catch {
      // the database is gone: the in-process failure still stands
    }
    for (const n of [...this.#notify]) n();
  }

  async #rebuild(batch: number, options: RebuildOptions): Promise<RebuildResult> {
    const started = this.#clock.monotonic();
    const db = this.#db;
    // Start (or resume) the next generation.
    const { generation, from } = db.immediate(() => {
      const row = this.#row()!;
      const next = row.generation + 1;
      const shadow = this.#shadow(next);
      if (row.status === 'rebuilding' && row.rebuild_position !== null && this.#tablesExist(shadow)) {
        return { generation: next, from: BigInt(row.rebuild_position) };
      }
      for (const t of Object.keys(this.#def.tables)) db.db.exec(`DROP TABLE IF EXISTS "${shadow.table(t)}"`);
      for (const ddl of Object.values(this.#def.tables)) db.db.exec(shadow.resolve(ddl));
      db.statement(`UPDATE herald_es_projections SET status = 'rebuilding', rebuild_position = 0, error = NULL, updated_at = ? WHERE name = ?`).run(this.#clock.now(), this.name);
      return { generation: next, from: 0n };
    });
    const shadow = this.#shadow(generation);
    let position = from;
    let events = 0;
    for (;;) {
      if (this.#closed) throw closedError(`projection "${this.name}"`);
      if (options.signal?.aborted) throw options.signal.reason;
      const page = await this.#store.readAll({ after: position, maxCount: batch, ...(this.#category !== undefined ? { category: this.#category } : {}) });
      if (page.isEnd) break;
      position = await db.immediateAsync(() => {
        const stored = BigInt(this.#row()?.rebuild_position ?? 0);
        events += this.#applyFiltered(page.events.filter((e) => e.position > stored), shadow);
        const to = page.position > stored ? page.position : stored;
        db.statement('UPDATE herald_es_projections SET rebuild_position = ?, updated_at = ? WHERE name = ?').run(to, this.#clock.now(), this.name);
        return to;
      });
      await options.onProgress?.({ position, head: this.#head(), events });
    }
    if (this.#closed) throw closedError(`projection "${this.name}"`);
    // The swap: one write transaction, so no append can land between catching up and swapping.
    const result = await db.immediateAsync(() => {
      let at = BigInt(this.#row()?.rebuild_position ?? 0);
      const head = this.#head();
      while (at < head) {
        const page = this.#store[READ_ALL_SYNC]({ after: at, maxCount: 10_000, ...(this.#category !== undefined ? { category: this.#category } : {}) });
        events += this.#applyFiltered(page.events, shadow);
        at = page.position;
        if (page.isEnd) break;
      }
      for (const t of Object.keys(this.#def.tables)) {
        db.db.exec(`DROP TABLE IF EXISTS "${t}"`);
        db.db.exec(`ALTER TABLE "${shadow.table(t)}" RENAME TO "${t}"`);
      }
      db.statement(
        `UPDATE herald_es_projections SET position = ?, generation = ?, status = 'live', rebuild_position = NULL, tables = ?, error = NULL, updated_at = ? WHERE name = ?`,
      ).run(head, generation, JSON.stringify(this.#def.tables), this.#clock.now(), this.name);
      return head;
    });
    this.#failure = undefined;
    for (const n of [...this.#notify]) n();
    // An async projection that had failed comes back after a rebuild (its code was fixed).
    if (this.mode === 'async' && this.#loopEnded && !this.#closed) this.#loop = this.#run();
    return { events, position: result, durationMs: this.#clock.monotonic() - started };
  }

  #shadow(generation: number): Context {
    return new Context(this.#db.db, new Map(Object.keys(this.#def.tables).map((t) => [t, `${t}__g${generation}`])));
  }

  #tablesExist(ctx: Context): boolean {
    const st = this.#db.statement(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`);
    return Object.keys(this.#def.tables).every((t) => st.get(ctx.table(t)) !== undefined);
  }
}
