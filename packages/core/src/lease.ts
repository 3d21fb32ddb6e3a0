/**
 * Partition ownership by fenced leases. Where the broker does not assign partitions to group
 * members (SQLite, PostgreSQL, NATS 2.9, Redis Streams), members divide them through a
 * `LeaseStore`: one reader per (group, partition).
 *
 * Each lease has an epoch that grows every time the lease changes hands. Offset, dead-letter
 * and park writes carry the `LeaseFence` they were made under and succeed only while that
 * owner and epoch are still current (fencing). A member stops dispatching a partition when
 * its last successful renewal is older than `leaseMs − marginMs` on the monotonic clock.
 */
import { type Clock, systemClock } from './clock.ts';
import { HeraldError } from './errors.ts';

export interface LeaseFence {
  /** e.g. `transport:<topic>:<group>` */
  readonly scope: string;
  /** e.g. the partition number as a string */
  readonly resource: string;
  readonly owner: string;
  readonly epoch: number;
}

export interface LeaseGrant extends LeaseFence {
  /** Wall-clock expiry, epoch ms (the store's clock). */
  readonly expiresAt: number;
}

/**
 * Storage for leases and group membership. Every method is atomic on its own and safe to call
 * concurrently from many processes sharing the store.
 */
export interface LeaseStore {
  /**
   * Takes the lease when it is free, expired or already `owner`'s. A change of hands
   * increments the epoch; re-acquiring one's own live lease keeps it. Null when another
   * owner holds a live lease.
   */
  acquire(scope: string, resource: string, owner: string, ttlMs: number): Promise<LeaseGrant | null>;
  /** Extends a lease still held at `fence.epoch` by `fence.owner` (even if just expired, as long as nobody took it). Null when lost. */
  renew(fence: LeaseFence, ttlMs: number): Promise<LeaseGrant | null>;
  /** Gives the lease up if still held under `fence`; the epoch is kept for the next owner. Idempotent. */
  release(fence: LeaseFence): Promise<void>;
  /** Whether `fence` is still the current owner and epoch. */
  validate(fence: LeaseFence): Promise<boolean>;
  /** Current live leases in `scope`. */
  list(scope: string): Promise<readonly LeaseGrant[]>;
  /** Records that `member` is alive in `scope` for `ttlMs`. */
  heartbeat(scope: string, member: string, ttlMs: number): Promise<void>;
  /** Live members of `scope`, sorted. */
  members(scope: string): Promise<readonly string[]>;
  /** Removes `member` from `scope` at once (clean leave). */
  leave(scope: string, member: string): Promise<void>;
  close(): Promise<void>;
}

interface MemoryLease {
  owner: string | null;
  epoch: number;
  expiresAt: number;
}

/** In-process LeaseStore (tests, the memory transport). */
export class MemoryLeaseStore implements LeaseStore {
  readonly #leases = new Map<string, MemoryLease>();
  readonly #members = new Map<string, Map<string, number>>();
  readonly #clock: Clock;

  constructor(options: { clock?: Clock } = {}) {
    this.#clock = options.clock ?? systemClock;
  }

  async acquire(scope: string, resource: string, owner: string, ttlMs: number): Promise<LeaseGrant | null> {
    const key = `${scope}\u0000${resource}`;
    const now = this.#clock.now();
    const cur = this.#leases.get(key);
    if (cur && cur.owner !== null && cur.owner !== owner && cur.expiresAt > now) return null;
    const sameHolder = cur !== undefined && cur.owner === owner && cur.expiresAt > now;
    const next: MemoryLease = { owner, epoch: sameHolder ? cur.epoch : (cur?.epoch ?? 0) + 1, expiresAt: now + ttlMs };
    this.#leases.set(key, next);
    return { scope, resource, owner, epoch: next.epoch, expiresAt: next.expiresAt };
  }

  async renew(fence: LeaseFence, ttlMs: number): Promise<LeaseGrant | null> {
    const cur = this.#leases.get(`${fence.scope}\u0000${fence.resource}`);
    if (!cur || cur.owner !== fence.owner || cur.epoch !== fence.epoch) return null;
    cur.expiresAt = this.#clock.now() + ttlMs;
    return { ...fence, expiresAt: cur.expiresAt };
  }

  async release(fence: LeaseFence): Promise<void> {
    const cur = this.#leases.get(`${fence.scope}\u0000${fence.resource}`);
    if (cur && cur.owner === fence.owner && cur.epoch === fence.epoch) {
      cur.owner = null;
      cur.expiresAt = 0;
    }
  }

  async validate(fence: LeaseFence): Promise<boolean> {
    return this.validateSync(fence);
  }

  /** Synchronous check, for stores that live in the same process. */
  validateSync(fence: LeaseFence): boolean {
    const cur = this.#leases.get(`${fence.scope}\u0000${fence.resource}`);
    return cur !== undefined && cur.owner === fence.owner && cur.epoch === fence.epoch;
  }

  async list(scope: string): Promise<readonly LeaseGrant[]> {
    const now = this.#clock.now();
    const out: LeaseGrant[] = [];
    for (const [key, l] of this.#leases) {
      const [s, resource] = key.split('\u0000') as [string, string];
      if (s === scope && l.owner !== null && l.expiresAt > now) out.push({ scope, resource, owner: l.owner, epoch: l.epoch, expiresAt: l.expiresAt });
    }
    return out;
  }

  async heartbeat(scope: string, member: string, ttlMs: number): Promise<void> {
    let m = this.#members.get(scope);
    if (!m) this.#members.set(scope, (m = new Map()));
    m.set(member, this.#clock.now() + ttlMs);
  }

  async members(scope: string): Promise<readonly string[]> {
    const now = this.#clock.now();
    const m = this.#members.get(scope);
    if (!m) return [];
    return [...m].filter(([, exp]) => exp > now).map(([id]) => id).sort();
  }

  async leave(scope: string, member: string): Promise<void> {
    this.#members.get(scope)?.delete(member);
  }

  async close(): Promise<void> {}
}

export interface PartitionBalancerOptions {
  readonly store: LeaseStore;
  /** Lease scope, one per (topic, group). */
  readonly scope: string;
  readonly memberId: string;
  readonly partitions: number;
  /** Lease time to live (default 10 000 ms). */
  readonly leaseMs?: number;
  /** Renew / rebalance period (default leaseMs / 3). */
  readonly heartbeatMs?: number;
  /** Safety margin: stop dispatching when the last renewal is older than leaseMs − marginMs (default leaseMs / 5). */
  readonly marginMs?: number;
  readonly clock?: Clock;
  /** A partition was taken: start reading it under `grant`. */
  readonly onAssigned: (partition: number, grant: LeaseGrant) => void;
  /**
   * A partition is being given away cleanly (rebalance or close): stop reading, drain and
   * commit, then resolve; the lease is released afterwards.
   */
  readonly onRevoke: (partition: number) => Promise<void>;
  /** A partition was lost (renewal failed or too late): stop at once, commit nothing more. */
  readonly onLost: (partition: number) => void;
  /** A store call failed; the balancer keeps going. */
  readonly onError?: (error: unknown) => void;
}

/**
 * Divides a topic's partitions among a group's live members: partition p belongs to the
 * member at index p mod n of the sorted live member list. Members join and leave through
 * heartbeats, so partitions move both when a member joins and when one leaves or dies.
 */
export class PartitionBalancer {
  readonly #o: Required<Omit<PartitionBalancerOptions, 'onError'>> & Pick<PartitionBalancerOptions, 'onError'>;
  readonly #owned = new Map<number, LeaseGrant>();
  readonly #revoking = new Set<number>();
  #lastRenewStart = Number.NEGATIVE_INFINITY;
  #timer: { cancel(): void } | undefined;
  #running = false;
  #stopped = false;
  #tickPromise: Promise<void> | undefined;

  constructor(options: PartitionBalancerOptions) {
    const leaseMs = options.leaseMs ?? 10_000;
    if (!(leaseMs > 0)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `leaseMs must be > 0 (got ${leaseMs})`);
    this.#o = {
      ...options,
      leaseMs,
      heartbeatMs: options.heartbeatMs ?? Math.max(10, Math.floor(leaseMs / 3)),
      marginMs: options.marginMs ?? Math.floor(leaseMs / 5),
      clock: options.clock ?? systemClock,
    };
  }

  get leaseMs(): number {
    return this.#o.leaseMs;
  }

  /** Starts heartbeating and balancing. The first tick runs at once. */
  start(): Promise<void> {
    if (this.#running) return this.#tickPromise ?? Promise.resolve();
    this.#running = true;
    return this.#schedule(0);
  }

  /** Partitions owned now, with their grants. */
  owned(): ReadonlyMap<number, LeaseGrant> {
    return this.#owned;
  }

  fence(partition: number): LeaseGrant | undefined {
    return this.#owned.get(partition);
  }

  /** Whether this member may still dispatch and commit for `partition` (owned, renewed recently enough). */
  isSafe(partition: number): boolean {
    return this.#owned.has(partition) && this.#o.clock.monotonic() - this.#lastRenewStart < this.#o.leaseMs - this.#o.marginMs;
  }

  /** Runs one balancing round now (tests and wake-ups). */
  tick(): Promise<void> {
    if (!this.#tickPromise) {
      this.#tickPromise = this.#round().finally(() => {
        this.#tickPromise = undefined;
      });
    }
    return this.#tickPromise;
  }

  /**
   * Forgets `partition` without releasing it: its reader found the lease gone (a fenced write
   * was refused). The next round takes it again, under a new epoch, if it is still this
   * member's share.
   */
  forget(partition: number): void {
    this.#owned.delete(partition);
  }

  /** Gives up every partition cleanly (draining each), leaves the group. Idempotent. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#running = false;
    this.#timer?.cancel();
    await this.#tickPromise?.catch(() => {});
    const { store, scope, memberId } = this.#o;
    await Promise.all([...this.#owned.keys()].map((p) => this.#giveUp(p)));
    await store.leave(scope, memberId).catch((e) => this.#o.onError?.(e));
  }

  #schedule(delayMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#timer = this.#o.clock.setTimer(() => {
        if (!this.#running) return resolve();
        this.tick().then(resolve, resolve).finally(() => {
          if (this.#running) void this.#schedule(this.#o.heartbeatMs);
        });
      }, delayMs, { unref: true });
    });
  }

  async #round(): Promise<void> {
    const { store, scope, memberId, partitions, leaseMs, clock } = this.#o;
    try {
      const renewStart = clock.monotonic();
      await store.heartbeat(scope, memberId, leaseMs);
      // Renew what we hold; a failed renewal means the partition is lost.
      let allRenewed = true;
      await Promise.all(
        [...this.#owned].map(async ([p, grant]) => {
          const renewed = await store.renew(grant, leaseMs);
          if (renewed) this.#owned.set(p, renewed);
          else {
            allRenewed = false;
            this.#owned.delete(p);
            this.#o.onLost(p);
          }
        }),
      );
      if (allRenewed || this.#owned.size > 0) this.#lastRenewStart = renewStart;
      if (this.#stopped) return;

      const live = new Set(await store.members(scope));
      live.add(memberId);
      const members = [...live].sort();
      const me = members.indexOf(memberId);
      const desired = new Set<number>();
      for (let p = 0; p < partitions; p++) if (p % members.length === me) desired.add(p);

      // Give away what now belongs to someone else (clean revoke), take what is ours and free.
      for (const p of [...this.#owned.keys()]) if (!desired.has(p)) void this.#giveUp(p);
      await Promise.all(
        [...desired]
          .filter((p) => !this.#owned.has(p) && !this.#revoking.has(p))
          .map(async (p) => {
            const grant = await store.acquire(scope, String(p), memberId, leaseMs);
            if (grant && !this.#stopped) {
              this.#owned.set(p, grant);
              this.#o.onAssigned(p, grant);
            } else if (grant) await store.release(grant);
          }),
      );
    } catch (e) {
      this.#o.onError?.(e);
    }
  }

  async #giveUp(p: number): Promise<void> {
    if (this.#revoking.has(p)) return;
    const grant = this.#owned.get(p);
    if (!grant) return;
    this.#revoking.add(p);
    try {
      await this.#o.onRevoke(p);
    } catch (e) {
      this.#o.onError?.(e);
    }
    this.#owned.delete(p);
    this.#revoking.delete(p);
    await this.#o.store.release(grant).catch((e) => this.#o.onError?.(e));
  }
}
