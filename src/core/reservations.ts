// Slot reservations: placing a request holds one slot on (node, model) until Release or TTL.
//
// A node's load is what its last status report says plus the reservations made after that report;
// older reservations are already inside the report (or finished). So a reservation stops counting
// toward load once a later report arrives, but stays releasable until Release or its TTL, so that
// usage can still be recorded against it.

export interface Reservation {
  readonly id: string;
  readonly nodeId: string;
  readonly model: string;
  /** Who the usage is billed to at Release. */
  readonly tenant: string;
  readonly createdAtMs: number;
  readonly expiresAtMs: number;
}

interface Entry extends Reservation {
  /** Still counted toward load: not released, not expired, not yet covered by a status report. */
  pending: boolean;
}

const keyOf = (nodeId: string, model: string): string => `${nodeId}\u0000${model}`;

/**
 * Reservation ids say where the slot was taken: `<book prefix><sequence>~<node id>~<model>`, so
 * that a Release reaching another replica can still record usage against the right node and model.
 * ('~' appears in neither node ids nor model names.)
 */
function formatReservationId(prefix: string, sequence: number, nodeId: string, model: string): string {
  return `${prefix}${sequence.toString(36)}~${nodeId}~${model}`;
}

/** The node and model a reservation id names, or undefined if it is not one of ours. */
export function parseReservationId(id: string): { nodeId: string; model: string } | undefined {
  const parts = id.split('~');
  if (parts.length !== 3 || !parts[1] || !parts[2]) return undefined;
  return { nodeId: parts[1], model: parts[2] };
}

export class ReservationBook {
  /** Insertion order = creation order = expiry order, because every reservation has the same TTL. */
  private readonly byId = new Map<string, Entry>();
  /** Per (node, model): reservations in creation order that may still be pending. */
  private readonly queues = new Map<string, Entry[]>();
  private readonly pendingCounts = new Map<string, number>();
  private sequence = 0;

  /** `idPrefix` must be unique per book (e.g. per replica) so ids never collide across replicas. */
  constructor(
    readonly ttlMs: number,
    private readonly idPrefix: string,
  ) {
    if (!(ttlMs > 0)) throw new RangeError(`reservation TTL must be > 0 ms, got ${ttlMs}`);
  }

  /** Live reservations (not released, not expired at the last sweep). */
  get size(): number {
    return this.byId.size;
  }

  reserve(nodeId: string, model: string, tenant: string, nowMs: number): Reservation {
    this.sequence += 1;
    const entry: Entry = {
      id: formatReservationId(this.idPrefix, this.sequence, nodeId, model),
      nodeId,
      model,
      tenant,
      createdAtMs: nowMs,
      expiresAtMs: nowMs + this.ttlMs,
      pending: true,
    };
    this.byId.set(entry.id, entry);
    const key = keyOf(nodeId, model);
    let queue = this.queues.get(key);
    if (queue === undefined) {
      queue = [];
      this.queues.set(key, queue);
    }
    queue.push(entry);
    this.pendingCounts.set(key, (this.pendingCounts.get(key) ?? 0) + 1);
    return publicView(entry);
  }

  /**
   * Frees the reservation's slot. Idempotent: returns the reservation the first time, and
   * undefined when it is unknown, already released or expired.
   */
  release(id: string): Reservation | undefined {
    const entry = this.byId.get(id);
    if (entry === undefined) return undefined;
    this.retire(entry);
    return publicView(entry);
  }

  /** Pending reservations per model on `nodeId` (see `pending`), for display. */
  pendingByModel(
    nodeId: string,
    statusAtMs: number | undefined,
    models: readonly string[],
  ): Map<string, number> {
    const result = new Map<string, number>();
    for (const model of models) {
      const count = this.pending(nodeId, model, statusAtMs);
      if (count > 0) result.set(model, count);
    }
    return result;
  }

  /** Drops every reservation whose TTL has ended by `nowMs`; returns them. */
  expire(nowMs: number): Reservation[] {
    const expired: Reservation[] = [];
    for (const entry of this.byId.values()) {
      if (entry.expiresAtMs > nowMs) break;
      this.retire(entry);
      expired.push(publicView(entry));
    }
    return expired;
  }

  /**
   * Reservations on (node, model) not yet covered by a status report that arrived at
   * `statusAtMs` (undefined: no report yet, so all count). Call `expire(nowMs)` first.
   */
  pending(nodeId: string, model: string, statusAtMs: number | undefined): number {
    const key = keyOf(nodeId, model);
    const queue = this.queues.get(key);
    if (queue === undefined) return 0;
    let covered = 0;
    while (covered < queue.length) {
      const head = queue[covered] as Entry;
      if (head.pending && (statusAtMs === undefined || head.createdAtMs >= statusAtMs)) break;
      if (head.pending) {
        head.pending = false;
        this.decrementPending(key);
      }
      covered += 1;
    }
    if (covered > 0) queue.splice(0, covered);
    if (queue.length === 0) this.queues.delete(key);
    return this.pendingCounts.get(key) ?? 0;
  }

  private retire(entry: Entry): void {
    this.byId.delete(entry.id);
    if (entry.pending) {
      entry.pending = false;
      this.decrementPending(keyOf(entry.nodeId, entry.model));
    }
  }

  private decrementPending(key: string): void {
    const count = (this.pendingCounts.get(key) ?? 0) - 1;
    if (count > 0) {
      this.pendingCounts.set(key, count);
      return;
    }
    // Nothing pending left: whatever the queue still holds is retired or covered.
    this.pendingCounts.delete(key);
    this.queues.delete(key);
  }
}

function publicView(entry: Entry): Reservation {
  return {
    id: entry.id,
    nodeId: entry.nodeId,
    model: entry.model,
    tenant: entry.tenant,
    createdAtMs: entry.createdAtMs,
    expiresAtMs: entry.expiresAtMs,
  };
}
