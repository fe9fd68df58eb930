// `cpn plan` on a tiny scenario (test/sim/plan/): one small node in Guangdong, more chat than it
// serves within budget, and two measured GPU types at different prices. Every plan on the menu is
// tried by brute force here, independently of the search, and the search must find the cheapest.
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { withNodes } from '../../src/sim/build-topology.js';
import { costOf, loadPlan, type PlanInput, plan, type Site, siteNodes } from '../../src/sim/plan.js';
import { runPolicy } from '../../src/sim/simulate.js';
import { tempFile } from '../helpers/cli.js';

const FILE = 'test/sim/plan/plan.yaml';

/** SLO attainment of the class `chat` with `sites` added, by a plain simulator run. */
async function attainment(input: PlanInput, sites: readonly Site[]): Promise<number> {
  const topology = withNodes(input.topology, siteNodes(input, sites));
  const result = await runPolicy(input.scenario, topology, 'cheapest-feasible');
  const chat = result.byClass.get('chat');
  return chat === undefined || chat.requests === 0 ? 1 : chat.sloMet / chat.requests;
}

describe('cpn plan', () => {
  it('finds the least-cost plan that a brute force over the whole menu finds', async () => {
    const input = await loadPlan(FILE);
    const at = { region: 'CN-GD', level: 'PROVINCE' as const, model: 'qwen3-8b' };
    const max = input.doc.menu.max_gpus_per_site;
    let optimum: { cost: number; sites: Site[] } | undefined;
    for (let h100 = 0; h100 <= max; h100 += 1)
      for (let h200 = 0; h200 <= max; h200 += 1) {
        const sites: Site[] = [
          ...(h100 > 0 ? [{ ...at, gpu: 'h100', gpus: h100 }] : []),
          ...(h200 > 0 ? [{ ...at, gpu: 'h200', gpus: h200 }] : []),
        ];
        const cost = costOf(input, sites);
        if (optimum !== undefined && cost >= optimum.cost) continue;
        if ((await attainment(input, sites)) >= 0.99) optimum = { cost, sites };
      }
    expect(optimum).toBeDefined();
    // Not a corner of the menu: the optimum mixes the two GPU types.
    expect(optimum?.sites.length).toBe(2);

    const outcome = await plan(input);
    expect(outcome.plan?.meets).toBe(true);
    expect(outcome.plan?.costPerHour).toBe(optimum?.cost);
    expect(outcome.plan?.sites).toEqual(optimum?.sites);
    // Before: far short; the plan's own figure agrees with the plain run.
    expect(outcome.baseline.meets).toBe(false);
    expect(outcome.plan?.targets[0]?.attainment).toBeCloseTo(
      await attainment(input, outcome.plan?.sites ?? []),
      9,
    );
    // Uniform plans cost more here (one region: each is a single type).
    for (const u of outcome.uniform)
      expect(u.plan?.costPerHour).toBeGreaterThan(outcome.plan?.costPerHour ?? 0);
    // Bounded: far fewer runs than the brute force's 16.
    expect(outcome.runs.length).toBeLessThan((max + 1) ** 2);
  });

  it('on a known response surface, finds the optimum a brute force finds, where greedy alone overshoots and prune takes it back', async () => {
    // Two regions; each H100 serves 200 requests of its region, each H200 300 (prices 10 and 14).
    // Guangdong has 700 requests, Guangxi 300; every one must be served.
    const base = await loadPlan(FILE);
    const input: PlanInput = {
      ...base,
      regions: ['CN-GD', 'CN-GX'],
      doc: {
        ...base.doc,
        targets: [{ class: 'chat', slo: 1 }],
        menu: { ...base.doc.menu, max_gpus_per_site: 4 },
      },
    };
    const demand: Record<string, number> = { 'CN-GD': 700, 'CN-GX': 300 };
    const perGpu: Record<string, number> = { h100: 200, h200: 300 };
    const outcomesOf = (sites: readonly Site[]) =>
      new Map([
        [
          'chat',
          new Map(
            Object.entries(demand).map(([region, requests]) => {
              const served = sites
                .filter((site) => site.region === region)
                .reduce((sum, site) => sum + site.gpus * (perGpu[site.gpu] ?? 0), 0);
              return [region, { requests, sloMet: Math.min(requests, served) }];
            }),
          ),
        ],
      ]);
    let optimum = Number.POSITIVE_INFINITY;
    const counts = [0, 1, 2, 3, 4];
    for (const gd100 of counts)
      for (const gd200 of counts)
        for (const gx100 of counts)
          for (const gx200 of counts) {
            const site = (region: string, gpu: string, gpus: number): Site => ({
              region,
              level: 'PROVINCE',
              gpu,
              model: 'qwen3-8b',
              gpus,
            });
            const sites = [
              site('CN-GD', 'h100', gd100),
              site('CN-GD', 'h200', gd200),
              site('CN-GX', 'h100', gx100),
              site('CN-GX', 'h200', gx200),
            ].filter((s) => s.gpus > 0);
            const chat = outcomesOf(sites).get('chat');
            const met = [...(chat?.values() ?? [])].every((o) => o.sloMet === o.requests);
            if (met) optimum = Math.min(optimum, costOf(input, sites));
          }
    expect(optimum).toBe(48);
    const outcome = await plan(input, { outcomesOf });
    expect(outcome.plan?.costPerHour).toBe(optimum);
    // The greedy phase alone stopped dearer; pruning and swapping found the optimum.
    const greedyBest = Math.min(
      ...outcome.runs.filter((r) => r.phase === 'greedy' && r.meets).map((r) => r.costPerHour),
    );
    expect(greedyBest).toBeGreaterThan(optimum);
    expect(outcome.plan?.phase).toBe('prune');
    // Uniform plans put GPUs where nothing misses: dearer.
    for (const u of outcome.uniform) expect(u.plan?.costPerHour).toBeGreaterThan(optimum);
  });

  it('refuses a target that no request falls under, rather than count it as met', async () => {
    const input = await loadPlan(FILE);
    const outcomesOf = () => new Map([['chat', new Map([['CN-GD', { requests: 0, sloMet: 0 }]])]]);
    await expect(plan(input, { outcomesOf })).rejects.toThrow(/no request of the scenario falls under chat/);
  });

  it('is deterministic, and stops within its run budget when the targets cannot be met', async () => {
    const input = await loadPlan(FILE);
    const strict: PlanInput = {
      ...input,
      doc: {
        ...input.doc,
        targets: [{ class: 'chat', slo: 1 }],
        menu: { ...input.doc.menu, max_gpus_per_site: 1 },
      },
    };
    const first = await plan(strict, { maxRuns: 4 });
    const second = await plan(strict, { maxRuns: 4 });
    expect(first.runs.length).toBeLessThanOrEqual(4);
    expect(first.runs.map((r) => [r.label, r.shortfall])).toEqual(
      second.runs.map((r) => [r.label, r.shortfall]),
    );
    // Either a plan that meets the targets, or a reason for stopping short.
    expect(first.plan === undefined ? first.stopped !== undefined : first.plan.meets).toBe(true);
  });

  it('adds nothing, in one run, when the scenario already meets its targets', async () => {
    const input = await loadPlan(FILE);
    const lax: PlanInput = { ...input, doc: { ...input.doc, targets: [{ class: 'chat', slo: 0.1 }] } };
    const outcome = await plan(lax);
    expect(outcome.baseline.meets).toBe(true);
    expect(outcome.plan?.sites).toEqual([]);
    expect(outcome.plan?.costPerHour).toBe(0);
    expect(outcome.runs).toHaveLength(1);
  });

  it('serves added GPUs as the scenario serves the rest: fixed-rate stations under node_model fixed', async () => {
    const loaded = await loadPlan(FILE);
    const site: Site = { region: 'CN-GD', level: 'PROVINCE', model: 'qwen3-8b', gpu: 'h100', gpus: 2 };
    const measured = siteNodes(loaded, [site]).flatMap((n) => n.models);
    expect(measured.every((offer) => offer.engine !== undefined)).toBe(true);
    const input: PlanInput = { ...loaded, scenario: { ...loaded.scenario, node_model: 'fixed' } };
    const offers = withNodes(input.topology, siteNodes(input, [site])).nodes.flatMap((n) => n.models);
    expect(offers.filter((offer) => offer.engine !== undefined)).toEqual([]);
    // The same slots and quoted rates as the measured engines.
    const fixed = siteNodes(input, [site]).flatMap((n) => n.models);
    expect(fixed.map((o) => [o.maxConcurrency, o.prefillTokensPerS, o.decodeTokensPerS])).toEqual(
      measured.map((o) => [o.maxConcurrency, o.prefillTokensPerS, o.decodeTokensPerS]),
    );
  });

  it("simulates added GPUs at the scenario's capacity_scale, as the rest of the slice", async () => {
    const input = await loadPlan(FILE);
    const at = { region: 'CN-GD', level: 'PROVINCE' as const, model: 'qwen3-8b', gpu: 'h100' };
    const sliced = (scale: number): PlanInput => ({
      ...input,
      scenario: { ...input.scenario, topology: { ...input.scenario.topology, capacity_scale: scale } },
    });
    const offerOf = (p: PlanInput, gpus: number) => siteNodes(p, [{ ...at, gpus }])[0]?.models[0];
    expect(offerOf(sliced(1), 2)?.maxConcurrency).toBe(128);
    expect(offerOf(sliced(0.5), 4)?.engine?.replicas).toBe(2);
    expect(offerOf(sliced(0.5), 1)?.maxConcurrency).toBe(32);
    expect(offerOf(sliced(0.1), 1)?.engine?.curves.maxBatch).toBe(6);
  });

  it('names the line of each mistake in a plan file', async () => {
    const file = await tempFile(
      'bad.yaml',
      [
        `scenario: ${resolve('test/sim/plan/scenario.yaml')}`,
        'targets:',
        '  - { class: nope, slo: 0.99 }',
        'catalogue:',
        `  - { gpu: ${resolve('simulations/profiles/h100')}, price_per_gpu_hour: 10 }`,
        'shapes: { qwen3-8b: 8b }',
        'menu: { regions: [CN-XX] }',
        '',
      ].join('\n'),
    );
    const twice = await tempFile(
      'twice.yaml',
      [
        `scenario: ${resolve('test/sim/plan/scenario.yaml')}`,
        'targets: [{ class: chat, slo: 0.99 }]',
        'catalogue:',
        `  - { gpu: ${resolve('simulations/profiles/h100')}, price_per_gpu_hour: 10 }`,
        `  - { gpu: ${resolve('test/sim/plan/nowhere/h999')}, price_per_gpu_hour: 12 }`,
        'shapes: { qwen3-8b: 8b }',
        'menu: { regions: [CN-GD, CN-GD], levels: [PROVINCE] }',
        'search: { uniform_level: EDGE }',
        '',
      ].join('\n'),
    );
    const problems = await loadPlan(twice).then(
      () => '',
      (error: Error) => error.message,
    );
    expect(problems).toMatch(/twice\.yaml:5: catalogue\[1\]\.gpu .*nowhere\/h999/);
    expect(problems).toMatch(/twice\.yaml:7: menu\.regions\[1\] CN-GD is listed twice/);
    expect(problems).toMatch(/twice\.yaml:8: search\.uniform_level EDGE is not a menu level/);
    await expect(loadPlan(file)).rejects.toThrow(
      /bad\.yaml:3: .*nope is not a class of plan-tiny[\s\S]*bad\.yaml:7: .*CN-XX is not a region/,
    );
  });
});
