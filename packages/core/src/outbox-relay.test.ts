import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createEnvelope } from './envelope.ts';
import { MemoryLeaseStore } from './lease.ts';
import { MemoryUnitOfWork } from './memory-unit-of-work.ts';
import { createOutboxRelay } from './outbox-relay.ts';
import { partitionForKey } from './partitioner.ts';
import type { OutgoingMessage, PublishReceipt, Transport } from './transport.ts';

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 2000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function message(key: string, n: number): OutgoingMessage {
  return { envelope: createEnvelope({ type: 't.x', source: 'test', id: `${key}-${n}`, partitionkey: key, data: n }), key };
}

/** A transport whose publish calls wait for `gate` (when set) and are recorded. */
function fakeTransport(o: { delayMs?: number; gate?: () => Promise<void> } = {}) {
  const published: string[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const inFlightByPartition = new Map<number, number>();
  let maxPerPartition = 0;
  let calls = 0;
  const transport = {
    name: 'fake',
    async publish(topic: string, messages: readonly OutgoingMessage[]): Promise<readonly PublishReceipt[]> {
      calls++;
      const p = partitionForKey(messages[0]!.key!, 8);
      inFlight++;
      inFlightByPartition.set(p, (inFlightByPartition.get(p) ?? 0) + 1);
      maxInFlight = Math.max(maxInFlight, inFlight);
      maxPerPartition = Math.max(maxPerPartition, inFlightByPartition.get(p)!);
      try {
        if (o.gate) await o.gate();
        if (o.delayMs) await sleep(o.delayMs);
        for (const m of messages) published.push(m.envelope.id);
        return messages.map(() => ({ topic, partition: 0, position: '0' }));
      } finally {
        inFlight--;
        inFlightByPartition.set(p, inFlightByPartition.get(p)! - 1);
      }
    },
  } as unknown as Transport;
  return { transport, published, stats: () => ({ calls, maxInFlight, maxPerPartition }) };
}

test('publish calls: at most maxInFlightPublishes across partitions, never two at once for one partition', async () => {
  const uow = new MemoryUnitOfWork({ partitions: 8 });
  const fake = fakeTransport({ delayMs: 15 });
  const keys = Array.from({ length: 16 }, (_, i) => `key-${i}`);
  for (let round = 0; round < 4; round++) await uow.withTransaction((tx) => tx.publish('t', keys.map((k) => message(k, round))));
  const relay = createOutboxRelay({ store: uow, transport: fake.transport, leases: uow.leases, maxInFlightPublishes: 3, batchSize: 4 });
  await relay.start();
  await waitFor(() => fake.published.length === 64, 'every row');
  await relay.close();
  const s = fake.stats();
  assert.ok(s.maxInFlight <= 3, `at most 3 calls in flight (saw ${s.maxInFlight})`);
  assert.ok(s.maxInFlight >= 2, `partitions publish in parallel (saw ${s.maxInFlight})`);
  assert.equal(s.maxPerPartition, 1, 'one call at a time per partition');
  for (const k of keys) {
    const mine = fake.published.filter((id) => id.startsWith(`${k}-`));
    assert.deepEqual(mine, [0, 1, 2, 3].map((n) => `${k}-${n}`), `order of ${k}`);
  }
});

test('a lease lost while a publish is in flight: the mark is fenced out, the partition stops, the next owner resends', async () => {
  const leases = new MemoryLeaseStore();
  const uow = new MemoryUnitOfWork({ partitions: 1, leases });
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let gated = true;
  const fake = fakeTransport({ gate: () => (gated ? gate : Promise.resolve()) });
  const errors: unknown[] = [];
  const relay = createOutboxRelay({ store: uow, transport: fake.transport, leases, name: 'stolen', memberId: 'a', leaseMs: 60_000, pollMs: 20, onError: (e) => errors.push(e) });
  await relay.start();
  await uow.withTransaction((tx) => tx.publish('t', [message('k', 0), message('k', 1)]));
  await waitFor(() => fake.stats().calls === 1, 'the gated publish');
  // Another member takes the lease (as after an expiry).
  const [grant] = await leases.list('outbox:stolen');
  await leases.release(grant!);
  const intruder = await leases.acquire('outbox:stolen', '0', 'intruder', 60_000);
  assert.ok(intruder);
  gated = false;
  open();
  await waitFor(() => relay.stats().fencedOut === 1, 'the fenced mark');
  assert.equal(relay.stats().partitions, 0, 'the partition was dropped');
  assert.equal((await uow.backlog()).count, 2, 'nothing was marked sent');
  assert.ok(errors.some((e) => (e as { code?: string }).code === 'HERALD_ERR_LEASE_LOST'));
  await uow.withTransaction((tx) => tx.publish('t', message('k', 2)));
  await sleep(100);
  assert.equal(fake.stats().calls, 1, 'no publish while another member holds the lease');
  await relay.close();

  // The intruder gives up; a new relay takes over and resends from the first unconfirmed row.
  await leases.release(intruder);
  const next = createOutboxRelay({ store: uow, transport: fake.transport, leases, name: 'stolen', memberId: 'b', pollMs: 20 });
  await next.start();
  await waitFor(async () => (await uow.backlog()).count === 0, 'the backlog to drain');
  await next.close();
  assert.deepEqual(fake.published, ['k-0', 'k-1', 'k-0', 'k-1', 'k-2'], 'resent from the first unconfirmed row, in order');
});

test('close() is idempotent and a closed relay cannot start', async () => {
  const uow = new MemoryUnitOfWork();
  const relay = createOutboxRelay({ store: uow, transport: fakeTransport().transport, leases: uow.leases });
  await relay.start();
  await Promise.all([relay.close(), relay.close()]);
  await assert.rejects(relay.start(), (e: unknown) => (e as { code?: string }).code === 'HERALD_ERR_CLOSED');
});

test('a relay that loses a partition and takes it back waits for its old call before publishing again', async () => {
  const leases = new MemoryLeaseStore();
  const uow = new MemoryUnitOfWork({ partitions: 1, leases });
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let gated = true;
  const fake = fakeTransport({ gate: () => (gated ? gate : Promise.resolve()) });
  const relay = createOutboxRelay({ store: uow, transport: fake.transport, leases, name: 'again', memberId: 'a', leaseMs: 150, pollMs: 10 });
  await relay.start();
  await uow.withTransaction((tx) => tx.publish('t', [message('k', 0), message('k', 1)]));
  await waitFor(() => fake.stats().calls === 1, 'the gated publish');
  // The lease changes hands and comes back free: the relay's renewal fails, its next round takes it again.
  const [grant] = await leases.list('outbox:again');
  await leases.release(grant!);
  const other = await leases.acquire('outbox:again', '0', 'other', 60_000);
  await leases.release(other!);
  await waitFor(async () => {
    const [g] = await leases.list('outbox:again');
    return g !== undefined && g.owner === 'a' && g.epoch > grant!.epoch;
  }, 'the relay to hold the partition again under a new epoch');
  await sleep(100);
  assert.equal(fake.stats().calls, 1, 'no second call for the partition while the first is in flight');
  gated = false;
  open();
  await waitFor(async () => (await uow.backlog()).count === 0, 'the backlog to drain');
  await relay.close();
  assert.equal(fake.stats().maxPerPartition, 1);
  assert.deepEqual(fake.published, ['k-0', 'k-1', 'k-0', 'k-1'], 'the old call landed, was fenced, the new worker resent in order');
  assert.ok(relay.stats().fencedOut >= 1);
});

test('memory unit of work: a nested transaction is a typed error, not a deadlock; the outer one still commits', async () => {
  const uow = new MemoryUnitOfWork();
  await uow.withTransaction(async (tx) => {
    tx.native.put('t', 'k', 1);
    await assert.rejects(
      uow.withTransaction(() => {}),
      (e: unknown) => (e as { code?: string }).code === 'HERALD_ERR_INVALID_ARGUMENT' && /inside one of its own transactions/.test((e as Error).message),
    );
  });
  assert.equal(uow.read('t', 'k'), 1);
  await uow.withTransaction(() => {}); // not nested any more
});
