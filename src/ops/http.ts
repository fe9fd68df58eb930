// The operations HTTP endpoint: /metrics (Prometheus), /healthz (alive: the event loop keeps up),
// /readyz (ready to route: serving, and the store reachable or its cache fresh enough) for
// Kubernetes probes.

import { createServer, type Server } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Registry } from 'prom-client';

export interface Readiness {
  ready: boolean;
  reason: string;
}

export interface OpsHttp {
  readonly port: number;
  close(): Promise<void>;
}

export async function startOpsHttp(options: {
  readonly host: string;
  readonly port: number;
  readonly registry: Registry;
  readonly readiness: () => Readiness;
  /** The worst event-loop delay lately (ms); /healthz fails beyond `maxLoopDelayMs`. */
  readonly loopDelayMs?: () => number;
  readonly maxLoopDelayMs?: number;
}): Promise<OpsHttp> {
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/metrics') {
      options.registry.metrics().then(
        (body) => response.writeHead(200, { 'content-type': options.registry.contentType }).end(body),
        (error: Error) =>
          response.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${error.message}\n`),
      );
      return;
    }
    if (path === '/healthz') {
      // Answering at all proves little: a process starved by its own work still answers a probe
      // now and then. A loop that lags for seconds is not alive in any useful sense.
      const delayMs = options.loopDelayMs?.() ?? 0;
      const limitMs = options.maxLoopDelayMs ?? 2000;
      if (delayMs > limitMs) {
        response
          .writeHead(503, { 'content-type': 'text/plain' })
          .end(`event loop delayed ${delayMs.toFixed(0)} ms lately (limit ${limitMs} ms)\n`);
        return;
      }
      response.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (path === '/readyz') {
      const readiness = options.readiness();
      response
        .writeHead(readiness.ready ? 200 : 503, { 'content-type': 'application/json' })
        .end(`${JSON.stringify(readiness)}\n`);
      return;
    }
    response
      .writeHead(404, { 'content-type': 'text/plain' })
      .end('not found: try /metrics, /healthz or /readyz\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) =>
      reject(new Error(`cannot listen on ${options.host}:${options.port} for metrics: ${error.message}`)),
    );
    server.listen(options.port, options.host, resolve);
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address !== null ? address.port : options.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Watches the event loop: the worst delay over roughly the last `windowMs`, from a histogram that
 * is reset each window (so a past stall is forgotten once the loop keeps up again).
 */
export function watchEventLoop(windowMs = 10_000): { delayMs(): number; stop(): void } {
  const histogram = monitorEventLoopDelay({ resolution: 20 });
  histogram.enable();
  let previousMaxMs = 0;
  const timer = setInterval(() => {
    previousMaxMs = histogram.max / 1e6;
    histogram.reset();
  }, windowMs);
  timer.unref();
  return {
    delayMs: () => Math.max(previousMaxMs, histogram.max / 1e6),
    stop() {
      clearInterval(timer);
      histogram.disable();
    },
  };
}
