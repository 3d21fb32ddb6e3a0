// Public surface of @herald/sqlite.
export { openDatabase, SqliteDatabase, SCHEMA_VERSION, BUSY } from './database.ts';
export type { OpenDatabaseOptions, SqliteSynchronous, DatabaseSource } from './database.ts';
export { SqliteLeaseStore } from './lease-store.ts';
export type { SqliteLeaseStoreOptions } from './lease-store.ts';
export { SqliteDeadLetterStore } from './dead-letter-store.ts';
export type { SqliteDeadLetterStoreOptions, SqliteDeadLetterEntry } from './dead-letter-store.ts';
export { createSqliteTransport, SqliteTransport } from './transport.ts';
export type { SqliteTransportOptions, SqliteRetentionOptions, SqliteTransportStats, RetentionResult } from './transport.ts';
export { createSqliteEventStore, SqliteEventStore } from './event-store.ts';
export type { SqliteEventStoreOptions, SqliteEventStoreStats, InlineBatchHook } from './event-store.ts';
export { EVENT_STORE_SCHEMA_VERSION } from './database.ts';
export { SqliteSnapshotStore } from './event-store-snapshots.ts';
export { createSqliteProjection, SqliteProjection, projectionPosition } from './projections.ts';
export type { SqliteProjectionDefinition, SqliteProjectionContext, SqliteProjectionOptions } from './projections.ts';
