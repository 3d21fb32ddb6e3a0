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

/** librdkafka 2.0.2 mock: how long a new (empty) group's first JoinGroup is held, ms (fixed). */
export const MOCK_FIRST_JOIN_MS = 3000;

/**
 * Group timings. On the librdkafka 2.0.2 mock (measured, and as its rdkafka_mock_cgrp.c reads):
 * - a new group's first JoinGroup is held MOCK_FIRST_JOIN_MS, and a member whose session ends
 *   while it waits is expelled, so sessions must exceed 3 s: 4 000 ms leaves 1 s to the mock's
 *   1 s session tick;
 * - any later rebalance (a member joins or leaves) elects a leader session − 1 000 ms (3 000 ms)
 *   after it started, whether or not every member has rejoined; members notice it at their next
 *   heartbeat (500 ms), well within that;
 * - offset commits are refused from the moment a rebalance starts, so acks are committed at
 *   once (commitIntervalMs 0): a member may join right after an ack;
 * - a follower's SyncGroup that arrives after the leader's is answered INVALID_REQUEST (that
 *   member then rejoins with a fresh consumer, and its old member lingers for a session): the
 *   leader sends its assignment 250 ms after the join (leaderSyncDelayMs), which the followers'
 *   SyncGroups beat.
 * A real broker's default `group.min.session.timeout.ms` is 6 000; rebalances there end as soon
 * as every member has rejoined.
 */
export const TEST_TUNING: KafkaConsumerTuning = externalBrokers
  ? { sessionTimeoutMs: 6000, rebalanceTimeoutMs: 3000, heartbeatIntervalMs: 100, maxWaitTimeMs: 100, commitIntervalMs: 10 }
  : { sessionTimeoutMs: 4000, rebalanceTimeoutMs: 5000, heartbeatIntervalMs: 500, maxWaitTimeMs: 100, commitIntervalMs: 0, leaderSyncDelayMs: 250 };

/**
 * How long a group may take to form or rebalance on the mock with TEST_TUNING, ms: the slowest
 * case the transport recovers from — a member loses the SyncGroup race anyway (a loaded machine
 * delays its SyncGroup past the leader's) — is the first join (3 000), the lost member's stale
 * session (4 000, seen by the mock's 1 s tick: + 1 000) and the rebalance after it (3 000):
 * 11 000 ms (measured: 10 030), plus 2 000 ms for a loaded machine. Undefined with KAFKA_BROKERS.
 */
export const MOCK_GROUP_WAIT_MS: number | undefined = externalBrokers
  ? undefined
  : MOCK_FIRST_JOIN_MS + TEST_TUNING.sessionTimeoutMs! + 1000 + (TEST_TUNING.sessionTimeoutMs! - 1000) + 2000;

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
