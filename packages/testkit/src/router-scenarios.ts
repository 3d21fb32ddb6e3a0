/**
 * Router-level scenarios of the transport contract: the consumer runtime (per-key lanes,
 * in-place retries, dead letters, parking, redrive) running on the transport under test.
 * Registered by `describeTransportContract` next to the transport-level scenarios.
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import {
  type Consumer,
  type ConsumerOptions,
  createConsumer,
  createPublisher,
  type DeadLetterEntry,
  type DeadLetterStore,
  decodeEnvelope,
  defineEvent,
  type MessageContext,
  MemoryDeadLetterStore,
  PermanentError,
  type Publisher,
  type StandardSchemaV1,
  type Transport,
} from '@herald/core';
import { assertOrderPerKey, DEFAULT_WAIT_MS, sleep, waitFor } from './helpers.ts';
import { preview, SETTLE_MS, type TransportContractOptions, type TransportHarness, type TransportScenario, withTransport } from './transport-harness.ts';

/** The data of the router scenarios' event. */
export interface ContractItem {
  readonly key: string;
  readonly seq: number;
}

/** A dependency-free Standard Schema for ContractItem. */
const itemSchema: StandardSchemaV1<unknown, ContractItem> = {
  '~standard': {
    version: 1,
    vendor: 'herald-testkit',
    validate: (v: unknown) =>
      typeof v === 'object' && v !== null && typeof (v as ContractItem).key === 'string' && Number.isInteger((v as ContractItem).seq)
        ? { value: v as ContractItem }
        : { issues: [{ message: 'expected { key: string, seq: integer }' }] },
  },
};

export const ContractItemEvent = defineEvent('contract.item', itemSchema, { version: 1 });

interface Handled {
  readonly group: string;
  readonly key: string;
  readonly seq: number;
  readonly id: string;
  readonly attempt: number;
  readonly redrive: boolean;
  readonly handler: string;
}

/** What the router scenarios share: the harness, one dead-letter store, a publisher, consumers that close at the end. */
class RouterHarness {
  readonly handled: Handled[] = [];
  readonly errors: unknown[] = [];
  readonly publisher: Publisher;

  constructor(
    readonly h: TransportHarness,
    readonly deadLetters: DeadLetterStore,
  ) {
    this.publisher = createPublisher({ transport: h.transport, source: 'herald-testkit/router' });
  }

  static async create(h: TransportHarness, options: TransportContractOptions): Promise<RouterHarness> {
    const dl = options.deadLetters ? await options.deadLetters(h.transport) : new MemoryDeadLetterStore();
    h.scope.defer('close the dead-letter store', () => dl.close());
    return new RouterHarness(h, dl);
  }

  /** Event id of (key, seq) in this scenario. */
  id(key: string, seq: number): string {
    return `${this.h.run}-${key}-${seq}`;
  }

  async publish(key: string, seq: number, via: Publisher = this.publisher): Promise<void> {
    await via.publish(ContractItemEvent, { key, seq }, { key, topic: this.h.topic, id: this.id(key, seq) });
  }

  record(group: string, data: ContractItem, ctx: MessageContext): void {
    this.handled.push({ group, key: data.key, seq: data.seq, id: ctx.envelope.id, attempt: ctx.attempt, redrive: ctx.redrive, handler: ctx.handler });
  }

  handledBy(group: string, key?: string): Handled[] {
    return this.handled.filter((x) => x.group === group && (key === undefined || x.key === key));
  }

  /** Creates, registers (via `setup`), starts a consumer and waits until it owns every partition. */
  async consumer(transport: Transport, group: string, setup: (c: Consumer) => void, options: Partial<ConsumerOptions> = {}): Promise<Consumer> {
    const c = createConsumer({
      transport,
      group,
      deadLetters: this.deadLetters,
      redrivePollMs: 50,
      retry: { initialDelayMs: 5, maxDelayMs: 20, jitter: 0 },
      onError: (e) => this.errors.push(e),
      ...options,
    });
    this.h.scope.defer(`close the consumer of group ${group}`, () => c.close({ timeoutMs: 500 }));
    setup(c);
    await c.start();
    const P = await this.h.partitions();
    await waitFor(() => new Set(c.assignment(this.h.topic)).size === P, {
      timeoutMs: this.h.groupWaitMs,
      what: () => `consumer of ${group} to own every partition (owns [${c.assignment(this.h.topic).join(',')}] of ${P})`,
    });
    return c;
  }

  async deadLettersOf(group: string, key?: string): Promise<DeadLetterEntry[]> {
    return [...(await this.deadLetters.list({ group, topic: this.h.topic, ...(key !== undefined ? { key } : {}) }, { limit: 1000 })).entries];
  }

  errorsText(): string {
    return this.errors.length ? `; consumer errors: ${this.errors.map((e) => (e as Error)?.message ?? String(e)).join('; ')}` : '';
  }
}

async function withRouter(t: TestContext, options: TransportContractOptions, body: (r: RouterHarness, h: TransportHarness) => Promise<void>): Promise<void> {
  await withTransport(t, options, [], async (h) => body(await RouterHarness.create(h, options), h));
}

/** Waits while progress is made: fails only when `count()` stops growing for `stallMs` before reaching `target`. */
async function waitProgress(count: () => number, target: number, what: string, stallMs = DEFAULT_WAIT_MS): Promise<void> {
  let last = -1;
  let since = performance.now();
  for (;;) {
    const n = count();
    if (n >= target) return;
    if (n !== last) {
      last = n;
      since = performance.now();
    } else if (performance.now() - since > stallMs) {
      throw new assert.AssertionError({ message: `timed out: no progress for ${stallMs} ms waiting for ${what} (${n}/${target})` });
    }
    await sleep(5);
  }
}

const seqs = (xs: readonly Handled[]): number[] => xs.map((x) => x.seq);

export const perKeyOrderUnderParallelism: TransportScenario = (t, options) =>
  withRouter(t, options, async (r, h) => {
    const group = h.group();
    const keys = Array.from({ length: 16 }, (_, i) => `key-${i}`);
    const perKey = 50;
    const active = new Map<string, number>();
    let sameKeyOverlap = 0;
    let crossKeyOverlap = 0;
    let maxRunning = 0;
    let running = 0;
    const consumer = await r.consumer(
      h.transport,
      group,
      (c) =>
        c.handle(
          ContractItemEvent,
          async (data, ctx) => {
            if ((active.get(data.key) ?? 0) > 0) sameKeyOverlap++;
            if ([...active].some(([k, n]) => k !== data.key && n > 0)) crossKeyOverlap++;
            active.set(data.key, (active.get(data.key) ?? 0) + 1);
            running++;
            maxRunning = Math.max(maxRunning, running);
            try {
              await sleep(Math.floor(Math.random() * 4));
              r.record(group, data, ctx);
            } finally {
              running--;
              active.set(data.key, active.get(data.key)! - 1);
            }
          },
          { topic: h.topic, name: 'ordered' },
        ),
      { concurrency: 8 },
    );
    await Promise.all(
      keys.map(async (key) => {
        for (let seq = 0; seq < perKey; seq++) await r.publish(key, seq);
      }),
    );
    await waitProgress(() => r.handled.length, keys.length * perKey, `${keys.length} keys × ${perKey} handled${r.errorsText()}`);
    await sleep(SETTLE_MS);
    const expected = new Map(keys.map((k) => [k, Array.from({ length: perKey }, (_, s) => r.id(k, s))]));
    assertOrderPerKey(
      expected,
      r.handled.map((x) => ({ key: x.key, id: x.id })),
      { label: 'per-key order under parallelism' },
    );
    assert.equal(sameKeyOverlap, 0, 'two handlers of the same key ran at the same time');
    assert.ok(crossKeyOverlap > 0, 'handlers of different keys never overlapped in time: keys are not run in parallel');
    assert.ok(maxRunning <= 8, `at most concurrency (8) handlers at once (saw ${maxRunning})`);
    assert.equal(consumer.stats().handled, keys.length * perKey, 'stats().handled');
  });

export const deadLetterAfterMaxAttempts: TransportScenario = (t, options) =>
  withRouter(t, options, async (r, h) => {
    const group = h.group();
    const attempts: number[] = [];
    const consumer = await r.consumer(
      h.transport,
      group,
      (c) =>
        c.handle(
          ContractItemEvent,
          async (data, ctx) => {
            if (data.key === 'poison' && data.seq === 0) {
              attempts.push(ctx.attempt);
              throw new Error(`Boom: cannot handle poison #${data.seq}`);
            }
            r.record(group, data, ctx);
          },
          { topic: h.topic, name: 'fails-on-poison', retry: { maxAttempts: 3, initialDelayMs: 5, maxDelayMs: 20, jitter: 0 } },
        ),
    );
    for (const [key, seq] of [['poison', 0], ['fine', 0], ['poison', 1], ['fine', 1], ['poison', 2]] as const) await r.publish(key, seq);
    await waitFor(async () => (await r.deadLettersOf(group)).length >= 1 && r.handledBy(group).length >= 4, {
      what: () => `a dead letter and 4 handled messages (handled ${r.handledBy(group).length}, attempts [${attempts.join(',')}])${r.errorsText()}`,
    });
    await sleep(SETTLE_MS);
    const dls = await r.deadLettersOf(group);
    assert.equal(dls.length, 1, `one dead letter (got ${dls.length})`);
    const e = dls[0]!;
    assert.equal(e.eventId, r.id('poison', 0), 'the failing message is the dead letter');
    assert.equal(e.attempts, 3, 'attempts === maxAttempts');
    assert.deepEqual(attempts, [1, 2, 3], 'the handler ran maxAttempts times, attempt numbers 1..3');
    assert.match(e.error.message, /Boom: cannot handle poison #0/, 'the error message is kept');
    assert.equal(e.handler, 'fails-on-poison', 'the handler name is kept');
    assert.equal(e.group, group);
    assert.equal(e.topic, h.topic);
    assert.equal(e.key, 'poison');
    assert.equal(e.status, 'dead');
    assert.ok(e.envelope, 'the envelope is kept');
    assert.deepEqual(e.envelope.data, { key: 'poison', seq: 0 });
    assert.deepStrictEqual(decodeEnvelope(e.raw), e.envelope, 'the raw bytes are the envelope’s');
    assert.ok(e.firstFailedAt <= e.lastFailedAt, 'firstFailedAt <= lastFailedAt');
    assert.deepEqual(seqs(r.handledBy(group, 'poison')), [1, 2], "later messages of the key continue ('continue' mode), in order");
    assert.deepEqual(seqs(r.handledBy(group, 'fine')), [0, 1], 'other keys are unaffected');
    const s = consumer.stats();
    assert.equal(s.deadLettered, 1, 'stats().deadLettered');
    assert.equal(s.handled, 4, 'stats().handled');
    assert.ok(s.failedAttempts >= 3, `stats().failedAttempts >= 3 (got ${s.failedAttempts})`);
  });

export const permanentErrorDeadLettersAtOnce: TransportScenario = (t, options) =>
  withRouter(t, options, async (r, h) => {
    const group = h.group();
    let calls = 0;
    await r.consumer(h.transport, group, (c) =>
      c.handle(
        ContractItemEvent,
        async (data, ctx) => {
          if (data.key === 'bad') {
            calls++;
            throw new PermanentError(`invalid item ${data.key}#${data.seq}`);
          }
          r.record(group, data, ctx);
        },
        { topic: h.topic, name: 'permanent', retry: { maxAttempts: 5, initialDelayMs: 5, jitter: 0 } },
      ),
    );
    await r.publish('bad', 0);
    await r.publish('ok', 0);
    await waitFor(async () => (await r.deadLettersOf(group)).length >= 1 && r.handledBy(group).length >= 1, { what: () => `the dead letter of bad#0 and ok#0 handled${r.errorsText()}` });
    await sleep(SETTLE_MS);
    const [e, ...more] = await r.deadLettersOf(group);
    assert.equal(more.length, 0);
    assert.equal(calls, 1, 'a PermanentError is not retried');
    assert.equal(e!.attempts, 1, 'dead-lettered after one attempt');
    assert.equal(e!.error.code, 'HERALD_ERR_PERMANENT');
    assert.match(e!.error.message, /invalid item bad#0/);
    assert.equal(e!.handler, 'permanent');
  });

export const redriveReachesOnlyFailedGroup: TransportScenario = (t, options) =>
  withRouter(t, options, async (r, h) => {
    const failing = h.group();
    const healthy = h.group();
    let broken = true;
    const peer = await h.peer();
    const a = await r.consumer(h.transport, failing, (c) =>
      c.handle(
        ContractItemEvent,
        async (data, ctx) => {
          if (broken && data.key === 'x') throw new Error('dependency down');
          r.record(failing, data, ctx);
        },
        { topic: h.topic, name: 'sometimes-fails', retry: { maxAttempts: 2, initialDelayMs: 5, jitter: 0 } },
      ),
    );
    await r.consumer(peer, healthy, (c) => c.handle(ContractItemEvent, async (data, ctx) => r.record(healthy, data, ctx), { topic: h.topic, name: 'healthy' }));
    await r.publish('x', 0);
    await r.publish('y', 0);
    await waitFor(async () => (await r.deadLettersOf(failing)).length === 1 && r.handledBy(failing).length === 1 && r.handledBy(healthy).length === 2, {
      what: () => `x#0 dead-lettered in ${failing} only, y#0 handled by both, x#0 by ${healthy}${r.errorsText()}`,
    });
    assert.deepEqual(await r.deadLettersOf(healthy), [], 'the healthy group has no dead letters');
    const [entry] = await r.deadLettersOf(failing);
    broken = false;
    assert.equal(await r.deadLetters.redrive({ ids: [entry!.id] }), 1, 'one entry marked for redrive');
    await waitFor(async () => r.handledBy(failing, 'x').length === 1 && (await r.deadLetters.get(entry!.id)) === undefined, {
      what: () => `the redriven x#0 handled by ${failing} and its dead letter removed${r.errorsText()}`,
    });
    await sleep(300);
    const redone = r.handledBy(failing, 'x');
    assert.equal(redone.length, 1, 'the failed group handles the redriven message once');
    assert.equal(redone[0]!.redrive, true, 'ctx.redrive is true for a redriven message');
    assert.deepEqual(
      r.handledBy(healthy).map((x) => `${x.key}#${x.seq}`).sort(),
      ['x#0', 'y#0'],
      'the other group does not see the redriven message again',
    );
    assert.equal(a.stats().redriven, 1, 'stats().redriven');
  });

export const parkTheKey: TransportScenario = (t, options) =>
  withRouter(t, options, async (r, h) => {
    const group = h.group();
    let broken = true;
    const consumer = await r.consumer(h.transport, group, (c) =>
      c.handle(
        ContractItemEvent,
        async (data, ctx) => {
          if (broken && data.key === 'parked' && data.seq === 0) throw new Error('cannot handle parked#0 yet');
          r.record(group, data, ctx);
        },
        { topic: h.topic, name: 'parking', onDeadLetter: 'park', retry: { maxAttempts: 2, initialDelayMs: 5, jitter: 0 } },
      ),
    );
    for (const [key, seq] of [['parked', 0], ['other', 0], ['parked', 1], ['other', 1], ['parked', 2], ['other', 2]] as const) await r.publish(key, seq);
    await waitFor(async () => (await r.deadLettersOf(group, 'parked')).length === 3 && r.handledBy(group, 'other').length === 3, {
      what: () => `parked#0 dead-lettered, parked#1..2 parked, other#0..2 handled (handled: ${preview(r.handledBy(group).map((x) => `${x.key}#${x.seq}`))})${r.errorsText()}`,
    });
    await sleep(SETTLE_MS);
    assert.deepEqual(r.handledBy(group, 'parked'), [], 'no message of the parked key is handled');
    assert.deepEqual(seqs(r.handledBy(group, 'other')), [0, 1, 2], 'other keys continue, in order');
    const [head, p1, p2] = await r.deadLettersOf(group, 'parked');
    assert.equal(head!.eventId, r.id('parked', 0));
    assert.equal(head!.status, 'dead');
    assert.equal(head!.attempts, 2);
    assert.deepEqual([p1!.eventId, p2!.eventId], [r.id('parked', 1), r.id('parked', 2)], 'later messages of the key parked in order');
    assert.deepEqual([p1!.status, p2!.status], ['parked', 'parked']);
    assert.deepEqual([p1!.parkedBehind, p2!.parkedBehind], [head!.id, head!.id], 'parked behind the dead letter');
    assert.deepEqual(await r.deadLetters.parkedKeys(group, h.topic), ['parked']);

    broken = false;
    assert.equal(await r.deadLetters.redrive({ ids: [head!.id] }), 3, 'redrive of the head marks the whole key');
    await waitFor(async () => r.handledBy(group, 'parked').length === 3 && (await r.deadLetters.parkedKeys(group, h.topic)).length === 0, {
      what: () => `the parked key drained and unparked (handled ${preview(r.handledBy(group, 'parked').map((x) => `#${x.seq}`))})${r.errorsText()}`,
    });
    assert.deepEqual(seqs(r.handledBy(group, 'parked')), [0, 1, 2], 'the parked messages are handled in order');
    assert.ok(r.handledBy(group, 'parked').every((x) => x.redrive), 'as redrives');
    assert.equal(await r.deadLetters.count({ group, key: 'parked' }), 0, 'no entries left for the key');

    await r.publish('parked', 3);
    await r.publish('parked', 4);
    await waitFor(() => r.handledBy(group, 'parked').length === 5, { what: () => `new messages of the unparked key handled${r.errorsText()}` });
    await sleep(SETTLE_MS);
    assert.deepEqual(seqs(r.handledBy(group, 'parked')), [0, 1, 2, 3, 4], 'after unparking, new messages of the key flow normally, in order');
    assert.deepEqual(r.handledBy(group, 'parked').slice(3).map((x) => x.redrive), [false, false]);
    assert.equal(await r.deadLetters.count({ group }), 0, 'nothing left in dead letters');
    const s = consumer.stats();
    assert.equal(s.parked, 2, 'stats().parked');
    assert.equal(s.redriven, 3, 'stats().redriven');
  });

export const failedRedriveKeepsKeyParked: TransportScenario = (t, options) =>
  withRouter(t, options, async (r, h) => {
    const group = h.group();
    let broken = true;
    await r.consumer(h.transport, group, (c) =>
      c.handle(
        ContractItemEvent,
        async (data, ctx) => {
          if (broken && data.key === 'parked' && data.seq === 0) throw new Error(`still failing (redrive: ${ctx.redrive})`);
          r.record(group, data, ctx);
        },
        { topic: h.topic, name: 'parking', onDeadLetter: 'park', retry: { maxAttempts: 2, initialDelayMs: 5, jitter: 0 } },
      ),
    );
    for (let seq = 0; seq < 3; seq++) await r.publish('parked', seq);
    await waitFor(async () => (await r.deadLettersOf(group, 'parked')).length === 3, { what: () => `parked#0 dead-lettered and parked#1..2 parked${r.errorsText()}` });
    const [head, p1, p2] = await r.deadLettersOf(group, 'parked');
    assert.equal(await r.deadLetters.redrive({ ids: [head!.id] }), 3);
    // The handler still fails: the head goes back to 'dead' with the new error, the rest back to 'parked'.
    let seen: DeadLetterEntry | undefined;
    await waitFor(
      async () => {
        seen = await r.deadLetters.get(head!.id);
        return seen?.error.message === 'still failing (redrive: true)' && (await r.deadLetters.get(p2!.id))?.status === 'parked';
      },
      { what: () => `the failed redrive recorded (head now: ${JSON.stringify(seen && { status: seen.status, error: seen.error.message, attempts: seen.attempts })})${r.errorsText()}` },
    );
    await sleep(SETTLE_MS);
    const again = await r.deadLetters.get(head!.id);
    assert.equal(again!.status, 'dead', 'the head is dead again');
    assert.ok(again!.attempts > head!.attempts, `attempts grow with the failed redrive (${head!.attempts} → ${again!.attempts})`);
    assert.deepEqual([(await r.deadLetters.get(p1!.id))?.status, (await r.deadLetters.get(p2!.id))?.status], ['parked', 'parked'], 'the key’s other entries stop draining');
    assert.deepEqual(r.handledBy(group, 'parked'), [], 'nothing of the key was handled out of order');
    assert.deepEqual(await r.deadLetters.parkedKeys(group, h.topic), ['parked'], 'the key stays parked');
    await r.publish('parked', 3);
    await waitFor(async () => (await r.deadLettersOf(group, 'parked')).length === 4, { what: () => `parked#3 parked behind the rest${r.errorsText()}` });
    broken = false;
    await r.deadLetters.redrive({ ids: [p2!.id] });
    await waitFor(() => r.handledBy(group, 'parked').length === 4, { what: () => `the key drained after the fix (handled ${preview(r.handledBy(group, 'parked').map((x) => `#${x.seq}`))})${r.errorsText()}` });
    assert.deepEqual(seqs(r.handledBy(group, 'parked')), [0, 1, 2, 3], 'drained in order');
    await waitFor(async () => (await r.deadLetters.parkedKeys(group, h.topic)).length === 0, { what: 'the key unparked' });
  });

/** Router-level scenarios, by name, in the order the suite runs them. */
export const routerScenarios: Readonly<Record<string, TransportScenario>> = Object.freeze({
  'per-key order under parallelism (16 keys × 50, concurrency 8)': perKeyOrderUnderParallelism,
  'dead letter after maxAttempts; later messages of the key continue': deadLetterAfterMaxAttempts,
  'a PermanentError goes to dead letters after one attempt': permanentErrorDeadLettersAtOnce,
  'redrive reaches only the failed group': redriveReachesOnlyFailedGroup,
  "park the key: later messages parked in order, redrive drains them and unparks": parkTheKey,
  'a redrive that fails again keeps the key parked; a later one drains it': failedRedriveKeepsKeyParked,
});
