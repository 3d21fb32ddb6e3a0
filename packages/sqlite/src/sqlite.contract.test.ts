// The testkit's universal contracts, run unmodified against the SQLite backend.
import { after } from 'node:test';
import type { Transport } from '@herald/core';
import { describeDeadLetterContract, describeLeaseStoreContract, describeTransportContract, ManualClock } from '@herald/testkit';
import { SqliteDeadLetterStore } from './dead-letter-store.ts';
import { SqliteLeaseStore } from './lease-store.ts';
import { tempDbPath } from './test-helpers.ts';
import { createSqliteTransport, SqliteTransport } from './transport.ts';

const files: Array<() => void> = [];
after(() => {
  for (const cleanup of files) cleanup();
});

function freshPath(): string {
  const { path, cleanup } = tempDbPath();
  files.push(cleanup);
  return path;
}

describeLeaseStoreContract('sqlite (manual clock)', async () => {
  const clock = new ManualClock();
  const store = new SqliteLeaseStore({ path: freshPath(), clock });
  return { store, clock, cleanup: () => store.close() };
});

describeLeaseStoreContract('sqlite (real time)', async () => {
  const store = new SqliteLeaseStore({ path: freshPath() });
  return { store, cleanup: () => store.close() };
});

describeDeadLetterContract('sqlite', async () => {
  const store = new SqliteDeadLetterStore({ path: freshPath() });
  return { store, cleanup: () => store.close() };
});

// Leases short enough that partitions move within the suite's 1–2 s waits.
const timing = { leaseMs: 600, heartbeatMs: 100, pollMs: 20 } as const;

function sqlite(t: Transport): SqliteTransport {
  if (!(t instanceof SqliteTransport)) throw new Error('not a SqliteTransport');
  return t;
}

describeTransportContract('sqlite', {
  create: async () => createSqliteTransport({ path: freshPath(), ...timing }),
  // Another connection to the same file: what another process sees.
  createInGroup: async (first) => createSqliteTransport({ path: sqlite(first).database.path, ...timing }),
  deadLetters: (t) => new SqliteDeadLetterStore({ database: sqlite(t).database }),
});
