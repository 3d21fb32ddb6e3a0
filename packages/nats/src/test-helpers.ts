// Test helpers: a namespace (subject prefix and lease bucket) of its own per test process, so
// suites running at the same time never share streams, and cleanup() removes what one made
// on the shared server.
import { randomUUID } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';

export interface TestNamespace {
  /** Subject prefix; streams are `<PREFIX>_<topic>`. */
  readonly prefix: string;
  readonly leaseBucket: string;
  /** Deletes every stream of the namespace and its lease bucket. */
  cleanup(): Promise<void>;
}

export function testNamespace(servers = '127.0.0.1:4222'): TestNamespace {
  const id = randomUUID().replaceAll('-', '').slice(0, 10);
  const prefix = `ht${id}`;
  const leaseBucket = `ht_leases_${id}`;
  return {
    prefix,
    leaseBucket,
    async cleanup(): Promise<void> {
      const nc = await connect({ servers, noAsyncTraces: true });
      try {
        const jsm = await jetstreamManager(nc);
        const names: string[] = [];
        for await (const n of jsm.streams.names()) if (n.startsWith(`${prefix.toUpperCase()}_`) || n === `KV_${leaseBucket}`) names.push(n);
        for (const n of names) await jsm.streams.delete(n).catch(() => {});
      } finally {
        await nc.close();
      }
    },
  };
}
