// The calibration check of #14, for BENCHMARKS.md: every measured online run (H100 and H200, the
// 8B shape) replayed through the batching model and through the simple fixed-rate model, beside
// what the GPU measured (online_8b_summary.csv). Run: npm run bench:replay.
//
// Targets: TTFT p50 and TPOT p50 within 15 %, TTFT p95 within 25 %, saturation throughput (the
// probe's completions per second in [6 s, 20 s]) within 10 %. The profiles' one time factor was
// fitted on the saturation probe alone (profile.json); the three rates per GPU are the check.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseTrace } from '../../src/cli/replay.js';
import { loadGpuProfile } from '../../src/ops/gpu-profile.js';
import { quantile, type ReplayResult, replaySimple, replayTrace } from '../../src/sim/batching.js';

const LIMITS = { maxBatch: 64, prefillBudget: 4096 };

function summaryRows(dir: string): Record<string, string>[] {
  const [header, ...lines] = readFileSync(join(dir, 'online_8b_summary.csv'), 'utf8').trim().split('\n');
  const names = (header ?? '').split(',');
  return lines.map((line) => Object.fromEntries(line.split(',').map((v, i) => [names[i], v])));
}

const pct = (model: number, measured: number) =>
  `${(((model - measured) / measured) * 100).toFixed(1).padStart(6)} %`;
const ms = (v: number) => v.toFixed(1).padStart(7);

for (const gpu of ['h100', 'h200']) {
  const dir = join('simulations/profiles', gpu);
  const profile = await loadGpuProfile(dir, '8b');
  console.log(`\n${gpu.toUpperCase()} (${profile.name})`);
  console.log(
    'run            model     TTFT p50 (err)          TTFT p95 (err)          TPOT p50 (err)        throughput req/s (err)',
  );
  for (const row of summaryRows(dir)) {
    const saturation = row.phase === 'probe_saturation';
    const file = join(dir, 'traces', saturation ? 'saturation.csv' : `rate-${row.rate_req_s}.csv`);
    const trace = parseTrace(readFileSync(file, 'utf8'), file);
    const measured = {
      ttft50: Number(row.ttft_p50_ms),
      ttft95: Number(row.ttft_p95_ms),
      tpot50: Number(row.tpot_p50_ms),
      throughput: Number(row.completed_req_s_window),
    };
    const window = saturation ? { from: 6000, to: 20_000 } : { from: 0, to: 60_000 };
    for (const [name, run] of [
      ['batching', replayTrace],
      ['simple', replaySimple],
    ] as const) {
      const result: ReplayResult = run(trace, profile, LIMITS);
      const ttft = result.timings.map((t) => t.ttftMs);
      const tpot = result.timings.flatMap((t) => (t.tpotMs === undefined ? [] : [t.tpotMs]));
      const done = result.timings.filter((t) => t.doneMs >= window.from && t.doneMs <= window.to).length;
      const throughput = (done / (window.to - window.from)) * 1000;
      const m = {
        ttft50: quantile(ttft, 0.5),
        ttft95: quantile(ttft, 0.95),
        tpot50: quantile(tpot, 0.5),
      };
      // The probe ran 20 s and left requests unfinished: only its throughput is compared.
      const cells = saturation
        ? ['      —                ', '      —                ', '      —              ']
        : [
            `${ms(m.ttft50)} vs ${ms(measured.ttft50)} ${pct(m.ttft50, measured.ttft50)}`,
            `${ms(m.ttft95)} vs ${ms(measured.ttft95)} ${pct(m.ttft95, measured.ttft95)}`,
            `${ms(m.tpot50)} vs ${ms(measured.tpot50)} ${pct(m.tpot50, measured.tpot50)}`,
          ];
      console.log(
        `${(saturation ? 'saturation' : `${row.rate_req_s} req/s`).padEnd(14)} ${name.padEnd(9)} ${cells.join(' ')} ${throughput.toFixed(2).padStart(6)} vs ${measured.throughput.toFixed(2)} ${pct(throughput, measured.throughput)}`,
      );
    }
  }
}
