/**
 * Given/when/then for deciders, without I/O (Emmett's `DeciderSpecification`):
 *
 *   const given = DeciderSpecification.for(cartDecider);
 *
 *   it('adds an item', () =>
 *     given([{ type: 'CartOpened', data: { id: 'c1' } }])
 *       .when({ type: 'AddItem', data: { sku: 'a', qty: 1 } })
 *       .then([{ type: 'ItemAdded', data: { sku: 'a', qty: 1 } }]));
 *
 *   it('refuses a closed cart', () =>
 *     given([opened, closed]).when(addItem).thenThrows(CartClosedError));
 *
 * `then` compares the decided events with `assert.deepStrictEqual`; every failure is an
 * `AssertionError` that shows what was decided. `thenThrows` takes nothing (any error), an
 * error class, a Herald error code, or a predicate.
 */
import assert, { AssertionError } from 'node:assert/strict';
import { isHeraldError, type HeraldErrorCode } from '@herald/core';
import { decided, evolveAll, type Decider, type DomainEvent } from './decider.ts';

export interface DeciderThen<State, Event> {
  /** Asserts that the command decided exactly `expected` (in order). */
  then(expected: Event | readonly Event[]): void;
  /** Asserts that the command decided no event. */
  thenNothingHappened(): void;
  /** Asserts that deciding threw (optionally: an instance of a class, a Herald code, or matching a predicate). Returns the error. */
  thenThrows(check?: (new (...args: any[]) => Error) | HeraldErrorCode | ((error: unknown) => boolean)): unknown;
  /** Asserts on the state after the decided events were applied. */
  thenState(check: (state: State) => void): void;
}

export interface DeciderWhen<Command, State, Event> {
  when(command: Command): DeciderThen<State, Event>;
}

export const DeciderSpecification = {
  for<Command, State, Event extends DomainEvent>(decider: Decider<Command, State, Event>): (given?: readonly Event[]) => DeciderWhen<Command, State, Event> {
    return (given = []) => ({
      when(command: Command): DeciderThen<State, Event> {
        const run = (): { events: readonly Event[]; state: State } => {
          const state = evolveAll(decider, decider.initialState(), given);
          return { events: decided(decider.decide(command, state)), state };
        };
        return {
          then(expected) {
            const { events } = run();
            assert.deepStrictEqual(events, decided(expected), 'the decided events differ from those expected');
          },
          thenNothingHappened() {
            const { events } = run();
            assert.deepStrictEqual(events, [], `expected no event, but the command decided ${events.length}`);
          },
          thenThrows(check) {
            let events: readonly Event[];
            try {
              events = run().events;
            } catch (e) {
              if (check === undefined) return e;
              let ok: boolean;
              if (typeof check === 'string') ok = isHeraldError(e, check);
              else if (isErrorClass(check)) ok = e instanceof check;
              else ok = (check as (error: unknown) => boolean)(e);
              if (!ok) throw new AssertionError({ message: `the command threw, but not the expected error: ${String(e)}`, actual: e, expected: check, operator: 'thenThrows' });
              return e;
            }
            throw new AssertionError({ message: `expected the command to throw, but it decided ${JSON.stringify(events)}`, actual: events, operator: 'thenThrows' });
          },
          thenState(check) {
            const { events, state } = run();
            check(evolveAll(decider, state, events));
          },
        };
      },
    });
  },
};

function isErrorClass(f: unknown): f is new (...args: any[]) => Error {
  return typeof f === 'function' && (f === Error || f.prototype instanceof Error);
}
