// The inbox contract (@herald/testkit), unmodified, on the SQLite unit of work.
import { describeInboxContract } from '@herald/testkit';
import { sqliteUnitOfWorkFactory } from './unit-of-work.fixture.ts';

describeInboxContract('sqlite', sqliteUnitOfWorkFactory);
