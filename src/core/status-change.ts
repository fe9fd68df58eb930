// When a node's status changed in a way an operator or router would act on: health, the models
// reported, a model's requests (running + waiting) by a tenth of its capacity and at least 1, or
// GPU or KV-cache utilisation by 0.1 (or the KV-cache gauge appearing or vanishing). One rule for the agent that decides what to report and for
// the etcd store that decides what to write.

export interface StatusSnapshot {
  readonly healthy: boolean;
  readonly load: readonly { readonly model: string; readonly active: number; readonly queued: number }[];
  readonly kvCacheUtilization: number | undefined;
  readonly gpuUtilization?: number;
}

/** Requests each offer can hold (running + queued); 10 for a model not offered. */
export function capacityOf(
  offers: readonly { readonly model: string; readonly maxConcurrency: number; readonly maxQueue: number }[],
): (model: string) => number {
  const byModel = new Map(offers.map((offer) => [offer.model, offer.maxConcurrency + offer.maxQueue]));
  return (model) => byModel.get(model) ?? 10;
}

/** `capacity` answers how many requests a model's offer can hold (capacityOf). */
export function materiallyChanged(
  last: StatusSnapshot,
  next: StatusSnapshot,
  capacity: (model: string) => number,
): boolean {
  if (last.healthy !== next.healthy || last.load.length !== next.load.length) return true;
  if (Math.abs((last.gpuUtilization ?? 0) - (next.gpuUtilization ?? 0)) >= 0.1) return true;
  if ((last.kvCacheUtilization === undefined) !== (next.kvCacheUtilization === undefined)) return true;
  if (Math.abs((last.kvCacheUtilization ?? 0) - (next.kvCacheUtilization ?? 0)) >= 0.1) return true;
  const before = new Map(last.load.map((entry) => [entry.model, entry]));
  return next.load.some((entry) => {
    const previous = before.get(entry.model);
    if (previous === undefined) return true;
    const delta = Math.abs(entry.active + entry.queued - previous.active - previous.queued);
    return delta >= Math.max(1, capacity(entry.model) / 10);
  });
}
