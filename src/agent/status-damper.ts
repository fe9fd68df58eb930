// When the agent's view of its engine is worth a status report: the first one, a material change
// (core/status-change.ts, the rule the etcd store flushes by too), or a keep-alive every TTL/3 so
// that the lease never lapses.

import { materiallyChanged, type StatusSnapshot } from '../core/status-change.js';

export type ReportedStatus = StatusSnapshot;

export function shouldReport(
  last: { readonly status: ReportedStatus; readonly atMs: number } | undefined,
  next: ReportedStatus,
  nowMs: number,
  options: { readonly keepAliveMs: number; readonly capacity: (model: string) => number },
): boolean {
  if (last === undefined) return true;
  if (nowMs - last.atMs >= options.keepAliveMs) return true;
  return materiallyChanged(last.status, next, options.capacity);
}
