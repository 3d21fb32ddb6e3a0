// The testkit's transport contract, unmodified, against Kafka: against the librdkafka mock cluster (kcat, one per
// test file) by default — so in CI — and against a real cluster when KAFKA_BROKERS is set (configure its brokers
// with group.initial.rebalance.delay.ms=0: the contract then waits its default 2 s for groups).
//
// On the mock (group timings in test-support.ts):
// - groupWaitMs is MOCK_GROUP_WAIT_MS (13 000 ms): the mock holds a new group's first join 3 000 ms and every
//   later rebalance session − 1 000 ms (3 000 ms), and a member that loses the mock's SyncGroup race anyway
//   rejoins while its old member lingers for a session;
// - cannotChoosePartitions: the mock has no CreateTopics, so the partition-count scenario skips with that reason.
import { describe } from 'node:test';
import type { Transport } from '@herald/core';
import { describeTransportContract, type TransportContractOptions } from '@herald/testkit';
import { brokerSkipReason, externalBrokers, MOCK_GROUP_WAIT_MS, testTransport } from './test-support.ts';

const skip = brokerSkipReason();

const options: TransportContractOptions = {
  create: () => testTransport(),
  // Another client (its own connections), as another process would have.
  createInGroup: async (_first: Transport) => testTransport(),
  ...(MOCK_GROUP_WAIT_MS !== undefined ? { groupWaitMs: MOCK_GROUP_WAIT_MS } : {}),
  ...(externalBrokers ? {} : { cannotChoosePartitions: 'the librdkafka mock cluster has no CreateTopics: it auto-creates every topic with 4 partitions' }),
};

describe('kafka', { skip }, () => {
  describeTransportContract(externalBrokers ? 'kafka (KAFKA_BROKERS)' : 'kafka (librdkafka mock cluster)', options);
});
