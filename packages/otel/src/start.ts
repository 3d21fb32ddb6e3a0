/**
 * One call to turn Herald's channels into exported spans (and, optionally, Prometheus
 * metrics), configured the standard OpenTelemetry way: by `OTEL_*` environment variables.
 *
 * - `OTEL_SDK_DISABLED=true`: no tracer or meter provider, no spans, no OpenTelemetry metrics
 *   (Prometheus `metrics` still work).
 * - `OTEL_TRACES_EXPORTER`: `otlp` (default; OTLP over HTTP/protobuf-JSON to
 *   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`, default
 *   http://localhost:4318/v1/traces — Jaeger, Tempo, the Collector, Zipkin through the Collector),
 *   `console`, or `none`.
 * - `OTEL_METRICS_EXPORTER`: `none` (default here: no meter provider), `otlp` (OTLP over
 *   HTTP/JSON to `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/metrics`,
 *   default http://localhost:4318/v1/metrics) or `console`, exported every
 *   `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60000, timeout `OTEL_METRIC_EXPORT_TIMEOUT`,
 *   default 30000). `prometheus` is refused: Prometheus scrapes `serveMetrics(createMetrics())`
 *   (`startOtel({ metrics: true })`), which reads the same channels.
 * - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: the resource (spans and metrics).
 * - `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (e.g. `parentbased_traceidratio` / `0.01`),
 *   `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`…: read by the SDK and the exporter themselves.
 */
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { metrics as otelMetrics } from '@opentelemetry/api';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, ConsoleSpanExporter, type Sampler, type SpanExporter, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { ConsoleMetricExporter, MeterProvider, type MetricReader, PeriodicExportingMetricReader, type PushMetricExporter } from '@opentelemetry/sdk-metrics';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { HeraldError } from '@herald/core';
import { createMetrics, type HeraldMetrics, type MetricsOptions } from './metrics.ts';
import type { MetricSources } from './channel-metrics.ts';
import { instrumentMetrics, type OtelMetrics } from './otel-metrics.ts';
import { instrumentTracing } from './tracing.ts';

export interface StartOtelOptions {
  /** `service.name` when `OTEL_SERVICE_NAME` is not set. */
  readonly serviceName?: string;
  /** Exporter instead of the one `OTEL_TRACES_EXPORTER` names (batched). */
  readonly exporter?: SpanExporter;
  /** More span processors (an in-memory exporter in tests, say). */
  readonly spanProcessors?: readonly SpanProcessor[];
  /** Sampler instead of `OTEL_TRACES_SAMPLER`. */
  readonly sampler?: Sampler;
  /** Prometheus metrics too (default off). */
  readonly metrics?: MetricsOptions | boolean;
  /**
   * More metric readers for the OpenTelemetry meter provider (one collected by hand in tests,
   * say). With any, the meter provider exists even when `OTEL_METRICS_EXPORTER` is `none`.
   */
  readonly metricReaders?: readonly MetricReader[];
  /** What the OpenTelemetry metrics read at collection: lag sources, dead letters, outboxes, sagas. */
  readonly metricSources?: MetricSources;
  /** `messaging.system` on spans (default 'herald'). */
  readonly system?: string;
  /** Environment (default process.env). */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

export interface OtelHandle {
  readonly tracerProvider: NodeTracerProvider | undefined;
  readonly metrics: HeraldMetrics | undefined;
  /** The OpenTelemetry meter provider (registered as the global one), when metrics are exported. */
  readonly meterProvider: MeterProvider | undefined;
  /** Unsubscribes, flushes and shuts the provider down. Idempotent. */
  shutdown(): Promise<void>;
}

export function startOtel(options: StartOtelOptions = {}): OtelHandle {
  const env = options.env ?? process.env;
  const disabled = (env.OTEL_SDK_DISABLED ?? '').trim().toLowerCase() === 'true';
  let provider: NodeTracerProvider | undefined;
  let untrace: (() => void) | undefined;
  let meterProvider: MeterProvider | undefined;
  let otelMetricsHandle: OtelMetrics | undefined;
  if (!disabled) {
    const processors: SpanProcessor[] = [...(options.spanProcessors ?? [])];
    const exporter = options.exporter ?? exporterFromEnv(env.OTEL_TRACES_EXPORTER);
    if (exporter) processors.push(new BatchSpanProcessor(exporter));
    // Read (and refused when invalid) before anything is registered.
    const readers: MetricReader[] = [...(options.metricReaders ?? []), ...metricReadersFromEnv(env)];
    let resource = defaultResource();
    if (options.serviceName !== undefined) resource = resource.merge(resourceFromAttributes({ 'service.name': options.serviceName }));
    resource = resource.merge(detectResources({ detectors: [envDetector] }));
    if (readers.length > 0) {
      meterProvider = new MeterProvider({ resource, readers });
      otelMetrics.setGlobalMeterProvider(meterProvider);
      otelMetricsHandle = instrumentMetrics({ meterProvider, ...options.metricSources, ...(options.system !== undefined ? { system: options.system } : {}) });
    }
    provider = new NodeTracerProvider({ resource, spanProcessors: processors, ...(options.sampler ? { sampler: options.sampler } : {}) });
    const contextManager = new AsyncLocalStorageContextManager();
    provider.register({ contextManager });
    untrace = instrumentTracing({
      tracerProvider: provider,
      contextStorage: (contextManager as unknown as { _asyncLocalStorage: never })._asyncLocalStorage,
      ...(options.system !== undefined ? { system: options.system } : {}),
    });
  }
  const metrics = options.metrics ? createMetrics(options.metrics === true ? {} : options.metrics) : undefined;
  let done: Promise<void> | undefined;
  return {
    tracerProvider: provider,
    metrics,
    meterProvider,
    shutdown: () =>
      (done ??= (async () => {
        untrace?.();
        metrics?.close();
        // The meter provider's shutdown collects and exports once more before it stops.
        await Promise.all([provider?.shutdown(), meterProvider?.shutdown()]);
        otelMetricsHandle?.close();
      })()),
  };
}

function exporterFromEnv(value: string | undefined): SpanExporter | undefined {
  const names = (value ?? 'otlp')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s.length > 0);
  if (names.includes('none') || names.length === 0) return undefined;
  const name = names[0]!;
  if (name === 'otlp') return new OTLPTraceExporter();
  if (name === 'console') return new ConsoleSpanExporter();
  throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `OTEL_TRACES_EXPORTER "${value}" is not supported here (otlp, console or none)`);
}

/** The metric reader `OTEL_METRICS_EXPORTER` names (none when unset). */
function metricReadersFromEnv(env: Readonly<Record<string, string | undefined>>): MetricReader[] {
  const value = env.OTEL_METRICS_EXPORTER;
  const names = (value ?? 'none')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s.length > 0);
  if (names.includes('none') || names.length === 0) return [];
  const interval = positiveMs(env, 'OTEL_METRIC_EXPORT_INTERVAL', 60_000);
  const timeout = Math.min(interval, positiveMs(env, 'OTEL_METRIC_EXPORT_TIMEOUT', 30_000));
  return names.map((name) => {
    let exporter: PushMetricExporter;
    if (name === 'otlp') exporter = new OTLPMetricExporter(otlpMetricsUrl(env));
    else if (name === 'console') exporter = new ConsoleMetricExporter();
    else if (name === 'prometheus') {
      throw new HeraldError(
        'HERALD_ERR_INVALID_ARGUMENT',
        'OTEL_METRICS_EXPORTER "prometheus" is not supported here: serve Prometheus metrics with serveMetrics(createMetrics()) (or startOtel({ metrics: true })), which reads the same channels',
      );
    } else throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `OTEL_METRICS_EXPORTER "${value}" is not supported here (otlp, console or none)`);
    return new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: interval, exportTimeoutMillis: timeout });
  });
}

/** From `env` (which need not be process.env; the exporter itself reads only process.env). */
function otlpMetricsUrl(env: Readonly<Record<string, string | undefined>>): { url: string } | undefined {
  const metrics = env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT?.trim();
  if (metrics) return { url: metrics };
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  if (base) return { url: `${base.replace(/\/+$/, '')}/v1/metrics` };
  return undefined;
}

function positiveMs(env: Readonly<Record<string, string | undefined>>, name: string, fallback: number): number {
  const raw = env[name]?.trim();
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${name} "${raw}" is not a positive whole number of milliseconds`);
  return n;
}
