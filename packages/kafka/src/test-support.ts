/**
 * Test support shared by this package's suites: where the brokers are (KAFKA_BROKERS, else a
 * librdkafka mock cluster started per test file) and consumer timings that suit each.
 */
import { after } from 'node:test';
import { serversRequired } from '@herald/testkit';
import { createKafkaTransport, type KafkaTransport, type KafkaTransportOptions } from './kafka-transport.ts';
import type { KafkaConsumerTuning } from './kafka-subscription.ts';
import { kcatAvailable, type MockCluster, startMockCluster } from './mock-cluster.ts';

/** Brokers of a real cluster, from `KAFKA_BROKERS` (comma-separated); undefined: use the mock. */
export const externalBrokers: readonly string[] | undefined = process.env.KAFKA_BROKERS ? process.env.KAFKA_BROKERS.split(',').map((s) => s.trim()).filter(Boolean) : undefined;

/**
 * Group timings. The librdkafka 2.0.2 mock holds a new group's first JoinGroup 3 000 ms and
 * expels members whose session ends meanwhile, so sessions must exceed 3 s there; its later
 * rebalances then take session − 1 000 ms. A real broker's default `group.min.session.timeout.ms`
 * is 6 000; rebalances there end as soon as every member has rejoined.
 */
export const TEST_TUNING: KafkaConsumerTuning = externalBrokers
  ? { sessionTimeoutMs: 6000, rebalanceTimeoutMs: 3000, heartbeatIntervalMs: 100, maxWaitTimeMs: 100, commitIntervalMs: 10 }
  : { sessionTimeoutMs: 3500, rebalanceTimeoutMs: 5000, heartbeatIntervalMs: 200, maxWaitTimeMs: 100, commitIntervalMs: 10 };

/** Partition count of topics created without one: the mock auto-creates topics with 4. */
export const TEST_PARTITIONS = externalBrokers ? 8 : 4;

/** Why this file cannot reach a broker (a skip reason), or undefined. Throws in CI when kcat is missing. */
export function brokerSkipReason(): string | undefined {
  if (externalBrokers) return undefined;
  if (kcatAvailable()) return undefined;
  const reason = 'kcat (host of the librdkafka mock cluster) is not installed and KAFKA_BROKERS is not set';
  if (serversRequired) throw new Error(`${reason} (servers are required here: CI or HERALD_REQUIRE_SERVERS=1)`);
  return reason;
}

let mock: Promise<MockCluster> | undefined;
// The file-level hook stops the mock (if one was started) after the whole file.
after(async () => {
  if (mock) await (await mock).stop();
});

/** The brokers of this test file: KAFKA_BROKERS, or one mock cluster started on first use and stopped after the file. */
export function brokers(): Promise<readonly string[]> {
  if (externalBrokers) return Promise.resolve(externalBrokers);
  mock ??= startMockCluster();
  return mock.then((m) => m.brokers);
}

/** A transport on this file's brokers with the test timings. */
export async function testTransport(options: Partial<KafkaTransportOptions> = {}): Promise<KafkaTransport> {
  return createKafkaTransport({ brokers: await brokers(), defaultPartitions: TEST_PARTITIONS, consumer: TEST_TUNING, ...options });
}
