/**
 * Memory transport rows and their raw peer, a Node EventEmitter, on the same objects.
 *
 * Every memory transport here is built with `maxPayloadBytes: 0`: envelopes are passed by
 * reference, never serialized or size-checked — the same work an EventEmitter does.
 */
import { EventEmitter } from 'node:events';
import { createConsumer, createMemoryTransport, MemoryDeadLetterStore, type CloudEvent, type OutgoingMessage } from '@herald/core';
import { envelope, ItemEvent, median, rateOf, repeat, type Item, type Row } from './common.ts';

const TOPIC = 'bench.memory';

export interface MemoryConfig {
  readonly messages: number;
  readonly runs: number;
  readonly batch: number;
}

/** Publish only (no subscriber), batches of `batch` via `transport.publish(topic, messages)`. */
async function publishRun(messages: number, batch: number, prebuilt: readonly OutgoingMessage[] | undefined): Promise<number> {
  const transport = createMemoryTransport({ maxPayloadBytes: 0, maxRecordsPerPartition: messages + 1 });
  await transport.ensureTopic(TOPIC);
  const t0 = performance.now();
  for (let i = 0; i < messages; i += batch) {
    const n = Math.min(batch, messages - i);
    let out: readonly OutgoingMessage[];
    if (prebuilt) out = prebuilt.slice(i, i + n);
    else {
      const b: OutgoingMessage[] = new Array(n);
      for (let j = 0; j < n; j++) b[j] = { envelope: envelope(i + j) };
      out = b;
    }
    await transport.publish(TOPIC, out);
  }
  const ms = performance.now() - t0;
  await transport.close();
  return ms;
}

/** publish → router → handler → ack, one process; resolves with ms from first publish to the last ack. */
async function endToEndRun(messages: number, batch: number, validate: boolean): Promise<number> {
  const transport = createMemoryTransport({ maxPayloadBytes: 0, maxRecordsPerPartition: messages + 1 });
  await transport.ensureTopic(TOPIC);
  const consumer = createConsumer({ transport, group: 'bench', deadLetters: new MemoryDeadLetterStore(), validate, timeoutMs: 0 });
  let handled = 0;
  let resolveDone!: (t: number) => void;
  const done = new Promise<number>((r) => (resolveDone = r));
  const onOne = (): void => {
    // setImmediate runs after the router's ack (same microtask drain): the stop time includes it.
    if (++handled === messages) setImmediate(() => resolveDone(performance.now()));
  };
  if (validate) consumer.handle(ItemEvent, (_data: Item) => onOne(), { topic: TOPIC });
  else consumer.handleEnvelope(TOPIC, ItemEvent.type, () => onOne());
  await consumer.start();
  const t0 = performance.now();
  for (let i = 0; i < messages; i += batch) {
    const n = Math.min(batch, messages - i);
    const b: OutgoingMessage[] = new Array(n);
    for (let j = 0; j < n; j++) b[j] = { envelope: envelope(i + j) };
    await transport.publish(TOPIC, b);
  }
  const t1 = await done;
  const stats = consumer.stats();
  if (stats.handled !== messages || stats.deadLettered !== 0) throw new Error(`memory e2e: handled ${stats.handled}/${messages}, dead-lettered ${stats.deadLettered}`);
  await consumer.close();
  await transport.close();
  return t1 - t0;
}

/** The raw peer: one emit per message to one listener that counts. */
async function emitterRun(messages: number, prebuilt: readonly CloudEvent[] | undefined): Promise<number> {
  const ee = new EventEmitter();
  let handled = 0;
  ee.on(TOPIC, (_e: CloudEvent) => {
    handled++;
  });
  const t0 = performance.now();
  if (prebuilt) for (let i = 0; i < messages; i++) ee.emit(TOPIC, prebuilt[i]);
  else for (let i = 0; i < messages; i++) ee.emit(TOPIC, envelope(i));
  const ms = performance.now() - t0;
  if (handled !== messages) throw new Error(`EventEmitter: ${handled}/${messages}`);
  return ms;
}

export async function memoryRows(c: MemoryConfig): Promise<Row[]> {
  const { messages, runs, batch } = c;
  const show = (ms: number): string => `${Math.round(rateOf(messages, ms)).toLocaleString('en-US')} msg/s`;
  const row = (name: string, times: number[], note?: string): Row => ({
    suite: 'memory',
    case: name,
    messages,
    rate: rateOf(messages, median(times)),
    runs: times.map((ms) => rateOf(messages, ms)),
    ...(note ? { note } : {}),
  });

  // Warm-up: JIT the envelope, publish and router paths once before anything is timed.
  await publishRun(Math.min(messages, 20_000), batch, undefined);
  await endToEndRun(Math.min(messages, 20_000), batch, true);
  await emitterRun(Math.min(messages, 20_000), undefined);

  const ee = row('EventEmitter emit → listener (raw peer)', await repeat('EventEmitter', runs, () => emitterRun(messages, undefined), show), 'envelope built per message, as in the memory rows');
  const pub = row(`memory publish, batches of ${batch}`, await repeat('memory publish', runs, () => publishRun(messages, batch, undefined), show), 'no subscriber; createEnvelope included');
  const e2eOff = row('memory e2e publish→handle→ack, validation off', await repeat('memory e2e (validation off)', runs, () => endToEndRun(messages, batch, false), show), 'handleEnvelope');
  const e2eOn = row('memory e2e publish→handle→ack, validation on', await repeat('memory e2e (validation on)', runs, () => endToEndRun(messages, batch, true), show), 'handle(zod definition)');

  // Transport cost alone: envelopes built before the clock starts.
  const built = Array.from({ length: messages }, (_, i) => envelope(i));
  const outgoing = built.map((e) => ({ envelope: e }));
  const eePre = row('EventEmitter emit → listener, prebuilt envelopes', await repeat('EventEmitter (prebuilt)', runs, () => emitterRun(messages, built), show), 'envelope construction not timed');
  const pubPre = row(`memory publish, batches of ${batch}, prebuilt envelopes`, await repeat('memory publish (prebuilt)', runs, () => publishRun(messages, batch, outgoing), show), 'envelope construction not timed');

  for (const r of [pub, e2eOff, e2eOn]) {
    r.ratio = r.rate / ee.rate;
    r.ratioVs = ee.case;
  }
  pubPre.ratio = pubPre.rate / eePre.rate;
  pubPre.ratioVs = eePre.case;
  return [ee, pub, e2eOff, e2eOn, eePre, pubPre];
}
