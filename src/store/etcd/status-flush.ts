// When a node's status report is worth a write to etcd. Reports arrive every few seconds from
// every node; etcd sees one only when it is old enough and something an operator or router would
// act on changed.

import type { NodeSpec, NodeStatus } from '../../core/model.js';
import { capacityOf, materiallyChanged } from '../../core/status-change.js';

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
  return materiallyChanged(last.status, next.status, capacityOf(spec.models));
}
