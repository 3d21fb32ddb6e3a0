/**
 * The CLI's PostgreSQL backend: one pool on the config's schema, shared by the stores. Topic and
 * lag figures come from the transport's tables in two reads (lag per partition: the messages
 * after the group's committed offset); nothing is written except migrations (`create`).
 */
import { HeraldError } from '@herald/core';
import type { RebuildOptions } from '@herald/eventsourcing';
import type { CausationNode, TopicStats } from '@herald/console';
import {
  createPgDatabase,
  createPostgresEventStore,
  createPostgresProjection,
  createPostgresSagaStore,
  ensureMigrated,
  LOG_COMPONENT,
  migrate,
  type PgDatabase,
  PostgresDeadLetterStore,
  type PostgresProjectionDefinition,
} from '@herald/postgres';
import { causationNodes, type DeadLetterRow, type EventRow, loadProjectionModule, loadViews, rebuildOnce, type MessageRow, type OpenBackend, type OpenBackendOptions, recentStreams, sagaSource } from './backend-common.ts';
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
    topics: () => postgresTopicStats(database),
    causation: (correlationId, limit) => postgresCausation(database, correlationId, limit),
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
      await eventStore.close();
      await deadLetters.close();
      await database.close();
    },
  };
}

export async function postgresTopicStats(database: PgDatabase): Promise<TopicStats[]> {
  const topics = await database.query<{ name: string; partitions: number; published: string }>(
    `SELECT t.name, t.partitions, COALESCE(SUM(p.next_offset), 0) AS published
       FROM herald_topics t LEFT JOIN herald_partitions p ON p.topic_id = t.id GROUP BY t.id ORDER BY t.name`,
  );
  // committed is the last committed offset (-1: none); lag = next_offset - 1 - committed per partition
  const groups = await database.query<{ name: string; grp: string; handled: string; lag: string; oldest: string | null }>(
    `SELECT t.name, o.grp, SUM(o.committed + 1) AS handled, SUM(GREATEST(0, COALESCE(p.next_offset, 0) - 1 - o.committed)) AS lag, MIN(l.appended_at) AS oldest
       FROM herald_offsets o JOIN herald_topics t ON t.id = o.topic_id
       LEFT JOIN herald_partitions p ON p.topic_id = o.topic_id AND p.partition = o.partition
       LEFT JOIN herald_log l ON l.topic_id = o.topic_id AND l.partition = o.partition AND l."offset" = o.committed + 1
      GROUP BY t.name, o.grp ORDER BY t.name, o.grp`,
  );
  return topics.rows.map((t) => ({
    name: t.name,
    partitions: t.partitions,
    published: Number(t.published),
    groups: groups.rows
      .filter((g) => g.name === t.name)
      .map((g) => ({ group: g.grp, handled: Number(g.handled), lag: Number(g.lag), oldestUnhandledAt: Number(g.lag) > 0 && g.oldest !== null ? Number(g.oldest) : null })),
  }));
}

/** The rows of `causationNodes` from the schema: scans (no index on correlation ids), at most `limit` of each kind. */
export async function postgresCausation(database: PgDatabase, correlationId: string, limit: number): Promise<CausationNode[]> {
  if (!Number.isInteger(limit) || limit < 1) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `limit must be a positive integer (got ${limit})`);
  const [events, messages, dead] = await Promise.all([
    database.query<EventRow>(`SELECT event_id, type, causation_id, recorded_at, stream_id, position FROM herald_es_events WHERE correlation_id = $1 ORDER BY position LIMIT $2`, [correlationId, limit]),
    database.query<MessageRow>(
      `SELECT t.name AS topic, l.partition, l."offset", l.envelope FROM herald_log l JOIN herald_topics t ON t.id = l.topic_id
        WHERE l.envelope::jsonb ->> 'correlationid' = $1 ORDER BY l.appended_at LIMIT $2`,
      [correlationId, limit],
    ),
    database.query<DeadLetterRow>(`SELECT id, grp, event_id, type, envelope, error_message FROM herald_dead_letters WHERE envelope::jsonb ->> 'correlationid' = $1 ORDER BY id LIMIT $2`, [
      correlationId,
      limit,
    ]),
  ]);
  return causationNodes(events.rows, messages.rows, dead.rows);
}
