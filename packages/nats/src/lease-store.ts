/**
 * A `LeaseStore` on a NATS KV bucket (JetStream stream `KV_<bucket>`, history 1).
 *
 * Every change is a compare-and-set on the key's revision (`kv.create` for a key never written,
 * `kv.update(key, value, revision)` otherwise): two writers racing on one lease cannot both
 * win, so epochs and fencing are real across processes and machines. A lost race is retried
 * after re-reading (bounded); a lease held live by someone else is an answer (null), not a retry.
 *
 * Keys (values are JSON):
 * - `l.<scope>.<resource>` → `{ owner, epoch, expiresAt }` (owner null once released; the
 *   epoch stays for the next owner),
 * - `m.<scope>` → `{ <member>: expiresAt, … }` (every member of a scope in one key: one read
 *   answers `members()`, which the balancer asks on every heartbeat).
 * Scopes, resources and member ids are base64url-encoded into key tokens.
 *
 * Time: expiry is wall-clock epoch ms from the injected `Clock` (default the system clock), as
 * on the other lease stores; members of one group must have roughly synchronized clocks
 * (skew eats into the lease's safety margin).
 *
 * Failure semantics: every method is atomic on its own and safe to call concurrently from many
 * processes. A NATS failure (disconnected past the request timeout, no JetStream) rejects with
 * `HERALD_ERR_STORAGE` (retryable) and changes nothing, or — for a write whose reply was lost —
 * may have applied it; the balancer's next round re-reads. After `close()` calls reject with
 * `HERALD_ERR_CLOSED`; `close()` closes the connection only when the store opened it.
 */
import { type Clock, HeraldError, isHeraldError, type LeaseFence, type LeaseGrant, type LeaseStore, systemClock } from '@herald/core';
import { JetStreamApiError, jetstream, StorageType } from '@nats-io/jetstream';
import { type KV, Kvm } from '@nats-io/kv';
import { connect, type ConnectionOptions, type NatsConnection } from '@nats-io/transport-node';
import { keyToken } from './names.ts';

export interface NatsLeaseStoreOptions {
  /** An open connection (not closed by the store). Give `connection` or `servers`. */
  readonly connection?: NatsConnection;
  /** Servers to connect to when no connection is given (default `127.0.0.1:4222`). */
  readonly servers?: string | string[];
  /** Extra connection options when the store connects itself. */
  readonly connectOptions?: Partial<ConnectionOptions>;
  /** KV bucket (default `herald_leases`); created when missing. */
  readonly bucket?: string;
  /** Replicas of a bucket this store creates (default 1; 3 on a cluster). */
  readonly replicas?: number;
  /** 'file' (default) or 'memory' storage for a bucket this store creates. */
  readonly storage?: 'file' | 'memory';
  /**
   * How long one KV request waits for its reply, ms (default 5000). A request lost in a broker
   * restart blocks its caller that long: keep it well under the lease time (the transport uses
   * max(250, leaseMs / 3)).
   */
  readonly timeoutMs?: number;
  readonly clock?: Clock;
}

interface LeaseValue {
  owner: string | null;
  epoch: number;
  expiresAt: number;
}

const MAX_CAS_ROUNDS = 64;
const WRONG_LAST_SEQUENCE = 10071;
const STREAM_NOT_FOUND = 10059;
const STREAM_NAME_IN_USE = 10058;

/** Opens (creating if needed) the KV bucket and returns the store. */
export async function createNatsLeaseStore(options: NatsLeaseStoreOptions = {}): Promise<NatsLeaseStore> {
  const owns = options.connection === undefined;
  const nc = options.connection ?? (await connect({ servers: options.servers ?? '127.0.0.1:4222', noAsyncTraces: true, ...(options.connectOptions ?? {}) }));
  try {
    const kv = await openLeaseBucket(nc, options);
    return new NatsLeaseStore(nc, kv, owns, options.clock ?? systemClock);
  } catch (e) {
    if (owns) await nc.close().catch(() => {});
    throw storage('opening the lease bucket', e);
  }
}

/**
 * Opens the lease bucket, creating it (history 1) when missing. Reads go through the stream
 * leader (no direct get): on a cluster a follower may answer a direct get with a value a few
 * milliseconds old, and `validate()` must not say yes to a fence that was just taken over.
 */
export async function openLeaseBucket(nc: NatsConnection, options: Pick<NatsLeaseStoreOptions, 'bucket' | 'replicas' | 'storage' | 'timeoutMs'> = {}): Promise<KV> {
  const js = jetstream(nc, { timeout: options.timeoutMs ?? 5000 });
  const kvm = new Kvm(js);
  const bucket = options.bucket ?? 'herald_leases';
  const jsm = await js.jetstreamManager();
  const exists = await jsm.streams.info(`KV_${bucket}`).then(
    () => true,
    (e: unknown) => {
      if (e instanceof JetStreamApiError && e.code === STREAM_NOT_FOUND) return false;
      throw e;
    },
  );
  if (!exists) {
    try {
      return await kvm.create(bucket, {
        history: 1,
        replicas: options.replicas ?? 1,
        storage: options.storage === 'memory' ? StorageType.Memory : StorageType.File,
        allow_direct: false,
      });
    } catch (e) {
      // Created meanwhile by another process (perhaps with other settings): use it as it is.
      if (!(e instanceof JetStreamApiError && e.code === STREAM_NAME_IN_USE)) throw e;
    }
  }
  return kvm.open(bucket, { allow_direct: false });
}

export class NatsLeaseStore implements LeaseStore {
  readonly #nc: NatsConnection;
  readonly #kv: KV;
  readonly #owns: boolean;
  readonly #clock: Clock;
  #closed = false;

  /** Use `createNatsLeaseStore`; this constructor takes an already opened bucket. */
  constructor(nc: NatsConnection, kv: KV, ownsConnection: boolean, clock: Clock = systemClock) {
    this.#nc = nc;
    this.#kv = kv;
    this.#owns = ownsConnection;
    this.#clock = clock;
  }

  async acquire(scope: string, resource: string, owner: string, ttlMs: number): Promise<LeaseGrant | null> {
    const key = leaseKey(scope, resource);
    return this.#cas('acquire', key, (cur) => {
      const now = this.#clock.now();
      if (cur && cur.owner !== null && cur.owner !== owner && cur.expiresAt > now) return { result: null };
      const same = cur !== undefined && cur.owner === owner && cur.expiresAt > now;
      const next: LeaseValue = { owner, epoch: same ? cur.epoch : (cur?.epoch ?? 0) + 1, expiresAt: Math.max(now + ttlMs, same ? cur.expiresAt : 0) };
      return { write: next, result: { scope, resource, owner, epoch: next.epoch, expiresAt: next.expiresAt } };
    });
  }

  async renew(fence: LeaseFence, ttlMs: number): Promise<LeaseGrant | null> {
    return this.#cas('renew', leaseKey(fence.scope, fence.resource), (cur) => {
      if (!cur || cur.owner !== fence.owner || cur.epoch !== fence.epoch) return { result: null };
      const next: LeaseValue = { owner: fence.owner, epoch: fence.epoch, expiresAt: this.#clock.now() + ttlMs };
      return { write: next, result: { scope: fence.scope, resource: fence.resource, owner: fence.owner, epoch: fence.epoch, expiresAt: next.expiresAt } };
    });
  }

  async release(fence: LeaseFence): Promise<void> {
    await this.#cas('release', leaseKey(fence.scope, fence.resource), (cur) => {
      if (!cur || cur.owner !== fence.owner || cur.epoch !== fence.epoch) return { result: undefined };
      return { write: { owner: null, epoch: cur.epoch, expiresAt: 0 }, result: undefined };
    });
  }

  async validate(fence: LeaseFence): Promise<boolean> {
    const cur = (await this.#read('validate', leaseKey(fence.scope, fence.resource))).value;
    return cur !== undefined && cur.owner === fence.owner && cur.epoch === fence.epoch;
  }

  async list(scope: string): Promise<readonly LeaseGrant[]> {
    this.#open();
    const keys: string[] = [];
    try {
      const it = await this.#kv.keys(`l.${keyToken(scope)}.*`);
      for await (const k of it) keys.push(k);
    } catch (e) {
      throw storage('list', e);
    }
    const now = this.#clock.now();
    const out: LeaseGrant[] = [];
    for (const k of keys) {
      const v = (await this.#read('list', k)).value;
      if (!v || v.owner === null || v.expiresAt <= now) continue;
      out.push({ scope, resource: Buffer.from(k.slice(k.lastIndexOf('.') + 1), 'base64url').toString('utf8'), owner: v.owner, epoch: v.epoch, expiresAt: v.expiresAt });
    }
    return out;
  }

  async heartbeat(scope: string, member: string, ttlMs: number): Promise<void> {
    await this.#casMembers('heartbeat', scope, (m, now) => {
      m[member] = Math.max(m[member] ?? 0, now + ttlMs);
      return true;
    });
  }

  async members(scope: string): Promise<readonly string[]> {
    const m = (await this.#readRaw<Record<string, number>>('members', memberKey(scope))).value ?? {};
    const now = this.#clock.now();
    return Object.keys(m)
      .filter((id) => m[id]! > now)
      .sort();
  }

  async leave(scope: string, member: string): Promise<void> {
    await this.#casMembers('leave', scope, (m) => {
      if (!(member in m)) return false;
      delete m[member];
      return true;
    });
  }

  /** Idempotent; closes the connection only when the store opened it. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#owns) await this.#nc.close().catch(() => {});
  }

  // ── internals ──────────────────────────────────────────────────────────

  #open(): void {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'NATS lease store is closed');
  }

  async #casMembers(op: string, scope: string, change: (m: Record<string, number>, now: number) => boolean): Promise<void> {
    const key = memberKey(scope);
    for (let round = 0; round < MAX_CAS_ROUNDS; round++) {
      const { value, revision } = await this.#readRaw<Record<string, number>>(op, key);
      const now = this.#clock.now();
      const m: Record<string, number> = {};
      for (const [id, exp] of Object.entries(value ?? {})) if (exp > now) m[id] = exp;
      const changed = change(m, now);
      if (!changed && Object.keys(m).length === Object.keys(value ?? {}).length) return;
      if (await this.#write(op, key, m, revision)) return;
    }
    throw new HeraldError('HERALD_ERR_STORAGE', `NATS lease store: ${op} lost ${MAX_CAS_ROUNDS} compare-and-set races in a row on ${key}`);
  }

  async #cas<R>(op: string, key: string, decide: (cur: LeaseValue | undefined) => { write?: LeaseValue; result: R }): Promise<R> {
    for (let round = 0; round < MAX_CAS_ROUNDS; round++) {
      const { value, revision } = await this.#read(op, key);
      const { write, result } = decide(value);
      if (!write) return result;
      if (await this.#write(op, key, write, revision)) return result;
    }
    throw new HeraldError('HERALD_ERR_STORAGE', `NATS lease store: ${op} lost ${MAX_CAS_ROUNDS} compare-and-set races in a row on ${key}`);
  }

  async #read(op: string, key: string): Promise<{ value: LeaseValue | undefined; revision: number }> {
    const r = await this.#readRaw<LeaseValue>(op, key);
    const v = r.value;
    if (v !== undefined && (typeof v !== 'object' || typeof v.epoch !== 'number' || typeof v.expiresAt !== 'number')) {
      throw new HeraldError('HERALD_ERR_CORRUPT_RECORD', `NATS lease store: the value of ${key} is not a lease`, { details: { key } });
    }
    return { value: v, revision: r.revision };
  }

  /** The key's JSON value and revision; revision 0 when the key was never written (or is deleted). */
  async #readRaw<T>(op: string, key: string): Promise<{ value: T | undefined; revision: number }> {
    this.#open();
    let e;
    try {
      e = await this.#kv.get(key);
    } catch (err) {
      throw storage(op, err);
    }
    if (!e) return { value: undefined, revision: 0 };
    if (e.operation !== 'PUT') return { value: undefined, revision: e.revision };
    try {
      return { value: e.json<T>(), revision: e.revision };
    } catch (cause) {
      throw new HeraldError('HERALD_ERR_CORRUPT_RECORD', `NATS lease store: the value of ${key} is not JSON`, { cause, details: { key } });
    }
  }

  /** Compare-and-set write; false when another writer got there first. */
  async #write(op: string, key: string, value: unknown, revision: number): Promise<boolean> {
    this.#open();
    try {
      if (revision === 0) await this.#kv.create(key, JSON.stringify(value));
      else await this.#kv.update(key, JSON.stringify(value), revision);
      return true;
    } catch (e) {
      if (e instanceof JetStreamApiError && e.code === WRONG_LAST_SEQUENCE) return false;
      throw storage(op, e);
    }
  }
}

function leaseKey(scope: string, resource: string): string {
  return `l.${keyToken(scope)}.${keyToken(resource)}`;
}

function memberKey(scope: string): string {
  return `m.${keyToken(scope)}`;
}

function storage(op: string, cause: unknown): HeraldError {
  if (isHeraldError(cause)) return cause;
  return new HeraldError('HERALD_ERR_STORAGE', `NATS lease store: ${op} failed: ${(cause as Error)?.message ?? String(cause)}`, { cause });
}
