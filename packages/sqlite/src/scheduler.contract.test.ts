// The scheduler contract (@herald/testkit), unmodified, on the SQLite scheduler store.
import { describeSchedulerContract } from '@herald/testkit';
import { sqliteUnitOfWorkFactory } from './unit-of-work.fixture.ts';

describeSchedulerContract('sqlite', sqliteUnitOfWorkFactory);
