/**
 * Shared pieces of `npm run bench`: the 256-byte payload, the envelope every row sends, the
 * zod definition used by the validation-on rows, timing, medians, percentiles, progress.
 */
import { createEnvelope, defineEvent, type CloudEvent } from '@herald/core';
import { z } from 'zod';

/** Bytes of `JSON.stringify(payload)` for every message. */
export const PAYLOAD_BYTES = 256;
export const EVENT_TYPE = 'bench.item';
export const SOURCE = 'herald-bench';

export const itemSchema = z.object({
  /** Sequence number of the message in its run. */
  n: z.number().int().nonnegative(),
  /** Intended send time, epoch microseconds (0 where latency is not measured). */
  t: z.number().int().nonnegative(),
  pad: z.string(),
});
export type Item = z.infer<typeof itemSchema>;

export const ItemEvent = defineEvent(EVENT_TYPE, itemSchema);

const PAD = 'x'.repeat(PAYLOAD_BYTES);
// {"n":,"t":,"pad":""} without the digits and the padding.
const FIXED = JSON.stringify({ n: 0, t: 0, pad: '' }).length - 2;

/** A payload object whose `JSON.stringify` is exactly `PAYLOAD_BYTES` bytes (ASCII only). */
export function payload(n: number, t = 0): Item {
  const used = FIXED + digits(n) + digits(t);
  return { n, t, pad: PAD.slice(0, PAYLOAD_BYTES - used) };
}

function digits(x: number): number {
  return String(x).length;
}

/** Partition keys: `BENCH_KEYS` distinct keys (default 256), 0 for none (round-robin, unordered). */
export const KEY_COUNT = envInt('BENCH_KEYS', 256);
const KEYS = Array.from({ length: KEY_COUNT }, (_, i) => `k${i}`);

export function keyFor(n: number): string | undefined {
  return KEY_COUNT > 0 ? KEYS[n % KEY_COUNT] : undefined;
}

/** The envelope for message `n`: one `createEnvelope` call (id, time, validation, freeze). */
export function envelope(n: number, t = 0): CloudEvent<Item> {
  const key = keyFor(n);
  return createEnvelope<Item>({
    type: EVENT_TYPE,
    source: SOURCE,
    dataschema: ItemEvent.dataschema,
    data: payload(n, t),
    ...(key !== undefined ? { partitionkey: key } : {}),
  });
}

/** Epoch time in microseconds with sub-millisecond resolution, comparable across processes on one machine. */
export function epochMicros(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

export function envInt(name: string, fallback: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number (got ${JSON.stringify(v)})`);
  return Math.floor(n);
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Nearest-rank percentile of an ascending-sorted array, q in 0..1. */
export function percentile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}

export function progress(message: string): void {
  process.stderr.write(`${message}\n`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Runs a measured function `runs` times; returns the per-run results. */
export async function repeat<T>(label: string, runs: number, fn: (run: number) => Promise<T>, show: (r: T) => string): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < runs; i++) {
    (globalThis as { gc?: () => void }).gc?.();
    const r = await fn(i);
    out.push(r);
    progress(`  ${label} — run ${i + 1}/${runs}: ${show(r)}`);
  }
  return out;
}

/** The sections of `npm run bench`, in the order they run; `--only` takes these names. */
export const SECTIONS = ['memory', 'sqlite', 'nats', 'redis', 'rabbitmq', 'kafka', 'mqtt', 'event-store', 'outbox', 'postgres', 'observability'] as const;
export type Section = (typeof SECTIONS)[number];

export interface Row {
  readonly suite: Section;
  readonly case: string;
  readonly messages: number;
  /** msg/s (events/s in the event-store section), median of the runs where the row has several. */
  readonly rate: number;
  readonly p50Ms?: number;
  readonly p99Ms?: number;
  /** rate / the peer's rate, when the row has a peer. */
  ratio?: number;
  /** Which row the ratio is against (its `case`). */
  ratioVs?: string;
  /**
   * What the row measures, for the goals: `throughput` (rate as fast as it goes), `latency` (an
   * open-loop row at a fixed rate: p50/p99 are the point, the rate only shows it kept up).
   */
  readonly kind?: 'throughput' | 'latency';
  /** False for rows that are reported but not held to a goal (Kafka on the librdkafka mock). */
  readonly judged?: boolean;
  /** Per-run rates, when the section reports them. */
  readonly runs?: readonly number[];
  readonly note?: string;
}

export function rateOf(messages: number, ms: number): number {
  return (messages * 1000) / ms;
}
