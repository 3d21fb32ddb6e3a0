/**
 * What every backend of the CLI shares: the saga store and stream helpers the console reads,
 * and the modules the config names (stream views, projection definitions), imported through
 * tsx like the services themselves.
 */
import { existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { type CausationGraph, type DeadLetterStore, HeraldError, type PartitionLag } from '@herald/core';
import type { EventStore, Projection, RebuildOptions, RebuildResult, RecordedEvent, SagaStatus, SagaStore } from '@herald/eventsourcing';
import type { ConsoleSources, SagaSource, StreamView, TopicStats } from '@herald/console';
import type { HeraldConfig } from './config.ts';

/** An opened backend: what the commands use, and what the console reads. */
export interface OpenBackend extends ConsoleSources {
  readonly kind: 'sqlite' | 'postgres';
  readonly deadLetters: DeadLetterStore;
  readonly eventStore: EventStore;
  /** The causation graph of one correlation id (`buildCausationGraph` over the backend's reader: log, event store, dead letters, inbox), at most `limit` messages from each source; no roots when nothing carries it. */
  causation(correlationId: string, limit: number): Promise<CausationGraph>;
  /** Schema components and their versions. */
  schemaVersions(): Promise<Record<string, number>>;
  /** Rebuilds the projection the config lists under `name` (`HERALD_ERR_NOT_FOUND` when it lists none). */
  rebuildProjection(name: string, options: RebuildOptions): Promise<RebuildResult>;
  close(): Promise<void>;
}

export interface OpenBackendOptions {
  /** Create the database when missing (`herald migrate`, `herald start`); otherwise a missing SQLite file is `HERALD_ERR_NOT_FOUND`. */
  readonly create?: boolean;
  /** Load the config's stream views (the console); default false. */
  readonly loadViews?: boolean;
}

/** The module a projection name stands for (its default export or `projection` export), untyped: each backend checks its own definition type. */
export async function loadProjectionModule(config: HeraldConfig, name: string): Promise<{ readonly name: string; readonly tables?: unknown; handle?: unknown }> {
  const i = config.projections.findIndex((p) => p.name === name);
  if (i < 0) {
    throw new HeraldError('HERALD_ERR_NOT_FOUND', `no projection named "${name}" in ${config.file} (known: ${config.projections.map((p) => p.name).join(', ') || 'none'})`);
  }
  const mod = await importModule(config.projections[i]!.module, config, `projections[${i}].module`);
  const def = (mod.projection ?? mod.default) as { name: string; tables?: unknown; handle?: unknown } | undefined;
  if (typeof def !== 'object' || def === null || typeof def.handle !== 'function') {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${config.file}: projections[${i}].module must export a projection definition as default or as "projection"`, { details: { file: config.file, field: `projections[${i}].module` } });
  }
  if (def.name !== name) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${config.file}: projections[${i}] is named "${name}" but its module defines "${def.name}"`, { details: { file: config.file, field: `projections[${i}].name` } });
  }
  return def;
}

/** Rebuilds a projection opened for this purpose only, then closes it. */
export async function rebuildOnce(projection: Projection | Promise<Projection>, options: RebuildOptions): Promise<RebuildResult> {
  const p = await projection;
  try {
    return await p.rebuild(options);
  } finally {
    await p.close();
  }
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

async function importModule(file: string, config: HeraldConfig, field: string): Promise<Record<string, unknown>> {
  if (!existsSync(file)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${config.file}: ${field} names a file that does not exist: ${file}`, { details: { file: config.file, field } });
  return (await import(pathToFileURL(file).href)) as Record<string, unknown>;
}

/**
 * Topics with their published counts, and per consumer group (sorted by name) the messages
 * committed and the lag summed over partitions from a transport's `lag()` — what `herald status`
 * and the console's topic table show, the same on every backend.
 */
export function topicStats(topics: readonly { readonly name: string; readonly partitions: number; readonly published: number }[], lag: readonly PartitionLag[]): TopicStats[] {
  type Group = { handled: number; lag: number; oldestUnhandledAt: number | null };
  const groups = new Map<string, Map<string, Group>>();
  for (const p of lag) {
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
    groups: [...(groups.get(t.name) ?? new Map<string, Group>())].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([group, g]) => ({ group, ...g })),
  }));
}
