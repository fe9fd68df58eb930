// Streaming aggregates: memory grows with the number of distinct buckets, never with the number of
// requests simulated.

/** Log-bucketed histogram (HDR-style): every value is kept within 1 % relative precision. */
export class LogHistogram {
  /** Counts of buckets DENSE_FROM .. DENSE_FROM + DENSE_SIZE - 1 (made on first use). */
  private dense: Float64Array | undefined;
  /** Counts of buckets outside the dense range (values beyond ~100 days, or tiny ones). */
  private readonly counts = new Map<number, number>();
  private zeros = 0;
  total = 0;
  private static readonly base = Math.log(1.01);

  /** The bucket `value` falls in; ZERO_BUCKET for values of at most 0.001. */
  static bucketOf(value: number): number {
    return value <= 0.001 ? ZERO_BUCKET : Math.floor(Math.log(value) / LogHistogram.base);
  }

  record(value: number): void {
    this.recordBucket(LogHistogram.bucketOf(value));
  }

  /** Records a value by its bucket (bucketOf): one logarithm for several histograms. */
  recordBucket(index: number): void {
    this.total += 1;
    if (index === ZERO_BUCKET) {
      this.zeros += 1;
      return;
    }
    const at = index - DENSE_FROM;
    if (at >= 0 && at < DENSE_SIZE) {
      this.dense ??= new Float64Array(DENSE_SIZE);
      this.dense[at] = (this.dense[at] as number) + 1;
    } else this.counts.set(index, (this.counts.get(index) ?? 0) + 1);
  }

  merge(other: LogHistogram): void {
    this.total += other.total;
    this.zeros += other.zeros;
    for (const [index, count] of other.counts) this.counts.set(index, (this.counts.get(index) ?? 0) + count);
    if (other.dense !== undefined) {
      this.dense ??= new Float64Array(DENSE_SIZE);
      for (let at = 0; at < DENSE_SIZE; at += 1)
        this.dense[at] = (this.dense[at] as number) + (other.dense[at] as number);
    }
  }

  /** The value below which a share `q` (0..1) of the records fall, to within 1 %; NaN when empty. */
  quantile(q: number): number {
    if (this.total === 0) return Number.NaN;
    const rank = Math.max(1, Math.ceil(q * this.total));
    if (rank <= this.zeros) return 0;
    let seen = this.zeros;
    const buckets = new Map(this.counts);
    if (this.dense !== undefined)
      for (let at = 0; at < DENSE_SIZE; at += 1) {
        const count = this.dense[at] as number;
        if (count > 0) buckets.set(at + DENSE_FROM, count);
      }
    for (const index of [...buckets.keys()].sort((a, b) => a - b)) {
      seen += buckets.get(index) ?? 0;
      // The bucket's midpoint in log space.
      if (seen >= rank) return Math.exp((index + 0.5) * LogHistogram.base);
    }
    return Number.NaN;
  }
}

/** bucketOf's answer for values of at most 0.001 (counted apart, as 0). */
const ZERO_BUCKET = Number.NEGATIVE_INFINITY;
/** Buckets kept in an array: from 0.001 ms (bucket -695) to about 100 days (bucket 2,300). */
const DENSE_FROM = -700;
const DENSE_SIZE = 3072;

export const REJECTION_REASONS = [
  'NO_LIVE_NODE',
  'NO_NODE_WITHIN_CONSTRAINTS',
  'ALL_FULL',
  'NODE_QUEUE_FULL',
] as const;
export type RejectionReason = (typeof REJECTION_REASONS)[number];

/** Outcomes of a set of requests (a policy, a region, a class). */
export class Outcomes {
  requests = 0;
  placed = 0;
  degraded = 0;
  sloMet = 0;
  readonly rejected: Record<RejectionReason, number> = {
    NO_LIVE_NODE: 0,
    NO_NODE_WITHIN_CONSTRAINTS: 0,
    ALL_FULL: 0,
    NODE_QUEUE_FULL: 0,
  };
  readonly ttftMs = new LogHistogram();
  costCny = 0;
  inputTokens = 0;
  cachedInputTokens = 0;
  outputTokens = 0;

  summary(): Record<string, unknown> {
    const tokens = this.inputTokens + this.outputTokens;
    return {
      requests: this.requests,
      placed: this.placed,
      degraded: this.degraded,
      rejected: { ...this.rejected },
      slo_attainment: round(this.requests === 0 ? 0 : this.sloMet / this.requests, 6),
      ttft_ms: {
        p50: round(this.ttftMs.quantile(0.5), 3),
        p95: round(this.ttftMs.quantile(0.95), 3),
        p99: round(this.ttftMs.quantile(0.99), 3),
      },
      cost_cny: round(this.costCny, 6),
      cost_per_mtok_cny: round(tokens === 0 ? 0 : (this.costCny / tokens) * 1e6, 6),
      tokens: { input: this.inputTokens, cached_input: this.cachedInputTokens, output: this.outputTokens },
    };
  }
}

/** Rounds for stable, readable JSON; NaN (no data) becomes null. */
export function round(value: number, digits: number): number | null {
  if (!Number.isFinite(value)) return null;
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}
