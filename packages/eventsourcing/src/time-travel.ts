/**
 * Time travel: a stream's state at a past version or time, and its states event by event (what
 * the console draws). Read-only; replays from the stream's first visible event with the
 * evolver given (no snapshots: a snapshot holds only the newest state). Bounded and paginated.
 */
import { invalidArgument } from './errors.ts';
import type { DomainEvent, Evolver } from './decider.ts';
import type { EventStore, RecordedEvent } from './types.ts';

export interface StateAt<State> {
  readonly state: State;
  /** Version of the last event folded (0 when none). */
  readonly streamVersion: number;
  /** Its global position (0n when none). */
  readonly position: bigint;
  /** Its recorded time (undefined when none). */
  readonly recordedAt: number | undefined;
}

/** `{ version }`: after the event with that version. `{ time }`: after the last event recorded at or before it. */
export type PointInTime = { readonly version: number } | { readonly time: number | Date };

const PAGE = 1000;

export async function stateAt<State, Event extends DomainEvent>(store: EventStore, streamId: string, evolver: Evolver<State, Event>, at: PointInTime): Promise<StateAt<State>> {
  let toVersion: number | undefined;
  let until: number | undefined;
  if ('version' in at) {
    if (!Number.isSafeInteger(at.version) || at.version < 0) throw invalidArgument(`version must be a non-negative integer (got ${String(at.version)})`);
    toVersion = at.version;
  } else if ('time' in at) {
    until = at.time instanceof Date ? at.time.getTime() : at.time;
    if (!Number.isFinite(until)) throw invalidArgument('time must be a Date or epoch milliseconds');
  } else {
    throw invalidArgument('stateAt takes { version } or { time }');
  }
  let state = evolver.initialState();
  let last: RecordedEvent | undefined;
  if (toVersion === 0) return { state, streamVersion: 0, position: 0n, recordedAt: undefined };
  let from: number | undefined = 1;
  outer: while (from !== undefined) {
    const page = await store.readStream(streamId, { fromVersion: from, maxCount: PAGE, ...(toVersion !== undefined ? { toVersion } : {}) });
    for (const e of page.events) {
      // Events are in version order; recorded times follow commit order, so the first event
      // recorded after `until` ends the fold.
      if (until !== undefined && e.recordedAt > until) break outer;
      state = evolver.evolve(state, e as unknown as Event);
      last = e;
    }
    from = page.nextVersion;
  }
  return { state, streamVersion: last?.streamVersion ?? 0, position: last?.position ?? 0n, recordedAt: last?.recordedAt };
}

export interface StateStep<State> {
  readonly event: RecordedEvent;
  /** The state right after `event`. */
  readonly state: State;
}

export interface StateHistoryOptions {
  /** First version to list (default 1); earlier events are folded but not listed. */
  readonly fromVersion?: number;
  /** Steps per page (default 100, at most 1000). */
  readonly maxCount?: number;
  /** Copies each state so a mutating `evolve` cannot change earlier steps (default `structuredClone`; `false` keeps references). */
  readonly clone?: ((state: unknown) => unknown) | false;
}

export interface StateHistory<State> {
  /** The state before the first listed step. */
  readonly before: State;
  readonly steps: ReadonlyArray<StateStep<State>>;
  /** Pass as `fromVersion` for the next page; undefined at the end. */
  readonly nextVersion: number | undefined;
}

/** The stream's states event by event, one bounded page at a time. */
export async function stateHistory<State, Event extends DomainEvent>(
  store: EventStore,
  streamId: string,
  evolver: Evolver<State, Event>,
  options: StateHistoryOptions = {},
): Promise<StateHistory<State>> {
  const fromVersion = options.fromVersion ?? 1;
  if (!Number.isSafeInteger(fromVersion) || fromVersion < 1) throw invalidArgument(`fromVersion must be a positive integer (got ${String(fromVersion)})`);
  const maxCount = options.maxCount ?? 100;
  if (!Number.isInteger(maxCount) || maxCount < 1 || maxCount > 1000) throw invalidArgument(`maxCount must be an integer from 1 to 1000 (got ${String(maxCount)})`);
  const clone = options.clone === false ? (s: State) => s : ((options.clone ?? structuredClone) as (s: State) => State);
  let state = evolver.initialState();
  let before: State | undefined;
  const steps: Array<StateStep<State>> = [];
  let from: number | undefined = 1;
  let nextVersion: number | undefined;
  while (from !== undefined) {
    const page = await store.readStream(streamId, { fromVersion: from, maxCount: PAGE });
    for (const e of page.events) {
      if (e.streamVersion >= fromVersion) {
        if (steps.length === maxCount) {
          nextVersion = e.streamVersion;
          return { before: before ?? clone(state), steps, nextVersion };
        }
        before ??= clone(state);
      }
      state = evolver.evolve(state, e as unknown as Event);
      if (e.streamVersion >= fromVersion) steps.push({ event: e, state: clone(state) });
    }
    from = page.nextVersion;
  }
  return { before: before ?? clone(state), steps, nextVersion };
}
