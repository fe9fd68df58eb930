// When the agent's view of its engine is worth a status report: the first one, a material change
// (health, the models reported, a model's running + waiting by a tenth of its capacity and at
// least 1, KV-cache usage by 0.1), or a keep-alive every TTL/3 so that the lease never lapses.

export interface ReportedStatus {
  readonly healthy: boolean;
  readonly load: readonly { readonly model: string; readonly active: number; readonly queued: number }[];
  readonly kvCacheUtilization: number;
}

export function shouldReport(
  last: { readonly status: ReportedStatus; readonly atMs: number } | undefined,
  next: ReportedStatus,
  nowMs: number,
  options: { readonly keepAliveMs: number; readonly capacity: (model: string) => number },
): boolean {
  if (last === undefined) return true;
  if (nowMs - last.atMs >= options.keepAliveMs) return true;
  const a = last.status;
  if (a.healthy !== next.healthy || a.load.length !== next.load.length) return true;
  if (Math.abs(a.kvCacheUtilization - next.kvCacheUtilization) >= 0.1) return true;
  const before = new Map(a.load.map((entry) => [entry.model, entry]));
  return next.load.some((entry) => {
    const previous = before.get(entry.model);
    if (previous === undefined) return true;
    const delta = Math.abs(entry.active + entry.queued - previous.active - previous.queued);
    return delta >= Math.max(1, options.capacity(entry.model) / 10);
  });
}
