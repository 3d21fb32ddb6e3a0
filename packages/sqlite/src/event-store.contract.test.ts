// The testkit's event-store contract, run unmodified against the SQLite event store: one fresh
// database file per scenario; `reopen` opens a second connection on the same file.
import { after } from 'node:test';
import { describeEventStoreContract } from '@herald/testkit';
import { createSqliteEventStore } from './event-store.ts';
import { tempDbPath } from './test-helpers.ts';

const files: Array<() => void> = [];
after(() => {
  for (const cleanup of files) cleanup();
});

describeEventStoreContract('sqlite', async ({ clock, catalog }) => {
  const { path, cleanup } = tempDbPath();
  files.push(cleanup);
  const store = createSqliteEventStore({ path, clock, ...(catalog ? { catalog } : {}) });
  return {
    store,
    reopen: async (o) => createSqliteEventStore({ path, clock, ...o }),
    cleanup: () => store.close(),
  };
});
