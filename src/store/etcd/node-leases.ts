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
interface KeepAliveStream {
  write(request: { ID: string }): unknown;
  end(): unknown;
  on(event: 'data', listener: (response: { ID: string; TTL: string }) => void): unknown;
  on(event: 'error' | 'end', listener: (error?: Error) => void): unknown;
}

interface Renewal {
  resolve(ttl: number): void;
  reject(error: Error): void;
}

/**
 * Renews node leases over one shared LeaseKeepAlive stream, matching each answer to its lease by
 * id, instead of opening a stream per renewal (a stream costs both ends far more than a message).
 * Each renewal has its own deadline, which covers opening the stream too; a renewal that times out
 * or a stream that fails closes the stream, fails what waited on it, and the next renewal opens
 * a new one.
 */
export class LeaseRenewer {
  private stream: KeepAliveStream | undefined;
  private opening: Promise<KeepAliveStream> | undefined;
  private readonly waiting = new Map<string, Renewal[]>();
  /** Streams opened, for tests. */
  opened = 0;

  constructor(
    private readonly open: () => Promise<KeepAliveStream>,
    private readonly timeoutMs: number,
  ) {}

  static for(client: Etcd3, timeoutMs: number): LeaseRenewer {
    return new LeaseRenewer(() => client.leaseClient.leaseKeepAlive() as Promise<KeepAliveStream>, timeoutMs);
  }

  /** The lease's remaining TTL in seconds after renewing it (0 or less: it had lapsed). */
  renew(leaseId: string): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const renewal: Renewal = {
        resolve: (ttl) => {
          clearTimeout(timer);
          resolve(ttl);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      const timer = setTimeout(() => {
        this.remove(leaseId, renewal);
        reject(new KeepaliveTimeout('keepalive timed out'));
        // Silence on the stream: do not trust it with the next renewal, nor the others with this one.
        this.reset(new KeepaliveTimeout('keepalive timed out'));
      }, this.timeoutMs);
      const queue = this.waiting.get(leaseId);
      if (queue === undefined) this.waiting.set(leaseId, [renewal]);
      else queue.push(renewal);
      this.connected().then(
        (stream) => {
          if (this.waiting.get(leaseId)?.includes(renewal)) stream.write({ ID: leaseId });
        },
        (error: Error) => {
          this.remove(leaseId, renewal);
          renewal.reject(error);
        },
      );
    });
  }

  close(): void {
    this.reset(new KeepaliveTimeout('keepalive given up: the store is closing'));
  }

  private connected(): Promise<KeepAliveStream> {
    if (this.stream !== undefined) return Promise.resolve(this.stream);
    if (this.opening === undefined) {
      const opening = this.open().then((stream) => {
        if (this.opening !== opening) {
          stream.end();
          throw new KeepaliveTimeout('keepalive stream given up while it opened');
        }
        this.opening = undefined;
        this.stream = stream;
        this.opened += 1;
        stream.on('data', (response) => {
          const queue = this.waiting.get(String(response.ID));
          const renewal = queue?.shift();
          if (queue?.length === 0) this.waiting.delete(String(response.ID));
          renewal?.resolve(Number(response.TTL));
        });
        stream.on('error', (error) => {
          if (this.stream === stream) this.reset(error ?? new KeepaliveTimeout('keepalive stream failed'));
        });
        stream.on('end', () => {
          if (this.stream === stream) this.reset(new KeepaliveTimeout('keepalive stream ended'));
        });
        return stream;
      });
      this.opening = opening;
      opening.catch(() => {
        if (this.opening === opening) this.opening = undefined;
      });
    }
    return this.opening;
  }

  /** Drops the stream and fails every renewal waiting on it. */
  private reset(error: Error): void {
    const stream = this.stream;
    this.stream = undefined;
    this.opening = undefined;
    stream?.end();
    const waiting = [...this.waiting.values()].flat();
    this.waiting.clear();
    for (const renewal of waiting) renewal.reject(error);
  }

  private remove(leaseId: string, renewal: Renewal): void {
    const queue = this.waiting.get(leaseId);
    if (queue === undefined) return;
    const index = queue.indexOf(renewal);
    if (index >= 0) queue.splice(index, 1);
    if (queue.length === 0) this.waiting.delete(leaseId);
  }
}
