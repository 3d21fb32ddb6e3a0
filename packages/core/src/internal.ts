// Internals shared by Herald's own packages; no stability promise.
export { RoundRobin } from './partitioner.ts';
export { pageLimit } from './dead-letter.ts';
export { tooLarge } from './memory-transport.ts';
export { positiveInt, nonNegativeInt, positiveNumber, nonNegativeNumber, partitionCount } from './options.ts';
export { DeferredSubscription } from './deferred-subscription.ts';
export { traced, traceHandle, notify, instrumentPublisher } from './instrumentation.ts';
export type { HandleFields, InstrumentedPublisher } from './instrumentation.ts';
export { checkInboxKey, checkOutboxTopic, encodeOutgoing, storedOutgoing } from './outbox-encoding.ts';
export type { EncodedOutgoing } from './outbox-encoding.ts';
export { planRetention, retentionDue } from './log-retention.ts';
export type { RetentionPlan } from './log-retention.ts';
