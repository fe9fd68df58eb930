// Scenario files (YAML): topology, demand, events and the policies to compare. Validated with zod;
// every mistake is reported as `file:line: field message, got value`.

import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { LEVELS } from '../core/model.js';
import { YamlSource } from '../ops/yaml-config.js';

const DURATION = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$/;
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/g;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "30m", "2h", "1h30m", "500ms" → milliseconds. */
export function parseDuration(text: string): number | undefined {
  const trimmed = text.trim();
  if (!DURATION.test(trimmed)) return undefined;
  let ms = 0;
  for (const [, amount, unit] of trimmed.matchAll(PART))
    ms += Number(amount) * (UNIT_MS[unit as string] as number);
  return ms;
}

const duration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const ms = typeof value === 'number' ? value * 1000 : parseDuration(value);
  if (ms === undefined || !Number.isFinite(ms) || ms < 0) {
    ctx.addIssue({
      code: 'custom',
      message: 'must be a duration like 90s, 30m, 1h30m or 24h (a bare number is seconds)',
    });
    return z.NEVER;
  }
  return ms;
});

const positiveDuration = duration.refine((ms) => ms > 0, 'must be longer than 0');

const tokens = z
  .strictObject({ mean: z.number().positive(), p95: z.number().positive() })
  .refine((t) => t.p95 >= t.mean, 'p95 must be >= mean');

export const POLICIES = ['cheapest-feasible', 'nearest', 'least-loaded', 'random'] as const;
export type PolicyName = (typeof POLICIES)[number];

const classSchema = z.strictObject({
  name: z.string().min(1),
  share: z.number().positive(),
  model: z.string().min(1),
  latency_budget_ms: z.number().positive(),
  input_tokens: tokens,
  output_tokens: tokens,
  cached_share: z.number().min(0).max(1).default(0),
  allowed_levels: z.array(z.enum(LEVELS)).optional(),
});

/**
 * Vehicles on a route: trips start at random (Poisson, vehicles_per_hour) at a random point of the
 * route, drive one way at speed_kmh for session_length (or to the route's end), and send
 * requests_per_minute requests, each with new input tokens and a context that grows per request.
 */
const point = z.strictObject({ lat: z.number().min(-90).max(90), lon: z.number().min(-180).max(180) });
export const MOBILITY_MODES = ['per-request', 'sticky', 'sessions'] as const;
export type MobilityMode = (typeof MOBILITY_MODES)[number];
const mobileSchema = z.strictObject({
  name: z.string().min(1),
  model: z.string().min(1),
  latency_budget_ms: z.number().positive(),
  /** From one region's centre to another's (the topology's coordinates), or explicit waypoints. */
  route: z.union([
    z.strictObject({ from: z.string().min(1), to: z.string().min(1) }),
    z.strictObject({ waypoints: z.array(point).min(2).max(1000) }),
  ]),
  speed_kmh: z.number().positive().max(500),
  session_length: positiveDuration,
  requests_per_minute: z.number().positive().max(600),
  vehicles_per_hour: z.number().positive().max(100_000),
  input_tokens: tokens,
  output_tokens: tokens,
  context_tokens: z
    .strictObject({
      start: z.number().int().min(0).default(0),
      per_request: z.number().int().min(0).default(0),
      max: z.number().int().min(0).default(32_000),
    })
    .default({ start: 0, per_request: 0, max: 32_000 }),
  allowed_levels: z.array(z.enum(LEVELS)).optional(),
});

const windowed = { at: duration, for: positiveDuration };
const eventSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('node_down'), node: z.string().min(1), ...windowed }),
  z.strictObject({ kind: z.literal('region_down'), region: z.string().min(1), ...windowed }),
  z.strictObject({
    kind: z.literal('link_degraded'),
    region: z.string().min(1),
    add_ms: z.number().positive(),
    ...windowed,
  }),
  z.strictObject({
    kind: z.literal('surge'),
    region: z.string().min(1),
    factor: z.number().positive(),
    ...windowed,
  }),
  z.strictObject({
    kind: z.literal('price_change'),
    at: duration,
    utc_offset_hours: z.number().min(-12).max(14).default(8),
    multipliers: z.array(
      z.strictObject({
        level: z.enum(LEVELS).optional(),
        region: z.string().optional(),
        model: z.string().optional(),
        factor: z.number().positive(),
        window: z
          .string()
          .regex(/^\d{1,2}-\d{1,2}$/, 'must look like "00-08"')
          .optional(),
      }),
    ),
  }),
]);

/** Simulate a slice of the network: scales every offer's max_concurrency and max_queue (at least 1 slot). */
const capacityScale = z.number().positive().max(100).default(1);

const topologySchema = z.union([
  z.strictObject({ file: z.string().min(1), capacity_scale: capacityScale }),
  z.strictObject({
    generate: z.literal('national'),
    capacity_scale: capacityScale,
    /** Regions, model prices and capacity profiles come from this topology. */
    base: z.string().min(1).default('simulations/topologies/demo-national.yaml'),
    hubs: z.number().int().min(0).max(8).default(8),
    provinces: z.number().int().min(0).max(31).default(31),
    edges_per_province: z.number().int().min(0).max(200).default(2),
    terminals_per_edge: z.number().int().min(0).max(50).default(1),
    /** Overrides of profile price factors, e.g. { edge: 2.5 }. */
    price_factors: z.record(z.string(), z.number().positive()).optional(),
  }),
]);

export const NODE_MODELS = ['measured', 'fixed'] as const;
export type NodeModel = (typeof NODE_MODELS)[number];

export const scenarioSchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9-]*$/, 'must be lowercase letters, digits and dashes'),
  description: z.string().optional(),
  seed: z.number().int().nonnegative().default(1),
  duration: positiveDuration,
  warmup: duration.default(0),
  bucket: positiveDuration.default(15 * 60_000),
  topology: topologySchema,
  /**
   * How a node serves: `measured` runs an offer that names a measured engine iteration by
   * iteration (batching-node.ts), `fixed` runs every offer as a FIFO station at its fixed
   * per-request rates (for an engine offer, the rates the router quotes: the curve's fastest
   * prefill and a full batch's decode step) — the quick model, also for the router's estimates.
   */
  node_model: z.enum(NODE_MODELS).default('measured'),
  demand: z.strictObject({
    rate_per_s: z.number().positive(),
    start_hour: z.number().min(0).max(24).default(0),
    daily_curve: z.array(z.number().nonnegative()).length(24).optional(),
    region_weights: z.record(z.string(), z.number().nonnegative()).optional(),
    classes: z.array(classSchema).min(1),
    /** Moving clients, compared under per-request routing, sticky-forever and sessions. */
    mobile: z.array(mobileSchema).default([]),
  }),
  events: z.array(eventSchema).default([]),
  policies: z
    .array(z.enum(POLICIES))
    .min(1)
    .default(['cheapest-feasible', 'nearest', 'least-loaded', 'random']),
  network: z
    .strictObject({
      /** σ of the lognormal factor applied to each request's RTT. */
      rtt_jitter: z.number().min(0).max(2).default(0.1),
      /** σ of the lognormal factor applied to each request's service time. */
      service_noise: z.number().min(0).max(2).default(0.1),
    })
    .default({ rtt_jitter: 0.1, service_noise: 0.1 }),
});

export type Scenario = z.output<typeof scenarioSchema> & { readonly file: string; readonly dir: string };
export type ScenarioEvent = Scenario['events'][number];
export type RequestClass = Scenario['demand']['classes'][number];
export type MobileClass = Scenario['demand']['mobile'][number];

/** Loads and validates a scenario; throws ConfigError listing each problem with file and line. */
export async function loadScenario(file: string): Promise<Scenario> {
  const source = await YamlSource.load(file);
  const scenario = source.validate(scenarioSchema);
  const problems: string[] = [];
  if (scenario.warmup >= scenario.duration) {
    problems.push(source.problem(['warmup'], 'must be shorter than duration'));
  }
  const names = new Set<string>();
  scenario.demand.classes.forEach((c, index) => {
    if (names.has(c.name))
      problems.push(source.problem(['demand', 'classes', index, 'name'], `${c.name} is used twice`));
    names.add(c.name);
  });
  if (problems.length > 0) {
    const { ConfigError } = await import('../ops/yaml-config.js');
    throw new ConfigError(problems);
  }
  return { ...scenario, file, dir: dirname(resolve(file)) };
}

/** Mean 1.0 daily shape: quiet nights, a morning rise, an evening peak (hours 0..23). */
export const DEFAULT_DAILY_CURVE: readonly number[] = [
  0.35, 0.25, 0.2, 0.18, 0.18, 0.25, 0.45, 0.75, 1.05, 1.25, 1.3, 1.3, 1.2, 1.25, 1.3, 1.3, 1.3, 1.35, 1.45,
  1.6, 1.7, 1.6, 1.2, 0.7,
];

/** Seventh national census (2020), millions: the default weight of each province's demand. */
export const POPULATION_M: Readonly<Record<string, number>> = {
  'CN-BJ': 21.9,
  'CN-TJ': 13.9,
  'CN-HE': 74.6,
  'CN-SX': 34.9,
  'CN-NM': 24.0,
  'CN-LN': 42.6,
  'CN-JL': 24.1,
  'CN-HL': 31.9,
  'CN-SH': 24.9,
  'CN-JS': 84.7,
  'CN-ZJ': 64.6,
  'CN-AH': 61.0,
  'CN-FJ': 41.5,
  'CN-JX': 45.2,
  'CN-SD': 101.5,
  'CN-HA': 99.4,
  'CN-HB': 57.8,
  'CN-HN': 66.4,
  'CN-GD': 126.0,
  'CN-GX': 50.1,
  'CN-HI': 10.1,
  'CN-CQ': 32.1,
  'CN-SC': 83.7,
  'CN-GZ': 38.6,
  'CN-YN': 47.2,
  'CN-XZ': 3.6,
  'CN-SN': 39.5,
  'CN-GS': 25.0,
  'CN-QH': 5.9,
  'CN-NX': 7.2,
  'CN-XJ': 25.9,
};
