// The saga-store contract on SQLite: the store's reads on its own connection, its writes
// through the unit of work's transaction on the same file.
import { describeSagaStoreContract } from '@herald/testkit';
import { createSqliteSagaStore } from './saga-store.ts';
import { tempDbPath } from './test-helpers.ts';
import { createSqliteUnitOfWork } from './unit-of-work.ts';

describeSagaStoreContract('sqlite', async () => {
  const { path, cleanup } = tempDbPath();
  const unitOfWork = createSqliteUnitOfWork({ path });
  const store = createSqliteSagaStore({ path });
  return {
    store,
    unitOfWork,
    cleanup: async () => {
      store.close();
      await unitOfWork.close();
      cleanup();
    },
  };
});
