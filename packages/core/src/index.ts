// Public surface of @herald/core. Internals live behind '@herald/core/internal'.
export { HeraldError, PermanentError, TransientError, isHeraldError, isRetryable, describeError, ERROR_CODES } from './errors.ts';
export type { HeraldErrorCode, HeraldErrorOptions } from './errors.ts';
export { systemClock, systemRandom, sleepWith } from './clock.ts';
export type { Clock, Random, TimerHandle } from './clock.ts';
export { createEnvelope, validateEnvelope, ensureEnvelope, decodeStoredEnvelope, envelopeProblems, encodeEnvelope, decodeEnvelope, encodedSize, CONTEXT_ATTRIBUTES, HERALD_EXTENSIONS } from './envelope.ts';
export type { CloudEvent, EnvelopeInput, ExtensionValue } from './envelope.ts';
export { defineEvent, defineCommand, DefinitionRegistry, dataschemaFor, versionOf, validateData } from './definitions.ts';
export type { MessageDefinition, EventDefinition, CommandDefinition, DefinitionOptions, DataOf, SchemaIssue, StandardSchemaV1 } from './definitions.ts';
export { murmur2, partitionForKey } from './partitioner.ts';
export { DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_UNCOMMITTED_PER_PARTITION, DEFAULT_PARTITIONS, TOPIC_NAME_RE } from './transport.ts';
export type {
  Transport,
  TransportCapabilities,
  LogTransportTuning,
  OutgoingMessage,
  PublishReceipt,
  TopicInfo,
  EnsureTopicOptions,
  PartitionChange,
  SubscribeOptions,
  Subscription,
  Delivery,
} from './transport.ts';
export { OffsetTracker } from './offset-tracker.ts';
export { MemoryLeaseStore, PartitionBalancer } from './lease.ts';
export type { LeaseStore, LeaseFence, LeaseGrant, PartitionBalancerOptions } from './lease.ts';
export { MemoryDeadLetterStore, matchesDeadLetter, DEFAULT_DEAD_LETTER_PAGE, MAX_DEAD_LETTER_PAGE } from './dead-letter.ts';
export type {
  DeadLetterStore,
  DeadLetterEntry,
  NewDeadLetter,
  DeadLetterFilter,
  DeadLetterPage,
  DeadLetterSelector,
  DeadLetterStatus,
  DeadLetterError,
  WriteOptions,
  FenceCheck,
} from './dead-letter.ts';
export { LogSubscription } from './log-subscription.ts';
export type { LogRecord, LogSource, LogSubscriptionOptions } from './log-subscription.ts';
export { createMemoryTransport, MemoryTransport } from './memory-transport.ts';
export type { MemoryTransportOptions } from './memory-transport.ts';
export { createPublisher } from './publisher.ts';
export type { Publisher, PublisherOptions, PublishOptions, PublishItem } from './publisher.ts';
export { createConsumer, backoff, DEFAULT_RETRY } from './router.ts';
export type { Consumer, ConsumerOptions, ConsumerStats, HandlerOptions, HandlerContext, MessageContext, MessageHandler, Middleware, RetryPolicy } from './router.ts';
export type { UnitOfWork, Transaction, OutboxWrite, ScheduledWrite, InboxKey, InboxRecord, InboxResult } from './unit-of-work.ts';
export { channels, CHANNEL_NAMES, isLagSource } from './instrumentation.ts';
export { buildCausationGraph, causationMessage, deadLetterCausation, inboxHandling, recordHandling, storedEventMessage } from './causation.ts';
export type { CausationGraph, CausationNode, CausationMessage, HandlingRecord, HandlingRecorder } from './causation.ts';
export type { PublishMessage, HandleMessage, AppendMessage, RelayMessage, SagaStepMessage, DeliverMessage, RetryMessage, DeadLetterMessage, LagSource, PartitionLag } from './instrumentation.ts';
export type { OutboxStore, OutboxRecord, OutboxBacklog, SchedulerStore, ScheduledRecord } from './outbox.ts';
export { MemoryUnitOfWork, checkScheduled } from './memory-unit-of-work.ts';
export type { MemoryTx, MemoryUnitOfWorkOptions } from './memory-unit-of-work.ts';
export { createOutboxRelay, DEFAULT_OUTBOX_RETENTION } from './outbox-relay.ts';
export type { OutboxRelay, OutboxRelayOptions, OutboxRelayStats, OutboxRetention } from './outbox-relay.ts';
export { createScheduler } from './scheduler.ts';
export type { Scheduler, SchedulerOptions, SchedulerStats } from './scheduler.ts';
export type { ProducedMessage, ConsumedMessage, ConsumerDescription } from './router.ts';
export type { ScheduledReceipt } from './publisher.ts';
export { describeFlow } from './flow.ts';
export type { Flow, FlowNode, FlowEdge, FlowService } from './flow.ts';
export type { LeasedLoopOptions, LoopRetryOptions, LastError } from './background-loop.ts';
