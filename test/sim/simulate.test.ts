// The simulator end to end on small runs: arithmetic, determinism, policy sanity.
import { describe, expect, it } from 'vitest';
import { buildTopology, simulate, timeseriesCsv } from '../../src/sim/run.js';
import { loadScenario, type Scenario } from '../../src/sim/scenario.js';

type PolicyOut = {
  requests: number;
  placed: number;
  slo_attainment: number;
  cost_per_mtok_cny: number;
  ttft_ms: { p50: number };
};

/** Ten minutes of sparse Guangdong demand on the demo topology, without noise, in these classes. */
async function quietGuangdong(classes: Scenario['demand']['classes']): Promise<Scenario> {
  const base = await loadScenario('simulations/national-day.yaml');
  return {
    ...base,
    duration: 10 * 60_000,
    topology: { file: 'simulations/topologies/demo-national.yaml', capacity_scale: 1 },
    demand: { ...base.demand, rate_per_s: 0.5, region_weights: { 'CN-GD': 1 }, classes },
    events: [],
    policies: ['cheapest-feasible'],
    network: { rtt_jitter: 0, service_noise: 0 },
  };
}

/** One class of every request: 256 input tokens (none cached), 100 output. */
function fixedSizes(model: string, budgetMs: number): Scenario['demand']['classes'][number] {
  return {
    name: 'fixed',
    share: 1,
    model,
    latency_budget_ms: budgetMs,
    input_tokens: { mean: 256, p95: 256 },
    output_tokens: { mean: 100, p95: 100 },
    cached_share: 0,
    allowed_levels: undefined,
  };
}

describe('simulate', () => {
  it('measures TTFT as RTT + prefill when nothing queues (no noise, fixed sizes)', async () => {
    // A model the demo serves at fixed rates everywhere (no measured engine).
    const scenario: Scenario = { ...(await quietGuangdong([fixedSizes('deepseek-v3', 40)])), warmup: 0 };
    const { summary } = await simulate(scenario);
    const out = (summary.policies as Record<string, PolicyOut>)['cheapest-feasible'] as PolicyOut;
    expect(out.requests).toBeGreaterThan(50);
    expect(out.slo_attainment).toBe(1);
    // The demo's Guangdong provincial node: 3.0 ms RTT + 256 tokens / 8,000 tok/s = 35.0 ms (within 1 %).
    expect(Math.abs(out.ttft_ms.p50 - 35) / 35).toBeLessThan(0.01);
    // Cost: (256 × 2.5 + 100 × 10) CNY per Mtok at the province's 1.25 × list price.
    expect(out.cost_per_mtok_cny).toBeCloseTo((256 * 2.5 + 100 * 10) / 356, 4);
  });

  it('node_model fixed serves an engine offer as a station at the rates the router quotes', async () => {
    // Served by measured engines in the demo (the Guangdong provincial node's H200s); only that
    // node is within 10 ms and cheaper than the edges.
    const scenario: Scenario = { ...(await quietGuangdong([fixedSizes('qwen3-8b', 10)])), warmup: 0 };
    const fixed: Scenario = { ...scenario, node_model: 'fixed' };
    const measuredNodes = (await buildTopology(scenario)).nodes;
    const fixedNodes = (await buildTopology(fixed)).nodes;
    expect(measuredNodes.some((spec) => spec.models.some((offer) => offer.engine !== undefined))).toBe(true);
    expect(fixedNodes.every((spec) => spec.models.every((offer) => offer.engine === undefined))).toBe(true);
    // The same slots and rates: only how they are served differs.
    const rates = (nodes: typeof fixedNodes) =>
      nodes.flatMap((spec) =>
        spec.models.map((o) => [spec.id, o.model, o.maxConcurrency, o.prefillTokensPerS, o.decodeTokensPerS]),
      );
    expect(rates(fixedNodes)).toEqual(rates(measuredNodes));
    const province = fixedNodes.find((spec) => spec.level === 'PROVINCE' && spec.region === 'CN-GD');
    const rate = province?.models.find((offer) => offer.model === 'qwen3-8b')?.prefillTokensPerS ?? 0;
    expect(rate).toBeGreaterThan(0);

    const { summary } = await simulate(fixed);
    expect(summary.node_model).toBe('fixed');
    const out = (summary.policies as Record<string, PolicyOut>)['cheapest-feasible'] as PolicyOut;
    expect(out.requests).toBeGreaterThan(50);
    // A station at the offer's fixed rate: 3.0 ms RTT + 256 tokens at the curve's fastest rate.
    const expected = 3 + (256 / rate) * 1000;
    expect(Math.abs(out.ttft_ms.p50 - expected) / expected).toBeLessThan(0.01);
    const measured = await simulate(scenario);
    expect(measured.summary.node_model).toBe('measured');
  });

  it('counts busy time after the warm-up exactly, whatever the reporting buckets', async () => {
    const fixed = { input_tokens: { mean: 256, p95: 256 }, cached_share: 0, allowed_levels: undefined };
    const scenario = await quietGuangdong([
      // Long requests: busy stretches that cross the end of the warm-up.
      {
        ...fixed,
        name: 'long',
        share: 0.1,
        model: 'qwen3-8b',
        latency_budget_ms: 2000,
        output_tokens: { mean: 4000, p95: 4000 },
      },
      // Never placed (nothing within 1 ms): events that change no busy count.
      {
        ...fixed,
        name: 'refused',
        share: 0.9,
        model: 'qwen3-8b',
        latency_budget_ms: 1,
        output_tokens: { mean: 10, p95: 10 },
      },
    ]);
    for (const warmup of [134_000, 208_000, 393_000]) {
      // Buckets that end at the warm-up, and buckets that straddle it: the same busy time after it.
      const aligned = await simulate({ ...scenario, warmup, bucket: warmup }, undefined, { workers: false });
      const straddling = await simulate({ ...scenario, warmup, bucket: 15 * 60_000 }, undefined, {
        workers: false,
      });
      const [a, b] = [aligned.results[0], straddling.results[0]];
      for (const level of ['CENTER', 'PROVINCE', 'EDGE'] as const) {
        const want = a?.utilizationByLevel[level] as number;
        expect(Math.abs((b?.utilizationByLevel[level] as number) - want)).toBeLessThanOrEqual(
          1e-12 * Math.max(1, want),
        );
      }
      expect(a?.utilizationByLevel.CENTER).toBeGreaterThan(0);
    }
  });

  it('gives a byte-identical summary for the same scenario and seed, and a different one for another seed', async () => {
    const base = await loadScenario('simulations/province-surge.yaml');
    const small = {
      ...base,
      // Small in work (a minute of the surge's province at the evening peak), so that it takes a
      // few seconds and stays far from its timeout on a busy machine.
      duration: 60_000,
      warmup: 0,
      bucket: 20_000,
      events: base.events.map((e) => ({ ...e, at: 30_000 })),
    };
    const first = await simulate(small);
    const second = await simulate(small);
    expect(JSON.stringify(second.summary)).toBe(JSON.stringify(first.summary));
    expect(timeseriesCsv(small, second.topology, second.results)).toBe(
      timeseriesCsv(small, first.topology, first.results),
    );
    const other = await simulate({ ...small, seed: small.seed + 1 });
    expect(JSON.stringify(other.summary)).not.toBe(JSON.stringify(first.summary));
  });

  it('national day at the evening peak: cheapest-feasible is cheapest among policies at least as good; nearest costs more', async () => {
    const base = await loadScenario('simulations/national-day.yaml');
    const peak = {
      ...base,
      duration: 15 * 60_000,
      warmup: 2 * 60_000,
      bucket: 5 * 60_000,
      demand: { ...base.demand, start_hour: 19 },
    };
    const { summary } = await simulate(peak);
    const policies = summary.policies as Record<string, PolicyOut>;
    const cheapest = policies['cheapest-feasible'] as PolicyOut;
    for (const [name, out] of Object.entries(policies)) {
      expect(out.requests).toBe(cheapest.requests);
      if (name !== 'cheapest-feasible' && out.slo_attainment >= cheapest.slo_attainment) {
        expect(out.cost_per_mtok_cny, name).toBeGreaterThan(cheapest.cost_per_mtok_cny);
      }
    }
    expect((policies.nearest as PolicyOut).cost_per_mtok_cny).toBeGreaterThan(cheapest.cost_per_mtok_cny);
  }, 120_000);
});

describe('simulate on worker threads', () => {
  it('`cpn simulate` runs its policies side by side and writes exactly what one thread computes', async () => {
    const { mkdtemp, readFile, writeFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const { runCli } = await import('../helpers/cli.js');
    const dir = await mkdtemp(join(tmpdir(), 'cpn-sim-workers-'));
    // province-surge, a minute of it with the surge in the middle.
    const text = (await readFile('simulations/province-surge.yaml', 'utf8'))
      .replace(/^duration: .*$/m, 'duration: 1m')
      .replace(/^warmup: .*$/m, 'warmup: 0s')
      .replace(/^bucket: .*$/m, 'bucket: 20s')
      .replace(/at: 2h, for: 3h/, 'at: 30s, for: 30s');
    const file = join(dir, 'small.yaml');
    await writeFile(file, text);
    const inThread = await simulate(await loadScenario(file), undefined, { workers: false });
    // The CLI runs from the built code, where the runs go to worker threads.
    const out = join(dir, 'out');
    const cli = await runCli(['simulate', file, '--out', out], 60_000);
    expect(cli.code, cli.stderr).toBe(0);
    expect(await readFile(join(out, 'summary.json'), 'utf8')).toBe(
      `${JSON.stringify(inThread.summary, null, 2)}\n`,
    );
  }, 120_000);
});
