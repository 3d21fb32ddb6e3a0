/**
 * The DeadLetterStore contract: what every dead-letter store (memory, SQLite, PostgreSQL)
 * must do for dead-lettering, parking keys and redrive to be correct.
 *
 *   describeDeadLetterContract('sqlite', async () => {
 *     const store = openSqliteDeadLetters(tmpFile());
 *     return { store, cleanup: () => store.close() };
 *   });
 *
 * The factory must return an EMPTY store (a fresh database, schema or table); each scenario
 * checks that first. `cleanup` is called once per scenario, passed or failed, and must accept
 * a store the scenario already closed.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it, type TestContext } from 'node:test';
import {
  type CloudEvent,
  createEnvelope,
  type DeadLetterEntry,
  type DeadLetterFilter,
  type DeadLetterStore,
  isHeraldError,
  type HeraldErrorCode,
  MAX_DEAD_LETTER_PAGE,
  type NewDeadLetter,
} from '@herald/core';
import { stressCount, uniqueName, withScope } from './helpers.ts';

export interface DeadLetterStoreHarness {
  readonly store: DeadLetterStore;
  /** Closes the store and removes what the factory created (must accept an already closed store). */
  cleanup(): Promise<void>;
}

export type DeadLetterStoreFactory = () => Promise<DeadLetterStoreHarness>;

interface Ctx {
  readonly store: DeadLetterStore;
  /** A group, topic and type name unique to the scenario (more with `name()`). */
  readonly group: string;
  readonly topic: string;
  readonly type: string;
  /** A NewDeadLetter with realistic content; override any field. */
  entry(over?: Partial<NewDeadLetter> & { type?: string }): NewDeadLetter;
}

const T0 = Date.UTC(2024, 0, 1, 12);

async function run(factory: DeadLetterStoreFactory, body: (c: Ctx) => Promise<void>): Promise<void> {
  await withScope(async (scope) => {
    const h = await factory();
    scope.defer('dead-letter store cleanup', () => h.cleanup());
    const n = await h.store.count();
    assert.equal(n, 0, `the factory must return an empty dead-letter store (it holds ${n} entries)`);
    const group = uniqueName('g');
    const topic = uniqueName('t');
    const type = `contract.failed.${randomUUID().slice(0, 8)}`;
    let seq = 0;
    await body({
      store: h.store,
      group,
      topic,
      type,
      entry: (over = {}) => {
        const i = seq++;
        const { type: typeOver, ...rest } = over;
        const key = over.key === undefined ? `key-${i % 3}` : over.key;
        const envelope = makeEnvelope(typeOver ?? type, key, i);
        const at = T0 + i * 1000;
        return {
          group,
          topic,
          partition: i % 4,
          key,
          handler: 'onThingFailed',
          envelope,
          raw: `${JSON.stringify(envelope, null, 2)}\n`,
          position: String(1000 + i),
          error: { code: 'HERALD_ERR_TRANSIENT', message: `Handler Failed: Downstream TIMEOUT #${i}`, stack: `Error: Handler Failed\n    at handler (file:///srv/app.ts:${i + 1}:7)\n    at run (node:internal)` },
          attempts: 5,
          firstFailedAt: at - 500,
          lastFailedAt: at,
          ...rest,
        };
      },
    });
  });
}

function makeEnvelope(type: string, key: string | null, i: number): CloudEvent {
  return createEnvelope({
    type,
    source: 'herald-testkit/dead-letters',
    id: `evt-${i}-${randomUUID()}`,
    time: new Date(T0 + i),
    subject: `order/${i}`,
    dataschema: `urn:herald:schema:${type}:v2`,
    data: { n: i, city: 'Zürich ✓ 🚀', nested: { list: [1, 2.5, -3, true, null, 'x'], empty: {} }, big: '12345678901234567890' },
    ...(key !== null ? { partitionkey: key } : {}),
    correlationid: `corr-${i}`,
    causationid: `cause-${i}`,
    traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    extensions: { tenantid: 'acme', priority: 3, replayed: false },
  });
}

async function rejectsWith(p: () => unknown, code: HeraldErrorCode, label: string): Promise<void> {
  let result: unknown;
  try {
    result = await p();
  } catch (e) {
    assert.ok(isHeraldError(e, code), `${label}: expected ${code}, got ${isHeraldError(e) ? e.code : 'a non-Herald error'}: ${String(e)}`);
    return;
  }
  assert.fail(`${label}: expected a rejection with ${code}, but it succeeded (${safeShow(result)})`);
}

function safeShow(v: unknown): string {
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 120 ? `${s.slice(0, 120)}…` : s;
  } catch {
    return String(v);
  }
}

const ids = (es: readonly DeadLetterEntry[]): string[] => es.map((e) => e.id);

async function listAll(store: DeadLetterStore, filter: DeadLetterFilter = {}, limit = 1000): Promise<DeadLetterEntry[]> {
  const out: DeadLetterEntry[] = [];
  let cursor: string | undefined;
  for (let pages = 0; pages < 10_000; pages++) {
    const page = await store.list(filter, cursor === undefined ? { limit } : { cursor, limit });
    out.push(...page.entries);
    if (page.nextCursor === undefined) return out;
    cursor = page.nextCursor;
  }
  throw new Error('list never ended');
}

async function status(store: DeadLetterStore, id: string): Promise<string> {
  return (await store.get(id))?.status ?? '(gone)';
}

type Scenario = (t: TestContext, factory: DeadLetterStoreFactory) => Promise<void>;

export const addKeepsEntryWhole: Scenario = (_t, factory) =>
  run(factory, async ({ store, entry, type }) => {
    const input = entry({ key: 'order-42', partition: 7, position: '0000042', attempts: 3 });
    const added = await store.add(input);
    assert.equal(typeof added.id, 'string');
    assert.ok(added.id.length > 0, 'id is non-empty');
    for (const k of Object.keys(input) as Array<keyof NewDeadLetter>) {
      assert.deepStrictEqual(added[k], input[k], `add() returns the stored ${k} unchanged`);
    }
    assert.equal(added.eventId, input.envelope!.id);
    assert.equal(added.type, type);
    assert.equal(added.status, 'dead');
    assert.equal(added.parkedBehind, null);
    const got = await store.get(added.id);
    assert.ok(got, 'get() finds the entry');
    assert.deepStrictEqual({ ...got }, { ...added }, 'get() returns what add() returned');
    assert.equal(got.raw, input.raw, 'raw bytes kept exactly (whitespace, non-ASCII)');
    assert.deepStrictEqual(got.envelope, input.envelope, 'envelope kept exactly (extensions, nested data)');
    assert.deepStrictEqual(got.error, input.error, 'error code, message and stack kept');
    assert.equal(await store.get(`${added.id}999`), undefined, 'get() of an unknown id is undefined');
  });

export const addUndecodableMessage: Scenario = (_t, factory) =>
  run(factory, async ({ store, entry }) => {
    const raw = '{"specversion": 1.0, "id": broken… 🚀\n\ttrailing';
    const added = await store.add(entry({ envelope: null, raw, key: null, handler: 'decode', error: { code: 'HERALD_ERR_CORRUPT_RECORD', message: 'unreadable' } }));
    assert.equal(added.eventId, null);
    assert.equal(added.type, null);
    assert.equal(added.key, null);
    const got = await store.get(added.id);
    assert.ok(got);
    assert.equal(got.envelope, null);
    assert.equal(got.raw, raw, 'undecodable raw bytes kept exactly');
    assert.equal(got.key, null);
    assert.deepStrictEqual(got.error, { code: 'HERALD_ERR_CORRUPT_RECORD', message: 'unreadable' }, 'an error without a stack stays without one');
  });

export const listsOldestFirstWithEveryFilter: Scenario = (_t, factory) =>
  run(factory, async ({ store, entry, group, topic, type }) => {
    const group2 = uniqueName('g');
    const topic2 = uniqueName('t');
    const type2 = `${type}.other`;
    const specs: Array<Partial<NewDeadLetter> & { type?: string }> = [
      { key: 'a', lastFailedAt: T0 + 10 },
      { key: 'b', lastFailedAt: T0 + 20, group: group2 },
      { key: 'a', lastFailedAt: T0 + 30, topic: topic2, type: type2 },
      { key: 'c', lastFailedAt: T0 + 40, error: { message: 'Schema INVALID at .amount' } },
      { key: null, lastFailedAt: T0 + 50, type: type2 },
      { key: 'b', lastFailedAt: T0 + 60, group: group2, topic: topic2, error: { message: 'connection reset' } },
      { key: 'a', lastFailedAt: T0 + 70 },
      { key: 'c', lastFailedAt: T0 + 80, type: type2, error: { message: 'Permanent: invalid amount' } },
      { key: 'a', lastFailedAt: T0 + 90, group: group2 },
    ];
    const added: DeadLetterEntry[] = [];
    for (const s of specs) added.push(await store.add(entry(s)));
    // One marked for redrive and one key parked, so `status` has all three values.
    await store.redrive({ ids: [added[3]!.id] });
    const head = await store.add(entry({ key: 'p', lastFailedAt: T0 + 100 }), { park: true });
    const parked = await store.parkMessage(entry({ key: 'p', lastFailedAt: T0 + 110 }));
    added.push(head, parked);
    const all = await listAll(store);
    assert.deepEqual(ids(all), ids(added), 'list() with no filter: every entry, oldest first');
    for (let i = 1; i < all.length; i++) {
      assert.ok(all[i]!.id !== all[i - 1]!.id, 'ids are unique');
    }
    const current = new Map(all.map((e) => [e.id, e]));
    const filters: Array<[string, DeadLetterFilter, (e: DeadLetterEntry) => boolean]> = [
      ['group', { group }, (e) => e.group === group],
      ['topic', { topic: topic2 }, (e) => e.topic === topic2],
      ['type', { type: type2 }, (e) => e.type === type2],
      ['key', { key: 'a' }, (e) => e.key === 'a'],
      ['status dead', { status: 'dead' }, (e) => e.status === 'dead'],
      ['status redrive', { status: 'redrive' }, (e) => e.status === 'redrive'],
      ['status parked', { status: 'parked' }, (e) => e.status === 'parked'],
      ['errorContains (case-insensitive)', { errorContains: 'invalid' }, (e) => /invalid/i.test(e.error.message)],
      ['errorContains no match', { errorContains: 'nothing like this' }, () => false],
      ['since (inclusive)', { since: T0 + 60 }, (e) => e.lastFailedAt >= T0 + 60],
      ['until (exclusive)', { until: T0 + 60 }, (e) => e.lastFailedAt < T0 + 60],
      ['since + until', { since: T0 + 20, until: T0 + 70 }, (e) => e.lastFailedAt >= T0 + 20 && e.lastFailedAt < T0 + 70],
      ['group + key + status', { group, key: 'a', status: 'dead' }, (e) => e.group === group && e.key === 'a' && e.status === 'dead'],
      ['group + topic + type + errorContains', { group, topic, type, errorContains: 'TIMEOUT' }, (e) => e.group === group && e.topic === topic && e.type === type && /timeout/i.test(e.error.message)],
    ];
    for (const [label, filter, pred] of filters) {
      const want = [...current.values()].filter(pred).map((e) => e.id);
      const got = await listAll(store, filter);
      assert.deepEqual(ids(got), want, `list(${label}) ${JSON.stringify(filter)}`);
      assert.equal(await store.count(filter), want.length, `count(${label}) ${JSON.stringify(filter)}`);
    }
    assert.ok(
      (await listAll(store, { status: 'redrive' })).length === 1 && (await listAll(store, { status: 'parked' })).length === 1,
      'fixture sanity: one redrive, one parked',
    );
  });

export const paginatesWithCursor: Scenario = (_t, factory) =>
  run(factory, async ({ store, entry, group }) => {
    const other = uniqueName('g');
    const added: DeadLetterEntry[] = [];
    for (let i = 0; i < 23; i++) added.push(await store.add(entry(i % 3 === 2 ? { group: other } : {})));
    // every entry, 5 per page
    const pages: DeadLetterEntry[][] = [];
    let cursor: string | undefined;
    do {
      const page = await store.list({}, cursor === undefined ? { limit: 5 } : { cursor, limit: 5 });
      pages.push([...page.entries]);
      cursor = page.nextCursor;
      assert.ok(pages.length <= 5, 'too many pages');
    } while (cursor !== undefined);
    assert.deepEqual(pages.map((p) => p.length), [5, 5, 5, 5, 3], 'full pages, then the rest; no cursor on the last page');
    assert.deepEqual(pages.flat().map((e) => e.id), ids(added), 'pages joined: every entry once, in order (no duplicates, no gaps)');

    // filtered, with an exactly full last page: no cursor after it
    const mine = added.filter((e) => e.group === group);
    assert.equal(mine.length, 16);
    const fp: DeadLetterEntry[][] = [];
    cursor = undefined;
    do {
      const page = await store.list({ group }, cursor === undefined ? { limit: 4 } : { cursor, limit: 4 });
      fp.push([...page.entries]);
      cursor = page.nextCursor;
      assert.ok(fp.length <= 4, 'too many pages for 16 entries at 4 a page (a cursor after an exactly full last page?)');
    } while (cursor !== undefined);
    assert.deepEqual(fp.flat().map((e) => e.id), ids(mine), 'filtered pages: every matching entry once, in order');

    // a cursor stays valid when its entry is discarded, and later additions show up on later pages
    const first = await store.list({ group }, { limit: 3 });
    assert.ok(first.nextCursor !== undefined);
    await store.discard({ ids: [first.entries[2]!.id] });
    const late = await store.add(entry({}));
    const rest = await listAll(store, { group }, 1000);
    const afterCursor = await (async () => {
      const out: DeadLetterEntry[] = [];
      let c: string | undefined = first.nextCursor;
      while (c !== undefined) {
        const p = await store.list({ group }, { cursor: c, limit: 3 });
        out.push(...p.entries);
        c = p.nextCursor;
      }
      return out;
    })();
    assert.deepEqual(ids(afterCursor), ids(rest).slice(2), 'continuing from a cursor whose entry was discarded: no gap, no repeat');
    assert.equal(afterCursor[afterCursor.length - 1]!.id, late.id, 'an entry added meanwhile appears on a later page');

    // default page size and bad page arguments
    for (let i = 0; i < 100; i++) await store.add(entry({}));
    const def = await store.list({ group });
    assert.equal(def.entries.length, 100, 'default page size is 100');
    assert.ok(def.nextCursor !== undefined);
    const max = await store.list({}, { limit: MAX_DEAD_LETTER_PAGE });
    assert.ok(max.entries.length <= MAX_DEAD_LETTER_PAGE);
    for (const limit of [0, -1, 1.5, MAX_DEAD_LETTER_PAGE + 1]) {
      await rejectsWith(() => store.list({}, { limit }), 'HERALD_ERR_INVALID_ARGUMENT', `list limit ${limit}`);
    }
    await rejectsWith(() => store.list({}, { cursor: 'not a cursor!' }), 'HERALD_ERR_INVALID_ARGUMENT', 'a malformed cursor');
  });

export const redriveByIdsAndPendingRedrives: Scenario = (_t, factory) =>
  run(factory, async ({ store, entry, group, topic }) => {
    const groupB = uniqueName('g');
    const topicU = uniqueName('t');
    const a0 = await store.add(entry({ partition: 0, key: 'k1' }));
    const a1 = await store.add(entry({ partition: 1, key: 'k2' }));
    const a2 = await store.add(entry({ partition: 2, key: 'k3' }));
    const b0 = await store.add(entry({ partition: 0, key: 'k1', group: groupB }));
    const u0 = await store.add(entry({ partition: 0, key: 'k1', topic: topicU }));
    const a0b = await store.add(entry({ partition: 0, key: 'k4' }));
    assert.equal(await store.redrive({ ids: [a2.id, a0.id, b0.id, u0.id, a0b.id, 'no-such-id'] }), 5, 'redrive returns the number marked (unknown ids ignored)');
    for (const e of [a0, a2, b0, u0, a0b]) assert.equal(await status(store, e.id), 'redrive', `${e.id} marked`);
    assert.equal(await status(store, a1.id), 'dead', 'an entry not chosen stays dead');
    assert.deepEqual(ids(await store.pendingRedrives(group, topic, [0, 1, 2], 100)), [a0.id, a2.id, a0b.id], 'pending for group/topic: its own entries only, in insertion order');
    assert.deepEqual(ids(await store.pendingRedrives(group, topic, [1], 100)), [], 'only the partitions asked for');
    assert.deepEqual(ids(await store.pendingRedrives(group, topic, [2], 100)), [a2.id]);
    assert.deepEqual(ids(await store.pendingRedrives(group, topic, [], 100)), [], 'no partitions, nothing');
    assert.deepEqual(ids(await store.pendingRedrives(groupB, topic, [0], 100)), [b0.id], 'another group sees only its own');
    assert.deepEqual(ids(await store.pendingRedrives(group, topicU, [0, 1, 2, 3], 100)), [u0.id], 'another topic sees only its own');
    assert.deepEqual(ids(await store.pendingRedrives(group, topic, [0, 2], 2)), [a0.id, a2.id], 'limit respected, oldest first');
    assert.equal(await store.count({ status: 'redrive' }), 5);
    const again = await store.redrive({ ids: [a0.id] });
    assert.ok(again === 0 || again === 1, 'redriving an already marked entry marks nothing new');
    assert.deepEqual(ids(await store.pendingRedrives(group, topic, [0], 100)), [a0.id, a0b.id], 'and does not duplicate it');
    assert.deepEqual(await store.completeRedrive(a0.id), { unparked: false }, 'completing a redrive of an unparked key unparks nothing');
    assert.equal(await store.get(a0.id), undefined, 'completeRedrive deletes the entry');
    assert.deepEqual(ids(await store.pendingRedrives(group, topic, [0], 100)), [a0b.id]);
  });

export const redriveByFilter: Scenario = (_t, factory) =>
  run(factory, async ({ store, entry, group, topic }) => {
    const other = uniqueName('g');
    const x1 = await store.add(entry({ key: 'x', partition: 1, error: { message: 'Downstream TIMEOUT' } }));
    const y1 = await store.add(entry({ key: 'y', partition: 1, error: { message: 'schema invalid' } }));
    const x2 = await store.add(entry({ key: 'x', partition: 1, error: { message: 'downstream timeout again' } }));
    const o1 = await store.add(entry({ key: 'x', partition: 1, group: other, error: { message: 'timeout' } }));
    assert.equal(await store.redrive({ filter: { group, errorContains: 'timeout' } }), 2);
    assert.deepEqual(ids(await store.pendingRedrives(group, topic, [1], 100)), [x1.id, x2.id]);
    assert.equal(await status(store, y1.id), 'dead');
    assert.equal(await status(store, o1.id), 'dead', 'a filter on one group never marks another group’s entries');
    assert.equal(await store.redrive({ filter: { group: other } }), 1);
    assert.deepEqual(ids(await store.pendingRedrives(other, topic, [1], 100)), [o1.id]);
  });

export const redriveOfUnparkedKeyMarksOnlyChosen: Scenario = (_t, factory) =>
  run(factory, async ({ store, entry, group, topic }) => {
    const d1 = await store.add(entry({ key: 'k', partition: 0 }));
    const d2 = await store.add(entry({ key: 'k', partition: 0 }));
    assert.deepEqual(await store.parkedKeys(group, topic), [], 'dead letters in continue mode park nothing');
    assert.equal(await store.redrive({ ids: [d1.id] }), 1);
    assert.equal(await status(store, d2.id), 'dead', 'the key’s other entry is not marked (the key is not parked)');
    assert.deepEqual(ids(await store.pendingRedrives(group, topic, [0], 10)), [d1.id]);
  });

export const parkKeyAndParkMessages: Scenario = (_t, factory) =>
  run(factory, async ({ store, entry, group, topic }) => {
    const groupB = uniqueName('g');
    const topicU = uniqueName('t');
    const other = await store.add(entry({ key: 'k2', partition: 3 }));
    const head = await store.add(entry({ key: 'k', partition: 3 }), { park: true });
    assert.equal(head.status, 'dead', 'the message that parks its key is itself dead');
    assert.equal(head.parkedBehind, null);
    assert.deepEqual(await store.parkedKeys(group, topic), ['k']);
    assert.deepEqual(await store.parkedKeys(group, topic, 3), ['k'], 'parkedKeys for the key’s partition');
    assert.deepEqual(await store.parkedKeys(group, topic, 2), [], 'not for another partition');
    assert.deepEqual(await store.parkedKeys(groupB, topic), [], 'not in another group');
    assert.deepEqual(await store.parkedKeys(group, topicU), [], 'not on another topic');
    const p1 = await store.parkMessage(entry({ key: 'k', partition: 3, handler: 'onThingFailed', attempts: 0 }));
    const p2 = await store.parkMessage(entry({ key: 'k', partition: 3, attempts: 0 }));
    for (const p of [p1, p2]) {
      assert.equal(p.status, 'parked', 'a later message of a parked key is stored parked');
      assert.equal(p.parkedBehind, head.id, 'parkedBehind names the dead letter that parked the key');
      assert.deepEqual(await store.get(p.id), p);
    }
    assert.deepEqual(ids(await listAll(store, { key: 'k' })), [head.id, p1.id, p2.id], 'the key’s entries in order');
    assert.equal(await status(store, other.id), 'dead');
    await rejectsWith(() => store.parkMessage(entry({ key: 'k2', partition: 3 })), 'HERALD_ERR_NOT_FOUND', 'parkMessage for a key that is not parked');
    await rejectsWith(() => store.parkMessage(entry({ key: 'k', partition: 3, group: groupB })), 'HERALD_ERR_NOT_FOUND', 'parkMessage in a group where the key is not parked');
    await rejectsWith(() => store.parkMessage(entry({ key: null, partition: 3 })), 'HERALD_ERR_INVALID_ARGUMENT', 'parkMessage without a key');
  });

export const parkedBehindIgnoresOlderDeadLetters: Scenario = (_t, factory) =>
  run(factory, async ({ store, entry, group, topic }) => {
    // The key failed once in continue mode, then again in park mode: the parked messages are
    // behind the second dead letter, the one that parked the key.
    const earlier = await store.add(entry({ key: 'k', partition: 3 }));
    const head = await store.add(entry({ key: 'k', partition: 3 }), { park: true });
    const p1 = await store.parkMessage(entry({ key: 'k', partition: 3 }));
    assert.equal(p1.status, 'parked');
    assert.equal(p1.parkedBehind, head.id, `parkedBehind must name the dead letter that parked the key (${head.id}), not the older dead letter ${earlier.id} of the same key`);
    assert.deepEqual(await store.parkedKeys(group, topic), ['k']);
    // Redriving the parked key drains every entry of the key in order, the older one first.
    assert.equal(await store.redrive({ ids: [p1.id] }), 3);
    assert.deepEqual(ids(await store.pendingRedrives(group, topic, [3], 10)), [earlier.id, head.id, p1.id]);
  });

export const redriveDrainsParkedKeyInOrderAndUnparksWithLast: Scenario = (_t, factory) =>
  run(factory, async ({ store, entry, group, topic }) => {
    const head = await store.add(entry({ key: 'k', partition: 1 }), { park: true });
    const head2 = await store.add(entry({ key: 'k2', partition: 1 }), { park: true });
    const p1 = await store.parkMessage(entry({ key: 'k', partition: 1 }));
    const q1 = await store.parkMessage(entry({ key: 'k2', partition: 1 }));
    const p2 = await store.parkMessage(entry({ key: 'k', partition: 1 }));
    assert.equal(await store.redrive({ ids: [p1.id] }), 3, 'redriving one entry of a parked key marks all of its entries');
    for (const e of [head, p1, p2]) assert.equal(await status(store, e.id), 'redrive');
    assert.equal(await status(store, head2.id), 'dead', 'another parked key is untouched');
    assert.equal(await status(store, q1.id), 'parked');
    assert.deepEqual(ids(await store.pendingRedrives(group, topic, [1], 100)), [head.id, p1.id, p2.id], 'the key drains in order');
    assert.deepEqual((await store.parkedKeys(group, topic)).slice().sort(), ['k', 'k2'], 'still parked while draining');
    assert.deepEqual(await store.completeRedrive(head.id), { unparked: false });
    assert.equal(await store.get(head.id), undefined);
    assert.deepEqual(await store.completeRedrive(p1.id), { unparked: false }, 'not unparked while entries remain');
    assert.deepEqual((await store.parkedKeys(group, topic)).slice().sort(), ['k', 'k2']);
    assert.deepEqual(await store.completeRedrive(p2.id), { unparked: true }, 'unparked with the removal of its last entry');
    assert.deepEqual(await store.parkedKeys(group, topic), ['k2']);
    assert.equal(await store.count({ key: 'k' }), 0);
    // the key can be parked again, behind a new head
    const head3 = await store.add(entry({ key: 'k', partition: 1 }), { park: true });
    const p3 = await store.parkMessage(entry({ key: 'k', partition: 1 }));
    assert.equal(p3.status, 'parked', 'parked again, not draining');
    assert.equal(p3.parkedBehind, head3.id);
  });

export const parkMessageWhileDrainingIsRedriven: Scenario = (_t, factory) =>
  run(factory, async ({ store, entry, group, topic }) => {
    const head = await store.add(entry({ key: 'k', partition: 2 }), { park: true });
    const p1 = await store.parkMessage(entry({ key: 'k', partition: 2 }));
    assert.equal(await store.redrive({ ids: [head.id] }), 2);
    const p2 = await store.parkMessage(entry({ key: 'k', partition: 2 }));
    assert.equal(p2.status, 'redrive', 'a message parked while its key drains joins the drain');
    assert.deepEqual(ids(await store.pendingRedrives(group, topic, [2], 100)), [head.id, p1.id, p2.id]);
    assert.deepEqual(await store.completeRedrive(head.id), { unparked: false });
    assert.deepEqual(await store.completeRedrive(p1.id), { unparked: false }, 'the late entry keeps the key parked');
    assert.deepEqual(await store.completeRedrive(p2.id), { unparked: true });
    assert.deepEqual(await store.parkedKeys(group, topic), []);
  });

export const failRedriveReturnsKeyToParked: Scenario = (_t, factory) =>
  run(factory, async ({ store, entry, group, topic }) => {
    const head = await store.add(entry({ key: 'k', partition: 0 }), { park: true });
    const p1 = await store.parkMessage(entry({ key: 'k', partition: 0 }));
    const p2 = await store.parkMessage(entry({ key: 'k', partition: 0 }));
    const lone = await store.add(entry({ key: 'solo', partition: 0 }));
    assert.equal(await store.redrive({ ids: [head.id, lone.id] }), 4);
    await store.completeRedrive(head.id);
    const at = T0 + 99_000;
    await store.failRedrive(p1.id, { code: 'E_AGAIN', message: 'failed again on redrive' }, 7, at);
    const f = await store.get(p1.id);
    assert.ok(f);
    assert.equal(f.status, 'dead', 'the failed entry is dead again');
    assert.deepEqual(f.error, { code: 'E_AGAIN', message: 'failed again on redrive' }, 'with the new error');
    assert.equal(f.attempts, 7);
    assert.equal(f.lastFailedAt, at);
    assert.equal(await status(store, p2.id), 'parked', 'the key’s remaining entries stop draining: back to parked');
    assert.deepEqual(await store.parkedKeys(group, topic), ['k'], 'the key stays parked');
    assert.deepEqual(ids(await store.pendingRedrives(group, topic, [0], 100)), [lone.id], 'only the unrelated entry is still pending');
    await store.failRedrive(lone.id, { message: 'nope' }, 2, at);
    assert.equal(await status(store, lone.id), 'dead');
    await rejectsWith(() => store.failRedrive(`${p2.id}999`, { message: 'x' }, 1, at), 'HERALD_ERR_NOT_FOUND', 'failRedrive of an unknown id');
    // a second redrive picks the key up again from its first remaining entry
    assert.equal(await store.redrive({ ids: [p2.id] }), 2);
    assert.deepEqual(ids(await store.pendingRedrives(group, topic, [0], 100)), [p1.id, p2.id]);
    assert.deepEqual(await store.completeRedrive(p1.id), { unparked: false });
    assert.deepEqual(await store.completeRedrive(p2.id), { unparked: true });
  });

export const discardUnparksEmptiedKey: Scenario = (_t, factory) =>
  run(factory, async ({ store, entry, group, topic }) => {
    const head = await store.add(entry({ key: 'k', partition: 0 }), { park: true });
    const p1 = await store.parkMessage(entry({ key: 'k', partition: 0 }));
    const other = await store.add(entry({ key: 'z', partition: 0 }));
    assert.equal(await store.discard({ ids: [p1.id, 'no-such-id'] }), 1, 'discard returns the number deleted');
    assert.equal(await store.get(p1.id), undefined);
    assert.deepEqual(await store.parkedKeys(group, topic), ['k'], 'still parked while an entry remains');
    assert.equal(await store.discard({ filter: { group, key: 'k' } }), 1);
    assert.deepEqual(await store.parkedKeys(group, topic), [], 'a parked key with no entries left is unparked');
    assert.equal(await store.get(head.id), undefined);
    assert.ok(await store.get(other.id), 'other entries untouched');
    assert.equal(await store.discard({ filter: { group: uniqueName('g') } }), 0);
  });

export const closedStoreRefusesEveryCall: Scenario = (_t, factory) =>
  run(factory, async ({ store, entry, group, topic }) => {
    const e = await store.add(entry({ key: 'k' }), { park: true });
    await store.close();
    await store.close(); // idempotent
    const calls: Array<[string, () => Promise<unknown>]> = [
      ['add', () => store.add(entry({}))],
      ['parkMessage', () => store.parkMessage(entry({ key: 'k' }))],
      ['parkedKeys', () => store.parkedKeys(group, topic)],
      ['get', () => store.get(e.id)],
      ['list', () => store.list()],
      ['count', () => store.count()],
      ['redrive', () => store.redrive({ ids: [e.id] })],
      ['pendingRedrives', () => store.pendingRedrives(group, topic, [0, 1, 2, 3], 10)],
      ['completeRedrive', () => store.completeRedrive(e.id)],
      ['failRedrive', () => store.failRedrive(e.id, { message: 'x' }, 1, T0)],
      ['discard', () => store.discard({ ids: [e.id] })],
    ];
    for (const [name, call] of calls) await rejectsWith(call, 'HERALD_ERR_CLOSED', `${name}() after close()`);
  });

/** Every scenario, by name, in the order the suite runs them. */
export const deadLetterScenarios: Readonly<Record<string, Scenario>> = Object.freeze({
  'add keeps the entry whole; get returns it': addKeepsEntryWhole,
  'an undecodable message is kept with its raw bytes': addUndecodableMessage,
  'list is oldest first and honours every filter; count agrees': listsOldestFirstWithEveryFilter,
  'cursor pagination: no duplicates, no gaps, stable cursors': paginatesWithCursor,
  'redrive by ids; pendingRedrives only for the right group, topic and partitions': redriveByIdsAndPendingRedrives,
  'redrive by filter': redriveByFilter,
  'redrive of an unparked key marks only the chosen entries': redriveOfUnparkedKeyMarksOnlyChosen,
  'add(park) parks the key; parkMessage stores later messages parked behind it': parkKeyAndParkMessages,
  'parkedBehind names the dead letter that parked the key, not an older one': parkedBehindIgnoresOlderDeadLetters,
  'redrive drains a parked key in order and unparks it with its last entry': redriveDrainsParkedKeyInOrderAndUnparksWithLast,
  'parkMessage while the key drains joins the drain': parkMessageWhileDrainingIsRedriven,
  'failRedrive returns the key’s remaining entries to parked': failRedriveReturnsKeyToParked,
  'discard unparks a key left with no entries': discardUnparksEmptiedKey,
  'a closed store refuses every call with HERALD_ERR_CLOSED': closedStoreRefusesEveryCall,
});

/** Registers the dead-letter-store contract as a node:test suite (repeated `CONTRACT_STRESS` times). */
export function describeDeadLetterContract(name: string, factory: DeadLetterStoreFactory): void {
  const runs = stressCount();
  describe(`DeadLetterStore contract: ${name}`, () => {
    for (let r = 1; r <= runs; r++) {
      const register = (): void => {
        for (const [title, scenario] of Object.entries(deadLetterScenarios)) it(title, { timeout: 30_000 }, (t) => scenario(t, factory));
      };
      if (runs === 1) register();
      else describe(`run ${r} of ${runs}`, register);
    }
  });
}
