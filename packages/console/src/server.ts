/**
 * The console's HTTP server (hono on node): JSON APIs, one Server-Sent Events stream of
 * snapshots, and the built browser app.
 *
 *   GET  /api/snapshot                      the latest snapshot (what /api/events pushes)
 *   GET  /api/events                        SSE: `snapshot` events every `intervalMs` (at most `maxSseClients` at once; 503 beyond)
 *   GET  /api/services                      the supervisor's services (503 when the console runs without one)
 *   POST /api/services/:name/stop|start     stop or start one service
 *   GET  /api/dead-letters?group&topic&status&cursor&limit
 *   GET  /api/dead-letters/:id              one entry with its envelope, raw bytes and error
 *   POST /api/dead-letters/:id/redrive|discard
 *   GET  /api/streams?category&type&limit   recent stream ids, newest first
 *   GET  /api/streams/:id?from&limit        a page of events, each with the state right after it (time travel)
 *   GET  /api/sagas?state&cursor&limit      saga instances
 *   GET  /api/sagas/:saga/:key              one instance's timeline
 *   GET  /api/causation/:correlationId?limit  the causation graph of one correlation id (CausationGraph: a tree of messages with their handlers; no roots when nothing carries it)
 *
 * Errors are `{ error: { code, message } }` with 400 (bad argument), 404 (not found), 503 (not
 * available here) or 500. Bigints (event positions) are sent as decimal strings.
 *
 * The snapshot sampler runs every `intervalMs` while the server is open and keeps the last
 * `historySize` samples of per-topic publish counts and per-group handled counts and lag, from
 * which the rates are computed (messages per second between two samples).
 */
import { type AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { serveStatic } from '@hono/node-server/serve-static';
import { type DeadLetterEntry, type DeadLetterStatus, HeraldError, isHeraldError } from '@herald/core';
import { type RecordedEvent, stateHistory } from '@herald/eventsourcing';
import { Hono, type Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import { APP_DIST_DIR, ensureAppBuilt } from './build-app.ts';
import type { ConsoleSources, ServiceControl, ServiceInfo, StreamView, TopicStats } from './sources.ts';

export interface ConsoleServerOptions {
  readonly sources: ConsoleSources;
  /** The supervisor, when the console runs beside one (`herald start`). */
  readonly services?: ServiceControl;
  /** TCP port (default 4000; 0 picks a free one). */
  readonly port?: number;
  /** Interface to listen on (default '127.0.0.1'). */
  readonly host?: string;
  /** Snapshot period, ms (default 1000). */
  readonly intervalMs?: number;
  /** Samples kept for the charts (default 120). */
  readonly historySize?: number;
  /** Concurrent SSE clients (default 32). */
  readonly maxSseClients?: number;
  /** Build the browser app when missing or stale (default true). */
  readonly buildApp?: boolean;
  readonly log?: (line: string) => void;
}

export interface TopicSample {
  readonly published: number;
  /** Per group: messages handled, lag in messages, and lag in seconds (age of the oldest unhandled message, 0 when none). */
  readonly groups: Readonly<Record<string, { readonly handled: number; readonly lag: number; readonly lagSeconds: number }>>;
}

export interface Sample {
  readonly at: number;
  readonly topics: Readonly<Record<string, TopicSample>>;
}

export interface DeadLetterSummary {
  readonly id: string;
  readonly group: string;
  readonly topic: string;
  readonly type: string | null;
  readonly key: string | null;
  readonly status: DeadLetterStatus;
  readonly attempts: number;
  readonly error: string;
  readonly lastFailedAt: number;
}

export interface TopicView extends TopicStats {
  /** Messages published per second over the last interval. */
  readonly publishRate: number;
  readonly groups: ReadonlyArray<TopicStats['groups'][number] & { readonly handleRate: number }>;
}

export interface Snapshot {
  readonly name: string;
  readonly at: number;
  readonly services: readonly ServiceInfo[] | null;
  readonly topics: readonly TopicView[];
  readonly history: readonly Sample[];
  readonly deadLetters: { readonly total: number; readonly entries: readonly DeadLetterSummary[] };
  readonly sagas: { readonly available: boolean; readonly byState: Readonly<Record<string, number>> };
  readonly streams: { readonly available: boolean; readonly views: readonly string[] };
  readonly error?: string;
}

export interface ConsoleServer {
  readonly url: string;
  readonly port: number;
  /** The latest snapshot (taken now if none yet). */
  snapshot(): Promise<Snapshot>;
  /** Stops the sampler, ends SSE streams, closes the listener. Idempotent. */
  close(): Promise<void>;
}

const DEAD_LETTER_SNAPSHOT = 50;

/** Seconds since the oldest unhandled message was appended, to 0.1 s (0 when nothing waits or its time is unknown). */
function lagSeconds(lag: number, oldestUnhandledAt: number | null, at: number): number {
  return lag > 0 && oldestUnhandledAt !== null ? Math.max(0, Math.round((at - oldestUnhandledAt) / 100) / 10) : 0;
}

export async function createConsoleServer(options: ConsoleServerOptions): Promise<ConsoleServer> {
  const { sources } = options;
  const intervalMs = options.intervalMs ?? 1000;
  const historySize = options.historySize ?? 120;
  const maxSseClients = options.maxSseClients ?? 32;
  const log = options.log ?? (() => {});
  if (options.buildApp !== false) await ensureAppBuilt({ log });

  const history: Sample[] = [];
  let latest: Snapshot | null = null;
  const listeners = new Set<(s: Snapshot) => void>();
  let closed = false;

  const take = async (): Promise<Snapshot> => {
    const at = Date.now();
    try {
      const [topics, total, page, sagas] = await Promise.all([
        sources.topics(),
        sources.deadLetters.count(),
        sources.deadLetters.list({}, { limit: DEAD_LETTER_SNAPSHOT }),
        sagaCounts(sources),
      ]);
      const sample: Sample = {
        at,
        topics: Object.fromEntries(topics.map((t) => [t.name, { published: t.published, groups: Object.fromEntries(t.groups.map((g) => [g.group, { handled: g.handled, lag: g.lag, lagSeconds: lagSeconds(g.lag, g.oldestUnhandledAt, at) }])) }])),
      };
      const prev = history[history.length - 1];
      history.push(sample);
      if (history.length > historySize) history.shift();
      const secs = prev ? Math.max(0.001, (at - prev.at) / 1000) : 0;
      const rate = (now: number, before: number | undefined): number => (prev && before !== undefined ? Math.max(0, Math.round(((now - before) / secs) * 10) / 10) : 0);
      return {
        name: sources.name,
        at,
        services: options.services ? options.services.status() : null,
        topics: topics.map((t) => ({
          ...t,
          publishRate: rate(t.published, prev?.topics[t.name]?.published),
          groups: t.groups.map((g) => ({ ...g, handleRate: rate(g.handled, prev?.topics[t.name]?.groups[g.group]?.handled) })),
        })),
        history: [...history],
        deadLetters: { total, entries: page.entries.map(summarize) },
        sagas,
        streams: { available: sources.eventStore !== undefined, views: (sources.views ?? []).map((v) => v.category) },
      };
    } catch (e) {
      return {
        name: sources.name,
        at,
        services: options.services ? options.services.status() : null,
        topics: [],
        history: [...history],
        deadLetters: { total: 0, entries: [] },
        sagas: { available: false, byState: {} },
        streams: { available: false, views: [] },
        error: (e as Error).message,
      };
    }
  };

  let ticking = false;
  const tick = async (): Promise<void> => {
    if (ticking || closed) return;
    ticking = true;
    try {
      latest = await take();
      for (const l of listeners) l(latest);
    } finally {
      ticking = false;
    }
  };
  const timer = setInterval(() => void tick(), intervalMs);
  await tick();

  const app = new Hono();
  app.onError((e, c) => errorResponse(c, e));

  app.get('/api/snapshot', async (c) => json(c, latest ?? (await take())));

  app.get('/api/events', (c) => {
    if (listeners.size >= maxSseClients) return c.json({ error: { code: 'UNAVAILABLE', message: `at most ${maxSseClients} live clients` } }, 503);
    return streamSSE(c, async (stream) => {
      let wake: (() => void) | null = null;
      let pending: Snapshot | null = latest;
      const listener = (s: Snapshot): void => {
        pending = s;
        wake?.();
      };
      listeners.add(listener);
      stream.onAbort(() => {
        listeners.delete(listener);
        wake?.();
      });
      try {
        while (!stream.aborted && !closed) {
          if (pending) {
            const s = pending;
            pending = null;
            await stream.writeSSE({ event: 'snapshot', data: stringify(s), id: String(s.at) });
          }
          await new Promise<void>((r) => {
            wake = r;
            setTimeout(r, intervalMs * 5).unref();
          });
          wake = null;
        }
      } finally {
        listeners.delete(listener);
      }
    });
  });

  const control = (): ServiceControl => {
    if (!options.services) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'this console runs without a supervisor (start it with "herald start")', { details: { status: 503 } });
    return options.services;
  };
  app.get('/api/services', (c) => json(c, { services: control().status() }));
  app.post('/api/services/:name/stop', async (c) => json(c, { service: await control().stopService(c.req.param('name')) }));
  app.post('/api/services/:name/start', (c) => json(c, { service: control().startService(c.req.param('name')) }));

  app.get('/api/dead-letters', async (c) => {
    const q = c.req.query();
    const status = q.status as DeadLetterStatus | undefined;
    const filter = { ...(q.group ? { group: q.group } : {}), ...(q.topic ? { topic: q.topic } : {}), ...(status ? { status } : {}) };
    const page = await sources.deadLetters.list(filter, { ...(q.cursor ? { cursor: q.cursor } : {}), limit: intParam(q.limit, 'limit', 100) });
    return json(c, { entries: page.entries.map(summarize), nextCursor: page.nextCursor ?? null });
  });
  app.get('/api/dead-letters/:id', async (c) => json(c, { entry: await deadLetter(sources, c.req.param('id')) }));
  app.post('/api/dead-letters/:id/redrive', async (c) => {
    const id = (await deadLetter(sources, c.req.param('id'))).id;
    const marked = await sources.deadLetters.redrive({ ids: [id] });
    void tick();
    return json(c, { marked });
  });
  app.post('/api/dead-letters/:id/discard', async (c) => {
    const id = (await deadLetter(sources, c.req.param('id'))).id;
    const discarded = await sources.deadLetters.discard({ ids: [id] });
    void tick();
    return json(c, { discarded });
  });

  app.get('/api/streams', async (c) => {
    if (!sources.recentStreams) return json(c, { streams: [] });
    const { category, type } = c.req.query();
    return json(c, { streams: await sources.recentStreams(intParam(c.req.query('limit'), 'limit', 50), category || undefined, type || undefined) });
  });
  app.get('/api/streams/:id', async (c) => {
    const store = sources.eventStore;
    if (!store) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'no event store in this backend', { details: { status: 503 } });
    const streamId = c.req.param('id');
    const view = viewFor(sources.views ?? [], streamId);
    const head = await store.readStream(streamId, { maxCount: 1 });
    if (head.streamVersion === 0) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no stream "${streamId}"`);
    const h = await stateHistory(store, streamId, view ?? GENERIC_VIEW, { fromVersion: intParam(c.req.query('from'), 'from', 1), maxCount: intParam(c.req.query('limit'), 'limit', 100) });
    return json(c, { streamId, streamVersion: head.streamVersion, view: view ? view.category : null, before: h.before, steps: h.steps, nextVersion: h.nextVersion ?? null });
  });

  app.get('/api/sagas', async (c) => {
    if (!sources.sagas) return json(c, { available: false, instances: [], nextCursor: null });
    const q = c.req.query();
    const page = await sources.sagas.list({ ...(q.state ? { state: q.state } : {}), ...(q.cursor ? { cursor: q.cursor } : {}), limit: intParam(q.limit, 'limit', 100) });
    return json(c, { available: true, instances: page.instances, nextCursor: page.nextCursor ?? null });
  });
  app.get('/api/sagas/:saga/:key', async (c) => {
    if (!sources.sagas) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'no saga store in this backend', { details: { status: 503 } });
    return json(c, { saga: c.req.param('saga'), key: c.req.param('key'), timeline: await sources.sagas.timeline(c.req.param('saga'), c.req.param('key')) });
  });

  app.get('/api/causation/:correlationId', async (c) => {
    if (!sources.causation) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'no causation source in this backend', { details: { status: 503 } });
    return json(c, await sources.causation(c.req.param('correlationId'), intParam(c.req.query('limit'), 'limit', 500)));
  });

  app.all('/api/*', (c) => c.json({ error: { code: 'HERALD_ERR_NOT_FOUND', message: `no API ${c.req.method} ${c.req.path}` } }, 404));
  app.use('/*', serveStatic({ root: APP_DIST_DIR }));
  app.get('*', serveStatic({ path: `${APP_DIST_DIR}index.html` }));

  const host = options.host ?? '127.0.0.1';
  let server: ServerType;
  try {
    server = await new Promise((resolve, reject) => {
      const s = serve({ fetch: app.fetch, port: options.port ?? 4000, hostname: host }, () => resolve(s));
      s.once('error', reject);
    });
  } catch (e) {
    closed = true;
    clearInterval(timer); // the port was taken: nothing may keep the process alive
    throw e;
  }
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | null = null;
  return {
    url: `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`,
    port,
    snapshot: async () => latest ?? (await take()),
    close: () => {
      closing ??= (async () => {
        closed = true;
        clearInterval(timer);
        for (const l of listeners) l(latest!);
        listeners.clear();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        });
      })();
      return closing;
    },
  };
}

/** Time travel without a registered view: each event's object data is merged into the state (shallow), other data stored under the event type. */
export const GENERIC_VIEW: StreamView = {
  category: '*',
  initialState: () => ({}),
  evolve: (state, event) => {
    const s = (state ?? {}) as Record<string, unknown>;
    const d = event.data;
    return d !== null && typeof d === 'object' && !Array.isArray(d) ? { ...s, ...(d as Record<string, unknown>) } : { ...s, [event.type]: d };
  },
};

function viewFor(views: readonly StreamView[], streamId: string): StreamView | undefined {
  const dash = streamId.indexOf('-');
  const category = dash < 0 ? streamId : streamId.slice(0, dash);
  return views.find((v) => v.category === category || v.category === `${category}-`);
}

async function sagaCounts(sources: ConsoleSources): Promise<Snapshot['sagas']> {
  const sagas = sources.sagas;
  if (!sagas) return { available: false, byState: {} };
  if (sagas.countByState) return { available: true, byState: await sagas.countByState() };
  const byState: Record<string, number> = {};
  let cursor: string | undefined;
  for (let i = 0; i < 10; i++) {
    const page = await sagas.list({ limit: 1000, ...(cursor ? { cursor } : {}) });
    for (const s of page.instances) byState[s.state] = (byState[s.state] ?? 0) + 1;
    cursor = page.nextCursor;
    if (!cursor) break;
  }
  return { available: true, byState };
}

async function deadLetter(sources: ConsoleSources, id: string): Promise<DeadLetterEntry> {
  const e = (await sources.deadLetters.get(id)) ?? (/^\d+$/.test(id) ? await sources.deadLetters.get(id.padStart(12, '0')) : undefined);
  if (!e) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no dead letter with id "${id}"`);
  return e;
}

function summarize(e: DeadLetterEntry): DeadLetterSummary {
  return { id: e.id, group: e.group, topic: e.topic, type: e.type, key: e.key, status: e.status, attempts: e.attempts, error: e.error.message, lastFailedAt: e.lastFailedAt };
}

function intParam(raw: string | undefined, name: string, dflt: number): number {
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${name} must be a non-negative integer (got ${JSON.stringify(raw)})`);
  return n;
}

/** JSON with bigints as decimal strings. */
export function stringify(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
}

function json(c: Context, value: unknown): Response {
  return c.body(stringify(value), 200, { 'content-type': 'application/json; charset=utf-8' });
}

function errorResponse(c: Context, e: unknown): Response {
  const status = isHeraldError(e)
    ? ((e.details as { status?: number } | undefined)?.status ?? (e.code === 'HERALD_ERR_NOT_FOUND' ? 404 : e.code === 'HERALD_ERR_INVALID_ARGUMENT' ? 400 : 500))
    : 500;
  const body = { error: { code: isHeraldError(e) ? e.code : 'INTERNAL', message: (e as Error)?.message ?? String(e) } };
  return c.body(JSON.stringify(body), status as 400, { 'content-type': 'application/json; charset=utf-8' });
}

export type { RecordedEvent };
