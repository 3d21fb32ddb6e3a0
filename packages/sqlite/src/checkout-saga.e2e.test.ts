// A saga timeout that falls due while the process is down fires after it comes back: a child
// process runs the checkout (saga, services, relay, scheduler) on one SQLite file; it is
// SIGKILLed while the saga waits for shipping, stays down past the timer's due time, and a new
// child on the same file fires the timer and compensates.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { createPublisher } from '@herald/core';
import { CHECKOUT_SHIPPING_TIMED_OUT, CHECKOUT_UNTIL_SHIPPING, checkoutConversation, checkoutOrder as order, NOWHERE, OrderPlaced, sleep, waitFor, waitForCheckout } from '@herald/testkit';
import { openDatabase } from './database.ts';
import { createSqliteSagaStore } from './saga-store.ts';
import { tempDbPath } from './test-helpers.ts';
import { createSqliteTransport } from './transport.ts';

const FIXTURE = fileURLToPath(new URL('./checkout-saga.fixture.ts', import.meta.url));
const SHIPPING_TIMEOUT_MS = 4000; // the process is killed before it falls due, even on a loaded machine

interface Child {
  readonly process: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function startChild(path: string): Promise<Child> {
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, path], {
    env: { ...process.env, CHECKOUT_SHIPPING_TIMEOUT_MS: String(SHIPPING_TIMEOUT_MS) },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  await new Promise<void>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (l) => l === 'ready' && resolve());
    void exited.then((r) => reject(new Error(`checkout child exited before it was ready: ${JSON.stringify(r)}`)));
  });
  return { process: child, exited };
}

test('a saga timer due while the process is SIGKILLed fires after a new process starts on the file', { timeout: 120_000 }, async (t) => {
  const { path, cleanup } = tempDbPath();
  const children: Child[] = [];
  const transport = createSqliteTransport({ path });
  const store = createSqliteSagaStore({ path });
  const db = openDatabase({ path });
  t.after(async () => {
    for (const c of children) if (c.process.exitCode === null && c.process.signalCode === null) c.process.kill('SIGKILL');
    await Promise.all(children.map((c) => c.exited));
    await transport.close();
    store.close();
    db.close();
    cleanup();
  });

  children.push(await startChild(path));
  await createPublisher({ transport, source: 'shop' }).publish(OrderPlaced, order('o-crash', { address: NOWHERE }));
  const waiting = await waitFor(async () => {
    const i = await store.get('checkout', 'o-crash');
    return i?.step === 'shipping' && i.timer !== undefined ? i : undefined;
  }, { timeoutMs: 20_000, what: 'the saga to wait for shipping' });
  const row = db.read(() => db.statement('SELECT deliver_at FROM herald_scheduled WHERE id = ?').get(waiting.timer)) as { deliver_at: number } | undefined;
  assert.ok(row, `the shipping timer ${waiting.timer} is stored in the file`);
  const deliverAt = row.deliver_at;

  children[0]!.process.kill('SIGKILL');
  const killed = await children[0]!.exited;
  const killedAt = Date.now();
  assert.equal(killed.signal, 'SIGKILL');
  assert.ok(killedAt < deliverAt, `killed ${deliverAt - killedAt} ms before the timer was due`);

  await sleep(deliverAt - Date.now() + 500);
  const whileDown = await store.get('checkout', 'o-crash');
  assert.equal(whileDown?.status, 'running', 'nothing fired the timer while no process ran');
  assert.equal(whileDown?.timer, waiting.timer);

  const restartedAt = Date.now();
  assert.ok(restartedAt > deliverAt, 'the new process starts after the due time');
  children.push(await startChild(path));
  const done = await waitForCheckout(store, 'o-crash', 'compensated', 45_000); // a restarted child on a loaded machine took 14 s once
  assert.match(done.failure!.reason, new RegExp(`no reply within ${SHIPPING_TIMEOUT_MS} ms`));
  assert.deepEqual(await checkoutConversation(store, 'o-crash'), CHECKOUT_SHIPPING_TIMED_OUT);
  const fired = (await store.timeline('checkout', 'o-crash')).items.find((e) => e.kind === 'timer-fired')!;
  assert.ok(fired.at >= restartedAt, `the timer fired after the restart (${fired.at - restartedAt} ms after)`);
  const kv = (key: string): unknown => {
    const r = db.read(() => db.statement('SELECT value FROM checkout_kv WHERE key = ?').get(key)) as { value: string } | undefined;
    return r && JSON.parse(r.value);
  };
  await waitFor(() => kv('order:o-crash'), { timeoutMs: 10_000, what: 'the order to be cancelled' });
  assert.deepEqual(kv('order:o-crash'), { status: 'cancelled', reason: `shipping: timed out: no reply within ${SHIPPING_TIMEOUT_MS} ms after 1 attempt` });
  assert.deepEqual(kv('payment:o-crash'), { paymentId: 'pay-o-crash', amount: 120, refunded: true });
  assert.deepEqual(kv('reservation:o-crash'), { reservationId: 'res-o-crash', released: true });

  children[1]!.process.stdin!.write('stop\n');
  const stopped = await children[1]!.exited;
  assert.equal(stopped.code, 0, 'the second process stops cleanly');
  t.diagnostic(`killed ${deliverAt - killedAt} ms before the due time, restarted ${restartedAt - deliverAt} ms after it, timer fired ${fired.at - restartedAt} ms after the restart`);
});
