// The saga-store contract against the in-memory store on MemoryUnitOfWork (eventsourcing cannot
// depend on the testkit, so its contract run lives here).
import { MemoryUnitOfWork } from '@herald/core';
import { MemorySagaStore } from '@herald/eventsourcing';
import { describeSagaStoreContract } from './index.ts';

describeSagaStoreContract('memory', async () => ({
  store: new MemorySagaStore(),
  unitOfWork: new MemoryUnitOfWork(),
  cleanup: async () => {},
}));
