/**
 * What every backend of the CLI shares: the saga store and stream helpers the console reads,
 * and the modules the config names (stream views, projection definitions), imported through
 * tsx like the services themselves.
 */
import { existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { type DeadLetterStore, HeraldError } from '@herald/core';
import type { EventStore, Projection, RebuildOptions, RebuildResult, RecordedEvent, SagaStatus, SagaStore } from '@herald/eventsourcing';
import type { CausationNode, ConsoleSources, SagaSource, StreamView } from '@herald/console';
import type { HeraldConfig } from './config.ts';

/** An opened backend: what the commands use, and what the console reads. */
export interface OpenBackend extends ConsoleSources {
  readonly kind: 'sqlite' | 'postgres';
  readonly deadLetters: DeadLetterStore;
  readonly eventStore: EventStore;
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

export function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}

/** Stored events of one correlation id (event store rows). */
export interface EventRow {
  event_id: string;
  type: string;
  causation_id: string | null;
  recorded_at: number | string;
  stream_id: string;
  position: number | string;
}
/** Transport messages of one correlation id (log rows). */
export interface MessageRow {
  topic: string;
  partition: number;
  offset: number | string;
  envelope: string;
}
/** Dead letters of one correlation id. */
export interface DeadLetterRow {
  id: number | string;
  grp: string;
  event_id: string | null;
  type: string | null;
  envelope: string | null;
  error_message: string;
}

/**
 * The causation graph's nodes from the rows a backend found for one correlation id: a message
 * seen both as a stored event and on a topic is one node (the event); a dead letter marks its
 * message. Oldest first.
 */
export function causationNodes(events: readonly EventRow[], messages: readonly MessageRow[], dead: readonly DeadLetterRow[]): CausationNode[] {
  const nodes = new Map<string, CausationNode>();
  for (const e of events) nodes.set(e.event_id, { id: e.event_id, type: e.type, causationId: e.causation_id, time: Number(e.recorded_at), where: `stream ${e.stream_id}`, position: String(e.position) });
  for (const m of messages) {
    const env = safeJson(m.envelope) as { id?: string; type?: string; causationid?: string; time?: string } | undefined;
    if (!env?.id || nodes.has(env.id)) continue;
    nodes.set(env.id, { id: env.id, type: env.type ?? '?', causationId: env.causationid ?? null, time: env.time ? Date.parse(env.time) : null, where: `topic ${m.topic}/${m.partition}@${m.offset}` });
  }
  for (const d of dead) {
    const env = (d.envelope === null ? undefined : safeJson(d.envelope)) as { causationid?: string; time?: string } | undefined;
    const id = d.event_id ?? `dead-letter-${d.id}`;
    const existing = nodes.get(id);
    nodes.set(id, {
      ...(existing ?? { id, type: d.type ?? '?', causationId: env?.causationid ?? null, time: env?.time ? Date.parse(env.time) : null, where: `dead letter #${d.id}` }),
      deadLetter: { id: String(d.id).padStart(12, '0'), group: d.grp, error: d.error_message },
    });
  }
  return [...nodes.values()].sort((a, b) => (a.time ?? 0) - (b.time ?? 0));
}
