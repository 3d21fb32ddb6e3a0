/**
 * Snapshots: a cache of a stream's state at a version, so loading replays only the tail.
 *
 * A snapshot is used only when it still describes the stream exactly:
 * - its `schemaVersion` equals the current one (bump it whenever the state's shape or the
 *   decider's `evolve` changes meaning: old snapshots are then ignored, never migrated);
 * - the stream's `truncateBefore` (explicit or from a soft delete) is the one it was built with;
 * - the stream has not been cut under it (the tail read starts right after the snapshot).
 * Otherwise the stream is replayed from its first visible event. A snapshot is never required
 * for correctness: deleting every snapshot only makes loading slower.
 *
 * Policies are per stream type (per command handler): every N events, or a function.
 * (Streams with `maxCount`/`maxAge` metadata: a snapshot includes events those rules may hide
 * from later reads; snapshot such streams only if that is what you want.)
 */
import { invalidArgument } from './errors.ts';
import { evolveAll, type DomainEvent, type Evolver } from './decider.ts';
import type { EventStore, RecordedEvent } from './types.ts';

export interface Snapshot<State = unknown> {
  readonly streamId: string;
  /** The stream version the state includes. */
  readonly streamVersion: number;
  /** The state's schema version (the `schemaVersion` snapshot option when it was saved). */
  readonly schemaVersion: number;
  /** The stream's truncateBefore when it was saved. */
  readonly truncateBefore: number;
  readonly state: State;
  /** Epoch ms. */
  readonly savedAt: number;
}

/**
 * Where snapshots live. `save` keeps the newest snapshot per stream: saving one with a lower
 * `streamVersion` than the stored one is a no-op (two writers racing cannot move it back).
 * Safe to call concurrently.
 */
export interface SnapshotStore {
  load(streamId: string): Promise<Snapshot | undefined>;
  save(snapshot: Snapshot): Promise<void>;
  delete(streamId: string): Promise<void>;
}

export interface SnapshotPolicyContext<State = unknown> {
  readonly streamId: string;
  /** The stream version after the append. */
  readonly streamVersion: number;
  /** Events applied since the last snapshot (or since the start), including the new ones. */
  readonly eventsSinceSnapshot: number;
  readonly newEvents: readonly DomainEvent[];
  readonly state: State;
}

/** `{ every: n }`: when at least n events were applied since the last snapshot. `{ when }`: your rule. */
export type SnapshotPolicy<State = unknown> = { readonly every: number } | { readonly when: (ctx: SnapshotPolicyContext<State>) => boolean };

export interface SnapshotOptions<State> {
  readonly store: SnapshotStore;
  readonly policy: SnapshotPolicy<State>;
  /** Version of the state's shape (default 1). */
  readonly schemaVersion?: number;
  /** State → JSON-safe value (default: the state itself). */
  readonly toSnapshot?: (state: State) => unknown;
  /** The stored value → state (default: the value itself). */
  readonly fromSnapshot?: (value: unknown) => State;
}

export function checkSnapshotOptions<State>(o: SnapshotOptions<State>): void {
  if (typeof o !== 'object' || o === null || typeof o.store?.load !== 'function') throw invalidArgument('snapshots need a store');
  const p = o.policy as Partial<{ every: number; when: unknown }>;
  if (typeof p !== 'object' || p === null) throw invalidArgument('snapshots need a policy: { every: n } or { when }');
  if ('every' in p && (!Number.isInteger(p.every) || (p.every as number) < 1)) throw invalidArgument(`snapshot policy "every" must be a positive integer (got ${String(p.every)})`);
  if (!('every' in p) && typeof p.when !== 'function') throw invalidArgument('snapshots need a policy: { every: n } or { when }');
  if (o.schemaVersion !== undefined && (!Number.isSafeInteger(o.schemaVersion) || o.schemaVersion < 1)) throw invalidArgument('snapshot schemaVersion must be a positive integer');
}

export function shouldSnapshot<State>(policy: SnapshotPolicy<State>, ctx: SnapshotPolicyContext<State>): boolean {
  if ('every' in policy) return ctx.eventsSinceSnapshot >= policy.every;
  return policy.when(ctx);
}

/** Snapshots in memory (copies, via structuredClone). */
export class InMemorySnapshotStore implements SnapshotStore {
  readonly #map = new Map<string, Snapshot>();

  async load(streamId: string): Promise<Snapshot | undefined> {
    const s = this.#map.get(streamId);
    return s ? structuredClone(s) : undefined;
  }

  async save(snapshot: Snapshot): Promise<void> {
    const old = this.#map.get(snapshot.streamId);
    if (old && old.streamVersion > snapshot.streamVersion) return;
    this.#map.set(snapshot.streamId, structuredClone(snapshot));
  }

  async delete(streamId: string): Promise<void> {
    this.#map.delete(streamId);
  }

  /** Snapshots held (for tests). */
  get size(): number {
    return this.#map.size;
  }
}

export interface LoadedState<State> {
  readonly state: State;
  /** The stream's current version (what to append with). */
  readonly streamVersion: number;
  /** Global position of the stream's last event (0n when none). */
  readonly streamPosition: bigint;
  readonly streamExists: boolean;
  readonly truncateBefore: number;
  /** The snapshot used (its version), or undefined when the stream was replayed from the start. */
  readonly snapshotVersion: number | undefined;
  /** Events folded on top of the snapshot (or from the start). */
  readonly eventsApplied: number;
}

const PAGE = 1000;

/**
 * Loads a stream's state: the newest usable snapshot plus the tail, or every visible event.
 * Reads in pages of 1000 events.
 */
export async function loadState<State, Event extends DomainEvent>(
  store: EventStore,
  streamId: string,
  evolver: Evolver<State, Event>,
  snapshots?: SnapshotOptions<State>,
): Promise<LoadedState<State>> {
  if (snapshots) {
    const snap = await snapshots.store.load(streamId);
    if (snap && snap.schemaVersion === (snapshots.schemaVersion ?? 1)) {
      const tail = await foldFrom(store, streamId, evolver, snap.streamVersion + 1, () => (snapshots.fromSnapshot ? snapshots.fromSnapshot(snap.state) : (snap.state as State)));
      const usable =
        tail.truncateBefore === snap.truncateBefore &&
        snap.streamVersion <= tail.streamVersion &&
        (tail.eventsApplied > 0 ? tail.firstVersion === snap.streamVersion + 1 : snap.streamVersion === tail.streamVersion);
      if (usable) return { ...tail, snapshotVersion: snap.streamVersion };
    }
  }
  const full = await foldFrom(store, streamId, evolver, 1, () => evolver.initialState());
  return { ...full, snapshotVersion: undefined };
}

async function foldFrom<State, Event extends DomainEvent>(
  store: EventStore,
  streamId: string,
  evolver: Evolver<State, Event>,
  fromVersion: number,
  init: () => State,
): Promise<Omit<LoadedState<State>, 'snapshotVersion'> & { firstVersion: number | undefined }> {
  let state: State | undefined;
  let from: number | undefined = fromVersion;
  let applied = 0;
  let firstVersion: number | undefined;
  let meta: { streamVersion: number; streamPosition: bigint; streamExists: boolean; truncateBefore: number } | undefined;
  while (from !== undefined) {
    const page = await store.readStream(streamId, { fromVersion: from, maxCount: PAGE });
    meta ??= page;
    if (state === undefined) state = init();
    for (const e of page.events) {
      if (firstVersion === undefined) firstVersion = e.streamVersion;
      state = evolver.evolve(state, e as unknown as Event);
      applied++;
    }
    from = page.nextVersion;
  }
  return {
    state: state as State,
    streamVersion: meta!.streamVersion,
    streamPosition: meta!.streamPosition,
    streamExists: meta!.streamExists,
    truncateBefore: meta!.truncateBefore,
    eventsApplied: applied,
    firstVersion,
  };
}

/** Folds recorded events (for callers that already hold them). */
export function foldEvents<State, Event extends DomainEvent>(evolver: Evolver<State, Event>, events: readonly RecordedEvent[], state = evolver.initialState()): State {
  return evolveAll(evolver, state, events as unknown as Event[]);
}
