// Public surface of @herald/postgres.
export { createPgDatabase, PgDatabase, isTransientPgError } from './database.ts';
export type { PgConnectionOptions, PgDatabaseSource, PgSsl } from './database.ts';
export { migrate, registerComponent, registeredComponents, ensureMigrated } from './migrations.ts';
export type { PgComponent, MigrateOptions, MigrateResult } from './migrations.ts';
export { LOG_COMPONENT, EVENT_STORE_COMPONENT } from './schema.ts';
export { createPostgresEventStore, PostgresEventStore } from './event-store.ts';
export type { PostgresEventStoreOptions, PostgresEventStoreStats, PgInlineHook } from './event-store.ts';
export { OUTBOX_COMPONENT, SAGA_COMPONENT } from './schema.ts';
export { createPostgresUnitOfWork, PostgresUnitOfWork } from './unit-of-work.ts';
export type { PostgresUnitOfWorkOptions } from './unit-of-work.ts';
export { createPostgresOutboxStore, PostgresOutboxStore } from './outbox-store.ts';
export type { PostgresOutboxStoreOptions } from './outbox-store.ts';
export { createPostgresSchedulerStore, PostgresSchedulerStore } from './scheduler-store.ts';
export type { PostgresSchedulerStoreOptions } from './scheduler-store.ts';
export { createPostgresSagaStore, PostgresSagaStore } from './saga-store.ts';
export type { PostgresSagaStoreOptions } from './saga-store.ts';
