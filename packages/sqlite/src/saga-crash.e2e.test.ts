// The checkout under crashes on SQLite: the crash loop of @herald/testkit (`runSagaCrashLoop`,
// shared with the PostgreSQL backend). A child process runs the saga, the four participant
// services, the outbox relay and the scheduler on one SQLite file and is SIGKILLed at random
// points, then restarted, while the parent keeps placing orders (ok, declined, out of stock,
// never shipped). Afterwards every order ends in exactly one terminal state with the outcome its
// path implies (a happy-path order may also be compensated at shipping when an outage outlasted
// its shipping timeout — the durable timer fired first; counted and printed), no message was
// lost (every order's final command reached the orders service), no command had an effect twice
// (the services' effect log has one row per command message), and money is conserved (what stays
// charged is exactly what completed orders cost; every reservation of a cancelled order is
// released).
//
//   HERALD_CRASH_RUNS (default 3)    runs, each on a fresh file
//   HERALD_CRASH_ORDERS (default 24) orders per run
//   HERALD_CRASH_KILLS (default 2)   SIGKILLs per run
//   HERALD_CRASH_SEED                seed of the kill points and order mix (default: random, printed)
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { crashLoopSizes, runSagaCrashLoop } from '@herald/testkit';
import { openDatabase } from './database.ts';
import { SqliteDeadLetterStore } from './dead-letter-store.ts';
import { createSqliteSagaStore } from './saga-store.ts';
import { tempDbPath } from './test-helpers.ts';
import { createSqliteTransport } from './transport.ts';

const FIXTURE = fileURLToPath(new URL('./checkout-saga.fixture.ts', import.meta.url));
const sizes = crashLoopSizes({ runs: 3, orders: 24, kills: 2 });

test(`checkout saga under SIGKILL: ${sizes.runs} runs × ${sizes.orders} orders × ${sizes.kills} kills — one terminal state each, nothing lost, nothing twice, money conserved`, { timeout: 60_000 + sizes.runs * 90_000 }, async (t) => {
  const summary = await runSagaCrashLoop({
    ...sizes,
    fixture: FIXTURE,
    openRun: async () => {
      const { path, cleanup } = tempDbPath();
      const transport = createSqliteTransport({ path });
      const store = createSqliteSagaStore({ path });
      const deadLetters = new SqliteDeadLetterStore({ path });
      const db = openDatabase({ path });
      const hasKv = (): boolean => db.read(() => db.statement(`SELECT 1 FROM sqlite_master WHERE name = 'checkout_kv'`).get()) !== undefined;
      return {
        childArgs: [path],
        transport,
        instance: (orderId) => store.get('checkout', orderId),
        record: async (key) => {
          if (!hasKv()) return undefined;
          const r = db.read(() => db.statement('SELECT value FROM checkout_kv WHERE key = ?').get(key)) as { value: string } | undefined;
          return r && JSON.parse(r.value);
        },
        duplicateEffects: async () => ({
          byMessage: db.read(() => db.statement('SELECT service, type, message_id, COUNT(*) AS n FROM checkout_effects GROUP BY service, type, message_id HAVING n > 1').all()),
          byOrder: db.read(() => db.statement('SELECT order_id, type, COUNT(*) AS n FROM checkout_effects GROUP BY order_id, type HAVING n > 1').all()),
        }),
        deadLetterCount: () => deadLetters.count(),
        close: async () => {
          await transport.close();
          store.close();
          deadLetters.close();
          db.close();
          cleanup();
        },
      };
    },
  });
  t.diagnostic(summary.text);
  console.log(summary.text);
});
