// Public surface of @herald/testkit.
export { ManualClock, MANUAL_CLOCK_EPOCH, flushMicrotasks } from './manual-clock.ts';
export type { ManualClockOptions } from './manual-clock.ts';
export { waitFor, sleep, assertDelivered, assertOrderPerKey, diffDelivered, uniqueName, stressCount, Scope, withScope, DEFAULT_WAIT_MS } from './helpers.ts';
export type { WaitForOptions, DeliveredDiff } from './helpers.ts';
export { describeLeaseStoreContract, leaseStoreScenarios, SHORT_TTL_MS, LONG_TTL_MS } from './lease-store-contract.ts';
export type { LeaseStoreHarness, LeaseStoreFactory } from './lease-store-contract.ts';
export { describeDeadLetterContract, deadLetterScenarios } from './dead-letter-contract.ts';
export type { DeadLetterStoreHarness, DeadLetterStoreFactory } from './dead-letter-contract.ts';
export {
  describeTransportContract,
  transportScenarios,
  routerScenarios,
  publishSubscribe,
  batchPublishReceipts,
  orderPerKey,
  everyGroupGetsEveryMessage,
  consumerGroupSplitsAndRebalances,
  redeliveryOnNack,
  redeliveryAfterMemberLost,
  redeliveryAfterMemberTransportClosed,
  newGroupReplaysFromStart,
  concurrentPublishers,
  payloadLimit,
  resumeFromCommitted,
  closeWhileUnsettled,
  maxInFlightBoundsUnsettled,
  ensureTopicPartitions,
  closedTransportRefuses,
  reconnectAfterBrokerRestart,
} from './transport-contract.ts';
export type { TransportContractOptions, TransportScenario } from './transport-contract.ts';
export { perKeyOrderUnderParallelism, deadLetterAfterMaxAttempts, permanentErrorDeadLettersAtOnce, redriveReachesOnlyFailedGroup, parkTheKey, failedRedriveKeepsKeyParked, ContractItemEvent } from './router-scenarios.ts';
export type { ContractItem } from './router-scenarios.ts';
export { Collector, TransportHarness, withTransport, within, idOf, idsOf, SETTLE_MS } from './transport-harness.ts';
export type { Need } from './transport-harness.ts';
export { serversRequired, isListening, serverSkipReason, freePort, PrivateServer } from './servers.ts';
export type { PrivateServerOptions } from './servers.ts';
export { describeEventStoreContract, eventStoreScenarios } from './event-store-contract.ts';
export type { EventStoreHarness, EventStoreFactory, EventStoreContext, EventStoreScenario } from './event-store-contract.ts';
// Given/when/then for deciders lives beside the deciders (pure, no test runner needed); re-exported for users of the testkit.
export { DeciderSpecification } from '@herald/eventsourcing';
export type { DeciderThen, DeciderWhen } from '@herald/eventsourcing';
export { SagaSpecification } from '@herald/eventsourcing';
export type { SagaSpecInput, SagaExpectation, SagaThen, SagaWhen } from '@herald/eventsourcing';
export { describeProjectionContract, projectionScenarios } from './projection-contract.ts';
export type { ProjectionContractHarness, ProjectionContractFactory, ContractProjection, ContractProjectionOptions, ContractRow, ProjectionScenario } from './projection-contract.ts';
export { describeOutboxContract, outboxScenarios } from './outbox-contract.ts';
export type { OutboxScenario } from './outbox-contract.ts';
export { describeInboxContract, inboxScenarios } from './inbox-contract.ts';
export type { InboxScenario } from './inbox-contract.ts';
export { describeSchedulerContract, schedulerScenarios } from './scheduler-contract.ts';
export type { SchedulerScenario } from './scheduler-contract.ts';
export { PublishLog, contractMessage, startOn } from './unit-of-work-harness.ts';
export type { UnitOfWorkHarness, UnitOfWorkFactory, UnitOfWorkFactoryOptions, PublishedEntry, RecordingBehaviour } from './unit-of-work-harness.ts';
export { describeSagaStoreContract, sagaStoreScenarios } from './saga-store-contract.ts';
export type { SagaStoreHarness, SagaStoreFactory, SagaStoreScenario } from './saga-store-contract.ts';
export {
  checkoutSaga,
  createCheckoutSaga,
  checkoutConversation,
  checkoutOrder,
  waitForCheckout,
  CHECKOUT_UNTIL_SHIPPING,
  CHECKOUT_SHIPPING_TIMED_OUT,
  startCheckoutServices,
  memoryCheckoutKv,
  CHECKOUT_TOPICS,
  DECLINE_ABOVE,
  OUT_OF_STOCK_SKU,
  NOWHERE,
  REFUND_BROKEN_CUSTOMER,
  FLAKY_PAYER_CUSTOMER,
  OrderPlaced,
  CompleteOrder,
  CancelOrder,
  OrderCompleted,
  OrderCancelled,
  ChargePayment,
  PaymentSucceeded,
  PaymentFailed,
  RefundPayment,
  PaymentRefunded,
  PaymentRefundFailed,
  ReserveInventory,
  InventoryReserved,
  InventoryReservationFailed,
  ReleaseInventory,
  InventoryReleased,
  ShipOrder,
  OrderShipped,
} from './checkout-saga.ts';
export type { CheckoutState, CheckoutItem, OrderPlacedData, CheckoutSagaOptions, CheckoutKv, CheckoutEffect, CheckoutServices, CheckoutServicesOptions, PaymentRecord, ReservationRecord, OrderRecord } from './checkout-saga.ts';
export { forkChild, stopChild } from './child-process.ts';
export type { ChildHandle, ForkChildOptions } from './child-process.ts';
export { runSagaCrashLoop, crashLoopSizes, seededRandom } from './saga-crash-loop.ts';
export type { CrashLoopRun, SagaCrashLoopOptions, SagaCrashLoopSummary } from './saga-crash-loop.ts';
