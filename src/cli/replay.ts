// `cpn replay`: the calibration check — an arrival trace through one simulated continuous-batching
// node with a measured GPU profile, and the distribution of what its requests saw.

import { readFile } from 'node:fs/promises';
import Table from 'cli-table3';
import { Command, Option } from 'commander';
import { loadGpuProfile } from '../ops/gpu-profile.js';
import { quantile, replaySimple, replayTrace, type TraceRequest } from '../sim/batching.js';
import { integer } from './args.js';
import { CliError } from './rpc.js';

/** A trace: CSV with a header holding arrival_s, input_tokens and output_tokens (other columns ignored). */
export function parseTrace(text: string, file: string): TraceRequest[] {
  const lines = text.trim().split(/\r?\n/);
  const header = (lines[0] ?? '').split(',').map((h) => h.trim());
  const column = (name: string) => {
    const index = header.indexOf(name);
    if (index < 0)
      throw new CliError(`${file}:1: the header needs a column ${name} (it has ${header.join(', ')})`, 2);
    return index;
  };
  const [at, input, output] = [column('arrival_s'), column('input_tokens'), column('output_tokens')];
  if (lines.length - 1 > 1_000_000) throw new CliError(`${file}: more than 1,000,000 requests`, 2);
  return lines.slice(1).map((line, i) => {
    const cells = line.split(',');
    const value = (index: number, name: string, integerOnly: boolean) => {
      const v = Number(cells[index]);
      if (!Number.isFinite(v) || v < 0 || (integerOnly && (!Number.isInteger(v) || v < 1)))
        throw new CliError(
          `${file}:${i + 2}: ${name} must be ${integerOnly ? 'a whole number >= 1' : 'a number >= 0'}, got "${cells[index] ?? ''}"`,
          2,
        );
      return v;
    };
    return {
      arrivalMs: value(at, 'arrival_s', false) * 1000,
      inputTokens: value(input, 'input_tokens', true),
      outputTokens: value(output, 'output_tokens', true),
    };
  });
}

export function replayCommand(): Command {
  return new Command('replay')
    .description(
      'replay an arrival trace through one simulated continuous-batching node with a measured GPU profile; print queue wait, TTFT and TPOT percentiles, throughput and mean batch',
    )
    .requiredOption('--profile <dir>', 'a profile directory, e.g. simulations/profiles/h100')
    .requiredOption('--trace <file.csv>', 'CSV with columns arrival_s,input_tokens,output_tokens')
    .addOption(
      new Option('--shape <shape>', 'the model shape of the profile').choices(['8b', '32b']).default('8b'),
    )
    .addOption(
      new Option('--max-batch <n>', 'requests running at once').default(64).argParser(integer(1, 4096)),
    )
    .addOption(
      new Option('--prefill-budget <tokens>', 'prompt tokens admitted per iteration')
        .default(4096)
        .argParser(integer(1, 10_000_000)),
    )
    .addOption(
      new Option(
        '--model <model>',
        'batching (iteration by iteration) or simple (fixed rates, for comparison)',
      )
        .choices(['batching', 'simple'])
        .default('batching'),
    )
    .option('--window <from:to>', 'also count completions per second between these seconds, e.g. 6:20')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      '\nThe node admits FIFO while a slot is free and the iteration prompt budget holds, prefills admitted prompts one by one (decoding waits), then runs one decode step for every running request. Deterministic.',
    )
    .action(async (opts) => {
      let text: string;
      try {
        text = await readFile(opts.trace, 'utf8');
      } catch (error) {
        throw new CliError(`cannot read --trace ${opts.trace}: ${(error as Error).message}`, 2);
      }
      const trace = parseTrace(text, opts.trace);
      if (trace.length === 0) throw new CliError(`${opts.trace}: no requests`, 2);
      const profile = await loadGpuProfile(opts.profile, opts.shape).catch((error: Error) => {
        throw new CliError(error.message, 2);
      });
      const limits = { maxBatch: opts.maxBatch, prefillBudget: opts.prefillBudget };
      const result =
        opts.model === 'simple' ? replaySimple(trace, profile, limits) : replayTrace(trace, profile, limits);
      const pick = (values: number[]) => ({
        p50: round(quantile(values, 0.5)),
        p95: round(quantile(values, 0.95)),
        p99: round(quantile(values, 0.99)),
      });
      const first = Math.min(...trace.map((r) => r.arrivalMs));
      let window: { from: number; to: number } | undefined;
      if (opts.window !== undefined) {
        const [from, to] = String(opts.window).split(':').map(Number);
        if (!Number.isFinite(from) || !Number.isFinite(to) || (to as number) <= (from as number))
          throw new CliError(`--window must look like 6:20 (seconds, from < to), got "${opts.window}"`, 2);
        window = { from: (from as number) * 1000, to: (to as number) * 1000 };
      }
      const summary = {
        requests: trace.length,
        queue_ms: pick(result.timings.map((t) => t.queueMs)),
        ttft_ms: pick(result.timings.map((t) => t.ttftMs)),
        tpot_ms: pick(result.timings.flatMap((t) => (t.tpotMs === undefined ? [] : [t.tpotMs]))),
        completed_req_s: round((result.timings.length / (result.endMs - first)) * 1000),
        ...(window === undefined
          ? {}
          : {
              window_completed_req_s: round(
                (result.timings.filter(
                  (t) =>
                    t.doneMs >= (window as { from: number }).from &&
                    t.doneMs <= (window as { to: number }).to,
                ).length /
                  (window.to - window.from)) *
                  1000,
              ),
            }),
        mean_batch: round(result.meanBatch),
        iterations: result.iterations,
      };
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
        return;
      }
      const table = new Table({ head: ['', 'p50', 'p95', 'p99'], style: { head: [], border: [] } });
      for (const [name, q] of [
        ['queue wait ms', summary.queue_ms],
        ['TTFT ms', summary.ttft_ms],
        ['TPOT ms', summary.tpot_ms],
      ] as const)
        table.push([name, String(q.p50), String(q.p95), String(q.p99)]);
      process.stdout.write(
        `${trace.length} requests through ${profile.name}: ${summary.completed_req_s} completed req/s${
          'window_completed_req_s' in summary ? ` (${summary.window_completed_req_s} in the window)` : ''
        }, mean batch ${summary.mean_batch}\n${table.toString()}\n`,
      );
    });
}

function round(value: number): number | null {
  return Number.isFinite(value) ? Math.round(value * 1000) / 1000 : null;
}
