// The gateway's Prometheus metrics, on the control plane's registry (one /metrics per process).
// Labels are bounded: `model` and `level` are named only once a request was placed (so only models
// some node serves appear), `status` is an HTTP status, `kind` a fixed word.

import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Usage } from '../core/model.js';

export type UpstreamFailure = 'unreachable' | 'engine_5xx' | 'stream_broken';

export class GatewayMetrics {
  private readonly requests: Counter<'model' | 'level' | 'status'>;
  private readonly firstByte: Histogram<'level'>;
  private readonly upstreamErrors: Counter<'kind'>;
  private readonly tokens: Counter<'kind'>;
  readonly inFlight: Gauge;

  constructor(registry: Registry) {
    const registers = [registry];
    this.requests = new Counter({
      name: 'cpn_gateway_requests_total',
      help: 'Gateway requests by model and level placed on (none if not placed) and HTTP status',
      labelNames: ['model', 'level', 'status'],
      registers,
    });
    this.firstByte = new Histogram({
      name: 'cpn_gateway_first_byte_seconds',
      help: "Time from a request's arrival to the engine's first byte (headers of a completion, first event of a stream)",
      labelNames: ['level'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.upstreamErrors = new Counter({
      name: 'cpn_gateway_upstream_errors_total',
      help: 'Engine failures seen by the gateway: unreachable, answering 5xx, or breaking off a stream',
      labelNames: ['kind'],
      registers,
    });
    this.tokens = new Counter({
      name: 'cpn_gateway_tokens_total',
      help: 'Tokens billed through the gateway, from the engines own usage, by kind',
      labelNames: ['kind'],
      registers,
    });
    this.inFlight = new Gauge({
      name: 'cpn_gateway_requests_in_flight',
      help: 'Gateway requests being served now',
      registers,
    });
  }

  request(status: number, placed?: { model: string; level: string }): void {
    this.requests.inc({
      model: placed?.model ?? 'none',
      level: placed?.level ?? 'none',
      status: String(status),
    });
  }

  firstByteAfter(seconds: number, level: string): void {
    this.firstByte.observe({ level }, seconds);
  }

  upstreamFailed(kind: UpstreamFailure): void {
    this.upstreamErrors.inc({ kind });
  }

  billed(usage: Usage): void {
    this.tokens.inc({ kind: 'input' }, usage.inputTokens - usage.cachedInputTokens);
    this.tokens.inc({ kind: 'cached_input' }, usage.cachedInputTokens);
    this.tokens.inc({ kind: 'output' }, usage.outputTokens);
  }
}
