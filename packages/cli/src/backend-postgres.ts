/**
 * The CLI's PostgreSQL backend: one pool on the config's schema, shared by the stores. Lag comes
 * from the transport's `lag()`, messages published per topic from one read of its partition
 * counters; nothing is written except migrations (`create`).
 */
import { buildCausationGraph, type LagSource } from '@herald/core';
import type { RebuildOptions } from '@herald/eventsourcing';
import type { TopicStats } from '@herald/console';
import {
  createPgDatabase,
  createPostgresEventStore,
  createPostgresProjection,
  createPostgresSagaStore,
  createPostgresTransport,
  ensureMigrated,
  LOG_COMPONENT,
  migrate,
  type PgDatabase,
  PostgresDeadLetterStore,
  type PostgresProjectionDefinition,
  readPostgresCausation,
} from '@herald/postgres';
import { loadProjectionModule, loadViews, rebuildOnce, type OpenBackend, type OpenBackendOptions, recentStreams, sagaSource, topicStats } from './backend-common.ts';
import type { HeraldConfig } from './config.ts';

export async function openPostgresBackend(config: HeraldConfig, url: string, schema: string | undefined, options: OpenBackendOptions): Promise<OpenBackend> {
  const database = createPgDatabase({ connectionString: url, ...(schema ? { schema } : {}), max: 4, applicationName: 'herald-cli' });
  try {
    if (options.create) await migrate({ database });
    else await ensureMigrated(database, [LOG_COMPONENT]);
  } catch (e) {
    await database.close();
    throw e;
  }
  const deadLetters = new PostgresDeadLetterStore({ database });
  const transport = createPostgresTransport({ database }); // read here for lag only: no subscription, no retention timer
  const eventStore = createPostgresEventStore({ database });
  const sagaStore = createPostgresSagaStore({ database });
  const views = options.loadViews ? await loadViews(config) : [];
  return {
    kind: 'postgres',
    name: config.name,
    deadLetters,
    eventStore,
    views,
    sagas: sagaSource(sagaStore),
    topics: () => postgresTopicStats(database, transport),
    causation: async (correlationId, limit) => {
      const { messages, handlings } = await readPostgresCausation(database, correlationId, { limit });
      return buildCausationGraph(correlationId, messages, handlings);
    },
    recentStreams: (limit, category, type) => recentStreams(eventStore, limit, category, type),
    schemaVersions: async () => {
      const r = await database.query<{ component: string; version: number }>('SELECT component, version FROM herald_meta ORDER BY component');
      return Object.fromEntries(r.rows.map((row) => [row.component, row.version]));
    },
    rebuildProjection: async (name: string, rebuild: RebuildOptions) => {
      const definition = (await loadProjectionModule(config, name)) as PostgresProjectionDefinition;
      return rebuildOnce(createPostgresProjection(eventStore, definition, { mode: 'async' }), rebuild);
    },
    close: async () => {
      await transport.close();
      await eventStore.close();
      await deadLetters.close();
      await database.close();
    },
  };
}

/**
 * Topics, messages published (the sum of the partitions' next offsets), and per consumer group
 * the messages committed and the lag (the transport's `lag()`), summed over partitions.
 */
export async function postgresTopicStats(database: PgDatabase, lagSource: LagSource): Promise<TopicStats[]> {
  const [topics, lag] = await Promise.all([
    database.query<{ name: string; partitions: number; published: string }>(
      `SELECT t.name, t.partitions, COALESCE(SUM(p.next_offset), 0) AS published
         FROM herald_topics t LEFT JOIN herald_partitions p ON p.topic_id = t.id GROUP BY t.id ORDER BY t.name`,
    ),
    lagSource.lag(),
  ]);
  return topicStats(
    topics.rows.map((t) => ({ ...t, published: Number(t.published) })),
    lag,
  );
}
