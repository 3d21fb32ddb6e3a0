/**
 * Deciders: domain logic as data plus pure functions (Emmett's `typing/decider.ts`).
 *
 *   const decider: Decider<CartCommand, Cart, CartEvent> = {
 *     initialState: () => ({ status: 'empty', items: [] }),
 *     decide: (command, state) => …events,   // may throw a domain error
 *     evolve: (state, event) => …newState,   // never throws for a stored event
 *   };
 *
 * `evolve` receives stored events (`RecordedEvent`, which has `type` and `data` plus positions)
 * when a stream is loaded, and the freshly decided events after an append: depend on `type`
 * and `data` only. Keep both functions pure — no I/O, no clock, no randomness — so they can be
 * tested with `DeciderSpecification` and replayed for time travel. Return a new state from
 * `evolve` rather than mutating the old one (time travel keeps every intermediate state).
 */

/** A domain event: what `decide` returns and `evolve` folds. */
export interface DomainEvent<Type extends string = string, Data = unknown> {
  readonly type: Type;
  readonly data: Data;
}

export interface Evolver<State, Event extends DomainEvent = DomainEvent> {
  evolve(state: State, event: Event): State;
  initialState(): State;
}

export interface Decider<Command, State, Event extends DomainEvent = DomainEvent> extends Evolver<State, Event> {
  /** The events `command` causes in `state`: none, one or several. Throws to refuse the command. */
  decide(command: Command, state: State): Event | readonly Event[];
}

/** `decide`'s result as an array. */
export function decided<E>(result: E | readonly E[]): readonly E[] {
  return Array.isArray(result) ? (result as readonly E[]) : [result as E];
}

/** Folds `events` into `state`. */
export function evolveAll<State, Event extends DomainEvent>(evolver: Pick<Evolver<State, Event>, 'evolve'>, state: State, events: Iterable<Event>): State {
  let s = state;
  for (const e of events) s = evolver.evolve(s, e);
  return s;
}
