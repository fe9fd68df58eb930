// The OpenAI-compatible gateway with the official `openai` SDK against a fake vLLM-style engine:
// completions and streams are routed, forwarded and billed from the engine's own usage; errors
// are OpenAI-shaped with the right status; a client that leaves mid-stream cancels the engine's
// request and is billed for what the engine reported until then.
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Authenticator } from '../../src/auth/authenticator.js';
import { DEFAULT_LATENCY_MODEL } from '../../src/core/latency.js';
import type { Package } from '../../src/core/quota.js';
import { type GatewayBackend, inProcessBackend } from '../../src/gateway/backend.js';
import { type RunningGateway, startGateway } from '../../src/gateway/gateway.js';
import { GatewayMetrics } from '../../src/gateway/gateway-metrics.js';
import { remoteBackend } from '../../src/gateway/remote-backend.js';
import { silentLogger } from '../../src/ops/log.js';
import { type RunningServer, startServer } from '../../src/server/server.js';
import { MemoryStore } from '../../src/store/memory/memory-store.js';
import { type FakeEngine, startFakeEngine } from '../helpers/fake-engine.js';
import { offer, spec } from '../helpers/fixtures.js';
import { TEST_OPERATOR_KEY } from '../helpers/grpc.js';

const PACKAGE: Package = {
  name: 'starter',
  quotaPoints: 1_000_000,
  period: { kind: 'calendar-month', timeZone: 'Asia/Shanghai' },
  weights: { m: { inputPer1k: 1, outputPer1k: 4, cachedInputPer1k: 0 } },
  allowedLevels: [],
  overQuota: 'REJECT',
  throttleRequestsPerS: 0,
  throttleBudgetMs: 0,
  meter: 'trusted',
};

type BackendFactory = (server: RunningServer, store: MemoryStore) => GatewayBackend;

const BACKENDS: [string, BackendFactory][] = [
  [
    'in process',
    (server, store) =>
      inProcessBackend(
        server.plane,
        new Authenticator({ mode: 'api-key', accounts: store.accounts, clock: Date.now }),
        silentLogger,
      ),
  ],
  [
    'over gRPC (cpn gateway --server)',
    (server) =>
      remoteBackend({ server: `127.0.0.1:${server.port}`, apiKey: TEST_OPERATOR_KEY, logger: silentLogger }),
  ],
];

describe.each(BACKENDS)('OpenAI-compatible gateway, control plane %s', (_name, makeBackend) => {
  let engine: FakeEngine;
  /** The engine of a dearer node in the same place: where fallbacks land. */
  let spare: FakeEngine;
  let store: MemoryStore;
  let server: RunningServer;
  let gateway: RunningGateway;
  let key: string;
  let sdk: OpenAI;

  const usageOf = (tenant: string) => {
    const lines = server.plane.ledgers(tenant).flatMap((ledger) => Object.values(ledger.lines));
    return lines.reduce(
      (sum, line) => ({
        requests: sum.requests + line.requests,
        input: sum.input + line.inputTokens,
        cached: sum.cached + line.cachedInputTokens,
        output: sum.output + line.outputTokens,
      }),
      { requests: 0, input: 0, cached: 0, output: 0 },
    );
  };
  const tenantKey = async (tenant: string, pkg: Package | undefined) => {
    await server.plane.accounts.createTenant(tenant, tenant);
    await server.plane.accounts.setPackage(tenant, pkg);
    const created = await server.plane.accounts.createApiKey({ role: 'client', name: tenant, tenant });
    if (created.kind !== 'created') throw new Error('no key');
    return created.secret;
  };
  const client = (apiKey: string) =>
    new OpenAI({ baseURL: `http://127.0.0.1:${gateway.port}/v1`, apiKey, maxRetries: 0, timeout: 20_000 });

  beforeAll(async () => {
    engine = await startFakeEngine();
    spare = await startFakeEngine({ outputTokens: 3 });
    store = new MemoryStore({ clock: Date.now, latency: DEFAULT_LATENCY_MODEL });
    server = await startServer({
      store,
      logger: silentLogger,
      port: 0,
      bootstrapOperatorKey: TEST_OPERATOR_KEY,
    });
    await server.plane.registerNode(
      { ...spec({ id: 'gd-1', offers: [offer({ model: 'm', maxConcurrency: 64 })] }), endpoint: engine.url },
      { ttlS: 0, permanent: true },
    );
    await server.plane.registerNode(
      {
        ...spec({
          id: 'gd-2',
          offers: [offer({ model: 'm', maxConcurrency: 64, price: { inputPerMtok: 3 } })],
        }),
        endpoint: spare.url,
      },
      { ttlS: 0, permanent: true },
    );
    gateway = await startGateway({
      backend: makeBackend(server, store),
      logger: silentLogger,
      host: '127.0.0.1',
      port: 0,
      defaultRegion: 'CN-GD',
      metrics: new GatewayMetrics(server.metrics.registry),
    });
    key = await tenantKey('acme', PACKAGE);
    sdk = client(key);
  });
  afterEach(() => {
    engine.setOptions({});
    spare.setOptions({ outputTokens: 3 });
  });
  afterAll(async () => {
    await gateway?.close(1000);
    await server?.shutdown(1000);
    await engine?.close();
    await spare?.close();
  });

  it('a chat completion is routed to the node, answered, and billed what the engine reported', async () => {
    const before = usageOf('acme');
    const { data, response } = await sdk.chat.completions
      .create({ model: 'm', messages: [{ role: 'user', content: 'hello' }], max_tokens: 50 })
      .withResponse();
    expect(data.choices[0]?.message.content).toBe('tok tok tok tok tok');
    expect(response.headers.get('x-cpn-node')).toBe('gd-1');
    expect(response.headers.get('x-cpn-level')).toBe('PROVINCE');
    expect(Number(response.headers.get('x-cpn-ttft-estimate-ms'))).toBeGreaterThan(0);
    const after = usageOf('acme');
    expect({
      requests: after.requests - before.requests,
      input: after.input - before.input,
      cached: after.cached - before.cached,
      output: after.output - before.output,
    }).toEqual({ requests: 1, input: 12, cached: 4, output: 5 });
    expect(engine.requests.at(-1)?.body).toMatchObject({ model: 'm', max_tokens: 50 });
  });

  it('a streamed completion passes chunk by chunk, without the usage the client did not ask for, billed once', async () => {
    engine.setOptions({ outputTokens: 7, promptTokens: 30, cachedTokens: 10 });
    const before = usageOf('acme');
    const stream = await sdk.chat.completions.create({
      model: 'm',
      messages: [{ role: 'user', content: 'stream please' }],
      stream: true,
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks).toHaveLength(7);
    expect(chunks.every((chunk) => chunk.usage === undefined || chunk.usage === null)).toBe(true);
    expect(chunks.map((chunk) => chunk.choices[0]?.delta.content).join('')).toBe('tok '.repeat(7));
    // The gateway asked the engine for usage on the client's behalf.
    expect(engine.requests.at(-1)?.body.stream_options).toEqual({
      include_usage: true,
      continuous_usage_stats: true,
    });
    // [DONE] can reach the client just before the settlement lands.
    await expect.poll(() => usageOf('acme').requests - before.requests, { timeout: 5000 }).toBe(1);
    const after = usageOf('acme');
    expect(after.input - before.input).toBe(30);
    expect(after.cached - before.cached).toBe(10);
    expect(after.output - before.output).toBe(7);
    expect(after.requests - before.requests).toBe(1);
  });

  it('a client that asks for usage in the stream gets it', async () => {
    const stream = await sdk.chat.completions.create({
      model: 'm',
      messages: [{ role: 'user', content: 'x' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
    expect(usage).toMatchObject({ prompt_tokens: 12, completion_tokens: 5 });
  });

  it('legacy completions work too', async () => {
    const completion = await sdk.completions.create({ model: 'm', prompt: 'once upon', max_tokens: 5 });
    expect(completion.choices[0]?.text).toBe('tok tok tok tok tok');
  });

  it('a node that fails before the first byte: the request lands on the fallback, billed once, there', async () => {
    engine.setOptions({ fail: 'refuse' });
    const before = usageOf('acme');
    const seenBySpare = spare.requests.length;
    const stream = await sdk.chat.completions
      .create({ model: 'm', messages: [{ role: 'user', content: 'x' }], stream: true })
      .withResponse();
    expect(stream.response.headers.get('x-cpn-node')).toBe('gd-2');
    let chunks = 0;
    for await (const _chunk of stream.data) chunks += 1;
    expect(chunks).toBe(3);
    expect(spare.requests.length).toBe(seenBySpare + 1);
    await expect.poll(() => usageOf('acme').requests - before.requests, { timeout: 5000 }).toBe(1);
    const after = usageOf('acme');
    expect(after.requests - before.requests).toBe(1);
    expect(after.output - before.output).toBe(3);
    // Nothing is left reserved on the node that failed.
    expect([...server.plane.reservedOn('gd-1').values()].reduce((a, b) => a + b, 0)).toBe(0);
    // ...and no quota is held for it: both holds are gone, the failed one without a bill line.
    expect(server.plane.ledgers('acme').reduce((sum, ledger) => sum + ledger.heldCount, 0)).toBe(0);
  });

  it('a client leaving mid-stream cancels the engine request and is billed what the engine reported', async () => {
    engine.setOptions({ outputTokens: 200, chunkDelayMs: 10 });
    const before = usageOf('acme');
    const aborted = engine.nextAbort();
    const controller = new AbortController();
    const stream = await sdk.chat.completions.create(
      { model: 'm', messages: [{ role: 'user', content: 'long' }], stream: true },
      { signal: controller.signal },
    );
    let seen = 0;
    try {
      for await (const _chunk of stream) {
        seen += 1;
        if (seen === 5) controller.abort();
      }
    } catch {
      // the SDK may or may not throw on its own abort
    }
    expect(seen).toBeGreaterThanOrEqual(5);
    await aborted;
    await expect.poll(() => usageOf('acme').requests - before.requests, { timeout: 5000 }).toBe(1);
    const billed = usageOf('acme').output - before.output;
    expect(billed).toBeGreaterThanOrEqual(5);
    expect(billed).toBeLessThan(200);
  });

  it('an engine that breaks off mid-stream: the client sees an error, usage so far is billed once', async () => {
    engine.setOptions({ outputTokens: 10, fail: 'break' });
    const before = usageOf('acme');
    const stream = await sdk.chat.completions.create({
      model: 'm',
      messages: [{ role: 'user', content: 'x' }],
      stream: true,
    });
    await expect(
      (async () => {
        for await (const _chunk of stream) {
          // drain
        }
      })(),
    ).rejects.toThrow(/ended the stream early/);
    // The client may see the error event before the settlement lands (over gRPC, one more call).
    await expect.poll(() => usageOf('acme').requests - before.requests, { timeout: 5000 }).toBe(1);
    const after = usageOf('acme');
    expect(after.output - before.output).toBe(5);
  });

  it('errors are OpenAI-shaped with the status the SDK acts on', async () => {
    const bad = client('cpn_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
    await expect(bad.chat.completions.create({ model: 'm', messages: [] })).rejects.toMatchObject({
      status: 401,
      code: 'invalid_api_key',
    });
    await expect(sdk.chat.completions.create({ model: 'other', messages: [] })).rejects.toMatchObject({
      status: 403,
      code: 'model_not_in_package',
    });
    await expect(
      sdk.chat.completions.create(
        { model: 'm', messages: [] },
        { headers: { 'x-cpn-latency-budget-ms': '0.5' } },
      ),
    ).rejects.toMatchObject({ status: 504, code: 'latency_budget_impossible' });
    await expect(
      sdk.chat.completions.create(
        { model: 'm', messages: [] },
        { headers: { 'x-cpn-latency-budget-ms': 'soon' } },
      ),
    ).rejects.toMatchObject({ status: 400 });
    engine.setOptions({ fail: 'refuse' });
    spare.setOptions({ fail: 'refuse' });
    await expect(sdk.chat.completions.create({ model: 'm', messages: [] })).rejects.toMatchObject({
      status: 502,
      code: 'engine_failed',
    });
  });

  it('hostile bodies are 400s: a non-boolean stream, n out of range, nesting too deep', async () => {
    const post = (body: string) =>
      fetch(`http://127.0.0.1:${gateway.port}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body,
      });
    for (const body of [
      '{"model":"m","messages":[],"stream":1}',
      '{"model":"m","messages":[],"stream":"true"}',
      '{"model":"m","messages":[],"n":0}',
      `{"model":"m","messages":${'['.repeat(50_000)}${']'.repeat(50_000)}}`,
    ]) {
      const response = await post(body);
      expect(response.status, body.slice(0, 60)).toBe(400);
      expect(((await response.json()) as { error: { type: string } }).error.type).toBe(
        'invalid_request_error',
      );
    }
  });

  it('the engine is told the max_tokens the quota holds; an answer without usage is billed the estimate; absurd counts are capped', async () => {
    await sdk.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] });
    expect(engine.requests.at(-1)?.body.max_tokens).toBe(1024);
    engine.setOptions({ usage: 'none' });
    let before = usageOf('acme');
    await sdk.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hello there' }] });
    let after = usageOf('acme');
    expect(after.requests - before.requests).toBe(1);
    expect(after.input - before.input).toBeGreaterThan(0);
    expect(after.output - before.output).toBeGreaterThan(0);
    engine.setOptions({ usage: 'huge' });
    before = usageOf('acme');
    await sdk.chat.completions.create({
      model: 'm',
      messages: [{ role: 'user', content: 'x' }],
      max_tokens: 7,
    });
    after = usageOf('acme');
    expect(after.output - before.output).toBe(7);
    expect(after.input - before.input).toBeLessThanOrEqual(10_000_000);
  });

  it('an operator key acts for the tenant in x-cpn-tenant, which must exist', async () => {
    const post = (tenant: string) =>
      fetch(`http://127.0.0.1:${gateway.port}/v1/chat/completions`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${TEST_OPERATOR_KEY}`,
          'content-type': 'application/json',
          'x-cpn-tenant': tenant,
        },
        body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x' }] }),
      });
    const ghost = await post('ghost');
    expect(ghost.status).toBe(404);
    expect(((await ghost.json()) as { error: { code: string } }).error.code).toBe('tenant_not_found');
    const before = usageOf('acme').requests;
    expect((await post('acme')).status).toBe(200);
    expect(usageOf('acme').requests - before).toBe(1);
  });

  it('over quota under REJECT is 429 insufficient_quota with Retry-After', async () => {
    const tiny = await tenantKey('tiny', { ...PACKAGE, quotaPoints: 1 });
    const response = await fetch(`http://127.0.0.1:${gateway.port}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tiny}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'm',
        messages: [{ role: 'user', content: 'x'.repeat(4000) }],
        max_tokens: 1000,
      }),
    });
    expect(response.status).toBe(429);
    expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(await response.json()).toMatchObject({
      error: { type: 'insufficient_quota', code: 'quota_exceeded' },
    });
  });

  it('over quota under THROTTLE: served at the throttle rate, beyond it 429 rate_limit_error with Retry-After', async () => {
    const throttled = client(
      await tenantKey('slow', {
        ...PACKAGE,
        quotaPoints: 1,
        overQuota: 'THROTTLE',
        throttleRequestsPerS: 1,
        throttleBudgetMs: 60_000,
      }),
    );
    // Ten at once against one request a second: some are served, the rest told when to retry.
    const outcomes = await Promise.allSettled(
      Array.from({ length: 10 }, () =>
        throttled.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] }),
      ),
    );
    const served = outcomes.filter((outcome) => outcome.status === 'fulfilled');
    const limited = outcomes.flatMap((outcome) => (outcome.status === 'rejected' ? [outcome.reason] : []));
    expect(served.length).toBeGreaterThanOrEqual(1);
    expect(limited.length).toBeGreaterThanOrEqual(1);
    for (const error of limited) {
      expect(error).toMatchObject({ status: 429, code: 'rate_limited', type: 'rate_limit_error' });
      expect(Number(error.headers?.get('retry-after'))).toBeGreaterThan(0);
    }
  });

  it('over quota under PAY_AS_YOU_GO: served, and the tokens beyond the quota are billed at list price', async () => {
    const paying = client(
      await tenantKey('payg', { ...PACKAGE, quotaPoints: 1, overQuota: 'PAY_AS_YOU_GO' }),
    );
    await paying.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] });
    const lines = server.plane.ledgers('payg').flatMap((ledger) => Object.values(ledger.lines));
    expect(lines.reduce((sum, line) => sum + line.overQuotaTokens, 0)).toBeGreaterThan(0);
    expect(lines.reduce((sum, line) => sum + line.overQuotaMoney, 0)).toBeGreaterThan(0);
  });

  it('counts requests by model, level and status, first bytes, engine failures and tokens', async () => {
    const text = await server.metrics.registry.metrics();
    expect(text).toMatch(/^cpn_gateway_requests_total\{model="m",level="PROVINCE",status="200"\} \d+$/m);
    expect(text).toMatch(/^cpn_gateway_requests_total\{model="none",level="none",status="401"\} 1$/m);
    expect(text).toMatch(/^cpn_gateway_first_byte_seconds_count\{level="PROVINCE"\} \d+$/m);
    expect(text).toMatch(/^cpn_gateway_upstream_errors_total\{kind="engine_5xx"\} \d+$/m);
    expect(text).toMatch(/^cpn_gateway_upstream_errors_total\{kind="stream_broken"\} 1$/m);
    expect(text).toMatch(/^cpn_gateway_tokens_total\{kind="output"\} [1-9]\d*$/m);
    expect(text).toMatch(/^cpn_gateway_requests_in_flight 0$/m);
  });

  it('closing the gateway lets an open stream finish and refuses new connections', async () => {
    const closing = await startGateway({
      backend: makeBackend(server, store),
      logger: silentLogger,
      host: '127.0.0.1',
      port: 0,
      defaultRegion: 'CN-GD',
    });
    engine.setOptions({ outputTokens: 20, chunkDelayMs: 20 });
    const requestsBefore = usageOf('acme').requests;
    const sdkClosing = new OpenAI({
      baseURL: `http://127.0.0.1:${closing.port}/v1`,
      apiKey: key,
      maxRetries: 0,
    });
    const stream = await sdkClosing.chat.completions.create({
      model: 'm',
      messages: [{ role: 'user', content: 'x' }],
      stream: true,
    });
    const closed = closing.close(20_000);
    let chunks = 0;
    for await (const _chunk of stream) chunks += 1;
    expect(chunks).toBe(20);
    await closed;
    // Settled through the backend before it closed.
    await expect.poll(() => usageOf('acme').requests - requestsBefore, { timeout: 5000 }).toBe(1);
    await expect(sdkClosing.models.list()).rejects.toThrow();
  });

  it('GET /v1/models lists the package models that a live node serves', async () => {
    const models = await sdk.models.list();
    expect(models.data.map((model) => model.id)).toEqual(['m']);
  });
});
