// The OpenAI-compatible gateway (DESIGN.md; README "Use it from the OpenAI SDK"): a tenant points
// the standard SDK at it with its API key; each request is routed to the cheapest node within its
// latency budget, forwarded to that node's engine, and billed from the usage the engine reports.
//
//   POST /v1/chat/completions, POST /v1/completions   routed, forwarded, metered
//   GET  /v1/models                                    the package's models that a live node serves
//
// Routing hints come in headers: x-cpn-latency-budget-ms, x-cpn-region, x-cpn-access-point,
// x-cpn-allowed-levels (CENTER,PROVINCE,EDGE,TERMINAL); the gateway's own settings fill what a
// request leaves out (a gateway at an edge site routes as that site). Answers carry x-cpn-node,
// x-cpn-level and x-cpn-ttft-estimate-ms.
//
// Metering: the gateway is the trusted meter. A completion settles its reservation with the
// engine's `usage`; a stream with the last usage the engine reported (the gateway always asks for
// it, and strips it from what the client sees unless the client asked too). A stream cut short by
// the client or the engine is billed for what the engine reported up to then (usageSoFar). If the
// gateway dies first, the reservation lapses at its TTL and its hold is settled as the plane's
// expiry rule says (see README, token packages).

import type { ServerResponse } from 'node:http';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Registry } from 'prom-client';
import { request as upstreamRequest } from 'undici';
import type { Logger } from '../common/logger.js';
import { LEVELS, type Level, MODEL_PATTERN, type Usage } from '../core/model.js';
import type { RouteRequest } from '../core/routing/index.js';
import type { GatewayBackend, Placed } from './backend.js';
import { type ClientUsage, engineUsage, StreamMeter, usageSoFar } from './engine-usage.js';
import type { GatewayMetrics } from './gateway-metrics.js';
import { badRequest, errorBody, type GatewayError, GatewayRefusal, gatewayError } from './openai-errors.js';

export interface GatewayOptions {
  /** The control plane: in this process (inProcessBackend) or over gRPC (remoteBackend). */
  readonly backend: GatewayBackend;
  readonly logger: Logger;
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  /** Budget of a request without x-cpn-latency-budget-ms (default 2000 ms). */
  readonly defaultBudgetMs?: number;
  /** Where a request without x-cpn-region comes from (undefined: the header is required). */
  readonly defaultRegion?: string;
  readonly defaultAccessPoint?: string;
  /** Requests in flight at most (default 1024); more are answered 503. */
  readonly maxConcurrent?: number;
  /** Request bodies larger than this are refused with 413 (default 8 MiB). */
  readonly maxBodyBytes?: number;
  /** A completion's response body larger than this is cut (default 64 MiB). */
  readonly maxResponseBytes?: number;
  /** How long the engine may take to answer headers, beyond the request's budget (default 30 s). */
  readonly upstreamHeadersTimeoutMs?: number;
  /**
   * Ask engines for usage in every streamed chunk (vLLM's continuous_usage_stats; default true),
   * so that a stream cut short is billed what the engine had produced. Off: only the final usage,
   * and a cut stream is billed by the estimate rule (usageSoFar); cheaper per chunk.
   */
  readonly continuousUsage?: boolean;
  /** Where to count requests, first bytes, engine failures and tokens (off when absent). */
  readonly metrics?: GatewayMetrics;
  /** Also answer GET /metrics with this registry (a gateway on its own has no other port). */
  readonly metricsRegistry?: Registry;
}

export interface RunningGateway {
  readonly port: number;
  readonly address: string;
  /** Stops accepting; open streams may finish for `graceMs`, then are cut. */
  close(graceMs?: number): Promise<void>;
}

const ROUTED_PATHS = ['/v1/chat/completions', '/v1/completions'] as const;
const MAX_TOKENS_DEFAULT = 1024;
/** Choices (`n`) per request at most. */
const MAX_CHOICES = 128;
/** A prompt's tokens as an engine reports them, at most (beyond: a hostile or broken count). */
const MAX_PROMPT_TOKENS = 10_000_000;

/** The engine's URL for `path` (/v1/...), under any path the node's endpoint has. */
function engineUrl(endpoint: string, path: string): URL {
  return new URL(path.slice(1), endpoint.endsWith('/') ? endpoint : `${endpoint}/`);
}

/** At most `limit` bytes of a body as text; the rest is not read. */
async function firstBytes(
  body: AsyncIterable<unknown> & { destroy(): void },
  limit: number,
): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      chunks.push(chunk as Buffer);
      size += (chunk as Buffer).length;
      if (size >= limit) break;
    }
  } catch {
    // what arrived is enough
  } finally {
    body.destroy();
  }
  return Buffer.concat(chunks).subarray(0, limit).toString('utf8');
}

/** Resolves when `raw` can take more, or is gone; leaves no listener behind. */
function drained(raw: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      raw.off('drain', done);
      raw.off('close', done);
      resolve();
    };
    raw.on('drain', done);
    raw.on('close', done);
  });
}
/** Nodes a request is placed on at most: the first and two fallbacks. */
const MAX_ATTEMPTS = 3;
const MAX_TOKENS_LIMIT = 100_000_000;

function header(request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function positiveNumber(name: string, raw: string | undefined, fallback: number, max: number): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0 || value > max)
    throw new GatewayRefusal(
      badRequest(
        `${name} must be a number of milliseconds from 1 to ${max}, got ${JSON.stringify(raw.slice(0, 40))}`,
      ),
    );
  return value;
}

function tokenCount(name: string, value: unknown, fallback: number): number {
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > MAX_TOKENS_LIMIT)
    throw new GatewayRefusal(
      badRequest(`${name} must be an integer from 1 to ${MAX_TOKENS_LIMIT}`, 'invalid_value'),
    );
  return value;
}

function allowedLevels(raw: string | undefined): Level[] {
  if (raw === undefined) return [];
  return raw.split(',').map((part) => {
    const level = part.trim().toUpperCase() as Level;
    if (!LEVELS.includes(level))
      throw new GatewayRefusal(
        badRequest(
          `x-cpn-allowed-levels must list levels among ${LEVELS.join(', ')}, got ${JSON.stringify(part.slice(0, 20))}`,
        ),
      );
    return level;
  });
}

/** A rough prompt size for reserving quota before the engine counts (4 characters a token). */
function estimateInputTokens(body: Record<string, unknown>): number {
  const prompt = body.messages ?? body.prompt ?? '';
  return Math.max(1, Math.ceil(JSON.stringify(prompt).length / 4));
}

export async function startGateway(options: GatewayOptions): Promise<RunningGateway> {
  const { backend, logger } = options;
  const maxConcurrent = options.maxConcurrent ?? 1024;
  const maxResponseBytes = options.maxResponseBytes ?? 64 * 1024 * 1024;
  let inFlight = 0;
  const app: FastifyInstance = Fastify({
    bodyLimit: options.maxBodyBytes ?? 8 * 1024 * 1024,
    logger: false,
    // Streams outlive a close: they are cut after the grace period instead.
    forceCloseConnections: 'idle',
  });

  const metrics = options.metrics;
  const continuousUsage = options.continuousUsage ?? true;
  const send = (reply: FastifyReply, error: GatewayError) => {
    metrics?.request(error.status);
    if (error.retryAfterS !== undefined) reply.header('retry-after', String(error.retryAfterS));
    return reply.code(error.status).type('application/json').send(errorBody(error));
  };

  app.setErrorHandler((error: Error & { statusCode?: number }, _request, reply) => {
    if (error instanceof GatewayRefusal) return send(reply, error.detail);
    const status = error.statusCode ?? 500;
    if (status === 413)
      return send(reply, gatewayError(413, 'invalid_request_error', 'body_too_large', error.message));
    if (status >= 400 && status < 500) return send(reply, badRequest(error.message));
    logger.error('gateway error', { err: error.stack ?? error.message });
    return send(
      reply,
      gatewayError(500, 'server_error', 'internal', 'internal error in the gateway; see its log'),
    );
  });
  app.setNotFoundHandler((request, reply) =>
    send(
      reply,
      gatewayError(404, 'invalid_request_error', 'not_found', `no route ${request.method} ${request.url}`),
    ),
  );

  const callerOf = (request: FastifyRequest) =>
    backend.identify(request.headers.authorization, header(request, 'x-cpn-tenant'));

  const registry = options.metricsRegistry;
  if (registry !== undefined) {
    app.get('/metrics', async (_request, reply) =>
      reply.type(registry.contentType).send(await registry.metrics()),
    );
  }

  app.get('/v1/models', async (request, reply) => {
    const models = await backend.models(await callerOf(request));
    return reply.send({
      object: 'list',
      data: models.map((id) => ({ id, object: 'model', created: 0, owned_by: 'cpn' })),
    });
  });

  for (const path of ROUTED_PATHS) {
    app.post(path, async (request, reply) => {
      if (inFlight >= maxConcurrent)
        return send(
          reply,
          gatewayError(
            503,
            'server_error',
            'gateway_busy',
            `the gateway is serving ${maxConcurrent} requests, its limit; retry shortly`,
            1,
          ),
        );
      inFlight += 1;
      metrics?.inFlight.inc();
      try {
        return await forward(path, request, reply);
      } finally {
        inFlight -= 1;
        metrics?.inFlight.dec();
      }
    });
  }

  async function forward(path: string, request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    const caller = await callerOf(request);
    const { tenant } = caller;
    const body = request.body;
    if (body === null || typeof body !== 'object' || Array.isArray(body))
      throw new GatewayRefusal(badRequest('the body must be a JSON object'));
    const fields = body as Record<string, unknown>;
    const model = fields.model;
    if (typeof model !== 'string' || model.length === 0 || model.length > 128 || !MODEL_PATTERN.test(model))
      throw new GatewayRefusal(
        badRequest('model must be a model name of letters, digits and ._:/@+-', 'invalid_model'),
      );
    if (fields.stream !== undefined && fields.stream !== null && typeof fields.stream !== 'boolean')
      throw new GatewayRefusal(badRequest('stream must be true or false', 'invalid_value'));
    const stream = fields.stream === true;
    const asked = fields.max_completion_tokens ?? fields.max_tokens;
    const perChoice = tokenCount('max_tokens', asked, MAX_TOKENS_DEFAULT);
    const choices = fields.n === undefined || fields.n === null ? 1 : fields.n;
    if (typeof choices !== 'number' || !Number.isSafeInteger(choices) || choices < 1 || choices > MAX_CHOICES)
      throw new GatewayRefusal(badRequest(`n must be an integer from 1 to ${MAX_CHOICES}`, 'invalid_value'));
    // The quota holds what the answer may cost: every choice at its most.
    const maxOutputTokens = perChoice * choices;
    const region = header(request, 'x-cpn-region') ?? options.defaultRegion;
    if (region === undefined)
      throw new GatewayRefusal(
        badRequest(
          'x-cpn-region is required: this gateway has no region of its own (cpn serve --gateway-region)',
        ),
      );
    if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/.test(region))
      throw new GatewayRefusal(badRequest('x-cpn-region must be a region code like CN-GD'));
    const accessPoint = header(request, 'x-cpn-access-point') ?? options.defaultAccessPoint ?? '';
    if (accessPoint.length > 128 || /[^\x21-\x7e]/.test(accessPoint))
      throw new GatewayRefusal(
        badRequest('x-cpn-access-point must be a printable name of at most 128 characters'),
      );
    let inputTokens: number;
    let forwarded: string;
    const streamOptions = (
      typeof fields.stream_options === 'object' && fields.stream_options !== null ? fields.stream_options : {}
    ) as { include_usage?: unknown; continuous_usage_stats?: unknown };
    // What usage the client sees: none, the final total (OpenAI's way), or every chunk's.
    const clientUsage: ClientUsage =
      streamOptions.include_usage !== true
        ? 'none'
        : streamOptions.continuous_usage_stats === true
          ? 'continuous'
          : 'final';
    try {
      inputTokens = estimateInputTokens(fields);
      forwarded = JSON.stringify({
        ...fields,
        // The engine stops where the quota hold ends.
        ...(asked === undefined || asked === null ? { max_tokens: MAX_TOKENS_DEFAULT } : {}),
        ...(stream
          ? {
              stream_options: {
                ...streamOptions,
                include_usage: true,
                ...(continuousUsage ? { continuous_usage_stats: true } : {}),
              },
            }
          : {}),
      });
    } catch (error) {
      if (error instanceof RangeError) throw new GatewayRefusal(badRequest('the body is nested too deeply'));
      throw error;
    }
    const route: RouteRequest = {
      requestId: '',
      tenant,
      model,
      client: { region, accessPoint, location: undefined },
      latencyBudgetMs: positiveNumber(
        'x-cpn-latency-budget-ms',
        header(request, 'x-cpn-latency-budget-ms'),
        options.defaultBudgetMs ?? 2000,
        3_600_000,
      ),
      inputTokens,
      cachedInputTokens: 0,
      maxOutputTokens,
      allowedLevels: allowedLevels(header(request, 'x-cpn-allowed-levels')),
      allowedRegions: [],
      allowDegraded: false,
      explain: false,
      maxFallbacks: 0,
    };
    const none: Usage = { inputTokens: 0, cachedInputTokens: 0, outputTokens: 0 };
    /** An engine's count, within what the request could have used (a hostile count cannot drain a quota). */
    const plausible = (usage: Usage): Usage => {
      const input = Math.min(usage.inputTokens, MAX_PROMPT_TOKENS);
      return {
        inputTokens: input,
        cachedInputTokens: Math.min(usage.cachedInputTokens, input),
        outputTokens: Math.min(usage.outputTokens, maxOutputTokens),
      };
    };
    const abort = new AbortController();
    const onClientGone = () => abort.abort();
    reply.raw.once('close', onClientGone);
    const started = performance.now();

    // Place, connect, and before the first byte reaches the client, fall back: a node that
    // refuses, fails (5xx) or cannot be reached is released and excluded, and the request is
    // placed again, at most MAX_ATTEMPTS times and within the request's latency budget.
    const failed = new Set<string>();
    let lastFailure: GatewayError | undefined;
    let placed: { placement: Placed; upstream: Awaited<ReturnType<typeof upstreamRequest>> } | undefined;
    for (let attempt = 0; placed === undefined; attempt += 1) {
      if (attempt > 0 && (attempt >= MAX_ATTEMPTS || performance.now() - started > route.latencyBudgetMs)) {
        reply.raw.off('close', onClientGone);
        return send(reply, lastFailure as GatewayError);
      }
      let placement: Placed | undefined;
      try {
        // (The request stream is destroyed once its body is read; the response tells if the client left.)
        placement = await backend.route(
          caller,
          failed.size === 0 ? route : { ...route, failedNodes: failed },
          () => reply.raw.destroyed,
        );
      } catch (error) {
        reply.raw.off('close', onClientGone);
        // After a failure, the engine's failure says more than "no other node".
        if (error instanceof GatewayRefusal && lastFailure !== undefined) return send(reply, lastFailure);
        throw error;
      }
      if (placement === undefined) return reply; // the client left before a slot was reserved
      try {
        const upstream = await upstreamRequest(engineUrl(placement.endpoint, path), {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            accept: stream ? 'text/event-stream' : 'application/json',
          },
          body: forwarded,
          signal: abort.signal,
          headersTimeout: route.latencyBudgetMs + (options.upstreamHeadersTimeoutMs ?? 30_000),
          bodyTimeout: 300_000,
        });
        if (upstream.statusCode >= 500) {
          const text = await firstBytes(upstream.body, 300);
          throw new Error(`answered ${upstream.statusCode}${text ? `: ${text}` : ''}`);
        }
        placed = { placement, upstream };
      } catch (error) {
        // Nothing was served: the reservation and its hold go back, no request on the bill.
        await backend.abandon(placement.reservationId);
        if (abort.signal.aborted) return reply;
        logger.warn('engine failed before answering; trying another node', {
          node: placement.nodeId,
          attempt: attempt + 1,
          err: (error as Error).message,
        });
        failed.add(placement.nodeId);
        metrics?.upstreamFailed(/^answered 5/.test((error as Error).message) ? 'engine_5xx' : 'unreachable');
        lastFailure = gatewayError(
          502,
          'server_error',
          'engine_failed',
          `node ${placement.nodeId} failed before answering: ${(error as Error).message}`,
        );
      }
    }
    const { placement, upstream } = placed;
    const settle = (usage: Usage, success: boolean) =>
      backend.settle(placement.reservationId, usage, success);

    const firstByte = () => metrics?.firstByteAfter((performance.now() - started) / 1000, placement.level);
    const cpnHeaders = {
      'x-cpn-node': placement.nodeId,
      'x-cpn-level': placement.level,
      'x-cpn-ttft-estimate-ms': placement.ttftMs.toFixed(1),
    };
    const log = (status: number, usage: Usage, outcome: string) => {
      metrics?.request(status, { model, level: placement.level });
      metrics?.billed(usage);
      logger.info('gateway request', {
        tenant,
        model,
        node: placement.nodeId,
        level: placement.level,
        stream,
        status,
        outcome,
        ttfbMs: Math.round(performance.now() - started),
        inputTokens: usage.inputTokens,
        cachedInputTokens: usage.cachedInputTokens,
        outputTokens: usage.outputTokens,
      });
    };

    if (upstream.statusCode !== 200 || !stream) {
      // A completion (or an engine's error): read it whole, bounded, and settle from its usage.
      firstByte();
      const chunks: Buffer[] = [];
      let size = 0;
      try {
        for await (const chunk of upstream.body) {
          size += (chunk as Buffer).length;
          if (size > maxResponseBytes)
            throw new Error(`the engine's answer exceeds ${maxResponseBytes} bytes`);
          chunks.push(chunk as Buffer);
        }
      } catch (error) {
        reply.raw.off('close', onClientGone);
        upstream.body.destroy();
        await settle(none, false);
        if (abort.signal.aborted) return reply;
        return send(
          reply,
          gatewayError(
            502,
            'server_error',
            'engine_failed',
            `node ${placement.nodeId}: ${(error as Error).message}`,
          ),
        );
      }
      reply.raw.off('close', onClientGone);
      const text = Buffer.concat(chunks);
      const ok = upstream.statusCode >= 200 && upstream.statusCode < 300;
      // No usage in the answer: the estimate (4 characters a token, prompt and answer).
      const usage = ok
        ? plausible(
            engineUsage(text) ?? {
              inputTokens,
              cachedInputTokens: 0,
              outputTokens: Math.ceil(text.length / 4),
            },
          )
        : none;
      await settle(usage, ok);
      log(upstream.statusCode, usage, ok ? 'completed' : 'engine_error');
      const contentType = upstream.headers['content-type'];
      return reply
        .code(ok ? 200 : upstream.statusCode >= 500 ? 502 : upstream.statusCode)
        .headers(cpnHeaders)
        .type(typeof contentType === 'string' ? contentType : 'application/json')
        .send(text);
    }

    // A stream: pass events through as they come, with back-pressure, metering on the way.
    reply.hijack();
    const raw: ServerResponse = reply.raw;
    raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      ...cpnHeaders,
    });
    const meter = new StreamMeter(clientUsage);
    let failure: string | undefined;
    let first = true;
    try {
      for await (const chunk of upstream.body) {
        if (first) firstByte();
        first = false;
        const out = meter.push(chunk as Buffer);
        if (out !== '' && !raw.write(out)) await drained(raw);
        if (raw.destroyed) break;
      }
      const rest = meter.flush();
      if (rest !== '' && !raw.destroyed) raw.write(rest);
    } catch (error) {
      failure = (error as Error).message;
    }
    raw.off('close', onClientGone);
    const clientGone = raw.destroyed || abort.signal.aborted;
    if (clientGone) upstream.body.destroy();
    const complete = meter.done && failure === undefined && !clientGone;
    if (!complete && !clientGone) metrics?.upstreamFailed('stream_broken');
    if (!complete && !clientGone && !raw.destroyed) {
      // The engine broke off: tell the client in the stream, the only way left after the headers.
      raw.write(
        `data: ${errorBody(gatewayError(502, 'server_error', 'engine_stream_broken', `node ${placement.nodeId} ended the stream early${failure ? `: ${failure}` : ''}`))}\n\n`,
      );
    }
    const usage = plausible(usageSoFar(meter, inputTokens));
    await settle(usage, complete);
    log(200, usage, complete ? 'completed' : clientGone ? 'client_disconnected' : 'engine_broke_off');
    if (!raw.destroyed) raw.end();
    return reply;
  }

  await app.listen({ host: options.host, port: options.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : options.port;
  return {
    port,
    address: `${options.host.includes(':') ? `[${options.host}]` : options.host}:${port}`,
    async close(graceMs = 10_000) {
      const cut = setTimeout(() => app.server.closeAllConnections(), graceMs);
      cut.unref();
      // A connection whose stream ends during the close is idle from then on: close it then.
      const idle = setInterval(() => app.server.closeIdleConnections(), 100);
      idle.unref();
      await app.close();
      clearTimeout(cut);
      clearInterval(idle);
      // Only now: the streams that finished during the close have settled through it.
      backend.close();
    },
  };
}
