/**
 * The SagaStore contract: what every saga store (memory, SQLite, PostgreSQL) must do for the
 * saga runtime to be correct — an instance's save, the inbox record, the outbox rows and the
 * timers commit together through the backend's `UnitOfWork`, with optimistic concurrency.
 *
 *   describeSagaStoreContract('sqlite', async () => {
 *     const path = tmpFile();
 *     const unitOfWork = createSqliteUnitOfWork({ path });
 *     const store = createSqliteSagaStore({ path });
 *     return { store, unitOfWork, cleanup: async () => { store.close(); await unitOfWork.close(); } };
 *   });
 *
 * The factory must return an EMPTY store; each scenario checks that first. `cleanup` is called
 * once per scenario, passed or failed.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isHeraldError, type UnitOfWork } from '@herald/core';
import { MAX_SAGA_PAGE, SAGA_STATUSES, type SagaInstance, type SagaStatus, type SagaStore, type SagaTimelineEntry } from '@herald/eventsourcing';
import { uniqueName, withScope } from './helpers.ts';

export interface SagaStoreHarness<Native = unknown> {
  readonly store: SagaStore<Native>;
  /** The unit of work whose transactions the store writes through. */
  readonly unitOfWork: UnitOfWork<Native>;
  cleanup(): Promise<void>;
}

export type SagaStoreFactory<Native = unknown> = () => Promise<SagaStoreHarness<Native>>;

interface Ctx<Native> {
  readonly store: SagaStore<Native>;
  readonly uow: UnitOfWork<Native>;
  /** A saga name unique to the scenario. */
  readonly saga: string;
  instance(key: string, over?: Partial<SagaInstance>): SagaInstance;
}

const T0 = Date.UTC(2024, 0, 1, 12);

async function run<Native>(factory: SagaStoreFactory<Native>, body: (c: Ctx<Native>) => Promise<void>): Promise<void> {
  await withScope(async (scope) => {
    const h = await factory();
    scope.defer('saga store cleanup', () => h.cleanup());
    const existing = await h.store.list({ limit: 1 });
    assert.equal(existing.items.length, 0, 'the factory must return an empty saga store');
    const saga = uniqueName('saga');
    let n = 0;
    await body({
      store: h.store,
      uow: h.unitOfWork,
      saga,
      instance: (key, over = {}) => {
        const i = n++;
        return {
          saga,
          key,
          id: `${saga}-instance-${i}`,
          sagaVersion: 1,
          status: 'running',
          state: { orderId: key, total: 42.5, lines: [{ sku: 'ä-1', qty: 2 }], note: null, flags: { gift: true } },
          step: 'payment',
          attempt: 1,
          completed: [],
          toCompensate: [],
          timer: `${saga}-instance-${i}/payment/action/1`,
          failure: undefined,
          error: undefined,
          revision: 1,
          startedAt: T0 + i,
          updatedAt: T0 + i,
          ...over,
        };
      },
    });
  });
}

/** What a store gives back: JSON semantics (undefined fields dropped). */
function stored(i: SagaInstance): unknown {
  return JSON.parse(JSON.stringify(i));
}

function plain(i: SagaInstance | undefined): unknown {
  return i === undefined ? undefined : JSON.parse(JSON.stringify(i));
}

function isConcurrency(e: unknown, expected: number, actual: number): boolean {
  return isHeraldError(e, 'HERALD_ERR_CONCURRENCY') && e.retryable && e.details.expectedRevision === expected && e.details.actualRevision === actual;
}

async function listAll<Native>(store: SagaStore<Native>, o: { saga?: string; status?: SagaStatus; limit: number }): Promise<{ keys: string[]; pages: number }> {
  const keys: string[] = [];
  let cursor: string | undefined;
  let pages = 0;
  do {
    const page = await store.list({ ...o, ...(cursor !== undefined ? { cursor } : {}) });
    assert.ok(page.items.length <= o.limit, `a page holds at most limit (${o.limit}) items, got ${page.items.length}`);
    keys.push(...page.items.map((i) => i.key));
    cursor = page.next;
    pages++;
    assert.ok(pages < 1000, 'pagination does not end');
  } while (cursor !== undefined);
  return { keys, pages };
}

export interface SagaStoreScenario {
  readonly name: string;
  run<Native>(factory: SagaStoreFactory<Native>): Promise<void>;
}

export const sagaStoreScenarios: readonly SagaStoreScenario[] = [
  {
    name: 'saves an instance and reads it back unchanged; the transaction sees it before commit, others after',
    run: (f) =>
      run(f, async ({ store, uow, saga, instance }) => {
        const i = instance('o-1');
        await uow.withTransaction(async (tx) => {
          assert.equal(await store.load(tx, saga, 'o-1'), undefined);
          await store.save(tx, i, 0);
          assert.deepEqual(plain(await store.load(tx, saga, 'o-1')), stored(i), 'load in the transaction sees its own save');
          assert.equal(await store.get(saga, 'o-1'), undefined, 'get (outside the transaction) sees committed instances only');
        });
        assert.deepEqual(plain(await store.get(saga, 'o-1')), stored(i));
        assert.equal(await store.get(saga, 'o-2'), undefined);
        assert.equal(await store.get(`${saga}-other`, 'o-1'), undefined, 'instances are per saga');
        const next = { ...i, status: 'compensating' as const, step: 'inventory', attempt: 2, completed: ['payment'], toCompensate: ['payment'], failure: { step: 'inventory', reason: 'out of stock', at: T0 + 5 }, revision: 2, updatedAt: T0 + 9 };
        await uow.withTransaction((tx) => store.save(tx, next, 1));
        assert.deepEqual(plain(await store.get(saga, 'o-1')), stored(next));
      }),
  },
  {
    name: 'a stale expected revision is a retryable HERALD_ERR_CONCURRENCY naming both revisions, and writes nothing',
    run: (f) =>
      run(f, async ({ store, uow, saga, instance }) => {
        const i = instance('o-1');
        await uow.withTransaction((tx) => store.save(tx, i, 0));
        await assert.rejects(
          uow.withTransaction((tx) => store.save(tx, instance('o-1', { id: 'another' }), 0)),
          (e) => isConcurrency(e, 0, 1),
          'a second new instance of the same key',
        );
        const r2 = { ...i, attempt: 2, revision: 2 };
        await uow.withTransaction((tx) => store.save(tx, r2, 1));
        await assert.rejects(
          uow.withTransaction((tx) => store.save(tx, { ...i, attempt: 3, revision: 2 }, 1)),
          (e) => isConcurrency(e, 1, 2),
        );
        await assert.rejects(
          uow.withTransaction((tx) => store.save(tx, { ...i, revision: 4 }, 3)),
          (e) => isConcurrency(e, 3, 2),
        );
        assert.deepEqual(plain(await store.get(saga, 'o-1')), stored(r2), 'the failed saves left the instance as it was');
      }),
  },
  {
    name: 'of two transactions that read the same revision, one saves and the other gets the concurrency error',
    run: (f) =>
      run(f, async ({ store, uow, saga, instance }) => {
        const i = instance('o-1');
        await uow.withTransaction((tx) => store.save(tx, i, 0));
        const results = await Promise.allSettled(
          [1, 2].map((n) => uow.withTransaction(async (tx) => {
            const current = (await store.load(tx, saga, 'o-1'))!;
            // Both decided on revision 1 (read before either saved).
            await store.save(tx, { ...current, revision: 2, attempt: 1 + n, state: { by: n } }, 1);
          })),
        );
        const ok = results.filter((r) => r.status === 'fulfilled');
        const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
        assert.equal(ok.length, 1, `exactly one save wins (${results.map((r) => r.status).join(', ')})`);
        assert.ok(isConcurrency(failed[0]!.reason, 1, 2), `the other fails with the concurrency error: ${String(failed[0]?.reason)}`);
        assert.equal((await store.get(saga, 'o-1'))?.revision, 2);
      }),
  },
  {
    name: 'a rolled back transaction leaves neither the instance nor its timeline',
    run: (f) =>
      run(f, async ({ store, uow, saga, instance }) => {
        const i = instance('o-1');
        await assert.rejects(
          uow.withTransaction(async (tx) => {
            await store.save(tx, i, 0);
            await store.appendTimeline(tx, saga, 'o-1', i.id, [{ at: T0, kind: 'started' }]);
            throw new Error('business rule failed after the save');
          }),
          /business rule failed/,
        );
        assert.equal(await store.get(saga, 'o-1'), undefined);
        assert.deepEqual((await store.timeline(saga, 'o-1')).items, []);
        assert.deepEqual((await store.list()).items, []);
        assert.deepEqual(await store.countByStatus(), []);
        // The key is still free: the first save after the rollback is revision 1.
        await uow.withTransaction((tx) => store.save(tx, i, 0));
        assert.equal((await store.get(saga, 'o-1'))?.revision, 1);
        // And a rollback of an update keeps the committed revision.
        await assert.rejects(
          uow.withTransaction(async (tx) => {
            await store.save(tx, { ...i, status: 'stuck', revision: 2 }, 1);
            throw new Error('no');
          }),
        );
        assert.deepEqual(plain(await store.get(saga, 'o-1')), stored(i));
      }),
  },
  {
    name: 'lists by saga and status, oldest started first, through cursor pages that never repeat or skip',
    run: (f) =>
      run(f, async ({ store, uow, saga, instance }) => {
        const other = `${saga}-b`;
        const statuses: SagaStatus[] = ['running', 'stuck', 'completed', 'compensated', 'compensating', 'stuck', 'running'];
        const made: SagaInstance[] = [];
        for (let n = 0; n < 23; n++) {
          const i = instance(`k-${String(n).padStart(2, '0')}`, { status: statuses[n % statuses.length]!, ...(n % 4 === 3 ? { saga: other } : {}) });
          made.push(i);
          await uow.withTransaction((tx) => store.save(tx, i, 0));
        }
        const keysOf = (p: (i: SagaInstance) => boolean): string[] => made.filter(p).map((i) => i.key);
        for (const limit of [1, 4, 100]) {
          assert.deepEqual((await listAll(store, { limit })).keys, made.map((i) => i.key), `everything, limit ${limit}`);
          assert.deepEqual((await listAll(store, { saga, status: 'stuck', limit })).keys, keysOf((i) => i.saga === saga && i.status === 'stuck'), `stuck of one saga, limit ${limit}`);
          assert.deepEqual((await listAll(store, { status: 'stuck', limit })).keys, keysOf((i) => i.status === 'stuck'), `stuck of both sagas, limit ${limit}`);
          assert.deepEqual((await listAll(store, { saga: other, limit })).keys, keysOf((i) => i.saga === other), `one saga, limit ${limit}`);
        }
        const exact = await store.list({ status: 'completed', limit: keysOf((i) => i.status === 'completed').length });
        assert.equal(exact.next, undefined, 'a page that holds the last item has no next cursor');
        // An instance that changes status while a listing is under way moves, the others stay put.
        const firstPage = await store.list({ saga, limit: 3 });
        const moved = made.find((i) => i.saga === saga && i.status === 'running' && !firstPage.items.some((x) => x.key === i.key))!;
        await uow.withTransaction((tx) => store.save(tx, { ...moved, status: 'stuck', revision: 2, error: { step: 'payment', message: 'refund refused', attempts: 3, at: T0 + 99 } }, 1));
        const rest = await listAll(store, { saga, limit: 3 });
        assert.deepEqual(rest.keys, keysOf((i) => i.saga === saga), 'an update does not move an instance in the listing');
        const stuck = (await listAll(store, { saga, status: 'stuck', limit: 2 })).keys;
        assert.ok(stuck.includes(moved.key), 'the newly stuck instance is listed as stuck');
        const one = (await store.list({ saga, status: 'stuck', limit: MAX_SAGA_PAGE })).items.find((i) => i.key === moved.key);
        assert.deepEqual(one?.error, { step: 'payment', message: 'refund refused', attempts: 3, at: T0 + 99 }, 'a stuck instance carries its error');
      }),
  },
  {
    name: 'counts instances by saga and status',
    run: (f) =>
      run(f, async ({ store, uow, saga, instance }) => {
        const plan: Array<[string, SagaStatus]> = [
          ['a', 'running'], ['b', 'running'], ['c', 'stuck'], ['d', 'completed'], ['e', 'stuck'], ['f', 'stuck'],
        ];
        for (const [key, status] of plan) await uow.withTransaction((tx) => store.save(tx, instance(key, { status }), 0));
        await uow.withTransaction((tx) => store.save(tx, instance('z', { saga: `${saga}-b`, status: 'compensated' }), 0));
        const counts = await store.countByStatus();
        const byKey = Object.fromEntries(counts.map((c) => [`${c.saga}/${c.status}`, c.count]));
        assert.deepEqual(byKey, { [`${saga}/running`]: 2, [`${saga}/stuck`]: 3, [`${saga}/completed`]: 1, [`${saga}-b/compensated`]: 1 });
        assert.ok(counts.every((c) => SAGA_STATUSES.includes(c.status)));
      }),
  },
  {
    name: "keeps an instance's timeline in the order written, across transactions, cursor-paginated",
    run: (f) =>
      run(f, async ({ store, uow, saga, instance }) => {
        const a = instance('o-1');
        const b = instance('o-2');
        const entries = (k: string, n: number): SagaTimelineEntry[] =>
          Array.from({ length: n }, (_, j) => ({ at: T0 + j, kind: 'sent', step: 'payment', type: 'payment.charge', messageId: `${k}-${j}`, detail: `${k} #${j}` }));
        await uow.withTransaction(async (tx) => {
          await store.save(tx, a, 0);
          await store.appendTimeline(tx, saga, 'o-1', a.id, [{ at: T0, kind: 'started', type: 'order.placed', messageId: 'm-0' }]);
          await store.save(tx, b, 0);
          await store.appendTimeline(tx, saga, 'o-2', b.id, entries('b', 2));
        });
        await uow.withTransaction((tx) => store.appendTimeline(tx, saga, 'o-1', a.id, entries('a', 5)));
        await uow.withTransaction((tx) => store.appendTimeline(tx, saga, 'o-1', a.id, [{ at: T0 + 100, kind: 'stuck', step: 'payment', attempt: 3, error: 'refund refused' }]));
        const want = [{ at: T0, kind: 'started', type: 'order.placed', messageId: 'm-0' }, ...entries('a', 5), { at: T0 + 100, kind: 'stuck', step: 'payment', attempt: 3, error: 'refund refused' }];
        for (const limit of [1, 3, 100]) {
          const got: Array<Record<string, unknown>> = [];
          let cursor: string | undefined;
          let seq = 0;
          do {
            const page = await store.timeline(saga, 'o-1', { limit, ...(cursor !== undefined ? { cursor } : {}) });
            for (const e of page.items) {
              assert.ok(e.seq > seq, 'seq grows through the timeline');
              seq = e.seq;
              assert.equal(e.instanceId, a.id);
              const { seq: _s, instanceId: _i, ...rest } = e;
              got.push(rest);
            }
            cursor = page.next;
          } while (cursor !== undefined);
          assert.deepEqual(got, want, `timeline with limit ${limit}`);
        }
        assert.equal((await store.timeline(saga, 'o-2')).items.length, 2, 'timelines are per instance');
        assert.deepEqual((await store.timeline(saga, 'nobody')).items, []);
      }),
  },
  {
    name: 'refuses bad arguments with HERALD_ERR_INVALID_ARGUMENT and stores nothing',
    run: (f) =>
      run(f, async ({ store, uow, saga, instance }) => {
        const bad = (e: unknown): boolean => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT');
        await assert.rejects(store.list({ limit: 0 }), bad);
        await assert.rejects(store.list({ limit: MAX_SAGA_PAGE + 1 }), bad);
        await assert.rejects(store.list({ status: 'lost' as SagaStatus }), bad);
        await assert.rejects(store.list({ cursor: 'not-a-cursor' }), bad);
        await assert.rejects(store.timeline(saga, 'o-1', { cursor: '-1' }), bad);
        await assert.rejects(uow.withTransaction((tx) => store.save(tx, instance('o-1', { revision: 3 }), 0)), bad, 'revision must be expected + 1');
        await assert.rejects(uow.withTransaction((tx) => store.save(tx, instance('o-1', { status: 'lost' as SagaStatus }), 0)), bad);
        assert.deepEqual((await store.list()).items, []);
      }),
  },
];

/** Registers every scenario as a node:test case under `saga store contract: <name>`. */
export function describeSagaStoreContract<Native>(name: string, factory: SagaStoreFactory<Native>): void {
  describe(`saga store contract: ${name}`, () => {
    for (const s of sagaStoreScenarios) it(s.name, () => s.run(factory));
  });
}
