import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isHeraldError } from '@herald/core';
import { createCommandHandler } from './command-handler.ts';
import { ConcurrencyError } from './errors.ts';
import { InMemoryEventStore } from './memory-event-store.ts';
import { InMemorySnapshotStore, loadState } from './snapshots.ts';
import { CartClosedError, cartDecider, InstantClock } from './test-fixtures.ts';
import type { EventStore, ReadStreamOptions } from './types.ts';

/** Records the fromVersion of every readStream call. */
function spying(store: EventStore): { store: EventStore; reads: number[] } {
  const reads: number[] = [];
  const proxy = new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === 'readStream') {
        return (id: string, o?: ReadStreamOptions) => {
          reads.push(o?.fromVersion ?? 1);
          return target.readStream(id, o);
        };
      }
      const v = Reflect.get(target, prop, receiver);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  return { store: proxy, reads };
}

describe('command handler', () => {
  it('loads, decides, appends with the loaded version and returns the position and new state', async () => {
    const store = new InMemoryEventStore();
    await store.appendToStream('noise-1', [{ type: 'x', data: 1 }]);
    const handle = createCommandHandler(store, cartDecider);
    const r1 = await handle('cart-1', { type: 'Add', sku: 'a', qty: 2 }, { correlationId: 'corr-1', metadata: { user: 'u1' } });
    assert.deepEqual([r1.streamVersion, r1.position, r1.attempts], [2, 3n, 1]);
    assert.deepEqual(r1.newState, { status: 'open', items: { a: 2 }, count: 2 });
    assert.deepEqual(r1.newEvents.map((e) => e.type), ['CartOpened', 'ItemAdded']);
    const stored = (await store.readStream('cart-1')).events;
    assert.deepEqual(stored.map((e) => [e.type, e.correlationId, e.metadata]), [
      ['CartOpened', 'corr-1', { user: 'u1' }],
      ['ItemAdded', 'corr-1', { user: 'u1' }],
    ]);
    const r2 = await handle('cart-1', { type: 'Noop' });
    assert.deepEqual([r2.streamVersion, r2.position, r2.appendResult], [2, 3n, undefined], 'nothing decided: nothing appended, the stream’s position returned');
    await assert.rejects(handle('cart-1', { type: 'Add', sku: 'a', qty: 0 }), RangeError, 'a domain refusal propagates');
    assert.equal(await store.headPosition(), 3n);
  });

  it('16 concurrent commands on one stream: conflicts are retried with bounded backoff and converge', async () => {
    const store = new InMemoryEventStore();
    const clock = new InstantClock();
    const handle = createCommandHandler(store, cartDecider, { clock, retry: { maxAttempts: 50, initialDelayMs: 1, maxDelayMs: 20 } });
    await handle('cart-c', { type: 'Open', cartId: 'c' });
    // Delay every append by a turn of the event loop so the 16 loads interleave.
    const slow = new Proxy(store, {
      get(t, p, r) {
        if (p === 'appendToStream') return async (...a: Parameters<EventStore['appendToStream']>) => { await new Promise((res) => setImmediate(res)); return t.appendToStream(...a); };
        const v = Reflect.get(t, p, r);
        return typeof v === 'function' ? v.bind(t) : v;
      },
    });
    const racing = createCommandHandler(slow, cartDecider, { clock, retry: { maxAttempts: 50, initialDelayMs: 1, maxDelayMs: 20 } });
    const results = await Promise.all(Array.from({ length: 16 }, (_, i) => racing('cart-c', { type: 'Add', sku: `s${i}`, qty: 1 })));
    const final = await loadState(store, 'cart-c', cartDecider);
    assert.equal(final.state.count, 16, 'no lost update');
    assert.equal(final.streamVersion, 17);
    assert.ok(results.some((r) => r.attempts > 1), 'some commands were retried');
    assert.ok(clock.sleeps.length > 0 && clock.sleeps.every((d) => d >= 0 && d <= 30), `backoff delays are bounded: ${clock.sleeps.join(',')}`);
  });

  it('gives up after maxAttempts with the last ConcurrencyError; an explicit expectedVersion is not retried', async () => {
    const store = new InMemoryEventStore();
    const clock = new InstantClock();
    let appends = 0;
    const alwaysLate = new Proxy(store, {
      get(t, p, r) {
        if (p === 'appendToStream') {
          return async (id: string) => {
            appends++;
            await t.appendToStream(id, [{ type: 'ItemAdded', data: { sku: 'x', qty: 1 } }]); // someone else wins every time
            throw new ConcurrencyError(id, 0, 1);
          };
        }
        const v = Reflect.get(t, p, r);
        return typeof v === 'function' ? v.bind(t) : v;
      },
    });
    const handle = createCommandHandler(alwaysLate, cartDecider, { clock, retry: { maxAttempts: 4 } });
    await assert.rejects(handle('cart-z', { type: 'Add', sku: 'a', qty: 1 }), (e) => e instanceof ConcurrencyError);
    assert.equal(appends, 4);
    assert.equal(clock.sleeps.length, 3);

    const plain = createCommandHandler(store, cartDecider, { clock });
    await plain('cart-e', { type: 'Open', cartId: 'e' });
    await assert.rejects(plain('cart-e', { type: 'Add', sku: 'a', qty: 1 }, { expectedVersion: 0 }), (e) => isHeraldError(e, 'HERALD_ERR_CONCURRENCY'));
    assert.equal((await store.readStream('cart-e')).streamVersion, 1);
    await assert.rejects(plain('cart-e', { type: 'CheckOut' }).then(() => plain('cart-e', { type: 'Add', sku: 'a', qty: 1 })), CartClosedError);
  });

  it('eventIds make a retried call idempotent', async () => {
    const store = new InMemoryEventStore();
    const handle = createCommandHandler(store, cartDecider);
    await handle('cart-i', { type: 'Open', cartId: 'i' });
    const first = await handle('cart-i', { type: 'Add', sku: 'a', qty: 1 }, { eventIds: ['add-1'] });
    const again = await handle('cart-i', { type: 'Add', sku: 'a', qty: 1 }, { eventIds: ['add-1'], expectedVersion: 1 });
    assert.equal(again.appendResult?.idempotent, true);
    assert.equal(again.position, first.position);
    assert.equal((await store.readStream('cart-i')).streamVersion, 2);
  });
});

describe('snapshots', () => {
  it('every N events: saved after appends, loading reads only the tail', async () => {
    const store = new InMemoryEventStore();
    const snaps = new InMemorySnapshotStore();
    const clock = new InstantClock();
    const handle = createCommandHandler(store, cartDecider, { clock, snapshots: { store: snaps, policy: { every: 3 } } });
    await handle('cart-s', { type: 'Open', cartId: 's' });
    await handle('cart-s', { type: 'Add', sku: 'a', qty: 1 });
    assert.equal(await snaps.load('cart-s'), undefined, 'two events: no snapshot yet');
    await handle('cart-s', { type: 'Add', sku: 'b', qty: 1 });
    const snap = await snaps.load('cart-s');
    assert.equal(snap?.streamVersion, 3);
    assert.deepEqual(snap?.state, { status: 'open', items: { a: 1, b: 1 }, count: 2 });
    assert.equal(snap?.savedAt, clock.now());
    await handle('cart-s', { type: 'Add', sku: 'c', qty: 1 });
    const { store: spy, reads } = spying(store);
    const loaded = await loadState(spy, 'cart-s', cartDecider, { store: snaps, policy: { every: 3 } });
    assert.deepEqual(reads, [4], 'the tail after the snapshot is read, not the whole stream');
    assert.deepEqual([loaded.snapshotVersion, loaded.eventsApplied, loaded.state.count], [3, 1, 3]);
    const full = await loadState(store, 'cart-s', cartDecider);
    assert.deepEqual(loaded.state, full.state, 'snapshot + tail = full replay');
  });

  it('a snapshot of another schema version, or of a stream deleted since, is ignored: full replay', async () => {
    const store = new InMemoryEventStore();
    const snaps = new InMemorySnapshotStore();
    const handle = createCommandHandler(store, cartDecider, { snapshots: { store: snaps, policy: { every: 1 }, schemaVersion: 1 } });
    await handle('cart-v', { type: 'Add', sku: 'a', qty: 5 });
    assert.equal((await snaps.load('cart-v'))?.streamVersion, 2);
    const { store: spy, reads } = spying(store);
    const v2 = await loadState(spy, 'cart-v', cartDecider, { store: snaps, policy: { every: 1 }, schemaVersion: 2 });
    assert.deepEqual([v2.snapshotVersion, reads], [undefined, [1]]);
    // A soft delete moves truncateBefore: the old snapshot no longer describes the stream.
    await store.deleteStream('cart-v');
    const afterDelete = await loadState(store, 'cart-v', cartDecider, { store: snaps, policy: { every: 1 } });
    assert.deepEqual([afterDelete.snapshotVersion, afterDelete.state.count, afterDelete.streamVersion], [undefined, 0, 2]);
    const revived = await handle('cart-v', { type: 'Add', sku: 'b', qty: 1 });
    assert.equal(revived.newState.count, 1, 'the revived stream starts from the initial state');
    // A policy function.
    const when = createCommandHandler(store, cartDecider, { snapshots: { store: snaps, policy: { when: (c) => c.newEvents.some((e) => e.type === 'CartCheckedOut') } } });
    await when('cart-w', { type: 'Add', sku: 'a', qty: 1 });
    assert.equal(await snaps.load('cart-w'), undefined);
    await when('cart-w', { type: 'CheckOut' });
    assert.equal((await snaps.load('cart-w'))?.streamVersion, 3);
  });

  it('a snapshot save that fails does not fail the command', async () => {
    const store = new InMemoryEventStore();
    const errors: unknown[] = [];
    const broken = { load: async () => undefined, save: async () => { throw new Error('disk full'); }, delete: async () => {} };
    const handle = createCommandHandler(store, cartDecider, { snapshots: { store: broken, policy: { every: 1 } }, onSnapshotError: (e) => errors.push(e) });
    const r = await handle('cart-f', { type: 'Open', cartId: 'f' });
    assert.equal(r.streamVersion, 1);
    assert.equal(errors.length, 1);
  });
});
