/**
 * The CLI's PostgreSQL backend: one pool on the config's schema, shared by the stores. Lag comes
 * from the transport's `lag()`, messages published per topic from one read of its partition
 * counters; nothing is written except migrations (`create`).
 *
 * With `"transport": { "kind": "nats" }` the services' broker is NATS JetStream, so topics and
 * lag come from there instead (`natsTopicStats`): a NATS transport on the config's servers and
 * the services' prefix (`HERALD_NATS_PREFIX` from the config's `env`, else this process's
 * environment, else the transport's default `herald`; lease bucket `<prefix>_leases`, as the
 * shop names them; created if missing, like a service would), read only: no subscription, no
 * topic stream or consumer created.
 */
import { buildCausationGraph, type LagSource } from '@herald/core';
import type { RebuildOptions } from '@herald/eventsourcing';
import type { TopicStats } from '@herald/console';
import type { NatsTransport } from '@herald/nats';
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
import type { HeraldConfig, TransportConfig } from './config.ts';

export async function openPostgresBackend(config: HeraldConfig, url: string, schema: string | undefined, options: OpenBackendOptions): Promise<OpenBackend> {
  const database = createPgDatabase({ connectionString: url, ...(schema ? { schema } : {}), max: 4, applicationName: 'herald-cli' });
  try {
    if (options.create) await migrate({ database });
    else await ensureMigrated(database, [LOG_COMPONENT]);
  } catch (e) {
    await database.close();
    throw e;
  }
  let nats: NatsTransport | undefined;
  try {
    if (config.transport?.kind === 'nats') nats = await openNats(config.transport, natsPrefix(config));
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
    topics: () => (nats ? natsTopicStats(nats) : postgresTopicStats(database, transport)),
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
      await nats?.close();
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

/** The subject prefix the services' NATS transports use: `HERALD_NATS_PREFIX` as `herald start` passes it (config `env` over this process's), default `herald`. */
export function natsPrefix(config: HeraldConfig, env: NodeJS.ProcessEnv = process.env): string {
  return config.env.HERALD_NATS_PREFIX ?? env.HERALD_NATS_PREFIX ?? 'herald';
}

async function openNats(spec: TransportConfig, prefix: string): Promise<NatsTransport> {
  const { createNatsTransport } = await import('@herald/nats'); // the NATS client only when a config names it
  return createNatsTransport({ servers: spec.servers.split(',').map((s) => s.trim()), prefix, leaseBucket: `${prefix}_leases` });
}

/**
 * Topics, messages published and per group lag from NATS JetStream (`NatsTransport.topics()` and
 * `lag()`). A NATS position is a stream sequence shared by the topic's partitions, so
 * `committed + 1` (what `topicStats` counts as handled) is no count there: each partition's
 * entry is restated as per-partition offsets first, handled = messages stored on the partition −
 * its lag (fewer once retention or a purge removed handled messages). `published` is the
 * stream's last sequence: every message ever published, purged ones included.
 */
export async function natsTopicStats(nats: NatsTransport): Promise<TopicStats[]> {
  const [topics, lag] = await Promise.all([nats.topics(), nats.lag()]);
  const stored = new Map(topics.map((t) => [t.topic, t.stored]));
  return topicStats(
    topics.map((t) => ({ name: t.topic, partitions: t.partitions, published: t.published })),
    lag.map((p) => {
      const n = stored.get(p.topic)?.[p.partition] ?? 0;
      return { ...p, head: String(n - 1), committed: String(Math.max(0, n - p.messages) - 1) };
    }),
  );
}
