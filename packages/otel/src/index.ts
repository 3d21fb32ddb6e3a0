// Public surface of @herald/otel.
export { instrumentTracing, envelopeContext, ATTR } from './tracing.ts';
export type { TracingOptions } from './tracing.ts';
export { createMetrics } from './metrics.ts';
export type { MetricsOptions, HeraldMetrics, SagaCountSource } from './metrics.ts';
export { instrumentMetrics, OTEL_METRIC } from './otel-metrics.ts';
export type { OtelMetricsOptions, OtelMetrics } from './otel-metrics.ts';
export { metricsHandler, serveMetrics } from './serve.ts';
export type { ServeMetricsOptions, MetricsServer } from './serve.ts';
export { createLogger, eventFields, redactData, redactEnvelope, REDACTED } from './logger.ts';
export type { HeraldLoggerOptions, HeraldLogger } from './logger.ts';
export { startOtel } from './start.ts';
export { parsePrometheusText } from './exposition.ts';
export type { MetricFamily, Sample } from './exposition.ts';
export type { StartOtelOptions, OtelHandle } from './start.ts';
