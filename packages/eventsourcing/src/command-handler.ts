/**
 * The command handler: load → decide → append with the loaded version → (snapshot) → result.
 *
 *   const handle = createCommandHandler(store, cartDecider, { snapshots: { store: snaps, policy: { every: 50 } } });
 *   const { position, newState } = await handle(`cart-${id}`, { type: 'AddItem', … });
 *   await waitForPosition(cartSummary, position, { timeoutMs: 2000 }); // read your own write
 *
 * Concurrency: the append expects exactly the version it loaded. When another writer got there
 * first (`HERALD_ERR_CONCURRENCY`), the handler loads again, decides again on the fresh state and
 * retries — at most `maxAttempts` times in all, sleeping an exponential backoff with jitter
 * between attempts (injected clock and random) — then rethrows the last `ConcurrencyError`.
 * When the caller passes its own `expectedVersion` (say, the version a user looked at) a
 * conflict is not retried: it is the caller's answer. Errors thrown by `decide` (domain
 * refusals) and every other failure propagate at once, nothing appended.
 *
 * Events get fresh ids on every attempt, so retries after a conflict are new appends; a
 * caller that retries a whole `handle()` after a timeout may pass `eventIds` to make the
 * append idempotent (see `EventStore.appendToStream`).
 *
 * Snapshots (optional, per stream type): after a successful append the policy decides whether
 * to save the new state. A failed snapshot save does not fail the command (the events are
 * committed); it is reported to `onSnapshotError` (default: a process warning).
 */
import { type Clock, type Random, systemClock, systemRandom } from '@herald/core';
import { invalidArgument } from './errors.ts';
import { decided, evolveAll, type Decider, type DomainEvent } from './decider.ts';
import { checkSnapshotOptions, loadState, shouldSnapshot, type SnapshotOptions } from './snapshots.ts';
import { ConcurrencyError } from './errors.ts';
import type { AppendResult, EventStore, ExpectedVersion, NewEvent } from './types.ts';

export interface CommandRetryOptions {
  /** Attempts in all, the first included (default 10). */
  readonly maxAttempts?: number;
  /** First backoff, ms (default 2). */
  readonly initialDelayMs?: number;
  /** Largest backoff, ms (default 250). */
  readonly maxDelayMs?: number;
  /** Random spread, 0–1, of each delay (default 0.5). */
  readonly jitter?: number;
}

export interface CommandHandlerOptions<State, Event extends DomainEvent> {
  readonly snapshots?: SnapshotOptions<State>;
  readonly retry?: CommandRetryOptions;
  readonly clock?: Clock;
  readonly random?: Random;
  /** Turns a decided event into what is appended (ids, schema version, metadata); default `{ type, data }`. */
  readonly toNewEvent?: (event: Event, context: { streamId: string; index: number }) => NewEvent;
  readonly onSnapshotError?: (error: unknown, streamId: string) => void;
}

export interface HandleOptions {
  /** Append with this version and do not retry a conflict (default: the loaded version, retried). */
  readonly expectedVersion?: ExpectedVersion;
  readonly correlationId?: string;
  readonly causationId?: string;
  readonly metadata?: Readonly<Record<string, string | number | boolean>>;
  /** Ids for the decided events, in order (for an idempotent retry of the whole call). */
  readonly eventIds?: readonly string[];
  /** Aborts the backoff between attempts (rejects with the signal's reason). */
  readonly signal?: AbortSignal;
}

export interface CommandResult<State, Event extends DomainEvent> {
  readonly streamId: string;
  /** The stream's version after the command (unchanged when it decided nothing). */
  readonly streamVersion: number;
  /** Global position of the last event appended — or of the stream's last event when nothing was decided. Wait for it with `waitForPosition`. */
  readonly position: bigint;
  readonly newEvents: readonly Event[];
  readonly newState: State;
  /** Attempts made (1 when there was no conflict). */
  readonly attempts: number;
  /** The append's result; undefined when nothing was decided. */
  readonly appendResult: AppendResult | undefined;
}

export type CommandHandler<Command, State, Event extends DomainEvent> = (streamId: string, command: Command, options?: HandleOptions) => Promise<CommandResult<State, Event>>;

export function createCommandHandler<Command, State, Event extends DomainEvent>(
  store: EventStore,
  decider: Decider<Command, State, Event>,
  options: CommandHandlerOptions<State, Event> = {},
): CommandHandler<Command, State, Event> {
  if (typeof decider?.decide !== 'function' || typeof decider.evolve !== 'function' || typeof decider.initialState !== 'function') {
    throw invalidArgument('a decider needs decide, evolve and initialState functions');
  }
  if (options.snapshots) checkSnapshotOptions(options.snapshots);
  const retry = {
    maxAttempts: options.retry?.maxAttempts ?? 10,
    initialDelayMs: options.retry?.initialDelayMs ?? 2,
    maxDelayMs: options.retry?.maxDelayMs ?? 250,
    jitter: options.retry?.jitter ?? 0.5,
  };
  if (!Number.isInteger(retry.maxAttempts) || retry.maxAttempts < 1 || retry.maxAttempts > 1000) throw invalidArgument(`retry.maxAttempts must be an integer from 1 to 1000 (got ${retry.maxAttempts})`);
  if (!(retry.initialDelayMs >= 0) || !(retry.maxDelayMs >= retry.initialDelayMs) || !(retry.jitter >= 0 && retry.jitter <= 1)) throw invalidArgument('retry delays must be non-negative, maxDelayMs ≥ initialDelayMs, jitter within 0–1');
  const clock = options.clock ?? systemClock;
  const random = options.random ?? systemRandom;
  const snapshots = options.snapshots;
  const onSnapshotError =
    options.onSnapshotError ?? ((e: unknown, streamId: string) => process.emitWarning(`snapshot of stream "${streamId}" was not saved: ${(e as Error)?.message ?? String(e)}`, 'HeraldSnapshotWarning'));
  const toNewEvent: (event: Event, context: { streamId: string; index: number }) => NewEvent = options.toNewEvent ?? ((e: Event) => ({ type: e.type, data: e.data }));

  return async (streamId, command, handleOptions = {}) => {
    const explicit = handleOptions.expectedVersion;
    for (let attempt = 1; ; attempt++) {
      const loaded = await loadState(store, streamId, decider, snapshots);
      const events = decided(decider.decide(command, loaded.state));
      if (events.length === 0) {
        return { streamId, streamVersion: loaded.streamVersion, position: loaded.streamPosition, newEvents: [], newState: loaded.state, attempts: attempt, appendResult: undefined };
      }
      const toAppend = events.map((e, index) => {
        const n = toNewEvent(e, { streamId, index });
        const id = handleOptions.eventIds?.[index];
        return {
          ...n,
          ...(id !== undefined ? { id } : {}),
          ...(handleOptions.correlationId !== undefined && n.correlationId === undefined ? { correlationId: handleOptions.correlationId } : {}),
          ...(handleOptions.causationId !== undefined && n.causationId === undefined ? { causationId: handleOptions.causationId } : {}),
          ...(handleOptions.metadata !== undefined ? { metadata: { ...handleOptions.metadata, ...n.metadata } } : {}),
        };
      });
      let result: AppendResult;
      try {
        result = await store.appendToStream(streamId, toAppend, { expectedVersion: explicit ?? loaded.streamVersion });
      } catch (e) {
        if (!(e instanceof ConcurrencyError) || explicit !== undefined || attempt >= retry.maxAttempts) throw e;
        const base = Math.min(retry.maxDelayMs, retry.initialDelayMs * 2 ** (attempt - 1));
        const delay = Math.max(0, Math.round(base * (1 - retry.jitter + random.next() * 2 * retry.jitter)));
        await clock.sleep(delay, handleOptions.signal);
        continue;
      }
      const newState = evolveAll(decider, loaded.state, events);
      if (snapshots && !result.idempotent) {
        const ctx = { streamId, streamVersion: result.streamVersion, eventsSinceSnapshot: loaded.eventsApplied + events.length, newEvents: events, state: newState };
        if (shouldSnapshot(snapshots.policy, ctx)) {
          try {
            await snapshots.store.save({
              streamId,
              streamVersion: result.streamVersion,
              schemaVersion: snapshots.schemaVersion ?? 1,
              truncateBefore: loaded.truncateBefore,
              state: snapshots.toSnapshot ? snapshots.toSnapshot(newState) : newState,
              savedAt: clock.now(),
            });
          } catch (e) {
            onSnapshotError(e, streamId);
          }
        }
      }
      return { streamId, streamVersion: result.streamVersion, position: result.position, newEvents: events, newState, attempts: attempt, appendResult: result };
    }
  };
}
