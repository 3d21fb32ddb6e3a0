/**
 * Opens the stores a config's backend names, for the commands and the console: dead letters,
 * the event store, the saga store, topic and lag figures, causation lookups, stream views
 * (evolvers) and projection rebuilds. One module per backend; this one picks.
 */
import type { HeraldConfig } from './config.ts';
import type { OpenBackend, OpenBackendOptions } from './backend-common.ts';

export type { OpenBackend, OpenBackendOptions } from './backend-common.ts';

export async function openBackend(config: HeraldConfig, options: OpenBackendOptions = {}): Promise<OpenBackend> {
  const b = config.backend;
  if (b.kind === 'postgres') {
    const { openPostgresBackend } = await import('./backend-postgres.ts'); // pg only when a config names it
    return openPostgresBackend(config, b.url, b.schema, options);
  }
  const { openSqliteBackend } = await import('./backend-sqlite.ts');
  return openSqliteBackend(config, b.path, options);
}
