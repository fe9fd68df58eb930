// How long to wait before trying again after failures in a row: exponentially growing, with
// jitter (between half and all of the step), so that many clients failing together (agents after
// a control-plane restart, replicas waiting for etcd) do not try again in step.

export interface BackoffOptions {
  /** The delay after the first failure (default 250 ms); it doubles per failure in a row. */
  readonly baseMs?: number;
  /** The longest delay (default 5 s). */
  readonly maxMs?: number;
  readonly random?: () => number;
  readonly clock?: () => number;
}

/** The delay before attempt `failures + 1`: base·2^(failures−1), at most max, times [0.5, 1). */
export function backoffDelay(failures: number, options: BackoffOptions): number {
  if (failures <= 0) return 0;
  const ceiling = Math.min(options.maxMs ?? 5000, (options.baseMs ?? 250) * 2 ** Math.min(failures - 1, 30));
  return ceiling * (0.5 + (options.random ?? Math.random)() / 2);
}
