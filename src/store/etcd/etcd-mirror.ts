// The watch-fed mirror of what is under the prefix: node, status and drain documents composed into
// the routing index, latency samples, the pricing state, API keys and tenants, quota ledgers and
// mobility sessions.
// Every change — from this replica's own writes, the watch or a relist — goes through `apply`,
// which keeps the newest revision of each key, so a late watch event never undoes a newer write.
// Pure bookkeeping: no etcd calls (etcd-store.ts lists, watches and writes).

import type { IKeyValue } from 'etcd3';
import type { Logger } from '../../common/logger.js';
import type { LatencySample } from '../../core/latency.js';
import {
  LIST_PRICES,
  type PricingPolicy,
  type PricingState,
  type ScheduledPricing,
} from '../../core/pricing.js';
import type { Ledger } from '../../core/quota.js';
import { AccountsCache, type ApiKeyRecord, type TenantRecord } from '../accounts.js';
import type { RegistryIndex } from '../registry-index.js';
import type { KeyCodec, Kind } from './etcd-keys.js';
import type { EtcdLedgers } from './etcd-ledgers.js';
import type { SessionDoc } from './etcd-sessions.js';
import type { LoadDoc, NodeDoc } from './node-leases.js';

export interface AdminDoc {
  readonly draining: boolean;
}

export interface EtcdMirrorOptions {
  readonly index: RegistryIndex;
  readonly codec: KeyCodec;
  readonly ledgers: EtcdLedgers;
  readonly logger: Logger;
  /** A node left the registry (its keys were deleted): forget what else is kept about it. */
  readonly onNodeGone: (nodeId: string) => void;
  /** Session documents (etcd-sessions.ts); after a relist, the sessions still listed. */
  readonly sessions: {
    apply(id: string, doc: SessionDoc | undefined, revision: number): void;
    retain(ids: ReadonlySet<string>, revision: number): void;
  };
}

export class EtcdMirror {
  readonly nodeDocs = new Map<string, NodeDoc>();
  readonly loadDocs = new Map<string, LoadDoc>();
  private readonly adminDocs = new Map<string, AdminDoc>();
  /** Last mod revision applied per key. */
  private readonly revisions = new Map<string, number>();
  readonly accounts = new AccountsCache();
  private currentPricing: PricingPolicy = LIST_PRICES;
  private readonly scheduledPricing = new Map<string, ScheduledPricing>();
  pricingState: PricingState = { current: LIST_PRICES, scheduled: [] };
  readonly usageListeners: ((reservationId: string) => void)[] = [];
  /** Highest revision seen from a list, a write or the watch. */
  seenRevision = 0;

  constructor(private readonly options: EtcdMirrorOptions) {}

  applyKeyValue(kv: IKeyValue, deleted: boolean): void {
    const decoded = this.options.codec.decode(kv.key, deleted ? undefined : kv.value);
    const revision = Number(kv.mod_revision);
    this.seenRevision = Math.max(this.seenRevision, revision);
    if (!decoded.ok) {
      if (decoded.reason === 'unreadable')
        this.options.logger.warn('ignoring an unreadable etcd value', { key: kv.key.toString() });
      return;
    }
    this.apply(decoded.kind, decoded.id, decoded.value, revision);
  }

  apply(kind: Kind, id: string, value: unknown, revision: number): void {
    const key = `${kind}/${id}`;
    if ((this.revisions.get(key) ?? 0) > revision) return;
    this.revisions.set(key, revision);
    const { index } = this.options;
    switch (kind) {
      case 'nodes':
        if (value === undefined) this.forget(id);
        else this.nodeDocs.set(id, value as NodeDoc);
        break;
      case 'load': {
        const load = value as LoadDoc | undefined;
        const current = this.loadDocs.get(id);
        if (load === undefined) this.loadDocs.delete(id);
        else if (current === undefined || current.statusAtMs <= load.statusAtMs) this.loadDocs.set(id, load);
        break;
      }
      case 'admin':
        if (value === undefined) this.adminDocs.delete(id);
        else this.adminDocs.set(id, value as AdminDoc);
        break;
      case 'latency': {
        const slash = id.lastIndexOf('/');
        const from = id.slice(0, slash);
        const nodeId = id.slice(slash + 1);
        if (value === undefined) index.deleteSample(from, nodeId);
        else index.setSample(from, nodeId, value as LatencySample);
        return;
      }
      case 'pricing':
        if (id === 'current') this.currentPricing = (value as PricingPolicy | undefined) ?? LIST_PRICES;
        else if (value === undefined) this.scheduledPricing.delete(id.slice('scheduled/'.length));
        else this.scheduledPricing.set(id.slice('scheduled/'.length), value as ScheduledPricing);
        this.pricingState = { current: this.currentPricing, scheduled: [...this.scheduledPricing.values()] };
        return;
      case 'usage':
        if (value !== undefined) for (const listener of this.usageListeners) listener(id);
        return;
      case 'keys':
        if (value === undefined) this.accounts.keys.delete(id);
        else this.accounts.keys.set(id, value as ApiKeyRecord);
        return;
      case 'ledgers':
        this.options.ledgers.apply(id, value as Ledger | undefined, revision);
        return;
      case 'tenants':
        if (value === undefined) this.accounts.tenantsByName.delete(id);
        else this.accounts.tenantsByName.set(id, value as TenantRecord);
        return;
      case 'sessions':
        this.options.sessions.apply(id, value as SessionDoc | undefined, revision);
        return;
      case 'election':
      case 'secrets':
        return;
    }
    this.rebuild(id);
  }

  /** Recomposes the cached record of a node from its nodes/, load/ and admin/ documents. */
  rebuild(nodeId: string): void {
    const { index } = this.options;
    const doc = this.nodeDocs.get(nodeId);
    if (doc === undefined) {
      index.remove(nodeId);
      return;
    }
    const load = this.loadDocs.get(nodeId);
    index.put({
      spec: doc.spec,
      ttlS: doc.ttlS,
      permanent: doc.permanent,
      registeredAtMs: doc.registeredAtMs,
      lastSeenMs: Math.max(doc.registeredAtMs, load?.statusAtMs ?? 0),
      // The lease decides: while the key exists the node is not expired.
      expiresAtMs: Number.POSITIVE_INFINITY,
      status: load?.status,
      statusAtMs: load?.statusAtMs,
      draining: this.adminDocs.get(nodeId)?.draining ?? false,
    });
  }

  forget(nodeId: string): void {
    this.nodeDocs.delete(nodeId);
    this.loadDocs.delete(nodeId);
    this.options.index.remove(nodeId);
    this.options.onNodeGone(nodeId);
  }

  /**
   * Replaces everything with a fresh listing at one revision. A status this replica received
   * but has not flushed is newer than what etcd has, and is kept.
   */
  relisted(kvs: readonly IKeyValue[], revision: number): void {
    // Every node the index holds now (it follows nodeDocs: rebuild and forget keep them equal)
    // is put again or removed below; samples are listed afresh.
    const before = new Set(this.nodeDocs.keys());
    this.nodeDocs.clear();
    this.adminDocs.clear();
    this.revisions.clear();
    this.scheduledPricing.clear();
    this.currentPricing = LIST_PRICES;
    this.pricingState = { current: LIST_PRICES, scheduled: [] };
    this.options.index.clearSamples();
    const localLoads = new Map(this.loadDocs);
    this.loadDocs.clear();
    for (const kv of kvs) this.applyKeyValue(kv, false);
    const sessions = new Set<string>();
    for (const kv of kvs) {
      const parsed = this.options.codec.parseKey(kv.key.toString());
      if (parsed?.kind === 'sessions') sessions.add(parsed.id);
    }
    this.options.sessions.retain(sessions, revision);
    for (const [nodeId, load] of localLoads) {
      const listed = this.loadDocs.get(nodeId);
      if (this.nodeDocs.has(nodeId) && (listed === undefined || listed.statusAtMs < load.statusAtMs)) {
        this.loadDocs.set(nodeId, load);
      }
    }
    for (const nodeId of new Set([...before, ...this.nodeDocs.keys()])) this.rebuild(nodeId);
    this.seenRevision = Math.max(this.seenRevision, revision);
  }
}
