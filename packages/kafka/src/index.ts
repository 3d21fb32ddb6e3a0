// Public surface of @herald/kafka.
export { createKafkaTransport, KafkaTransport, DEFAULT_KAFKA_MAX_PAYLOAD_BYTES } from './kafka-transport.ts';
export type { KafkaTransportOptions } from './kafka-transport.ts';
export { KafkaSubscription } from './kafka-subscription.ts';
export type { KafkaConsumerTuning } from './kafka-subscription.ts';
export { encodeBinary, decodeRecord, isJsonMediaType } from './binding.ts';
export type { EncodedRecord, KafkaHeaders, KafkaHeaderValue } from './binding.ts';
export { startMockCluster, kcatAvailable } from './mock-cluster.ts';
export type { MockCluster, MockClusterOptions } from './mock-cluster.ts';
