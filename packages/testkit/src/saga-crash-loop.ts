/**
 * The checkout saga under crashes, for any backend: a child process runs the saga runtime, the
 * four participant services, the outbox relay and the scheduler on the backend, and is SIGKILLed
 * at random points (sometimes again before it is ready) and restarted, while the parent keeps
 * placing orders (ok, declined, out of stock, never shipped). Afterwards every order ends in
 * exactly one terminal state with the outcome its path implies (a happy-path order may also be
 * compensated at shipping when an outage outlasted its shipping timeout — the durable timer fired
 * first; counted), no message was lost (every order's final command reached the orders service),
 * no command had an effect twice (the services' effect log has one row per command message and
 * one command of each type per order), money is conserved (what stays charged is exactly what
 * completed orders cost; every reservation of a cancelled order is released), nothing was
 * dead-lettered.
 *
 * The child is `node --import tsx <fixture> ...childArgs`; it prints `ready` once every part has
 * started and closes on `stop` on stdin (env `CHECKOUT_SHIPPING_TIMEOUT_MS` is set).
 *
 *   HERALD_CRASH_RUNS   runs, each on fresh storage        HERALD_CRASH_ORDERS  orders per run
 *   HERALD_CRASH_KILLS  SIGKILLs per run                    HERALD_CRASH_SEED    seed (default random, printed)
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createPublisher, type Transport } from '@herald/core';
import { type SagaInstance, TERMINAL_SAGA_STATUSES } from '@herald/eventsourcing';
import { ChargePayment, checkoutOrder, DECLINE_ABOVE, NOWHERE, OrderPlaced, type OrderPlacedData, type OrderRecord, OUT_OF_STOCK_SKU, type PaymentRecord, RefundPayment, ReleaseInventory, ReserveInventory, type ReservationRecord } from './checkout-saga.ts';
import { sleep, waitFor } from './helpers.ts';

/** What the loop needs of one run's storage (opened by the parent next to the child). */
export interface CrashLoopRun {
  /** Arguments of the fixture for this run (after its path). */
  readonly childArgs: readonly string[];
  /** Where the parent publishes orders. */
  readonly transport: Transport;
  /** The committed checkout saga instance of an order. */
  instance(orderId: string): Promise<SagaInstance | undefined>;
  /** A committed service record (`order:<id>`, `payment:<id>`, `reservation:<id>`), parsed. */
  record(key: string): Promise<unknown>;
  /** Effect-log groups seen more than once: by (service, type, message id) and by (order id, type). */
  duplicateEffects(): Promise<{ readonly byMessage: readonly unknown[]; readonly byOrder: readonly unknown[] }>;
  deadLetterCount(): Promise<number>;
  close(): Promise<void>;
}

export interface SagaCrashLoopOptions {
  /** The child's module (absolute path). */
  readonly fixture: string;
  readonly openRun: (run: number) => Promise<CrashLoopRun>;
  /** Defaults from HERALD_CRASH_RUNS / _ORDERS / _KILLS / _SEED, else 3 / 24 / 2 / random. */
  readonly runs?: number;
  readonly orders?: number;
  readonly kills?: number;
  readonly seed?: number;
  /** The saga's shipping timeout in the child, ms (default 1500). */
  readonly shippingTimeoutMs?: number;
  /** Longest wait for every order to settle after the last restart, ms (default 60 000). */
  readonly settleTimeoutMs?: number;
}

export interface SagaCrashLoopSummary {
  readonly seed: number;
  readonly runs: number;
  readonly orders: number;
  readonly kills: number;
  readonly killedBeforeReady: number;
  readonly recoveries: number;
  readonly shippingTimedOutByOutage: number;
  /** Step commands sent again after their reply timed out (answered from the services' records). */
  readonly resentAfterTimeout: number;
  /** One line for the test output. */
  readonly text: string;
}

/** The crash-loop sizes from the environment (with the given defaults). */
export function crashLoopSizes(defaults: { runs: number; orders: number; kills: number }): { runs: number; orders: number; kills: number; seed: number } {
  const num = (name: string, d: number): number => {
    const raw = process.env[name];
    if (raw === undefined || raw === '') return d;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer (got ${JSON.stringify(raw)})`);
    return n;
  };
  return { runs: num('HERALD_CRASH_RUNS', defaults.runs), orders: num('HERALD_CRASH_ORDERS', defaults.orders), kills: num('HERALD_CRASH_KILLS', defaults.kills), seed: num('HERALD_CRASH_SEED', Math.floor(Math.random() * 2 ** 31)) };
}

/** mulberry32: a small seeded PRNG, so a failing run can be replayed with HERALD_CRASH_SEED. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Path = 'ok' | 'declined' | 'nostock' | 'lost';

interface Child {
  readonly process: ChildProcess;
  readonly ready: Promise<void>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startChild(fixture: string, args: readonly string[], shippingTimeoutMs: number): Child {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture, ...args], {
    env: { ...process.env, CHECKOUT_SHIPPING_TIMEOUT_MS: String(shippingTimeoutMs) },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const ready = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (l) => l === 'ready' && resolve());
    void exited.then((r) => reject(new Error(`checkout child exited before it was ready: ${JSON.stringify(r)}`)));
  });
  ready.catch(() => {}); // a child killed before it is ready is expected here
  return { process: child, ready, exited };
}

function orderFor(path: Path, orderId: string, amount: number): OrderPlacedData {
  switch (path) {
    case 'ok':
      return checkoutOrder(orderId, { amount });
    case 'declined':
      return checkoutOrder(orderId, { amount: DECLINE_ABOVE + amount });
    case 'nostock':
      return checkoutOrder(orderId, { amount, items: [{ sku: OUT_OF_STOCK_SKU, qty: 1 }] });
    case 'lost':
      return checkoutOrder(orderId, { amount, address: NOWHERE });
  }
}

interface RunResult {
  kills: number;
  killedNotReady: number;
  shippingTimedOutByOutage: number;
  resent: number;
}

async function oneRun(o: SagaCrashLoopOptions & { orders: number; kills: number; shippingTimeoutMs: number }, run: number, seed: number): Promise<RunResult> {
  const random = seededRandom(seed);
  const storage = await o.openRun(run);
  let child: Child | undefined;
  try {
    // The first child creates the schema its parts need.
    child = startChild(o.fixture, storage.childArgs, o.shippingTimeoutMs);
    await child.ready;
    const shop = createPublisher({ transport: storage.transport, source: 'shop' });
    const paths: Path[] = ['ok', 'declined', 'nostock', 'lost'];
    const orders = Array.from({ length: o.orders }, (_, i) => {
      const p = paths[Math.floor(random() * paths.length)]!;
      return { id: `r${run}-o${i}`, path: p, data: orderFor(p, `r${run}-o${i}`, 10 + Math.floor(random() * 90)) };
    });
    // Orders arrive in batches through the kill period, some while the child is down.
    const batches = o.kills + 1;
    let placed = 0;
    let kills = 0;
    let killedNotReady = 0;
    for (let b = 0; b < batches; b++) {
      const upTo = Math.round(((b + 1) * orders.length) / batches);
      for (; placed < upTo; placed++) await shop.publish(OrderPlaced, orders[placed]!.data);
      if (b === batches - 1) break;
      await sleep(100 + Math.floor(random() * 1200));
      child.process.kill('SIGKILL');
      const r: { signal: NodeJS.Signals | null } = await child.exited;
      assert.equal(r.signal, 'SIGKILL');
      kills++;
      await sleep(Math.floor(random() * 300));
      child = startChild(o.fixture, storage.childArgs, o.shippingTimeoutMs);
      // Sometimes kill it again before it is even ready.
      if (random() < 0.25) {
        await sleep(Math.floor(random() * 400));
        child.process.kill('SIGKILL');
        await child.exited;
        kills++;
        killedNotReady++;
        child = startChild(o.fixture, storage.childArgs, o.shippingTimeoutMs);
      }
      await child.ready;
    }

    // Everything settles after the last restart.
    const terminal = new Set<string>(TERMINAL_SAGA_STATUSES);
    let pending: string[] = [];
    await waitFor(
      async () => {
        pending = [];
        for (const x of orders) {
          const i = await storage.instance(x.id);
          const rec = await storage.record(`order:${x.id}`);
          if (!i || !terminal.has(i.status) || rec === undefined) pending.push(`${x.id}:${i?.status ?? 'none'}${rec === undefined ? '(no order record)' : ''}`);
        }
        return pending.length === 0;
      },
      { timeoutMs: o.settleTimeoutMs ?? 60_000, intervalMs: 100, what: () => `every order to settle; pending ${pending.slice(0, 10).join(', ')}` },
    );

    let charged = 0;
    let completedValue = 0;
    let shippingTimedOutByOutage = 0;
    let resent = 0;
    for (const x of orders) {
      const i = (await storage.instance(x.id))!;
      // A happy-path order may see its shipping timeout when the process was down for longer
      // than the timeout while the saga waited for shipping: then it is compensated like a lost
      // parcel (a correct outcome, counted). Every other path has one outcome.
      const outage = x.path === 'ok' && i.status === 'compensated' && i.failure?.step === 'shipping' && /timed out/.test(i.failure.reason);
      if (outage) shippingTimedOutByOutage++;
      const want = x.path === 'ok' && !outage ? 'completed' : 'compensated';
      assert.equal(i.status, want, `${x.id} (${x.path}) ends ${want}, not ${i.status} (${JSON.stringify(i.failure ?? i.error)})`);
      const wantFailure = { ok: outage ? 'shipping' : undefined, declined: 'payment', nostock: 'inventory', lost: 'shipping' }[x.path];
      assert.equal(i.failure?.step, wantFailure, `${x.id} (${x.path}) failed at ${wantFailure}`);
      const rec = (await storage.record(`order:${x.id}`)) as OrderRecord;
      assert.equal(rec.status, want === 'completed' ? 'completed' : 'cancelled', `${x.id}: the orders service saw the saga's final command`);
      const pay = (await storage.record(`payment:${x.id}`)) as PaymentRecord | undefined;
      const res = (await storage.record(`reservation:${x.id}`)) as ReservationRecord | undefined;
      if (x.path === 'declined') assert.equal(pay, undefined, `${x.id}: a declined card is never charged`);
      else assert.ok(pay, `${x.id}: charged once`);
      if (pay && !pay.refunded) charged += pay.amount;
      if (want === 'completed') {
        completedValue += x.data.amount;
        assert.equal(pay?.refunded, false, `${x.id}: a completed order keeps its payment`);
        assert.equal(res?.released, false, `${x.id}: a completed order keeps its stock`);
      } else {
        if (pay) assert.equal(pay.refunded, true, `${x.id}: a cancelled order is refunded`);
        if (res) assert.equal(res.released, true, `${x.id}: a cancelled order's stock is released`);
      }
    }
    assert.equal(charged, completedValue, 'money is conserved: what stays charged is what completed orders cost');
    const dupes = await storage.duplicateEffects();
    assert.deepEqual(dupes.byMessage, [], 'no command message had an effect twice');
    // A step's command is sent again, as a new message, when its reply timed out (the process was
    // down for longer than the reply timeout); the services answer a repeat from their records
    // (charged once, money conserved: checked above), so it is no second effect. Anything sent to
    // one order more often than its step's attempts is.
    const attempts = new Map<string, number>([[ChargePayment.type, 2], [ReserveInventory.type, 2], [RefundPayment.type, 3], [ReleaseInventory.type, 3]]);
    const byOrder = dupes.byOrder as ReadonlyArray<{ readonly type: string; readonly n: number | bigint | string }>;
    const excess = byOrder.filter((d) => Number(d.n) > (attempts.get(d.type) ?? 1));
    assert.deepEqual(excess, [], 'each order got each command once, or at most as often as its step attempts it');
    resent += byOrder.length - excess.length;
    assert.equal(await storage.deadLetterCount(), 0, 'nothing was dead-lettered');

    child.process.stdin!.write('stop\n');
    const stopped = await child.exited;
    assert.equal(stopped.code, 0, 'the last child closes cleanly on stop');
    return { kills, killedNotReady, shippingTimedOutByOutage, resent };
  } finally {
    if (child && child.process.exitCode === null && child.process.signalCode === null) {
      child.process.kill('SIGKILL');
      await child.exited;
    }
    await storage.close();
  }
}

/** Runs the crash loop (`runs` runs, each on storage from `openRun`); throws on the first violated invariant. */
export async function runSagaCrashLoop(options: SagaCrashLoopOptions): Promise<SagaCrashLoopSummary> {
  const env = crashLoopSizes({ runs: 3, orders: 24, kills: 2 });
  const o = { ...options, orders: options.orders ?? env.orders, kills: options.kills ?? env.kills, shippingTimeoutMs: options.shippingTimeoutMs ?? 1500 };
  const runs = options.runs ?? env.runs;
  const seed = options.seed ?? env.seed;
  let kills = 0;
  let early = 0;
  let outages = 0;
  let resent = 0;
  for (let run = 0; run < runs; run++) {
    const r = await oneRun(o, run, seed + run);
    kills += r.kills;
    early += r.killedNotReady;
    outages += r.shippingTimedOutByOutage;
    resent += r.resent;
    if (runs > 3) process.stderr.write(`saga crash loop: run ${run + 1}/${runs} ok (${kills} SIGKILLs so far)\n`); // progress of long soaks
  }
  const text = `saga crash loop: seed ${seed}, ${runs} runs, ${runs * o.orders} orders, ${kills} SIGKILLs (${early} before the restarted process was ready), ${kills} recoveries; ${outages} happy-path orders compensated because an outage outlasted their shipping timeout; ${resent} step commands resent after their reply timed out (answered from the services' records)`;
  return { seed, runs, orders: runs * o.orders, kills, killedBeforeReady: early, recoveries: kills, shippingTimedOutByOutage: outages, resentAfterTimeout: resent, text };
}
