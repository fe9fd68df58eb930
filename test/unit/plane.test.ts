// The control plane as the only door: replicas sharing a store, metering switched off for
// simulations, admission before the decision, and policies that differ only in ranking.
import { describe, expect, it } from 'vitest';
import { seededRng } from '../../src/core/rng.js';
import { LEAST_LOADED, NEAREST, type RoutingPolicy, randomPolicy } from '../../src/core/routing/index.js';
import { offer, request, spec } from '../helpers/fixtures.js';
import { planesOnOneStore } from '../helpers/plane.js';

const usage = { inputTokens: 10, cachedInputTokens: 0, outputTokens: 5 };

describe('ControlPlane', () => {
  it('freeHeld frees what route reserved, once, as a Release of its id would; a metering plane refuses it', async () => {
    const { planes: [sim] = [] } = planesOnOneStore(1, { meterUsage: false });
    if (sim === undefined) throw new Error('one plane');
    await sim.registerNode(spec({ id: 'n', offers: [offer({ maxConcurrency: 1, maxQueue: 0 })] }), {
      ttlS: 0,
      permanent: true,
    });
    const held = sim.route(request({ explain: false })).reservation;
    if (held === undefined) throw new Error('not placed');
    // The one slot is held: the next route finds the node full.
    expect(sim.route(request({ explain: false })).decision.kind).toBe('infeasible');
    expect(sim.freeHeld(held)).toBe(true);
    expect(sim.freeHeld(held)).toBe(false);
    expect(await sim.release(held.id, usage, true)).toMatchObject({ released: false });
    const again = sim.route(request({ explain: false })).reservation;
    if (again === undefined) throw new Error('the freed slot was not routed to');
    expect(await sim.release(again.id, usage, true)).toMatchObject({ released: true });
    expect(sim.freeHeld(again)).toBe(false);
    const { planes: [billing] = [] } = planesOnOneStore(1);
    expect(() => billing?.freeHeld(again)).toThrow(/meters usage/);
  });

  it('a Release later than the TTL plus the late grace records nothing (its id says when it was issued)', async () => {
    const { planes: [a] = [], store, advance } = planesOnOneStore(1, { lateReleaseGraceMs: 60_000 });
    if (a === undefined) throw new Error('one plane');
    await a.registerNode(spec({ id: 'n' }), { ttlS: 0, permanent: true });
    const late = a.route(request({ explain: false })).reservation;
    const inTime = a.route(request({ explain: false })).reservation;
    if (late === undefined || inTime === undefined) throw new Error('not placed');
    advance(30_000 + 60_000 - 1000);
    expect(await a.release(inTime.id, usage, true)).toMatchObject({ released: true });
    advance(3000);
    expect(await a.release(late.id, usage, true)).toMatchObject({ released: false });
    expect(store.usageRecords().map((record) => record.reservationId)).toEqual([inTime.id]);
  });

  it("THROTTLE: the over-quota rate is the tenant's across replicas, not each replica's", async () => {
    const { planes: [a, b] = [], advance } = planesOnOneStore(2);
    if (a === undefined || b === undefined) throw new Error('two planes');
    await a.registerNode(spec({ id: 'n', offers: [offer({ maxConcurrency: 100, maxQueue: 0 })] }), {
      ttlS: 0,
      permanent: true,
    });
    await a.accounts.createTenant('acme', 'Acme');
    await a.accounts.setPackage('acme', {
      name: 'tiny',
      quotaPoints: 1,
      period: { kind: 'calendar-month', timeZone: 'Asia/Shanghai' },
      weights: { '*': { inputPer1k: 1000, outputPer1k: 1000, cachedInputPer1k: 0 } },
      allowedLevels: [],
      overQuota: 'THROTTLE',
      throttleRequestsPerS: 2,
      throttleBudgetMs: 10_000,
    });
    const outcomes = [];
    for (let i = 0; i < 6; i += 1) {
      const plane = i % 2 === 0 ? a : b;
      const routed = await plane.routeMetered(request({ tenant: 'acme', explain: false }));
      outcomes.push(routed.decision.kind === 'refused' ? routed.decision.refusal.reason : routed.throttled);
    }
    // Burst 2 for the tenant, whichever replica: then refused until a token comes back.
    expect(outcomes).toEqual([true, true, 'RATE_LIMITED', 'RATE_LIMITED', 'RATE_LIMITED', 'RATE_LIMITED']);
    advance(500);
    expect((await b.routeMetered(request({ tenant: 'acme', explain: false }))).throttled).toBe(true);
    expect((await a.routeMetered(request({ tenant: 'acme', explain: false }))).decision.kind).toBe('refused');
  });

  it('a second Release of one id answers false on either replica', async () => {
    const { planes: [a, b] = [], store } = planesOnOneStore(2);
    if (a === undefined || b === undefined) throw new Error('two planes');
    await a.registerNode(spec({ id: 'n' }), { ttlS: 30, permanent: false });
    const placed = a.route(request({ explain: false }));
    if (placed.reservation === undefined) throw new Error(placed.decision.summary);
    const id = placed.reservation.id;
    expect(a.reservationCount()).toBe(1);
    expect(await b.release(id, usage, true)).toEqual({ released: true, nodeId: 'n' });
    // The slot is freed where it was taken, without a Release reaching that replica.
    expect(a.reservationCount()).toBe(0);
    expect(a.getNode('n')?.reserved.size).toBe(0);
    expect(await a.release(id, usage, true)).toEqual({ released: false, nodeId: 'n' });
    expect(await b.release(id, usage, true)).toEqual({ released: false, nodeId: 'n' });
    expect(a.reservationCount()).toBe(0);
    expect(store.usageRecords()).toHaveLength(1);
  });

  it('without metering (simulations) Release frees the slot once and records nothing', async () => {
    const { planes: [plane] = [], store } = planesOnOneStore(1, { meterUsage: false });
    if (plane === undefined) throw new Error('one plane');
    await plane.registerNode(spec({ id: 'n' }), { ttlS: 30, permanent: false });
    const placed = plane.route(request({ explain: false }));
    if (placed.reservation === undefined) throw new Error(placed.decision.summary);
    expect(plane.reservationCount()).toBe(1);
    expect(await plane.release(placed.reservation.id, usage, true)).toMatchObject({ released: true });
    expect(await plane.release(placed.reservation.id, usage, true)).toMatchObject({ released: false });
    expect(plane.reservationCount()).toBe(0);
    expect(store.usageRecords()).toHaveLength(0);
  });

  it('warming the index builds the trees first routes need, rate tiers included, once', async () => {
    const { planes: [plane] = [], store } = planesOnOneStore(1);
    if (plane === undefined) throw new Error('one plane');
    // Enough nodes, at rates from 10k to 40k tokens/s, for the index to split out rate tiers.
    for (let i = 0; i < 600; i += 1)
      await plane.registerNode(
        spec({
          id: `n${i}`,
          km: i % 50,
          offers: [offer({ model: 'm', prefillTokensPerS: 10_000 + 50 * i }), offer({ model: 'x' })],
        }),
        { ttlS: 30, permanent: false },
      );
    expect(plane.warmIndex()).toBe(2);
    const built = (model: string) => store.view.candidates(model)?.builds ?? 0;
    const before = [built('m'), built('x')];
    expect(before.every((count) => count > 0)).toBe(true);
    // A loose route on each model, and one that only the fastest third of model m's nodes can
    // meet (1,000 prompt tokens in 35 ms): it searches a rate tier's tree.
    for (const ask of [
      request({ model: 'm', explain: false }),
      request({ model: 'x', explain: false }),
      request({ model: 'm', latencyBudgetMs: 35, explain: false }),
    ]) {
      const { decision } = plane.route(ask);
      expect(decision.kind).toBe('placed');
    }
    // The same tight request under the nearest baseline walks that tier's place tree.
    const nearest = plane.route(request({ model: 'm', latencyBudgetMs: 35, explain: false }), {
      policy: NEAREST,
    });
    expect(nearest.decision.kind).toBe('placed');
    expect([built('m'), built('x')]).toEqual(before);
  });

  it('an admission rule refuses and reserves nothing', async () => {
    const { planes: [plane] = [] } = planesOnOneStore(1, {
      admission: [
        (req) =>
          req.tenant === 'over'
            ? { rule: 'quota', message: 'over quota', retryAfterMs: undefined }
            : undefined,
      ],
    });
    if (plane === undefined) throw new Error('one plane');
    await plane.registerNode(spec({ id: 'n' }), { ttlS: 30, permanent: false });
    expect(plane.route(request({ tenant: 'over' }))).toMatchObject({
      decision: { kind: 'refused' },
      reservation: undefined,
    });
    expect(plane.route(request({ tenant: 'fine' })).decision.kind).toBe('placed');
    expect(plane.reservationCount()).toBe(1);
  });

  const baselines: [string, RoutingPolicy][] = [
    ['nearest', NEAREST],
    ['least-loaded', LEAST_LOADED],
    ['random', randomPolicy(seededRng(7))],
  ];
  for (const [name, policy] of baselines) {
    it(`the ${name} baseline honours allowed levels, regions and the budget`, async () => {
      const { planes: [plane] = [] } = planesOnOneStore(1);
      if (plane === undefined) throw new Error('one plane');
      // The nearest and least loaded nodes are the excluded ones.
      await plane.registerNode(spec({ id: 'center', level: 'CENTER', km: 0 }), {
        ttlS: 30,
        permanent: false,
      });
      await plane.registerNode(spec({ id: 'other-region', region: 'CN-GX', km: 1 }), {
        ttlS: 30,
        permanent: false,
      });
      await plane.registerNode(spec({ id: 'too-far', km: 9000 }), { ttlS: 30, permanent: false });
      await plane.registerNode(spec({ id: 'allowed', km: 50 }), { ttlS: 30, permanent: false });
      for (let i = 0; i < 20; i += 1) {
        const result = plane.route(
          request({
            explain: false,
            latencyBudgetMs: 150,
            allowedLevels: ['PROVINCE'],
            allowedRegions: ['CN-GD'],
          }),
          { policy },
        );
        expect(result.decision.kind === 'placed' && result.decision.placement.nodeId).toBe('allowed');
        if (result.reservation) await plane.release(result.reservation.id, usage, true);
      }
      const none = plane.route(request({ explain: false, latencyBudgetMs: 150, allowedRegions: ['CN-SH'] }), {
        policy,
      });
      expect(none.decision).toMatchObject({ kind: 'infeasible', reason: 'NO_NODE_WITHIN_CONSTRAINTS' });
    });
  }
});
