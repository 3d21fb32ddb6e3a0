/**
 * What the console reads and controls, as interfaces: the CLI (or a test) opens the backend the
 * config names and hands these to `createConsoleServer`. The console never opens a store itself,
 * so it works the same on every backend that can fill them.
 */
import type { CausationGraph, DeadLetterStore } from '@herald/core';
import type { EventStore, RecordedEvent } from '@herald/eventsourcing';

/** One consumer group on one topic, summed over partitions. */
export interface GroupStats {
  readonly group: string;
  /** Messages the group has committed (handled or dead-lettered), over all partitions. */
  readonly handled: number;
  /** Messages after the committed position, over all partitions. */
  readonly lag: number;
  /** Epoch ms of the oldest unhandled message, when known and lag > 0. */
  readonly oldestUnhandledAt: number | null;
}

export interface TopicStats {
  readonly name: string;
  readonly partitions: number;
  /** Messages ever published (the sum of every partition's next offset). */
  readonly published: number;
  readonly groups: readonly GroupStats[];
}

export type ServiceState = 'running' | 'stopping' | 'stopped' | 'crashed' | 'restarting';

export interface ServiceInfo {
  readonly name: string;
  readonly state: ServiceState;
  readonly pid: number | null;
  readonly restarts: number;
  readonly uptimeMs: number;
  readonly lastExit: { readonly code: number | null; readonly signal: string | null; readonly at: number } | null;
  readonly restartInMs: number | null;
}

/** The supervisor, as the console sees it. Unknown names throw `HERALD_ERR_NOT_FOUND`. */
export interface ServiceControl {
  status(): readonly ServiceInfo[];
  startService(name: string): ServiceInfo;
  stopService(name: string): Promise<ServiceInfo>;
}

/** How the streams of one category fold into a state (the service's evolver), for time travel. */
export interface StreamView {
  readonly category: string;
  initialState(): unknown;
  evolve(state: unknown, event: RecordedEvent): unknown;
}

/** A saga instance as listed: the saga store's instance (any further fields are sent as they are), with its status as `state`. */
export interface SagaSummary {
  readonly saga: string;
  readonly key: string;
  readonly state: string;
}

/** One line of an instance's timeline (the store's entry; further fields are sent as they are). */
export interface SagaTimelineEntry {
  readonly at?: number;
  readonly kind?: string;
}

/** The saga store's read side. */
export interface SagaSource {
  list(query: { state?: string; cursor?: string; limit?: number }): Promise<{ readonly instances: readonly SagaSummary[]; readonly nextCursor?: string }>;
  timeline(saga: string, key: string): Promise<readonly SagaTimelineEntry[]>;
  /** Instance counts by state; computed from `list` when absent. */
  countByState?(): Promise<Readonly<Record<string, number>>>;
}

export interface ConsoleSources {
  /** The system's name (config `name`). */
  readonly name: string;
  topics(): Promise<readonly TopicStats[]>;
  readonly deadLetters: DeadLetterStore;
  readonly eventStore?: EventStore;
  readonly views?: readonly StreamView[];
  readonly sagas?: SagaSource;
  /** The causation graph of `correlationId` (`buildCausationGraph` from @herald/core): its messages as a tree, their handlers with durations and failures; at most `limit` messages read from each source. */
  causation?(correlationId: string, limit: number): Promise<CausationGraph>;
  /** Recent stream ids, newest first (for the stream browser's list); with `type`, streams with a recent event of that type. */
  recentStreams?(limit: number, category?: string, type?: string): Promise<readonly string[]>;
}
