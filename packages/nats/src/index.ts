// Public surface of @herald/nats: the NATS JetStream transport and the NATS KV lease store.
export { createNatsTransport, NatsTransport } from './transport.ts';
export type { NatsTransportOptions } from './transport.ts';
export type { NatsTopicStats } from './lag.ts';
export { createNatsLeaseStore, NatsLeaseStore, openLeaseBucket } from './lease-store.ts';
export type { NatsLeaseStoreOptions } from './lease-store.ts';
export { streamName, subjectOf, consumerPrefix } from './names.ts';
