// Public surface of @herald/rabbitmq.
export { createRabbitMqTransport, RabbitMqTransport, DELAY_BUCKETS, delayBucket } from './transport.ts';
export type { RabbitMqTransportOptions } from './transport.ts';
export { RabbitMqSubscription } from './subscription.ts';
export { encodeMessage, decodeMessage, isJsonContentType, CE_PREFIX, KEY_HEADER, DATA_HEADER, ATTEMPTS_HEADER } from './binding.ts';
export type { EncodedMessage, DecodedMessage, IncomingMessage } from './binding.ts';
export { Names, NAMESPACE_RE } from './names.ts';
