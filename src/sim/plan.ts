// `cpn plan`: the least-cost set of GPU additions that makes a scenario meet its SLO targets.
//
// A plan file names a scenario, SLO targets per class (optionally per region), a GPU catalogue
// with prices per GPU-hour and level, and a menu of where GPUs may go. An addition is a site: a
// number of GPUs of one type, at one (region, level), each running one continuous-batching engine
// of the model's measured shape (simulations/profiles/<gpu>). Every candidate is judged by a full
// simulator run of the scenario under one policy (the simulator's measured engines, the
// production routing pipeline): no capacity formula stands between a plan and its SLO.
//
// The search (why this one): runs cost seconds to minutes each, so the search must spend few.
//   1. Greedy by marginal value: from the current plan, try one step of GPUs at each (region,
//      level, GPU type) where the unmet targets lose most requests, and keep the candidate that
//      recovers the most missing requests per CNY. Misses are local (a latency budget binds a
//      request to what is near it), so the worst regions are where capacity pays; the focus widens
//      to more regions only when no nearby step helps. A site's step doubles each time it wins, so
//      a site that needs many GPUs gets them in a few runs.
//   2. The uniform plan, for comparison and as a second start: the same number of GPUs of one type
//      for each targeted model in every menu region, the smallest that meets the targets
//      (doubling, then bisection; the GPU types side by side).
//   3. Prune and swap from the cheapest plan that met the targets so far: greedy steps overshoot,
//      an early step can be made redundant by a later one, and a uniform plan puts GPUs where
//      nothing misses. Each site is tried one step smaller, and with its GPUs (some or all) moved
//      to a GPU type that costs less for the same place; the cheapest variant that still meets
//      every target is kept, until none does.
// The answer is the cheapest run that met every target, whichever phase tried it.
// Every run is cached by its plan, and the total is bounded (`max_runs`). Deterministic for a
// seed: runs are deterministic and candidates are tried and compared in a fixed order.

import { basename, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { LEVELS, type Level, type NodeSpec, type Price } from '../core/model.js';
import { engineCurves } from '../ops/gpu-profile.js';
import type { Topology } from '../ops/topology.js';
import { ConfigError, YamlSource } from '../ops/yaml-config.js';
import { buildTopology, scaledEngines, servedAs, withNodes } from './build-topology.js';
import { runInWorkers, workersAvailable } from './policy-worker.js';
import { loadScenario, POLICIES, type PolicyName, parseDuration, type Scenario } from './scenario.js';
import { runPolicy } from './simulate.js';

const level = z.enum(LEVELS);
/** The measured profiles shipped with cpn (src/sim or dist/sim → simulations/profiles). */
const PROFILES_DIR = fileURLToPath(new URL('../../simulations/profiles', import.meta.url));
const NODE_ID_MAX = 63;

const planSchema = z.strictObject({
  /** The scenario file, relative to the plan file. */
  scenario: z.string().min(1),
  /** Plan for growth: the scenario's demand (classes and vehicles) × this. */
  demand_scale: z.number().positive().max(100).default(1),
  /** Simulate only this much of the scenario (e.g. up to the end of its peak), to spend less per run. */
  duration: z
    .string()
    .optional()
    .refine(
      (text) => text === undefined || (parseDuration(text) ?? 0) > 0,
      'must be a duration like 90s, 30m, 5h',
    ),
  policy: z.enum(POLICIES).default('cheapest-feasible'),
  targets: z
    .array(
      z.strictObject({
        class: z.string().min(1),
        /** Only this region's requests of the class (all regions when absent). */
        region: z.string().min(1).optional(),
        /** Share of the class's requests whose TTFT must be within the class budget. */
        slo: z.number().gt(0).max(1),
      }),
    )
    .min(1)
    .max(200),
  catalogue: z
    .array(
      z.strictObject({
        /** A measured profile: simulations/profiles/<gpu>, or a path relative to the plan file. */
        gpu: z.string().min(1),
        /** The name plans show (default: the profile directory's name). */
        name: z
          .string()
          .regex(/^[a-z0-9][a-z0-9.-]{0,30}$/, 'must be lowercase letters, digits, dots and dashes')
          .optional(),
        /** CNY per GPU-hour, one price or per level (a level left out cannot host this GPU). */
        price_per_gpu_hour: z.union([z.number().positive(), z.partialRecord(level, z.number().positive())]),
        memory_gib: z.number().positive().default(80),
        max_batch: z.number().int().positive().max(4096).default(64),
        prefill_budget: z.number().int().positive().default(4096),
      }),
    )
    .min(1)
    .max(16),
  /** The measured model shape that serves each targeted class's model. */
  shapes: z.record(z.string().min(1), z.enum(['8b', '32b'])),
  menu: z
    .strictObject({
      /** Regions that may receive GPUs (default: every region of the topology). */
      regions: z.array(z.string().min(1)).min(1).optional(),
      levels: z.array(level).min(1).default(['PROVINCE', 'EDGE']),
      /** GPUs added or removed per step. */
      step_gpus: z.number().int().positive().max(1024).default(1),
      max_gpus_per_site: z.number().int().positive().max(100_000).default(16),
    })
    .prefault({}),
  search: z
    .strictObject({
      /** Simulator runs at most, all phases together. */
      max_runs: z.number().int().positive().max(10_000).default(80),
      /** Regions tried per greedy step (the worst first); widened when none helps. */
      focus_regions: z.number().int().positive().max(100).default(2),
      /** Variants tried per prune round (the dearest sites first). */
      prune_width: z.number().int().positive().max(1000).default(8),
      /** The level of the uniform comparison (default: the menu's first). */
      uniform_level: level.optional(),
    })
    .prefault({}),
});

export type PlanDoc = z.output<typeof planSchema>;

/** A plan file, its scenario and its topology, checked against each other. */
export interface PlanInput {
  readonly file: string;
  readonly doc: PlanDoc;
  readonly scenario: Scenario;
  readonly topology: Topology;
  /** The menu's regions (resolved). */
  readonly regions: readonly string[];
  readonly catalogue: readonly CatalogueGpu[];
}

export interface CatalogueGpu {
  readonly gpu: string;
  readonly pricePerHour: Readonly<Partial<Record<Level, number>>>;
  readonly memoryGib: number;
  readonly maxBatch: number;
  readonly prefillBudget: number;
  /** The profile directory. */
  readonly dir: string;
}

/** Loads a plan file; every mistake is reported as `file:line: field message`. */
export async function loadPlan(file: string): Promise<PlanInput> {
  const source = await YamlSource.load(file);
  const doc = source.validate(planSchema);
  const here = dirname(resolve(file));
  const loaded = await loadScenario(resolve(here, doc.scenario));
  const scenario: Scenario = {
    ...loaded,
    duration: doc.duration === undefined ? loaded.duration : (parseDuration(doc.duration) as number),
    demand: {
      ...loaded.demand,
      rate_per_s: loaded.demand.rate_per_s * doc.demand_scale,
      mobile: loaded.demand.mobile.map((m) => ({
        ...m,
        vehicles_per_hour: m.vehicles_per_hour * doc.demand_scale,
      })),
    },
  };
  const topology = await buildTopology(scenario);
  const problems: string[] = [];
  if (scenario.duration <= scenario.warmup)
    problems.push(
      source.problem(
        ['duration'],
        `must be longer than the scenario's warmup (${scenario.warmup / 60_000} min)`,
      ),
    );
  const classes = new Map(scenario.demand.classes.map((c) => [c.name, c]));
  const regionsKnown = topology.regionCentroids;
  doc.targets.forEach((target, index) => {
    const cls = classes.get(target.class);
    if (cls === undefined)
      problems.push(
        source.problem(
          ['targets', index, 'class'],
          `${target.class} is not a class of ${scenario.name} (${[...classes.keys()].join(', ')})`,
        ),
      );
    else if (doc.shapes[cls.model] === undefined)
      problems.push(
        source.problem(['shapes'], `needs the measured shape (8b or 32b) that serves ${cls.model}`),
      );
    if (target.region !== undefined && !regionsKnown.has(target.region))
      problems.push(
        source.problem(['targets', index, 'region'], `${target.region} is not a region of the topology`),
      );
  });
  const regions = doc.menu.regions ?? [...regionsKnown.keys()].sort();
  (doc.menu.regions ?? []).forEach((region, index) => {
    if (!regionsKnown.has(region))
      problems.push(source.problem(['menu', 'regions', index], `${region} is not a region of the topology`));
    if (doc.menu.regions?.indexOf(region) !== index)
      problems.push(source.problem(['menu', 'regions', index], `${region} is listed twice`));
  });
  const catalogue: CatalogueGpu[] = [];
  doc.catalogue.forEach((entry, index) => {
    const dir = entry.gpu.includes('/') ? resolve(here, entry.gpu) : resolve(PROFILES_DIR, entry.gpu);
    const prices =
      typeof entry.price_per_gpu_hour === 'number'
        ? Object.fromEntries(LEVELS.map((l) => [l, entry.price_per_gpu_hour as number]))
        : entry.price_per_gpu_hour;
    if (!doc.menu.levels.some((l) => prices[l] !== undefined))
      problems.push(
        source.problem(
          ['catalogue', index, 'price_per_gpu_hour'],
          `has no price at any menu level (${doc.menu.levels.join(', ')})`,
        ),
      );
    const name = entry.name ?? basename(dir).toLowerCase();
    if (catalogue.some((c) => c.gpu === name))
      problems.push(source.problem(['catalogue', index, 'gpu'], `${name} is listed twice (give one a name)`));
    const gpu: CatalogueGpu = {
      gpu: name,
      pricePerHour: prices,
      memoryGib: entry.memory_gib,
      maxBatch: entry.max_batch,
      prefillBudget: entry.prefill_budget,
      dir,
    };
    catalogue.push(gpu);
    // Every shape the targets need, measured for this GPU: read now, not minutes into the search.
    for (const shape of new Set(Object.values(doc.shapes)))
      try {
        curvesFor(gpu, shape);
      } catch (error) {
        problems.push(
          source.problem(['catalogue', index, 'gpu'], `${dir}: ${(error as Error).message.split('\n')[0]}`),
        );
      }
  });
  if (doc.search.uniform_level !== undefined && !doc.menu.levels.includes(doc.search.uniform_level))
    problems.push(
      source.problem(
        ['search', 'uniform_level'],
        `${doc.search.uniform_level} is not a menu level (${doc.menu.levels.join(', ')})`,
      ),
    );
  if (problems.length > 0) throw new ConfigError(problems);
  return { file, doc, scenario: { ...scenario, policies: [doc.policy] }, topology, regions, catalogue };
}

/** GPUs of one type at one (region, level), serving one model. */
export interface Site {
  readonly region: string;
  readonly level: Level;
  readonly gpu: string;
  readonly model: string;
  readonly gpus: number;
}

const siteKey = (s: Omit<Site, 'gpus'>) => `${s.region}|${s.level}|${s.gpu}|${s.model}`;

/** A plan's sites in one canonical order (so that equal plans have equal keys). */
function canonical(sites: readonly Site[]): Site[] {
  return sites
    .filter((s) => s.gpus > 0)
    .sort((a, b) => (siteKey(a) < siteKey(b) ? -1 : siteKey(a) > siteKey(b) ? 1 : 0));
}

const planKey = (sites: readonly Site[]) =>
  canonical(sites)
    .map((s) => `${siteKey(s)}=${s.gpus}`)
    .join(';');

/** `sites` with `gpus` more (or fewer, when negative) at `at`; sites that reach 0 are dropped. */
export function adjusted(sites: readonly Site[], at: Omit<Site, 'gpus'>, gpus: number): Site[] {
  const key = siteKey(at);
  const found = sites.find((s) => siteKey(s) === key);
  const rest = sites.filter((s) => siteKey(s) !== key);
  return canonical([...rest, { ...at, gpus: (found?.gpus ?? 0) + gpus }]);
}

export interface TargetResult {
  readonly class: string;
  readonly region: string | undefined;
  readonly slo: number;
  readonly requests: number;
  readonly sloMet: number;
  readonly attainment: number;
  /** Requests short of the target (0: met). */
  readonly shortfall: number;
}

/** A target as people read it: its class, and its region if it has one. */
export function targetLabel(t: Pick<TargetResult, 'class' | 'region'>): string {
  return `${t.class}${t.region === undefined ? '' : ` in ${t.region}`}`;
}

export interface Evaluation {
  readonly index: number;
  readonly phase: 'baseline' | 'greedy' | 'prune' | 'uniform';
  readonly label: string;
  readonly sites: readonly Site[];
  readonly gpus: number;
  readonly costPerHour: number;
  readonly targets: readonly TargetResult[];
  readonly shortfall: number;
  readonly meets: boolean;
  /** SLO attainment by class, then region (for the report). */
  readonly attainment: Readonly<Record<string, Readonly<Record<string, { requests: number; slo: number }>>>>;
  /** Requests of unmet targets' classes that missed their budget, by class then region. */
  readonly misses: ReadonlyMap<string, ReadonlyMap<string, number>>;
}

export interface PlanOptions {
  /** Run candidates in worker threads (only from the built code; default true). */
  readonly workers?: boolean;
  readonly maxRuns?: number;
  /** Told of every run as it finishes. */
  readonly onRun?: (run: Evaluation) => void;
  /**
   * Judges a plan instead of a simulator run (tests of the search on a known response surface):
   * the outcomes by class, then region.
   */
  readonly outcomesOf?: (sites: readonly Site[]) => ClassRegionOutcomes;
}

/** Requests and those within budget, by class, then region. */
export type ClassRegionOutcomes = ReadonlyMap<
  string,
  ReadonlyMap<string, { readonly requests: number; readonly sloMet: number }>
>;

export interface UniformResult {
  readonly gpu: string;
  readonly plan: Evaluation | undefined;
  /** Why there is no plan, or why it may not be the fewest. */
  readonly note?: string;
}

export interface PlanOutcome {
  readonly input: PlanInput;
  readonly baseline: Evaluation;
  /** The least-cost plan found that meets every target (any phase's); undefined if none was found. */
  readonly plan: Evaluation | undefined;
  /** The best plan found when no plan met the targets (the greedy's last). */
  readonly closest: Evaluation;
  /** The cheapest uniform plan that meets the targets, per GPU type (undefined: none found). */
  readonly uniform: readonly UniformResult[];
  readonly runs: readonly Evaluation[];
  /** Why the search stopped short, if it did. */
  readonly stopped: string | undefined;
}

/** The price a new site sells tokens at: its level's in its region, else the level's median, else the model's. */
function referencePrice(topology: Topology, region: string, level: Level, model: string): Price {
  const offers = (filter: (spec: NodeSpec) => boolean) =>
    topology.nodes
      .filter(filter)
      .flatMap((spec) => spec.models.filter((offer) => offer.model === model).map((offer) => offer.price))
      .sort((a, b) => a.inputPerMtok - b.inputPerMtok || a.outputPerMtok - b.outputPerMtok);
  for (const found of [
    offers((spec) => spec.level === level && spec.region === region),
    offers((spec) => spec.level === level),
    offers(() => true),
  ])
    if (found.length > 0) return found[Math.floor((found.length - 1) / 2)] as Price;
  return { inputPerMtok: 1, outputPerMtok: 4, cachedInputPerMtok: 0.1 };
}

/** The nodes a plan adds: one per site, at its region's centre, priced as its level sells there. */
export function siteNodes(input: PlanInput, sites: readonly Site[]): readonly NodeSpec[] {
  const taken = new Set(input.topology.nodes.map((spec) => spec.id));
  const added = canonical(sites).map((site): NodeSpec => {
    const gpu = input.catalogue.find((c) => c.gpu === site.gpu) as CatalogueGpu;
    const shape = input.doc.shapes[site.model] as '8b' | '32b';
    const curves = curvesFor(gpu, shape);
    const slug = (text: string) => text.toLowerCase().replace(/[^a-z0-9.-]+/g, '-');
    const base = `plan-${slug(site.region)}-${slug(site.level)}-${slug(site.gpu)}-${slug(site.model)}`.slice(
      0,
      NODE_ID_MAX - 4,
    );
    let id = base;
    for (let n = 2; taken.has(id); n += 1) id = `${base}-${n}`;
    taken.add(id);
    // The scenario's capacity_scale applies to added GPUs as to the rest of the slice.
    const served = scaledEngines({ curves, replicas: site.gpus }, input.scenario.topology.capacity_scale);
    return {
      id,
      level: site.level,
      region: site.region,
      parentId: '',
      endpoint: `https://${id}.infer.example.net`,
      location: input.topology.regionCentroids.get(site.region),
      gpus: [{ type: site.gpu, count: site.gpus, memoryGib: gpu.memoryGib }],
      models: [
        {
          model: site.model,
          // One batch of waiting room per engine.
          maxQueue: served.maxConcurrency,
          ...served,
          price: referencePrice(input.topology, site.region, site.level, site.model),
        },
      ],
      labels: { 'cpn.plan': 'added' },
    };
  });
  // Served as the scenario serves the rest: with node_model fixed, as fixed-rate stations.
  return servedAs(added, input.scenario.node_model);
}

function curvesFor(gpu: CatalogueGpu, shape: '8b' | '32b') {
  return engineCurves(gpu.dir, shape, { maxBatch: gpu.maxBatch, prefillBudget: gpu.prefillBudget });
}

/** CNY per GPU-hour of catalogue GPU `gpu` at `level`; undefined when it has no price there. */
export function priceOf(input: PlanInput, gpu: string, level: Level): number | undefined {
  return input.catalogue.find((c) => c.gpu === gpu)?.pricePerHour[level];
}

/** CNY per hour for `sites`; every site's GPU must have a price at its level (the search keeps to those). */
export function costOf(input: PlanInput, sites: readonly Site[]): number {
  let cost = 0;
  for (const site of sites) {
    const price = priceOf(input, site.gpu, site.level);
    if (price === undefined) throw new Error(`${site.gpu} has no price at ${site.level}`);
    cost += site.gpus * price;
  }
  return Math.round(cost * 1e6) / 1e6;
}

/** Judges a run's result against the plan's targets. */
function judge(
  input: PlanInput,
  result: { readonly byClassRegion: ClassRegionOutcomes },
): Pick<Evaluation, 'targets' | 'shortfall' | 'meets' | 'attainment' | 'misses'> {
  const targets = input.doc.targets.map((target): TargetResult => {
    let requests = 0;
    let sloMet = 0;
    for (const [region, o] of result.byClassRegion.get(target.class) ?? []) {
      if (target.region !== undefined && region !== target.region) continue;
      requests += o.requests;
      sloMet += o.sloMet;
    }
    const needed = Math.ceil(target.slo * requests - 1e-9);
    return {
      class: target.class,
      region: target.region,
      slo: target.slo,
      requests,
      sloMet,
      attainment: requests === 0 ? 1 : sloMet / requests,
      shortfall: Math.max(0, needed - sloMet),
    };
  });
  const misses = new Map<string, Map<string, number>>();
  for (const target of targets) {
    if (target.shortfall === 0) continue;
    const byRegion = misses.get(target.class) ?? new Map<string, number>();
    misses.set(target.class, byRegion);
    for (const [region, o] of result.byClassRegion.get(target.class) ?? []) {
      if (target.region !== undefined && region !== target.region) continue;
      byRegion.set(region, o.requests - o.sloMet);
    }
  }
  const attainment: Record<string, Record<string, { requests: number; slo: number }>> = {};
  for (const [cls, regions] of [...result.byClassRegion].sort(([a], [b]) => (a < b ? -1 : 1))) {
    attainment[cls] = Object.fromEntries(
      [...regions]
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([region, o]) => [
          region,
          { requests: o.requests, slo: o.requests === 0 ? 1 : o.sloMet / o.requests },
        ]),
    );
  }
  const shortfall = targets.reduce((sum, t) => sum + t.shortfall, 0);
  return { targets, shortfall, meets: shortfall === 0, attainment, misses };
}

interface Candidate {
  readonly sites: readonly Site[];
  readonly phase: Evaluation['phase'];
  readonly label: string;
  /** The site a greedy step grows. */
  readonly site?: string;
}

/** Runs candidates (each once: a plan tried before answers from the cache), within the run budget. */
class Runner {
  private readonly cache = new Map<string, Evaluation>();
  readonly runs: Evaluation[] = [];

  constructor(
    private readonly input: PlanInput,
    private readonly maxRuns: number,
    private readonly options: PlanOptions,
  ) {}

  left(): number {
    return this.maxRuns - this.runs.length;
  }

  /** Evaluations of `candidates` in their order; those beyond the budget are left out. */
  async evaluate(candidates: readonly Candidate[]): Promise<Evaluation[]> {
    const fresh: Candidate[] = [];
    const keys = new Set<string>();
    for (const candidate of candidates) {
      const key = planKey(candidate.sites);
      if (this.cache.has(key) || keys.has(key)) continue;
      if (fresh.length >= this.left()) break;
      keys.add(key);
      fresh.push(candidate);
    }
    const { input } = this;
    const policy: PolicyName = input.doc.policy;
    const first = this.runs.length;
    const record = (i: number, result: { readonly byClassRegion: ClassRegionOutcomes }) => {
      const candidate = fresh[i] as Candidate;
      const sites = canonical(candidate.sites);
      const evaluation: Evaluation = {
        index: first + i,
        phase: candidate.phase,
        label: candidate.label,
        sites,
        gpus: sites.reduce((sum, s) => sum + s.gpus, 0),
        costPerHour: costOf(input, sites),
        ...judge(input, result),
      };
      this.cache.set(planKey(sites), evaluation);
      this.options.onRun?.(evaluation);
      return evaluation;
    };
    const evaluations: Evaluation[] = new Array(fresh.length);
    const outcomesOf = this.options.outcomesOf;
    if (outcomesOf !== undefined)
      fresh.forEach((candidate, i) => {
        evaluations[i] = record(i, { byClassRegion: outcomesOf(canonical(candidate.sites)) });
      });
    else if ((this.options.workers ?? true) && fresh.length > 1 && workersAvailable())
      await runInWorkers(
        input.scenario,
        fresh.map((c) => ({ policy, mobility: undefined, additions: siteNodes(input, c.sites) })),
        () => undefined,
        (i, result) => {
          evaluations[i] = record(i, result);
        },
      );
    else
      for (const [i, c] of fresh.entries())
        evaluations[i] = record(
          i,
          await runPolicy(input.scenario, withNodes(input.topology, siteNodes(input, c.sites)), policy),
        );
    // Numbered in the order they were asked for, whatever order they finished in.
    this.runs.push(...evaluations);
    return candidates.flatMap((c) => {
      const found = this.cache.get(planKey(c.sites));
      return found === undefined ? [] : [found];
    });
  }
}

const describe = (site: Omit<Site, 'gpus'>, gpus: number) =>
  `${gpus > 0 ? '+' : ''}${gpus} ${site.gpu} for ${site.model} at ${site.level} ${site.region}`;

/** Searches for the least-cost plan (see the head of this file). */
export async function plan(input: PlanInput, options: PlanOptions = {}): Promise<PlanOutcome> {
  const { doc } = input;
  const runner = new Runner(input, options.maxRuns ?? doc.search.max_runs, options);
  const step = doc.menu.step_gpus;
  const max = doc.menu.max_gpus_per_site;
  const classes = new Map(input.scenario.demand.classes.map((c) => [c.name, c]));
  const menuRegions = new Set(input.regions);
  const priced = (gpu: CatalogueGpu, level: Level) => gpu.pricePerHour[level] !== undefined;
  const levelsOf = (cls: string) => {
    const allowed = classes.get(cls)?.allowed_levels;
    return doc.menu.levels.filter(
      (l) => allowed === undefined || allowed.length === 0 || allowed.includes(l),
    );
  };
  let stopped: string | undefined;

  const [baseline] = await runner.evaluate([
    { sites: [], phase: 'baseline', label: 'the scenario as it is' },
  ]);
  if (baseline === undefined) throw new Error('max_runs must allow at least the baseline run');
  // A target no request falls under would count as met whatever the plan: say so instead.
  const empty = baseline.targets.filter((t) => t.requests === 0);
  if (empty.length > 0)
    throw new Error(
      `no request of the scenario falls under ${empty.map(targetLabel).join(', ')} after its warmup: check the class, its regions' demand weights and the duration`,
    );

  // 1. Greedy.
  let current = baseline;
  let focus = doc.search.focus_regions;
  /** Greedy steps each site has won: its next step doubles with each (pruning takes back any overshoot). */
  const wins = new Map<string, number>();
  while (!current.meets) {
    if (runner.left() === 0) {
      stopped = `the run budget (max_runs ${runner.runs.length}) ran out before the targets were met`;
      break;
    }
    const worst: { cls: string; region: string; misses: number }[] = [];
    for (const [cls, regions] of current.misses)
      for (const [region, misses] of regions)
        if (misses > 0 && menuRegions.has(region)) worst.push({ cls, region, misses });
    worst.sort(
      (a, b) =>
        b.misses - a.misses ||
        (a.region < b.region ? -1 : a.region > b.region ? 1 : 0) ||
        (a.cls < b.cls ? -1 : 1),
    );
    const focused: typeof worst = [];
    // Each (region, model) once: a region whose worst class gains nothing may still need another model.
    const modelOf = (cls: string) => (classes.get(cls) as { model: string }).model;
    for (const entry of worst) {
      if (focused.length >= focus) break;
      if (!focused.some((f) => f.region === entry.region && modelOf(f.cls) === modelOf(entry.cls)))
        focused.push(entry);
    }
    const distinctRegions = new Set(worst.map((w) => `${w.region}|${modelOf(w.cls)}`)).size;
    const candidates: Candidate[] = [];
    for (const { cls, region } of focused) {
      const model = (classes.get(cls) as { model: string }).model;
      for (const lvl of levelsOf(cls))
        for (const gpu of input.catalogue) {
          if (!priced(gpu, lvl)) continue;
          const at = { region, level: lvl, gpu: gpu.gpu, model };
          const have = current.sites.find((s) => siteKey(s) === siteKey(at))?.gpus ?? 0;
          const size = Math.min(max - have, step * 2 ** (wins.get(siteKey(at)) ?? 0));
          if (size <= 0) continue;
          candidates.push({
            sites: adjusted(current.sites, at, size),
            phase: 'greedy',
            label: describe(at, size),
            site: siteKey(at),
          });
        }
    }
    const tried = await runner.evaluate(candidates);
    let best: Evaluation | undefined;
    let bestValue = 0;
    for (const e of tried) {
      const gain = current.shortfall - e.shortfall;
      if (gain <= 0) continue;
      const value = gain / Math.max(1e-9, e.costPerHour - current.costPerHour);
      if (
        best === undefined ||
        value > bestValue + 1e-12 ||
        (Math.abs(value - bestValue) <= 1e-12 && e.costPerHour < best.costPerHour)
      ) {
        best = e;
        bestValue = value;
      }
    }
    if (best === undefined) {
      if (focus < distinctRegions) {
        focus = Math.min(distinctRegions, focus * 2);
        continue;
      }
      stopped =
        candidates.length === 0
          ? 'no site on the menu can take more GPUs where requests miss their budget (max_gpus_per_site, menu regions and levels, prices per level)'
          : 'no addition on the menu recovers any missed request';
      break;
    }
    const grown = candidates.find((c) => planKey(c.sites) === planKey(best.sites))?.site;
    if (grown !== undefined) wins.set(grown, (wins.get(grown) ?? 0) + 1);
    current = best;
    focus = doc.search.focus_regions;
  }
  const closest = current;

  // 2. Uniform, for comparison: k GPUs of one type for each targeted model in every menu region.
  const uniformLevel = doc.search.uniform_level ?? (doc.menu.levels[0] as Level);
  const models = [
    ...new Set(doc.targets.map((t) => (classes.get(t.class) as { model: string }).model)),
  ].sort();
  const uniform: UniformResult[] = [];
  /** Each GPU type's search: doubling k until the targets are met, then bisection below it. */
  interface UniformSearch {
    readonly gpu: string;
    /** The largest k known to fall short, and the smallest known to meet the targets. */
    low: number;
    high: Evaluation | undefined;
    highK: number;
    /** The next k to try; undefined when the search is over. */
    next: number | undefined;
    cut: boolean;
  }
  const searches: UniformSearch[] = [];
  // Nothing to compare with when the scenario meets its targets as it is.
  for (const gpu of baseline.meets ? [] : input.catalogue) {
    if (!priced(gpu, uniformLevel)) {
      uniform.push({ gpu: gpu.gpu, plan: undefined, note: `${gpu.gpu} has no price at ${uniformLevel}` });
      continue;
    }
    searches.push({ gpu: gpu.gpu, low: 0, high: undefined, highK: 0, next: step, cut: false });
  }
  const sitesFor = (gpu: string, k: number): Site[] =>
    canonical(
      input.regions.flatMap((region) =>
        models.map((model) => ({ region, level: uniformLevel, gpu, model, gpus: k })),
      ),
    );
  // All GPU types side by side, one k each per round, so that their runs share the cores.
  for (;;) {
    const active = searches.filter((u) => u.next !== undefined);
    if (active.length === 0) break;
    const tried = await runner.evaluate(
      active.map((u) => ({
        sites: sitesFor(u.gpu, u.next as number),
        phase: 'uniform' as const,
        label: `${u.next} ${u.gpu} per model in every region at ${uniformLevel}`,
      })),
    );
    for (const u of active) {
      const k = u.next as number;
      const e = tried.find((t) => planKey(t.sites) === planKey(sitesFor(u.gpu, k)));
      if (e === undefined) {
        u.cut = true;
        u.next = undefined;
        continue;
      }
      if (e.meets) {
        u.high = e;
        u.highK = k;
      } else u.low = k;
      if (u.high === undefined) u.next = k >= max ? undefined : Math.min(max, k * 2);
      else
        u.next =
          u.highK - u.low > step
            ? u.low + Math.max(step, Math.floor((u.highK - u.low) / (2 * step)) * step)
            : undefined;
    }
  }
  for (const u of searches)
    uniform.push({
      gpu: u.gpu,
      plan: u.high,
      ...(u.cut
        ? {
            note:
              u.high === undefined
                ? 'the run budget ran out before a uniform count met the targets'
                : 'the run budget ran out before the fewest was confirmed: fewer may do',
          }
        : u.high === undefined
          ? { note: `no count up to max_gpus_per_site (${max}) meets the targets` }
          : {}),
    });
  // In catalogue order, whichever had no price.
  uniform.sort(
    (a, b) =>
      input.catalogue.findIndex((c) => c.gpu === a.gpu) - input.catalogue.findIndex((c) => c.gpu === b.gpu),
  );

  // 3. Prune and swap, from the cheapest plan that meets the targets so far.
  const cheapestMeeting = () => {
    let best: Evaluation | undefined;
    for (const e of runner.runs)
      if (e.meets && (best === undefined || e.costPerHour < best.costPerHour - 1e-9)) best = e;
    return best;
  };
  let found = cheapestMeeting();
  while (found !== undefined && runner.left() > 0) {
    const from = found;
    const candidates: Candidate[] = [];
    for (const site of [...from.sites].sort(
      (a, b) => costOf(input, [b]) - costOf(input, [a]) || (siteKey(a) < siteKey(b) ? -1 : 1),
    )) {
      if (candidates.length >= doc.search.prune_width) break;
      // One step smaller, and half as large (a doubled greedy step can overshoot by that much).
      const half = Math.floor(site.gpus / 2 / step) * step;
      for (const smaller of half > step ? [half, Math.min(step, site.gpus)] : [Math.min(step, site.gpus)])
        candidates.push({
          sites: adjusted(from.sites, site, -smaller),
          phase: 'prune',
          label: describe(site, -smaller),
        });
      for (const other of input.catalogue) {
        if (other.gpu === site.gpu || !priced(other, site.level)) continue;
        const moved = { ...site, gpu: other.gpu };
        // The fewest steps of this GPU that one step of the other replaces at a lower cost, and all of them.
        const pSite = priceOf(input, site.gpu, site.level) as number;
        const pOther = other.pricePerHour[site.level] as number;
        const steps = Math.floor(pOther / pSite) + 1;
        const swaps = [
          { take: Math.min(site.gpus, steps * step), give: step },
          { take: site.gpus, give: site.gpus },
        ];
        const there = from.sites.find((s) => siteKey(s) === siteKey(moved))?.gpus ?? 0;
        for (const { take, give } of swaps) {
          if (there + give > max) continue;
          const sites = adjusted(adjusted(from.sites, site, -take), moved, give);
          if (costOf(input, sites) >= from.costPerHour - 1e-9) continue;
          candidates.push({
            sites,
            phase: 'prune',
            label: `${take} ${site.gpu} → ${give} ${other.gpu} for ${site.model} at ${site.level} ${site.region}`,
          });
        }
      }
    }
    await runner.evaluate(candidates);
    found = cheapestMeeting();
    if (found === from) break;
  }

  if (stopped === undefined && found === undefined && runner.left() === 0)
    stopped = `the run budget (max_runs ${runner.runs.length}) ran out`;
  return { input, baseline, plan: found, closest, uniform, runs: runner.runs, stopped };
}
