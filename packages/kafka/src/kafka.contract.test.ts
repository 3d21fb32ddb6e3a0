// The testkit's transport contract, unmodified, against Kafka.
//
// With KAFKA_BROKERS set it runs against that cluster (configure the broker with
// group.initial.rebalance.delay.ms=0: the contract waits at most 2 s for a group to form).
//
// Against the librdkafka mock cluster (kcat) it does not run by default: the mock's group
// coordinator (librdkafka 2.0.2) completes a new group's first join only after a fixed 3 000 ms
// and any later rebalance after session.timeout.ms − 1 000 ms, with sessions that must exceed
// 3 000 ms — every scenario waits at most 2 s for its members' assignment, so none can pass
// there. The mock also has no CreateTopics (fixed partition counts). HERALD_KAFKA_CONTRACT_ON_MOCK=1
// runs it against the mock anyway, to see exactly that. kafka.int.test.ts covers the same
// behaviours on the mock with waits sized to its group timings.
import { describe } from 'node:test';
import type { Transport } from '@herald/core';
import { describeTransportContract } from '@herald/testkit';
import { brokerSkipReason, externalBrokers, testTransport } from './test-support.ts';

const onMockOptIn = process.env.HERALD_KAFKA_CONTRACT_ON_MOCK === '1';
const skip =
  brokerSkipReason() ??
  (externalBrokers || onMockOptIn
    ? undefined
    : 'KAFKA_BROKERS is not set, and the librdkafka mock cannot form a consumer group within the contract’s 2 s waits (first join fixed at 3 000 ms; rebalances take session.timeout.ms − 1 000 ms) nor create topics with a chosen partition count; see kafka.int.test.ts for the mock run');

describe('kafka', { skip }, () => {
  describeTransportContract(externalBrokers ? 'kafka (KAFKA_BROKERS)' : 'kafka (librdkafka mock cluster)', {
    create: () => testTransport(),
    // Another client (its own connections), as another process would have.
    createInGroup: async (_first: Transport) => testTransport(),
  });
});
