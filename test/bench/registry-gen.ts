// Seeded national registries for the benchmarks: nodes around the provincial capitals, four
// levels, three models, priced in a few tiers or one price per node (±20 % per token kind).

import type { LatLon, Level, NodeSpec } from '../../src/core/model.js';
import type { PricingPolicy } from '../../src/core/pricing.js';
import type { RouteRequest } from '../../src/core/routing/index.js';

export const BENCH_MODELS = ['qwen3-32b', 'deepseek-v3', 'qwen3-8b'] as const;

export type PriceMode = 'tiers' | 'distinct';

/** mulberry32: a small seeded PRNG so every run benchmarks the same registry. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const LEVEL_SHARES: readonly [Level, number][] = [
  ['CENTER', 0.002],
  ['PROVINCE', 0.03],
  ['EDGE', 0.6],
  ['TERMINAL', 1],
];
const LEVEL_PRICE: Readonly<Record<Level, number>> = { CENTER: 0.6, PROVINCE: 1.25, EDGE: 2.2, TERMINAL: 3 };

export function nationalRegistry(
  count: number,
  mode: PriceMode,
  centroids: ReadonlyMap<string, LatLon>,
): NodeSpec[] {
  const random = seeded(42);
  const regions = [...centroids.entries()];
  const spread = () => (mode === 'tiers' ? 1 : 0.8 + 0.4 * random());
  return Array.from({ length: count }, (_, i) => {
    const [region, centre] = regions[Math.floor(random() * regions.length)] as [string, LatLon];
    const roll = random();
    const level = LEVEL_SHARES.find(([, share]) => roll < share)?.[0] ?? 'EDGE';
    const models = BENCH_MODELS.filter(() => random() < 0.6);
    if (models.length === 0)
      models.push(BENCH_MODELS[i % BENCH_MODELS.length] as (typeof BENCH_MODELS)[number]);
    const factor = LEVEL_PRICE[level];
    return {
      id: `n${i}`,
      level,
      region,
      parentId: '',
      endpoint: `n${i}.example:8000`,
      location: { lat: centre.lat + (random() - 0.5) * 3, lon: centre.lon + (random() - 0.5) * 3 },
      gpus: [{ type: 'L20', count: 8, memoryGib: 48 }],
      models: models.map((model) => ({
        model,
        maxConcurrency: 64,
        maxQueue: 64,
        prefillTokensPerS: 10_000 + random() * 30_000,
        decodeTokensPerS: 50,
        price: {
          inputPerMtok: 2 * factor * spread(),
          outputPerMtok: 8 * factor * spread(),
          cachedInputPerMtok: 0.2 * factor * spread(),
        },
      })),
      labels: {},
    };
  });
}

/** A time-of-use policy of the kind operators run: night discounts at the edge, a dear evening. */
export const TIME_OF_USE: PricingPolicy = {
  utcOffsetHours: 8,
  rules: [
    { level: 'EDGE', region: undefined, model: undefined, factor: 0.6, window: { fromHour: 0, toHour: 8 } },
    {
      level: 'TERMINAL',
      region: undefined,
      model: undefined,
      factor: 0.7,
      window: { fromHour: 0, toHour: 8 },
    },
    {
      level: 'CENTER',
      region: undefined,
      model: undefined,
      factor: 1.2,
      window: { fromHour: 18, toHour: 23 },
    },
    { level: undefined, region: 'CN-GD', model: undefined, factor: 0.9, window: undefined },
    {
      level: undefined,
      region: 'CN-XJ',
      model: 'qwen3-8b',
      factor: 0.5,
      window: { fromHour: 22, toHour: 6 },
    },
  ],
};

/** A client somewhere in China: near a provincial capital. */
export function clientAt(
  random: () => number,
  centroids: ReadonlyMap<string, LatLon>,
): { region: string; location: LatLon } {
  const regions = [...centroids.entries()];
  const [region, centre] = regions[Math.floor(random() * regions.length)] as [string, LatLon];
  return {
    region,
    location: { lat: centre.lat + (random() - 0.5) * 2, lon: centre.lon + (random() - 0.5) * 2 },
  };
}

/** 4,096 requests from clients anywhere in China; budgets in turn when given several. */
export function benchRequests(
  centroids: ReadonlyMap<string, LatLon>,
  budgetMs: number | readonly number[],
  extra: Partial<RouteRequest>,
  seed: number,
): RouteRequest[] {
  const random = seeded(seed);
  const budgets = typeof budgetMs === 'number' ? [budgetMs] : budgetMs;
  return Array.from({ length: 4096 }, (_, i) => {
    const { region, location } = clientAt(random, centroids);
    return {
      requestId: '',
      tenant: '',
      model: BENCH_MODELS[i % BENCH_MODELS.length] as string,
      client: { region, accessPoint: '', location },
      latencyBudgetMs: budgets[i % budgets.length] as number,
      inputTokens: 200 + Math.floor(random() * 4000),
      cachedInputTokens: 0,
      maxOutputTokens: 50 + Math.floor(random() * 1000),
      allowedLevels: [],
      allowedRegions: [],
      allowDegraded: false,
      explain: false,
      maxFallbacks: 2,
      ...extra,
    };
  });
}
