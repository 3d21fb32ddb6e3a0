import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { isHeraldError } from '@herald/core';
import { openDatabase } from './database.ts';
import { assertFence } from './lease-store.ts';
import { SqliteLeaseStore } from './lease-store.ts';
import { OffsetClock, tempDbPath } from './test-helpers.ts';

const cleanups: Array<() => void> = [];
after(() => {
  for (const c of cleanups) c();
});

function fresh(clock = new OffsetClock()): { store: SqliteLeaseStore; path: string; clock: OffsetClock } {
  const { path, cleanup } = tempDbPath();
  cleanups.push(cleanup);
  return { store: new SqliteLeaseStore({ path, clock }), path, clock };
}

describe('SqliteLeaseStore', () => {
  it('acquires a free lease at epoch 1; the owner re-acquiring keeps the epoch; another owner is refused while it lives', async () => {
    const { store, clock } = fresh();
    const a = await store.acquire('s', '0', 'A', 1000);
    assert.ok(a);
    assert.equal(a.epoch, 1);
    assert.equal(a.owner, 'A');
    assert.ok(a.expiresAt >= clock.now() + 900);
    const again = await store.acquire('s', '0', 'A', 5000);
    assert.equal(again?.epoch, 1);
    assert.ok(again!.expiresAt > a.expiresAt);
    assert.equal(await store.acquire('s', '0', 'B', 1000), null);
    await store.close();
  });

  it('a change of hands after expiry increments the epoch; the old fence can no longer renew, release or validate', async () => {
    const { store, clock } = fresh();
    const a = (await store.acquire('s', 'r', 'A', 1000))!;
    clock.advance(1001);
    const b = (await store.acquire('s', 'r', 'B', 1000))!;
    assert.equal(b.epoch, 2);
    assert.equal(await store.renew(a, 1000), null);
    assert.equal(await store.validate(a), false);
    await store.release(a); // stale: no effect
    assert.equal(await store.validate(b), true);
    assert.deepEqual((await store.list('s')).map((g) => [g.resource, g.owner, g.epoch]), [['r', 'B', 2]]);
    await store.close();
  });

  it('re-acquiring one’s own expired lease starts a new epoch', async () => {
    const { store, clock } = fresh();
    const a = (await store.acquire('s', 'r', 'A', 100))!;
    clock.advance(200);
    const a2 = (await store.acquire('s', 'r', 'A', 100))!;
    assert.equal(a2.epoch, a.epoch + 1);
    assert.equal(await store.validate(a), false);
    await store.close();
  });

  it('renew works for the current owner even just after expiry, as long as nobody took it', async () => {
    const { store, clock } = fresh();
    const a = (await store.acquire('s', 'r', 'A', 100))!;
    clock.advance(500);
    // The clock is wall time plus an offset: bound the expiry by the time before and after the call.
    const before = clock.now();
    const renewed = await store.renew(a, 1000);
    const afterCall = clock.now();
    assert.ok(renewed);
    assert.equal(renewed.epoch, a.epoch);
    assert.ok(renewed.expiresAt >= before + 1000 && renewed.expiresAt <= afterCall + 1000, `expiresAt ${renewed.expiresAt} within [${before + 1000}, ${afterCall + 1000}]`);
    assert.equal(await store.renew({ ...a, owner: 'B' }, 1000), null);
    assert.equal(await store.renew({ ...a, epoch: a.epoch + 1 }, 1000), null);
    await store.close();
  });

  it('release frees the lease and keeps the epoch for the next owner; it is idempotent', async () => {
    const { store } = fresh();
    const a = (await store.acquire('s', 'r', 'A', 10_000))!;
    await store.release(a);
    await store.release(a);
    assert.equal(await store.validate(a), false);
    assert.deepEqual(await store.list('s'), []);
    const b = (await store.acquire('s', 'r', 'B', 10_000))!;
    assert.equal(b.epoch, a.epoch + 1);
    await store.close();
  });

  it('lists only live leases of the scope', async () => {
    const { store, clock } = fresh();
    await store.acquire('s', '1', 'A', 100);
    await store.acquire('s', '2', 'A', 10_000);
    await store.acquire('other', '1', 'A', 10_000);
    clock.advance(200);
    assert.deepEqual((await store.list('s')).map((g) => g.resource), ['2']);
    await store.close();
  });

  it('members live for their TTL, come back sorted, and leave at once', async () => {
    const { store, clock } = fresh();
    await store.heartbeat('g', 'zed', 1000);
    await store.heartbeat('g', 'amy', 1000);
    await store.heartbeat('g', 'short', 100);
    await store.heartbeat('h', 'other', 1000);
    assert.deepEqual(await store.members('g'), ['amy', 'short', 'zed']);
    clock.advance(150);
    assert.deepEqual(await store.members('g'), ['amy', 'zed']);
    await store.leave('g', 'zed');
    assert.deepEqual(await store.members('g'), ['amy']);
    await store.heartbeat('g', 'amy', 1000);
    assert.deepEqual(await store.members('g'), ['amy']);
    await store.close();
  });

  it('two connections to one file see one set of leases (cross-process semantics)', async () => {
    const { store: one, path, clock } = fresh();
    const two = new SqliteLeaseStore({ path, clock });
    const a = (await one.acquire('s', 'r', 'A', 10_000))!;
    assert.equal(await two.acquire('s', 'r', 'B', 10_000), null);
    assert.equal(await two.validate(a), true);
    await one.release(a);
    const b = (await two.acquire('s', 'r', 'B', 10_000))!;
    assert.equal(b.epoch, 2);
    assert.equal(await one.validate(a), false);
    await one.heartbeat('g', 'x', 10_000);
    assert.deepEqual(await two.members('g'), ['x']);
    await one.close();
    await two.close();
  });

  it('fences writes: assertFence inside a write transaction passes for the current holder only', async () => {
    const { path, cleanup } = tempDbPath();
    cleanups.push(cleanup);
    const clock = new OffsetClock();
    const db = openDatabase({ path });
    const store = new SqliteLeaseStore({ database: db, clock });
    const a = (await store.acquire('s', 'r', 'A', 100))!;
    db.immediate(() => assertFence(db, a));
    clock.advance(200);
    const b = (await store.acquire('s', 'r', 'B', 1000))!;
    assert.throws(
      () => db.immediate(() => assertFence(db, a)),
      (e) => isHeraldError(e, 'HERALD_ERR_LEASE_LOST') && /epoch 1/.test(e.message) && e.retryable,
    );
    db.immediate(() => assertFence(db, b));
    await store.close();
    assert.equal(db.closed, false, 'a store given a database does not close it');
    db.close();
  });

  it('rejects calls after close with HERALD_ERR_CLOSED; close is idempotent', async () => {
    const { store } = fresh();
    await store.close();
    await store.close();
    await assert.rejects(store.acquire('s', 'r', 'A', 100), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
    await assert.rejects(store.members('s'), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
  });
});
