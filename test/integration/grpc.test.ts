// Every RPC and every status code over real gRPC on loopback.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { type Client, credentials, loadPackageDefinition, status } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { RegisterNodeRequest } from '../../src/gen/cpn/v1/registry.js';
import { LatencySource, type RouteRequest, RouteResponse, Verdict } from '../../src/gen/cpn/v1/scheduler.js';
import { Level, type NodeSpec, NodeState } from '../../src/gen/cpn/v1/types.js';
import { reservationSigner } from '../../src/plane/control-plane.js';
import { ROUTE_RESPONSE_TRAILER } from '../../src/server/services.js';
import { LIMITS } from '../../src/server/validate.js';
import { ALL_NODES, ok, rpc, startTestServer, type TestServer } from '../helpers/grpc.js';

const GUANGZHOU = { lat: 23.129, lon: 113.264 };

function nodeSpec(
  id: string,
  overrides: Partial<NodeSpec> = {},
  capacity = { maxConcurrency: 2, maxQueue: 1 },
): NodeSpec {
  return {
    id,
    level: Level.LEVEL_PROVINCE,
    region: 'CN-GD',
    parentId: '',
    endpoint: `https://${id}.example:8000`,
    location: GUANGZHOU,
    gpus: [{ type: 'L20', count: 8, memoryGib: 48 }],
    models: [
      {
        model: 'qwen3-32b',
        ...capacity,
        prefillTokensPerS: 16_000,
        decodeTokensPerS: 45,
        price: { inputPerMtok: 2, outputPerMtok: 8, cachedInputPerMtok: 0.2 },
      },
    ],
    labels: { site: 'test' },
    ...overrides,
  };
}

function routeRequest(overrides: Partial<RouteRequest> = {}): RouteRequest {
  return {
    requestId: 'req-1',
    tenant: 'acme',
    model: 'qwen3-32b',
    client: { region: 'CN-GD', accessPoint: '', location: undefined },
    latencyBudgetMs: 500,
    inputTokens: 256,
    cachedInputTokens: 0,
    maxOutputTokens: 128,
    allowedLevels: [],
    allowedRegions: [],
    allowDegraded: false,
    explain: false,
    maxFallbacks: 2,
    ...overrides,
  };
}

const register = (t: TestServer, spec: NodeSpec, ttlS = 30, permanent = false) =>
  ok<RegisterNodeRequest, unknown>(t.registry, t.registry.registerNode, { spec, ttlS, permanent });

describe('gRPC control plane', () => {
  let t: TestServer;
  beforeEach(async () => {
    t = await startTestServer({ reservationTtlMs: 30_000 });
    return () => t.close();
  });

  describe('Registry', () => {
    it('registers, gets, lists with filters, re-registers and deregisters', async () => {
      const created = await ok(t.registry, t.registry.registerNode, {
        spec: nodeSpec('prov-gd'),
        ttlS: 30,
        permanent: false,
      });
      expect(created.created).toBe(true);
      expect(created.node?.state).toBe(NodeState.NODE_STATE_READY);
      await register(t, nodeSpec('edge-sz', { level: Level.LEVEL_EDGE }));
      await register(t, nodeSpec('hub-gs', { level: Level.LEVEL_CENTER, region: 'CN-GS' }));
      const again = await ok(t.registry, t.registry.registerNode, {
        spec: nodeSpec('prov-gd'),
        ttlS: 60,
        permanent: false,
      });
      expect(again.created).toBe(false);

      const got = await ok(t.registry, t.registry.getNode, { nodeId: 'prov-gd' });
      expect(got.node?.spec).toEqual(nodeSpec('prov-gd'));
      expect(got.node?.ttlS).toBe(60);

      const ids = async (level: Level, region: string, model: string) =>
        (await ok(t.registry, t.registry.listNodes, { ...ALL_NODES, level, region, model })).nodes.map(
          (n) => n.spec?.id,
        );
      expect(await ids(Level.LEVEL_UNSPECIFIED, '', '')).toEqual(['edge-sz', 'hub-gs', 'prov-gd']);
      expect(await ids(Level.LEVEL_EDGE, '', '')).toEqual(['edge-sz']);
      expect(await ids(Level.LEVEL_UNSPECIFIED, 'CN-GS', '')).toEqual(['hub-gs']);
      expect(await ids(Level.LEVEL_UNSPECIFIED, '', 'qwen3-32b')).toHaveLength(3);
      expect(await ids(Level.LEVEL_UNSPECIFIED, '', 'other')).toEqual([]);

      await ok(t.registry, t.registry.deregisterNode, { nodeId: 'edge-sz' });
      const gone = await rpc(t.registry, t.registry.getNode, { nodeId: 'edge-sz' });
      expect(gone.ok || gone.error.code).toBe(status.NOT_FOUND);
      const twice = await rpc(t.registry, t.registry.deregisterNode, { nodeId: 'edge-sz' });
      expect(twice.ok || twice.error.code).toBe(status.NOT_FOUND);
    });

    it('keeps a node alive with status reports; a silent node goes DOWN and must register again', async () => {
      await register(t, nodeSpec('n1'), 10);
      const load = [{ model: 'qwen3-32b', active: 1, queued: 0 }];
      const report = { nodeId: 'n1', load, gpuUtilization: 0.4, kvCacheUtilization: 0.2, healthy: true };
      t.advance(8_000);
      expect((await ok(t.registry, t.registry.reportStatus, report)).state).toBe(NodeState.NODE_STATE_READY);
      t.advance(8_000);
      const node = (await ok(t.registry, t.registry.getNode, { nodeId: 'n1' })).node;
      expect(node?.state).toBe(NodeState.NODE_STATE_READY);
      expect(node?.status?.load).toEqual(load);
      t.advance(3_000);
      expect((await ok(t.registry, t.registry.getNode, { nodeId: 'n1' })).node?.state).toBe(
        NodeState.NODE_STATE_DOWN,
      );
      const late = await rpc(t.registry, t.registry.reportStatus, report);
      expect(late.ok || [late.error.code, late.error.details]).toEqual([
        status.FAILED_PRECONDITION,
        expect.stringContaining('call RegisterNode again'),
      ]);
      const unknown = await rpc(t.registry, t.registry.reportStatus, { ...report, nodeId: 'nobody' });
      expect(unknown.ok || unknown.error.code).toBe(status.NOT_FOUND);
      const wrongModel = await rpc(t.registry, t.registry.reportStatus, {
        ...report,
        load: [{ model: 'not-offered', active: 1, queued: 0 }],
      });
      expect(wrongModel.ok || wrongModel.error.code).toBe(status.INVALID_ARGUMENT);
    });

    it('reports an unhealthy node as UNHEALTHY and routes around it', async () => {
      await register(t, nodeSpec('sick'));
      await ok(t.registry, t.registry.reportStatus, {
        nodeId: 'sick',
        load: [],
        gpuUtilization: 0,
        kvCacheUtilization: 0,
        healthy: false,
      });
      expect((await ok(t.registry, t.registry.getNode, { nodeId: 'sick' })).node?.state).toBe(
        NodeState.NODE_STATE_UNHEALTHY,
      );
      const routed = await rpc(t.scheduler, t.scheduler.route, routeRequest());
      expect(routed.ok || routed.error.code).toBe(status.NOT_FOUND);
    });

    it('drains and undrains a node; routing follows', async () => {
      await register(t, nodeSpec('cheap'));
      await register(
        t,
        nodeSpec('dear', {
          models: nodeSpec('x').models.map((m) => ({
            ...m,
            price: { inputPerMtok: 9, outputPerMtok: 36, cachedInputPerMtok: 0.9 },
          })),
        }),
      );
      const nodeOf = async () => (await ok(t.scheduler, t.scheduler.route, routeRequest())).placement?.nodeId;
      expect(await nodeOf()).toBe('cheap');
      const drained = await ok(t.registry, t.registry.drainNode, { nodeId: 'cheap', drain: true });
      expect(drained.node?.state).toBe(NodeState.NODE_STATE_DRAINING);
      expect(await nodeOf()).toBe('dear');
      await ok(t.registry, t.registry.drainNode, { nodeId: 'cheap', drain: false });
      expect(await nodeOf()).toBe('cheap');
      const missing = await rpc(t.registry, t.registry.drainNode, { nodeId: 'missing', drain: true });
      expect(missing.ok || missing.error.code).toBe(status.NOT_FOUND);
    });

    it('uses reported latency samples in place of the coordinate estimate', async () => {
      await register(t, nodeSpec('n1'));
      const before = await ok(t.scheduler, t.scheduler.route, routeRequest());
      expect(before.placement?.estimate?.latencySource).toBe(LatencySource.LATENCY_SOURCE_REGION_DEFAULT);
      const accepted = await ok(t.registry, t.registry.reportLatency, {
        samples: [
          { from: 'CN-GD', nodeId: 'n1', rttMs: 4.5 },
          { from: 'CN-GD', nodeId: 'unknown-node', rttMs: 1 },
        ],
      });
      expect(accepted.accepted).toBe(1);
      const after = await ok(t.scheduler, t.scheduler.route, routeRequest());
      expect(after.placement?.estimate).toMatchObject({
        networkRttMs: 4.5,
        latencySource: LatencySource.LATENCY_SOURCE_MEASURED,
      });
    });
  });

  describe('Scheduler', () => {
    it('places with a full estimate, a reservation and fallbacks', async () => {
      await register(t, nodeSpec('a'));
      await register(t, nodeSpec('b', { location: { lat: 24.8, lon: 113.6 } }));
      const response = await ok(
        t.scheduler,
        t.scheduler.route,
        routeRequest({
          latencyBudgetMs: 100,
          client: { region: 'CN-GD', accessPoint: '', location: GUANGZHOU },
        }),
      );
      expect(response.placement).toMatchObject({
        nodeId: 'a',
        endpoint: 'https://a.example:8000',
        level: Level.LEVEL_PROVINCE,
        region: 'CN-GD',
      });
      const e = response.placement?.estimate;
      expect(e?.latencySource).toBe(LatencySource.LATENCY_SOURCE_COORDINATES);
      expect(e?.ttftMs).toBeCloseTo((e?.networkRttMs ?? 0) + (e?.queueMs ?? 0) + (e?.prefillMs ?? 0), 9);
      expect(e?.prefillMs).toBeCloseTo(16, 9);
      expect(e?.cost).toBeCloseTo((256 * 2 + 128 * 8) / 1e6, 12);
      expect(response.reservationId).not.toBe('');
      expect(response.reservationExpiresAt?.getTime()).toBe(Date.UTC(2026, 10, 22, 12) + 30_000);
      expect(response.fallbacks.map((f) => f.nodeId)).toEqual(['b']);
      expect(response.summary).toContain('placed on a');
    });

    it('NOT_FOUND when no live node serves the model', async () => {
      await register(t, nodeSpec('a'));
      const outcome = await rpc(t.scheduler, t.scheduler.route, routeRequest({ model: 'deepseek-r1' }));
      expect(outcome.ok || [outcome.error.code, outcome.error.details]).toEqual([
        status.NOT_FOUND,
        expect.stringContaining('no registered node serves this model'),
      ]);
    });

    it('FAILED_PRECONDITION when nodes serve it but none meets the budget even idle, with explain in the trailer', async () => {
      await register(t, nodeSpec('a'));
      const outcome = await rpc(
        t.scheduler,
        t.scheduler.route,
        routeRequest({ latencyBudgetMs: 5, explain: true }),
      );
      expect(outcome.ok).toBe(false);
      if (outcome.ok) return;
      expect(outcome.error.code).toBe(status.FAILED_PRECONDITION);
      expect(outcome.error.details).toMatch(
        /model qwen3-32b within 5 ms from CN-GD: 1 node serves it, 1 over budget \(best \d+\.\d ms\); raise latency_budget_ms/,
      );
      const trailer = outcome.error.metadata.get(ROUTE_RESPONSE_TRAILER)[0];
      expect(trailer).toBeInstanceOf(Buffer);
      const partial = RouteResponse.decode(trailer as Buffer);
      expect(partial.explain.map((x) => [x.nodeId, x.verdict])).toEqual([['a', Verdict.VERDICT_OVER_BUDGET]]);
      expect(partial.explainTotal).toBe(1);
    });

    it('RESOURCE_EXHAUSTED after max_concurrency + max_queue placements, until a Release or the TTL', async () => {
      await register(t, nodeSpec('only', {}, { maxConcurrency: 2, maxQueue: 1 }));
      const ids: string[] = [];
      for (let i = 0; i < 3; i += 1) {
        ids.push(
          (await ok(t.scheduler, t.scheduler.route, routeRequest({ latencyBudgetMs: 60_000 }))).reservationId,
        );
      }
      const full = await rpc(t.scheduler, t.scheduler.route, routeRequest({ latencyBudgetMs: 60_000 }));
      expect(full.ok || [full.error.code, full.error.details]).toEqual([
        status.RESOURCE_EXHAUSTED,
        expect.stringContaining('1 at capacity'),
      ]);
      const listed = (await ok(t.registry, t.registry.getNode, { nodeId: 'only' })).node;
      expect(listed?.reserved).toEqual([{ model: 'qwen3-32b', reserved: 3 }]);

      const usage = { inputTokens: 256, cachedInputTokens: 64, outputTokens: 100 };
      expect(
        await ok(t.scheduler, t.scheduler.release, { reservationId: ids[0] as string, usage, success: true }),
      ).toEqual({
        released: true,
        nodeId: 'only',
        settledPoints: 0,
        returnedPoints: 0,
        awaitingTrustedMeter: false,
      });
      expect(
        await ok(t.scheduler, t.scheduler.release, { reservationId: ids[0] as string, usage, success: true }),
      ).toEqual({
        released: false,
        nodeId: 'only',
        settledPoints: 0,
        returnedPoints: 0,
        awaitingTrustedMeter: false,
      });
      expect(t.store.usageRecords()).toHaveLength(1);
      expect(t.store.usageRecords()[0]).toMatchObject({
        tenant: 'acme',
        nodeId: 'only',
        model: 'qwen3-32b',
        usage,
      });

      expect((await rpc(t.scheduler, t.scheduler.route, routeRequest({ latencyBudgetMs: 60_000 }))).ok).toBe(
        true,
      );
      expect((await rpc(t.scheduler, t.scheduler.route, routeRequest({ latencyBudgetMs: 60_000 }))).ok).toBe(
        false,
      );
      t.advance(30_000);
      expect((await rpc(t.scheduler, t.scheduler.route, routeRequest({ latencyBudgetMs: 60_000 }))).ok).toBe(
        true,
      );
    });

    it('reservations expire on the monotonic clock: stepping the wall clock back does not keep slots held', async () => {
      await register(t, nodeSpec('only', {}, { maxConcurrency: 1, maxQueue: 0 }));
      const route = () => rpc(t.scheduler, t.scheduler.route, routeRequest({ latencyBudgetMs: 60_000 }));
      expect((await route()).ok).toBe(true);
      expect((await route()).ok).toBe(false);
      t.stepWallClock(-3_600_000);
      t.advance(29_000);
      expect((await route()).ok).toBe(false);
      t.advance(1_000);
      expect((await route()).ok).toBe(true);
    });

    it('every id Route issues is accepted by Release, with the longest node id and model name', async () => {
      const nodeId = `n${'0'.repeat(62)}`;
      const model = `M${'m'.repeat(127)}`;
      const base = nodeSpec(nodeId);
      await register(t, { ...base, models: base.models.map((offer) => ({ ...offer, model })) });
      const placed = await ok(
        t.scheduler,
        t.scheduler.route,
        routeRequest({ model, latencyBudgetMs: 60_000 }),
      );
      expect(placed.reservationId.length).toBeGreaterThan(200);
      const usage = { inputTokens: 1, cachedInputTokens: 0, outputTokens: 1 };
      const release = () =>
        ok(t.scheduler, t.scheduler.release, { reservationId: placed.reservationId, usage, success: true });
      expect(await release()).toEqual({
        released: true,
        nodeId,
        settledPoints: 0,
        returnedPoints: 0,
        awaitingTrustedMeter: false,
      });
      expect(await release()).toEqual({
        released: false,
        nodeId,
        settledPoints: 0,
        returnedPoints: 0,
        awaitingTrustedMeter: false,
      });
    });

    it('a Release of another replica’s reservation records usage once; a forged id records nothing', async () => {
      await register(t, nodeSpec('only'));
      const usage = { inputTokens: 5, cachedInputTokens: 0, outputTokens: 5 };
      // Signed as another replica of this cluster signs: with the cluster's secret.
      const issued = Math.floor(t.server.plane.now() / 1000).toString(36);
      const token = reservationSigner(t.store.reservationSecret())(`peer9.1f.${issued}~only~qwen3-32b~acme`);
      const foreign = {
        reservationId: `peer9.1f.${issued}.${token}~only~qwen3-32b~acme`,
        usage,
        success: true,
      };
      expect(await ok(t.scheduler, t.scheduler.release, foreign)).toEqual({
        released: true,
        nodeId: 'only',
        settledPoints: 0,
        returnedPoints: 0,
        awaitingTrustedMeter: false,
      });
      expect(await ok(t.scheduler, t.scheduler.release, foreign)).toEqual({
        released: false,
        nodeId: 'only',
        settledPoints: 0,
        returnedPoints: 0,
        awaitingTrustedMeter: false,
      });
      expect(t.store.usageRecords().map((u) => [u.reservationId, u.nodeId, u.model])).toEqual([
        [foreign.reservationId, 'only', 'qwen3-32b'],
      ]);
      // An id this cluster did not issue (a guessed token) is refused and records nothing.
      const forged = await rpc(t.scheduler, t.scheduler.release, {
        ...foreign,
        reservationId: `peer9.1g.${issued}.0123456789abcdef~only~qwen3-32b~acme`,
      });
      expect(forged.ok || forged.error.code).toBe(status.PERMISSION_DENIED);
      expect(forged.ok || forged.error.details).toMatch(/not issued by this cluster/);
      expect(t.store.usageRecords()).toHaveLength(1);
      const malformed = await rpc(t.scheduler, t.scheduler.release, {
        reservationId: 'not-a-reservation',
        usage,
        success: true,
      });
      expect(malformed.ok || malformed.error.code).toBe(status.INVALID_ARGUMENT);
    });

    it('degraded placement when allowed', async () => {
      await register(t, nodeSpec('a'));
      const response = await ok(
        t.scheduler,
        t.scheduler.route,
        routeRequest({ latencyBudgetMs: 5, allowDegraded: true, explain: true }),
      );
      expect(response.degraded).toBe(true);
      expect(response.placement?.nodeId).toBe('a');
      expect(response.explain[0]?.verdict).toBe(Verdict.VERDICT_DEGRADED_SELECTED);
    });

    it('an expired deadline reserves nothing', async () => {
      await register(t, nodeSpec('one', {}, { maxConcurrency: 1, maxQueue: 0 }));
      const late = await rpc(t.scheduler, t.scheduler.route, routeRequest(), {
        deadline: new Date(Date.now() - 1000),
      });
      expect(late.ok || late.error.code).toBe(status.DEADLINE_EXCEEDED);
      expect((await rpc(t.scheduler, t.scheduler.route, routeRequest())).ok).toBe(true);
    });
  });

  describe('time-of-use pricing', () => {
    const offPeakHalfPrice = {
      utcOffsetHours: 8,
      rules: [
        {
          level: Level.LEVEL_PROVINCE,
          region: '',
          model: '',
          factor: 0.5,
          windowed: false,
          fromHour: 0,
          toHour: 0,
        },
      ],
    };

    it('a scheduled price change takes effect at its time, and the leader folds it into the current policy', async () => {
      await register(t, nodeSpec('a', {}, { maxConcurrency: 100, maxQueue: 0 }), 3600);
      const cost = async () =>
        (await ok(t.scheduler, t.scheduler.route, routeRequest())).placement?.estimate?.cost ?? 0;
      const before = await cost();
      const at = new Date(Date.UTC(2026, 10, 22, 12) + 60_000);
      const { scheduled } = await ok(t.registry, t.registry.schedulePricing, {
        at,
        policy: offPeakHalfPrice,
      });
      expect(scheduled?.at).toEqual(at);
      expect(await cost()).toBeCloseTo(before, 12);
      t.advance(59_999);
      expect(await cost()).toBeCloseTo(before, 12);
      t.advance(1);
      expect(await cost()).toBeCloseTo(before / 2, 12);

      const pending = await ok(t.registry, t.registry.getPricing, {});
      expect(pending.scheduled.map((c) => c.id)).toEqual([scheduled?.id]);
      expect(pending.effective?.rules).toHaveLength(1);
      expect(pending.current?.rules).toHaveLength(0);
      await t.server.jobs?.runOnce();
      const folded = await ok(t.registry, t.registry.getPricing, {});
      expect(folded.scheduled).toEqual([]);
      expect(folded.current?.rules).toHaveLength(1);
      expect(await cost()).toBeCloseTo(before / 2, 12);
    });

    it('cancels a scheduled change; refuses unknown ids and bad policies', async () => {
      const at = new Date(Date.UTC(2026, 10, 23));
      const { scheduled } = await ok(t.registry, t.registry.schedulePricing, {
        at,
        policy: offPeakHalfPrice,
      });
      await ok(t.registry, t.registry.cancelPricing, { id: scheduled?.id ?? '' });
      expect((await ok(t.registry, t.registry.getPricing, {})).scheduled).toEqual([]);
      const again = await rpc(t.registry, t.registry.cancelPricing, { id: scheduled?.id ?? '' });
      expect(again.ok || again.error.code).toBe(status.NOT_FOUND);
      const zero = {
        ...offPeakHalfPrice,
        rules: [{ ...offPeakHalfPrice.rules[0], factor: 0 }],
      } as typeof offPeakHalfPrice;
      const bad = await rpc(t.registry, t.registry.schedulePricing, { at, policy: zero });
      expect(bad.ok || [bad.error.code, bad.error.details]).toEqual([
        status.INVALID_ARGUMENT,
        expect.stringContaining('policy.rules[0].factor'),
      ]);
    });
  });

  describe('malformed input → INVALID_ARGUMENT, and the server keeps serving', () => {
    const routeCases: { name: string; request: Partial<RouteRequest>; mentions: string }[] = [
      { name: 'empty model', request: { model: '' }, mentions: 'model is required' },
      {
        name: 'budget 0',
        request: { latencyBudgetMs: 0 },
        mentions: 'latency_budget_ms must be a finite number > 0',
      },
      { name: 'negative budget', request: { latencyBudgetMs: -5 }, mentions: 'got -5' },
      { name: 'NaN budget', request: { latencyBudgetMs: Number.NaN }, mentions: 'got NaN' },
      {
        name: 'infinite budget',
        request: { latencyBudgetMs: Number.POSITIVE_INFINITY },
        mentions: 'got Infinity',
      },
      {
        name: 'cached > input',
        request: { inputTokens: 10, cachedInputTokens: 11 },
        mentions: 'cached_input_tokens must be <= input_tokens (10), got 11',
      },
      {
        name: '200 kB model name',
        request: { model: 'm'.repeat(200_000) },
        mentions: 'a 200000-character string',
      },
      {
        name: 'unspecified allowed level',
        request: { allowedLevels: [Level.LEVEL_UNSPECIFIED] },
        mentions: 'allowed_levels[0] must be one of LEVEL_CENTER',
      },
      { name: 'unknown allowed level', request: { allowedLevels: [9 as Level] }, mentions: 'got 9' },
      { name: 'no client position', request: { client: undefined }, mentions: 'client is required' },
      {
        name: 'more allowed levels than there are levels',
        request: { allowedLevels: [1, 2, 3, 4, 1] as Level[] },
        mentions: 'allowed_levels must be at most 4 entries',
      },
      {
        name: 'too many fallbacks',
        request: { maxFallbacks: 17 },
        mentions: 'max_fallbacks must be an integer from 0 to 16',
      },
      { name: 'bad region', request: { allowedRegions: ['CN GD'] }, mentions: 'allowed_regions[0]' },
    ];
    it.each(routeCases)('Route: $name', async ({ request, mentions }) => {
      await register(t, nodeSpec('a'));
      const outcome = await rpc(t.scheduler, t.scheduler.route, routeRequest(request));
      expect(outcome.ok || outcome.error.code).toBe(status.INVALID_ARGUMENT);
      if (!outcome.ok) expect(outcome.error.details).toContain(mentions);
      expect((await rpc(t.scheduler, t.scheduler.route, routeRequest())).ok).toBe(true);
    });

    const registerCases: { name: string; request: RegisterNodeRequest; mentions: string }[] = [
      {
        name: 'unspecified level',
        request: { spec: nodeSpec('a', { level: Level.LEVEL_UNSPECIFIED }), ttlS: 30, permanent: false },
        mentions: 'spec.level must be one of',
      },
      {
        name: 'bad node id',
        request: { spec: nodeSpec('Bad_ID'), ttlS: 30, permanent: false },
        mentions: 'spec.id must be a node id matching',
      },
      {
        name: 'missing spec',
        request: { spec: undefined, ttlS: 30, permanent: false },
        mentions: 'spec is required',
      },
      {
        name: 'ttl 0 without permanent',
        request: { spec: nodeSpec('a'), ttlS: 0, permanent: false },
        mentions: 'ttl_s is required',
      },
      {
        name: 'no models',
        request: { spec: nodeSpec('a', { models: [] }), ttlS: 30, permanent: false },
        mentions: 'spec.models must list at least one',
      },
      {
        name: 'zero concurrency',
        request: { spec: nodeSpec('a', {}, { maxConcurrency: 0, maxQueue: 0 }), ttlS: 30, permanent: false },
        mentions: 'spec.models[0].max_concurrency',
      },
      {
        name: 'latitude 91',
        request: { spec: nodeSpec('a', { location: { lat: 91, lon: 0 } }), ttlS: 30, permanent: false },
        mentions: 'spec.location.lat',
      },
      {
        name: 'a javascript: endpoint',
        request: { spec: nodeSpec('a', { endpoint: 'javascript:alert(1)' }), ttlS: 30, permanent: false },
        mentions: 'spec.endpoint must be host:port or an http, https, grpc or grpcs URL',
      },
      {
        name: 'a label with a newline',
        request: { spec: nodeSpec('a', { labels: { site: 'a\nb' } }), ttlS: 30, permanent: false },
        mentions: 'spec.labels[site] must be text without control characters',
      },
      {
        name: 'a label with a bidirectional override',
        request: { spec: nodeSpec('a', { labels: { site: 'abc\u202edef' } }), ttlS: 30, permanent: false },
        mentions: 'bidirectional overrides',
      },
      {
        name: 'its own parent',
        request: { spec: nodeSpec('a', { parentId: 'a' }), ttlS: 30, permanent: false },
        mentions: 'spec.parent_id must be another node than the node itself',
      },
      {
        name: 'an unknown parent',
        request: { spec: nodeSpec('a', { parentId: 'nowhere' }), ttlS: 30, permanent: false },
        mentions: 'spec.parent_id nowhere is not registered',
      },
    ];
    it('a status that reports a model twice, a repeated latency pair and a price change dated long ago are refused', async () => {
      await register(t, nodeSpec('dup'));
      const twice = await rpc(t.registry, t.registry.reportStatus, {
        nodeId: 'dup',
        load: [
          { model: 'qwen3-32b', active: 1, queued: 0 },
          { model: 'qwen3-32b', active: 0, queued: 0 },
        ],
        gpuUtilization: 0.1,
        kvCacheUtilization: 0.1,
        healthy: true,
      });
      expect(twice.ok || twice.error.details).toMatch(/load\[1\]\.model qwen3-32b is reported twice/);
      const repeated = await rpc(t.registry, t.registry.reportLatency, {
        samples: [
          { from: 'CN-GD', nodeId: 'dup', rttMs: 5 },
          { from: 'CN-GD', nodeId: 'dup', rttMs: 6 },
        ],
      });
      expect(repeated.ok || repeated.error.details).toMatch(/samples\[1\] repeats from CN-GD to node dup/);
      // Waiting price changes are bounded; the refusal names the limit.
      for (let i = 0; i < LIMITS.scheduledPricing; i += 1) {
        await ok(t.registry, t.registry.schedulePricing, {
          at: new Date(t.server.plane.now() + 3_600_000 + i),
          policy: { utcOffsetHours: 8, rules: [] },
        });
      }
      const tooMany = await rpc(t.registry, t.registry.schedulePricing, {
        at: new Date(t.server.plane.now() + 7_200_000),
        policy: { utcOffsetHours: 8, rules: [] },
      });
      expect(tooMany.ok || tooMany.error.code).toBe(status.RESOURCE_EXHAUSTED);
      expect(tooMany.ok || tooMany.error.details).toMatch(/at most 64 price changes can wait/);
      const ancient = await rpc(t.registry, t.registry.schedulePricing, {
        at: new Date(Date.UTC(-1000, 0, 1)),
        policy: { utcOffsetHours: 8, rules: [] },
      });
      expect(ancient.ok || ancient.error.code).toBe(status.INVALID_ARGUMENT);
      expect(ancient.ok || ancient.error.details).toMatch(/no earlier than a day ago/);
    });

    it('latency samples come from at most LIMITS.latencySources distinct names; known ones still report', async () => {
      await register(t, nodeSpec('probe'));
      const batch = LIMITS.latencySamples;
      for (let start = 0; start < LIMITS.latencySources; start += batch) {
        const samples = Array.from({ length: Math.min(batch, LIMITS.latencySources - start) }, (_, i) => ({
          from: `ap-${start + i}`,
          nodeId: 'probe',
          rttMs: 5,
        }));
        expect((await ok(t.registry, t.registry.reportLatency, { samples })).accepted).toBe(samples.length);
      }
      const one = (from: string) =>
        rpc(t.registry, t.registry.reportLatency, { samples: [{ from, nodeId: 'probe', rttMs: 7 }] });
      const refused = await one('ap-new');
      expect(refused.ok || refused.error.code).toBe(status.RESOURCE_EXHAUSTED);
      expect(refused.ok || refused.error.details).toMatch(/at most 10000 distinct from names/);
      expect((await one('ap-17')).ok).toBe(true);
    });

    it.each(registerCases)('RegisterNode: $name', async ({ request, mentions }) => {
      const outcome = await rpc(t.registry, t.registry.registerNode, request);
      expect(outcome.ok || outcome.error.code).toBe(status.INVALID_ARGUMENT);
      if (!outcome.ok) expect(outcome.error.details).toContain(mentions);
      expect(
        (
          await rpc(t.registry, t.registry.registerNode, {
            spec: nodeSpec('fine'),
            ttlS: 30,
            permanent: false,
          })
        ).ok,
      ).toBe(true);
    });

    it('other RPCs validate too', async () => {
      const calls = [
        rpc(t.registry, t.registry.getNode, { nodeId: '' }),
        rpc(t.registry, t.registry.drainNode, { nodeId: '-x', drain: true }),
        rpc(t.registry, t.registry.listNodes, { ...ALL_NODES, level: 7 as Level }),
        rpc(t.registry, t.registry.listNodes, { ...ALL_NODES, pageSize: 5001 }),
        rpc(t.registry, t.registry.listNodes, { ...ALL_NODES, pageToken: 'not a token' }),
        rpc(t.registry, t.registry.listNodes, { ...ALL_NODES, pageToken: 'x'.repeat(1000) }),
        rpc(t.registry, t.registry.reportLatency, { samples: [] }),
        rpc(t.registry, t.registry.reportLatency, { samples: [{ from: 'CN-GD', nodeId: 'a', rttMs: -1 }] }),
        rpc(t.scheduler, t.scheduler.release, { reservationId: '', usage: undefined, success: true }),
        rpc(t.scheduler, t.scheduler.release, {
          reservationId: 'r',
          usage: { inputTokens: 1, cachedInputTokens: 2, outputTokens: 0 },
          success: true,
        }),
      ];
      for (const outcome of await Promise.all(calls))
        expect(outcome.ok || outcome.error.code).toBe(status.INVALID_ARGUMENT);
    });
  });
});

describe('standard services', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(() => t.close());

  it('health answers SERVING for the server and each service, without a credential', async () => {
    const definition = loadPackageDefinition(loadSync(healthProtoPath, { enums: String })) as unknown as {
      grpc: {
        health: {
          v1: {
            Health: new (address: string, creds: ReturnType<typeof credentials.createInsecure>) => Client;
          };
        };
      };
    };
    const health = new definition.grpc.health.v1.Health(t.address, credentials.createInsecure()) as Client & {
      check(
        request: { service: string },
        callback: (error: Error | null, response: { status: string }) => void,
      ): void;
    };
    for (const service of ['', 'cpn.v1.Registry', 'cpn.v1.Scheduler']) {
      const response = await new Promise<{ status: string }>((resolve, reject) =>
        health.check({ service }, (error, value) => (error ? reject(error) : resolve(value))),
      );
      expect(response.status).toBe('SERVING');
    }
    health.close();
  });

  it('reflection lists cpn.v1.Scheduler and cpn.v1.Registry', async () => {
    const reflectionDir = join(
      dirname(createRequire(import.meta.url).resolve('@grpc/reflection')),
      '../proto',
    );
    const definition = loadPackageDefinition(
      loadSync('grpc/reflection/v1/reflection.proto', { includeDirs: [reflectionDir] }),
    ) as unknown as {
      grpc: {
        reflection: {
          v1: {
            ServerReflection: new (
              address: string,
              creds: ReturnType<typeof credentials.createInsecure>,
            ) => Client;
          };
        };
      };
    };
    const reflection = new definition.grpc.reflection.v1.ServerReflection(
      t.address,
      credentials.createInsecure(),
    ) as Client & {
      serverReflectionInfo(): NodeJS.ReadWriteStream & { write(message: unknown): boolean; end(): void };
    };
    const stream = reflection.serverReflectionInfo();
    const names = await new Promise<string[]>((resolve, reject) => {
      stream.on('data', (response: { listServicesResponse?: { service: { name: string }[] } }) =>
        resolve(response.listServicesResponse?.service.map((s) => s.name) ?? []),
      );
      stream.on('error', reject);
      stream.write({ listServices: '*' });
    });
    stream.end();
    reflection.close();
    expect(names).toEqual(
      expect.arrayContaining(['cpn.v1.Scheduler', 'cpn.v1.Registry', 'grpc.health.v1.Health']),
    );
  });
});

describe('registry ceiling', () => {
  it('refuses new nodes beyond --max-nodes, naming the limit; known nodes still re-register', async () => {
    const small = await startTestServer({ maxNodes: 2 });
    try {
      for (const id of ['c1', 'c2']) await register(small, nodeSpec(id));
      const third = await rpc(small.registry, small.registry.registerNode, {
        spec: nodeSpec('c3'),
        ttlS: 30,
        permanent: false,
      });
      expect(third.ok || third.error.code).toBe(status.RESOURCE_EXHAUSTED);
      expect(third.ok || third.error.details).toMatch(
        /holds 2 nodes, the most this control plane accepts \(--max-nodes 2\)/,
      );
      await register(small, nodeSpec('c1', { endpoint: 'https://c1.example:9000' }));
      expect(small.store.getNode('c1')?.spec.endpoint).toBe('https://c1.example:9000');
    } finally {
      await small.close();
    }
  });
});
