// Node leases across an etcd partition.
//
// A node's lease is renewed by its status reports (DESIGN.md §5). While a replica cannot reach
// etcd it still accepts a node's reports, but cannot renew the lease, and etcd (which keeps
// time on its own) may expire it: when etcd is paused or partitioned away for longer than a TTL,
// every lease lapses and etcd deletes the nodes that kept reporting the whole time.
//
// The rule: a replica remembers each node it accepted a report for without being able to renew
// its lease ("unrenewed"). When etcd is reachable again, it renews those leases; a lease that
// lapsed meanwhile is replaced, and the node's spec and last status are written again on the
// new lease, unless the node's last report was a whole TTL before etcd answered again (then it
// expired for real) or someone else wrote the node first. (If etcd says a lease is gone but has not
// yet deleted its keys, the claim is kept and the next report writes the node again.) So a node that kept reporting is routable again without
// re-registering. One consequence: a node deregistered on one replica while its agent kept
// reporting to another replica that was cut off from etcd comes back when the partition heals.

import type { Etcd3 } from 'etcd3';
import type { NodeSpec, NodeStatus } from '../../core/model.js';
import { KeepaliveTimeout } from './etcd-errors.js';

export interface NodeDoc {
  readonly spec: NodeSpec;
  readonly ttlS: number;
  readonly permanent: boolean;
  readonly registeredAtMs: number;
  /** etcd lease id (decimal string); "0" for permanent nodes. */
  readonly leaseId: string;
}

export interface LoadDoc {
  readonly status: NodeStatus;
  readonly statusAtMs: number;
}

export interface Unrenewed {
  readonly doc: NodeDoc;
  readonly load: LoadDoc;
}

/** Nodes that reported to this replica while it could not renew their leases. */
export class UnrenewedLeases {
  private readonly entries = new Map<string, Unrenewed>();

  /** Remembers the node's latest report (one entry per node: bounded by the registry). */
  note(doc: NodeDoc, load: LoadDoc): void {
    this.entries.set(doc.spec.id, { doc, load });
  }

  /** The entry of a node that reported within its TTL of `nowMs`; forgets one that did not. */
  live(nodeId: string, nowMs: number): Unrenewed | undefined {
    const entry = this.entries.get(nodeId);
    if (entry === undefined) return undefined;
    if (nowMs - entry.load.statusAtMs > entry.doc.ttlS * 1000) {
      this.entries.delete(nodeId);
      return undefined;
    }
    return entry;
  }

  settled(nodeId: string): void {
    this.entries.delete(nodeId);
  }

  nodeIds(): string[] {
    return [...this.entries.keys()];
  }

  get size(): number {
    return this.entries.size;
  }
}

/** Renews a lease once over a keepalive stream; resolves with its remaining TTL (≤ 0: gone). */
export async function renewLease(client: Etcd3, leaseId: string, timeoutMs: number): Promise<number> {
  const stream = await client.leaseClient.leaseKeepAlive();
  try {
    const response = await new Promise<{ TTL: string }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new KeepaliveTimeout('keepalive timed out')), timeoutMs);
      stream.on('data', (data: { TTL: string }) => {
        clearTimeout(timer);
        resolve(data);
      });
      stream.on('error', (error: Error) => {
        clearTimeout(timer);
        reject(error);
      });
      stream.write({ ID: leaseId });
    });
    return Number(response.TTL);
  } finally {
    stream.end();
  }
}
