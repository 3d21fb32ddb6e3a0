// Public surface of @herald/eventsourcing. Internals shared with backends: '@herald/eventsourcing/internal'.
export { DEFAULT_MAX_COUNT, MAX_READ_COUNT, DEFAULT_SUBSCRIPTION_BATCH } from './types.ts';
export type {
  EventStore,
  NewEvent,
  RecordedEvent,
  ExpectedVersion,
  AppendOptions,
  AppendResult,
  ReadDirection,
  ReadStreamOptions,
  ReadStreamResult,
  ReadAllOptions,
  ReadAllResult,
  StreamMetadata,
  StreamState,
  StreamInfo,
  DeleteStreamOptions,
  SubscribeOptions,
  EventSubscription,
  CheckpointStore,
} from './types.ts';
export { ConcurrencyError } from './errors.ts';
export { EventCatalog, upcaster } from './catalog.ts';
export type { Upcaster, UpcastContext, EventCatalogOptions, UnknownEventPolicy } from './catalog.ts';
export { InMemoryEventStore } from './memory-event-store.ts';
export type { InMemoryEventStoreOptions, InlineHook } from './memory-event-store.ts';
export { toCloudEvent } from './cloudevents.ts';
export type { ToCloudEventOptions } from './cloudevents.ts';
export { categoryOf } from './backend.ts';
export { decided, evolveAll } from './decider.ts';
export type { Decider, Evolver, DomainEvent } from './decider.ts';
export { createCommandHandler } from './command-handler.ts';
export type { CommandHandler, CommandHandlerOptions, CommandRetryOptions, CommandResult, HandleOptions } from './command-handler.ts';
export { InMemorySnapshotStore, loadState, foldEvents } from './snapshots.ts';
export type { Snapshot, SnapshotStore, SnapshotPolicy, SnapshotPolicyContext, SnapshotOptions, LoadedState } from './snapshots.ts';
export { stateAt, stateHistory } from './time-travel.ts';
export type { StateAt, PointInTime, StateStep, StateHistory, StateHistoryOptions } from './time-travel.ts';
export { DeciderSpecification } from './decider-specification.ts';
export type { DeciderThen, DeciderWhen } from './decider-specification.ts';
export { waitForPosition, PositionWaiters, DEFAULT_WAIT_MS } from './projections.ts';
export type { Projection, ProjectionMode, ProjectionStatus, RebuildOptions, RebuildProgress, RebuildResult, WaitOptions, ProjectionRetryOptions } from './projections.ts';
export { createInMemoryProjection } from './memory-projection.ts';
export type { InMemoryProjection, InMemoryProjectionDefinition, InMemoryProjectionOptions } from './memory-projection.ts';
export { defineSaga, decideSaga, sagaKeyOf, sagaTimerId, send, onSuccess, onFailure, SAGA_STATUSES, TERMINAL_SAGA_STATUSES, SAGA_TIMER_TYPE, DEFAULT_SAGA_RETRY } from './saga.ts';
export type {
  SagaDefinition,
  SagaDefinitionInput,
  SagaStep,
  SagaCompensation,
  SagaReply,
  SagaMessage,
  SagaActionResult,
  SagaActionContext,
  SagaRetryPolicy,
  SagaStatus,
  SagaInstance,
  SagaFailure,
  SagaError,
  SagaTimer,
  SagaTimelineEntry,
  SagaTimelineKind,
  SagaOutgoing,
  SagaInput,
  SagaDecision,
  DecideContext,
} from './saga.ts';
export { SagaConcurrencyError, DEFAULT_SAGA_PAGE, MAX_SAGA_PAGE } from './saga-store.ts';
export type { SagaStore, SagaListOptions, SagaPage, StoredSagaTimelineEntry, SagaStatusCount } from './saga-store.ts';
export { MemorySagaStore } from './saga-memory-store.ts';
export { createSagaRuntime } from './saga-runtime.ts';
export type { SagaRuntime, SagaRuntimeOptions, SagaRuntimeStats, SagaHandleResult } from './saga-runtime.ts';
export { SagaSpecification, SAGA_SPEC_EPOCH } from './saga-specification.ts';
export type { SagaSpecInput, SagaExpectation, SagaThen, SagaWhen } from './saga-specification.ts';
