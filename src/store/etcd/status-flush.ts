// When a node's status report is worth a write to etcd. Reports arrive every few seconds from
// every node; etcd sees one only when it is old enough and something an operator or router would
// act on changed.

import type { NodeSpec, NodeStatus } from '../../core/model.js';

export interface FlushedStatus {
  readonly status: NodeStatus;
  readonly statusAtMs: number;
}

/**
 * Flush when there is no flushed status yet, or the last flush is at least `flushMs` old and
 * health, the models reported, a model's load by at least a tenth of its capacity (and at least 1),
 * or GPU or KV-cache utilisation by 0.1 changed.
 */
export function shouldFlush(
  spec: NodeSpec,
  last: FlushedStatus | undefined,
  next: FlushedStatus,
  flushMs: number,
): boolean {
  if (last === undefined) return true;
  if (next.statusAtMs - last.statusAtMs < flushMs) return false;
  const a = last.status;
  const b = next.status;
  if (a.healthy !== b.healthy || a.load.length !== b.load.length) return true;
  if (Math.abs(a.gpuUtilization - b.gpuUtilization) >= 0.1) return true;
  if (Math.abs(a.kvCacheUtilization - b.kvCacheUtilization) >= 0.1) return true;
  const before = new Map(a.load.map((entry) => [entry.model, entry]));
  const offers = new Map(spec.models.map((offer) => [offer.model, offer]));
  return b.load.some((entry) => {
    const previous = before.get(entry.model);
    if (previous === undefined) return true;
    const offer = offers.get(entry.model);
    const capacity = offer === undefined ? 10 : offer.maxConcurrency + offer.maxQueue;
    const delta = Math.abs(entry.active + entry.queued - previous.active - previous.queued);
    return delta >= Math.max(1, capacity / 10);
  });
}
