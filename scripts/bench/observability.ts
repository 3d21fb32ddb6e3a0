/**
 * Observability rows: the SQLite end-to-end run (publisher here, consumer in a child process,
 * one file; scripts/bench/sqlite.ts) with Herald's diagnostics channels
 *
 *   - without any subscriber (the baseline every other row is a ratio of),
 *   - with Prometheus metrics only (@herald/otel createMetrics in both processes, the parent
 *     rendering /metrics once a second, lag read from the file),
 *   - with tracing at ParentBased(TraceIdRatio 1 %) and at 100 % (BasicTracerProvider, a batch
 *     processor, an exporter that drops the spans: instrumentation and SDK cost, no network),
 *     and at 1 % with `bindContext: false` and no context manager (no AsyncLocalStorage),
 *
 * run interleaved (mode order rotated each round) and reported as medians. The instrumentation
 * cannot be compiled out, so "present, no subscriber" against "absent" is estimated from a
 * micro-benchmark of the no-subscriber helpers (the calls one message makes) as a share of the
 * baseline's time per message.
 */
import { context } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, BatchSpanProcessor, ParentBasedSampler, type SpanExporter, TraceIdRatioBasedSampler } from '@opentelemetry/sdk-trace-base';
import { channels, createPublisher, type LagSource, type OutgoingMessage, type Transport } from '@herald/core';
import { notify, traceHandle } from '@herald/core/internal';
import { createMetrics, instrumentTracing } from '@herald/otel';
import { type Item, ItemEvent, median, progress, rateOf, type Row } from './common.ts';

export const OBSERVE_MODES = ['none', 'metrics', 'trace-1%', 'trace-1%-unbound', 'trace-100%'] as const;
export type ObserveMode = (typeof OBSERVE_MODES)[number];

let contextManagerSet = false;
const dropSpans: SpanExporter = { export: (_spans, done) => done({ code: 0 }), shutdown: async () => {} };

/** Subscribes what `mode` names in this process; resolves to its teardown. */
export async function observe(mode: ObserveMode, lag?: LagSource): Promise<() => Promise<void>> {
  if (mode === 'none') return async () => {};
  if (mode === 'metrics') {
    const metrics = createMetrics(lag ? { lagSources: [lag] } : {});
    const timer = lag ? setInterval(() => void metrics.metrics(), 1000) : undefined;
    return async () => {
      if (timer) clearInterval(timer);
      metrics.close();
    };
  }
  const bindContext = mode !== 'trace-1%-unbound';
  if (bindContext && !contextManagerSet) {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager());
    contextManagerSet = true;
  }
  const ratio = mode === 'trace-100%' ? 1 : 0.01;
  const provider = new BasicTracerProvider({
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) }),
    spanProcessors: [new BatchSpanProcessor(dropSpans)],
  });
  const untrace = instrumentTracing({ tracerProvider: provider, bindContext });
  return async () => {
    untrace();
    await provider.shutdown();
    // Turn AsyncLocalStorage off again: its promise hooks would slow the next "none" run here.
    if (contextManagerSet) context.disable();
    contextManagerSet = false;
  };
}

/** ns per message of the helpers a message goes through when nothing subscribes (traceHandle + one deliver notify). */
function noSubscriberCostNs(): { ns: number; direct: number } {
  const ctx = {
    envelope: { specversion: '1.0', id: 'x', source: 's', type: 't' } as const,
    group: 'g',
    handler: 'h',
    topic: 't',
    partition: 0,
    key: undefined,
    attempt: 1,
    redrive: false,
    delivery: undefined,
  };
  if ((channels.handle as unknown as { hasSubscribers: boolean }).hasSubscribers) throw new Error('observability bench: a subscriber is attached during the no-subscriber measurement');
  let sink = 0;
  const fn = async (c: typeof ctx): Promise<void> => {
    sink += c.attempt;
  };
  const N = 2_000_000;
  const time = (body: () => void): number => {
    const t0 = process.hrtime.bigint();
    body();
    return Number(process.hrtime.bigint() - t0) / N;
  };
  const direct = (): void => {
    for (let i = 0; i < N; i++) void fn(ctx);
  };
  const helpers = (): void => {
    for (let i = 0; i < N; i++) {
      notify(channels.deliver, () => ctx);
      void traceHandle(fn, ctx);
    }
  };
  // Warm both, then take the best of 5 of each (the floor is the cost; the rest is noise).
  direct();
  helpers();
  const d: number[] = [];
  const h: number[] = [];
  for (let r = 0; r < 5; r++) {
    d.push(time(direct));
    h.push(time(helpers));
  }
  if (sink < 0) throw new Error('unreachable');
  return { ns: Math.max(0, Math.min(...h) - Math.min(...d)), direct: Math.min(...d) };
}

export interface ObservabilityConfig {
  readonly runs: number;
  readonly run: (mode: ObserveMode) => Promise<{ ms: number; cpuMs?: number; consumerCpuMs?: number }>;
  readonly messages: number;
  readonly batch: number;
}

export async function observabilityRows(c: ObservabilityConfig): Promise<Row[]> {
  const times = new Map<ObserveMode, number[]>(OBSERVE_MODES.map((m) => [m, []]));
  const cpus = new Map<ObserveMode, number[]>(OBSERVE_MODES.map((m) => [m, []]));
  for (let r = 0; r < c.runs; r++) {
    const order = OBSERVE_MODES.map((_, i) => OBSERVE_MODES[(i + r) % OBSERVE_MODES.length]!);
    for (const mode of order) {
      const { ms, cpuMs, consumerCpuMs } = await c.run(mode);
      times.get(mode)!.push(ms);
      if (cpuMs !== undefined) cpus.get(mode)!.push(cpuMs);
      progress(`  round ${r + 1}/${c.runs} ${mode}: ${Math.round(rateOf(c.messages, ms)).toLocaleString('en-US')} msg/s${cpuMs !== undefined ? `, ${((cpuMs * 1000) / c.messages).toFixed(2)} CPU-µs per message` : ''}${cpuMs !== undefined && consumerCpuMs !== undefined ? ` (publisher ${(((cpuMs - consumerCpuMs) * 1000) / c.messages).toFixed(2)}, consumer ${((consumerCpuMs * 1000) / c.messages).toFixed(2)})` : ''}`);
    }
  }
  const base = rateOf(c.messages, median(times.get('none')!));
  // CPU time per message (both processes): far less sensitive than wall-clock throughput to other
  // load on the machine; its ratio is shown beside the throughput ratio.
  const cpuPerMsg = (mode: ObserveMode): number | undefined => (cpus.get(mode)!.length > 0 ? (median(cpus.get(mode)!) * 1000) / c.messages : undefined);
  const baseCpu = cpuPerMsg('none');
  const label: Record<ObserveMode, string> = {
    none: 'sqlite e2e, instrumentation present, no subscriber',
    metrics: 'sqlite e2e, metrics only (prom-client, /metrics rendered every 1 s)',
    'trace-1%': 'sqlite e2e, tracing ParentBased 1 % sampled',
    'trace-1%-unbound': 'sqlite e2e, tracing ParentBased 1 % sampled, bindContext false',
    'trace-100%': 'sqlite e2e, tracing 100 % sampled',
  };
  const rows: Row[] = OBSERVE_MODES.map((mode) => {
    const rates = times.get(mode)!.map((ms) => rateOf(c.messages, ms));
    const rate = median(rates);
    return {
      suite: 'observability',
      case: label[mode],
      messages: c.messages,
      rate,
      runs: rates,
      ...(mode === 'none' ? {} : { ratio: rate / base, ratioVs: label.none }),
      ...(cpuPerMsg(mode) !== undefined ? { cpuUsPerMessage: cpuPerMsg(mode)!, ...(mode !== 'none' && baseCpu ? { cpuCost: cpuPerMsg(mode)! / baseCpu - 1 } : {}) } : {}),
      note:
        (cpuPerMsg(mode) !== undefined ? `${cpuPerMsg(mode)!.toFixed(2)} CPU-µs per message (both processes)${mode !== 'none' && baseCpu ? `, ${(100 * (cpuPerMsg(mode)! / baseCpu - 1)).toFixed(1)} % more than no subscriber` : ''}; ` : '') +
        (mode === 'none'
          ? `publisher.publishBatch (batches of ${c.batch}, validated, envelopes built in the loop) here, consumer (zod handler) in a child process; first publish → last ack; the baseline of this section`
          : mode === 'metrics'
            ? 'createMetrics in both processes (counters + handler-duration histogram per message; lag read from the file at each render)'
            : mode === 'trace-1%-unbound'
              ? 'as the row above, without a context manager and with instrumentTracing({ bindContext: false }): no AsyncLocalStorage entered per message (handlers do not see their span)'
              : 'BasicTracerProvider, BatchSpanProcessor to an exporter that drops spans; one producer span per batch, one consumer span per message; AsyncLocalStorage context manager'),
    };
  });
  const cost = noSubscriberCostNs();
  // Against the baseline's CPU time per message when measured (wall time per message swings with other load).
  const perMessageNs = baseCpu !== undefined ? baseCpu * 1000 : 1e9 / base;
  rows.push({
    suite: 'observability',
    case: 'no-subscriber helpers (traceHandle + deliver notify) per message, vs none at all',
    messages: 2_000_000,
    rate: 1e9 / Math.max(1, cost.ns),
    ratio: 1 - cost.ns / perMessageNs,
    ratioVs: label.none,
    note: `micro-benchmark: ${cost.ns.toFixed(1)} ns per message over a direct call (${cost.direct.toFixed(1)} ns) = ${((100 * cost.ns) / perMessageNs).toFixed(3)} % of the baseline's ${Math.round(perMessageNs).toLocaleString('en-US')} ns ${baseCpu !== undefined ? 'of CPU' : ''} per message (the instrumentation cannot be compiled out, so this is the estimate of its cost when nothing listens)`,
  });
  return rows;
}


/**
 * The parent's publish function in observability rows: `publishBatch` of a publisher (traced on
 * herald:publish), so the envelopes carry the producer span's trace context the way a service's
 * do — one producer span, sampled or not, per batch. The batch's data is validated and new
 * envelopes are built (the same cost in every mode).
 */
export function publisherOn(transport: Transport): (topic: string, messages: OutgoingMessage[]) => Promise<unknown> {
  const publisher = createPublisher({ transport, source: 'herald-bench' });
  return (topic, messages) =>
    publisher.publishBatch(messages.map((m) => ({ definition: ItemEvent, data: m.envelope.data as Item, options: { topic, ...(m.envelope.partitionkey !== undefined ? { key: m.envelope.partitionkey } : {}) } })));
}
