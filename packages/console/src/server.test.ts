// The console server in process, on memory stores and a fake supervisor (no browser, no build).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { buildCausationGraph, type CausationGraph, createEnvelope, HeraldError, MemoryDeadLetterStore } from '@herald/core';
import { InMemoryEventStore } from '@herald/eventsourcing';
import { waitFor } from '@herald/testkit';
import { createConsoleServer, type ConsoleServer } from './server.ts';
import type { ServiceControl, ServiceInfo, TopicStats } from './sources.ts';

describe('console server', () => {
  const deadLetters = new MemoryDeadLetterStore();
  const eventStore = new InMemoryEventStore();
  let published = 0;
  let lag = 0;
  const topics = async (): Promise<TopicStats[]> => [{ name: 'orders', partitions: 2, published, groups: [{ group: 'shipping', handled: published - lag, lag, oldestUnhandledAt: lag > 0 ? Date.now() - 5000 : null }] }];
  const services = new Map<string, ServiceInfo>([['shipping', { name: 'shipping', state: 'running', pid: 1, restarts: 0, uptimeMs: 5, lastExit: null, restartInMs: null }]]);
  const control: ServiceControl = {
    status: () => [...services.values()],
    startService: (name) => {
      const s = services.get(name);
      if (!s) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no service named "${name}"`);
      services.set(name, { ...s, state: 'running', pid: 2 });
      return services.get(name)!;
    },
    stopService: async (name) => {
      const s = services.get(name)!;
      services.set(name, { ...s, state: 'stopped', pid: null });
      return services.get(name)!;
    },
  };
  let server: ConsoleServer;
  const api = async (path: string, method = 'GET'): Promise<{ status: number; body: Record<string, unknown> }> => {
    const r = await fetch(`${server.url}${path}`, { method });
    return { status: r.status, body: (await r.json()) as Record<string, unknown> };
  };

  before(async () => {
    for (const n of [1, 2]) {
      const envelope = createEnvelope({ type: 'shop.order.placed', source: 't', data: { n } });
      await deadLetters.add({ group: 'billing', topic: 'orders', partition: 0, key: `k${n}`, handler: 'h', envelope, raw: JSON.stringify(envelope), position: String(n), error: { message: `failed ${n}` }, attempts: 1, firstFailedAt: n, lastFailedAt: n });
    }
    await eventStore.appendToStream('order-1', [
      { type: 'OrderPlaced', data: { status: 'placed', total: 5 } },
      { type: 'OrderPaid', data: { status: 'paid' } },
    ]);
    await eventStore.appendToStream('cart-1', [{ type: 'ItemAdded', data: { sku: 'a' } }]);
    server = await createConsoleServer({
      sources: {
        name: 'test',
        topics,
        deadLetters,
        eventStore,
        views: [{ category: 'order', initialState: () => ({ events: 0 }), evolve: (s, e) => ({ events: (s as { events: number }).events + 1, last: e.type }) }],
        recentStreams: async () => ['order-1', 'cart-1'],
      },
      services: control,
      port: 0,
      intervalMs: 50,
      maxSseClients: 1,
      buildApp: false,
    });
  });
  after(() => server.close());

  it('snapshots topics with rates and a history, services and dead letters', async () => {
    published = 100;
    lag = 40;
    const t0 = Date.now();
    // two samples after the change: the rate between them is 0
    const s = await waitFor(async () => {
      const snap = await server.snapshot();
      return snap.history.slice(-2).every((h) => h.topics.orders?.published === 100) ? snap : undefined;
    }, { timeoutMs: 5000, what: 'two samples with 100 published' });
    assert.equal(s.name, 'test');
    assert.ok(s.at >= t0);
    assert.deepEqual(s.services?.map((x) => x.state), ['running']);
    const orders = s.topics[0]!;
    assert.equal(orders.published, 100);
    assert.equal(orders.groups[0]!.lag, 40);
    const { lagSeconds, ...shipping } = s.history.at(-1)!.topics.orders!.groups.shipping!;
    assert.deepEqual({ ...s.history.at(-1)!.topics.orders, groups: { shipping } }, { published: 100, groups: { shipping: { handled: 60, lag: 40 } } });
    assert.ok(lagSeconds >= 5 && lagSeconds < 6, `lag in seconds is the oldest unhandled message's age (5 s), got ${lagSeconds}`);
    assert.equal(orders.publishRate, 0, 'nothing published between the last two samples');
    assert.equal(s.deadLetters.total, 2);
    assert.deepEqual(s.deadLetters.entries.map((e) => e.error), ['failed 1', 'failed 2']);
  });

  it('streams snapshots over SSE, at most maxSseClients at once', async () => {
    const ac = new AbortController();
    const r = await fetch(`${server.url}/api/events`, { signal: ac.signal });
    assert.equal(r.headers.get('content-type'), 'text/event-stream');
    const reader = r.body!.getReader();
    let text = '';
    while (!text.includes('\n\n')) text += new TextDecoder().decode((await reader.read()).value);
    assert.match(text, /^event: snapshot\ndata: \{"name":"test"/);
    const second = await fetch(`${server.url}/api/events`);
    assert.equal(second.status, 503);
    ac.abort();
    await reader.cancel().catch(() => {});
  });

  it('inspects, redrives and discards dead letters; unknown ids are 404', async () => {
    const one = await api('/api/dead-letters/1');
    assert.equal(one.status, 200);
    assert.equal(((one.body.entry as { envelope: { data: { n: number } } }).envelope.data.n), 1);
    assert.deepEqual((await api('/api/dead-letters/1/redrive', 'POST')).body, { marked: 1 });
    assert.equal(((await deadLetters.get('000000000001'))!.status), 'redrive');
    assert.deepEqual((await api('/api/dead-letters/2/discard', 'POST')).body, { discarded: 1 });
    assert.equal(await deadLetters.count(), 1);
    const missing = await api('/api/dead-letters/99/redrive', 'POST');
    assert.equal(missing.status, 404);
    assert.deepEqual(missing.body, { error: { code: 'HERALD_ERR_NOT_FOUND', message: 'no dead letter with id "99"' } });
    assert.equal((await api('/api/dead-letters?limit=x')).status, 400);
  });

  it('time travel: the registered view folds its category, others get the generic merge', async () => {
    const order = (await api('/api/streams/order-1')).body as { view: string; steps: Array<{ event: { position: string; type: string }; state: unknown }> };
    assert.equal(order.view, 'order');
    assert.deepEqual(order.steps.map((s) => s.state), [{ events: 1, last: 'OrderPlaced' }, { events: 2, last: 'OrderPaid' }]);
    assert.equal(typeof order.steps[0]!.event.position, 'string', 'positions travel as strings');
    const cart = (await api('/api/streams/cart-1')).body as { view: null; before: unknown; steps: Array<{ state: unknown }> };
    assert.equal(cart.view, null);
    assert.deepEqual(cart.before, {});
    assert.deepEqual(cart.steps.map((s) => s.state), [{ sku: 'a' }]);
    const from2 = (await api('/api/streams/order-1?from=2')).body as { before: unknown; steps: unknown[] };
    assert.deepEqual(from2.before, { events: 1, last: 'OrderPlaced' });
    assert.equal(from2.steps.length, 1);
    assert.equal((await api('/api/streams/none-1')).status, 404);
    assert.deepEqual((await api('/api/streams')).body, { streams: ['order-1', 'cart-1'] });
  });

  it('stops and starts a service through the supervisor; sagas and causation say they are not available', async () => {
    assert.equal(((await api('/api/services/shipping/stop', 'POST')).body.service as ServiceInfo).state, 'stopped');
    assert.equal(((await api('/api/services/shipping/start', 'POST')).body.service as ServiceInfo).pid, 2);
    assert.equal((await api('/api/services/nope/start', 'POST')).status, 404);
    assert.deepEqual((await api('/api/sagas')).body, { available: false, instances: [], nextCursor: null });
    assert.equal((await api('/api/causation/c-1')).status, 503);
    assert.equal((await api('/api/nothing')).status, 404);
  });
});

describe('console server: causation', () => {
  it('GET /api/causation/:id is the source’s CausationGraph (a tree with handlers, durations, failures); limit passed through, default 500', async () => {
    const asked: Array<[string, number]> = [];
    const server = await createConsoleServer({
      sources: {
        name: 'test',
        topics: async () => [],
        deadLetters: new MemoryDeadLetterStore(),
        causation: async (correlationId, limit) => {
          asked.push([correlationId, limit]);
          return buildCausationGraph(
            correlationId,
            correlationId === 'c-1'
              ? [
                  { id: 'c-1', type: 'order.place', source: 'shop', time: 1000, causationId: undefined, where: 'topic commands/0@0' },
                  { id: 'e-1', type: 'payment.requested', source: 'billing', time: 1010, causationId: 'c-1', where: 'dead letter #1 (dead)' },
                ]
              : [],
            [
              { messageId: 'c-1', group: 'orders', handler: 'order.place', at: 1001, durationMs: 31, attempts: undefined, failed: false, error: undefined, from: 'inbox' },
              { messageId: 'e-1', group: 'bank', handler: 'charge', at: 1011, durationMs: undefined, attempts: 1, failed: true, error: 'card declined', from: 'dead letter' },
            ],
          );
        },
      },
      port: 0,
      intervalMs: 1000,
      buildApp: false,
    });
    try {
      const r = (await (await fetch(`${server.url}/api/causation/c-1?limit=7`)).json()) as CausationGraph;
      assert.equal(r.size, 2);
      const [root] = r.roots;
      assert.deepEqual([root!.id, root!.source, root!.handlers[0]!.durationMs, root!.failed], ['c-1', 'shop', 31, false]);
      const child = root!.children[0]!;
      assert.deepEqual([child.id, child.failed, child.handlers[0]!.error, child.where], ['e-1', true, 'card declined', ['dead letter #1 (dead)']]);
      const none = (await (await fetch(`${server.url}/api/causation/nobody`)).json()) as CausationGraph;
      assert.deepEqual(none, { correlationId: 'nobody', roots: [], size: 0, missing: [] });
      assert.deepEqual(asked, [
        ['c-1', 7],
        ['nobody', 500],
      ]);
    } finally {
      await server.close();
    }
  });
});
