// Public surface of @herald/console.
export type {
  ConsoleSources,
  TopicStats,
  GroupStats,
  ServiceControl,
  ServiceInfo,
  ServiceState,
  StreamView,
  SagaSource,
  SagaSummary,
  SagaTimelineEntry,
} from './sources.ts';
export { createConsoleServer, GENERIC_VIEW, stringify } from './server.ts';
export type { ConsoleServer, ConsoleServerOptions, Snapshot, Sample, TopicSample, TopicView, DeadLetterSummary } from './server.ts';
export { ensureAppBuilt, appBuildStale, APP_SOURCE_DIR, APP_DIST_DIR } from './build-app.ts';
