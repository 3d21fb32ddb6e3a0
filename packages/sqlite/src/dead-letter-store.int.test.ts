import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createEnvelope, type DeadLetterEntry, type DeadLetterStore, isHeraldError, MemoryDeadLetterStore, type NewDeadLetter } from '@herald/core';
import { openDatabase } from './database.ts';
import { type SqliteDeadLetterEntry, SqliteDeadLetterStore } from './dead-letter-store.ts';
import { SqliteLeaseStore } from './lease-store.ts';
import { OffsetClock, tempDbPath } from './test-helpers.ts';

const cleanups: Array<() => void> = [];
after(() => {
  for (const c of cleanups) c();
});

function freshPath(): string {
  const { path, cleanup } = tempDbPath();
  cleanups.push(cleanup);
  return path;
}

let seq = 0;
function letter(over: Partial<NewDeadLetter> = {}): NewDeadLetter {
  const n = ++seq;
  const envelope = createEnvelope({ type: over.topic === 'payments' ? 'payment.failed' : 'order.placed', source: 'test', data: { n }, id: `ev-${n}` }, 1_700_000_000_000);
  return {
    group: 'g1',
    topic: 'orders',
    partition: 0,
    key: 'k1',
    handler: 'h',
    envelope,
    raw: JSON.stringify(envelope),
    position: String(n),
    error: { code: 'E_BOOM', message: 'Boom happened', stack: 'Error: boom\n at x' },
    attempts: 3,
    firstFailedAt: 1000 + n,
    lastFailedAt: 2000 + n,
    ...over,
  };
}

/** A scenario run against a store; returns a transcript of everything observable. */
async function scenario(store: DeadLetterStore): Promise<unknown[]> {
  const t: unknown[] = [];
  const strip = (e: DeadLetterEntry | undefined): unknown => (e ? { ...e } : e);
  const page = async (f = {}): Promise<unknown> => (await store.list(f, { limit: 1000 })).entries.map((e) => [e.id, e.key, e.status, e.parkedBehind]);
  seq = 0;
  const a = await store.add(letter({ key: 'k1' }), { park: true });
  t.push(strip(a));
  const b = await store.parkMessage(letter({ key: 'k1' }));
  const c = await store.parkMessage(letter({ key: 'k1' }));
  t.push(strip(b), strip(c));
  const d = await store.add(letter({ key: 'k2', partition: 1 }));
  const e = await store.add(letter({ key: null, partition: 2, envelope: null, raw: '{{not json', handler: 'decode' }));
  const f = await store.add(letter({ group: 'g2', key: 'k1', error: { message: 'ÉCHEC total' } }), { park: true });
  await store.add(letter({ topic: 'payments', key: 'p1', partition: 3 }));
  t.push(await store.parkedKeys('g1', 'orders'), await store.parkedKeys('g1', 'orders', 0), await store.parkedKeys('g1', 'orders', 1), await store.parkedKeys('g2', 'orders'));
  t.push(await page());
  for (const flt of [{ group: 'g1' }, { topic: 'payments' }, { type: 'payment.failed' }, { key: 'k1' }, { status: 'parked' as const }, { errorContains: 'boom' }, { errorContains: 'échec' }, { since: 2003, until: 2006 }]) {
    t.push(await store.count(flt), await page(flt));
  }
  // pagination
  const p1 = await store.list({}, { limit: 2 });
  const p2 = await store.list({}, { limit: 2, cursor: p1.nextCursor! });
  t.push(p1.entries.map((x) => x.id), p1.nextCursor, p2.entries.map((x) => x.id), p2.nextCursor);
  const last = await store.list({ group: 'g1' }, { limit: 5 });
  t.push(last.nextCursor);
  // redrive one entry of a parked key: the whole key drains
  t.push(await store.redrive({ ids: [c.id] }));
  t.push(await page({ group: 'g1' }));
  // a message parked while draining comes in as 'redrive'
  const g = await store.parkMessage(letter({ key: 'k1' }));
  t.push(strip(g));
  t.push((await store.pendingRedrives('g1', 'orders', [0, 1], 10)).map((x) => x.id));
  t.push((await store.pendingRedrives('g1', 'orders', [0], 2)).map((x) => x.id));
  t.push(await store.pendingRedrives('g1', 'orders', [], 10));
  // complete in order; the last one unparks atomically
  t.push(await store.completeRedrive(a.id));
  // a failure stops the draining: the others go back to parked
  await store.failRedrive(b.id, { message: 'again' }, 4, 9999);
  t.push(strip(await store.get(b.id)), await page({ group: 'g1' }), await store.parkedKeys('g1', 'orders'));
  t.push(await store.redrive({ filter: { group: 'g1', key: 'k1' } }));
  t.push(await store.completeRedrive(b.id), await store.completeRedrive(c.id), await store.completeRedrive(g.id));
  t.push(await store.parkedKeys('g1', 'orders'));
  t.push(await store.completeRedrive('000000000999'));
  await assert.rejects(store.failRedrive('000000000999', { message: 'x' }, 1, 1), (err) => isHeraldError(err, 'HERALD_ERR_NOT_FOUND'));
  // plain redrive / discard
  t.push(await store.redrive({ ids: [d.id, e.id] }), await store.redrive({ ids: [d.id] }));
  t.push(await store.discard({ ids: [d.id] }));
  t.push(await store.discard({ filter: { group: 'g2' } }), await store.parkedKeys('g2', 'orders'));
  t.push(await store.get(f.id));
  await assert.rejects(store.parkMessage(letter({ key: 'nope' })), (err) => isHeraldError(err, 'HERALD_ERR_NOT_FOUND'));
  await assert.rejects(store.parkMessage(letter({ key: null })), (err) => isHeraldError(err, 'HERALD_ERR_INVALID_ARGUMENT'));
  await assert.rejects(store.list({}, { limit: 0 }), (err) => isHeraldError(err, 'HERALD_ERR_INVALID_ARGUMENT'));
  await assert.rejects(store.list({}, { cursor: 'x' }), (err) => isHeraldError(err, 'HERALD_ERR_INVALID_ARGUMENT'));
  t.push(await page());
  return t;
}

describe('SqliteDeadLetterStore', () => {
  it('behaves exactly like MemoryDeadLetterStore through a full park / redrive / fail / discard scenario', async () => {
    const memory = await scenario(new MemoryDeadLetterStore());
    const store = new SqliteDeadLetterStore({ path: freshPath() });
    const sqlite = await scenario(store);
    await store.close();
    assert.deepStrictEqual(sqlite, memory);
  });

  it('keeps entries across reopen, with raw bytes, envelope and error intact', async () => {
    const path = freshPath();
    const one = new SqliteDeadLetterStore({ path });
    const input = letter({ raw: 'the raw bytes' });
    const added = await one.add(input);
    await one.close();
    const two = new SqliteDeadLetterStore({ path });
    const got = await two.get(added.id);
    assert.deepStrictEqual(got, added);
    assert.equal(got?.raw, 'the raw bytes');
    assert.deepStrictEqual(got?.envelope, input.envelope);
    await two.close();
  });

  it('fenced writes pass for the current lease and are refused with HERALD_ERR_LEASE_LOST for a stale one, writing nothing', async () => {
    const clock = new OffsetClock();
    const db = openDatabase({ path: freshPath() });
    const leases = new SqliteLeaseStore({ database: db, clock });
    const store = new SqliteDeadLetterStore({ database: db });
    const old = (await leases.acquire('log:orders:g1', '0', 'A', 100))!;
    const parked = await store.add(letter(), { fence: old, park: true });
    clock.advance(200);
    const fresh = (await leases.acquire('log:orders:g1', '0', 'B', 10_000))!;
    const lost = (e: unknown): boolean => isHeraldError(e, 'HERALD_ERR_LEASE_LOST');
    await assert.rejects(store.add(letter(), { fence: old }), lost);
    await assert.rejects(store.parkMessage(letter(), { fence: old }), lost);
    await assert.rejects(store.failRedrive(parked.id, { message: 'x' }, 1, 1, { fence: old }), lost);
    await assert.rejects(store.completeRedrive(parked.id, { fence: old }), lost);
    assert.equal(await store.count(), 1);
    await store.parkMessage(letter(), { fence: fresh });
    assert.deepEqual(await store.completeRedrive(parked.id, { fence: fresh }), { unparked: false });
    assert.equal(await store.count(), 1);
    await store.close();
    await leases.close();
    db.close();
  });

  it('a delegated fenceCheck is used instead of the same-file lease row', async () => {
    const store = new SqliteDeadLetterStore({ path: freshPath(), fenceCheck: (f) => f.owner === 'ok' });
    const fence = { scope: 's', resource: '0', epoch: 1 };
    await store.add(letter(), { fence: { ...fence, owner: 'ok' } });
    await assert.rejects(store.add(letter(), { fence: { ...fence, owner: 'stale' } }), (e) => isHeraldError(e, 'HERALD_ERR_LEASE_LOST'));
    await store.close();
  });

  it('a row whose stored envelope is corrupt comes back with envelope null, raw kept and a HERALD_ERR_CORRUPT_RECORD; its neighbours are unaffected', async () => {
    const store = new SqliteDeadLetterStore({ path: freshPath() });
    const a = await store.add(letter());
    const b = await store.add(letter({ raw: 'original bytes' }));
    const c = await store.add(letter());
    store.database.db.prepare(`UPDATE herald_dead_letters SET envelope = '{"truncated' WHERE id = ?`).run(Number(b.id));
    const { entries } = await store.list();
    assert.deepEqual(
      entries.map((e) => e.id),
      [a.id, b.id, c.id],
    );
    const bad = entries[1] as SqliteDeadLetterEntry;
    assert.equal(bad.envelope, null);
    assert.equal(bad.raw, 'original bytes');
    assert.ok(isHeraldError(bad.corruption, 'HERALD_ERR_CORRUPT_RECORD'));
    assert.match(bad.corruption.message, new RegExp(b.id));
    assert.deepStrictEqual(entries[0], a);
    assert.deepStrictEqual(entries[2], c);
    assert.equal((await store.get(b.id))?.envelope, null);
    assert.equal(store.corruptRowsSeen, 2);
    assert.equal(await store.discard({ ids: [b.id] }), 1);
    await store.close();
  });

  it('two connections to one file share dead letters and parked keys', async () => {
    const path = freshPath();
    const one = new SqliteDeadLetterStore({ path });
    const two = new SqliteDeadLetterStore({ path });
    const head = await one.add(letter({ key: 'k' }), { park: true });
    assert.deepEqual(await two.parkedKeys('g1', 'orders'), ['k']);
    const next = await two.parkMessage(letter({ key: 'k' }));
    assert.equal(next.parkedBehind, head.id);
    assert.equal(await one.redrive({ ids: [head.id] }), 2);
    assert.deepEqual(await two.completeRedrive(head.id), { unparked: false });
    assert.deepEqual(await one.completeRedrive(next.id), { unparked: true });
    assert.deepEqual(await two.parkedKeys('g1', 'orders'), []);
    await one.close();
    await two.close();
  });

  it('paginates large sets by cursor without skipping or repeating', async () => {
    const store = new SqliteDeadLetterStore({ path: freshPath() });
    for (let i = 0; i < 250; i++) await store.add(letter({ key: `k${i % 7}` }));
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await store.list({ key: 'k3' }, { limit: 10, ...(cursor ? { cursor } : {}) });
      seen.push(...page.entries.map((e) => e.id));
      cursor = page.nextCursor;
    } while (cursor);
    assert.equal(seen.length, await store.count({ key: 'k3' }));
    assert.equal(new Set(seen).size, seen.length);
    assert.deepEqual([...seen].sort(), seen);
    await store.close();
  });

  it('rejects every call after close with HERALD_ERR_CLOSED', async () => {
    const store = new SqliteDeadLetterStore({ path: freshPath() });
    await store.close();
    await store.close();
    await assert.rejects(store.list(), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
    await assert.rejects(store.add(letter()), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
    await assert.rejects(store.redrive({ ids: ['1'] }), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
  });
});
