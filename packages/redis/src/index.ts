// Public surface of @herald/redis.
export { RedisLeaseStore, createRedisLeaseStore } from './lease-store.ts';
export type { RedisLeaseStoreOptions } from './lease-store.ts';
export { CONNECTION_DEFAULTS } from './connection.ts';
export type { RedisConnection } from './connection.ts';
export { DEFAULT_PREFIX } from './keys.ts';
