/**
 * A child process for the direct-mode unit of work tests (not exported), forked with
 * `forkChild` (testkit); its arguments come as a JSON array in HERALD_FIXTURE_ARGS:
 *
 *   consume <path> <topic> <group>   subscribes with the SQLite transport; sends
 *                                    { type: 'delivery', id, key, partition, position } per
 *                                    delivery (acked); closes on { type: 'close' }
 *   write <path> <topic>             16 callers loop on `uow.withTransaction` in direct mode, each
 *                                    inserting orders(id) and publishing one message with that id;
 *                                    sends { type: 'committed', id } after each commit, until killed
 *
 * The parent creates the `orders` table before forking.
 */
import { createEnvelope } from '@herald/core';
import { createSqliteTransport } from './transport.ts';
import { createSqliteUnitOfWork } from './unit-of-work.ts';

const [mode, path, topic, group] = JSON.parse(process.env.HERALD_FIXTURE_ARGS ?? '[]') as string[];
const keepAlive = setInterval(() => {}, 1000);
const send = (m: Record<string, unknown>): void => {
  process.send!(m);
};
const transport = createSqliteTransport({ path: path!, pollMs: 5, leaseMs: 2000 });

if (mode === 'consume') {
  const sub = transport.subscribe(topic!, { group: group! });
  process.on('message', (m: { type?: string }) => {
    if (m.type !== 'close') return;
    void transport.close({ timeoutMs: 500 }).finally(() => {
      clearInterval(keepAlive);
      process.disconnect();
    });
  });
  send({ type: 'started' });
  for await (const d of sub) {
    send({ type: 'delivery', id: d.envelope?.id, key: d.key, partition: d.partition, position: d.position });
    d.ack();
  }
} else if (mode === 'write') {
  const uow = createSqliteUnitOfWork({ path: path!, transport });
  const insert = uow.database.db.prepare('INSERT INTO orders (id) VALUES (?)');
  let n = 0;
  send({ type: 'started' });
  const loop = async (): Promise<void> => {
    for (;;) {
      const id = `o${n++}`;
      await uow.withTransaction((tx) => {
        insert.run(id);
        tx.publish(topic!, { envelope: createEnvelope({ type: 'order.placed', source: 'direct-crash', id, data: { id }, partitionkey: `k${n % 8}` }) });
      });
      send({ type: 'committed', id });
    }
  };
  await Promise.all(Array.from({ length: 16 }, loop));
} else {
  throw new Error(`unknown mode ${mode}`);
}
