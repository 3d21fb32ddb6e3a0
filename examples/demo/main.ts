// `npm start`: a two-service demo on the embedded SQLite backend, each service its own OS
// process sharing one database file. Orders places orders; Shipping consumes them as a consumer
// group, ships them, dead-letters the ones it cannot ship. Then the demo lists the dead letters.
import { fork } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { SqliteDeadLetterStore } from '@herald/sqlite';

const here = new URL('.', import.meta.url).pathname;
const dir = join(process.cwd(), '.herald');
mkdirSync(dir, { recursive: true });
const db = join(dir, 'demo.db');
for (const f of [db, `${db}-wal`, `${db}-shm`]) rmSync(f, { force: true });
const total = Number(process.env.DEMO_ORDERS ?? 2000);
const env = { ...process.env, DEMO_DB: db, DEMO_ORDERS: String(total) };

const state = { published: 0, handled: 0, deadLettered: 0, outOfOrder: 0 };
const start = Date.now();
const draw = (): void => {
  const done = state.handled + state.deadLettered;
  const width = 30;
  const bar = '█'.repeat(Math.round((done / total) * width)).padEnd(width, '░');
  process.stdout.write(`\r  ${bar} published ${String(state.published).padStart(5)}/${total}  shipped ${String(state.handled).padStart(5)}  dead-lettered ${state.deadLettered}  lag ${state.published - done}   `);
};

console.log(`Herald demo — database ${db}`);
console.log('  orders   → publishes shop.order.placed on "orders"');
console.log('  shipping → consumer group "shipping": ships, publishes shop.order.shipped, dead-letters bad addresses\n');

const run = (file: string): Promise<number> =>
  new Promise((resolve, reject) => {
    const child = fork(join(here, file), { env, execArgv: ['--import', 'tsx'] });
    child.on('message', (m: Partial<typeof state>) => {
      Object.assign(state, m);
      draw();
    });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(0) : reject(new Error(`${file} exited with ${code}`))));
  });

await Promise.all([run('shipping-service.ts'), run('orders-service.ts')]);
draw();
const secs = (Date.now() - start) / 1000;
console.log(`\n\n  ${total} orders in ${secs.toFixed(1)} s; shipped ${state.handled}, dead-lettered ${state.deadLettered}, per-key order violations ${state.outOfOrder}`);

const deadLetters = new SqliteDeadLetterStore({ path: db });
const page = await deadLetters.list({ group: 'shipping' }, { limit: 3 });
console.log(`\n  dead letters of group "shipping": ${await deadLetters.count({ group: 'shipping' })}; the first ${page.entries.length}:`);
for (const e of page.entries) console.log(`    #${e.id} ${e.type} key=${e.key} attempts=${e.attempts} — ${e.error.message}`);
await deadLetters.close();
if (state.handled + state.deadLettered !== total || state.outOfOrder !== 0) process.exit(1);
