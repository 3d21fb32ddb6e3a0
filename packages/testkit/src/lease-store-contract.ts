/**
 * The LeaseStore contract: what every lease store (memory, SQLite, PostgreSQL, NATS KV,
 * Redis) must do for partition ownership with fencing to be correct.
 *
 *   describeLeaseStoreContract('sqlite', async () => {
 *     const store = openSqliteLeaseStore(tmpFile());
 *     return { store, cleanup: () => store.close() };
 *   });
 *
 * Give a `ManualClock` as `clock` when the store reads its time from an injected clock: expiry
 * is then driven by `clock.advance()`. Without one the suite uses real time with short TTLs
 * (150 ms) for leases meant to expire and long ones (10 s) for leases meant to stay live.
 * Every scenario uses its own random scope, so scenarios may share one backing store.
 */
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import type { Clock, LeaseGrant, LeaseStore } from '@herald/core';
import { sleep, stressCount, uniqueName, withScope } from './helpers.ts';
import type { ManualClock } from './manual-clock.ts';

export interface LeaseStoreHarness {
  readonly store: LeaseStore;
  /** The clock the store reads; a ManualClock makes expiry deterministic. Omit (or pass a real clock) for real time. */
  readonly clock?: ManualClock | Clock;
  /** Closes the store and removes what the factory created. Called once per scenario, passed or failed. */
  cleanup(): Promise<void>;
}

export type LeaseStoreFactory = () => Promise<LeaseStoreHarness>;

/** Short TTL: a lease given this TTL is expected to expire within the scenario. */
export const SHORT_TTL_MS = 150;
/** Long TTL: a lease given this TTL must stay live for the whole scenario. */
export const LONG_TTL_MS = 10_000;

interface Ctx {
  readonly store: LeaseStore;
  readonly scope: string;
  /** Lets SHORT_TTL_MS (and a margin) pass: manual clock advance, or a real sleep. */
  expireShort(): Promise<void>;
  /** The store's notion of now, when known (manual clock); else Date.now(). */
  now(): number;
  readonly manual: boolean;
}

async function run(factory: LeaseStoreFactory, body: (c: Ctx) => Promise<void>): Promise<void> {
  await withScope(async (scope) => {
    const h = await factory();
    scope.defer('lease store cleanup', () => h.cleanup());
    // Duck-typed, so a ManualClock from another copy of the testkit works too.
    const manual = typeof (h.clock as Partial<ManualClock> | undefined)?.advance === 'function' ? (h.clock as ManualClock) : undefined;
    await body({
      store: h.store,
      scope: uniqueName('lease'),
      manual: manual !== undefined,
      now: () => (manual ? manual.now() : Date.now()),
      expireShort: async () => {
        if (manual) await manual.advance(SHORT_TTL_MS + 1);
        else await sleep(SHORT_TTL_MS + 75);
      },
    });
  });
}

function assertGrant(g: LeaseGrant | null, want: { scope: string; resource: string; owner: string }, label: string): asserts g is LeaseGrant {
  assert.ok(g, `${label}: expected a grant, got null`);
  assert.equal(g.scope, want.scope, `${label}: scope`);
  assert.equal(g.resource, want.resource, `${label}: resource`);
  assert.equal(g.owner, want.owner, `${label}: owner`);
  assert.ok(Number.isSafeInteger(g.epoch) && g.epoch >= 1, `${label}: epoch must be an integer >= 1 (got ${g.epoch})`);
  assert.ok(Number.isFinite(g.expiresAt), `${label}: expiresAt must be a number (got ${g.expiresAt})`);
}

type Scenario = (t: TestContext, factory: LeaseStoreFactory) => Promise<void>;

export const acquiresFreeLease: Scenario = (_t, factory) =>
  run(factory, async ({ store, scope, now, manual }) => {
    const before = now();
    const g = await store.acquire(scope, '0', 'owner-a', LONG_TTL_MS);
    assertGrant(g, { scope, resource: '0', owner: 'owner-a' }, 'acquire of a free lease');
    if (manual) assert.equal(g.expiresAt, before + LONG_TTL_MS, 'expiresAt = clock.now() + ttl');
    else assert.ok(Math.abs(g.expiresAt - (before + LONG_TTL_MS)) < 2000, `expiresAt ${g.expiresAt} should be about now + ttl (${before + LONG_TTL_MS})`);
    assert.equal(await store.validate(g), true, 'the fresh grant validates');
  });

export const refusesAnotherOwnerWhileLive: Scenario = (_t, factory) =>
  run(factory, async ({ store, scope }) => {
    const a = await store.acquire(scope, '0', 'owner-a', LONG_TTL_MS);
    assertGrant(a, { scope, resource: '0', owner: 'owner-a' }, 'first acquire');
    assert.equal(await store.acquire(scope, '0', 'owner-b', LONG_TTL_MS), null, 'another owner is refused while the lease is live');
    assert.equal(await store.validate(a), true, 'the holder is still current');
  });

export const reacquireOwnLiveLeaseKeepsEpoch: Scenario = (_t, factory) =>
  run(factory, async ({ store, scope }) => {
    const a1 = await store.acquire(scope, '0', 'owner-a', LONG_TTL_MS);
    assertGrant(a1, { scope, resource: '0', owner: 'owner-a' }, 'first acquire');
    const a2 = await store.acquire(scope, '0', 'owner-a', LONG_TTL_MS);
    assertGrant(a2, { scope, resource: '0', owner: 'owner-a' }, 're-acquire of own live lease');
    assert.equal(a2.epoch, a1.epoch, 're-acquiring one’s own live lease keeps the epoch');
    assert.ok(a2.expiresAt >= a1.expiresAt, 'and does not shorten it');
    assert.equal(await store.validate(a1), true, 'the first grant (same owner and epoch) is still current');
  });

export const takesExpiredLeaseWithHigherEpoch: Scenario = (_t, factory) =>
  run(factory, async ({ store, scope, expireShort }) => {
    const a = await store.acquire(scope, '0', 'owner-a', SHORT_TTL_MS);
    assertGrant(a, { scope, resource: '0', owner: 'owner-a' }, 'acquire (short ttl)');
    await store.acquire(scope, 'other', 'owner-x', LONG_TTL_MS); // unrelated noise in the same scope
    await expireShort();
    const b = await store.acquire(scope, '0', 'owner-b', LONG_TTL_MS);
    assertGrant(b, { scope, resource: '0', owner: 'owner-b' }, 'acquire of an expired lease');
    assert.ok(b.epoch > a.epoch, `the epoch grows on a change of hands (${a.epoch} → ${b.epoch})`);
    assert.equal(await store.validate(a), false, 'the old owner’s fence is refused');
    assert.equal(await store.validate(b), true, 'the new owner’s fence is current');
    assert.equal(await store.renew(a, LONG_TTL_MS), null, 'the old owner cannot renew');
    await store.release(a);
    assert.equal(await store.validate(b), true, 'a release under the old fence does not free the new owner’s lease');
    assert.equal(await store.acquire(scope, '0', 'owner-c', LONG_TTL_MS), null, 'still held by the new owner');
  });

export const epochGrowsOnEveryChangeOfHands: Scenario = (_t, factory) =>
  run(factory, async ({ store, scope, expireShort }) => {
    const epochs: number[] = [];
    const take = async (owner: string, ttl: number): Promise<LeaseGrant> => {
      const g = await store.acquire(scope, 'r', owner, ttl);
      assertGrant(g, { scope, resource: 'r', owner }, `acquire by ${owner}`);
      epochs.push(g.epoch);
      return g;
    };
    let g = await take('owner-a', LONG_TTL_MS);
    await store.release(g);
    g = await take('owner-b', LONG_TTL_MS);
    await store.release(g);
    g = await take('owner-a', SHORT_TTL_MS); // the same owner again after a release: a change of hands
    await expireShort();
    g = await take('owner-c', SHORT_TTL_MS); // taken over after expiry
    await expireShort();
    g = await take('owner-b', LONG_TTL_MS);
    for (let i = 1; i < epochs.length; i++) {
      assert.ok(epochs[i]! > epochs[i - 1]!, `epochs must strictly grow on every change of hands: ${epochs.join(' → ')}`);
    }
    assert.equal(await store.validate(g), true);
  });

export const renewOnlyByCurrentOwnerAndEpoch: Scenario = (_t, factory) =>
  run(factory, async ({ store, scope }) => {
    const a = await store.acquire(scope, '0', 'owner-a', LONG_TTL_MS);
    assertGrant(a, { scope, resource: '0', owner: 'owner-a' }, 'acquire');
    const r = await store.renew(a, LONG_TTL_MS * 2);
    assertGrant(r, { scope, resource: '0', owner: 'owner-a' }, 'renew by the holder');
    assert.equal(r.epoch, a.epoch, 'renew keeps the epoch');
    assert.ok(r.expiresAt > a.expiresAt, `renew with a longer ttl pushes expiresAt out (${a.expiresAt} → ${r.expiresAt})`);
    assert.equal(await store.renew({ ...a, owner: 'owner-b' }, LONG_TTL_MS), null, 'renew by another owner is refused');
    assert.equal(await store.renew({ ...a, epoch: a.epoch + 1 }, LONG_TTL_MS), null, 'renew with a future epoch is refused');
    assert.equal(await store.renew({ ...a, epoch: a.epoch - 1 }, LONG_TTL_MS), null, 'renew with a past epoch is refused');
    assert.equal(await store.renew({ ...a, resource: 'never-taken' }, LONG_TTL_MS), null, 'renew of a lease never taken is refused');
    assert.equal(await store.validate(a), true, 'failed renewals change nothing');
  });

export const renewKeepsLeaseLivePastFirstTtl: Scenario = (_t, factory) =>
  run(factory, async ({ store, scope, expireShort }) => {
    const a = await store.acquire(scope, '0', 'owner-a', SHORT_TTL_MS);
    assertGrant(a, { scope, resource: '0', owner: 'owner-a' }, 'acquire (short ttl)');
    const r = await store.renew(a, LONG_TTL_MS);
    assert.ok(r, 'renew right away succeeds');
    await expireShort();
    assert.equal(await store.acquire(scope, '0', 'owner-b', LONG_TTL_MS), null, 'a renewed lease stays live past its first ttl');
    assert.equal(await store.validate(a), true);
  });

export const renewOfJustExpiredLeaseNobodyTook: Scenario = (_t, factory) =>
  run(factory, async ({ store, scope, expireShort }) => {
    const a = await store.acquire(scope, '0', 'owner-a', SHORT_TTL_MS);
    assertGrant(a, { scope, resource: '0', owner: 'owner-a' }, 'acquire (short ttl)');
    await expireShort();
    const r = await store.renew(a, LONG_TTL_MS);
    assertGrant(r, { scope, resource: '0', owner: 'owner-a' }, 'renew of a just-expired lease nobody took');
    assert.equal(r.epoch, a.epoch, 'same epoch: it never changed hands');
    assert.equal(await store.acquire(scope, '0', 'owner-b', LONG_TTL_MS), null, 'live again after the renewal');
  });

export const releaseKeepsEpochForNextOwner: Scenario = (_t, factory) =>
  run(factory, async ({ store, scope }) => {
    const a = await store.acquire(scope, '0', 'owner-a', LONG_TTL_MS);
    assertGrant(a, { scope, resource: '0', owner: 'owner-a' }, 'acquire');
    await store.release(a);
    assert.equal(await store.validate(a), false, 'a released fence is no longer current');
    assert.deepEqual((await store.list(scope)).map((g) => g.resource), [], 'a released lease is not listed');
    await store.release(a); // idempotent
    const b = await store.acquire(scope, '0', 'owner-b', LONG_TTL_MS);
    assertGrant(b, { scope, resource: '0', owner: 'owner-b' }, 'acquire right after a release (no waiting for the ttl)');
    assert.ok(b.epoch > a.epoch, `the epoch is kept for the next owner and grows (${a.epoch} → ${b.epoch})`);
    await store.release(a); // a stale release is a no-op
    assert.equal(await store.validate(b), true, 'a stale release does not free the next owner’s lease');
    assert.equal(await store.acquire(scope, '0', 'owner-c', LONG_TTL_MS), null);
  });

export const validateRefusesStaleEpoch: Scenario = (_t, factory) =>
  run(factory, async ({ store, scope, expireShort }) => {
    const a = await store.acquire(scope, '0', 'owner-a', SHORT_TTL_MS);
    assertGrant(a, { scope, resource: '0', owner: 'owner-a' }, 'acquire (short ttl)');
    assert.equal(await store.validate(a), true, 'current while held');
    await expireShort();
    const b = await store.acquire(scope, '0', 'owner-b', LONG_TTL_MS);
    assertGrant(b, { scope, resource: '0', owner: 'owner-b' }, 'take-over');
    assert.equal(await store.validate(a), false, 'fencing: the old owner’s fence is refused after another took over');
    assert.equal(await store.validate({ ...b, owner: 'owner-a' }), false, 'the right epoch with the wrong owner is refused');
    assert.equal(await store.validate({ ...b, epoch: b.epoch + 1 }), false, 'a future epoch is refused');
    assert.equal(await store.validate({ ...b, resource: 'other' }), false, 'another resource is refused');
    assert.equal(await store.validate(b), true);
    assert.equal(await store.acquire(scope, '0', 'owner-a', LONG_TTL_MS), null, 'the old owner cannot take it back while live');
  });

export const oneOfConcurrentAcquirersWins: Scenario = (_t, factory) =>
  run(factory, async ({ store, scope }) => {
    for (const resource of ['0', '1', '2']) {
      const owners = Array.from({ length: 10 }, (_, i) => `owner-${i}`);
      const grants = await Promise.all(owners.map((o) => store.acquire(scope, resource, o, LONG_TTL_MS)));
      const winners = grants.filter((g): g is LeaseGrant => g !== null);
      assert.equal(winners.length, 1, `exactly one of 10 concurrent acquirers of "${resource}" wins (winners: ${winners.map((w) => w.owner).join(', ') || 'none'})`);
      assert.equal(await store.validate(winners[0]!), true);
    }
  });

export const scopesAndResourcesAreIndependent: Scenario = (_t, factory) =>
  run(factory, async ({ store, scope }) => {
    const other = uniqueName('lease');
    const a = await store.acquire(scope, '0', 'owner-a', LONG_TTL_MS);
    assertGrant(a, { scope, resource: '0', owner: 'owner-a' }, 'acquire s/0');
    assertGrant(await store.acquire(scope, '1', 'owner-b', LONG_TTL_MS), { scope, resource: '1', owner: 'owner-b' }, 'another resource of the scope');
    assertGrant(await store.acquire(other, '0', 'owner-b', LONG_TTL_MS), { scope: other, resource: '0', owner: 'owner-b' }, 'the same resource in another scope');
    assert.equal(await store.validate({ ...a, scope: other }), false, 'a fence is bound to its scope');
  });

export const listsLiveLeasesOfScope: Scenario = (_t, factory) =>
  run(factory, async ({ store, scope, expireShort }) => {
    const other = uniqueName('lease');
    const g0 = await store.acquire(scope, '0', 'owner-a', LONG_TTL_MS);
    const g1 = await store.acquire(scope, '1', 'owner-b', LONG_TTL_MS);
    const g2 = await store.acquire(scope, '2', 'owner-a', SHORT_TTL_MS);
    const g3 = await store.acquire(scope, '3', 'owner-c', LONG_TTL_MS);
    await store.acquire(other, '0', 'owner-z', LONG_TTL_MS);
    assert.ok(g0 && g1 && g2 && g3);
    await store.release(g3);
    const show = (gs: readonly LeaseGrant[]): string[] => [...gs].map((g) => `${g.scope === scope ? '' : 'OTHER:'}${g.resource}:${g.owner}:${g.epoch}`).sort();
    assert.deepEqual(show(await store.list(scope)), show([g0, g1, g2]), 'list: live leases of the scope, with owner and epoch');
    await expireShort();
    assert.deepEqual(show(await store.list(scope)), show([g0, g1]), 'an expired lease is not listed');
    assert.deepEqual(await store.list(uniqueName('lease')), [], 'an unknown scope has no leases');
  });

export const membersHeartbeatExpiryAndLeave: Scenario = (_t, factory) =>
  run(factory, async ({ store, scope, expireShort }) => {
    const other = uniqueName('lease');
    await store.heartbeat(scope, 'member-b', LONG_TTL_MS);
    await store.heartbeat(scope, 'member-a', LONG_TTL_MS);
    await store.heartbeat(scope, 'member-c', SHORT_TTL_MS);
    await store.heartbeat(scope, 'member-d', SHORT_TTL_MS);
    await store.heartbeat(scope, 'member-d', LONG_TTL_MS); // a later heartbeat extends
    await store.heartbeat(other, 'member-z', LONG_TTL_MS);
    assert.deepEqual(await store.members(scope), ['member-a', 'member-b', 'member-c', 'member-d'], 'live members, sorted, of this scope only');
    await expireShort();
    assert.deepEqual(await store.members(scope), ['member-a', 'member-b', 'member-d'], 'a member whose heartbeat expired is gone');
    await store.leave(scope, 'member-a');
    assert.deepEqual(await store.members(scope), ['member-b', 'member-d'], 'a member that left is gone at once');
    await store.leave(scope, 'never-joined'); // no error
    await store.leave(scope, 'member-a'); // idempotent
    await store.heartbeat(scope, 'member-a', LONG_TTL_MS);
    assert.deepEqual(await store.members(scope), ['member-a', 'member-b', 'member-d'], 'a member can rejoin');
    assert.deepEqual(await store.members(other), ['member-z']);
    assert.deepEqual(await store.members(uniqueName('lease')), []);
  });

/** Every scenario, by name, in the order the suite runs them. */
export const leaseStoreScenarios: Readonly<Record<string, Scenario>> = Object.freeze({
  'acquires a free lease': acquiresFreeLease,
  'refuses another owner while the lease is live': refusesAnotherOwnerWhileLive,
  're-acquiring one’s own live lease keeps the epoch': reacquireOwnLiveLeaseKeepsEpoch,
  'takes an expired lease with a higher epoch; the old fence is dead': takesExpiredLeaseWithHigherEpoch,
  'the epoch grows on every change of hands': epochGrowsOnEveryChangeOfHands,
  'renew succeeds only for the current owner and epoch': renewOnlyByCurrentOwnerAndEpoch,
  'renew keeps a lease live past its first ttl': renewKeepsLeaseLivePastFirstTtl,
  'renew of a just-expired lease nobody took succeeds': renewOfJustExpiredLeaseNobodyTook,
  'release frees at once and keeps the epoch for the next owner': releaseKeepsEpochForNextOwner,
  'validate refuses a stale epoch after a take-over (fencing)': validateRefusesStaleEpoch,
  'exactly one of many concurrent acquirers wins': oneOfConcurrentAcquirersWins,
  'scopes and resources are independent': scopesAndResourcesAreIndependent,
  'list returns the live leases of a scope': listsLiveLeasesOfScope,
  'members: heartbeat, expiry, leave': membersHeartbeatExpiryAndLeave,
});

/** Registers the lease-store contract as a node:test suite (repeated `CONTRACT_STRESS` times). */
export function describeLeaseStoreContract(name: string, factory: LeaseStoreFactory): void {
  const runs = stressCount();
  describe(`LeaseStore contract: ${name}`, () => {
    for (let r = 1; r <= runs; r++) {
      const register = (): void => {
        for (const [title, scenario] of Object.entries(leaseStoreScenarios)) it(title, { timeout: 30_000 }, (t) => scenario(t, factory));
      };
      if (runs === 1) register();
      else describe(`run ${r} of ${runs}`, register);
    }
  });
}

