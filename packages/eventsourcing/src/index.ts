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
