/**
 * `LeaseStore` on the Herald SQLite file: leases and group membership shared by every
 * process that opens the file. Same semantics as core's `MemoryLeaseStore`: the epoch grows
 * when a lease changes hands (or is re-taken after it expired), renewal succeeds only for the
 * current owner and epoch (even just after expiry, as long as nobody took it), release keeps
 * the epoch for the next owner, members live for their TTL.
 *
 * Expiry uses the wall clock of the injected `Clock` (`now()`); processes sharing a file must
 * have roughly synchronised clocks (they do on one machine). Every method is one short
 * `BEGIN IMMEDIATE` transaction (or one read), atomic across processes and safe to call
 * concurrently; waiting for another process's write lock does not block the event loop. After `close()` every method rejects with `HERALD_ERR_CLOSED`.
 */
import { type Clock, HeraldError, type LeaseFence, type LeaseGrant, type LeaseStore, systemClock } from '@herald/core';
import type { Statement } from 'better-sqlite3';
import { type DatabaseSource, resolveDatabase, type SqliteDatabase } from './database.ts';

export type SqliteLeaseStoreOptions = DatabaseSource & { readonly clock?: Clock };

interface LeaseRow {
  owner: string | null;
  epoch: number;
  expires_at: number;
}

export class SqliteLeaseStore implements LeaseStore {
  readonly database: SqliteDatabase;
  readonly #owned: boolean;
  readonly #clock: Clock;
  #closed = false;
  readonly #s: {
    get: Statement<[string, string], LeaseRow>;
    upsert: Statement<[string, string, string, number, number]>;
    renew: Statement<[number, string, string, string, number]>;
    release: Statement<[string, string, string, number]>;
    list: Statement<[string, number], { resource: string; owner: string; epoch: number; expires_at: number }>;
    beat: Statement<[string, string, number]>;
    prune: Statement<[string, number]>;
    members: Statement<[string, number], { member: string }>;
    leave: Statement<[string, string]>;
  };

  constructor(options: SqliteLeaseStoreOptions) {
    const { database, owned } = resolveDatabase(options);
    this.database = database;
    this.#owned = owned;
    this.#clock = options.clock ?? systemClock;
    const db = database.db;
    this.#s = {
      get: db.prepare(`SELECT owner, epoch, expires_at FROM herald_leases WHERE scope = ? AND resource = ?`),
      upsert: db.prepare(
        `INSERT INTO herald_leases (scope, resource, owner, epoch, expires_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (scope, resource) DO UPDATE SET owner = excluded.owner, epoch = excluded.epoch, expires_at = excluded.expires_at`,
      ),
      renew: db.prepare(`UPDATE herald_leases SET expires_at = ? WHERE scope = ? AND resource = ? AND owner = ? AND epoch = ?`),
      release: db.prepare(`UPDATE herald_leases SET owner = NULL, expires_at = 0 WHERE scope = ? AND resource = ? AND owner = ? AND epoch = ?`),
      list: db.prepare(`SELECT resource, owner, epoch, expires_at FROM herald_leases WHERE scope = ? AND owner IS NOT NULL AND expires_at > ? ORDER BY resource`),
      beat: db.prepare(
        `INSERT INTO herald_members (scope, member, expires_at) VALUES (?, ?, ?)
         ON CONFLICT (scope, member) DO UPDATE SET expires_at = excluded.expires_at`,
      ),
      prune: db.prepare(`DELETE FROM herald_members WHERE scope = ? AND expires_at <= ?`),
      members: db.prepare(`SELECT member FROM herald_members WHERE scope = ? AND expires_at > ? ORDER BY member`),
      leave: db.prepare(`DELETE FROM herald_members WHERE scope = ? AND member = ?`),
    };
  }

  async acquire(scope: string, resource: string, owner: string, ttlMs: number): Promise<LeaseGrant | null> {
    this.#open();
    checkTtl(ttlMs);
    return this.database.immediateAsync(() => {
      const now = this.#clock.now();
      const cur = this.#s.get.get(scope, resource);
      if (cur && cur.owner !== null && cur.owner !== owner && cur.expires_at > now) return null;
      const sameHolder = cur !== undefined && cur.owner === owner && cur.expires_at > now;
      const epoch = sameHolder ? cur.epoch : (cur?.epoch ?? 0) + 1;
      const expiresAt = now + ttlMs;
      this.#s.upsert.run(scope, resource, owner, epoch, expiresAt);
      return { scope, resource, owner, epoch, expiresAt };
    });
  }

  async renew(fence: LeaseFence, ttlMs: number): Promise<LeaseGrant | null> {
    this.#open();
    checkTtl(ttlMs);
    return this.database.immediateAsync(() => {
      const expiresAt = this.#clock.now() + ttlMs;
      const r = this.#s.renew.run(expiresAt, fence.scope, fence.resource, fence.owner, fence.epoch);
      return r.changes === 1 ? { scope: fence.scope, resource: fence.resource, owner: fence.owner, epoch: fence.epoch, expiresAt } : null;
    });
  }

  async release(fence: LeaseFence): Promise<void> {
    this.#open();
    await this.database.immediateAsync(() => {
      this.#s.release.run(fence.scope, fence.resource, fence.owner, fence.epoch);
    });
  }

  async validate(fence: LeaseFence): Promise<boolean> {
    return this.validateSync(fence);
  }

  /** Synchronous check; inside a write transaction on the same file it is atomic with the write. */
  validateSync(fence: LeaseFence): boolean {
    this.#open();
    return this.database.read(() => isCurrent(this.#s.get.get(fence.scope, fence.resource), fence));
  }

  async list(scope: string): Promise<readonly LeaseGrant[]> {
    this.#open();
    const now = this.#clock.now();
    return this.database.read(() =>
      this.#s.list.all(scope, now).map((r) => ({ scope, resource: r.resource, owner: r.owner, epoch: r.epoch, expiresAt: r.expires_at })),
    );
  }

  async heartbeat(scope: string, member: string, ttlMs: number): Promise<void> {
    this.#open();
    checkTtl(ttlMs);
    await this.database.immediateAsync(() => {
      const now = this.#clock.now();
      this.#s.beat.run(scope, member, now + ttlMs);
      this.#s.prune.run(scope, now);
    });
  }

  async members(scope: string): Promise<readonly string[]> {
    this.#open();
    const now = this.#clock.now();
    return this.database.read(() => this.#s.members.all(scope, now).map((r) => r.member));
  }

  async leave(scope: string, member: string): Promise<void> {
    this.#open();
    await this.database.immediateAsync(() => {
      this.#s.leave.run(scope, member);
    });
  }

  /** Idempotent. Closes the database only when this store opened it from a path. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#owned) this.database.close();
  }

  #open(): void {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'lease store is closed');
    this.database.assertOpen();
  }
}

/** Whether `row` (a herald_leases row) is held by `fence`'s owner at `fence`'s epoch. */
export function isCurrent(row: { owner: string | null; epoch: number } | undefined, fence: LeaseFence): boolean {
  return row !== undefined && row.owner === fence.owner && row.epoch === fence.epoch;
}

/** The fenced-write check every store on the file runs inside its write transaction. */
export function assertFence(database: SqliteDatabase, fence: LeaseFence): void {
  const row = database.statement(`SELECT owner, epoch FROM herald_leases WHERE scope = ? AND resource = ?`).get(fence.scope, fence.resource) as
    | { owner: string | null; epoch: number }
    | undefined;
  if (!isCurrent(row, fence)) throw leaseLost(fence, row);
}

export function leaseLost(fence: LeaseFence, row: { owner: string | null; epoch: number } | undefined): HeraldError {
  return new HeraldError(
    'HERALD_ERR_LEASE_LOST',
    `write refused: lease ${fence.scope}/${fence.resource} epoch ${fence.epoch} of "${fence.owner}" is no longer current` +
      (row
        ? ` (now ${row.owner === null ? 'released' : `"${row.owner}"`} at epoch ${row.epoch})`
        : ' (no such lease in this database file: fenced writes must use the file the leases live in, or a fenceCheck)'),
    { details: { ...fence, currentOwner: row?.owner ?? null, currentEpoch: row?.epoch ?? null } },
  );
}

function checkTtl(ttlMs: number): void {
  // Like MemoryLeaseStore, 0 or a negative TTL is accepted (the lease or membership is born expired).
  if (!Number.isFinite(ttlMs)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `ttlMs must be a finite number of milliseconds (got ${ttlMs})`);
}
