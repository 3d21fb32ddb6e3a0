// The same shop, unchanged, on PostgreSQL + NATS JetStream — chosen by the config file alone
// (`"backend": { "kind": "postgres", … }`, `"transport": { "kind": "nats", … }`): a schema and a
// NATS stream prefix of its own, removed afterwards. SHOP_PG_SECONDS under load (default 15) at SHOP_PG_RATE orders/s (default 8).
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { serverSkipReason } from '@herald/testkit';
import pg from 'pg';
import { runShopScenario } from './scenario.ts';

const PG_URL = process.env.SHOP_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const NATS = process.env.SHOP_NATS ?? '127.0.0.1:4222';
const seconds = Number(process.env.SHOP_PG_SECONDS ?? 15);
const skip = (await serverSkipReason('PostgreSQL', 5432)) ?? (await serverSkipReason('NATS', 4222));

/** Deletes the NATS streams (and the lease bucket) of `prefix`. */
async function dropNats(prefix: string): Promise<void> {
  const nc = await connect({ servers: NATS, noAsyncTraces: true });
  try {
    const jsm = await jetstreamManager(nc);
    const names: string[] = [];
    for await (const n of jsm.streams.names()) if (n.startsWith(`${prefix.toUpperCase()}_`) || n === `KV_${prefix}_leases`) names.push(n);
    for (const n of names) await jsm.streams.delete(n).catch(() => {});
  } finally {
    await nc.close();
  }
}

test(`the shop on PostgreSQL + NATS JetStream under load for ${seconds} s, by configuration alone`, { skip, timeout: (seconds + 180) * 1000 }, async (t) => {
  const id = randomUUID().replaceAll('-', '').slice(0, 10);
  const schema = `shop_${id}`;
  const prefix = `shop${id}`;
  const dir = mkdtempSync(join(tmpdir(), 'herald-shop-pg-'));
  t.after(async () => {
    rmSync(dir, { recursive: true, force: true });
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await client.end();
    await dropNats(prefix);
  });
  await runShopScenario({
    dir,
    backend: { kind: 'postgres', url: PG_URL, schema },
    transport: { kind: 'nats', servers: NATS },
    env: { HERALD_NATS_PREFIX: prefix },
    seconds,
    rate: Number(process.env.SHOP_PG_RATE ?? 8),
    // the compensation path is the SQLite test's; here every order waiting for Shipping ships
    shippingTimeoutMs: 120_000,
  });
});
