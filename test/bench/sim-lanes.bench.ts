// The simulator's speed per policy, for #14's target and BENCHMARKS.md: national-day's four
// policies run one after another in this process (runPolicy, no worker threads), on a slice of the
// day, each `reps` times; the best time of each is printed with its cost per simulated request.
// Run: npm run bench:sim (builds first)
//
//   CPN_BENCH_START=19      the slice starts at this hour of the day, China time (default 19: the
//                           evening peak; 0 is the night), with the scenario's 10 min warm-up
//   CPN_BENCH_MINUTES=30    its length, warm-up included
//   CPN_BENCH_REPS=1        runs per policy (the best is kept)
//   CPN_BENCH_POLICIES=…    a comma-separated subset
//   CPN_BENCH_NODE_MODEL=…  measured (default: the scenario's engines) or fixed (#14's simple model)
//
// The whole day, with worker threads as users run it: `cpn simulate simulations/national-day.yaml`.

import { POLICY_NAMES, type PolicyName } from '../../src/core/routing/index.js';
import type { NodeModel } from '../../src/sim/scenario.js';
import { built } from './built.js';

// The built code, as `cpn simulate` runs it (npm run bench:sim builds first): run through the
// TypeScript loader, the same code is ~15-20 % slower.
const { buildTopology } = (await built(
  'sim/build-topology.js',
)) as typeof import('../../src/sim/build-topology.js');
const { loadScenario, NODE_MODELS } = (await built(
  'sim/scenario.js',
)) as typeof import('../../src/sim/scenario.js');
const { runPolicy } = (await built('sim/simulate.js')) as typeof import('../../src/sim/simulate.js');

const startHour = Number(process.env.CPN_BENCH_START ?? 19);
const minutes = Number(process.env.CPN_BENCH_MINUTES ?? 30);
const reps = Math.max(1, Number(process.env.CPN_BENCH_REPS ?? 1));
const policies = (process.env.CPN_BENCH_POLICIES?.split(',') ?? [...POLICY_NAMES]) as PolicyName[];
for (const policy of policies)
  if (!POLICY_NAMES.includes(policy))
    throw new Error(`unknown policy ${policy}: one of ${POLICY_NAMES.join(', ')}`);
if (!(startHour >= 0 && startHour < 24) || !(minutes > 10))
  throw new Error('CPN_BENCH_START must be an hour 0-23 and CPN_BENCH_MINUTES more than the 10 min warm-up');

const base = await loadScenario('simulations/national-day.yaml');
const nodeModel = (process.env.CPN_BENCH_NODE_MODEL ?? base.node_model) as NodeModel;
if (!NODE_MODELS.includes(nodeModel))
  throw new Error(`CPN_BENCH_NODE_MODEL must be one of ${NODE_MODELS.join(', ')}`);
const scenario = {
  ...base,
  node_model: nodeModel,
  duration: minutes * 60_000,
  demand: { ...base.demand, start_hour: startHour },
};
const topology = await buildTopology(scenario);
console.log(
  `national-day from ${startHour}:00 China time, ${minutes} min (warm-up included), ${topology.nodes.length} nodes, ${nodeModel} node model, best of ${reps}`,
);
let total = 0;
for (const policy of policies) {
  let best = Number.POSITIVE_INFINITY;
  let requests = 0;
  for (let i = 0; i < reps; i += 1) {
    const started = performance.now();
    const result = await runPolicy(scenario, topology, policy);
    best = Math.min(best, performance.now() - started);
    requests = result.simulatedRequests;
  }
  total += best;
  console.log(
    `  ${policy.padEnd(18)} ${(best / 1000).toFixed(2).padStart(6)} s  ${requests} requests  ${((best * 1000) / requests).toFixed(1).padStart(5)} µs a request`,
  );
}
console.log(`  ${'all four'.padEnd(18)} ${(total / 1000).toFixed(2).padStart(6)} s`);
