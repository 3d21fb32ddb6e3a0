// The saga-store contract (@herald/testkit), unmodified, on PostgreSQL: the store's reads on its
// pool, its writes through the unit of work's transaction; one fresh schema per scenario.
import { describe } from 'node:test';
import { describeSagaStoreContract, serverSkipReason } from '@herald/testkit';
import { PgDatabase } from './database.ts';
import { createPostgresSagaStore } from './saga-store.ts';
import { dropSchema, freshConnection, PG_PORT } from './test-helpers.ts';
import { createPostgresUnitOfWork } from './unit-of-work.ts';

const skip = await serverSkipReason('PostgreSQL', PG_PORT);

describe('postgres saga store', { skip }, () => {
  describeSagaStoreContract('postgres', async () => {
    const connection = freshConnection();
    const database = new PgDatabase(connection);
    const unitOfWork = createPostgresUnitOfWork({ database });
    const store = createPostgresSagaStore({ database });
    await store.migrate();
    return {
      store,
      unitOfWork,
      cleanup: async () => {
        await unitOfWork.close();
        await database.close();
        await dropSchema(connection.schema!);
      },
    };
  });
});
