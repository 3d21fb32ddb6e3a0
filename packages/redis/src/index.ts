// Public surface of @herald/redis.
export { createRedisTransport, RedisTransport, REDIS_DURABILITY } from './transport.ts';
export type { RedisTransportOptions, RedisRetentionOptions, RedisTransportStats } from './transport.ts';
export { RedisLeaseStore, createRedisLeaseStore } from './lease-store.ts';
export type { RedisLeaseStoreOptions } from './lease-store.ts';
export { CONNECTION_DEFAULTS } from './connection.ts';
export type { RedisConnection } from './connection.ts';
export { DEFAULT_PREFIX } from './keys.ts';
