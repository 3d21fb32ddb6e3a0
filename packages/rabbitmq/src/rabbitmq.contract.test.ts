// The testkit's universal transport contract, run unmodified against the shared RabbitMQ.
// restartBroker is not given here: reconnect.e2e.test.ts runs that scenario on a private node.
import { after, describe } from 'node:test';
import { describeTransportContract, serverSkipReason } from '@herald/testkit';
import { RABBITMQ_PORT, TestBroker, testNamespace } from './test-helpers.ts';

const skip = await serverSkipReason('RabbitMQ', RABBITMQ_PORT);
const broker = new TestBroker(testNamespace('contract'), { defaultPartitions: 4 });
after(() => broker.cleanup());

describe('rabbitmq', { skip }, () => {
  describeTransportContract('rabbitmq', {
    create: () => broker.reapAndCreate(),
    // Another connection: what another process sees.
    createInGroup: async () => broker.create(),
  });
});
