// Fixtures for this package's unit tests (not exported): a small cart decider and a clock
// whose sleeps resolve at once (recording the delays asked for).
import type { Clock } from '@herald/core';
import type { Decider } from './decider.ts';

export type CartEvent =
  | { type: 'CartOpened'; data: { cartId: string } }
  | { type: 'ItemAdded'; data: { sku: string; qty: number } }
  | { type: 'CartCheckedOut'; data: { total: number } };

export type CartCommand = { type: 'Open'; cartId: string } | { type: 'Add'; sku: string; qty: number } | { type: 'CheckOut' } | { type: 'Noop' };

export interface Cart {
  readonly status: 'none' | 'open' | 'checked-out';
  readonly items: Readonly<Record<string, number>>;
  readonly count: number;
}

export class CartClosedError extends Error {
  constructor() {
    super('the cart is checked out');
    this.name = 'CartClosedError';
  }
}

export const cartDecider: Decider<CartCommand, Cart, CartEvent> = {
  initialState: () => ({ status: 'none', items: {}, count: 0 }),
  decide(command, state) {
    switch (command.type) {
      case 'Open':
        if (state.status !== 'none') return [];
        return { type: 'CartOpened', data: { cartId: command.cartId } };
      case 'Add':
        if (state.status === 'checked-out') throw new CartClosedError();
        if (command.qty <= 0) throw new RangeError('qty must be positive');
        return [
          ...(state.status === 'none' ? [{ type: 'CartOpened' as const, data: { cartId: 'auto' } }] : []),
          { type: 'ItemAdded' as const, data: { sku: command.sku, qty: command.qty } },
        ];
      case 'CheckOut':
        if (state.status !== 'open') throw new CartClosedError();
        return { type: 'CartCheckedOut', data: { total: state.count } };
      case 'Noop':
        return [];
    }
  },
  evolve(state, event) {
    switch (event.type) {
      case 'CartOpened':
        return { ...state, status: 'open' };
      case 'ItemAdded':
        return { ...state, items: { ...state.items, [event.data.sku]: (state.items[event.data.sku] ?? 0) + event.data.qty }, count: state.count + event.data.qty };
      case 'CartCheckedOut':
        return { ...state, status: 'checked-out' };
    }
  },
};

/** A clock that stands still unless moved, whose sleeps resolve at once; `sleeps` lists the delays asked for. */
export class InstantClock implements Clock {
  time = Date.UTC(2024, 0, 1);
  readonly sleeps: number[] = [];
  now(): number {
    return this.time;
  }
  monotonic(): number {
    return this.time;
  }
  setTimer(fn: () => void): { cancel(): void } {
    const t = setImmediate(fn);
    return { cancel: () => clearImmediate(t) };
  }
  async sleep(delayMs: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw signal.reason;
    this.sleeps.push(delayMs);
    await new Promise((r) => setImmediate(r));
  }
}
