// cpn simulate with nodes served by measured engines (topology offers with `engine`): the load
// curve has its knee — past the engines' saturation TTFT climbs by an order of magnitude — and the
// router's own prefill estimate follows the same measured curve.
import { describe, expect, it } from 'vitest';
import { prefillMs } from '../../src/core/cost.js';
import { findOffer, type NodeSpec } from '../../src/core/model.js';
import { loadGpuProfile } from '../../src/ops/gpu-profile.js';
import { loadTopology } from '../../src/ops/topology.js';
import { buildTopology, simulate, timeseriesCsv } from '../../src/sim/run.js';
import { loadScenario } from '../../src/sim/scenario.js';

describe('simulated nodes on measured engines', () => {
  it('the topology turns an engine offer into slots and a prefill curve the router uses', async () => {
    const topology = await loadTopology('simulations/topologies/gpu-sites.yaml');
    const spec = topology.nodes.find((n) => n.id === 'gd-h100');
    const offer = spec === undefined ? undefined : findOffer(spec, 'qwen3-8b');
    expect(offer?.maxConcurrency).toBe(2 * 64);
    expect(offer?.engine?.replicas).toBe(2);
    const measured = await loadGpuProfile('simulations/profiles/h100', '8b');
    const size = { inputTokens: 2048, cachedInputTokens: 0, maxOutputTokens: 1 };
    expect(prefillMs(size, offer as NonNullable<typeof offer>)).toBeCloseTo(measured.prefillMs(2048), 6);
  });

  it("capacity_scale scales an engine-served offer by whole engines, then by batch; the router's slots with them", async () => {
    const base = await loadScenario('simulations/gpu-knee.yaml');
    // gd-h100: 2 engines of 64.
    for (const [scale, replicas, batch] of [
      [2, 4, 64],
      [0.5, 1, 64],
      [0.25, 1, 32],
      [0.1, 1, 13],
      [0.001, 1, 1],
    ] as const) {
      const topology = await buildTopology({
        ...base,
        topology: { ...base.topology, capacity_scale: scale },
      });
      const offer = findOffer(topology.nodes.find((n) => n.id === 'gd-h100') as NodeSpec, 'qwen3-8b');
      expect(offer?.engine?.replicas).toBe(replicas);
      expect(offer?.engine?.curves.maxBatch).toBe(batch);
      expect(offer?.maxConcurrency).toBe(replicas * batch);
    }
  });

  it('past the engines’ saturation the TTFT climbs by an order of magnitude (the knee)', async () => {
    const base = await loadScenario('simulations/gpu-knee.yaml');
    const scenario = {
      ...base,
      duration: 12 * 60_000,
      warmup: 0,
      bucket: 2 * 60_000,
      // Below saturation, then well past it.
      demand: { ...base.demand, rate_per_s: 60 },
      events: [{ kind: 'surge' as const, region: 'CN-GD', factor: 2.2, at: 6 * 60_000, for: 6 * 60_000 }],
      policies: ['least-loaded' as const],
    };
    const output = await simulate(scenario);
    const rows = timeseriesCsv(scenario, output.topology, output.results)
      .trim()
      .split('\n')
      .slice(1)
      .map((line) => line.split(','));
    const meanTtft = (fromS: number, toS: number) => {
      const picked = rows.filter((r) => Number(r[1]) >= fromS && Number(r[1]) < toS).map((r) => Number(r[6]));
      return picked.reduce((a, b) => a + b, 0) / picked.length;
    };
    const before = meanTtft(120, 360);
    const after = meanTtft(480, 720);
    expect(before).toBeLessThan(200);
    expect(after).toBeGreaterThan(10 * before);
  });
});
