// Token packages over real gRPC: quota reserved at Route and settled at Release, the three
// over-quota policies, package constraints, expiry, and usage that adds up to what Release said.
import { credentials, type ServiceError, status } from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AccountsClient, Meter, OverQuotaPolicy, type Package, Role } from '../../src/gen/cpn/v1/accounts.js';
import { RouteResponse, SchedulerClient, Verdict } from '../../src/gen/cpn/v1/scheduler.js';
import { Level } from '../../src/gen/cpn/v1/types.js';
import { ErrorInfo, QuotaFailure, Status } from '../../src/gen/google/rpc/error_details.js';
import { bearer, ok, rpc, startTestServer, TEST_OPERATOR_KEY, type TestServer } from '../helpers/grpc.js';

const GUANGZHOU = { lat: 23.129, lon: 113.264 };
const GUIAN = { lat: 26.4, lon: 106.6 };

function node(id: string, level: Level, location: { lat: number; lon: number }, price: number) {
  return {
    id,
    level,
    region: 'CN-GD',
    parentId: '',
    endpoint: `https://${id}.example`,
    location,
    gpus: [{ type: 'H800', count: 8, memoryGib: 80 }],
    models: [
      {
        model: 'qwen3-32b',
        maxConcurrency: 50,
        maxQueue: 0,
        prefillTokensPerS: 200_000,
        decodeTokensPerS: 50,
        price: { inputPerMtok: price, outputPerMtok: price * 4, cachedInputPerMtok: price / 10 },
      },
    ],
    labels: {},
  };
}

/** 100 points per 1k input, 200 per 1k output, 10 per 1k cached input. */
function pkg(overrides: Partial<Package> = {}): Package {
  return {
    name: 'starter',
    quotaPoints: 1000,
    timeZone: '',
    periodSeconds: 0,
    periodAnchor: undefined,
    weights: [{ model: 'qwen3-32b', inputPer1k: 100, outputPer1k: 200, cachedInputPer1k: 10 }],
    allowedLevels: [],
    overQuota: OverQuotaPolicy.OVER_QUOTA_POLICY_REJECT,
    throttleRequestsPerS: 0,
    throttleBudgetMs: 0,
    meter: Meter.METER_CLIENT,
    ...overrides,
  };
}

const route = (overrides: Record<string, unknown> = {}) => ({
  requestId: '',
  tenant: '',
  model: 'qwen3-32b',
  client: { region: 'CN-GD', accessPoint: '', location: GUANGZHOU },
  latencyBudgetMs: 2000,
  inputTokens: 1000,
  cachedInputTokens: 0,
  maxOutputTokens: 1000,
  allowedLevels: [],
  allowedRegions: [],
  allowDegraded: false,
  explain: false,
  maxFallbacks: 0,
  ...overrides,
});

const usage = (inputTokens: number, outputTokens: number) => ({
  inputTokens,
  cachedInputTokens: 0,
  outputTokens,
});

/** The ErrorInfo reason (and QuotaFailure, if any) in a failed call's status details. */
function details(error: ServiceError): { reason: string | undefined; quota: QuotaFailure | undefined } {
  const raw = error.metadata.get('grpc-status-details-bin')[0];
  if (!(raw instanceof Buffer)) return { reason: undefined, quota: undefined };
  const decoded = Status.decode(raw);
  const info = decoded.details.find((d) => d.typeUrl.endsWith('google.rpc.ErrorInfo'));
  const quota = decoded.details.find((d) => d.typeUrl.endsWith('google.rpc.QuotaFailure'));
  return {
    reason: info === undefined ? undefined : ErrorInfo.decode(info.value).reason,
    quota: quota === undefined ? undefined : QuotaFailure.decode(quota.value),
  };
}

describe('token packages and quota over gRPC', () => {
  let t: TestServer;
  let accounts: AccountsClient;
  let client: SchedulerClient;

  beforeEach(async () => {
    t = await startTestServer({ reservationTtlMs: 30_000 });
    const operator = bearer(TEST_OPERATOR_KEY);
    accounts = new AccountsClient(t.address, credentials.createInsecure(), operator);
    for (const spec of [
      node('hub', Level.LEVEL_CENTER, GUIAN, 1),
      node('edge', Level.LEVEL_EDGE, GUANGZHOU, 5),
    ])
      await ok(t.registry, t.registry.registerNode, { spec, ttlS: 0, permanent: true });
    await ok(accounts, accounts.createTenant, { name: 'acme', displayName: 'Acme' });
    const key = await ok(accounts, accounts.createApiKey, {
      role: Role.ROLE_CLIENT,
      tenant: 'acme',
      nodeId: '',
      name: 'acme client',
      expiresAt: undefined,
    });
    client = new SchedulerClient(t.address, credentials.createInsecure(), bearer(key.secret));
  });

  afterEach(async () => {
    accounts.close();
    client.close();
    await t.close();
  });

  const setPackage = (overrides: Partial<Package> = {}) =>
    ok(accounts, accounts.setPackage, { tenant: 'acme', package: pkg(overrides) });
  const routeAs = (overrides: Record<string, unknown> = {}) => rpc(client, client.route, route(overrides));
  const release = (reservationId: string, used: ReturnType<typeof usage>) =>
    ok(client, client.release, { reservationId, usage: used, success: true });
  const usageOf = async () => ok(accounts, accounts.getUsage, { tenant: 'acme', period: '' });

  it('REJECT: Route holds the maximum points, Release settles the actual and returns the rest', async () => {
    await setPackage();
    const placed: RouteResponse[] = [];
    for (let i = 0; i < 3; i += 1) {
      const outcome = await routeAs();
      if (!outcome.ok) throw new Error(outcome.error.details);
      expect(outcome.value.reservedPoints).toBe(300);
      placed.push(outcome.value);
    }
    const refused = await routeAs();
    expect(refused.ok || refused.error.code).toBe(status.RESOURCE_EXHAUSTED);
    if (refused.ok) throw new Error('placed over quota');
    expect(details(refused.error).reason).toBe('QUOTA_EXCEEDED');
    expect(details(refused.error).quota?.violations[0]?.subject).toBe('tenant:acme');
    expect(refused.error.details).toMatch(/100 of 1000 points left/);

    const first = await release(placed[0]?.reservationId ?? '', usage(1000, 500));
    expect(first).toMatchObject({ released: true, settledPoints: 200, returnedPoints: 100 });
    // 200 used + 600 held: 200 free, a request needing 300 is still refused.
    expect((await routeAs()).ok).toBe(false);
    // A repeated Release changes nothing.
    expect(await release(placed[0]?.reservationId ?? '', usage(1000, 1000))).toMatchObject({
      released: false,
    });
    // Usage beyond the hold counts as far as the quota has room (200 used + 300 still held: 500);
    // the rest is on the record as unbilled, never lost.
    expect(await release(placed[1]?.reservationId ?? '', usage(5000, 5000))).toMatchObject({
      settledPoints: 500,
    });
    expect((await routeAs()).ok).toBe(false);
    expect(await release(placed[2]?.reservationId ?? '', usage(0, 0))).toMatchObject({
      settledPoints: 0,
      returnedPoints: 300,
    });
    expect((await routeAs()).ok).toBe(true);

    const metrics = await t.server.metrics.registry.metrics();
    expect(metrics).toMatch(/cpn_quota_admissions_total\{outcome="within"\} 4/);
    expect(metrics).toMatch(/cpn_quota_admissions_total\{outcome="quota_exceeded"\} 3/);
    expect(metrics).toMatch(/cpn_quota_points_total\{kind="settled"\} 700/);
    const report = await usageOf();
    expect(report.periods).toEqual([
      expect.objectContaining({ tenant: 'acme', quotaPoints: 1000, usedPoints: 700, reservedPoints: 300 }),
    ]);
    expect(report.lines).toEqual([
      expect.objectContaining({
        model: 'qwen3-32b',
        requests: 3,
        inputTokens: 6000,
        outputTokens: 5500,
        points: 700,
        unbilledPoints: 1000,
      }),
    ]);
  });

  it('every node full is CAPACITY_EXHAUSTED, told apart from quota by its reason', async () => {
    const full = await rpc(t.scheduler, t.scheduler.route, route({ latencyBudgetMs: 1 }));
    expect(full.ok).toBe(false);
    for (const spec of [
      node('hub', Level.LEVEL_CENTER, GUIAN, 1),
      node('edge', Level.LEVEL_EDGE, GUANGZHOU, 5),
    ]) {
      const tiny = { ...spec, models: [{ ...spec.models[0], maxConcurrency: 1 }] };
      await ok(t.registry, t.registry.registerNode, { spec: tiny as never, ttlS: 0, permanent: true });
    }
    await ok(t.scheduler, t.scheduler.route, route());
    await ok(t.scheduler, t.scheduler.route, route());
    const exhausted = await rpc(t.scheduler, t.scheduler.route, route());
    expect(exhausted.ok || exhausted.error.code).toBe(status.RESOURCE_EXHAUSTED);
    if (!exhausted.ok) expect(details(exhausted.error).reason).toBe('CAPACITY_EXHAUSTED');
  });

  it("the package's models and levels constrain routing, with their own reason and verdict", async () => {
    await setPackage({ allowedLevels: [Level.LEVEL_EDGE] });
    const glm = node('glm-edge', Level.LEVEL_EDGE, GUANGZHOU, 1);
    await ok(t.registry, t.registry.registerNode, {
      spec: { ...glm, models: glm.models.map((offer) => ({ ...offer, model: 'glm-4.5' })) },
      ttlS: 0,
      permanent: true,
    });
    const other = await routeAs({ model: 'glm-4.5', explain: true });
    expect(other.ok || other.error.code).toBe(status.PERMISSION_DENIED);
    if (other.ok) throw new Error('placed a model outside the package');
    expect(details(other.error).reason).toBe('MODEL_NOT_IN_PACKAGE');
    // Explained, the refusal still lists the node that serves the model, with the package as verdict.
    const trailer = other.error.metadata.get('cpn-route-response-bin')[0];
    expect(trailer).toBeInstanceOf(Buffer);
    const explained = RouteResponse.decode(trailer as Buffer).explain;
    expect(explained.find((e) => e.nodeId === 'glm-edge')?.verdict).toBe(
      Verdict.VERDICT_MODEL_NOT_IN_PACKAGE,
    );
    expect(explained.find((e) => e.nodeId === 'hub')?.verdict).toBe(Verdict.VERDICT_MODEL_NOT_SERVED);
    const placed = await routeAs({ explain: true });
    if (!placed.ok) throw new Error(placed.error.details);
    // The hub is cheaper, but the package does not include CENTER.
    expect(placed.value.placement?.nodeId).toBe('edge');
    expect(placed.value.explain.find((e) => e.nodeId === 'hub')?.verdict).toBe(
      Verdict.VERDICT_LEVEL_NOT_IN_PACKAGE,
    );
  });

  it('an expired reservation gives its points back; a late Release is still billed, once', async () => {
    await setPackage({ quotaPoints: 300 });
    const first = await routeAs();
    if (!first.ok) throw new Error(first.error.details);
    expect((await routeAs()).ok).toBe(false);
    t.advance(31_000);
    const second = await routeAs();
    expect(second.ok).toBe(true);
    // The first reservation expired: its late Release counts what still fits (nothing: the second holds all).
    const late = await release(first.value.reservationId, usage(1000, 1000));
    expect(late).toMatchObject({ released: true, settledPoints: 0 });
    const report = await usageOf();
    expect(report.periods[0]).toMatchObject({ usedPoints: 0, reservedPoints: 300 });
    expect(report.lines[0]).toMatchObject({ requests: 1, points: 0, unbilledPoints: 300 });
    expect(await release(first.value.reservationId, usage(1000, 1000))).toMatchObject({ released: false });
  });

  it('THROTTLE: over quota, requests are rate-limited and placed cheapest-first within the throttle budget', async () => {
    await setPackage({
      quotaPoints: 300,
      overQuota: OverQuotaPolicy.OVER_QUOTA_POLICY_THROTTLE,
      throttleRequestsPerS: 2,
      throttleBudgetMs: 5000,
    });
    const within = await routeAs({ latencyBudgetMs: 10 });
    if (!within.ok) throw new Error(within.error.details);
    expect(within.value).toMatchObject({ throttled: false, placement: { nodeId: 'edge' } });
    const throttled = [await routeAs({ latencyBudgetMs: 10 }), await routeAs({ latencyBudgetMs: 10 })];
    for (const outcome of throttled) {
      if (!outcome.ok) throw new Error(outcome.error.details);
      // Relaxed to 5 s, the cheap far hub wins.
      expect(outcome.value).toMatchObject({ throttled: true, placement: { nodeId: 'hub' } });
    }
    const limited = await routeAs({ latencyBudgetMs: 10 });
    expect(limited.ok || limited.error.code).toBe(status.RESOURCE_EXHAUSTED);
    if (!limited.ok) expect(details(limited.error).reason).toBe('RATE_LIMITED');
    t.advance(1000);
    expect((await routeAs()).ok).toBe(true);
  });

  it('PAY_AS_YOU_GO: over quota, requests route normally and their tokens are billed at list price', async () => {
    await setPackage({ quotaPoints: 300, overQuota: OverQuotaPolicy.OVER_QUOTA_POLICY_PAY_AS_YOU_GO });
    const first = await routeAs();
    const second = await routeAs();
    if (!first.ok || !second.ok) throw new Error('not placed');
    expect(first.value.overQuota).toBe(false);
    expect(second.value.overQuota).toBe(true);
    expect(second.value.placement?.nodeId).toBe('hub');
    await release(first.value.reservationId, usage(1000, 1000));
    await release(second.value.reservationId, usage(2000, 3000));
    const [line] = (await usageOf()).lines;
    // The hub's list price: 1 per Mtok input, 4 per Mtok output, in 1/10,000 units:
    // 2000 × 10,000 / 1e6 + 3000 × 40,000 / 1e6 = 20 + 120.
    expect(line).toMatchObject({
      requests: 2,
      points: 300,
      // Usage points (200 + 600), not the 300 held: over-quota usage is counted as it was.
      overQuotaPoints: 800,
      overQuotaTokens: 5000,
      overQuotaMoney: 140,
    });
  });

  it("a package that requires a trusted meter is settled by the serving node's agent, exactly once", async () => {
    await setPackage({ meter: Meter.METER_TRUSTED });
    const agentOf = async (nodeId: string) => {
      const key = await ok(accounts, accounts.createApiKey, {
        role: Role.ROLE_AGENT,
        tenant: '',
        nodeId,
        name: `agent of ${nodeId}`,
        expiresAt: undefined,
      });
      return new SchedulerClient(t.address, credentials.createInsecure(), bearer(key.secret));
    };
    const placed = await routeAs();
    if (!placed.ok) throw new Error(placed.error.details);
    expect(placed.value.placement?.nodeId).toBe('hub');
    const id = placed.value.reservationId;
    // The client's own report frees its slot but settles nothing: it may under-report.
    const own = await release(id, usage(0, 0));
    expect(own).toMatchObject({ released: true, settledPoints: 0, awaitingTrustedMeter: true });
    expect((await usageOf()).periods[0]).toMatchObject({ usedPoints: 0, reservedPoints: 300 });
    const [hubAgent, edgeAgent] = [await agentOf('hub'), await agentOf('edge')];
    const wrongNode = await rpc(edgeAgent, edgeAgent.release, {
      reservationId: id,
      usage: usage(1000, 1000),
      success: true,
    });
    expect(wrongNode.ok || wrongNode.error.code).toBe(status.PERMISSION_DENIED);
    const metered = await ok(hubAgent, hubAgent.release, {
      reservationId: id,
      usage: usage(1000, 700),
      success: true,
    });
    expect(metered).toMatchObject({ released: true, settledPoints: 240, returnedPoints: 60 });
    expect(
      await ok(hubAgent, hubAgent.release, { reservationId: id, usage: usage(1000, 1000), success: true }),
    ).toMatchObject({
      released: false,
      settledPoints: 0,
    });
    expect((await usageOf()).periods[0]).toMatchObject({ usedPoints: 240, reservedPoints: 0 });
    hubAgent.close();
    edgeAgent.close();
  });

  it('SetPackage validates every field and names what is wrong', async () => {
    const cases: [Partial<Package>, RegExp][] = [
      [{ quotaPoints: 0 }, /quota_points must be an integer from 1/],
      [{ timeZone: 'Mars/Olympus' }, /IANA time zone/],
      [{ weights: [] }, /weights must have 1 to 256/],
      [{ overQuota: OverQuotaPolicy.OVER_QUOTA_POLICY_UNSPECIFIED }, /over_quota must be/],
      [{ overQuota: OverQuotaPolicy.OVER_QUOTA_POLICY_THROTTLE }, /throttle_requests_per_s must be > 0/],
      [
        { weights: [{ model: '*', inputPer1k: 2_000_000, outputPer1k: 0, cachedInputPer1k: 0 }] },
        /input_per_1k must be an integer from 0 to 1000000/,
      ],
    ];
    for (const [overrides, message] of cases) {
      const outcome = await rpc(accounts, accounts.setPackage, { tenant: 'acme', package: pkg(overrides) });
      expect(outcome.ok || `${outcome.error.code} ${outcome.error.details}`).toMatch(message);
      expect(outcome.ok || outcome.error.code).toBe(status.INVALID_ARGUMENT);
    }
    const missing = await rpc(accounts, accounts.setPackage, { tenant: 'nobody', package: pkg() });
    expect(missing.ok || missing.error.code).toBe(status.NOT_FOUND);
  });
});
