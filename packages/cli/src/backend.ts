/**
 * Opens the stores a config's backend names, for the commands and the console: dead letters,
 * the event store, topic and lag figures, stream views (evolvers) and projection definitions.
 *
 * SQLite: one connection to the file, shared by the stores. Lag comes from the transport's
 * `lag()`, messages published per topic from one read of its partition counters: reads only,
 * safe while the services write. PostgreSQL is not wired yet (a typed error says so).
 */
import { existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { type DeadLetterStore, HeraldError, type LagSource } from '@herald/core';
import type { EventStore, RecordedEvent } from '@herald/eventsourcing';
import type { CausationNode, ConsoleSources, SagaSource, StreamView, TopicStats } from '@herald/console';
import type { SagaStatus, SagaStore } from '@herald/eventsourcing';
import { createSqliteEventStore, createSqliteSagaStore, createSqliteTransport, openDatabase, type SqliteDatabase, SqliteDeadLetterStore, type SqliteEventStore, type SqliteProjectionDefinition } from '@herald/sqlite';
import type { HeraldConfig } from './config.ts';

export interface OpenBackend extends ConsoleSources {
  readonly deadLetters: DeadLetterStore;
  readonly eventStore: EventStore;
  /** The SQLite connection (sqlite backends). */
  readonly database: SqliteDatabase;
  /** Schema versions found in the file, by component. */
  schemaVersions(): Record<string, number>;
  close(): Promise<void>;
}

export interface OpenBackendOptions {
  /** Create the database when missing (`herald migrate`, `herald start`); otherwise a missing file is `HERALD_ERR_NOT_FOUND`. */
  readonly create?: boolean;
  /** Load the config's stream views (the console); default false. */
  readonly loadViews?: boolean;
}

export async function openBackend(config: HeraldConfig, options: OpenBackendOptions = {}): Promise<OpenBackend> {
  const backend = config.backend;
  if (backend.kind !== 'sqlite') {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${config.file}: backend.kind "${backend.kind}" is not supported by the herald CLI yet (sqlite only)`, { details: { file: config.file, field: 'backend.kind' } });
  }
  if (!options.create && !existsSync(backend.path)) {
    throw new HeraldError('HERALD_ERR_NOT_FOUND', `no database at ${backend.path} (start the services or run "herald migrate" first)`, { details: { path: backend.path } });
  }
  const database = openDatabase({ path: backend.path });
  const deadLetters = new SqliteDeadLetterStore({ database });
  const transport = createSqliteTransport({ database }); // read here for lag only: no subscription, no timer
  const eventStore: SqliteEventStore = createSqliteEventStore({ database });
  const sagaStore = createSqliteSagaStore({ database });
  const views = options.loadViews ? await loadViews(config) : [];
  return {
    name: config.name,
    database,
    deadLetters,
    eventStore,
    views,
    sagas: sagaSource(sagaStore),
    topics: () => sqliteTopicStats(database, transport),
    causation: async (correlationId, limit) => sqliteCausation(database, correlationId, limit),
    recentStreams: async (limit, category, type) => recentStreams(eventStore, limit, category, type),
    schemaVersions: () => schemaVersions(database),
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
  const groups = new Map<string, Map<string, { handled: number; lag: number; oldestUnhandledAt: number | null }>>();
  for (const p of await lagSource.lag()) {
    let byGroup = groups.get(p.topic);
    if (!byGroup) groups.set(p.topic, (byGroup = new Map()));
    const g = byGroup.get(p.group) ?? { handled: 0, lag: 0, oldestUnhandledAt: null };
    g.handled += Number(p.committed) + 1; // committed is the last committed offset, -1 for none
    g.lag += p.messages;
    if (p.oldestUnhandledAt !== undefined) g.oldestUnhandledAt = Math.min(g.oldestUnhandledAt ?? Infinity, p.oldestUnhandledAt);
    byGroup.set(p.group, g);
  }
  return topics.map((t) => ({
    name: t.name,
    partitions: t.partitions,
    published: t.published,
    groups: [...(groups.get(t.name) ?? new Map<string, { handled: number; lag: number; oldestUnhandledAt: number | null }>())]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([group, g]) => ({ group, ...g })),
  }));
}

/** Every schema component stored in the file's `herald_meta`, with its version. */
export function schemaVersions(database: SqliteDatabase): Record<string, number> {
  const rows = database.read(() => database.db.prepare('SELECT component, version FROM herald_meta ORDER BY component').all()) as Array<{ component: string; version: number }>;
  return Object.fromEntries(rows.map((r) => [r.component, r.version]));
}

const TIMELINE_PAGES = 10;

/** The saga store as the console reads it: instances by status (the console's "state"), one instance's timeline. */
export function sagaSource(store: SagaStore): SagaSource {
  return {
    list: async ({ state, cursor, limit }) => {
      const page = await store.list({ ...(state ? { status: state as SagaStatus } : {}), ...(cursor ? { cursor } : {}), ...(limit ? { limit } : {}) });
      return {
        instances: page.items.map((i) => ({ ...i, state: i.status })),
        ...(page.next ? { nextCursor: page.next } : {}),
      };
    },
    timeline: async (saga, key) => {
      const out = [];
      let cursor: string | undefined;
      for (let i = 0; i < TIMELINE_PAGES; i++) {
        const page = await store.timeline(saga, key, { limit: 1000, ...(cursor ? { cursor } : {}) });
        out.push(...page.items);
        cursor = page.next;
        if (!cursor) break;
      }
      if (out.length === 0 && !(await store.get(saga, key))) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no instance "${key}" of saga "${saga}"`);
      return out;
    },
    countByState: async () => {
      const byState: Record<string, number> = {};
      for (const c of await store.countByStatus()) byState[c.status] = (byState[c.status] ?? 0) + c.count;
      return byState;
    },
  };
}

/**
 * Every event-store event, transport message and dead letter carrying `correlationId`, oldest
 * first, at most `limit` of each. A scan of the tables (no index on correlation ids): meant for
 * the console's one-order view, not for bulk use.
 */
export function sqliteCausation(database: SqliteDatabase, correlationId: string, limit: number): CausationNode[] {
  return database.read(() => {
    const nodes = new Map<string, CausationNode>();
    const events = database
      .statement(`SELECT event_id, type, causation_id, recorded_at, stream_id, position FROM herald_es_events WHERE correlation_id = ? ORDER BY position LIMIT ?`)
      .all(correlationId, limit) as Array<{ event_id: string; type: string; causation_id: string | null; recorded_at: number; stream_id: string; position: number }>;
    for (const e of events) nodes.set(e.event_id, { id: e.event_id, type: e.type, causationId: e.causation_id, time: e.recorded_at, where: `stream ${e.stream_id}`, position: e.position });
    const messages = database
      .statement(
        `SELECT t.name AS topic, l.partition AS partition, l.offset AS offset, l.envelope AS envelope FROM herald_log l JOIN herald_topics t ON t.id = l.topic_id
         WHERE json_extract(l.envelope, '$.correlationid') = ? ORDER BY l.appended_at LIMIT ?`,
      )
      .all(correlationId, limit) as Array<{ topic: string; partition: number; offset: number; envelope: string }>;
    for (const m of messages) {
      const env = safeJson(m.envelope) as { id?: string; type?: string; causationid?: string; time?: string } | undefined;
      if (!env?.id || nodes.has(env.id)) continue;
      nodes.set(env.id, { id: env.id, type: env.type ?? '?', causationId: env.causationid ?? null, time: env.time ? Date.parse(env.time) : null, where: `topic ${m.topic}/${m.partition}@${m.offset}` });
    }
    const dead = database
      .statement(`SELECT id, grp, event_id, type, envelope, error_message FROM herald_dead_letters WHERE json_extract(envelope, '$.correlationid') = ? ORDER BY id LIMIT ?`)
      .all(correlationId, limit) as Array<{ id: number; grp: string; event_id: string | null; type: string | null; envelope: string; error_message: string }>;
    for (const d of dead) {
      const env = safeJson(d.envelope) as { causationid?: string; time?: string } | undefined;
      const id = d.event_id ?? `dead-letter-${d.id}`;
      const existing = nodes.get(id);
      nodes.set(id, {
        ...(existing ?? { id, type: d.type ?? '?', causationId: env?.causationid ?? null, time: env?.time ? Date.parse(env.time) : null, where: `dead letter #${d.id}` }),
        deadLetter: { id: String(d.id).padStart(12, '0'), group: d.grp, error: d.error_message },
      });
    }
    return [...nodes.values()].sort((a, b) => (a.time ?? 0) - (b.time ?? 0));
  });
}

/** Stream ids seen in the newest events of `$all` (at most 2 500 read; only events of `type` when given), newest first. */
export async function recentStreams(store: EventStore, limit: number, category?: string, type?: string): Promise<string[]> {
  const seen = new Set<string>();
  let before: bigint | undefined;
  for (let round = 0; round < 5 && seen.size < limit; round++) {
    const page = await store.readAll({ direction: 'backward', maxCount: 500, ...(before !== undefined ? { before } : {}), ...(category ? { category } : {}) });
    for (const e of page.events) {
      if (type !== undefined && e.type !== type) continue;
      seen.add(e.streamId);
      if (seen.size >= limit) break;
    }
    if (page.isEnd) break;
    before = page.position;
  }
  return [...seen];
}

/** Loads the config's stream views: each module exports `initialState` and `evolve` (named, or on its default export). */
export async function loadViews(config: HeraldConfig): Promise<StreamView[]> {
  const out: StreamView[] = [];
  for (const [i, v] of config.views.entries()) {
    const mod = await importModule(v.module, config, `views[${i}].module`);
    const impl = (typeof mod.initialState === 'function' ? mod : mod.default) as { initialState?: unknown; evolve?: unknown } | undefined;
    if (typeof impl?.initialState !== 'function' || typeof impl.evolve !== 'function') {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${config.file}: views[${i}].module (${v.module}) must export initialState() and evolve(state, event)`, { details: { file: config.file, field: `views[${i}].module` } });
    }
    const { initialState, evolve } = impl as { initialState: () => unknown; evolve: (s: unknown, e: RecordedEvent) => unknown };
    out.push({ category: v.category, initialState: () => initialState(), evolve: (s, e) => evolve(s, e) });
  }
  return out;
}

/** The projection definition named `name` in the config. `HERALD_ERR_NOT_FOUND` when the config lists none by that name. */
export async function loadProjection(config: HeraldConfig, name: string): Promise<SqliteProjectionDefinition> {
  const i = config.projections.findIndex((p) => p.name === name);
  if (i < 0) {
    throw new HeraldError('HERALD_ERR_NOT_FOUND', `no projection named "${name}" in ${config.file} (known: ${config.projections.map((p) => p.name).join(', ') || 'none'})`);
  }
  const mod = await importModule(config.projections[i]!.module, config, `projections[${i}].module`);
  const def = (mod.projection ?? mod.default) as SqliteProjectionDefinition | undefined;
  if (typeof def !== 'object' || def === null || typeof def.handle !== 'function' || typeof def.tables !== 'object') {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${config.file}: projections[${i}].module must export a SqliteProjectionDefinition as default or as "projection"`, { details: { file: config.file, field: `projections[${i}].module` } });
  }
  if (def.name !== name) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${config.file}: projections[${i}] is named "${name}" but its module defines "${def.name}"`, { details: { file: config.file, field: `projections[${i}].name` } });
  }
  return def;
}

async function importModule(file: string, config: HeraldConfig, field: string): Promise<Record<string, unknown>> {
  if (!existsSync(file)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${config.file}: ${field} names a file that does not exist: ${file}`, { details: { file: config.file, field } });
  return (await import(pathToFileURL(file).href)) as Record<string, unknown>;
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}
