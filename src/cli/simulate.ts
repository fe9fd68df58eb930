// `cpn simulate`: runs a scenario's policies, shows progress, writes the outputs, prints a summary.

import { join } from 'node:path';
import { SingleBar } from 'cli-progress';
import Table from 'cli-table3';
import { Command } from 'commander';
import { simulate, writeOutputs } from '../sim/run.js';
import {
  loadScenario,
  MOBILITY_MODES,
  NODE_MODELS,
  type NodeModel,
  POLICIES,
  type PolicyName,
  parseDuration,
  type Scenario,
} from '../sim/scenario.js';
import { collect, integer } from './args.js';
import { CliError } from './rpc.js';

export interface SimulateFlags {
  out?: string;
  seed?: number;
  policy?: string[];
  duration?: string;
  nodeModel?: string;
}

function formatSimTime(ms: number): string {
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  return `${h}h${String(m).padStart(2, '0')}m`;
}

export async function runSimulate(file: string, flags: SimulateFlags): Promise<void> {
  let scenario: Scenario = await loadScenario(file);
  if (flags.seed !== undefined) scenario = { ...scenario, seed: flags.seed };
  if (flags.policy !== undefined) {
    for (const policy of flags.policy) {
      if (!(POLICIES as readonly string[]).includes(policy)) {
        throw new CliError(`--policy: "${policy}" is not one of ${POLICIES.join(', ')}`, 2);
      }
    }
    scenario = { ...scenario, policies: flags.policy as PolicyName[] };
  }
  if (flags.duration !== undefined) {
    const duration = parseDuration(flags.duration);
    if (duration === undefined || duration <= 0)
      throw new CliError(`--duration: "${flags.duration}" is not a duration like 90s, 30m, 2h`, 2);
    if (duration <= scenario.warmup)
      throw new CliError(`--duration ${flags.duration} must be longer than the warmup`, 2);
    scenario = { ...scenario, duration };
  }
  if (flags.nodeModel !== undefined) {
    if (!(NODE_MODELS as readonly string[]).includes(flags.nodeModel))
      throw new CliError(`--node-model: "${flags.nodeModel}" is not one of ${NODE_MODELS.join(', ')}`, 2);
    scenario = { ...scenario, node_model: flags.nodeModel as NodeModel };
  }
  const outDir = flags.out ?? join('sim-out', scenario.name);
  const tty = process.stderr.isTTY === true;
  const startedAt = Date.now();
  const bar = tty
    ? new SingleBar({
        format: '{policy} [{bar}] {percentage}% | sim {simTime} | {rate} req/s | ETA {eta_formatted}',
        hideCursor: true,
        stream: process.stderr,
      })
    : undefined;
  const runs = scenario.policies.length + (scenario.demand.mobile.length > 0 ? MOBILITY_MODES.length : 0);
  const output = await simulate(scenario, (policy, index) => {
    const mode = MOBILITY_MODES[index - scenario.policies.length];
    const label = `${mode === undefined ? policy : `vehicles: ${mode}`} (${index + 1}/${runs})`;
    const policyStart = Date.now();
    let nextTenth = 1;
    bar?.start(scenario.duration, 0, { policy: label, simTime: '0h00m', rate: 0 });
    return (simulatedMs, requests) => {
      const seconds = (Date.now() - policyStart) / 1000;
      const rate = seconds > 0 ? Math.round(requests / seconds) : 0;
      if (bar) {
        bar.update(simulatedMs, { policy: label, simTime: formatSimTime(simulatedMs), rate });
        if (simulatedMs >= scenario.duration) bar.stop();
        return;
      }
      while (simulatedMs >= (nextTenth * scenario.duration) / 10 && nextTenth <= 10) {
        process.stderr.write(
          `${label}: ${nextTenth * 10}% (simulated ${formatSimTime(simulatedMs)}, ${requests} requests, ${rate} req/s)\n`,
        );
        nextTenth += 1;
      }
    };
  });
  const files = await writeOutputs(outDir, scenario, output);

  const table = new Table({
    head: ['policy', 'requests', 'rejected', 'SLO met', 'TTFT p50 ms', 'p95 ms', 'p99 ms', 'CNY / Mtok'],
    style: { head: [], border: [] },
  });
  const policies = output.summary.policies as Record<string, Record<string, unknown>>;
  for (const [policy, s] of Object.entries(policies)) {
    const rejected = Object.values(s.rejected as Record<string, number>).reduce((a, b) => a + b, 0);
    const ttft = s.ttft_ms as Record<string, number | null>;
    table.push([
      policy,
      String(s.requests),
      String(rejected),
      `${(((s.slo_attainment as number) ?? 0) * 100).toFixed(2)} %`,
      String(ttft.p50 ?? '-'),
      String(ttft.p95 ?? '-'),
      String(ttft.p99 ?? '-'),
      String(s.cost_per_mtok_cny),
    ]);
  }
  const mobility = output.summary.mobility as Record<string, Record<string, unknown>> | undefined;
  let vehicles = '';
  if (mobility !== undefined) {
    const modes = new Table({
      head: [
        'vehicles served',
        'requests',
        'SLO met',
        'TTFT p95 ms',
        'handovers / vehicle-hour',
        're-prefilled tokens',
        'CNY',
      ],
      style: { head: [], border: [] },
    });
    for (const [mode, m] of Object.entries(mobility))
      modes.push([
        mode,
        String(m.requests),
        `${(((m.slo_attainment as number) ?? 0) * 100).toFixed(2)} %`,
        String((m.ttft_ms as Record<string, number | null>).p95 ?? '-'),
        String(m.handovers_per_vehicle_hour),
        String(m.reprefilled_tokens),
        String(m.cost_cny),
      ]);
    vehicles = `${modes.toString()}\n`;
  }
  process.stdout.write(
    `${scenario.name}: ${formatSimTime(scenario.duration)} simulated, seed ${scenario.seed}, ${((Date.now() - startedAt) / 1000).toFixed(1)} s\n${table.toString()}\n${vehicles}wrote ${files.join(', ')}\n`,
  );
}

export function simulateCommand(): Command {
  return new Command('simulate')
    .description(
      'run a scenario (YAML) through the real scheduling core for each policy; write summary.json, timeseries.csv, report.html',
    )
    .argument('<scenario>', 'scenario file, e.g. simulations/national-day.yaml')
    .option('--out <dir>', 'output directory (default: sim-out/<scenario name>/)')
    .option('--seed <n>', 'override the scenario seed', integer(0, 2 ** 31))
    .option('--policy <name>', `run only this policy (repeatable): ${POLICIES.join(', ')}`, collect)
    .option('--duration <d>', 'override the simulated duration, e.g. 2h')
    .option(
      '--node-model <model>',
      'override how nodes serve: measured (engines iteration by iteration where an offer names one) or fixed (every offer a FIFO station at fixed rates: faster, for quick studies)',
    )
    .addHelpText(
      'after',
      '\nSame scenario and seed give a byte-identical summary.json. Exit code 2: the scenario is invalid (file:line says where).',
    )
    .action(async (file: string, opts) => runSimulate(file, opts));
}
