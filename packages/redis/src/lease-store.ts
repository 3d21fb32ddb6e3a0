/**
 * `LeaseStore` on Redis: partition leases with fencing epochs, and group membership, shared by
 * every process connected to the same Redis.
 *
 * A lease is a key set with `SET … NX PX ttl` holding `<epoch>|<owner>`; a persistent epoch key
 * next to it keeps the last grant, so the epoch grows on every change of hands — after an
 * expiry and after a release too — and a renewal of a lease that just expired succeeds only if
 * nobody took it meanwhile. Acquire, renew, release and validate are Lua scripts (one atomic
 * compare-and-set each); see scripts.ts. Membership is a sorted set scored by expiry.
 *
 * Time: every expiry uses the Redis server's clock (`TIME` inside the scripts), so processes
 * with skewed clocks agree; `LeaseGrant.expiresAt` is in server time.
 *
 * Failure semantics: every method is one round trip (list: one script), atomic on the server
 * and safe to call concurrently from any number of processes. While Redis is unreachable a
 * call waits in ioredis's offline queue and rejects with `HERALD_ERR_STORAGE` after the
 * connection's retry budget; a rejected `renew` is NOT a lost lease (the balancer keeps trying
 * and stops dispatching when its last successful renewal is too old). Leases survive a Redis
 * restart as far as the server's persistence keeps writes (docs/reference/durability.md).
 * After `close()` every method rejects with `HERALD_ERR_CLOSED`. Keys are standalone-Redis
 * only (no Redis Cluster hash tags).
 */
import { HeraldError, type LeaseFence, type LeaseGrant, type LeaseStore } from '@herald/core';
import type { Redis } from 'ioredis';
import { connect, disconnect, type RedisConnection, storageError } from './connection.ts';
import { DEFAULT_PREFIX, type KeySpace, keySpace, leaseToken } from './keys.ts';
import { ACQUIRE, HEARTBEAT, LIST, MEMBERS, RELEASE, RENEW, type Script, VALIDATE } from './scripts.ts';

export interface RedisLeaseStoreOptions {
  /** An ioredis client to use (not closed by the store). Give `client` or `connection`, or neither for 127.0.0.1:6379. */
  readonly client?: Redis;
  /** Where to connect when the store opens its own connection. */
  readonly connection?: RedisConnection;
  /** Key prefix (default 'herald'). Stores with different prefixes never see each other's leases. */
  readonly prefix?: string;
}

export function createRedisLeaseStore(options: RedisLeaseStoreOptions = {}): RedisLeaseStore {
  return new RedisLeaseStore(options);
}

export class RedisLeaseStore implements LeaseStore {
  readonly redis: Redis;
  readonly keys: KeySpace;
  readonly #owned: boolean;
  #closed = false;

  constructor(options: RedisLeaseStoreOptions = {}) {
    if (options.client && options.connection !== undefined) {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'RedisLeaseStore takes `client` or `connection`, not both');
    }
    this.redis = options.client ?? connect(options.connection, 'herald-leases');
    this.#owned = options.client === undefined;
    this.keys = keySpace(options.prefix ?? DEFAULT_PREFIX);
  }

  async acquire(scope: string, resource: string, owner: string, ttlMs: number): Promise<LeaseGrant | null> {
    const k = this.keys;
    const r = (await this.#run(ACQUIRE, [k.lease(scope, resource), k.epoch(scope, resource), k.leaseIndex(scope)], [owner, ttl(ttlMs), encodeURIComponent(resource)])) as [number, number] | null;
    if (!r) return null;
    return { scope, resource, owner, epoch: Number(r[0]), expiresAt: Number(r[1]) };
  }

  async renew(fence: LeaseFence, ttlMs: number): Promise<LeaseGrant | null> {
    const k = this.keys;
    const r = await this.#run(RENEW, [k.lease(fence.scope, fence.resource), k.epoch(fence.scope, fence.resource)], [leaseToken(fence.epoch, fence.owner), ttl(ttlMs)]);
    if (r === null || r === undefined) return null;
    return { scope: fence.scope, resource: fence.resource, owner: fence.owner, epoch: fence.epoch, expiresAt: Number(r) };
  }

  async release(fence: LeaseFence): Promise<void> {
    const k = this.keys;
    await this.#run(RELEASE, [k.lease(fence.scope, fence.resource), k.epoch(fence.scope, fence.resource)], [leaseToken(fence.epoch, fence.owner)]);
  }

  async validate(fence: LeaseFence): Promise<boolean> {
    const k = this.keys;
    return (await this.#run(VALIDATE, [k.lease(fence.scope, fence.resource), k.epoch(fence.scope, fence.resource)], [leaseToken(fence.epoch, fence.owner)])) === 1;
  }

  async list(scope: string): Promise<readonly LeaseGrant[]> {
    const k = this.keys;
    // The index holds encoded resources; the lease key of resource R is this prefix + encodeURIComponent(R).
    const leasePrefix = k.lease(scope, '');
    const flat = (await this.#run(LIST, [k.leaseIndex(scope)], [leasePrefix])) as string[];
    const out: LeaseGrant[] = [];
    for (let i = 0; i + 2 < flat.length; i += 3) {
      const resource = decodeURIComponent(String(flat[i]));
      const value = String(flat[i + 1]);
      const bar = value.indexOf('|');
      out.push({ scope, resource, owner: value.slice(bar + 1), epoch: Number(value.slice(0, bar)), expiresAt: Number(flat[i + 2]) });
    }
    return out.sort((a, b) => (a.resource < b.resource ? -1 : a.resource > b.resource ? 1 : 0));
  }

  async heartbeat(scope: string, member: string, ttlMs: number): Promise<void> {
    await this.#run(HEARTBEAT, [this.keys.members(scope)], [member, ttl(ttlMs)]);
  }

  async members(scope: string): Promise<readonly string[]> {
    const r = (await this.#run(MEMBERS, [this.keys.members(scope)], [])) as string[];
    return r.map(String).sort();
  }

  async leave(scope: string, member: string): Promise<void> {
    this.#open();
    try {
      await this.redis.zrem(this.keys.members(scope), member);
    } catch (e) {
      throw storageError(e, 'lease leave');
    }
  }

  /** Idempotent. Closes the connection only when the store opened it. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#owned) await disconnect(this.redis);
  }

  async #run(script: Script, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    this.#open();
    try {
      return await script.run(this.redis, keys, args);
    } catch (e) {
      throw storageError(e, `lease ${script.name}`);
    }
  }

  #open(): void {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'redis lease store is closed');
  }
}

function ttl(ttlMs: number): number {
  // Like MemoryLeaseStore, 0 or a negative TTL is accepted (the lease or membership is born expired).
  if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `ttlMs must be a finite number of milliseconds (got ${ttlMs})`);
  return Math.ceil(ttlMs);
}
