// The testkit's universal contracts, run unmodified against Redis: the shared server on
// 127.0.0.1:6379 for the lease-store and transport suites (random prefix, removed at the
// end), and a private redis-server (AOF on) for the broker-restart scenario.
import { after, before, describe, it } from 'node:test';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { describeLeaseStoreContract, describeTransportContract, PrivateServer, reconnectAfterBrokerRestart, serverSkipReason } from '@herald/testkit';
import type { Transport } from '@herald/core';
import { RedisLeaseStore } from './lease-store.ts';
import { createRedisTransport, RedisTransport } from './transport.ts';

const PORT = 6379;
const skip = await serverSkipReason('Redis', PORT);
const prefix = `herald-test-${randomUUID().slice(0, 8)}`;

after(async () => {
  if (skip) return;
  // Remove only this run's keys (never FLUSH the shared server).
  const r = new Redis({ port: PORT, lazyConnect: false });
  let cursor = '0';
  do {
    const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await r.unlink(...keys);
  } while (cursor !== '0');
  await r.quit();
});

describe('redis', { skip }, () => {
  describeLeaseStoreContract('redis (server time)', async () => {
    const store = new RedisLeaseStore({ connection: { port: PORT }, prefix });
    return { store, cleanup: () => store.close() };
  });

  // Leases short enough that partitions move within the suite's 1–2 s waits.
  const timing = { leaseMs: 600, heartbeatMs: 100 } as const;
  const redis = (t: Transport): RedisTransport => {
    if (!(t instanceof RedisTransport)) throw new Error('not a RedisTransport');
    return t;
  };
  describeTransportContract('redis', {
    create: async () => createRedisTransport({ connection: { port: PORT }, prefix, ...timing }),
    // Another transport with its own connections: what another process sees.
    createInGroup: async (first) => createRedisTransport({ connection: { port: redis(first).redis.options.port ?? PORT }, prefix, ...timing }),
  });
});

// The broker-restart scenario against a private redis-server with AOF on (never the shared
// server): the transport must reconnect by itself, and nothing acknowledged may be lost.
describe('redis (private server, restarted)', { skip }, () => {
  let server: PrivateServer | undefined;
  before(async () => {
    server = await PrivateServer.start({
      name: 'redis-server',
      command: 'redis-server',
      args: (port, dir) => ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--save', ''],
    });
  });
  after(async () => {
    await server?.dispose();
  });
  it('reconnect after a broker restart (AOF on, restarted mid-flow)', { timeout: 60_000 }, (t) =>
    reconnectAfterBrokerRestart(t, {
      create: async () => createRedisTransport({ connection: { port: server!.port }, leaseMs: 600, heartbeatMs: 100 }),
      restartBroker: () => server!.restart(),
    }),
  );
});
