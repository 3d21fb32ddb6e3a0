// The event-store contract against the in-memory store (eventsourcing cannot depend on the
// testkit, so its contract run lives here).
import { InMemoryEventStore } from '@herald/eventsourcing';
import { describeEventStoreContract } from './index.ts';

describeEventStoreContract('memory', async ({ clock, catalog }) => {
  const store = new InMemoryEventStore({ clock, ...(catalog ? { catalog } : {}) });
  return {
    store,
    reopen: async (o) => new InMemoryEventStore({ clock, sharedWith: store, ...o }),
    cleanup: () => store.close(),
  };
});
