/**
 * The CLI's SQLite backend: one connection to the file, shared by the stores. Lag comes from the
 * transport's `lag()`, messages published per topic from one read of its partition counters:
 * reads only, safe while the services write.
 */
import { existsSync } from 'node:fs';
import { buildCausationGraph, HeraldError, type LagSource } from '@herald/core';
import type { RebuildOptions } from '@herald/eventsourcing';
import type { TopicStats } from '@herald/console';
import {
  createSqliteEventStore,
  createSqliteProjection,
  createSqliteSagaStore,
  createSqliteTransport,
  openDatabase,
  readSqliteCausation,
  type SqliteDatabase,
  SqliteDeadLetterStore,
  type SqliteProjectionDefinition,
} from '@herald/sqlite';
import { loadProjectionModule, loadViews, rebuildOnce, type OpenBackend, type OpenBackendOptions, recentStreams, sagaSource, topicStats } from './backend-common.ts';
import type { HeraldConfig } from './config.ts';

export async function openSqliteBackend(config: HeraldConfig, path: string, options: OpenBackendOptions): Promise<OpenBackend> {
  if (!options.create && !existsSync(path)) {
    throw new HeraldError('HERALD_ERR_NOT_FOUND', `no database at ${path} (start the services or run "herald migrate" first)`, { details: { path } });
  }
  const database = openDatabase({ path });
  const deadLetters = new SqliteDeadLetterStore({ database });
  const transport = createSqliteTransport({ database }); // read here for lag only: no subscription, no timer
  const eventStore = createSqliteEventStore({ database });
  const sagaStore = createSqliteSagaStore({ database });
  const views = options.loadViews ? await loadViews(config) : [];
  return {
    kind: 'sqlite',
    name: config.name,
    deadLetters,
    eventStore,
    views,
    sagas: sagaSource(sagaStore),
    topics: () => sqliteTopicStats(database, transport),
    causation: async (correlationId, limit) => {
      const { messages, handlings } = readSqliteCausation(database, correlationId, { limit });
      return buildCausationGraph(correlationId, messages, handlings);
    },
    recentStreams: async (limit, category, type) => recentStreams(eventStore, limit, category, type),
    schemaVersions: async () => schemaVersions(database),
    rebuildProjection: async (name: string, rebuild: RebuildOptions) => {
      const definition = (await loadProjectionModule(config, name)) as SqliteProjectionDefinition;
      return rebuildOnce(createSqliteProjection(eventStore, definition, { mode: 'async' }), rebuild);
    },
    close: async () => {
      await transport.close();
      await eventStore.close();
      await deadLetters.close();
      database.close();
    },
  };
}

interface TopicRow {
  name: string;
  partitions: number;
  published: number;
}

/**
 * Topics, messages published (the sum of the partitions' next offsets), and per consumer group
 * the messages committed and the lag (the transport's `lag()`), summed over partitions.
 */
export async function sqliteTopicStats(database: SqliteDatabase, lagSource: LagSource): Promise<TopicStats[]> {
  const topics = database.read(
    () =>
      database
        .statement(
          `SELECT t.name AS name, t.partitions AS partitions, COALESCE(SUM(p.next_offset), 0) AS published
           FROM herald_topics t LEFT JOIN herald_partitions p ON p.topic_id = t.id GROUP BY t.id ORDER BY t.name`,
        )
        .all() as TopicRow[],
  );
  return topicStats(topics, await lagSource.lag());
}

/** Every schema component stored in the file's `herald_meta`, with its version. */
export function schemaVersions(database: SqliteDatabase): Record<string, number> {
  const rows = database.read(() => database.db.prepare('SELECT component, version FROM herald_meta ORDER BY component').all()) as Array<{ component: string; version: number }>;
  return Object.fromEntries(rows.map((r) => [r.component, r.version]));
}
