// Runs a scenario for each of its policies and writes summary.json, timeseries.csv and report.html.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LEVELS, type Level } from '../core/model.js';
import type { Topology } from '../ops/topology.js';
import { buildTopology } from './build-topology.js';
import { ROUTE_BIN_KM } from './mobility.js';
import { type RunJob, runInWorkers, simulationLanes, workersAvailable } from './policy-worker.js';
import { renderReport } from './report.js';
import { MOBILITY_MODES, type PolicyName, type Scenario } from './scenario.js';
import { type PolicyResult, type Progress, runPolicy } from './simulate.js';
import { round } from './stats.js';

export { buildTopology };

export interface SimulationOutput {
  readonly summary: Record<string, unknown>;
  readonly results: readonly PolicyResult[];
  readonly topology: Topology;
  /** With mobile classes: cheapest-feasible with the vehicles served each way, on identical trips. */
  readonly mobility: readonly PolicyResult[];
}

export async function simulate(
  scenario: Scenario,
  onProgress?: (policy: PolicyName, index: number) => Progress,
  options: { readonly workers?: boolean } = {},
): Promise<SimulationOutput> {
  const topology = await buildTopology(scenario);
  const jobs: RunJob[] = [
    ...scenario.policies.map((policy) => ({ policy, mobility: undefined })),
    // With vehicles: cheapest-feasible with them served each way, on identical trips.
    ...(scenario.demand.mobile.length > 0
      ? MOBILITY_MODES.map((mode) => ({ policy: 'cheapest-feasible' as const, mobility: mode }))
      : []),
  ];
  const progressOf = (index: number) => onProgress?.((jobs[index] as RunJob).policy, index);
  // Side by side on the machine's cores when running from the built code; one after another
  // otherwise. The same results either way: every run is deterministic and independent.
  const all =
    (options.workers ?? true) && jobs.length > 1 && workersAvailable()
      ? await runInWorkers(scenario, jobs, progressOf, undefined, simulationLanes(jobs.length))
      : await sequentially(scenario, topology, jobs, progressOf);
  const results = all.slice(0, scenario.policies.length);
  const mobility = all.slice(scenario.policies.length);
  return { summary: summarize(scenario, topology, results, mobility), results, topology, mobility };
}

async function sequentially(
  scenario: Scenario,
  topology: Topology,
  jobs: readonly RunJob[],
  progressOf: (index: number) => Progress | undefined,
): Promise<PolicyResult[]> {
  const results: PolicyResult[] = [];
  for (const [index, job] of jobs.entries())
    results.push(await runPolicy(scenario, topology, job.policy, progressOf(index), job.mobility));
  return results;
}

function byKey(map: Map<string, { summary(): Record<string, unknown> }>): Record<string, unknown> {
  return Object.fromEntries([...map.keys()].sort().map((key) => [key, map.get(key)?.summary()]));
}

/** The summary: deterministic for a scenario and seed (no wall-clock times, sorted keys). */
export function summarize(
  scenario: Scenario,
  topology: Topology,
  results: readonly PolicyResult[],
  mobility: readonly PolicyResult[] = [],
): Record<string, unknown> {
  const nodesByLevel = Object.fromEntries(
    LEVELS.map((level) => [level, topology.nodes.filter((n) => n.level === level).length]),
  );
  return {
    scenario: scenario.name,
    description: scenario.description ?? '',
    seed: scenario.seed,
    duration_s: scenario.duration / 1000,
    warmup_s: scenario.warmup / 1000,
    node_model: scenario.node_model,
    nodes: nodesByLevel,
    policies: Object.fromEntries(
      results.map((r) => [
        r.policy,
        {
          ...r.total.summary(),
          simulated_requests: r.simulatedRequests,
          utilization_by_level: Object.fromEntries(
            LEVELS.map((level) => [level, round(r.utilizationByLevel[level], 6)]),
          ),
          by_region: byKey(r.byRegion),
          by_class: byKey(r.byClass),
        },
      ]),
    ),
    ...(mobility.length === 0
      ? {}
      : {
          // The vehicles of demand.mobile, under each way of serving them (the classes by cheapest-feasible).
          mobility: Object.fromEntries(
            mobility.map((r) => [
              r.mobility,
              {
                ...r.mobile?.summary(),
                handovers_by_km: binned(r.mobile?.handoversByKm),
                slo_misses_by_km: binned(r.mobile?.missesByKm),
              },
            ]),
          ),
        }),
  };
}

/** A route histogram as {"0-25": n, …} in route order. */
function binned(bins: ReadonlyMap<number, number> | undefined): Record<string, number> {
  return Object.fromEntries(
    [...(bins ?? new Map<number, number>()).entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([bin, count]) => [`${bin * ROUTE_BIN_KM}-${(bin + 1) * ROUTE_BIN_KM}`, count]),
  );
}

export function timeseriesCsv(
  scenario: Scenario,
  topology: Topology,
  results: readonly PolicyResult[],
): string {
  const slots: Record<Level, number> = { CENTER: 0, PROVINCE: 0, EDGE: 0, TERMINAL: 0 };
  for (const spec of topology.nodes)
    for (const offer of spec.models) slots[spec.level] += offer.maxConcurrency;
  const header = [
    'policy',
    'bucket_start_s',
    'arrivals',
    'placed',
    'rejected',
    'slo_attainment',
    'mean_ttft_ms',
    'cost_cny',
    ...LEVELS.map((level) => `utilization_${level.toLowerCase()}`),
  ];
  const rows = [header.join(',')];
  for (const r of results) {
    for (const b of r.buckets) {
      const length = Math.min(scenario.bucket, scenario.duration - b.startMs);
      rows.push(
        [
          r.policy,
          b.startMs / 1000,
          b.arrivals,
          b.placed,
          b.rejected,
          b.arrivals === 0 ? '' : round(b.sloMet / b.arrivals, 6),
          b.ttftCount === 0 ? '' : round(b.ttftSumMs / b.ttftCount, 3),
          round(b.costCny, 6),
          ...LEVELS.map((level) =>
            slots[level] === 0 ? 0 : round(b.busySlotMs[level] / (slots[level] * length), 6),
          ),
        ].join(','),
      );
    }
  }
  return `${rows.join('\n')}\n`;
}

export async function writeOutputs(
  dir: string,
  scenario: Scenario,
  output: SimulationOutput,
): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const files = {
    'summary.json': `${JSON.stringify(output.summary, null, 2)}\n`,
    'timeseries.csv': timeseriesCsv(scenario, output.topology, output.results),
    'report.html': renderReport(scenario, output),
  };
  for (const [name, content] of Object.entries(files)) await writeFile(join(dir, name), content);
  return Object.keys(files).map((name) => join(dir, name));
}
