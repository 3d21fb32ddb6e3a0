/**
 * Projections into PostgreSQL tables the user defines, in the event store's schema (so a
 * projection's writes, its checkpoint and — inline — the append itself share one transaction).
 *
 *   const summary = createPostgresProjection(store, {
 *     name: 'order-summary',
 *     category: 'order',
 *     tables: { order_summary: 'CREATE TABLE {order_summary} (id text PRIMARY KEY, total bigint NOT NULL)' },
 *     async handle(events, ctx) {
 *       for (const e of events) await ctx.query('INSERT INTO {order_summary} (id, total) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET total = {order_summary}.total + excluded.total', [e.streamId, e.data.amount]);
 *     },
 *   }, { mode: 'async' });
 *
 * Tables: `tables` maps each logical table name to its DDL, where `{name}` stands for the
 * physical table (and may prefix index names). Live tables carry the logical names; `handle`
 * must write through `ctx.query`/`ctx.table` so that a rebuild can point it at shadow tables.
 *
 * Checkpoint: one row per projection in `herald_es_projections`, written in the same transaction
 * as the projection's writes, under a transaction-level advisory lock per projection (which,
 * unlike a row lock, gives a transaction no id, so its own catch-up reads are not held back).
 * - inline: the store calls `handle` inside each append's savepoint (throwing fails that
 *   append only); the batch takes the projection's lock first and moves its position to the
 *   batch's last position. Every process that appends must register the same inline
 *   projections: an append made without it is not projected (rebuild to repair).
 * - async: a runner reads a page of `$all` after the checkpoint (bounded by the safe head, so
 *   it never skips an event committed late), then in one transaction locks the row, applies
 *   only events after the checkpoint as it is now (idempotent by position: two runners or a
 *   replayed batch have one effect) and moves it. A throwing `handle` is retried with backoff
 *   (`retry`), then the projection is marked failed in its row (seen by every process).
 *
 * Rebuild: creates the next generation's tables (`<table>__g<n>`), fills them from position 0
 * in batches (one transaction each; reads still served by the live tables), then in ONE
 * transaction that holds the projection's lock (inline appends wait for it) applies what was
 * appended meanwhile up to the safe head, drops the live tables, renames the shadow ones and
 * sets the checkpoint to that head. Readers see the old tables or the new ones, never neither.
 */
import { createHash } from 'node:crypto';
import { type Clock, HeraldError, isHeraldError, systemClock } from '@herald/core';
import type { Projection, ProjectionMode, ProjectionRetryOptions, ProjectionStatus, RebuildOptions, RebuildResult, RecordedEvent, WaitOptions } from '@herald/eventsourcing';
import { categoryOf, checkCategory, checkRebuildOptions, closedError, invalidArgument, projectionFailed, resolveRetry, retryDelay, wants } from '@herald/eventsourcing/internal';
import type pg from 'pg';
import type { PgDatabase } from './database.ts';
import { type PostgresEventStore, READ_ALL_NOW } from './event-store.ts';

export interface PostgresProjectionContext {
  /** The connection, inside Herald's transaction: do not begin, commit or roll back. */
  readonly client: pg.PoolClient;
  /** The physical name of a logical table in the generation being written. */
  table(name: string): string;
  /** Runs `sql` on `client` with `{name}` placeholders of this projection's tables replaced. */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, values?: readonly unknown[]): Promise<pg.QueryResult<R>>;
}

export interface PostgresProjectionDefinition {
  readonly name: string;
  /** Logical table name → DDL with `{name}` placeholders. */
  readonly tables: Readonly<Record<string, string>>;
  readonly category?: string;
  readonly eventTypes?: readonly string[];
  /** Applies a batch (in position order) inside Herald's transaction. */
  handle(events: readonly RecordedEvent[], ctx: PostgresProjectionContext): Promise<void> | void;
}

export interface PostgresProjectionOptions {
  readonly mode: ProjectionMode;
  /** Async: events per batch (default 512). */
  readonly batchSize?: number;
  readonly retry?: ProjectionRetryOptions;
  readonly clock?: Clock;
  /** How often `waitForPosition` re-reads the checkpoint (moved by other processes too), ms (default 10). */
  readonly pollMs?: number;
}

interface ProjectionRow {
  kind: string;
  position: string;
  generation: number;
  status: string;
  rebuild_position: string | null;
  error: string | null;
}

const TABLE_RE = /^[a-z_][a-z0-9_]{0,50}$/;
const statementNames = new Map<string, string>();

function statementName(text: string): string {
  let n = statementNames.get(text);
  if (!n) {
    n = `herald_p_${createHash('sha1').update(text).digest('hex').slice(0, 20)}`;
    if (statementNames.size > 10_000) statementNames.clear();
    statementNames.set(text, n);
  }
  return n;
}

class Names {
  readonly #names: ReadonlyMap<string, string>;
  readonly #re: RegExp;
  constructor(names: ReadonlyMap<string, string>) {
    this.#names = names;
    this.#re = new RegExp(`\\{(${[...names.keys()].join('|')})\\}`, 'g');
  }
  table(name: string): string {
    const t = this.#names.get(name);
    if (t === undefined) throw invalidArgument(`"${name}" is not a table of this projection (tables: ${[...this.#names.keys()].join(', ')})`);
    return t;
  }
  resolve(sql: string): string {
    return sql.replace(this.#re, (_, n: string) => this.#names.get(n)!);
  }
  /**
   * Statements run through `query` are prepared once per connection and SQL text (a named
   * statement): a projection runs the same few statements for every event, and the server then
   * skips parsing and planning them each time. DDL (a rebuild's swap) makes the server re-plan them.
   */
  context(client: pg.PoolClient): PostgresProjectionContext {
    return {
      client,
      table: (n) => this.table(n),
      query: (sql, values) => {
        const text = this.resolve(sql);
        return client.query({ name: statementName(text), text, values: values as unknown[] });
      },
    };
  }
}

/** Creates the projection's tables if needed, registers it and starts it (an inline one catches up first). */
export async function createPostgresProjection(store: PostgresEventStore, definition: PostgresProjectionDefinition, options: PostgresProjectionOptions): Promise<PostgresProjection> {
  const p = new PostgresProjection(store, definition, options);
  await p.start();
  return p;
}

export class PostgresProjection implements Projection {
  readonly name: string;
  readonly mode: ProjectionMode;
  readonly #store: PostgresEventStore;
  readonly #db: PgDatabase;
  readonly #def: PostgresProjectionDefinition;
  readonly #category: string | undefined;
  readonly #clock: Clock;
  readonly #batch: number;
  readonly #retry: Required<ProjectionRetryOptions>;
  readonly #pollMs: number;
  readonly #live: Names;
  readonly #notify = new Set<() => void>();
  #closed = false;
  #failure: unknown;
  #status: 'live' | 'rebuilding' | 'failed' = 'live';
  #position = 0n;
  #rebuilding: Promise<RebuildResult> | undefined;
  #unhook: (() => void) | undefined;
  #unlisten: (() => void) | undefined;
  #wake: (() => void) | undefined;
  #dirty = true;
  #loop: Promise<void> | undefined;
  #loopEnded = true;

  constructor(store: PostgresEventStore, def: PostgresProjectionDefinition, options: PostgresProjectionOptions) {
    if (typeof def?.name !== 'string' || def.name.length === 0 || def.name.length > 200) throw invalidArgument('a projection needs a name of 1–200 characters');
    if (typeof def.handle !== 'function') throw invalidArgument(`projection "${def.name}" needs handle()`);
    if (typeof def.tables !== 'object' || def.tables === null || Object.keys(def.tables).length === 0) throw invalidArgument(`projection "${def.name}" needs at least one table`);
    for (const [t, ddl] of Object.entries(def.tables)) {
      if (!TABLE_RE.test(t) || t.startsWith('herald_')) throw invalidArgument(`projection "${def.name}": table name "${t}" must be a lower-case identifier (letters, digits, _) not starting with herald_`);
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
    this.#pollMs = options.pollMs ?? 10;
    this.#live = new Names(new Map(Object.keys(def.tables).map((t) => [t, t])));
  }

  /** Registers the projection (creating its tables), then starts it. Called by createPostgresProjection. */
  async start(): Promise<void> {
    await this.#store.ready();
    await this.#register();
    this.#unlisten = this.#store.onAppend(() => {
      this.#dirty = true;
      const w = this.#wake;
      this.#wake = undefined;
      w?.();
      for (const n of [...this.#notify]) n();
    });
    if (this.mode === 'inline') {
      this.#unhook = this.#store.addInlineHook({
        begin: async (client) => {
          await this.#lockRow(client);
        },
        apply: async (client, events) => {
          await this.#applyFiltered(events, this.#live, client);
        },
        end: async (client, last) => {
          if (last > 0n) await client.query('UPDATE herald_es_projections SET position = $1, updated_at = $2 WHERE name = $3 AND position < $1', [last.toString(), this.#clock.now(), this.name]);
          this.#position = last > this.#position ? last : this.#position;
        },
      });
      // Catch up with what is already stored, in one transaction.
      await this.#db.tx(async (c) => {
        await this.#lockRow(c);
        await this.#catchUp(c, this.#live, BigInt((await this.#row(c))!.position));
      });
      await this.#refresh();
    } else {
      this.#loop = this.#run();
    }
  }

  get failure(): unknown {
    return this.#failure;
  }

  status(): ProjectionStatus {
    if (this.#closed) return 'closed';
    if (this.#rebuilding) return 'rebuilding';
    return this.#status;
  }

  async position(): Promise<bigint> {
    await this.#refresh();
    return this.#position;
  }

  waitForPosition(position: bigint, options: WaitOptions = {}): Promise<void> {
    if (typeof position !== 'bigint' || position < 0n) return Promise.reject(invalidArgument(`waitForPosition takes a non-negative bigint (got ${String(position)})`));
    if (this.#closed) return Promise.reject(closedError(`projection "${this.name}"`));
    const timeoutMs = options.timeoutMs ?? 5000;
    if (this.#status !== 'failed' && this.#position >= position) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      let poll: NodeJS.Timeout | undefined;
      let done = false;
      const finish = (e?: unknown): void => {
        if (done) return;
        done = true;
        timer.cancel();
        clearTimeout(poll);
        this.#notify.delete(look);
        options.signal?.removeEventListener('abort', onAbort);
        if (e === undefined) resolve();
        else reject(e);
      };
      const look = (): void => {
        if (this.#closed) return finish(closedError(`projection "${this.name}"`));
        void this.#refresh().then(
          () => {
            if (this.#status === 'failed') finish(this.#failure ?? projectionFailed(this.name, this.#position, new Error('failed in another process')));
            else if (this.#position >= position) finish();
          },
          () => {},
        );
      };
      const tick = (): void => {
        look();
        if (!done) poll = setTimeout(tick, this.#pollMs);
      };
      const onAbort = (): void => finish(options.signal?.reason);
      const timer = this.#clock.setTimer(() => {
        finish(
          new HeraldError('HERALD_ERR_WAIT_TIMEOUT', `projection "${this.name}" did not reach position ${position} within ${timeoutMs} ms (it is at ${this.#position})`, {
            details: { projection: this.name, position: String(position), reached: String(this.#position), timeoutMs },
          }),
        );
      }, timeoutMs);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.#notify.add(look);
      tick();
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

  async #row(c?: pg.PoolClient): Promise<ProjectionRow | undefined> {
    const sql = 'SELECT kind, position, generation, status, rebuild_position, error FROM herald_es_projections WHERE name = $1';
    const r = c ? await c.query<ProjectionRow>(sql, [this.name]) : await this.#db.query<ProjectionRow>(sql, [this.name]);
    return r.rows[0];
  }

  /**
   * Serializes the projection's writers (inline appends, the async runner, rebuild steps, the
   * swap) with a transaction-level advisory lock, not a row lock: taking it gives the
   * transaction no id, so a catch-up read after it is not held back by the reader's own
   * transaction (see the visibility rule in event-store.ts).
   */
  async #lockRow(c: pg.PoolClient): Promise<ProjectionRow> {
    await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`herald.projection:${this.#db.schema}:${this.name}`]);
    const r = await c.query<ProjectionRow>('SELECT kind, position, generation, status, rebuild_position, error FROM herald_es_projections WHERE name = $1', [this.name]);
    return r.rows[0]!;
  }

  async #refresh(): Promise<void> {
    const row = await this.#row();
    if (!row) return;
    const p = BigInt(row.position);
    if (p > this.#position) this.#position = p;
    if (row.status === 'failed') {
      this.#status = 'failed';
      this.#failure ??= projectionFailed(this.name, p, new Error(row.error ?? 'failed in another process'));
    } else this.#status = row.status === 'rebuilding' ? 'rebuilding' : 'live';
  }

  /** Creates the live tables and the registry row on first use; a restart clears a failed status. */
  async #register(): Promise<void> {
    await this.#db.tx(async (c) => {
      await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`herald.projection:${this.#db.schema}:${this.name}`]);
      const row = await this.#row(c);
      const now = this.#clock.now();
      if (!row) {
        for (const ddl of Object.values(this.#def.tables)) await c.query(this.#live.resolve(ddl));
        await c.query(
          `INSERT INTO herald_es_projections (name, kind, position, generation, status, rebuild_position, tables, error, updated_at) VALUES ($1, $2, 0, 0, 'live', NULL, $3, NULL, $4)`,
          [this.name, this.mode, JSON.stringify(this.#def.tables), now],
        );
        return;
      }
      const status = row.status === 'failed' ? (row.rebuild_position !== null ? 'rebuilding' : 'live') : row.status;
      await c.query('UPDATE herald_es_projections SET kind = $1, status = $2, error = NULL, updated_at = $3 WHERE name = $4', [this.mode, status, now, this.name]);
    });
  }

  #wants(e: RecordedEvent): boolean {
    return (this.#category === undefined || categoryOf(e.streamId) === this.#category) && wants(this.#def, e.type);
  }

  async #applyFiltered(events: readonly RecordedEvent[], names: Names, client: pg.PoolClient): Promise<number> {
    const mine = events.filter((e) => this.#wants(e));
    if (mine.length > 0) await this.#def.handle(mine, names.context(client));
    return mine.length;
  }

  /** Inside a transaction holding the projection's row: applies every event after `from` up to the safe head; returns that head. */
  async #catchUp(c: pg.PoolClient, names: Names, from: bigint, column: 'position' | 'rebuild_position' = 'position'): Promise<{ head: bigint; events: number }> {
    let at = from;
    let events = 0;
    for (;;) {
      const page = await this.#store.readAll({ after: at, maxCount: 10_000, ...(this.#category !== undefined ? { category: this.#category } : {}) });
      events += await this.#applyFiltered(page.events, names, c);
      if (page.position > at) at = page.position;
      if (page.isEnd) break;
    }
    await c.query(`UPDATE herald_es_projections SET ${column} = $1, updated_at = $2 WHERE name = $3`, [at.toString(), this.#clock.now(), this.name]);
    return { head: at, events };
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
      let from = 0n;
      let advanced = false;
      try {
        const row = await this.#row();
        if (!row || row.status === 'failed') {
          await this.#refresh();
          return;
        }
        this.#dirty = false;
        from = BigInt(row.position);
        // No visibility wait: the store wakes this runner when the safe head moves.
        const page = await this.#store[READ_ALL_NOW]({ after: from, maxCount: this.#batch, ...(this.#category !== undefined ? { category: this.#category } : {}) });
        if (this.#closed) return;
        const mine = page.events.some((e) => this.#wants(e));
        if (page.position > from && !mine) {
          // Nothing of ours in the page: move the checkpoint forward in one statement (monotonic).
          const r = await this.#db.query(`UPDATE herald_es_projections SET position = $1, updated_at = $2 WHERE name = $3 AND position < $1 AND status <> 'failed'`, [
            page.position.toString(),
            this.#clock.now(),
            this.name,
          ]);
          advanced = (r.rowCount ?? 0) > 0;
        } else if (page.position > from) {
          advanced = await this.#db.tx(async (c) => {
            // Idempotent by position: apply only what is after the checkpoint as it is now.
            const now = BigInt((await this.#lockRow(c)).position);
            if (now >= page.position) return false;
            await this.#applyFiltered(page.events.filter((e) => e.position > now), this.#live, c);
            await c.query('UPDATE herald_es_projections SET position = $1, updated_at = $2 WHERE name = $3', [page.position.toString(), this.#clock.now(), this.name]);
            return true;
          });
        }
        attempt = 0;
        if (advanced) {
          this.#position = page.position > this.#position ? page.position : this.#position;
          for (const n of [...this.#notify]) n();
        }
        if (!page.isEnd) continue;
      } catch (e) {
        if (this.#closed) return;
        if (isHeraldError(e, 'HERALD_ERR_CLOSED')) {
          for (const n of [...this.#notify]) n();
          return;
        }
        // A server that went away is waited out; a handler that keeps failing stops the projection.
        if (!(isHeraldError(e, 'HERALD_ERR_STORAGE') && e.retryable)) attempt++;
        if (attempt >= this.#retry.maxAttempts) {
          await this.#fail(from, e);
          return;
        }
        await this.#clock.sleep(retryDelay(this.#retry, Math.max(1, attempt))).catch(() => {});
        continue;
      }
      if (this.#dirty) continue;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  async #fail(position: bigint, cause: unknown): Promise<void> {
    this.#failure = projectionFailed(this.name, position, cause);
    this.#status = 'failed';
    await this.#db
      .query(`UPDATE herald_es_projections SET status = 'failed', error = $1, updated_at = $2 WHERE name = $3`, [(this.#failure as Error).message, this.#clock.now(), this.name])
      .catch(() => {});
    for (const n of [...this.#notify]) n();
  }

  async #rebuild(batch: number, options: RebuildOptions): Promise<RebuildResult> {
    const started = this.#clock.monotonic();
    const db = this.#db;
    const { generation, from } = await db.tx(async (c) => {
      const row = await this.#lockRow(c);
      const next = row.generation + 1;
      const shadow = this.#shadow(next);
      if (row.status === 'rebuilding' && row.rebuild_position !== null && (await this.#tablesExist(c, shadow))) return { generation: next, from: BigInt(row.rebuild_position) };
      for (const t of Object.keys(this.#def.tables)) await c.query(`DROP TABLE IF EXISTS "${shadow.table(t)}"`);
      for (const ddl of Object.values(this.#def.tables)) await c.query(shadow.resolve(ddl));
      await c.query(`UPDATE herald_es_projections SET status = 'rebuilding', rebuild_position = 0, error = NULL, updated_at = $1 WHERE name = $2`, [this.#clock.now(), this.name]);
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
      position = await db.tx(async (c) => {
        const stored = BigInt((await this.#lockRow(c)).rebuild_position ?? 0);
        events += await this.#applyFiltered(page.events.filter((e) => e.position > stored), shadow, c);
        const to = page.position > stored ? page.position : stored;
        await c.query('UPDATE herald_es_projections SET rebuild_position = $1, updated_at = $2 WHERE name = $3', [to.toString(), this.#clock.now(), this.name]);
        return to;
      });
      await options.onProgress?.({ position, head: await this.#store.headPosition(), events });
    }
    if (this.#closed) throw closedError(`projection "${this.name}"`);
    // The swap: one transaction holding the projection's row, so no inline append lands between catching up and swapping.
    const head = await db.tx(async (c) => {
      const row = await this.#lockRow(c);
      const caught = await this.#catchUp(c, shadow, BigInt(row.rebuild_position ?? 0), 'rebuild_position');
      events += caught.events;
      for (const t of Object.keys(this.#def.tables)) {
        await c.query(`DROP TABLE IF EXISTS "${t}"`);
        await c.query(`ALTER TABLE "${shadow.table(t)}" RENAME TO "${t}"`);
      }
      await c.query(
        `UPDATE herald_es_projections SET position = $1, generation = $2, status = 'live', rebuild_position = NULL, tables = $3, error = NULL, updated_at = $4 WHERE name = $5`,
        [caught.head.toString(), generation, JSON.stringify(this.#def.tables), this.#clock.now(), this.name],
      );
      return caught.head;
    });
    this.#failure = undefined;
    this.#status = 'live';
    this.#position = head;
    for (const n of [...this.#notify]) n();
    if (this.mode === 'async' && this.#loopEnded && !this.#closed) this.#loop = this.#run();
    return { events, position: head, durationMs: this.#clock.monotonic() - started };
  }

  #shadow(generation: number): Names {
    return new Names(new Map(Object.keys(this.#def.tables).map((t) => [t, `${t}__g${generation}`])));
  }

  async #tablesExist(c: pg.PoolClient, names: Names): Promise<boolean> {
    for (const t of Object.keys(this.#def.tables)) {
      const r = await c.query('SELECT to_regclass($1) IS NOT NULL AS ok', [names.table(t)]);
      if (!(r.rows[0] as { ok: boolean }).ok) return false;
    }
    return true;
  }
}
