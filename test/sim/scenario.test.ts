// Scenario mistakes get a line-precise message; through the CLI they exit with code 2.
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/ops/yaml-config.js';
import { loadScenario, parseDuration } from '../../src/sim/scenario.js';
import { runCli } from '../helpers/cli.js';

const VALID = `name: t
seed: 1
duration: 1h
warmup: 1m
topology:
  file: simulations/topologies/demo-national.yaml
demand:
  rate_per_s: 5
  classes:
    - name: chat
      share: 1
      model: qwen3-32b
      latency_budget_ms: 1500
      input_tokens: { mean: 600, p95: 2000 }
      output_tokens: { mean: 300, p95: 900 }
events:
  - { kind: surge, region: CN-GD, factor: 2, at: 10m, for: 20m }
policies: [cheapest-feasible]
`;

async function writeScenario(text: string): Promise<string> {
  const file = join(await mkdtemp(join(tmpdir(), 'cpn-scenario-')), 'x.yaml');
  await writeFile(file, text);
  return file;
}

async function problemsOf(text: string): Promise<string> {
  const file = await writeScenario(text);
  try {
    await loadScenario(file);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems.join('\n').replaceAll(file, 'x.yaml');
    throw error;
  }
  return '';
}

describe('scenario validation', () => {
  it('accepts the valid base scenario', async () => {
    expect(await problemsOf(VALID)).toBe('');
  });

  const cases = [
    {
      name: 'negative budget',
      edit: (t: string) => t.replace('latency_budget_ms: 1500', 'latency_budget_ms: -3'),
      want: /^x\.yaml:13: demand\.classes\[0\]\.latency_budget_ms .*>0.*got -3$/m,
    },
    {
      name: 'bad duration',
      edit: (t: string) => t.replace('duration: 1h', 'duration: soon'),
      want: /^x\.yaml:3: duration must be a duration like 90s/m,
    },
    {
      name: 'unknown policy',
      edit: (t: string) => t.replace('[cheapest-feasible]', '[cheapest-feasible, fastest]'),
      want: /^x\.yaml:18: policies\[1\] .*got "fastest"/m,
    },
    {
      name: 'unknown event kind',
      edit: (t: string) => t.replace('kind: surge', 'kind: meteor'),
      want: /^x\.yaml:17: events\[0\]\.kind /m,
    },
    {
      name: 'p95 below mean',
      edit: (t: string) => t.replace('p95: 2000', 'p95: 100'),
      want: /^x\.yaml:14: demand\.classes\[0\]\.input_tokens p95 must be >= mean/m,
    },
    {
      name: 'misspelt key',
      edit: (t: string) => t.replace('rate_per_s: 5', 'rate_per_sec: 5'),
      want: /^x\.yaml:8: demand(\.rate_per_s is required| Unrecognized key)/m,
    },
    {
      name: 'warmup longer than duration',
      edit: (t: string) => t.replace('warmup: 1m', 'warmup: 2h'),
      want: /^x\.yaml:4: warmup must be shorter than duration/m,
    },
    {
      name: 'unknown node model',
      edit: (t: string) =>
        t.replace('policies: [cheapest-feasible]', 'policies: [cheapest-feasible]\nnode_model: gpu'),
      want: /^x\.yaml:19: node_model .*measured.*fixed.*got "gpu"/m,
    },
    { name: 'YAML syntax', edit: (t: string) => `${t}  - { kind: surge\n`, want: /^x\.yaml:2\d: /m },
  ];
  for (const c of cases) {
    it(`${c.name}: a line-precise message, and cpn simulate exits 2`, async () => {
      expect(await problemsOf(c.edit(VALID))).toMatch(c.want);
      const file = await writeScenario(c.edit(VALID));
      const result = await runCli(['simulate', file, '--out', join(tmpdir(), 'never')]);
      expect(result.code).toBe(2);
      expect(result.stderr.replaceAll(file, 'x.yaml')).toMatch(c.want);
    });
  }

  it('cpn simulate --node-model refuses an unknown model, naming the choices', async () => {
    const result = await runCli(['simulate', await writeScenario(VALID), '--node-model', 'gpu']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/--node-model: "gpu" is not one of measured, fixed/);
  });

  it('parses durations', () => {
    expect([
      parseDuration('90s'),
      parseDuration('30m'),
      parseDuration('1h30m'),
      parseDuration('500ms'),
      parseDuration('2x'),
    ]).toEqual([90_000, 1_800_000, 5_400_000, 500, undefined]);
  });
});
