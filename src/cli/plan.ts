// `cpn plan`: which GPUs to add, where, so that a scenario meets its SLO targets at least cost.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Table from 'cli-table3';
import { Command } from 'commander';
import { costOf, type Evaluation, loadPlan, type PlanOutcome, plan, targetLabel } from '../sim/plan.js';
import { pct, renderPlanReport } from '../sim/plan-report.js';
import { integer } from './args.js';

export interface PlanFlags {
  out?: string;
  maxRuns?: number;
  json?: boolean;
}

/** The machine-readable outcome: deterministic for a plan file and seed (no wall-clock times). */
export function planSummary(outcome: PlanOutcome): Record<string, unknown> {
  const run = (e: Evaluation | undefined) =>
    e === undefined
      ? null
      : {
          run: e.index,
          sites: e.sites,
          gpus: e.gpus,
          cost_cny_per_hour: e.costPerHour,
          cost_cny_per_30_days: Math.round(e.costPerHour * 720 * 100) / 100,
          meets_targets: e.meets,
          targets: e.targets.map((t) => ({
            class: t.class,
            region: t.region ?? null,
            slo_target: t.slo,
            attainment: Math.round(t.attainment * 1e6) / 1e6,
            requests: t.requests,
            short_by_requests: t.shortfall,
          })),
        };
  return {
    plan_file: outcome.input.file,
    scenario: outcome.input.scenario.name,
    seed: outcome.input.scenario.seed,
    policy: outcome.input.doc.policy,
    baseline: run(outcome.baseline),
    plan: run(outcome.plan),
    closest: outcome.plan === undefined ? run(outcome.closest) : null,
    uniform: outcome.uniform.map((u) => ({ gpu: u.gpu, plan: run(u.plan), note: u.note ?? null })),
    attainment_by_class_and_region: (outcome.plan ?? outcome.closest).attainment,
    runs: outcome.runs.map((e) => ({
      run: e.index,
      phase: e.phase,
      tried: e.label,
      gpus: e.gpus,
      cost_cny_per_hour: e.costPerHour,
      short_by_requests: e.shortfall,
      meets_targets: e.meets,
    })),
    stopped: outcome.stopped ?? null,
  };
}

export async function runPlan(file: string, flags: PlanFlags): Promise<void> {
  const input = await loadPlan(file);
  const started = Date.now();
  const outcome = await plan(input, {
    maxRuns: flags.maxRuns,
    onRun: (e) =>
      process.stderr.write(
        `run ${e.index + 1} (${e.phase}): ${e.label} — ${e.gpus} GPUs, ${e.costPerHour} CNY/h, ${e.meets ? 'meets every target' : `${e.shortfall} requests short`} [${((Date.now() - started) / 1000).toFixed(0)} s]\n`,
      ),
  });
  const summary = planSummary(outcome);
  const outDir = flags.out ?? join('plan-out', input.scenario.name);
  await mkdir(outDir, { recursive: true });
  const files = [join(outDir, 'plan.json'), join(outDir, 'plan.html')];
  await writeFile(files[0] as string, `${JSON.stringify(summary, null, 2)}\n`);
  await writeFile(files[1] as string, renderPlanReport(outcome));
  if (flags.json === true) {
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
    return;
  }
  const chosen = outcome.plan ?? outcome.closest;
  const sites = new Table({
    head: ['region', 'level', 'GPU', 'model', 'GPUs', 'CNY / hour'],
    style: { head: [], border: [] },
  });
  for (const site of chosen.sites)
    sites.push([
      site.region,
      site.level,
      site.gpu,
      site.model,
      String(site.gpus),
      String(costOf(input, [site])),
    ]);
  const targets = new Table({
    head: [
      'target',
      'SLO wanted',
      'before',
      'with the plan',
      ...outcome.uniform.map((u) => `uniform ${u.gpu}`),
    ],
    style: { head: [], border: [] },
  });
  chosen.targets.forEach((t, i) => {
    targets.push([
      targetLabel(t),
      pct(t.slo),
      pct(outcome.baseline.targets[i]?.attainment ?? 0),
      pct(t.attainment),
      ...outcome.uniform.map((u) => (u.plan === undefined ? '-' : pct(u.plan.targets[i]?.attainment ?? 0))),
    ]);
  });
  const lines = [
    `${input.scenario.name}: ${outcome.runs.length} simulator runs (${input.doc.policy}), ${((Date.now() - started) / 1000).toFixed(1)} s`,
    outcome.plan === undefined
      ? `no plan on the menu meets every target${outcome.stopped === undefined ? '' : `: ${outcome.stopped}`}; the closest tried:`
      : chosen.sites.length === 0
        ? 'the scenario meets every target as it is: nothing to add'
        : `least-cost plan found: ${chosen.gpus} GPUs, ${chosen.costPerHour} CNY per hour (${Math.round(chosen.costPerHour * 720)} CNY per 30 days)`,
    ...(chosen.sites.length === 0 ? [] : [sites.toString()]),
    targets.toString(),
    ...outcome.uniform.map((u) =>
      u.plan === undefined
        ? `uniform ${u.gpu}: none (${u.note ?? 'no uniform count meets every target'})`
        : `uniform ${u.gpu}: ${u.plan.gpus} GPUs, ${u.plan.costPerHour} CNY per hour${outcome.plan === undefined ? '' : ` (${(u.plan.costPerHour / Math.max(1e-9, outcome.plan.costPerHour)).toFixed(2)}× the plan)`}${u.note === undefined ? '' : ` — ${u.note}`}`,
    ),
    `wrote ${files.join(', ')}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

export function planCommand(): Command {
  return new Command('plan')
    .description(
      'find the least-cost GPU additions (per region and level, from a catalogue and a menu) that make a scenario meet its SLO targets, by simulator runs; write plan.json and plan.html',
    )
    .argument('<plan>', 'plan file (YAML), e.g. simulations/plans/province-surge.yaml')
    .option('--out <dir>', 'output directory (default: plan-out/<scenario name>/)')
    .option(
      '--max-runs <n>',
      "simulator runs at most (overrides the plan's search.max_runs)",
      integer(1, 10_000),
    )
    .option('--json', 'print plan.json instead of tables')
    .addHelpText(
      'after',
      `
The plan file names a scenario, SLO targets per class (optionally per region: the share of the
class's requests whose time to first token is within its budget), a GPU catalogue (measured
profiles under simulations/profiles/, prices in CNY per GPU-hour per level) and a menu (regions,
levels, GPUs per step, GPUs per site at most). Each candidate is a full simulator run of the
scenario under the plan's policy; the search is greedy by missed requests recovered per CNY, then
prunes and swaps to cheaper GPUs, and is compared with adding the same GPUs in every region.
Same plan file and seed give the same plan.json. Progress goes to stderr, one line per run.
Exit code 2: the plan file is invalid (file:line says where).`,
    )
    .action(async (file: string, opts) => runPlan(file, opts));
}
