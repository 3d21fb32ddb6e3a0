// The checkout under crashes on SQLite: a child process runs the saga, the four participant
// services, the outbox relay and the scheduler on one file (checkout-saga.fixture.ts) and is
// SIGKILLed at random points, then restarted, while the parent keeps placing orders. The loop and
// its invariants (one terminal state per order with its path's outcome, nothing lost, no command
// effect twice, money conserved, no dead letter) are the testkit's `runSagaCrashLoop`; this file
// supplies the SQLite readers. It runs twice: the unit of work publishing through the outbox and
// relay, and in direct mode (appending to the transport's log inside its transactions).
//
//   HERALD_CRASH_RUNS (default 3)  HERALD_CRASH_ORDERS (default 24)  HERALD_CRASH_KILLS (default 2)  HERALD_CRASH_SEED
import assert from 'node:assert/strict';
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

for (const mode of ['outbox', 'direct'] as const) test(`checkout saga under SIGKILL on SQLite (${mode === 'outbox' ? 'outbox and relay' : 'direct mode'}): ${sizes.runs} runs × ${sizes.orders} orders × ${sizes.kills} kills — one terminal state each, nothing lost, nothing twice, money conserved`, { timeout: 60_000 + sizes.runs * 90_000 }, async (t) => {
  const outboxRows: number[] = [];
  const summary = await runSagaCrashLoop({
    fixture: FIXTURE,
    ...sizes,
    openRun: async () => {
      const { path, cleanup } = tempDbPath();
      const transport = createSqliteTransport({ path });
      const store = createSqliteSagaStore({ path });
      const deadLetters = new SqliteDeadLetterStore({ path });
      const db = openDatabase({ path });
      const all = (sql: string): unknown[] => db.read(() => db.statement(sql).all());
      return {
        childArgs: [path, mode],
        transport,
        instance: (orderId) => store.get('checkout', orderId),
        record: async (key) => {
          // The first child creates checkout_kv: before that there is nothing to read.
          const exists = db.read(() => db.statement("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'checkout_kv'").get());
          if (!exists) return undefined;
          const r = db.read(() => db.statement('SELECT value FROM checkout_kv WHERE key = ?').get(key)) as { value: string } | undefined;
          return r && JSON.parse(r.value);
        },
        duplicateEffects: async () => ({
          byMessage: all('SELECT service, type, message_id, COUNT(*) AS n FROM checkout_effects GROUP BY service, type, message_id HAVING n > 1'),
          byOrder: all('SELECT order_id, type, COUNT(*) AS n FROM checkout_effects GROUP BY order_id, type HAVING n > 1'),
        }),
        deadLetterCount: () => deadLetters.count(),
        close: async () => {
          // Which path the messages took: outbox rows are kept an hour after they are sent.
          const hasOutbox = db.read(() => db.statement("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'herald_outbox'").get());
          outboxRows.push(hasOutbox ? (db.read(() => db.statement('SELECT COUNT(*) AS n FROM herald_outbox').get()) as { n: number }).n : 0);
          await transport.close();
          store.close();
          deadLetters.close();
          db.close();
          cleanup();
        },
      };
    },
  });
  if (mode === 'direct') assert.deepEqual(outboxRows, outboxRows.map(() => 0), 'direct mode writes no outbox rows: the saga and the services published straight to the log');
  else assert.ok(outboxRows.every((n) => n > 0), `the outbox carried the messages in every run (rows: ${outboxRows.join(', ')})`);
  t.diagnostic(summary.text);
  console.log(summary.text);
});
