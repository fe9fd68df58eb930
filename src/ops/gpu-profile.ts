// A GPU × model-shape profile from measured tables (simulations/profiles/<gpu>/, copied with their
// method note from the calibration campaign): how long one prompt's prefill takes, and one decode
// step for a batch of B sequences of C tokens each. Interpolated linearly between measured points,
// extrapolated linearly from the nearest two beyond them.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { curvePrefillMs, interpolate } from '../core/cost.js';
import type { EngineCurves } from '../core/model.js';

/** The decode batch sizes the measured engine captured CUDA graphs for: a batch is padded up to one. */
export const DECODE_BUCKETS = [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64] as const;
/** Prompts up to this long ran as CUDA graphs padded to a multiple of 32; longer ones eagerly. */
export const GRAPH_PREFILL_MAX = 512;

export interface GpuProfile {
  readonly name: string;
  /** Wall-clock ms to prefill one prompt of `tokens` tokens (alone, as the measured engine did). */
  prefillMs(tokens: number): number;
  /** Wall-clock ms of one decode step for `batch` sequences whose contexts sum to `contextTokens`. */
  decodeStepMs(batch: number, contextTokens: number): number;
  /**
   * `steps` decode steps back to back from `startMs`, the batch's contexts growing by `batch` a
   * step, in closed form: the step times are linear in the step number between the points of the
   * measured grid, so each stretch is an arithmetic series. Undefined where that does not hold (the
   * caller then steps through decodeStepMs). Optional.
   */
  decodeRun?(batch: number, contextTokens: number, steps: number, startMs: number): DecodeTimes | undefined;
}

/** When each step of a run of decode steps ends. */
export interface DecodeTimes {
  /** The end of step `k` (from 0; below the run's steps). */
  endOf(k: number): number;
}

/** A run's step ends, worked out one step at a time. */
class SteppedRun implements DecodeTimes {
  constructor(private readonly ends: Float64Array) {}
  endOf(k: number): number {
    return this.ends[k] as number;
  }
}

/**
 * A run of decode steps whose step time is α + β · (C + k·B) / P on each stretch of steps
 * (`first[s]` up to the next stretch's first): prefix sums in closed form. Most runs stay on one
 * stretch of the grid; its numbers are kept as fields, further stretches in lists.
 */
class LinearRun implements DecodeTimes {
  /** Stretches after the first: their first step, the end of the step before it, α and β. */
  private more: number[] | undefined;

  constructor(
    private readonly contextTokens: number,
    private readonly batch: number,
    private readonly padded: number,
    private readonly startMs: number,
    private readonly alpha: number,
    private readonly beta: number,
  ) {}

  /** Adds a stretch from step `first`, after the step that ends at `beforeMs`. */
  add(first: number, beforeMs: number, alpha: number, beta: number): void {
    this.more ??= [];
    this.more.push(first, beforeMs, alpha, beta);
  }

  endOf(k: number): number {
    const more = this.more;
    if (more !== undefined)
      for (let at = more.length - 4; at >= 0; at -= 4)
        if ((more[at] as number) <= k)
          return (
            (more[at + 1] as number) +
            this.sum(more[at + 2] as number, more[at + 3] as number, more[at] as number, k)
          );
    return this.startMs + this.sum(this.alpha, this.beta, 0, k);
  }

  /** Σ over steps a..b (both included) of α + β · (C + k·B) / P. */
  sum(alpha: number, beta: number, a: number, b: number): number {
    const n = b - a + 1;
    return n * alpha + (beta * (n * this.contextTokens + (this.batch * (a + b) * n) / 2)) / this.padded;
  }
}

/** The end of every step of a decode run, through decodeStepMs one step at a time. */
export function steppedDecodeTimes(
  profile: GpuProfile,
  batch: number,
  contextTokens: number,
  steps: number,
  startMs: number,
): DecodeTimes {
  const ends = new Float64Array(steps);
  let t = startMs;
  for (let i = 0; i < steps; i += 1) {
    t += profile.decodeStepMs(batch, contextTokens + i * batch);
    ends[i] = t;
  }
  return new SteppedRun(ends);
}

type Row = Record<string, string>;

function parseCsv(text: string): Row[] {
  const [header, ...lines] = text.trim().split(/\r?\n/);
  const names = (header ?? '').split(',');
  return lines
    .filter((line) => line.trim() !== '')
    .map((line) => Object.fromEntries(line.split(',').map((value, i) => [names[i] ?? `c${i}`, value])));
}

export { interpolate };

/** The decode bucket a batch of `n` sequences is padded to (n itself beyond the largest). */
export function decodeBucket(n: number): number {
  for (const bucket of DECODE_BUCKETS) if (bucket >= n) return bucket;
  return n;
}

/** Builds a profile from measured rows (exported for tests with hand-made tables). */
export function profileFromTables(
  name: string,
  prefill: readonly { kind: 'graph' | 'eager'; tokens: number; ms: number }[],
  decode: readonly { batch: number; context: number; ms: number }[],
): GpuProfile {
  const sorted = <T extends { tokens: number }>(rows: readonly T[]) =>
    [...rows].sort((a, b) => a.tokens - b.tokens);
  const graph = sorted(prefill.filter((r) => r.kind === 'graph'));
  const eager = sorted(prefill.filter((r) => r.kind === 'eager' && r.tokens >= GRAPH_PREFILL_MAX));
  if (eager.length === 0)
    throw new Error(`${name}: no eager prefill rows of ${GRAPH_PREFILL_MAX} tokens or more`);
  // Per batch size, the step time against context.
  const byBatch = new Map<number, { context: number; ms: number }[]>();
  for (const row of decode) {
    const list = byBatch.get(row.batch) ?? [];
    list.push(row);
    byBatch.set(row.batch, list);
  }
  const batches = [...byBatch.keys()].sort((a, b) => a - b);
  if (batches.length === 0) throw new Error(`${name}: no decode rows`);
  for (const list of byBatch.values()) list.sort((a, b) => a.context - b.context);
  const atBatch = (batch: number, context: number) => {
    const list = byBatch.get(batch) as { context: number; ms: number }[];
    return interpolate(
      list.map((r) => r.context),
      list.map((r) => r.ms),
      context,
    );
  };
  return {
    name,
    prefillMs(tokens) {
      if (tokens <= GRAPH_PREFILL_MAX && graph.length > 0) {
        const padded = Math.ceil(tokens / 32) * 32;
        return interpolate(
          graph.map((r) => r.tokens),
          graph.map((r) => r.ms),
          padded,
        );
      }
      return interpolate(
        eager.map((r) => r.tokens),
        eager.map((r) => r.ms),
        tokens,
      );
    },
    decodeStepMs(batch, contextTokens) {
      const padded = decodeBucket(batch);
      // Padding rows attend one token: the KV read is the real rows' contexts, spread over the batch.
      const perRow = Math.max(1, contextTokens / padded);
      const values = batches.map((b) => atBatch(b, perRow));
      return Math.max(0.01, interpolate(batches, values, padded));
    },
  };
}

/** Loads `dir`'s prefill_<shape>.csv and decode_<shape>.csv (shape: 8b or 32b), and profile.json. */
export async function loadGpuProfile(dir: string, shape: string): Promise<GpuProfile> {
  return loadGpuProfileSync(dir, shape);
}

/** loadGpuProfile, synchronously (topology files are read that way; the files are small). */
export function loadGpuProfileSync(dir: string, shape: string): GpuProfile {
  const read = (file: string) => {
    try {
      return readFileSync(join(dir, file), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' && file === 'profile.json') return undefined;
      throw new Error(`cannot read ${join(dir, file)}: ${(error as Error).message}`);
    }
  };
  return profileFromFiles(dir, shape, {
    prefill: read(`prefill_${shape}.csv`) as string,
    decode: read(`decode_${shape}.csv`) as string,
    factors: read('profile.json'),
  });
}

function profileFromFiles(
  dir: string,
  shape: string,
  text: { prefill: string; decode: string; factors: string | undefined },
): GpuProfile {
  const ok = (row: Row) => row.status === 'ok';
  const prefill = parseCsv(text.prefill)
    .filter((row) => ok(row) && (row.kind === 'single' || row.kind === 'single_cudagraph'))
    .map((row) => ({
      kind: row.kind === 'single_cudagraph' ? ('graph' as const) : ('eager' as const),
      tokens: Number(row.prompt_len),
      ms: Number(row.wall_ms_median),
    }));
  const decode = parseCsv(text.decode)
    // The measured online engine's attention: rows of different lengths without padding.
    .filter((row) => ok(row) && row.attn === 'triton_splitkv')
    .map((row) => ({
      batch: Number(row.batch),
      context: Number(row.context),
      ms: Number(row.step_ms_wall_median),
    }));
  const tables = profileFromTables(`${dir} (${shape})`, prefill, decode);
  // The measured loop ran its prefills a little slower than the offline table: profile.json says
  // by how much (fitted on the saturation probe alone, with the reason written beside it).
  let factors = { prefill: 1, decode: 1 };
  if (text.factors !== undefined) {
    const json = JSON.parse(text.factors) as Record<string, unknown>;
    const factor = (key: string) => {
      const value = json[key] ?? 1;
      if (typeof value !== 'number' || !(value > 0.5 && value < 2))
        throw new Error(`${join(dir, 'profile.json')}: ${key} must be a number between 0.5 and 2`);
      return value;
    };
    factors = { prefill: factor('prefill_time_factor'), decode: factor('decode_time_factor') };
  }
  return scaled(tables, factors.prefill, factors.decode);
}

/** `profile` with its prefill times × `prefill` and its decode steps × `decode`. */
export function scaled(profile: GpuProfile, prefill: number, decode: number): GpuProfile {
  if (prefill === 1 && decode === 1) return profile;
  return {
    name: `${profile.name} (prefill ×${prefill}, decode ×${decode})`,
    prefillMs: (tokens) => profile.prefillMs(tokens) * prefill,
    decodeStepMs: (batch, context) => profile.decodeStepMs(batch, context) * decode,
  };
}

const CURVE_TOKENS = [32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16_384];
const CURVE_BATCHES = [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 128, 256];
const CURVE_CONTEXTS = [64, 128, 256, 512, 1024, 2048, 4096, 8192];

/**
 * A profile sampled on fixed grids, as data the pure core can carry on an offer (ModelOffer.engine).
 * profileFromCurves reads it back; between grid points both interpolate linearly.
 */
export function curvesOf(
  profile: GpuProfile,
  limits: { maxBatch: number; prefillBudget: number },
): EngineCurves {
  return {
    name: profile.name,
    prefill: { tokens: CURVE_TOKENS, ms: CURVE_TOKENS.map((t) => profile.prefillMs(t)) },
    decode: {
      batches: CURVE_BATCHES,
      contexts: CURVE_CONTEXTS,
      ms: CURVE_BATCHES.map((b) => CURVE_CONTEXTS.map((c) => profile.decodeStepMs(b, b * c))),
    },
    maxBatch: limits.maxBatch,
    prefillBudget: limits.prefillBudget,
  };
}

const engines = new Map<string, EngineCurves>();

/**
 * The curves of one engine of the profile in `dir` for `shape`, with its limits: read and sampled
 * once per process (topologies and plans name the same few engines many times).
 */
export function engineCurves(
  dir: string,
  shape: string,
  limits: { maxBatch: number; prefillBudget: number },
): EngineCurves {
  const key = `${dir}\u0000${shape}\u0000${limits.maxBatch}\u0000${limits.prefillBudget}`;
  let curves = engines.get(key);
  if (curves === undefined) {
    curves = curvesOf(loadGpuProfileSync(dir, shape), limits);
    engines.set(key, curves);
  }
  return curves;
}

/** The profile an offer's curves describe (decode batches padded to the graph buckets, as measured). */
export function profileFromCurves(curves: EngineCurves): GpuProfile {
  const { batches, contexts, ms } = curves.decode;
  return {
    name: curves.name,
    prefillMs: (tokens) => curvePrefillMs(curves.prefill, tokens),
    decodeStepMs(batch, contextTokens) {
      const padded = decodeBucket(batch);
      const perRow = Math.max(1, contextTokens / padded);
      // Linear in batch between the two measured rows around it (as interpolate picks them), each
      // read at the context: the same number as interpolating every row, for two rows' work
      // (the simulator asks once per engine iteration).
      if (batches.length < 2) return Math.max(0.01, interpolate(contexts, ms[0] ?? [], perRow));
      const i = rowAbove(batches, padded);
      const y0 = interpolate(contexts, ms[i - 1] as readonly number[], perRow);
      const y1 = interpolate(contexts, ms[i] as readonly number[], perRow);
      return Math.max(
        0.01,
        interpolateBetween(batches[i - 1] as number, batches[i] as number, y0, y1, padded),
      );
    },
    decodeRun(batch, contextTokens, steps, startMs) {
      if (batches.length < 2 || contexts.length < 2) return undefined;
      const padded = decodeBucket(batch);
      // Below one token a row, decodeStepMs floors the context: not linear.
      if (contextTokens < padded) return undefined;
      const i = rowAbove(batches, padded);
      const row0 = ms[i - 1] as readonly number[];
      const row1 = ms[i] as readonly number[];
      // The step time is (1 - w) · row0 + w · row1 at the context a row, each row linear in it
      // between grid points.
      const w = (padded - (batches[i - 1] as number)) / ((batches[i] as number) - (batches[i - 1] as number));
      const perRowAt = (k: number) => (contextTokens + k * batch) / padded;
      let run: LinearRun | undefined;
      let j = rowAbove(contexts, perRowAt(0));
      let t = startMs;
      for (let k = 0; k < steps; ) {
        // Steps on this stretch of the grid: while the context a row is at most contexts[j]
        // (interpolate's choice of segment), or to the end on the last one.
        let next = steps;
        if (j < contexts.length - 1) {
          const limit = Math.floor(((contexts[j] as number) * padded - contextTokens) / batch) + 1;
          next = Math.min(steps, Math.max(k + 1, limit));
        }
        const c0 = contexts[j - 1] as number;
        const c1 = contexts[j] as number;
        const slope0 = ((row0[j] as number) - (row0[j - 1] as number)) / (c1 - c0);
        const slope1 = ((row1[j] as number) - (row1[j - 1] as number)) / (c1 - c0);
        const a =
          (1 - w) * ((row0[j - 1] as number) - slope0 * c0) + w * ((row1[j - 1] as number) - slope1 * c0);
        const b = (1 - w) * slope0 + w * slope1;
        // decodeStepMs floors a step at 0.01 ms: linear only while both ends stay above it.
        if (a + b * perRowAt(k) < 0.01 || a + b * perRowAt(next - 1) < 0.01) return undefined;
        if (run === undefined) run = new LinearRun(contextTokens, batch, padded, startMs, a, b);
        else run.add(k, t, a, b);
        t += run.sum(a, b, k, next - 1);
        k = next;
        while (j < contexts.length - 1 && (contexts[j] as number) < perRowAt(k)) j += 1;
      }
      return run;
    },
  };
}

/** y at x on the line through (x0, y0) and (x1, y1): interpolate's arithmetic, for one segment. */
const interpolateBetween = (x0: number, x1: number, y0: number, y1: number, x: number): number =>
  y0 + ((y1 - y0) * (x - x0)) / (x1 - x0);

/** The index of the first of `xs` at or above `x` (from 1, at most the last): as interpolate picks. */
function rowAbove(xs: readonly number[], x: number): number {
  let i = 1;
  while (i < xs.length - 1 && (xs[i] as number) < x) i += 1;
  return i;
}
