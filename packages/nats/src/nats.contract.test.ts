// The testkit's universal contracts, run unmodified against NATS JetStream: the shared server
// on 127.0.0.1:4222 for everything, and a private nats-server (restarted mid-flow) for the
// reconnect scenario.
import { after, before, describe, it } from 'node:test';
import type { Transport } from '@herald/core';
import { describeLeaseStoreContract, describeTransportContract, ManualClock, PrivateServer, reconnectAfterBrokerRestart, serverSkipReason } from '@herald/testkit';
import { createNatsLeaseStore, createNatsTransport, type NatsTransportOptions } from './index.ts';
import { testNamespace } from './test-helpers.ts';

const skip = await serverSkipReason('NATS JetStream', 4222);
// Streams and lease bucket of this run only (removed at the end).
const ns = testNamespace();
after(() => (skip ? undefined : ns.cleanup()));

// Leases short enough that partitions move within the suite's 1–2 s waits.
const timing = { leaseMs: 600, heartbeatMs: 100, fetchExpiresMs: 2000, commitIntervalMs: 5, prefix: ns.prefix, leaseBucket: ns.leaseBucket } as const satisfies NatsTransportOptions;

describe('nats', { skip }, () => {
  describeLeaseStoreContract('nats kv (manual clock)', async () => {
    const clock = new ManualClock();
    const store = await createNatsLeaseStore({ clock, bucket: ns.leaseBucket });
    return { store, clock, cleanup: () => store.close() };
  });

  describeLeaseStoreContract('nats kv (real time)', async () => {
    const store = await createNatsLeaseStore({ bucket: ns.leaseBucket });
    return { store, cleanup: () => store.close() };
  });

  describeTransportContract('nats', {
    create: async () => createNatsTransport({ ...timing }),
    // Another connection: what another process sees.
    createInGroup: async () => createNatsTransport({ ...timing }),
    // A rebalance is several KV round trips per member and partition; on a loaded 2-core CI
    // machine (other suites in parallel) one took over 2 s once. Only group waits get longer.
    groupWaitMs: 5000,
  });

  describe('reconnect (private nats-server, restarted mid-flow)', () => {
    let server: PrivateServer | undefined;
    before(async () => {
      server = await PrivateServer.start({ name: 'nats-server', command: 'nats-server', args: (port, dir) => ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir] });
    });
    after(async () => {
      await server?.dispose();
    });
    it('reconnect after a broker restart', { timeout: 30_000 }, (t) =>
      reconnectAfterBrokerRestart(t, {
        create: async (): Promise<Transport> => createNatsTransport({ ...timing, servers: `127.0.0.1:${server!.port}`, publishTimeoutMs: 1000, connectOptions: { reconnectTimeWait: 100, reconnectJitter: 50 } }),
        restartBroker: () => server!.restart(),
      }),
    );
  });
});
