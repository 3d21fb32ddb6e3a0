/**
 * A child process for the multi-process tests (not exported): another OS process opening the
 * same database file.
 *
 *   publish <path> <topic> <prefix> <count> <batch>   publishes, prints "done", exits
 *   consume <path> <topic> <group> <memberId>         prints one JSON line per delivery (acked) and
 *                                                     {"assigned":[…]} on every change; "stop" on stdin closes it
 */
import { createInterface } from 'node:readline';
import { createEnvelope } from '@herald/core';
import { createSqliteTransport } from './transport.ts';

const [mode, path, topic, ...rest] = process.argv.slice(2);
const keepAlive = setInterval(() => {}, 1000);
const transport = createSqliteTransport({ path: path!, leaseMs: 600, heartbeatMs: 100, pollMs: 10 });

if (mode === 'publish') {
  const [prefix, countText, batchText] = rest;
  const count = Number(countText);
  const batch = Number(batchText);
  const pending: Promise<unknown>[] = [];
  for (let i = 0; i < count; i += batch) {
    const msgs = [];
    for (let j = i; j < Math.min(count, i + batch); j++) {
      msgs.push({ envelope: createEnvelope({ type: 'mp.test', source: prefix!, id: `${prefix}-${j}`, data: { prefix, n: j } }), key: `${prefix}-k${j % 5}` });
    }
    pending.push(transport.publish(topic!, msgs));
    if (pending.length >= 4) await pending.shift();
  }
  await Promise.all(pending);
  await transport.close();
  process.stdout.write('done\n');
  clearInterval(keepAlive);
} else if (mode === 'consume') {
  const [group, memberId] = rest;
  const sub = transport.subscribe(topic!, {
    group: group!,
    memberId: memberId!,
    onPartitions: () => process.stdout.write(`${JSON.stringify({ assigned: sub.assignment() })}\n`),
  });
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (l) => {
    if (l.trim() === 'stop') void stop();
  });
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await transport.close({ timeoutMs: 500 });
    process.stdout.write('closed\n');
    clearInterval(keepAlive);
    lines.close();
  };
  for await (const d of sub) {
    process.stdout.write(`${JSON.stringify({ id: d.envelope?.id, key: d.key, partition: d.partition, position: d.position })}\n`);
    d.ack();
  }
} else {
  throw new Error(`unknown mode ${mode}`);
}
