// The scheduler contract (@herald/testkit), unmodified, on the PostgreSQL unit of work and stores;
// one fresh schema per scenario, dropped afterwards.
import { describe } from 'node:test';
import { describeSchedulerContract, serverSkipReason } from '@herald/testkit';
import { PG_PORT } from './test-helpers.ts';
import { postgresUnitOfWorkFactory } from './unit-of-work.fixture.ts';

const skip = await serverSkipReason('PostgreSQL', PG_PORT);

describe('postgres scheduler', { skip }, () => {
  describeSchedulerContract('postgres', postgresUnitOfWorkFactory);
});
