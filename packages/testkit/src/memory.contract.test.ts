import { MemoryDeadLetterStore, MemoryLeaseStore, MemoryTransport } from '@herald/core';
import { describeDeadLetterContract, describeLeaseStoreContract, describeTransportContract, ManualClock } from './index.ts';

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

describeTransportContract('memory', {
  create: async () => new MemoryTransport(),
  // Members of one group live in one MemoryTransport: the peer is the same instance.
  createInGroup: async (first) => first,
  deadLetters: () => new MemoryDeadLetterStore(),
});
