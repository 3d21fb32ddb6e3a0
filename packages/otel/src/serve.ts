/**
 * `/metrics` over HTTP: a request handler any Node HTTP server (or framework adapter) can
 * mount, and `serveMetrics` — the one line for a service without an HTTP server of its own.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { HeraldMetrics } from './metrics.ts';

/** Serves the exposition on GET `path` (default '/metrics'); 404 elsewhere, 500 with the message when a scrape-time read fails. */
export function metricsHandler(metrics: HeraldMetrics, path = '/metrics'): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (url !== path || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    metrics.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': metrics.registry.contentType });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (e: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics collection failed: ${e instanceof Error ? e.message : String(e)}\n`);
      },
    );
  };
}

export interface ServeMetricsOptions {
  /** Port (default 9464, the OpenTelemetry Prometheus exporter's; 0 picks a free one). */
  readonly port?: number;
  /** Interface (default '127.0.0.1'; '0.0.0.0' to be scraped from elsewhere). */
  readonly host?: string;
  readonly path?: string;
}

export interface MetricsServer {
  readonly port: number;
  readonly url: string;
  /** Stops listening; idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts an HTTP server serving `/metrics`; resolves once it listens. */
export async function serveMetrics(metrics: HeraldMetrics, options: ServeMetricsOptions = {}): Promise<MetricsServer> {
  const path = options.path ?? '/metrics';
  const server: Server = createServer(metricsHandler(metrics, path));
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 9464, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }));
  return { port, url: `http://${host}:${port}${path}`, close, [Symbol.asyncDispose]: close };
}
