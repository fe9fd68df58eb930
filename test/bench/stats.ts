// Order statistics the decision benches print (route.bench.ts, compare-builds.ts).

/** The value at share `p` (0..1) of `sorted` (ascending); NaN when it is empty. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? Number.NaN;
}

/** percentile of `values` in any order (sorted in a copy). */
export function percentileOf(values: ArrayLike<number>, p: number): number {
  return percentile(Float64Array.from(values).sort(), p);
}

/** The median of `values` in any order: the upper of the two middle ones for an even count. */
export function median(values: ArrayLike<number>): number {
  return percentileOf(values, 0.5);
}
