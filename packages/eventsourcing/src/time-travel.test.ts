import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InMemoryEventStore } from './memory-event-store.ts';
import { InstantClock, cartDecider, type CartEvent } from './test-fixtures.ts';
import { stateAt, stateHistory } from './time-travel.ts';

async function cart(): Promise<{ store: InMemoryEventStore; clock: InstantClock; t0: number }> {
  const clock = new InstantClock();
  const store = new InMemoryEventStore({ clock });
  const t0 = clock.time;
  const events: CartEvent[] = [{ type: 'CartOpened', data: { cartId: 't' } }];
  for (let i = 1; i <= 9; i++) events.push({ type: 'ItemAdded', data: { sku: `s${i % 3}`, qty: i } });
  for (const e of events) {
    await store.appendToStream('cart-t', [e]);
    clock.time += 1000;
  }
  return { store, clock, t0 };
}

describe('time travel', () => {
  it('state at a version and at a time', async () => {
    const { store, t0 } = await cart();
    const v4 = await stateAt(store, 'cart-t', cartDecider, { version: 4 });
    assert.deepEqual([v4.streamVersion, v4.state.count, v4.position], [4, 1 + 2 + 3, 4n]);
    const v0 = await stateAt(store, 'cart-t', cartDecider, { version: 0 });
    assert.deepEqual([v0.streamVersion, v0.state.status], [0, 'none']);
    const atTime = await stateAt(store, 'cart-t', cartDecider, { time: new Date(t0 + 2500) });
    assert.deepEqual([atTime.streamVersion, atTime.recordedAt], [3, t0 + 2000], 'the last event recorded at or before the time');
    const before = await stateAt(store, 'cart-t', cartDecider, { time: t0 - 1 });
    assert.equal(before.streamVersion, 0);
    const past = await stateAt(store, 'cart-t', cartDecider, { version: 99 });
    assert.equal(past.streamVersion, 10);
    await assert.rejects(stateAt(store, 'cart-t', cartDecider, { version: -1 }), /non-negative/);
  });

  it('states event by event, paginated, each a copy', async () => {
    const { store } = await cart();
    const page1 = await stateHistory(store, 'cart-t', cartDecider, { maxCount: 4 });
    assert.deepEqual(page1.steps.map((s) => [s.event.streamVersion, s.state.count]), [
      [1, 0],
      [2, 1],
      [3, 3],
      [4, 6],
    ]);
    assert.equal(page1.before.status, 'none');
    assert.equal(page1.nextVersion, 5);
    const page2 = await stateHistory(store, 'cart-t', cartDecider, { fromVersion: page1.nextVersion!, maxCount: 4 });
    assert.deepEqual(page2.steps.map((s) => s.event.streamVersion), [5, 6, 7, 8]);
    assert.equal(page2.before.count, 6, 'the state before the page');
    const page3 = await stateHistory(store, 'cart-t', cartDecider, { fromVersion: page2.nextVersion!, maxCount: 4 });
    assert.deepEqual([page3.steps.length, page3.nextVersion], [2, undefined]);
    // Each step is its own copy even with a mutating evolve.
    const mutating = { initialState: () => ({ n: 0 }), evolve: (s: { n: number }) => { s.n++; return s; } };
    const h = await stateHistory(store, 'cart-t', mutating, { maxCount: 3 });
    assert.deepEqual(h.steps.map((s) => s.state.n), [1, 2, 3]);
    await assert.rejects(stateHistory(store, 'cart-t', cartDecider, { maxCount: 1001 }), /maxCount/);
  });
});
