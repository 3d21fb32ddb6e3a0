// The checkout saga under SIGKILL on PostgreSQL: the same crash loop as the SQLite backend's
// (`runSagaCrashLoop` in @herald/testkit). A child process runs the saga runtime, the
// participant services, the outbox relay and the scheduler on one fresh schema of the shared
// server and is SIGKILLed at random points, then restarted, while the parent places orders.
// Afterwards every order ends in exactly one terminal state, nothing is lost, no command has an
// effect twice, money is conserved; kills and recoveries are printed.
//
//   HERALD_CRASH_RUNS (default 1) · HERALD_CRASH_ORDERS (default 16) · HERALD_CRASH_KILLS (default 2) · HERALD_CRASH_SEED
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import type { SagaInstance } from '@herald/eventsourcing';
import { crashLoopSizes, runSagaCrashLoop, serverSkipReason } from '@herald/testkit';
import { PgDatabase } from './database.ts';
import { PostgresDeadLetterStore } from './dead-letter-store.ts';
import { createPostgresSagaStore } from './saga-store.ts';
import { dropSchema, freshConnection, PG_PORT } from './test-helpers.ts';
import { createPostgresTransport } from './transport.ts';

const FIXTURE = fileURLToPath(new URL('./saga-crash.fixture.ts', import.meta.url));
const skip = await serverSkipReason('PostgreSQL', PG_PORT);
const sizes = crashLoopSizes({ runs: 1, orders: 16, kills: 2 });

describe('postgres saga crash loop', { skip }, () => {
  it(`checkout saga under SIGKILL: ${sizes.runs} runs × ${sizes.orders} orders × ${sizes.kills} kills — one terminal state each, nothing lost, nothing twice, money conserved`, { timeout: 60_000 + sizes.runs * 90_000 }, async (t) => {
    const summary = await runSagaCrashLoop({
      ...sizes,
      fixture: FIXTURE,
      openRun: async () => {
        const connection = freshConnection();
        const database = new PgDatabase(connection);
        const transport = createPostgresTransport({ database, pollMs: 50 });
        const store = createPostgresSagaStore({ database });
        const deadLetters = new PostgresDeadLetterStore({ database });
        const tableExists = async (): Promise<boolean> => (await database.query(`SELECT to_regclass('checkout_kv') IS NOT NULL AS ok`)).rows[0]!.ok === true;
        return {
          childArgs: [connection.schema!],
          transport,
          instance: (orderId): Promise<SagaInstance | undefined> => store.get('checkout', orderId),
          record: async (key) => {
            if (!(await tableExists())) return undefined;
            const r = await database.query<{ value: string }>('SELECT value FROM checkout_kv WHERE key = $1', [key]);
            return r.rows[0] ? JSON.parse(r.rows[0].value) : undefined;
          },
          duplicateEffects: async () => ({
            byMessage: (await database.query('SELECT service, type, message_id, count(*) AS n FROM checkout_effects GROUP BY service, type, message_id HAVING count(*) > 1')).rows,
            byOrder: (await database.query('SELECT order_id, type, count(*) AS n FROM checkout_effects GROUP BY order_id, type HAVING count(*) > 1')).rows,
          }),
          deadLetterCount: () => deadLetters.count(),
          close: async () => {
            await transport.close();
            await deadLetters.close();
            await database.close();
            await dropSchema(connection.schema!);
          },
        };
      },
    });
    t.diagnostic(summary.text);
    console.log(`postgres ${summary.text}`);
  });
});
