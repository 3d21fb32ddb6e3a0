// Public surface of @herald/postgres.
export { createPgDatabase, PgDatabase, isTransientPgError } from './database.ts';
export type { PgConnectionOptions, PgDatabaseSource, PgSsl } from './database.ts';
export { migrate, registerComponent, registeredComponents, ensureMigrated } from './migrations.ts';
export type { PgComponent, MigrateOptions, MigrateResult } from './migrations.ts';
export { LOG_COMPONENT, EVENT_STORE_COMPONENT } from './schema.ts';
export { createPostgresEventStore, PostgresEventStore } from './event-store.ts';
export type { PostgresEventStoreOptions, PostgresEventStoreStats, PgInlineHook } from './event-store.ts';
