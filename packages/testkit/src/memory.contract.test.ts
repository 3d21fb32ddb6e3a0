import { MemoryDeadLetterStore, MemoryLeaseStore } from '@herald/core';
import { describeDeadLetterContract, describeLeaseStoreContract, ManualClock } from './index.ts';

describeLeaseStoreContract('memory (manual clock)', async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore({ clock });
  return { store, clock, cleanup: () => store.close() };
});

describeLeaseStoreContract('memory (real time)', async () => {
  const store = new MemoryLeaseStore();
  return { store, cleanup: () => store.close() };
});

describeDeadLetterContract('memory', async () => {
  const store = new MemoryDeadLetterStore();
  return { store, cleanup: () => store.close() };
});
