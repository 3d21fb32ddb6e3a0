/**
 * The projection contract: what inline and async projections, rebuild and read-your-writes
 * must do on every backend. The harness implements ONE read model the contract defines — per
 * stream: the count of `contract.added` events, the sum of `data.amount × multiplier`, the
 * version of the last one — in the backend's own way (a table on SQLite, a Map in memory):
 *
 *   describeProjectionContract('sqlite', async () => {
 *     const store = createSqliteEventStore({ path });
 *     return {
 *       store,
 *       project: async ({ name, mode, category, multiplier, retry }) => { … return projection with read() },
 *       cleanup: async () => store.close(),
 *     };
 *   });
 *
 * The handler must throw on an event whose data has `fail: true`. The factory returns an
 * EMPTY store; `cleanup` closes everything (projections the scenario left open too).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { isHeraldError, type HeraldErrorCode } from '@herald/core';
import { type EventStore, type Projection, type ProjectionMode, type ProjectionRetryOptions, waitForPosition } from '@herald/eventsourcing';
import { withScope } from './helpers.ts';

export interface ContractRow {
  readonly count: number;
  readonly total: number;
  readonly lastVersion: number;
}

export interface ContractProjectionOptions {
  readonly name: string;
  readonly mode: ProjectionMode;
  /** Only this category's events. */
  readonly category?: string;
  /** Multiplies amounts: a "new version" of the projection's code (default 1). */
  readonly multiplier?: number;
  /** Async retries (the contract passes short delays). */
  readonly retry?: ProjectionRetryOptions;
}

export interface ContractProjection extends Projection {
  /** The read model's row for a stream (undefined when it has none). */
  read(streamId: string): Promise<ContractRow | undefined>;
  /** Rows in the read model. */
  rows(): Promise<number>;
}

export interface ProjectionContractHarness {
  readonly store: EventStore;
  project(options: ContractProjectionOptions): Promise<ContractProjection>;
  cleanup(): Promise<void>;
}

export type ProjectionContractFactory = () => Promise<ProjectionContractHarness>;
export type ProjectionScenario = (factory: ProjectionContractFactory) => Promise<void>;

const WAIT = { timeoutMs: 5000 } as const;
const RETRY = { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 5 } as const;

interface Ctx {
  readonly h: ProjectionContractHarness;
  readonly store: EventStore;
  project(o: Omit<ContractProjectionOptions, 'name'> & { name?: string }): Promise<ContractProjection>;
  name(): string;
  stream(cat?: string): string;
}

async function run(factory: ProjectionContractFactory, body: (c: Ctx) => Promise<void>): Promise<void> {
  await withScope(async (scope) => {
    const h = await factory();
    scope.defer('projection harness cleanup', () => h.cleanup());
    assert.equal(await h.store.headPosition(), 0n, 'the factory must return an empty event store');
    const tag = randomUUID().slice(0, 8);
    let n = 0;
    await body({
      h,
      store: h.store,
      name: () => `p${tag}${n++}`,
      stream: (cat) => `${cat ?? 'acct'}-${randomUUID()}`,
      project: async (o) => {
        const p = await h.project({ retry: RETRY, ...o, name: o.name ?? `p${tag}${n++}` });
        scope.defer(`projection ${p.name}`, () => p.close());
        return p;
      },
    });
  });
}

function added(amount: number, extra: Record<string, unknown> = {}): { type: string; data: unknown } {
  return { type: 'contract.added', data: { amount, ...extra } };
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

/** Expected rows from the streams' amounts. */
function expectedRow(amounts: readonly number[], multiplier = 1): ContractRow {
  return { count: amounts.length, total: amounts.reduce((a, b) => a + b, 0) * multiplier, lastVersion: amounts.length };
}

export const inlineNeverLags: ProjectionScenario = (factory) =>
  run(factory, async ({ store, project, stream }) => {
    const a = stream();
    await store.appendToStream(a, [added(1), added(2)]);
    const p = await project({ mode: 'inline' });
    assert.deepEqual(await p.read(a), expectedRow([1, 2]), 'an inline projection catches up with what is stored when it starts');
    const r = await store.appendToStream(a, [added(3), { type: 'contract.other', data: {} }]);
    assert.deepEqual(await p.read(a), { count: 3, total: 6, lastVersion: 3 }, 'once the append resolved, the read model has it — no wait');
    assert.ok((await p.position()) >= r.position, 'its position includes the append');
    await waitForPosition(p, r, { timeoutMs: 0 });
    // A handler failure fails that append only; the others in the same batch commit.
    const b = stream();
    const c = stream();
    const [bad, good] = await Promise.allSettled([store.appendToStream(b, [added(1), added(1, { fail: true })]), store.appendToStream(c, [added(5)])]);
    assert.equal(bad.status, 'rejected', 'an inline projection that throws fails the append');
    assert.equal(good.status, 'fulfilled', 'the other append of the batch commits');
    assert.equal((await store.readStream(b)).events.length, 0, 'nothing of the failed append is stored');
    assert.equal(await p.read(b), undefined, 'nor projected');
    assert.deepEqual(await p.read(c), expectedRow([5]));
    assert.equal(p.status(), 'live');
  });

export const asyncReadYourWrites: ProjectionScenario = (factory) =>
  run(factory, async ({ store, project, stream }) => {
    const p = await project({ mode: 'async' });
    const streams = [stream(), stream(), stream()];
    const amounts = new Map(streams.map((s) => [s, [] as number[]]));
    let last = 0n;
    for (let i = 0; i < 60; i++) {
      const s = streams[i % 3]!;
      const r = await store.appendToStream(s, [added(i)]);
      amounts.get(s)!.push(i);
      last = r.position;
      if (i % 20 === 19) {
        await waitForPosition(p, r, WAIT);
        assert.deepEqual(await p.read(s), expectedRow(amounts.get(s)!), 'after waitForPosition the caller reads its own write');
      }
    }
    await p.waitForPosition(last, WAIT);
    for (const s of streams) assert.deepEqual(await p.read(s), expectedRow(amounts.get(s)!));
    assert.ok((await p.position()) >= last);
    await rejectsWith(() => p.waitForPosition(last + 1000n, { timeoutMs: 50 }), 'HERALD_ERR_WAIT_TIMEOUT', 'waiting for a position nobody writes');
    await rejectsWith(() => waitForPosition(p, -1n as bigint), 'HERALD_ERR_INVALID_ARGUMENT', 'a negative position');
  });

export const asyncIdempotentByPosition: ProjectionScenario = (factory) =>
  run(factory, async ({ store, project, stream, name }) => {
    const n = name();
    const s = stream();
    const first = await project({ mode: 'async', name: n });
    const r1 = await store.appendToStream(s, [added(1), added(2), added(3)]);
    await first.waitForPosition(r1.position, WAIT);
    await first.close();
    const r2 = await store.appendToStream(s, [added(4)]);
    // Restarted (a new process): continues from its checkpoint, nothing applied twice.
    const again = await project({ mode: 'async', name: n });
    await again.waitForPosition(r2.position, WAIT);
    assert.deepEqual(await again.read(s), expectedRow([1, 2, 3, 4]));
    // Two runners of the same projection at once: still one effect per event.
    const twin = await project({ mode: 'async', name: n });
    const writes = [];
    for (let i = 0; i < 40; i++) writes.push(store.appendToStream(s, [added(1)]));
    const results = await Promise.all(writes);
    const lastPos = results.reduce((m, r) => (r.position > m ? r.position : m), 0n);
    await Promise.all([again.waitForPosition(lastPos, WAIT), twin.waitForPosition(lastPos, WAIT)]);
    assert.deepEqual(await twin.read(s), { count: 44, total: 10 + 40, lastVersion: 44 });
  });

export const asyncFailureStopsTyped: ProjectionScenario = (factory) =>
  run(factory, async ({ store, project, stream }) => {
    const p = await project({ mode: 'async' });
    const s = stream();
    const ok = await store.appendToStream(s, [added(1)]);
    await p.waitForPosition(ok.position, WAIT);
    const bad = await store.appendToStream(s, [added(2, { fail: true }), added(3)]);
    const err = await rejectsWith(() => p.waitForPosition(bad.position, WAIT), 'HERALD_ERR_PROJECTION_FAILED', 'waiting on a failed projection');
    assert.equal((err as { details: { projection: string } }).details.projection, p.name);
    assert.equal(p.status(), 'failed');
    assert.deepEqual(await p.read(s), expectedRow([1]), 'the failing batch left nothing behind');
    assert.equal(await p.position(), ok.position, 'it did not skip the failing event');
  });

export const categoryProjection: ProjectionScenario = (factory) =>
  run(factory, async ({ store, project, stream, name }) => {
    const cat = `cat${randomUUID().slice(0, 6)}`;
    for (const mode of ['inline', 'async'] as const) {
      const p = await project({ mode, name: name(), category: cat });
      const mine = stream(cat);
      const other = stream();
      await store.appendToStream(mine, [added(2)]);
      const r = await store.appendToStream(other, [added(100)]);
      // The newest event is in another category: waiting for it still resolves (the position moves past skipped events).
      await p.waitForPosition(r.position, WAIT);
      assert.deepEqual(await p.read(mine), expectedRow([2]), `${mode}: its category`);
      assert.equal(await p.read(other), undefined, `${mode}: nothing of other categories`);
    }
  });

/** Must show: a rebuild keeps serving reads from the old read model until the swap, which happens caught up to the head. */
export const rebuildServesOldUntilSwap: ProjectionScenario = (factory) =>
  run(factory, async ({ store, project, name, stream }) => {
    for (const mode of ['async', 'inline'] as const) {
      const n = name();
      const category = `rb${mode}${randomUUID().slice(0, 6)}`;
      const streams = Array.from({ length: 30 }, () => stream(category));
      const amounts = new Map(streams.map((s) => [s, [] as number[]]));
      for (let i = 0; i < 3000; i += 100) {
        const batch = Array.from({ length: 100 }, (_, j) => i + j);
        await Promise.all(
          streams.map((s, k) => {
            const mine = batch.filter((x) => x % 30 === k);
            amounts.get(s)!.push(...mine);
            return store.appendToStream(s, mine.map((x) => added(x)));
          }),
        );
      }
      const v1 = await project({ mode, name: n, category });
      await v1.waitForPosition(await store.headPosition(), WAIT);
      for (const s of streams.slice(0, 3)) assert.deepEqual(await v1.read(s), expectedRow(amounts.get(s)!, 1));
      await v1.close();
      // New code (× 2): without a rebuild only new events use it; with one, everything does.
      const v2 = await project({ mode, name: n, category, multiplier: 2 });
      const probe = streams[0]!;
      const old = (await v2.read(probe))!;
      let progressCalls = 0;
      let appendedDuring = 0;
      const result = await v2.rebuild({
        batchSize: 500,
        onProgress: async (p) => {
          progressCalls++;
          assert.ok(p.position <= p.head && p.events > 0, `${mode}: progress reports where the shadow is (${p.position} of ${p.head}, ${p.events} events)`);
          assert.deepEqual(await v2.read(probe), old, `${mode}: reads are served from the old read model during the rebuild (at ${p.position} of ${p.head})`);
          assert.equal(v2.status(), 'rebuilding');
          // Writers keep appending during the rebuild: the swap must include their events.
          if (appendedDuring < 5) {
            const s = streams[1]!;
            await store.appendToStream(s, [added(1000 + appendedDuring)]);
            amounts.get(s)!.push(1000 + appendedDuring);
            appendedDuring++;
          }
        },
      });
      assert.ok(progressCalls >= 3, `${mode}: the rebuild went in batches (${progressCalls} progress calls)`);
      const head = await store.headPosition();
      assert.equal(result.position, head, `${mode}: the new read model is caught up to the head at the swap`);
      assert.equal(v2.status(), 'live');
      for (const s of streams) assert.deepEqual(await v2.read(s), expectedRow(amounts.get(s)!, 2), `${mode}: after the swap every event counts with the new code, none twice`);
      assert.equal(await v2.rows(), 30);
      // And it keeps projecting after the swap.
      const after = await store.appendToStream(probe, [added(7)]);
      amounts.get(probe)!.push(7);
      await v2.waitForPosition(after.position, WAIT);
      assert.deepEqual(await v2.read(probe), expectedRow(amounts.get(probe)!, 2));
    }
  });

export const rebuildRecoversAFailedProjection: ProjectionScenario = (factory) =>
  run(factory, async ({ store, project, stream, name }) => {
    const n = name();
    const s = stream();
    const broken = await project({ mode: 'async', name: n });
    const r = await store.appendToStream(s, [added(1), added(2, { fail: true })]);
    await rejectsWith(() => broken.waitForPosition(r.position, WAIT), 'HERALD_ERR_PROJECTION_FAILED', 'a failing handler');
    await broken.close();
    // Remove the cause (here the poisoned stream is tombstoned, so its events are gone), restart, rebuild.
    await store.tombstoneStream(s);
    const fixed = await project({ mode: 'async', name: n });
    await fixed.rebuild({ batchSize: 100 });
    const r2 = await store.appendToStream(stream(), [added(5)]);
    await fixed.waitForPosition(r2.position, WAIT);
    assert.equal(fixed.status(), 'live');
    assert.equal(await fixed.read(s), undefined);
  });

export const projectionScenarios: Readonly<Record<string, ProjectionScenario>> = {
  'inline: the read model has the append when appendToStream resolves; a throwing handler fails only its append': inlineNeverLags,
  'async: waitForPosition gives read-your-writes; a position never reached times out (typed)': asyncReadYourWrites,
  'async: idempotent by position across restarts and with two runners': asyncIdempotentByPosition,
  'async: a handler that keeps failing stops the projection with a typed error, skipping nothing': asyncFailureStopsTyped,
  'a category projection moves past other categories, so any position can be awaited': categoryProjection,
  'rebuild (3000 events): reads come from the old read model until the swap, caught up to the head, writers going on': rebuildServesOldUntilSwap,
  'a failed projection comes back with a rebuild': rebuildRecoversAFailedProjection,
};

export function describeProjectionContract(name: string, factory: ProjectionContractFactory): void {
  describe(`Projection contract: ${name}`, () => {
    for (const [title, scenario] of Object.entries(projectionScenarios)) {
      it(title, { timeout: 60_000 }, () => scenario(factory));
    }
  });
}
