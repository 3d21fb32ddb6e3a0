// The herald CLI on PostgreSQL + NATS JetStream (127.0.0.1:5432 database `test`, a random
// schema; 127.0.0.1:4222, a random stream prefix given as the services get it, in the config's
// `env`): `herald status` reads the topics and the consumer lag from NATS, not from PostgreSQL's log.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createEnvelope, type Delivery, partitionForKey } from '@herald/core';
import { createNatsTransport, type NatsTransport } from '@herald/nats';
import { createPgDatabase } from '@herald/postgres';
import { serverSkipReason, waitFor } from '@herald/testkit';
import { jetstreamManager } from '@nats-io/jetstream';
import { runCli } from './program.ts';

const PG_PORT = Number(process.env.HERALD_PG_PORT ?? 5432);
const URL = `postgres://postgres@127.0.0.1:${PG_PORT}/${process.env.HERALD_PG_DATABASE ?? 'test'}`;
const NATS = process.env.HERALD_NATS_SERVERS ?? '127.0.0.1:4222';
const skip = (await serverSkipReason('PostgreSQL', PG_PORT)) ?? (await serverSkipReason('NATS JetStream', 4222));

interface Status {
  topics: Array<{ name: string; partitions: number; published: number; groups: Array<{ group: string; handled: number; lag: number; oldestUnhandledAt: number | null }> }>;
}

describe('herald CLI on PostgreSQL + NATS JetStream', { skip }, () => {
  const id = randomUUID().replace(/-/g, '').slice(0, 12);
  const dir = mkdtempSync(join(tmpdir(), 'herald-cli-nats-'));
  const schema = `hcli_${id}`;
  const prefix = `hcli${id}`;
  const config = join(dir, 'herald.config.json');
  const herald = async (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
    let stdout = '';
    let stderr = '';
    const code = await runCli(['--config', config, ...args], { out: (t) => (stdout += t), err: (t) => (stderr += t) });
    return { code, stdout, stderr };
  };
  const status = async (): Promise<Status> => {
    const r = await herald('status', '--json');
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Status;
  };
  let transport: NatsTransport | undefined;

  after(async () => {
    await transport?.close();
    const db = createPgDatabase({ connectionString: URL, schema: 'public', max: 1 });
    await db.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await db.close();
    const t = await createNatsTransport({ servers: NATS, prefix, leaseBucket: `${prefix}_leases` });
    const jsm = await jetstreamManager(t.connection);
    const names: string[] = [];
    for await (const n of jsm.streams.names()) if (n.startsWith(`${prefix.toUpperCase()}_`) || n === `KV_${prefix}_leases`) names.push(n);
    for (const n of names) await jsm.streams.delete(n).catch(() => {});
    await t.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('status shows the NATS topic, published count and a stopped group’s lag and oldest unhandled time; lag 0 once it handled them', async () => {
    writeFileSync(config, JSON.stringify({ name: 'pg-nats', backend: { kind: 'postgres', url: URL, schema }, transport: { kind: 'nats', servers: NATS }, env: { HERALD_NATS_PREFIX: prefix } }));
    const migrated = await herald('migrate', '--json');
    assert.equal(migrated.code, 0, migrated.stderr);
    assert.deepEqual((await status()).topics, [], 'no topic yet under the prefix (and PostgreSQL’s log is not read)');

    transport = await createNatsTransport({ servers: NATS, prefix, leaseBucket: `${prefix}_leases`, leaseMs: 600, heartbeatMs: 100, fetchExpiresMs: 2000 });
    const topic = 'orders.placed';
    const P = (await transport.ensureTopic(topic, { partitions: 2 })).partitions;
    // keys on both partitions: NATS positions are stream sequences shared by the partitions
    const keys = ['a', 'b', 'c', 'd', 'e', 'f'];
    assert.ok(new Set(keys.map((k) => partitionForKey(k, P))).size === 2, 'the keys cover both partitions');
    const publish = (from: number, to: number) =>
      transport!.publish(topic, keys.slice(from, to).map((key, i) => ({ key, envelope: createEnvelope({ type: 'order.placed', source: 'test', data: { i: from + i } }) })));
    const handle = async (expected: number): Promise<void> => {
      const sub = transport!.subscribe(topic, { group: 'billing' });
      const got: Delivery[] = [];
      void (async () => {
        for await (const d of sub) {
          got.push(d);
          d.ack();
        }
      })();
      await waitFor(() => got.length >= expected, { what: () => `${got.length}/${expected} delivered to billing` });
      await waitFor(async () => (await transport!.lag({ group: 'billing', topic })).every((l) => l.messages === 0), { what: 'billing committed everything' });
      await sub.close();
    };

    // billing handles the first two, then stops; four more are published while it is away.
    await publish(0, 2);
    await handle(2);
    const before = Date.now();
    await publish(2, 6);
    const afterPublish = Date.now();

    const lagging = (await status()).topics;
    assert.deepEqual(lagging.map((t) => [t.name, t.partitions, t.published]), [[topic, 2, 6]]);
    const [g] = lagging[0]!.groups;
    assert.deepEqual({ group: g!.group, handled: g!.handled, lag: g!.lag }, { group: 'billing', handled: 2, lag: 4 });
    assert.ok(g!.oldestUnhandledAt !== null && g!.oldestUnhandledAt >= before - 2000 && g!.oldestUnhandledAt <= afterPublish + 2000, `oldest unhandled appended during the second publish (${g!.oldestUnhandledAt}, publish ${before}–${afterPublish})`);
    const text = await herald('status');
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /orders\.placed/);

    // billing comes back and handles the rest: lag 0.
    await handle(4);
    const caughtUp = (await status()).topics;
    assert.deepEqual(caughtUp[0]!.groups, [{ group: 'billing', handled: 6, lag: 0, oldestUnhandledAt: null }]);
    assert.equal(caughtUp[0]!.published, 6);
  });
});
