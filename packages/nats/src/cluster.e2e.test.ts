// A three-node JetStream cluster on loopback (private nats-server processes, own ports and
// store folders). An R3 topic keeps working when the node that leads its stream — and that both
// clients are connected to — is SIGKILLed mid-stream: the clients reconnect to a survivor, the
// stream elects a new leader, publishing and consuming go on, and every acknowledged publish
// is consumed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createEnvelope, type Delivery } from '@herald/core';
import { freePort, PrivateServer, serverSkipReason, uniqueName } from '@herald/testkit';
import { jetstreamManager } from '@nats-io/jetstream';
import { createNatsTransport, type NatsTransport, streamName } from './index.ts';

// The shared server is not used here, but its absence means this machine has no NATS set up.
const skip = await serverSkipReason('NATS JetStream', 4222);

async function startCluster(): Promise<PrivateServer[]> {
  const clusterPorts = await Promise.all([0, 1, 2].map(() => freePort()));
  const routes = clusterPorts.map((p) => `nats://127.0.0.1:${p}`).join(',');
  const servers: PrivateServer[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      servers.push(
        await PrivateServer.start({
          name: `nats-node-${i}`,
          command: 'nats-server',
          args: (port, dir) => ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir, '--server_name', `n${i}`, '--cluster_name', 'herald-test', '--cluster', `nats://127.0.0.1:${clusterPorts[i]}`, '--routes', routes],
        }),
      );
    }
  } catch (e) {
    await Promise.all(servers.map((s) => s.dispose()));
    throw e;
  }
  return servers;
}

async function until<T>(what: string, timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms: ${what} (last error: ${String(last)})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

test('JetStream cluster: an R3 topic keeps working when a node is SIGKILLed mid-stream; every acknowledged publish is consumed', { skip, timeout: 120_000 }, async (t) => {
  const nodes = await startCluster();
  const transports: NatsTransport[] = [];
  try {
    const base = { replicas: 3, leaseMs: 1000, heartbeatMs: 250, publishTimeoutMs: 2000, fetchExpiresMs: 2000, leaseBucket: 'herald_cluster_leases' };
    // JetStream needs a meta leader before anything can be created.
    const setup = await until('the cluster to elect a JetStream meta leader', 30_000, () => createNatsTransport({ ...base, servers: nodes.map((n) => `127.0.0.1:${n.port}`) }));
    transports.push(setup);
    const topic = uniqueName('cluster');
    await until('the R3 stream to be created', 20_000, () => setup.ensureTopic(topic, { partitions: 4 }));
    const jsm = await jetstreamManager(setup.connection);
    const leaderName = await until('the stream to have a leader', 20_000, async () => {
      const leader = (await jsm.streams.info(streamName('herald', topic))).cluster?.leader;
      if (!leader) throw new Error('no leader yet');
      return leader;
    });
    const leader = Number(leaderName.slice(1));
    // Both clients connect to the stream leader first (no shuffling), the others as fallbacks.
    const servers = [leader, ...[0, 1, 2].filter((i) => i !== leader)].map((i) => `127.0.0.1:${nodes[i]!.port}`);
    const options = { ...base, servers, connectOptions: { noRandomize: true } };
    const publisher = await createNatsTransport(options);
    transports.push(publisher);
    const consumerSide = await createNatsTransport(options);
    transports.push(consumerSide);

    const received = new Map<string, number>();
    let resyncs = 0;
    const sub = consumerSide.subscribe(topic, {
      group: uniqueName('g'),
      onError: (e) => {
        if (/lost in transit/.test((e as Error).message)) resyncs++;
      },
    });
    const reading = (async () => {
      for await (const d of sub as AsyncIterable<Delivery>) {
        const id = d.envelope?.id ?? `?${d.position}`;
        received.set(id, (received.get(id) ?? 0) + 1);
        d.ack();
      }
    })();
    await until('the subscriber to own every partition', 20_000, async () => {
      if (sub.assignment().length !== 4) throw new Error(`owns [${sub.assignment().join(',')}]`);
    });

    const N = 3000;
    const acked: string[] = [];
    let failedAttempts = 0;
    let killedNode = -1;
    const t0 = Date.now();
    for (let i = 0; i < N; i += 20) {
      const batch = Array.from({ length: Math.min(20, N - i) }, (_, j) => {
        const k = `k${(i + j) % 16}`;
        return { key: k, envelope: createEnvelope({ id: `${topic}-${i + j}`, type: 'cluster.item', source: 'cluster-test', data: { k, n: i + j } }) };
      });
      // Retry until acknowledged (ids de-duplicate a retried batch); give up only after 30 s.
      await until(`publish of batch ${i}`, 30_000, async () => {
        try {
          return await publisher.publish(topic, batch);
        } catch (e) {
          failedAttempts++;
          throw e;
        }
      });
      acked.push(...batch.map((m) => m.envelope.id));
      if (i === 1000) {
        // Kill the stream leader, which both clients are connected to.
        const port = consumerSide.connection.info?.port;
        assert.equal(port, nodes[leader]!.port, 'the consumer is connected to the stream leader');
        assert.equal(publisher.connection.info?.port, nodes[leader]!.port, 'the publisher is connected to the stream leader');
        killedNode = leader;
        await nodes[killedNode]!.stop('SIGKILL');
        t.diagnostic(`SIGKILLed node n${killedNode} (stream leader, port ${port}) after ${acked.length} acknowledged publishes`);
      }
    }
    const publishMs = Date.now() - t0;
    await until('every acknowledged publish to be consumed', 30_000, async () => {
      const missing = acked.filter((id) => !received.has(id));
      if (missing.length > 0) throw new Error(`${missing.length} missing, e.g. ${missing.slice(0, 5).join(', ')}`);
    });
    const duplicates = [...received.values()].reduce((a, n) => a + n - 1, 0);
    const reconnectedTo = consumerSide.connection.info?.port;
    assert.notEqual(reconnectedTo, nodes[killedNode]!.port, 'the consumer reconnected to a surviving node');
    assert.notEqual(publisher.connection.info?.port, nodes[killedNode]!.port, 'the publisher reconnected to a surviving node');
    const newLeader = (await jsm.streams.info(streamName('herald', topic))).cluster?.leader;
    assert.ok(newLeader && newLeader !== leaderName, `the stream has a new leader (was ${leaderName}, now ${newLeader})`);
    const summary = `${acked.length} acknowledged publishes (R3, 4 partitions), stream leader n${killedNode} SIGKILLed after 1020 (new leader ${newLeader}); ${failedAttempts} publish attempt(s) failed and were retried; all consumed, ${duplicates} duplicate deliveries, ${resyncs} partition re-read(s) after deliveries lost in transit; publishing took ${publishMs} ms`;
    t.diagnostic(summary);
    console.log(`# nats cluster: ${summary}`);
    await sub.close({ timeoutMs: 1000 });
    await reading;
  } finally {
    for (const tr of transports) await tr.close({ timeoutMs: 500 }).catch(() => {});
    await Promise.all(nodes.map((n) => n.dispose()));
  }
});
