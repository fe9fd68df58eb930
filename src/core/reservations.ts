// Slot reservations: placing a request holds one slot on (node, model) until Release or TTL.
//
// A node's load is what its last status report says plus the reservations made after that report;
// older reservations are already inside the report (or finished). So a reservation stops counting
// toward load once a later report arrives, but stays releasable until Release or its TTL, so that
// usage can still be recorded against it. A report covers each reservation by its own stamp; an
// offer's reservations are kept in stamp order, so the covered ones are a prefix and each that
// stops counting lowers the load by exactly one (what the routing index's load floors rely on;
// see LoadWatcher).
//
// Two clocks: the wall clock (what status reports are stamped with, and what a client is told)
// and a monotonic one for expiry, so that stepping the wall clock back cannot keep slots held.

import {
  MAX_MODEL_CHARS,
  MAX_NODE_ID_CHARS,
  MAX_TENANT_CHARS,
  MODEL_PATTERN,
  NODE_ID_PATTERN,
  TENANT_PATTERN,
} from './model.js';

/**
 * An id Route issued: `<replica>.<sequence>.<issued>.<token>~<node id>~<model>~<tenant>` (issued:
 * wall-clock seconds in base 36; the tenant is empty for an operator's untenanted route). It
 * carries what a Release on any replica needs: where to record usage, whose reservation it is, and
 * how old it is — and the token, a MAC of the rest, proves this cluster issued it.
 */
export type ReservationId = string & { readonly __brand: 'ReservationId' };

export const REPLICA_ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,23}$/;
const MAX_REPLICA_CHARS = 24;
/** A sequence number below 2^53 in base 36. */
const MAX_SEQUENCE_CHARS = 11;
const DOT = 46;
/** Seconds since the epoch in base 36: 6 characters until the year 4000. */
const MAX_ISSUED_CHARS = 8;
/** 64 random bits in hex: a client cannot guess another's reservation. */
export const RESERVATION_TOKEN_CHARS = 16;
/** The longest id the format allows; Release accepts every id up to this length. */
export const MAX_RESERVATION_ID_CHARS =
  MAX_REPLICA_CHARS +
  1 +
  MAX_SEQUENCE_CHARS +
  1 +
  MAX_ISSUED_CHARS +
  1 +
  RESERVATION_TOKEN_CHARS +
  1 +
  MAX_NODE_ID_CHARS +
  1 +
  MAX_MODEL_CHARS +
  1 +
  MAX_TENANT_CHARS;

export interface Reservation {
  readonly id: ReservationId;
  readonly nodeId: string;
  readonly model: string;
  /** Who the usage is billed to at Release. */
  readonly tenant: string;
  /** Wall clock: compared with the wall time of the node's status reports. */
  readonly createdAtMs: number;
  /** Wall clock, for the client; expiry itself runs on the monotonic clock. */
  readonly expiresAtMs: number;
}

/** What an entry needs of its book to write its id, or to give its slot back when it cannot. */
interface IdParts {
  readonly replicaId: string;
  readonly newToken: (signed: string) => string;
  readonly discard: (entry: Entry) => void;
}

/**
 * A reservation as the book keeps it. Its id is written out (and its token made) when first read:
 * a caller that frees the reservation it holds (the simulator) never pays for the string. `id` is
 * an accessor, so a spread of a reservation leaves it out: copy the fields by name (JSON has it).
 */
class Entry implements Reservation {
  #written: ReservationId | undefined;
  readonly #parts: IdParts;
  /** Still counted toward load: not released, not expired, not yet covered by a status report. */
  pending = true;

  constructor(
    parts: IdParts,
    /** The sequence number in its id: the book's key for it. */
    readonly sequence: number,
    readonly nodeId: string,
    readonly model: string,
    readonly tenant: string,
    readonly createdAtMs: number,
    readonly expiresAtMs: number,
    readonly expiresAtMonotonicMs: number,
  ) {
    this.#parts = parts;
  }

  get id(): ReservationId {
    if (this.#written !== undefined) return this.#written;
    const parts = this.#parts;
    const sequence = this.sequence.toString(36);
    const issued = issuedSecond(this.createdAtMs).toString(36);
    const rest = `${this.nodeId}~${this.model}~${this.tenant}`;
    const token = parts.newToken(signedPart(parts.replicaId, sequence, issued, rest));
    if (!TOKEN_PATTERN.test(token)) {
      // No id can be given out: the slot is not left held by a reservation nobody can name.
      parts.discard(this);
      throw new RangeError('reservation token must be 16 lowercase hex characters');
    }
    this.#written = `${parts.replicaId}.${sequence}.${issued}.${token}~${rest}` as ReservationId;
    return this.#written;
  }

  toJSON(): Reservation {
    const { id, nodeId, model, tenant, createdAtMs, expiresAtMs } = this;
    return { id, nodeId, model, tenant, createdAtMs, expiresAtMs };
  }
}

const TOKEN_PATTERN = /^[0-9a-f]{16}$/;

interface OfferHolds {
  /** From `head` on: reservations in stamp (createdAtMs) order, the pending and some retired since. */
  queue: Entry[];
  head: number;
  /** How many of them are pending. */
  pending: number;
}

/**
 * Per model, per node: nested maps, so the hot path builds no key strings. A search reads many
 * nodes of one model in a row: the last model's map is kept at hand, one lookup a node.
 */
class PerOffer<T> {
  private readonly byModel = new Map<string, Map<string, T>>();
  private lastModel: string | undefined;
  private lastNodes: Map<string, T> | undefined;

  private nodesOf(model: string): Map<string, T> | undefined {
    if (model === this.lastModel) return this.lastNodes;
    const nodes = this.byModel.get(model);
    if (nodes !== undefined) {
      this.lastModel = model;
      this.lastNodes = nodes;
    }
    return nodes;
  }

  get(nodeId: string, model: string): T | undefined {
    return this.nodesOf(model)?.get(nodeId);
  }
  set(nodeId: string, model: string, value: T): void {
    let nodes = this.nodesOf(model);
    if (nodes === undefined) {
      nodes = new Map();
      this.byModel.set(model, nodes);
    }
    nodes.set(nodeId, value);
  }
  delete(nodeId: string, model: string): void {
    const nodes = this.nodesOf(model);
    if (nodes === undefined) return;
    nodes.delete(nodeId);
    if (nodes.size > 0) return;
    this.byModel.delete(model);
    if (this.lastNodes === nodes) {
      this.lastModel = undefined;
      this.lastNodes = undefined;
    }
  }
}

export interface ParsedReservationId {
  readonly id: ReservationId;
  readonly replica: string;
  readonly nodeId: string;
  readonly model: string;
  readonly tenant: string;
  readonly token: string;
  /** When Route issued it (wall clock, whole seconds). */
  readonly issuedAtMs: number;
  /** The id without its token: what the token signs. */
  readonly signed: string;
}

/** The issue time an id carries for a reservation made at `wallMs`: whole seconds of the wall clock. */
export function issuedSecond(wallMs: number): number {
  return Math.max(0, Math.floor(wallMs / 1000));
}

/** What a reservation's token signs: every part of its id but the token. */
export const signedPart = (replica: string, sequence: string, issued: string, rest: string): string =>
  `${replica}.${sequence}.${issued}~${rest}`;

/** What a reservation id names, or undefined if it does not have the format Route issues. */
export function parseReservationId(id: string): ParsedReservationId | undefined {
  if (id.length > MAX_RESERVATION_ID_CHARS) return undefined;
  const parts = id.split('~');
  if (parts.length !== 4) return undefined;
  const [head, nodeId, model, tenant] = parts as [string, string, string, string];
  const [replica, sequence, issued, token, ...extra] = head.split('.');
  if (
    extra.length > 0 ||
    replica === undefined ||
    !REPLICA_ID_PATTERN.test(replica) ||
    sequence === undefined ||
    !/^[0-9a-z]{1,11}$/.test(sequence) ||
    issued === undefined ||
    !/^[0-9a-z]{1,8}$/.test(issued) ||
    token === undefined ||
    !TOKEN_PATTERN.test(token) ||
    !NODE_ID_PATTERN.test(nodeId) ||
    model.length > MAX_MODEL_CHARS ||
    !MODEL_PATTERN.test(model) ||
    (tenant !== '' && !TENANT_PATTERN.test(tenant))
  ) {
    return undefined;
  }
  return {
    id: id as ReservationId,
    replica,
    nodeId,
    model,
    tenant,
    token,
    issuedAtMs: Number.parseInt(issued, 36) * 1000,
    signed: signedPart(replica, sequence, issued, `${nodeId}~${model}~${tenant}`),
  };
}

/**
 * Told when an offer's load falls by one because one of its pending reservations stopped counting
 * (released, expired, or covered by a report): the routing index keeps, per node, a load the node
 * carries at least, and lowers it then (see ModelCandidates.noteLoad).
 */
export interface LoadWatcher {
  loadDecreased(nodeId: string, model: string): void;
  /** The book stopped telling this watcher (too many watch it): whatever it kept is stale. */
  unwatched(): void;
}

/** Watchers one book tells at most (one per registry view that routes with it). */
const MAX_LOAD_WATCHERS = 8;

export interface ReservationBookOptions {
  readonly ttlMs: number;
  /** Unique per book (per replica), matching REPLICA_ID_PATTERN, so ids never collide. */
  readonly replicaId: string;
  /**
   * RESERVATION_TOKEN_CHARS lowercase hex characters for the id whose other parts are `signed`:
   * in production a MAC of them under the cluster's secret, so that any replica can tell an id
   * this cluster issued from a forged one.
   */
  readonly newToken: (signed: string) => string;
}

export class ReservationBook {
  readonly ttlMs: number;
  /**
   * Live entries by the sequence number in their id: a small-integer key, so that the hot path
   * neither flattens nor hashes the id string (a lookup then checks the whole id).
   */
  private readonly bySequence = new Map<number, Entry>();
  /**
   * Every reservation in creation order, which is expiry order (one TTL, a monotonic clock);
   * released ones stay until expiry passes them. A queue, not the Map: iterating a Map from its
   * start walks the slots of every entry deleted since it was last compacted.
   */
  private order: Entry[] = [];
  private head = 0;
  /** Entries in `order` released before expiry; compacted away once they are most of it. */
  private stale = 0;
  /**
   * Per (node, model): reservations in creation order that may still be pending, and how many
   * are. One record, so that the hot path looks the offer up once.
   */
  private readonly holds = new PerOffer<OfferHolds>();
  private sequence = 0;
  /** Told of every fall in a pending count (see LoadWatcher), oldest first. */
  private readonly watchers: LoadWatcher[] = [];
  /** What an entry writes its id with (see Entry.id). */
  private readonly idParts: IdParts;

  constructor(options: ReservationBookOptions) {
    if (!(options.ttlMs > 0)) throw new RangeError(`reservation TTL must be > 0 ms, got ${options.ttlMs}`);
    if (!REPLICA_ID_PATTERN.test(options.replicaId))
      throw new RangeError(
        `replica id must match ${REPLICA_ID_PATTERN}, got ${JSON.stringify(options.replicaId)}`,
      );
    this.ttlMs = options.ttlMs;
    this.idParts = {
      replicaId: options.replicaId,
      newToken: options.newToken,
      discard: (entry) => {
        this.free(entry);
      },
    };
  }

  /**
   * Tells `watcher` from now on whenever a pending reservation stops counting. Past
   * MAX_LOAD_WATCHERS, the oldest is dropped and told so.
   */
  watchLoad(watcher: LoadWatcher): void {
    if (this.watchers.includes(watcher)) return;
    if (this.watchers.length >= MAX_LOAD_WATCHERS) this.watchers.shift()?.unwatched();
    this.watchers.push(watcher);
  }

  /** Tells the watchers that a pending reservation on the offer stopped counting. */
  private loadFell(nodeId: string, model: string): void {
    for (const watcher of this.watchers) watcher.loadDecreased(nodeId, model);
  }

  /** Live reservations (not released, not expired at the last sweep). */
  get size(): number {
    return this.bySequence.size;
  }

  reserve(
    nodeId: string,
    model: string,
    tenant: string,
    wallNowMs: number,
    monotonicNowMs: number,
  ): Reservation {
    this.sequence += 1;
    const entry = new Entry(
      this.idParts,
      this.sequence,
      nodeId,
      model,
      tenant,
      wallNowMs,
      wallNowMs + this.ttlMs,
      monotonicNowMs + this.ttlMs,
    );
    this.bySequence.set(entry.sequence, entry);
    this.order.push(entry);
    this.compact();
    let holds = this.holds.get(nodeId, model);
    if (holds === undefined) {
      holds = { queue: [], head: 0, pending: 0 };
      this.holds.set(nodeId, model, holds);
    }
    // Kept in stamp order (an out-of-order stamp is rare and shallow): coverage is then a prefix
    // and each entry's own, so one that stops counting lowers the load by exactly one.
    const { queue } = holds;
    let at = queue.length;
    while (at > holds.head && (queue[at - 1] as Entry).createdAtMs > wallNowMs) at -= 1;
    if (at === queue.length) queue.push(entry);
    else queue.splice(at, 0, entry);
    holds.pending += 1;
    return entry;
  }

  /**
   * Frees the reservation's slot. Idempotent: returns the reservation the first time, and
   * undefined when it is unknown, already released or expired.
   */
  release(id: string): Reservation | undefined {
    const entry = this.entryOf(id);
    return entry === undefined ? undefined : this.free(entry);
  }

  /** Frees `reservation` (as `held` returned it) as `release` would free its id, without parsing the id again. */
  free(reservation: Reservation): Reservation | undefined {
    const entry = reservation as Entry;
    if (this.bySequence.get(entry.sequence) !== entry) return undefined;
    this.retire(entry);
    this.stale += 1;
    return entry;
  }

  /** The live reservation with exactly this id (issued here, not released, not expired), if any. */
  held(id: string): Reservation | undefined {
    return this.entryOf(id);
  }

  /** The live entry whose id is exactly `id`: found by the sequence number after this book's replica id. */
  private entryOf(id: string): Entry | undefined {
    const replica = this.idParts.replicaId;
    const from = replica.length + 1;
    if (id.length <= from || id.charCodeAt(replica.length) !== DOT || !id.startsWith(replica))
      return undefined;
    const end = id.indexOf('.', from);
    if (end < 0 || end - from > MAX_SEQUENCE_CHARS) return undefined;
    const entry = this.bySequence.get(Number.parseInt(id.slice(from, end), 36));
    return entry !== undefined && entry.id === id ? entry : undefined;
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

  /** Drops every reservation whose TTL has ended by `monotonicNowMs`; returns them. */
  expire(monotonicNowMs: number): Reservation[] {
    const expired: Reservation[] = [];
    const { order } = this;
    while (this.head < order.length) {
      const entry = order[this.head] as Entry;
      if (entry.expiresAtMonotonicMs > monotonicNowMs) break;
      this.head += 1;
      if (this.bySequence.get(entry.sequence) !== entry) {
        this.stale = Math.max(0, this.stale - 1);
        continue;
      }
      this.retire(entry);
      expired.push(entry);
    }
    if (this.head > 1024 && this.head * 2 > order.length) {
      this.order = order.slice(this.head);
      this.head = 0;
    }
    return expired;
  }

  /**
   * Reservations on (node, model) not yet covered by a status report that arrived at
   * `statusAtMs` (undefined: no report yet, so all count). Call `expire` first.
   */
  pending(nodeId: string, model: string, statusAtMs: number | undefined): number {
    const holds = this.holds.get(nodeId, model);
    if (holds === undefined) return 0;
    // No report yet: every pending one counts, and nothing in the queue need be read (retiring
    // keeps it short).
    if (statusAtMs === undefined) return holds.pending;
    const { queue } = holds;
    let at = holds.head;
    while (at < queue.length) {
      const first = queue[at] as Entry;
      if (first.pending && (statusAtMs === undefined || first.createdAtMs >= statusAtMs)) break;
      if (first.pending) {
        first.pending = false;
        holds.pending -= 1;
        // Covered here, perhaps for a view other than the one that counted it: its load fell.
        this.loadFell(nodeId, model);
      }
      at += 1;
    }
    holds.head = at;
    // Nothing pending left: whatever the queue still holds is retired or covered.
    if (holds.pending === 0) {
      this.holds.delete(nodeId, model);
      return 0;
    }
    // Passed entries are dropped once they are half the queue: no shift of the rest each time.
    if (at > 32 && at * 2 > queue.length) {
      holds.queue = queue.slice(at);
      holds.head = 0;
    }
    return holds.pending;
  }

  /** Entries the book keeps for one offer's pending count (pending ones and some retired); for tests. */
  queued(nodeId: string, model: string): number {
    const holds = this.holds.get(nodeId, model);
    return holds === undefined ? 0 : holds.queue.length - holds.head;
  }

  /** Entries the book still tracks (live ones and released ones not yet compacted away). */
  tracked(): number {
    return this.order.length - this.head;
  }

  /**
   * Drops released entries from the expiry queue once they outnumber the live ones: with a long
   * TTL (a simulation holds slots until requests finish) they would otherwise pile up forever.
   */
  private compact(): void {
    const tracked = this.order.length - this.head;
    if (this.stale < 1024 || this.stale * 2 < tracked) return;
    this.order = this.order.slice(this.head).filter((entry) => this.bySequence.get(entry.sequence) === entry);
    this.head = 0;
    this.stale = 0;
  }

  private retire(entry: Entry): void {
    this.bySequence.delete(entry.sequence);
    if (!entry.pending) return;
    entry.pending = false;
    this.loadFell(entry.nodeId, entry.model);
    const holds = this.holds.get(entry.nodeId, entry.model);
    if (holds === undefined) return;
    holds.pending -= 1;
    // Nothing pending left: whatever the queue still holds is retired or covered.
    if (holds.pending === 0) {
      this.holds.delete(entry.nodeId, entry.model);
      return;
    }
    // Retired entries behind a long-lived pending one would pile up: the queue keeps the pending
    // ones, and not many more.
    if (holds.queue.length - holds.head > 2 * holds.pending + 32) {
      holds.queue = holds.queue.slice(holds.head).filter((held) => held.pending);
      holds.head = 0;
    }
  }
}
