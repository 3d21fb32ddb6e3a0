/**
 * One call to turn Herald's channels into exported spans (and, optionally, Prometheus
 * metrics), configured the standard OpenTelemetry way: by `OTEL_*` environment variables.
 *
 * - `OTEL_SDK_DISABLED=true`: no tracer provider, no spans.
 * - `OTEL_TRACES_EXPORTER`: `otlp` (default; OTLP over HTTP/protobuf-JSON to
 *   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`, default
 *   http://localhost:4318/v1/traces — Jaeger, Tempo, the Collector, Zipkin through the Collector),
 *   `console`, or `none`.
 * - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: the resource.
 * - `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (e.g. `parentbased_traceidratio` / `0.01`),
 *   `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`…: read by the SDK and the exporter themselves.
 */
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, ConsoleSpanExporter, type Sampler, type SpanExporter, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { HeraldError } from '@herald/core';
import { createMetrics, type HeraldMetrics, type MetricsOptions } from './metrics.ts';
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
  /** `messaging.system` on spans (default 'herald'). */
  readonly system?: string;
  /** Environment (default process.env). */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

export interface OtelHandle {
  readonly tracerProvider: NodeTracerProvider | undefined;
  readonly metrics: HeraldMetrics | undefined;
  /** Unsubscribes, flushes and shuts the provider down. Idempotent. */
  shutdown(): Promise<void>;
}

export function startOtel(options: StartOtelOptions = {}): OtelHandle {
  const env = options.env ?? process.env;
  const disabled = (env.OTEL_SDK_DISABLED ?? '').trim().toLowerCase() === 'true';
  let provider: NodeTracerProvider | undefined;
  let untrace: (() => void) | undefined;
  if (!disabled) {
    const processors: SpanProcessor[] = [...(options.spanProcessors ?? [])];
    const exporter = options.exporter ?? exporterFromEnv(env.OTEL_TRACES_EXPORTER);
    if (exporter) processors.push(new BatchSpanProcessor(exporter));
    let resource = defaultResource();
    if (options.serviceName !== undefined) resource = resource.merge(resourceFromAttributes({ 'service.name': options.serviceName }));
    resource = resource.merge(detectResources({ detectors: [envDetector] }));
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
    shutdown: () =>
      (done ??= (async () => {
        untrace?.();
        metrics?.close();
        await provider?.shutdown();
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
