// Mobility sessions as the stores keep them: one record per session, written with a version check
// (so that two replicas deciding a handover at once cannot both win), gone when it expires. The
// rule that moves them is in core/routing/sessions.ts; the plane (plane/sessions.ts) drives it.

import { KeyCounts } from '../common/key-counts.js';
import type { ClientPosition } from '../core/latency.js';
import type { Level } from '../core/model.js';
import type { Fix, HandoverReason, Motion } from '../core/routing/index.js';

export interface HandoverRecord {
  readonly from: string | undefined;
  readonly to: string;
  readonly reason: HandoverReason;
  readonly stayTtftMs: number | undefined;
  readonly moveTtftMs: number;
  readonly atMs: number;
}

export interface SessionRecord {
  readonly id: string;
  readonly tenant: string;
  readonly model: string;
  /** Where the client was at its last update (region, access point, location). */
  readonly client: ClientPosition;
  readonly latencyBudgetMs: number;
  readonly inputTokens: number;
  readonly maxOutputTokens: number;
  readonly contextTokens: number;
  readonly allowedLevels: readonly Level[];
  readonly allowedRegions: readonly string[];
  /** The levels the tenant's package allows, when it limits them. */
  readonly packageLevels?: readonly Level[];
  /** The last two fixes, oldest first. */
  readonly track: readonly Fix[];
  readonly motion: Motion;
  /** The node the session uses; undefined when stranded with nowhere to go. */
  readonly nodeId: string | undefined;
  /** When it last moved (or opened). */
  readonly placedAtMs: number;
  /** No node meets the budget: it keeps its node anyway. */
  readonly degraded: boolean;
  readonly lastHandover: HandoverRecord | undefined;
  readonly handovers: number;
  readonly ttlS: number;
  readonly openedAtMs: number;
  readonly expiresAtMs: number;
}

/** A record and the version it was read at (etcd: its mod revision). */
export interface VersionedSession {
  readonly record: SessionRecord;
  readonly version: number;
}

export interface SessionStore {
  /** The session, unless unknown or expired (asks etcd when this replica has not seen it yet). */
  get(id: string): Promise<VersionedSession | undefined>;
  /**
   * Writes `record` if the stored version is still `expected` (undefined: only if there is none);
   * returns the new version, or undefined when another write came first. The record expires at
   * `record.expiresAtMs` unless written again.
   */
  put(record: SessionRecord, expected: number | undefined): Promise<number | undefined>;
  /** Returns false if there was no such session. */
  remove(id: string): Promise<boolean>;
  /** Sessions this replica knows of (every one, kept current by the watch on etcd). */
  all(): Iterable<VersionedSession>;
  count(): number;
  /** Sessions of one tenant (as this replica knows them). */
  countFor(tenant: string): number;
  /** Calls `listener` with every later version of the session (undefined once it is gone). */
  watch(id: string, listener: (session: VersionedSession | undefined) => void): () => void;
}

/** Listeners per session id, for the stores. */
export class SessionListeners {
  private readonly byId = new Map<string, Set<(session: VersionedSession | undefined) => void>>();

  add(id: string, listener: (session: VersionedSession | undefined) => void): () => void {
    let set = this.byId.get(id);
    if (set === undefined) {
      set = new Set();
      this.byId.set(id, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.byId.delete(id);
    };
  }

  notify(id: string, session: VersionedSession | undefined): void {
    for (const listener of [...(this.byId.get(id) ?? [])]) listener(session);
  }
}

/** The embedded store's sessions: a map, expiry checked against the clock. */
export class MemorySessions implements SessionStore {
  private readonly sessions = new Map<string, VersionedSession>();
  private readonly listeners = new SessionListeners();
  private readonly tenants = new KeyCounts();
  private version = 0;

  constructor(private readonly clock: () => number) {}

  async get(id: string): Promise<VersionedSession | undefined> {
    return this.live(id);
  }

  async put(record: SessionRecord, expected: number | undefined): Promise<number | undefined> {
    const current = this.live(id(record));
    if ((current?.version ?? undefined) !== expected) return undefined;
    this.version += 1;
    const session = { record, version: this.version };
    if (current === undefined) this.tenants.add(record.tenant);
    this.sessions.set(record.id, session);
    this.listeners.notify(record.id, session);
    return this.version;
  }

  async remove(id: string): Promise<boolean> {
    const current = this.live(id);
    if (current === undefined) return false;
    this.sessions.delete(id);
    this.tenants.remove(current.record.tenant);
    this.listeners.notify(id, undefined);
    return true;
  }

  *all(): Iterable<VersionedSession> {
    for (const id of [...this.sessions.keys()]) {
      const session = this.live(id);
      if (session !== undefined) yield session;
    }
  }

  /** Live sessions: the expired are let go first (at most once a second: a full pass). */
  count(): number {
    this.purge();
    return this.sessions.size;
  }

  countFor(tenant: string): number {
    this.purge();
    return this.tenants.of(tenant);
  }

  private purgedAtMs = Number.NEGATIVE_INFINITY;

  private purge(): void {
    const nowMs = this.clock();
    if (nowMs - this.purgedAtMs < 1000) return;
    this.purgedAtMs = nowMs;
    for (const id of [...this.sessions.keys()]) this.live(id);
  }

  watch(id: string, listener: (session: VersionedSession | undefined) => void): () => void {
    return this.listeners.add(id, listener);
  }

  /** The session unless expired; an expired one is forgotten (and its watchers told). */
  private live(id: string): VersionedSession | undefined {
    const session = this.sessions.get(id);
    if (session === undefined) return undefined;
    if (session.record.expiresAtMs > this.clock()) return session;
    this.sessions.delete(id);
    this.tenants.remove(session.record.tenant);
    this.listeners.notify(id, undefined);
    return undefined;
  }
}

const id = (record: SessionRecord) => record.id;
