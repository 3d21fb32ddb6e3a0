// The outbox contract (@herald/testkit), unmodified, on the SQLite unit of work and outbox store.
import { describeOutboxContract } from '@herald/testkit';
import { sqliteUnitOfWorkFactory } from './unit-of-work.fixture.ts';

describeOutboxContract('sqlite', sqliteUnitOfWorkFactory);
