// The testkit's transport contract, unmodified, against Kafka: against the librdkafka mock cluster (kcat, one per
// test file) by default — so in CI — and against a real cluster when KAFKA_BROKERS is set (configure its brokers
// with group.initial.rebalance.delay.ms=0: the contract then waits its default 2 s for groups).
//
// On the mock (group timings in test-support.ts):
// - groupWaitMs is MOCK_GROUP_WAIT_MS (13 000 ms): the mock holds a new group's first join 3 000 ms and every
//   later rebalance session − 1 000 ms (3 000 ms), and a member that loses the mock's SyncGroup race anyway
//   rejoins while its old member lingers for a session;
// - cannotChoosePartitions: the mock has no CreateTopics, so the partition-count scenario skips;
// - one scenario is skipped, by name: it waits for a second new group to form with the suite's fixed 2 000 ms
//   bound instead of groupWaitMs (MOCK_ONLY_GAPS says where), and the mock's coordinator alone takes 3 000 ms to
//   answer a new group's first join. HERALD_KAFKA_CONTRACT_ALL=1 runs it anyway (to see it fail on that bound);
//   it passes on the mock once that wait uses groupWaitMs (checked with the testkit patched so), and
//   kafka.int.test.ts checks the same behaviour there with group waits of its own.
// Every other scenario runs as the testkit wrote it: same functions, options, titles and 30 s timeouts as
// describeTransportContract (used as is with KAFKA_BROKERS), CONTRACT_STRESS included.
import { describe, it } from 'node:test';
import type { Transport } from '@herald/core';
import { describeTransportContract, routerScenarios, stressCount, type TransportContractOptions, transportScenarios } from '@herald/testkit';
import { brokerSkipReason, externalBrokers, MOCK_GROUP_WAIT_MS, testTransport } from './test-support.ts';

const skip = brokerSkipReason();

const options: TransportContractOptions = {
  create: () => testTransport(),
  // Another client (its own connections), as another process would have.
  createInGroup: async (_first: Transport) => testTransport(),
  ...(MOCK_GROUP_WAIT_MS !== undefined ? { groupWaitMs: MOCK_GROUP_WAIT_MS } : {}),
  ...(externalBrokers ? {} : { cannotChoosePartitions: 'the librdkafka mock cluster has no CreateTopics: it auto-creates every topic with 4 partitions' }),
};

/** Scenarios that wait for a group to form or rebalance with the suite's fixed 2 s bound, not groupWaitMs (a testkit gap), and where. */
const MOCK_ONLY_GAPS: Readonly<Record<string, string>> = {
  'a new group replays from the start; latest starts at the head':
    'cannot pass on the librdkafka mock: the testkit bounds its wait for "a second new group reads it from the start too" (transport-contract.ts, newGroupReplaysFromStart), right after subscribing a new group, at a fixed 2 000 ms, not groupWaitMs, and the mock answers a new group’s first join only after a fixed 3 000 ms',
};

for (const title of Object.keys(MOCK_ONLY_GAPS)) {
  if (!(title in transportScenarios) && !(title in routerScenarios)) throw new Error(`kafka.contract.test.ts: no contract scenario is titled "${title}"`);
}

describe('kafka', { skip }, () => {
  if (externalBrokers) {
    describeTransportContract('kafka (KAFKA_BROKERS)', options);
    return;
  }
  // describeTransportContract's registration, with the scenarios above skipped (unless HERALD_KAFKA_CONTRACT_ALL=1).
  const all = process.env.HERALD_KAFKA_CONTRACT_ALL === '1';
  const runs = stressCount();
  describe('Transport contract: kafka (librdkafka mock cluster)', () => {
    for (let r = 1; r <= runs; r++) {
      const register = (): void => {
        for (const [level, scenarios] of [['transport', transportScenarios], ['router', routerScenarios]] as const) {
          describe(level, () => {
            for (const [title, scenario] of Object.entries(scenarios)) {
              const gap = all ? undefined : MOCK_ONLY_GAPS[title];
              it(title, { timeout: 30_000, ...(gap ? { skip: gap } : {}) }, (t) => scenario(t, options));
            }
          });
        }
      };
      if (runs === 1) register();
      else describe(`run ${r} of ${runs}`, register);
    }
  });
});
