/**
 * `LeaseStore` on PostgreSQL (`herald_leases`, `herald_members` in the schema): leases and
 * group membership shared by every process connected to the schema. Same semantics as core's
 * `MemoryLeaseStore`: the epoch grows when a lease changes hands (or is re-taken after it
 * expired), renewal succeeds only for the current owner and epoch (even just after expiry, as
 * long as nobody took it), release keeps the epoch for the next owner, members live for their
 * TTL.
 *
 * Expiry uses the wall clock of the injected `Clock` (`now()`); processes sharing a schema must
 * have roughly synchronised clocks. Every method is ONE statement (atomic: the row lock of an
 * `INSERT … ON CONFLICT DO UPDATE … WHERE` decides races between processes) and safe to call
 * concurrently. Fenced writes of the other stores check the lease row in their own transaction
 * with `FOR SHARE` (`assertFence`), so an acquire by a new owner waits for a write made under
 * the old epoch to commit, or the write sees the new epoch and is refused. Server failures are
 * `HERALD_ERR_STORAGE` (retryable). After `close()` every method rejects with `HERALD_ERR_CLOSED`.
 */
import { type Clock, HeraldError, type LeaseFence, type LeaseGrant, type LeaseStore, systemClock } from '@herald/core';
import type pg from 'pg';
import { type PgDatabase, type PgDatabaseSource, resolveDatabase } from './database.ts';
import { ensureMigrated } from './migrations.ts';
import { LOG_COMPONENT } from './schema.ts';

export type PostgresLeaseStoreOptions = PgDatabaseSource & { readonly clock?: Clock };

export class PostgresLeaseStore implements LeaseStore {
  readonly database: PgDatabase;
  readonly #owned: boolean;
  readonly #clock: Clock;
  readonly #ready: Promise<void>;
  #closed = false;

  constructor(options: PostgresLeaseStoreOptions) {
    const { database, owned } = resolveDatabase(options);
    this.database = database;
    this.#owned = owned;
    this.#clock = options.clock ?? systemClock;
    this.#ready = ensureMigrated(database, [LOG_COMPONENT]);
    this.#ready.catch(() => {});
  }

  async acquire(scope: string, resource: string, owner: string, ttlMs: number): Promise<LeaseGrant | null> {
    await this.#enter();
    checkTtl(ttlMs);
    const now = this.#clock.now();
    const expiresAt = Math.floor(now + ttlMs);
    const r = await this.database.query<{ epoch: string }>(
      `INSERT INTO herald_leases AS l (scope, resource, owner, epoch, expires_at) VALUES ($1, $2, $3, 1, $5)
       ON CONFLICT (scope, resource) DO UPDATE SET
         owner = excluded.owner,
         epoch = CASE WHEN l.owner = excluded.owner AND l.expires_at > $4 THEN l.epoch ELSE l.epoch + 1 END,
         expires_at = excluded.expires_at
       WHERE l.owner IS NULL OR l.owner = excluded.owner OR l.expires_at <= $4
       RETURNING epoch`,
      [scope, resource, owner, now, expiresAt],
    );
    const row = r.rows[0];
    return row ? { scope, resource, owner, epoch: Number(row.epoch), expiresAt } : null;
  }

  async renew(fence: LeaseFence, ttlMs: number): Promise<LeaseGrant | null> {
    await this.#enter();
    checkTtl(ttlMs);
    const expiresAt = Math.floor(this.#clock.now() + ttlMs);
    const r = await this.database.query(`UPDATE herald_leases SET expires_at = $1 WHERE scope = $2 AND resource = $3 AND owner = $4 AND epoch = $5`, [
      expiresAt,
      fence.scope,
      fence.resource,
      fence.owner,
      fence.epoch,
    ]);
    return r.rowCount === 1 ? { scope: fence.scope, resource: fence.resource, owner: fence.owner, epoch: fence.epoch, expiresAt } : null;
  }

  async release(fence: LeaseFence): Promise<void> {
    await this.#enter();
    await this.database.query(`UPDATE herald_leases SET owner = NULL, expires_at = 0 WHERE scope = $1 AND resource = $2 AND owner = $3 AND epoch = $4`, [
      fence.scope,
      fence.resource,
      fence.owner,
      fence.epoch,
    ]);
  }

  async validate(fence: LeaseFence): Promise<boolean> {
    await this.#enter();
    const r = await this.database.query<{ owner: string | null; epoch: string }>(`SELECT owner, epoch FROM herald_leases WHERE scope = $1 AND resource = $2`, [fence.scope, fence.resource]);
    return isCurrent(r.rows[0], fence);
  }

  async list(scope: string): Promise<readonly LeaseGrant[]> {
    await this.#enter();
    const r = await this.database.query<{ resource: string; owner: string; epoch: string; expires_at: string }>(
      `SELECT resource, owner, epoch, expires_at FROM herald_leases WHERE scope = $1 AND owner IS NOT NULL AND expires_at > $2 ORDER BY resource`,
      [scope, this.#clock.now()],
    );
    return r.rows.map((x) => ({ scope, resource: x.resource, owner: x.owner, epoch: Number(x.epoch), expiresAt: Number(x.expires_at) }));
  }

  async heartbeat(scope: string, member: string, ttlMs: number): Promise<void> {
    await this.#enter();
    checkTtl(ttlMs);
    const now = this.#clock.now();
    await this.database.query(
      `WITH beat AS (INSERT INTO herald_members (scope, member, expires_at) VALUES ($1, $2, $3)
                     ON CONFLICT (scope, member) DO UPDATE SET expires_at = excluded.expires_at RETURNING 1)
       DELETE FROM herald_members WHERE scope = $1 AND member <> $2 AND expires_at <= $4`,
      [scope, member, Math.floor(now + ttlMs), now],
    );
  }

  async members(scope: string): Promise<readonly string[]> {
    await this.#enter();
    const r = await this.database.query<{ member: string }>(`SELECT member FROM herald_members WHERE scope = $1 AND expires_at > $2 ORDER BY member`, [scope, this.#clock.now()]);
    return r.rows.map((x) => x.member);
  }

  async leave(scope: string, member: string): Promise<void> {
    await this.#enter();
    await this.database.query(`DELETE FROM herald_members WHERE scope = $1 AND member = $2`, [scope, member]);
  }

  /** Idempotent. Closes the pool only when this store opened it from connection options. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#owned) await this.database.close();
  }

  async #enter(): Promise<void> {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'lease store is closed');
    await this.#ready;
    this.database.assertOpen();
  }
}

/** Whether `row` is held by `fence`'s owner at `fence`'s epoch. */
export function isCurrent(row: { owner: string | null; epoch: string | number } | undefined, fence: LeaseFence): boolean {
  return row !== undefined && row.owner === fence.owner && Number(row.epoch) === fence.epoch;
}

/**
 * The fenced-write check the other stores run inside their write transaction: the lease row is
 * read `FOR SHARE`, so it cannot change hands until that transaction ends.
 */
export async function assertFence(client: pg.PoolClient, fence: LeaseFence): Promise<void> {
  const r = await client.query<{ owner: string | null; epoch: string }>(`SELECT owner, epoch FROM herald_leases WHERE scope = $1 AND resource = $2 FOR SHARE`, [
    fence.scope,
    fence.resource,
  ]);
  if (!isCurrent(r.rows[0], fence)) throw leaseLost(fence, r.rows[0]);
}

export function leaseLost(fence: LeaseFence, row: { owner: string | null; epoch: string | number } | undefined): HeraldError {
  return new HeraldError(
    'HERALD_ERR_LEASE_LOST',
    `write refused: lease ${fence.scope}/${fence.resource} epoch ${fence.epoch} of "${fence.owner}" is no longer current` +
      (row ? ` (now ${row.owner === null ? 'released' : `"${row.owner}"`} at epoch ${row.epoch})` : ' (no such lease in this schema: fenced writes must use the schema the leases live in, or a fenceCheck)'),
    { details: { ...fence, currentOwner: row?.owner ?? null, currentEpoch: row === undefined ? null : Number(row.epoch) } },
  );
}

function checkTtl(ttlMs: number): void {
  // Like MemoryLeaseStore, 0 or a negative TTL is accepted (the lease or membership is born expired).
  if (!Number.isFinite(ttlMs)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `ttlMs must be a finite number of milliseconds (got ${ttlMs})`);
}
