// Restarting PostgreSQL in the middle of the flows, on a private throwaway cluster (own port and
// data folder, initdb/pg_ctl as the postgres user) so other suites are not disturbed:
// - the transport contract's reconnect scenario;
// - publish/consume with a crash restart (`pg_ctl restart -m immediate`) mid-flow: nothing
//   acknowledged is lost, the consumer resumes by itself;
// - the event store: appends acknowledged before the crash survive it, a live subscription
//   resumes by itself and delivers every acknowledged event exactly once, in order.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Delivery, Transport } from '@herald/core';
import type { RecordedEvent } from '@herald/eventsourcing';
import { assertDelivered, reconnectAfterBrokerRestart, waitFor } from '@herald/testkit';
import { PgDatabase } from './database.ts';
import { createPostgresEventStore } from './event-store.ts';
import { PrivatePostgres, privateClusterSkipReason } from './private-postgres.ts';
import { schemaName } from './test-helpers.ts';
import { createPostgresTransport } from './transport.ts';

const skip = privateClusterSkipReason();
let server: PrivatePostgres | undefined;
const N = Number(process.env.HERALD_PG_RESTART_MESSAGES ?? 600);

describe('postgres across a server restart (private cluster)', { skip }, () => {
  before(async () => {
    server = await PrivatePostgres.start();
  });
  after(async () => {
    await server?.dispose();
  });

  it('transport contract: reconnect after a broker restart', { timeout: 120_000 }, async (t) => {
    const open: PgDatabase[] = [];
    try {
      await reconnectAfterBrokerRestart(t, {
        create: async () => {
          const database = new PgDatabase({ ...server!.connection, schema: schemaName(), connectTimeoutMs: 2000 });
          open.push(database);
          return createPostgresTransport({ database, leaseMs: 1500, heartbeatMs: 250, pollMs: 100 });
        },
        restartBroker: () => server!.restart('fast'),
      });
    } finally {
      for (const d of open) await d.close();
    }
  });

  it('publish/consume across a crash restart: nothing acknowledged is lost, the consumer resumes by itself', { timeout: 120_000 }, async () => {
    const connection = { ...server!.connection, schema: schemaName(), connectTimeoutMs: 2000 };
    const pubDb = new PgDatabase(connection);
    const subDb = new PgDatabase(connection);
    const publisher: Transport = createPostgresTransport({ database: pubDb, leaseMs: 2000, heartbeatMs: 300, pollMs: 100 });
    const consumer: Transport = createPostgresTransport({ database: subDb, leaseMs: 2000, heartbeatMs: 300, pollMs: 100 });
    const received = new Map<string, number>();
    let afterRestart = 0;
    let restarted = false;
    const sub = consumer.subscribe('restart-topic', { group: 'g' });
    const reading = (async () => {
      for await (const d of sub as AsyncIterable<Delivery>) {
        const id = d.envelope?.id ?? `undecodable@${d.position}`;
        received.set(id, (received.get(id) ?? 0) + 1);
        if (restarted) afterRestart++;
        d.ack();
      }
    })();
    const acked: string[] = [];
    let failures = 0;
    const publishOne = async (i: number): Promise<void> => {
      const id = `m-${i}`;
      const envelope = { specversion: '1.0', id, source: 'restart-test', type: 'restart.msg', time: new Date().toISOString(), datacontenttype: 'application/json', data: { i } };
      for (;;) {
        try {
          await publisher.publish('restart-topic', [{ key: `k${i % 8}`, envelope: envelope as never }]);
          acked.push(id);
          return;
        } catch {
          failures++;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    };
    try {
      let next = 0;
      const producer = (async () => {
        while (next < N) {
          const batch = Array.from({ length: Math.min(10, N - next) }, () => next++);
          await Promise.all(batch.map(publishOne));
        }
      })();
      await waitFor(() => acked.length >= N / 3 && received.size > 0, { timeoutMs: 30_000 });
      await server!.restart('immediate');
      restarted = true;
      await producer;
      await waitFor(() => acked.every((id) => received.has(id)), {
        timeoutMs: 60_000,
        what: () => `every acknowledged message delivered (${acked.filter((id) => !received.has(id)).length} of ${acked.length} missing)`,
      });
      assertDelivered(acked, [...received.keys()], { allowDuplicates: true, label: 'acknowledged publishes across the crash' });
      assert.ok(afterRestart > 0, 'the consumer received messages after the restart without being restarted itself');
      console.log(`# restart: ${acked.length} acknowledged, ${failures} publish attempts failed while the server was away, ${afterRestart} deliveries after the restart`);
    } finally {
      await sub.close({ timeoutMs: 1000 }).catch(() => {});
      await reading.catch(() => {});
      await publisher.close({ timeoutMs: 500 });
      await consumer.close({ timeoutMs: 500 });
      await pubDb.close();
      await subDb.close();
    }
  });

  it('event store across a crash restart: acknowledged appends survive, a live subscription resumes and delivers each once, in order', { timeout: 120_000 }, async () => {
    const connection = { ...server!.connection, schema: schemaName(), connectTimeoutMs: 2000 };
    const wdb = new PgDatabase(connection);
    const rdb = new PgDatabase(connection);
    const writer = createPostgresEventStore({ database: wdb });
    const reader = createPostgresEventStore({ database: rdb, pollMs: 100 });
    const got: RecordedEvent[] = [];
    const sub = reader.subscribe({ after: 0n });
    const reading = (async () => {
      for await (const e of sub) got.push(e);
    })();
    const acked: string[] = [];
    const appendOne = async (i: number): Promise<void> => {
      for (;;) {
        try {
          await writer.appendToStream(`acct-${i % 5}`, [{ type: 'deposited', data: { i }, id: `e-${i}` }]);
          acked.push(`e-${i}`);
          return;
        } catch {
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    };
    try {
      for (let i = 0; i < 100; i++) await appendOne(i);
      await server!.restart('immediate');
      for (let i = 100; i < 200; i++) await appendOne(i);
      await waitFor(() => got.length >= acked.length, { timeoutMs: 30_000, what: () => `${got.length} of ${acked.length} events` });
      await new Promise((r) => setTimeout(r, 200));
      assertDelivered(acked, got.map((e) => e.id), { label: 'subscription across the crash' });
      for (let i = 1; i < got.length; i++) assert.ok(got[i]!.position > got[i - 1]!.position, 'in position order');
      const page = await reader.readAll({ maxCount: 1000 });
      assert.equal(page.events.length, 200, 'every acknowledged append is stored after the crash');
    } finally {
      await sub.close();
      await reading.catch(() => {});
      await writer.close();
      await reader.close();
      await wdb.close();
      await rdb.close();
    }
  });
});
