// The load generator: places orders on Order's HTTP API at LOAD_RATE orders per second (default
// 20), a fraction LOAD_DECLINE_RATE (default 0.1) with a card Payment declines, a fraction
// LOAD_RARE_RATE (default 0.05) with an item of the scarce "sku-rare". Stops after LOAD_ORDERS
// orders or LOAD_SECONDS seconds when set (exit 0), or on SIGTERM/SIGINT. Progress on stderr
// every 2 s. With LOAD_RECORD=<file> it appends the id of every order Order accepted (201/200),
// one per line, for `check.ts`. A failed request is retried with the same order id.
import { appendFileSync } from 'node:fs';
import { systemClock, systemRandom } from '@herald/core';
import { envNumber, log } from '../src/runtime.ts';

const url = (process.env.ORDER_URL ?? `http://127.0.0.1:${process.env.ORDER_PORT ?? 4100}`).replace(/\/$/, '');
const rate = envNumber('LOAD_RATE', 20);
const declineRate = envNumber('LOAD_DECLINE_RATE', 0.1);
const rareRate = envNumber('LOAD_RARE_RATE', 0.05);
const maxOrders = envNumber('LOAD_ORDERS', Infinity);
const maxSeconds = envNumber('LOAD_SECONDS', Infinity);
const record = process.env.LOAD_RECORD;
const maxInFlight = envNumber('LOAD_MAX_IN_FLIGHT', 64);
const clock = systemClock;
const random = systemRandom;

const run = clock.now().toString(36);
const SKUS = Array.from({ length: 9 }, (_, i) => ({ sku: `sku-${i + 1}`, price: 500 * (i + 1) }));
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random.next() * xs.length)]!;

let sent = 0;
let placed = 0;
let failed = 0;
let inFlight = 0;
let stopping = false;

function order(n: number): Record<string, unknown> {
  const items = [{ ...pick(SKUS), qty: 1 + Math.floor(random.next() * 3) }];
  if (random.next() < rareRate) items.push({ sku: 'sku-rare', price: 9900, qty: 1 + Math.floor(random.next() * 2) });
  const customer = `customer-${Math.floor(random.next() * 500)}`;
  return {
    orderId: `o-${run}-${n}`,
    customer,
    email: `${customer}@example.com`,
    address: `${n} Load Street`,
    card: random.next() < declineRate ? '4000000000000002' : '4242424242424242',
    items,
  };
}

/** Places order `n`; a network failure or a 5xx is retried with the same order id (placing is idempotent), up to 5 attempts. */
async function place(n: number): Promise<void> {
  inFlight++;
  const body = JSON.stringify(order(n));
  try {
    for (let attempt = 1; ; attempt++) {
      let why: string;
      try {
        const res = await fetch(`${url}/orders`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(10_000) });
        const answer = (await res.json()) as { orderId?: string; message?: string };
        if (res.status === 201 || res.status === 200) {
          placed++;
          if (record) appendFileSync(record, `${answer.orderId}\n`);
          return;
        }
        why = `HTTP ${res.status} ${answer.message ?? ''}`;
        if (res.status < 500) attempt = Infinity; // refused: retrying changes nothing
      } catch (e) {
        why = (e as Error).message;
      }
      if (attempt >= 5 || stopping) {
        failed++;
        if (failed <= 5 || failed % 100 === 0) log('load', `order ${n}: ${why} (failed so far: ${failed})`);
        return;
      }
      await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
    }
  } finally {
    inFlight--;
  }
}

async function progress(): Promise<void> {
  const secs = (clock.now() - started) / 1000;
  let states = '';
  try {
    const res = await fetch(`${url}/stats`, { signal: AbortSignal.timeout(2000) });
    states = ` — orders by state ${JSON.stringify(await res.json())}`;
  } catch {
    states = ' — order service not answering';
  }
  log('load', `placed ${placed} in ${secs.toFixed(0)} s (${(placed / Math.max(secs, 0.001)).toFixed(1)}/s), failed ${failed}, in flight ${inFlight}${states}`);
}

// wait for Order to answer before the clock starts
for (let i = 0; ; i++) {
  try {
    if ((await fetch(`${url}/stats`, { signal: AbortSignal.timeout(1000) })).ok) break;
  } catch {
    if (i === 0) log('load', `waiting for ${url}`);
  }
  await new Promise((r) => setTimeout(r, 200));
}
const started = clock.now();
const tickMs = 50;
const ticker = setInterval(() => {
  if (stopping) return;
  const due = Math.min(maxOrders, Math.floor(((clock.now() - started) / 1000) * rate));
  while (sent < due && inFlight < maxInFlight) void place(++sent);
  if (sent >= maxOrders || (clock.now() - started) / 1000 >= maxSeconds) void stop('done');
}, tickMs);
const reporter = setInterval(() => void progress(), 2000);
log('load', `placing ${rate} orders/s on ${url} (declining cards: ${(declineRate * 100).toFixed(0)} %)`);

async function stop(why: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  clearInterval(ticker);
  clearInterval(reporter);
  while (inFlight > 0) await new Promise((r) => setTimeout(r, 20));
  await progress();
  log('load', `${why}: sent ${sent}, placed ${placed}, failed ${failed}`);
  process.exit(0);
}
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));
