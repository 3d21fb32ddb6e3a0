/**
 * The EventStore contract: what every event store (memory, SQLite, PostgreSQL) must do. Run it
 * from a test file with a factory, like Emmett's cross-backend suites:
 *
 *   describeEventStoreContract('sqlite', async ({ clock, catalog }) => {
 *     const path = tempFile();
 *     const store = createSqliteEventStore({ path, clock, catalog });
 *     return {
 *       store,
 *       reopen: async (o) => createSqliteEventStore({ path, clock, ...o }),
 *       cleanup: async () => { await store.close(); removeFile(path); },
 *     };
 *   });
 *
 * The factory must return an EMPTY store that uses the given clock (recorded times, maxAge) and
 * catalog. `reopen` opens a second store over the same data with other options — what a
 * process running newer code sees. Stores it returns are closed by the scenario. `cleanup` is
 * called once per scenario, passed or failed, and must accept an already closed store.
 * Every wait is bounded; scenarios run in a few seconds each.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { type Clock, defineEvent, type HeraldErrorCode, isHeraldError, type StandardSchemaV1 } from '@herald/core';
import {
  ConcurrencyError,
  EventCatalog,
  type EventStore,
  type EventSubscription,
  type NewEvent,
  type RecordedEvent,
  upcaster,
} from '@herald/eventsourcing';
import { assertDelivered, stressCount, withScope, type Scope } from './helpers.ts';
import { ManualClock } from './manual-clock.ts';

export interface EventStoreHarness {
  readonly store: EventStore;
  /** A second store over the same data, with other options. */
  reopen(options: { catalog?: EventCatalog }): Promise<EventStore>;
  /** Closes the store and removes what the factory created (must accept an already closed store). */
  cleanup(): Promise<void>;
}

export type EventStoreFactory = (options: { clock: Clock; catalog?: EventCatalog }) => Promise<EventStoreHarness>;

export interface EventStoreContext {
  readonly store: EventStore;
  readonly harness: EventStoreHarness;
  readonly clock: ManualClock;
  readonly scope: Scope;
  /** A stream id unique to the scenario, in category `cat` (default a fresh one). */
  stream(cat?: string): string;
  /** A category name unique to the scenario. */
  category(): string;
  /** Opens another store on the same data (closed with the scenario). */
  reopen(options: { catalog?: EventCatalog }): Promise<EventStore>;
}

export type EventStoreScenario = (factory: EventStoreFactory) => Promise<void>;

const WAIT_MS = 5000;

async function run(factory: EventStoreFactory, body: (c: EventStoreContext) => Promise<void>, catalog?: EventCatalog): Promise<void> {
  await withScope(async (scope) => {
    const clock = new ManualClock();
    const harness = await factory({ clock, ...(catalog ? { catalog } : {}) });
    scope.defer('event store cleanup', () => harness.cleanup());
    const head = await harness.store.headPosition();
    assert.equal(head, 0n, `the factory must return an empty event store (its head is ${head})`);
    const tag = randomUUID().slice(0, 8);
    let n = 0;
    await body({
      store: harness.store,
      harness,
      clock,
      scope,
      category: () => `c${tag}${n++}`,
      stream: (cat) => `${cat ?? `c${tag}${n++}`}-${randomUUID()}`,
      reopen: async (o) => {
        const s = await harness.reopen(o);
        scope.defer('reopened store', () => s.close());
        return s;
      },
    });
  });
}

function ev(type: string, data: unknown, extra: Partial<NewEvent> = {}): NewEvent {
  return { type, data, ...extra };
}

async function rejectsWith(p: () => unknown, code: HeraldErrorCode, label: string): Promise<unknown> {
  try {
    await p();
  } catch (e) {
    assert.ok(isHeraldError(e, code), `${label}: expected ${code}, got ${isHeraldError(e) ? e.code : 'a non-Herald error'}: ${String(e)}`);
    return e;
  }
  assert.fail(`${label}: expected a rejection with ${code}, but it succeeded`);
}

async function allOf(store: EventStore, options: { category?: string } = {}): Promise<RecordedEvent[]> {
  const out: RecordedEvent[] = [];
  let after = 0n;
  for (let i = 0; i < 10_000; i++) {
    const page = await store.readAll({ after, maxCount: 500, ...options });
    out.push(...page.events);
    after = page.position;
    if (page.isEnd) return out;
  }
  throw new Error('readAll did not reach the end within 10 000 pages');
}

async function streamOf(store: EventStore, streamId: string): Promise<RecordedEvent[]> {
  const out: RecordedEvent[] = [];
  let from: number | undefined = 1;
  while (from !== undefined) {
    const page = await store.readStream(streamId, { fromVersion: from, maxCount: 500 });
    out.push(...page.events);
    from = page.nextVersion;
  }
  return out;
}

/** Collects `n` events from a subscription, bounded in time. */
async function take(sub: AsyncIterable<RecordedEvent>, n: number, timeoutMs = WAIT_MS): Promise<RecordedEvent[]> {
  const got: RecordedEvent[] = [];
  if (n === 0) return got;
  const it = sub[Symbol.asyncIterator]();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms: the subscription gave ${got.length} of ${n} events`)), timeoutMs);
  });
  try {
    while (got.length < n) {
      const r = await Promise.race([it.next(), timeout]);
      if (r.done) break;
      got.push(r.value);
    }
  } finally {
    clearTimeout(timer);
  }
  return got;
}

// ---------------------------------------------------------------------------------------------
// Scenarios

export const appendAndReadBack: EventStoreScenario = (factory) =>
  run(factory, async ({ store, stream, clock }) => {
    const s = stream();
    const data = { city: 'Zürich ✓ 🚀', n: 1, nested: { list: [1, 2.5, -3, true, null, 'x'], empty: {} }, big: '12345678901234567890' };
    const r1 = await store.appendToStream(s, [
      ev('contract.opened', data, { id: 'e-1', correlationId: 'corr-1', causationId: 'cause-1', metadata: { tenant: 'acme', priority: 3, replay: false } }),
      ev('contract.added', { amount: 5 }),
    ]);
    assert.equal(r1.streamVersion, 2);
    assert.equal(typeof r1.position, 'bigint', 'global positions are bigint');
    assert.equal(r1.firstPosition, 1n, 'the first event of the store is at position 1n');
    assert.equal(r1.position, 2n);
    assert.equal(r1.idempotent, false);
    await clock.advance(1000);
    const r2 = await store.appendToStream(s, [ev('contract.added', { amount: 7 })]);
    assert.deepEqual([r2.streamVersion, r2.firstPosition, r2.position], [3, 3n, 3n]);
    assert.equal(await store.headPosition(), 3n);

    const read = await store.readStream(s);
    assert.equal(read.streamVersion, 3);
    assert.equal(read.streamPosition, 3n);
    assert.equal(read.streamExists, true);
    assert.equal(read.nextVersion, undefined);
    assert.deepEqual(read.events.map((e) => [e.streamVersion, e.position, e.type]), [
      [1, 1n, 'contract.opened'],
      [2, 2n, 'contract.added'],
      [3, 3n, 'contract.added'],
    ]);
    const first = read.events[0]!;
    assert.equal(first.streamId, s);
    assert.equal(first.id, 'e-1');
    assert.deepEqual(first.data, data);
    assert.notEqual(first.data, data, 'data is a copy, not the caller’s object');
    assert.equal(first.correlationId, 'corr-1');
    assert.equal(first.causationId, 'cause-1');
    assert.deepEqual(first.metadata, { tenant: 'acme', priority: 3, replay: false });
    assert.equal(first.schemaVersion, 1);
    assert.equal(first.recordedAt, clock.now() - 1000, 'recorded time comes from the injected clock');
    assert.equal(read.events[2]!.recordedAt, clock.now());
    assert.equal(typeof read.events[1]!.id, 'string');
    assert.ok(read.events[1]!.id.length > 0, 'ids default to a generated one');
    assert.equal(read.events[1]!.correlationId, undefined);

    const empty = await store.readStream(stream());
    assert.deepEqual([empty.events.length, empty.streamVersion, empty.streamExists, empty.streamPosition], [0, 0, false, 0n], 'a stream that never existed reads as empty, version 0');
    const info = await store.getStream(s);
    assert.deepEqual([info.state, info.streamVersion], ['live', 3]);
    assert.equal((await store.getStream(stream())).state, 'none');
  });

export const expectedVersionRules: EventStoreScenario = (factory) =>
  run(factory, async ({ store, stream }) => {
    const s = stream();
    const e1 = await rejectsWith(() => store.appendToStream(s, [ev('x', 1)], { expectedVersion: 'stream_exists' }), 'HERALD_ERR_CONCURRENCY', 'stream_exists on a new stream');
    assert.ok(e1 instanceof ConcurrencyError);
    assert.equal(e1.actualVersion, 0);
    assert.equal(e1.expectedVersion, 'stream_exists');
    assert.equal(e1.streamId, s);
    await rejectsWith(() => store.appendToStream(s, [ev('x', 1)], { expectedVersion: 3 }), 'HERALD_ERR_CONCURRENCY', 'a number on a new stream');
    assert.equal((await store.appendToStream(s, [ev('x', 1)], { expectedVersion: 'no_stream' })).streamVersion, 1);
    const e2 = await rejectsWith(() => store.appendToStream(s, [ev('x', 2)], { expectedVersion: 'no_stream' }), 'HERALD_ERR_CONCURRENCY', 'no_stream on an existing stream');
    assert.deepEqual([(e2 as ConcurrencyError).expectedVersion, (e2 as ConcurrencyError).actualVersion], ['no_stream', 1]);
    assert.equal((await store.appendToStream(s, [ev('x', 2)], { expectedVersion: 'stream_exists' })).streamVersion, 2);
    assert.equal((await store.appendToStream(s, [ev('x', 3), ev('x', 4)], { expectedVersion: 2 })).streamVersion, 4);
    const e3 = (await rejectsWith(() => store.appendToStream(s, [ev('x', 5)], { expectedVersion: 2 }), 'HERALD_ERR_CONCURRENCY', 'a stale number')) as ConcurrencyError;
    assert.deepEqual([e3.expectedVersion, e3.actualVersion], [2, 4]);
    assert.deepEqual(e3.details, { streamId: s, expectedVersion: 2, actualVersion: 4 });
    assert.equal(e3.retryable, true, 'a concurrency conflict is retryable');
    assert.equal((await store.appendToStream(s, [ev('x', 5)], { expectedVersion: 'any' })).streamVersion, 5);
    assert.equal((await store.appendToStream(s, [ev('x', 6)])).streamVersion, 6, "the default is 'any'");
    // An empty append only checks the version.
    const empty = await store.appendToStream(s, [], { expectedVersion: 6 });
    assert.deepEqual([empty.streamVersion, empty.position], [6, 6n]);
    await rejectsWith(() => store.appendToStream(s, [], { expectedVersion: 5 }), 'HERALD_ERR_CONCURRENCY', 'an empty append with a stale version');
    assert.deepEqual((await streamOf(store, s)).map((e) => e.data), [1, 2, 3, 4, 5, 6], 'failed appends stored nothing');
    await rejectsWith(() => store.appendToStream(s, [ev('x', 1)], { expectedVersion: -1 as never }), 'HERALD_ERR_INVALID_ARGUMENT', 'a negative version');
    await rejectsWith(() => store.appendToStream(s, [ev('x', 1)], { expectedVersion: 'latest' as never }), 'HERALD_ERR_INVALID_ARGUMENT', 'an unknown expectedVersion');
  });

export const multiEventAppendIsAtomic: EventStoreScenario = (factory) =>
  run(factory, async ({ store, stream }) => {
    const s = stream();
    await store.appendToStream(s, [ev('x', 0)]);
    // Bad input in the middle of a batch: refused before anything is stored.
    await rejectsWith(() => store.appendToStream(s, [ev('x', 1), ev('x', 10n as unknown), ev('x', 3)]), 'HERALD_ERR_INVALID_ARGUMENT', 'data that is not JSON');
    await rejectsWith(() => store.appendToStream(s, [ev('x', 1), { type: 'x' } as NewEvent]), 'HERALD_ERR_INVALID_ARGUMENT', 'an event without data');
    await rejectsWith(() => store.appendToStream(s, [ev('x', 1), { data: 1 } as unknown as NewEvent]), 'HERALD_ERR_INVALID_ARGUMENT', 'an event without type');
    await rejectsWith(() => store.appendToStream(s, 'nope' as never), 'HERALD_ERR_INVALID_ARGUMENT', 'events that are not an array');
    await rejectsWith(() => store.appendToStream('', [ev('x', 1)]), 'HERALD_ERR_INVALID_ARGUMENT', 'an empty stream id');
    await rejectsWith(() => store.appendToStream(s, [ev('x', 1, { id: 'same' }), ev('x', 2, { id: 'same' })]), 'HERALD_ERR_INVALID_ARGUMENT', 'an id twice in one append');
    // A conflicting multi-event append stores none of its events.
    await rejectsWith(() => store.appendToStream(s, [ev('x', 1), ev('x', 2), ev('x', 3)], { expectedVersion: 0 }), 'HERALD_ERR_CONCURRENCY', 'stale multi-event append');
    assert.equal(await store.headPosition(), 1n, 'nothing of the refused appends was stored');
    const r = await store.appendToStream(s, [ev('x', 1), ev('x', 2), ev('x', 3)], { expectedVersion: 1 });
    assert.deepEqual([r.streamVersion, r.firstPosition, r.position], [4, 2n, 4n], 'a multi-event append takes consecutive versions and positions');
    assert.deepEqual((await streamOf(store, s)).map((e) => [e.streamVersion, e.data]), [
      [1, 0],
      [2, 1],
      [3, 2],
      [4, 3],
    ]);
  });

export const idempotentAppends: EventStoreScenario = (factory) =>
  run(factory, async ({ store, stream }) => {
    const s = stream();
    const other = stream();
    const batch = [ev('x', 1, { id: 'a' }), ev('x', 2, { id: 'b' })];
    const first = await store.appendToStream(s, batch, { expectedVersion: 'no_stream' });
    await store.appendToStream(other, [ev('y', 0)]); // moves the head
    await store.appendToStream(s, [ev('x', 3, { id: 'c' })]);
    const head = await store.headPosition();
    // Exact retries: the same ids at the same positions return the original result.
    for (const expectedVersion of ['no_stream', 0, 'any', 'stream_exists'] as const) {
      const again = await store.appendToStream(s, batch, { expectedVersion });
      assert.deepEqual(again, { ...first, idempotent: true }, `exact retry with expectedVersion ${String(expectedVersion)}`);
    }
    const tail = await store.appendToStream(s, [ev('x', 3, { id: 'c' })], { expectedVersion: 2 });
    assert.deepEqual([tail.streamVersion, tail.idempotent], [3, true]);
    assert.equal(await store.headPosition(), head, 'retries stored nothing');
    // Partial overlaps are typed errors.
    const partial = await rejectsWith(() => store.appendToStream(s, [ev('x', 1, { id: 'a' }), ev('x', 9, { id: 'new' })]), 'HERALD_ERR_IDEMPOTENCY_CONFLICT', 'some ids stored, some not');
    assert.equal((partial as { details: { streamId: string } }).details.streamId, s);
    await rejectsWith(() => store.appendToStream(s, [ev('x', 2, { id: 'b' }), ev('x', 1, { id: 'a' })]), 'HERALD_ERR_IDEMPOTENCY_CONFLICT', 'the same ids in another order');
    await rejectsWith(() => store.appendToStream(s, [ev('x', 1, { id: 'a' }), ev('x', 3, { id: 'c' })]), 'HERALD_ERR_IDEMPOTENCY_CONFLICT', 'stored ids that are not consecutive');
    await rejectsWith(() => store.appendToStream(s, batch, { expectedVersion: 1 }), 'HERALD_ERR_IDEMPOTENCY_CONFLICT', 'the same ids after another version');
    await rejectsWith(() => store.appendToStream(s, [ev('other.type', 1, { id: 'a' }), ev('x', 2, { id: 'b' })]), 'HERALD_ERR_IDEMPOTENCY_CONFLICT', 'the same id for another event type');
    assert.equal(await store.headPosition(), head, 'conflicts stored nothing');
    // Ids are unique in the store (a CloudEvents id is unique per source): an id another stream uses is a conflict.
    const used = (await rejectsWith(() => store.appendToStream(other, [ev('x', 1, { id: 'a' })]), 'HERALD_ERR_IDEMPOTENCY_CONFLICT', 'an id used by another stream')) as Error;
    assert.ok(used.message.includes(s), `the error names the stream using the id: ${used.message}`);
    assert.equal((await streamOf(store, s)).length, 3);
    assert.equal((await streamOf(store, other)).length, 1);
    // Default ids are unique too, and grow with time (UUID v7).
    const auto = await store.appendToStream(other, [ev('x', 1), ev('x', 2)]);
    const [a1, a2] = (await store.readAll({ after: auto.firstPosition - 1n })).events;
    assert.match(a1!.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.ok(a1!.id < a2!.id, 'generated ids increase');
  });

export const readStreamPages: EventStoreScenario = (factory) =>
  run(factory, async ({ store, stream }) => {
    const s = stream();
    const noise = stream();
    for (let i = 1; i <= 25; i++) {
      await store.appendToStream(s, [ev('x', i)]);
      if (i % 5 === 0) await store.appendToStream(noise, [ev('y', i)]);
    }
    const fwd = await store.readStream(s, { fromVersion: 3, maxCount: 5 });
    assert.deepEqual(fwd.events.map((e) => e.streamVersion), [3, 4, 5, 6, 7]);
    assert.equal(fwd.nextVersion, 8);
    const bounded = await store.readStream(s, { fromVersion: 20, toVersion: 22 });
    assert.deepEqual(bounded.events.map((e) => e.data), [20, 21, 22]);
    assert.equal(bounded.nextVersion, undefined, 'toVersion reached: the read is complete');
    const back = await store.readStream(s, { direction: 'backward', maxCount: 4 });
    assert.deepEqual(back.events.map((e) => e.streamVersion), [25, 24, 23, 22]);
    assert.equal(back.nextVersion, 21);
    const backFrom = await store.readStream(s, { direction: 'backward', fromVersion: 3 });
    assert.deepEqual(backFrom.events.map((e) => e.streamVersion), [3, 2, 1]);
    assert.equal(backFrom.nextVersion, undefined);
    const backTo = await store.readStream(s, { direction: 'backward', fromVersion: 10, toVersion: 8 });
    assert.deepEqual(backTo.events.map((e) => e.streamVersion), [10, 9, 8]);
    // Paging forward and backward covers the stream exactly once.
    const seen: number[] = [];
    for (let from: number | undefined = 1; from !== undefined; ) {
      const p = await store.readStream(s, { fromVersion: from, maxCount: 7 });
      seen.push(...p.events.map((e) => e.streamVersion));
      from = p.nextVersion;
    }
    assert.deepEqual(seen, Array.from({ length: 25 }, (_, i) => i + 1));
    const seenBack: number[] = [];
    for (let from: number | undefined = 25; from !== undefined; ) {
      const p = await store.readStream(s, { direction: 'backward', fromVersion: from, maxCount: 6 });
      seenBack.push(...p.events.map((e) => e.streamVersion));
      from = p.nextVersion;
    }
    assert.deepEqual(seenBack, Array.from({ length: 25 }, (_, i) => 25 - i));
    const past = await store.readStream(s, { fromVersion: 26 });
    assert.deepEqual([past.events.length, past.nextVersion, past.streamVersion], [0, undefined, 25]);
    for (const maxCount of [0, -1, 1.5, 10_001, Number.NaN]) {
      await rejectsWith(() => store.readStream(s, { maxCount }), 'HERALD_ERR_INVALID_ARGUMENT', `maxCount ${maxCount}`);
    }
    await rejectsWith(() => store.readStream(s, { direction: 'sideways' as never }), 'HERALD_ERR_INVALID_ARGUMENT', 'a bad direction');
    const dflt = await store.readStream(s);
    assert.equal(dflt.events.length, 25, 'the default page holds 25 events');
  });

export const readAllAndCategories: EventStoreScenario = (factory) =>
  run(factory, async ({ store, stream, category }) => {
    const orders = category();
    const users = category();
    const appended: Array<{ stream: string; position: bigint }> = [];
    const oStreams = [stream(orders), stream(orders), stream(orders)];
    const uStreams = [stream(users), stream(users)];
    for (let i = 0; i < 30; i++) {
      const s = i % 3 === 0 ? uStreams[i % 2]! : oStreams[i % 3]!;
      const r = await store.appendToStream(s, [ev(`e.${i}`, i)]);
      appended.push({ stream: s, position: r.position });
    }
    const all = await allOf(store);
    assert.deepEqual(all.map((e) => e.position), appended.map((a) => a.position), '$all holds every event in position order');
    for (let i = 1; i < all.length; i++) assert.ok(all[i]!.position > all[i - 1]!.position, 'positions strictly increase');
    const from = await store.readAll({ after: 10n, maxCount: 5 });
    assert.deepEqual(from.events.map((e) => e.position), [11n, 12n, 13n, 14n, 15n]);
    assert.equal(from.position, 15n);
    assert.equal(from.isEnd, false);
    const end = await store.readAll({ after: 28n });
    assert.deepEqual(end.events.map((e) => e.position), [29n, 30n]);
    assert.deepEqual([end.isEnd, end.position], [true, 30n]);
    const beyond = await store.readAll({ after: 99n });
    assert.deepEqual([beyond.events.length, beyond.isEnd], [0, true]);
    const back = await store.readAll({ direction: 'backward', maxCount: 3 });
    assert.deepEqual(back.events.map((e) => e.position), [30n, 29n, 28n]);
    const back2 = await store.readAll({ direction: 'backward', before: back.position, maxCount: 2 });
    assert.deepEqual(back2.events.map((e) => e.position), [27n, 26n]);
    const backAll: bigint[] = [];
    for (let before: bigint | undefined; ; ) {
      const p = await store.readAll({ direction: 'backward', maxCount: 7, ...(before !== undefined ? { before } : {}) });
      backAll.push(...p.events.map((e) => e.position));
      before = p.position;
      if (p.isEnd) break;
    }
    assert.deepEqual(backAll, [...appended.map((a) => a.position)].reverse(), 'paging $all backward covers it exactly once');

    const cat = await allOf(store, { category: orders });
    const expected = appended.filter((a) => a.stream.startsWith(`${orders}-`)).map((a) => a.position);
    assert.deepEqual(cat.map((e) => e.position), expected, 'a category read returns the category’s events in position order');
    assert.deepEqual((await allOf(store, { category: `${orders}-` })).map((e) => e.position), expected, '"order-" and "order" name the same category');
    const catPage = await store.readAll({ category: users, maxCount: 3 });
    assert.equal(catPage.events.length, 3);
    assert.ok(catPage.events.every((e) => e.streamId.startsWith(`${users}-`)));
    const catEnd = await store.readAll({ category: users, after: catPage.position, maxCount: 1000 });
    assert.equal(catEnd.isEnd, true);
    assert.equal(catEnd.position, 30n, 'a category read that reached the end returns the head as its cursor');
    const catBack = await store.readAll({ category: orders, direction: 'backward', maxCount: 2 });
    assert.deepEqual(catBack.events.map((e) => e.position), [...expected].reverse().slice(0, 2));
    assert.deepEqual((await store.readAll({ category: 'nosuchcategory' })).events, []);
    await rejectsWith(() => store.readAll({ category: 'a-b' }), 'HERALD_ERR_INVALID_ARGUMENT', 'a category with a dash inside');
    await rejectsWith(() => store.readAll({ after: 3 as never }), 'HERALD_ERR_INVALID_ARGUMENT', 'a number position (positions are bigint)');
    await rejectsWith(() => store.readAll({ maxCount: 10_001 }), 'HERALD_ERR_INVALID_ARGUMENT', 'maxCount above the bound');
  });

export const catchUpSubscription: EventStoreScenario = (factory) =>
  run(factory, async ({ store, stream, category }) => {
    const cat = category();
    const a = stream(cat);
    const b = stream();
    for (let i = 0; i < 20; i++) await store.appendToStream(i % 2 ? a : b, [ev('h', i)]);
    const sub = store.subscribe({ batchSize: 7 });
    const history = await take(sub, 20);
    assert.deepEqual(history.map((e) => e.position), Array.from({ length: 20 }, (_, i) => BigInt(i + 1)), 'history first, in order');
    // Live: appends made after it caught up arrive, with no gap and no duplicate.
    const live = take(sub, 10);
    for (let i = 0; i < 10; i++) await store.appendToStream(i % 2 ? a : b, [ev('l', i)]);
    assert.deepEqual((await live).map((e) => e.position), Array.from({ length: 10 }, (_, i) => BigInt(i + 21)));
    assert.equal(sub.position, 30n);
    await sub.close();
    const after = await take(sub, 1, 200).catch(() => []);
    assert.equal(after.length, 0, 'a closed subscription yields nothing');

    // From a position, and one category.
    const fromPos = store.subscribe({ after: 25n });
    assert.deepEqual((await take(fromPos, 5)).map((e) => e.position), [26n, 27n, 28n, 29n, 30n]);
    await fromPos.close();
    const catSub = store.subscribe({ category: cat, batchSize: 3 });
    const catEvents = await take(catSub, 15);
    assert.ok(catEvents.every((e) => e.streamId === a));
    const more = take(catSub, 2);
    await store.appendToStream(b, [ev('noise', 0)]);
    await store.appendToStream(a, [ev('mine', 1)]);
    await store.appendToStream(b, [ev('noise', 2)]);
    await store.appendToStream(a, [ev('mine', 3)]);
    assert.deepEqual((await more).map((e) => e.data), [1, 3]);
    await catSub.close();

    // Aborting the signal closes the subscription.
    const ac = new AbortController();
    const aborted = store.subscribe({ after: await store.headPosition(), signal: ac.signal });
    const pending = aborted[Symbol.asyncIterator]().next();
    ac.abort();
    assert.equal((await pending).done, true);
    await aborted.closed;
  });

export const subscriptionCheckpoints: EventStoreScenario = (factory) =>
  run(factory, async ({ store, stream }) => {
    const s = stream();
    const name = `cp-${randomUUID()}`;
    for (let i = 0; i < 10; i++) await store.appendToStream(s, [ev('x', i)]);
    assert.equal(await store.checkpoints.get(name), undefined);
    const sub = store.subscribe({ checkpoint: name });
    const firstSix = await take(sub, 6);
    await sub.commit();
    assert.equal(await store.checkpoints.get(name), firstSix[5]!.position);
    await sub.close();
    const resumed = store.subscribe({ checkpoint: name, after: 0n });
    const rest = await take(resumed, 4);
    assert.deepEqual(rest.map((e) => e.data), [6, 7, 8, 9], 'a named checkpoint resumes after the committed position');
    await resumed.commit(rest[1]!.position);
    assert.equal(await store.checkpoints.get(name), rest[1]!.position);
    await resumed.close();
    const noName = store.subscribe({});
    await rejectsWith(() => noName.commit(), 'HERALD_ERR_INVALID_ARGUMENT', 'commit without a checkpoint name');
    await noName.close();
    await store.checkpoints.set(name, 2n);
    assert.equal(await store.checkpoints.get(name), 2n);
  });

/** Must show: a subscription started mid-stream while writers keep appending sees every event exactly once in global order. */
export const subscriptionWhileWriting: EventStoreScenario = (factory) =>
  run(factory, async ({ store, stream }) => {
    const writers = 4;
    const perWriter = 150 * stressCount();
    const streams = Array.from({ length: writers }, () => stream());
    const batchSize = (i: number): number => 1 + (i % 3);
    let total = 0;
    for (let i = 0; i < perWriter; i++) total += batchSize(i) * writers;
    const ids: string[] = [];
    const received: RecordedEvent[] = [];
    let startedAt = -1n;
    let collecting: Promise<void> | undefined;
    let sub: EventSubscription | undefined;
    await Promise.all(
      streams.map(async (s, w) => {
        for (let i = 0; i < perWriter; i++) {
          const batch = Array.from({ length: batchSize(i) }, (_, j) => ev('w', { w, i, j }, { id: `${w}-${i}-${j}` }));
          await store.appendToStream(s, batch);
          for (const e of batch) ids.push(e.id!);
          if (w === 0 && i === Math.floor(perWriter / 3)) {
            // Start in the middle, from the start of $all: history to catch up with while writes go on.
            startedAt = await store.headPosition();
            const mine = (sub = store.subscribe({ batchSize: 50 }));
            collecting = (async () => {
              for await (const e of mine) {
                received.push(e);
                if (received.length >= total) break;
              }
            })();
          }
          if (i % 10 === 0) await new Promise((r) => setImmediate(r));
        }
      }),
    );
    assert.ok(startedAt > 0n && startedAt < BigInt(total), 'the subscription started mid-stream');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      collecting,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out: the subscription received ${received.length} of ${total} events`)), WAIT_MS * 2);
      }),
    ]).finally(() => clearTimeout(timer));
    await sub!.close();
    assert.equal(ids.length, total);
    assertDelivered(ids, received.map((e) => e.id), { label: 'subscription started mid-stream' });
    for (let i = 1; i < received.length; i++) {
      assert.ok(received[i]!.position > received[i - 1]!.position, `global order broken at ${i}: ${received[i - 1]!.position} then ${received[i]!.position}`);
    }
  });

export const streamMetadataRules: EventStoreScenario = (factory) =>
  run(factory, async ({ store, stream, clock }) => {
    const s = stream();
    for (let i = 1; i <= 10; i++) {
      await store.appendToStream(s, [ev('x', i)]);
      await clock.advance(1000);
    }
    await store.setStreamMetadata(s, { maxCount: 3 });
    assert.deepEqual((await store.readStream(s)).events.map((e) => e.data), [8, 9, 10], 'maxCount keeps the newest events');
    assert.deepEqual((await store.readStream(s, { direction: 'backward' })).events.map((e) => e.data), [10, 9, 8]);
    assert.deepEqual((await store.getStream(s)).metadata, { maxCount: 3 });
    await store.setStreamMetadata(s, { truncateBefore: 6, custom: { owner: 'team-a' } });
    assert.deepEqual((await store.readStream(s)).events.map((e) => e.data), [6, 7, 8, 9, 10], 'setting metadata replaces it: truncateBefore alone');
    assert.equal((await store.readStream(s)).truncateBefore, 6);
    assert.deepEqual((await store.getStream(s)).metadata, { truncateBefore: 6, custom: { owner: 'team-a' } });
    // clock is now 10 s after the first append; events are 1 s apart.
    await store.setStreamMetadata(s, { maxAgeMs: 3500 });
    assert.deepEqual((await store.readStream(s)).events.map((e) => e.data), [8, 9, 10], 'maxAge leaves out older events (by the injected clock)');
    await clock.advance(60_000);
    assert.deepEqual((await store.readStream(s)).events, []);
    assert.equal((await store.readStream(s)).streamVersion, 10, 'the version stays');
    await store.setStreamMetadata(s, {});
    assert.equal((await store.readStream(s)).events.length, 10);
    assert.equal((await allOf(store)).length, 10, 'metadata only filters stream reads, never $all');
    // Metadata on a stream without events; appends then follow it.
    const fresh = stream();
    await store.setStreamMetadata(fresh, { maxCount: 2 });
    await store.appendToStream(fresh, [ev('x', 1), ev('x', 2), ev('x', 3)], { expectedVersion: 'no_stream' });
    assert.deepEqual((await store.readStream(fresh)).events.map((e) => e.data), [2, 3]);
    await rejectsWith(() => store.setStreamMetadata(s, { maxCount: 0 }), 'HERALD_ERR_INVALID_ARGUMENT', 'maxCount 0');
    await rejectsWith(() => store.setStreamMetadata(s, { maxAge: 5 } as never), 'HERALD_ERR_INVALID_ARGUMENT', 'an unknown metadata field');
  });

export const softDeleteAndTombstone: EventStoreScenario = (factory) =>
  run(factory, async ({ store, stream }) => {
    const s = stream();
    const keep = stream();
    await store.appendToStream(s, [ev('x', 1), ev('x', 2)]);
    await store.appendToStream(keep, [ev('k', 1)]);
    await rejectsWith(() => store.deleteStream(s, { expectedVersion: 1 }), 'HERALD_ERR_CONCURRENCY', 'soft delete with a stale version');
    await store.deleteStream(s, { expectedVersion: 2 });
    const gone = await store.readStream(s);
    assert.deepEqual([gone.events.length, gone.streamExists, gone.streamVersion], [0, false, 2], 'a soft-deleted stream reads empty and keeps its version');
    assert.equal((await store.getStream(s)).state, 'soft_deleted');
    assert.equal((await allOf(store)).length, 3, 'soft-deleted events stay in $all');
    await rejectsWith(() => store.appendToStream(s, [ev('x', 3)], { expectedVersion: 'stream_exists' }), 'HERALD_ERR_CONCURRENCY', 'stream_exists on a soft-deleted stream');
    const revived = await store.appendToStream(s, [ev('x', 3)], { expectedVersion: 'no_stream' });
    assert.equal(revived.streamVersion, 3, 'appending again continues from the last version');
    const after = await store.readStream(s);
    assert.deepEqual(after.events.map((e) => [e.streamVersion, e.data]), [[3, 3]], 'only events after the delete are visible');
    assert.equal(after.streamExists, true);
    assert.equal((await store.getStream(s)).state, 'live');
    await store.deleteStream(stream()); // a stream with no events: no-op

    await store.tombstoneStream(s, { expectedVersion: 3 });
    await rejectsWith(() => store.readStream(s), 'HERALD_ERR_STREAM_DELETED', 'reading a tombstoned stream');
    await rejectsWith(() => store.appendToStream(s, [ev('x', 4)]), 'HERALD_ERR_STREAM_DELETED', 'appending to a tombstoned stream');
    await rejectsWith(() => store.appendToStream(s, [ev('x', 4)], { expectedVersion: 'no_stream' }), 'HERALD_ERR_STREAM_DELETED', 'recreating a tombstoned stream');
    await rejectsWith(() => store.setStreamMetadata(s, {}), 'HERALD_ERR_STREAM_DELETED', 'metadata of a tombstoned stream');
    await rejectsWith(() => store.tombstoneStream(s), 'HERALD_ERR_STREAM_DELETED', 'tombstoning twice');
    assert.equal((await store.getStream(s)).state, 'tombstoned');
    const all = await allOf(store);
    assert.deepEqual(all.map((e) => e.streamId), [keep], 'a tombstoned stream’s events are gone from $all');
    const next = await store.appendToStream(keep, [ev('k', 2)]);
    assert.equal(next.position, 5n, 'positions are never reused after a tombstone');
  });

/** Must show: 16 concurrent writers on one stream with expected versions. */
export const concurrentWriters: EventStoreScenario = (factory) =>
  run(factory, async ({ store, stream }) => {
    const s = stream();
    const WRITERS = 16;
    const PER_WRITER = 20 * stressCount();
    const conflicts: ConcurrencyError[] = [];
    await Promise.all(
      Array.from({ length: WRITERS }, async (_, w) => {
        for (let i = 0; i < PER_WRITER; i++) {
          const id = `w${w}-${i}`;
          for (let attempt = 1; ; attempt++) {
            const { streamVersion } = await store.readStream(s, { direction: 'backward', maxCount: 1 });
            try {
              const r = await store.appendToStream(s, [ev('write', { w, i }, { id })], { expectedVersion: streamVersion });
              assert.equal(r.streamVersion, streamVersion + 1);
              break;
            } catch (e) {
              if (!(e instanceof ConcurrencyError)) throw e;
              assert.equal(e.expectedVersion, streamVersion, 'the error carries the expected version');
              assert.ok(e.actualVersion > streamVersion, 'and the actual one, which moved ahead');
              conflicts.push(e);
              if (attempt > 500) throw new Error(`writer ${w} did not converge`);
            }
          }
        }
      }),
    );
    const events = await streamOf(store, s);
    assert.deepEqual(events.map((e) => e.streamVersion), Array.from({ length: WRITERS * PER_WRITER }, (_, i) => i + 1), 'every version exists exactly once');
    assertDelivered(
      Array.from({ length: WRITERS * PER_WRITER }, (_, i) => `w${i % WRITERS}-${Math.floor(i / WRITERS)}`),
      events.map((e) => e.id),
      { label: 'no event lost or duplicated' },
    );
    assert.ok(conflicts.length > 0, 'writers did conflict');
  });

/** Must show: one conflict never fails the other appends made at the same time (a group-commit batch). */
export const conflictDoesNotFailOthers: EventStoreScenario = (factory) =>
  run(factory, async ({ store, stream }) => {
    const s = stream();
    await store.appendToStream(s, [ev('x', 0)]);
    const others = Array.from({ length: 8 }, () => stream());
    // All in the same turn of the event loop: one batch where the backend group-commits.
    const racers = Array.from({ length: 16 }, (_, i) => store.appendToStream(s, [ev('race', i), ev('race', i + 100)], { expectedVersion: 1 }));
    const bystanders = others.map((o, i) => store.appendToStream(o, [ev('other', i)], { expectedVersion: 'no_stream' }));
    const results = await Promise.allSettled(racers);
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.equal(won.length, 1, 'exactly one of 16 appends expecting version 1 wins');
    for (const l of lost) {
      assert.ok(l.reason instanceof ConcurrencyError, `a loser fails with ConcurrencyError (got ${String(l.reason)})`);
      assert.deepEqual([l.reason.expectedVersion, l.reason.actualVersion], [1, 3]);
    }
    const side = await Promise.allSettled(bystanders);
    assert.deepEqual(side.map((r) => r.status), others.map(() => 'fulfilled'), 'appends to other streams in the same batch all commit');
    assert.equal((await streamOf(store, s)).length, 3, 'the winner’s two events, nothing of the losers');
    for (const o of others) assert.equal((await store.readStream(o)).streamVersion, 1);
  });

export const schemaValidationAndUpcasting: EventStoreScenario = async (factory) => {
  const AddedV1 = defineEvent('contract.item-added', objectSchema({ sku: 'string', qty: 'integer' }), { version: 1 });
  const AddedV2 = defineEvent('contract.item-added', objectSchema({ sku: 'string', quantity: 'positive' }), { version: 2 });
  const AddedV3 = defineEvent('contract.item-added', objectSchema({ sku: 'string', quantity: 'positive', unit: 'string' }), { version: 3 });
  const Renamed = defineEvent('contract.item-removed', objectSchema({ sku: 'string' }), { version: 1 });
  const Dropped = defineEvent('contract.item-dropped', objectSchema({ sku: 'string', reason: 'string' }), { version: 1 });
  const writer = new EventCatalog({ definitions: [AddedV1, AddedV2, Renamed] });
  await run(
    factory,
    async ({ store, stream }) => {
      const s = stream();
      await rejectsWith(() => store.appendToStream(s, [ev('contract.item-added', { sku: 'a', quantity: -1 })]), 'HERALD_ERR_SCHEMA_INVALID', 'data failing its schema');
      await rejectsWith(() => store.appendToStream(s, [ev('contract.item-added', { sku: 'a', quantity: 1 }), ev('contract.item-added', { sku: 5 })]), 'HERALD_ERR_SCHEMA_INVALID', 'one bad event in a batch');
      await rejectsWith(() => store.appendToStream(s, [ev('contract.unknown', {})]), 'HERALD_ERR_UNKNOWN_EVENT_TYPE', 'a type not in the catalog');
      await rejectsWith(() => store.appendToStream(s, [ev('contract.item-added', { sku: 'a' }, { schemaVersion: 9 })]), 'HERALD_ERR_UNKNOWN_EVENT_VERSION', 'a version not in the catalog');
      assert.equal(await store.headPosition(), 0n, 'refused before anything was stored');
      await store.appendToStream(s, [ev('contract.item-added', { sku: 'a', qty: 2 }, { schemaVersion: 1 })]);
      await store.appendToStream(s, [ev('contract.item-added', { sku: 'b', quantity: 3 })]); // newest version (2) by default
      await store.appendToStream(s, [ev('contract.item-removed', { sku: 'a' })]);
      const asWritten = (await store.readStream(s)).events;
      assert.deepEqual(asWritten.map((e) => [e.type, e.schemaVersion]), [
        ['contract.item-added', 2],
        ['contract.item-added', 2],
        ['contract.item-removed', 1],
      ], 'this catalog upcasts the v1 event to v2 on read');
    },
    new EventCatalog({
      definitions: [AddedV1, AddedV2, Renamed],
      upcasters: [upcaster('contract.item-added', 1, (d: { sku: string; qty: number }) => ({ sku: d.sku, quantity: d.qty }))],
    }),
  );
  await run(
    factory,
    async ({ store, stream, reopen }) => {
      const s = stream();
      await store.appendToStream(s, [ev('contract.item-added', { sku: 'a', qty: 2 }, { schemaVersion: 1 })]);
      await store.appendToStream(s, [ev('contract.item-added', { sku: 'b', quantity: 3 }, { schemaVersion: 2 })]);
      await store.appendToStream(s, [ev('contract.item-removed', { sku: 'a' })]);
      // Newer code: v3 is current, upcasters chain v1 → v2 → v3; the removal type was renamed.
      const reader = await reopen({
        catalog: new EventCatalog({
          definitions: [AddedV3, Dropped],
          upcasters: [
            upcaster('contract.item-added', 1, (d: { sku: string; qty: number }) => ({ sku: d.sku, quantity: d.qty })),
            upcaster('contract.item-added', 2, (d: { sku: string; quantity: number }) => ({ ...d, unit: 'piece' })),
            upcaster('contract.item-removed', 1, (d: { sku: string }) => ({ ...d, reason: 'unknown' }), { toType: 'contract.item-dropped', toVersion: 1 }),
          ],
        }),
      });
      const read = (await reader.readStream(s)).events;
      assert.deepEqual(read.map((e) => [e.type, e.schemaVersion, e.data]), [
        ['contract.item-added', 3, { sku: 'a', quantity: 2, unit: 'piece' }],
        ['contract.item-added', 3, { sku: 'b', quantity: 3, unit: 'piece' }],
        ['contract.item-dropped', 1, { sku: 'a', reason: 'unknown' }],
      ]);
      assert.deepEqual(read[0]!.stored, { type: 'contract.item-added', schemaVersion: 1 });
      assert.deepEqual(read[2]!.stored, { type: 'contract.item-removed', schemaVersion: 1 });
      assert.deepEqual((await allOf(reader)).map((e) => e.schemaVersion), [3, 3, 1], 'upcasting applies to $all reads too');
      // Stored events were never rewritten: a store without a catalog reads them as stored.
      const raw = (await (await reopen({})).readStream(s)).events;
      assert.deepEqual(raw.map((e) => [e.type, e.schemaVersion, e.data]), [
        ['contract.item-added', 1, { sku: 'a', qty: 2 }],
        ['contract.item-added', 2, { sku: 'b', quantity: 3 }],
        ['contract.item-removed', 1, { sku: 'a' }],
      ]);
      // A reader whose catalog lacks a stored type: a typed error naming the stream and position…
      const v1ToV2 = upcaster('contract.item-added', 1, (d: { sku: string; qty: number }) => ({ sku: d.sku, quantity: d.qty }));
      const strict = await reopen({ catalog: new EventCatalog({ definitions: [AddedV1, AddedV2], upcasters: [v1ToV2] }) });
      const err = (await rejectsWith(() => strict.readStream(s), 'HERALD_ERR_UNKNOWN_STORED_EVENT', 'an unknown stored type')) as { message: string; details: Record<string, unknown> };
      assert.equal(err.details.streamId, s);
      assert.equal(err.details.position, '3');
      assert.equal(err.details.streamVersion, 3);
      assert.equal(err.details.type, 'contract.item-removed');
      assert.ok(err.message.includes(s) && err.message.includes('position 3'), err.message);
      await rejectsWith(() => strict.readAll(), 'HERALD_ERR_UNKNOWN_STORED_EVENT', 'the same on $all');
      // …unless an option covers it.
      const skipping = await reopen({ catalog: new EventCatalog({ definitions: [AddedV1, AddedV2], upcasters: [v1ToV2], unknownEvents: 'skip' }) });
      assert.deepEqual((await skipping.readStream(s)).events.map((e) => e.streamVersion), [1, 2]);
      const page = await skipping.readAll({ maxCount: 10 });
      assert.deepEqual([page.events.length, page.position, page.isEnd], [2, 3n, true], 'skipped events still advance the cursor');
      const passing = await reopen({ catalog: new EventCatalog({ definitions: [AddedV2], unknownEvents: 'pass' }) });
      assert.deepEqual((await passing.readStream(s)).events.map((e) => [e.type, e.schemaVersion]), [
        ['contract.item-added', 1],
        ['contract.item-added', 2],
        ['contract.item-removed', 1],
      ]);
      // A version newer than the reader knows, with no upcaster: typed error too.
      const older = await reopen({ catalog: new EventCatalog({ definitions: [AddedV1, Renamed] }) });
      const newer = (await rejectsWith(() => older.readStream(s), 'HERALD_ERR_UNKNOWN_STORED_EVENT', 'a stored version newer than the reader')) as { details: Record<string, unknown> };
      assert.equal(newer.details.position, '2');
    },
    writer,
  );
};

export const closedStoreRefuses: EventStoreScenario = (factory) =>
  run(factory, async ({ store, stream }) => {
    const s = stream();
    await store.appendToStream(s, [ev('x', 1)]);
    const sub = store.subscribe({});
    const it = sub[Symbol.asyncIterator]();
    assert.equal((await it.next()).done, false);
    const pending = it.next();
    await store.close();
    assert.equal((await pending).done, true, 'close ends a waiting subscription');
    await store.close(); // idempotent
    await rejectsWith(() => store.appendToStream(s, [ev('x', 2)]), 'HERALD_ERR_CLOSED', 'append after close');
    await rejectsWith(() => store.readStream(s), 'HERALD_ERR_CLOSED', 'read after close');
    await rejectsWith(() => store.readAll(), 'HERALD_ERR_CLOSED', 'readAll after close');
  });

type FieldRule = 'string' | 'integer' | 'positive';

/** A minimal Standard Schema for an object with required fields (the testkit depends on no schema library). */
function objectSchema(fields: Record<string, FieldRule>): StandardSchemaV1<unknown, Record<string, unknown>> {
  return {
    '~standard': {
      version: 1,
      vendor: 'herald-testkit',
      validate(value: unknown) {
        if (typeof value !== 'object' || value === null || Array.isArray(value)) return { issues: [{ message: 'expected an object' }] };
        const v = value as Record<string, unknown>;
        const issues: Array<{ message: string; path: string[] }> = [];
        for (const [k, rule] of Object.entries(fields)) {
          const x = v[k];
          const ok = rule === 'string' ? typeof x === 'string' : typeof x === 'number' && Number.isInteger(x) && (rule === 'integer' || x > 0);
          if (!ok) issues.push({ message: `expected ${rule === 'string' ? 'a string' : rule === 'integer' ? 'an integer' : 'a positive integer'}`, path: [k] });
        }
        for (const k of Object.keys(v)) if (!(k in fields)) issues.push({ message: 'unexpected field', path: [k] });
        return issues.length > 0 ? { issues } : { value: v };
      },
    },
  };
}

export const eventStoreScenarios: Readonly<Record<string, EventStoreScenario>> = {
  'append and read back: versions, bigint positions, data, ids, correlation and metadata': appendAndReadBack,
  'expectedVersion: any, no_stream, stream_exists, exact; typed conflict with both versions': expectedVersionRules,
  'a multi-event append is atomic; bad input is refused before anything is stored': multiEventAppendIsAtomic,
  'idempotent appends: an exact retry returns the original positions; a partial overlap or an id of another stream is a typed error': idempotentAppends,
  'read a stream forward and backward, from/to a version, paginated by maxCount': readStreamPages,
  'read $all by global position (both directions) and by category': readAllAndCategories,
  'catch-up subscription: history then live, from a position, by category, closed by abort': catchUpSubscription,
  'subscription checkpoints: commit and resume': subscriptionCheckpoints,
  'a subscription started mid-stream while writers append sees every event exactly once, in global order': subscriptionWhileWriting,
  'stream metadata: maxCount, maxAge (injected clock), truncateBefore': streamMetadataRules,
  'soft delete and tombstone': softDeleteAndTombstone,
  '16 concurrent writers on one stream: every version once, typed conflicts, retries converge, nothing lost': concurrentWriters,
  'one conflict never fails the other appends made at the same time': conflictDoesNotFailOthers,
  'schema validation on append; upcasting v1→v2→v3 on read; unknown stored events': schemaValidationAndUpcasting,
  'a closed store refuses calls and ends its subscriptions': closedStoreRefuses,
};

/** Registers the whole contract under `describe(name)`. */
export function describeEventStoreContract(name: string, factory: EventStoreFactory): void {
  describe(`EventStore contract: ${name}`, () => {
    for (const [title, scenario] of Object.entries(eventStoreScenarios)) {
      it(title, { timeout: 60_000 }, () => scenario(factory));
    }
  });
}
