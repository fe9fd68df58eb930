// One run of a scenario (a policy, or the vehicles under one mode) in a worker thread, so that
// `cpn simulate` runs them side by side on the machine's cores. The runs share nothing, each is
// deterministic, and the parent merges their results in the scenario's order: the output is the
// same as running them one after another.

import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { NodeSpec } from '../core/model.js';
import { buildTopology, withNodes } from './build-topology.js';
import { MobileOutcomes } from './mobility.js';
import type { MobilityMode, PolicyName, Scenario } from './scenario.js';
import { type PolicyResult, type Progress, runPolicy } from './simulate.js';
import { LogHistogram, Outcomes } from './stats.js';

export interface RunJob {
  readonly policy: PolicyName;
  readonly mobility: MobilityMode | undefined;
  /** Nodes added to the scenario's topology for this run (`cpn plan`'s candidates). */
  readonly additions?: readonly NodeSpec[];
}

type FromWorker =
  | { readonly kind: 'progress'; readonly simulatedMs: number; readonly requests: number }
  | { readonly kind: 'done'; readonly result: PolicyResult }
  | { readonly kind: 'failed'; readonly message: string };

/** Gives a result that crossed a thread boundary its classes back (structured clone drops them). */
function revive(result: PolicyResult): PolicyResult {
  const outcomes = (o: Outcomes) => {
    Object.setPrototypeOf(o, Outcomes.prototype);
    Object.setPrototypeOf(o.ttftMs, LogHistogram.prototype);
    return o;
  };
  outcomes(result.total);
  for (const o of result.byRegion.values()) outcomes(o);
  for (const o of result.byClass.values()) outcomes(o);
  for (const regions of result.byClassRegion.values()) for (const o of regions.values()) outcomes(o);
  if (result.mobile !== undefined) {
    Object.setPrototypeOf(result.mobile, MobileOutcomes.prototype);
    Object.setPrototypeOf(result.mobile.ttftMs, LogHistogram.prototype);
  }
  return result;
}

/**
 * A simulation allocates a few small objects per request and keeps thousands in flight: a young
 * generation larger than V8's default (semi-spaces of 32 MB instead of up to 16) scavenges less
 * often for the same survivors. national-day's full day, simple model: 89.3 → 85.0 s wall, peak
 * RSS 529 → 648 MB (BENCHMARKS.md).
 */
const WORKER_LIMITS = { maxYoungGenerationSizeMb: 96 };

/**
 * Whether runs can go to worker threads: only from the built JavaScript (the worker file is its
 * sibling); from TypeScript sources (tests) they run in this thread.
 */
export function workersAvailable(): boolean {
  return import.meta.url.endsWith('.js') && availableParallelism() > 1;
}

/**
 * How many runs `cpn simulate` keeps going at once: all of them when they are at most twice the
 * cores. Runs of a scenario differ in length (a policy's decisions cost more or less), and run
 * two at a time the last one finishes alone on one core; run together, the cores stay shared
 * to the end. national-day's full day, simple model, 2 cores: 68.3 s with 2 at once, 61.0 s
 * with all 4 (peak RSS 0.63 → 1.0 GB).
 */
export function simulationLanes(jobs: number): number {
  const cores = availableParallelism();
  return jobs <= 2 * cores ? jobs : cores;
}

/**
 * Runs `jobs` in worker threads, `lanes` at once (the machine's cores unless given), each in its
 * own thread; results in job order. The topology is built again in each worker from the scenario
 * (it is plain data).
 */
export async function runInWorkers(
  scenario: Scenario,
  jobs: readonly RunJob[],
  progressOf: (index: number) => Progress | undefined,
  /** Told as each job finishes (in the order they finish). */
  onDone?: (index: number, result: PolicyResult) => void,
  lanes = availableParallelism(),
): Promise<PolicyResult[]> {
  const results: PolicyResult[] = new Array(jobs.length);
  let next = 0;
  const file = fileURLToPath(import.meta.url);
  const lane = async () => {
    for (;;) {
      const index = next;
      next += 1;
      const job = jobs[index];
      if (job === undefined) return;
      const progress = progressOf(index);
      results[index] = await new Promise<PolicyResult>((resolve, reject) => {
        const worker = new Worker(file, { workerData: { scenario, job }, resourceLimits: WORKER_LIMITS });
        worker.on('message', (message: FromWorker) => {
          if (message.kind === 'progress') progress?.(message.simulatedMs, message.requests);
          else if (message.kind === 'done') resolve(revive(message.result));
          else reject(new Error(message.message));
        });
        worker.once('error', reject);
        worker.once('exit', (code) => {
          if (code !== 0) reject(new Error(`simulation worker for ${job.policy} exited with code ${code}`));
        });
      });
      onDone?.(index, results[index] as PolicyResult);
    }
  };
  const running = Math.max(1, Math.min(lanes, jobs.length));
  await Promise.all(Array.from({ length: running }, lane));
  return results;
}

if (!isMainThread && parentPort !== null && (workerData as { job?: RunJob } | undefined)?.job !== undefined) {
  const port = parentPort;
  const { scenario, job } = workerData as { scenario: Scenario; job: RunJob };
  void (async () => {
    try {
      const topology = withNodes(await buildTopology(scenario), job.additions ?? []);
      const result = await runPolicy(
        scenario,
        topology,
        job.policy,
        (simulatedMs, requests) =>
          port.postMessage({ kind: 'progress', simulatedMs, requests } satisfies FromWorker),
        job.mobility,
      );
      port.postMessage({ kind: 'done', result } satisfies FromWorker);
    } catch (error) {
      port.postMessage({
        kind: 'failed',
        message: String((error as Error)?.stack ?? error),
      } satisfies FromWorker);
    }
  })();
}
