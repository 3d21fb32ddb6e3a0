import { createConsumer, createEnvelope, MemoryDeadLetterStore } from '@herald/core';
import { createNatsTransport } from './index.ts';
const fb = Number(process.env.FB ?? 256);
const t = await createNatsTransport({ fetchBatch: fb, ...(process.env.CI_MS ? { commitIntervalMs: Number(process.env.CI_MS) } : {}) });
for (let round = 0; round < 3; round++) {
  const topic = `lat-${Date.now()}-${round}`;
  await t.ensureTopic(topic, { partitions: 8 });
  const lat: number[] = [];
  const c = createConsumer({ transport: t, group: 'g', deadLetters: new MemoryDeadLetterStore(), concurrency: 64, validate: false });
  c.handleEnvelope(topic, '*', (env) => { const d = env.data as { due: number }; lat.push(performance.now() - d.due); });
  await c.start();
  while (c.assignment(topic).length < 8) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 300));
  const L = 15000, rate = 5000; const t0 = performance.now() + 5; let i = 0;
  await new Promise<void>((res) => { const tick = () => { const now = performance.now(); while (i < L && t0 + i * 1000 / rate <= now) { const due = t0 + i * 1000 / rate; void t.publish(topic, [{ envelope: createEnvelope({ type: 'x', source: 'x', partitionkey: `k${i % 256}`, data: { i, due, pad: 'x'.repeat(200) } }) }]); i++; } if (i >= L) res(); else setTimeout(tick, 1); }; tick(); });
  while (lat.length < L) await new Promise((r) => setTimeout(r, 10));
  lat.sort((a, b) => a - b);
  if (round > 0) console.log(`fb=${fb} round ${round}: p50 ${lat[L / 2]!.toFixed(2)} p99 ${lat[Math.floor(L * 0.99)]!.toFixed(2)} p99.9 ${lat[Math.floor(L * 0.999)]!.toFixed(2)} max ${lat[L - 1]!.toFixed(1)}`);
  await c.close();
  await (await import('@nats-io/jetstream')).jetstreamManager(t.connection).then((j) => j.streams.delete(`HERALD_${topic}`));
}
await t.close();
