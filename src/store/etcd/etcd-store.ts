// The Store on etcd (DESIGN.md §5). etcd holds the registry, leases and what must survive a
// restart; each replica routes from a watch-fed in-memory cache (RegistryIndex).
//
// Split by concept: the key layout (etcd-keys.ts), the watch-fed mirror of documents
// (etcd-mirror.ts), when a status is worth a write (status-flush.ts), what an etcd failure means
// (etcd-errors.ts), node leases across a partition (node-leases.ts), quota ledgers
// (etcd-ledgers.ts) and leader election (etcd-leadership.ts). This file lists, watches, probes and
// writes.
//
// Liveness belongs to etcd: a node's lease is renewed by its status reports (at most every TTL/3
// per replica), and when it lapses etcd deletes the node's keys, which every replica's watch sees.
// Status summaries reach etcd at most every statusFlushMs per node and only on a material change.
// The cache relists when the watch is cancelled (e.g. after compaction), when a probe finds the
// watch behind etcd (a silent stall), and periodically as a backstop.

import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { ConsecutiveBreaker, circuitBreaker, handleWhen, retry } from 'cockatiel';
import { Etcd3, type IKeyValue, type Watcher } from 'etcd3';
import { backoffDelay } from '../../common/backoff.js';
import type { Leadership } from '../../common/leadership.js';
import type { Logger } from '../../common/logger.js';
import { type LatencyModel, type LatencySample, smoothSample } from '../../core/latency.js';
import type { LatLon, NodeRecord, NodeSpec, NodeStatus } from '../../core/model.js';
import { duePricing, type PricingState, type ScheduledPricing } from '../../core/pricing.js';
import type { RoutingView } from '../../core/routing/index.js';
import type { AccountsStore } from '../accounts.js';
import { RegistryIndex } from '../registry-index.js';
import {
  type Clock,
  type LatencyReport,
  type NodeFilter,
  type NodeListing,
  type NodePage,
  type RegisterOptions,
  type StatusOutcome,
  type Store,
  type StoreHealth,
  StoreRejectedError,
  StoreUnavailableError,
  type UsageRecord,
} from '../store.js';
import { isHostFailure, isRefused, isUnreachable } from './etcd-errors.js';
import { KeyCodec, type Kind, prefixEnd } from './etcd-keys.js';
import { EtcdLeadership } from './etcd-leadership.js';
import { EtcdLedgers } from './etcd-ledgers.js';
import { EtcdMirror } from './etcd-mirror.js';
import { EtcdSessions } from './etcd-sessions.js';
import { LeaseRenewer, type LoadDoc, type NodeDoc, UnrenewedLeases } from './node-leases.js';
import { shouldFlush } from './status-flush.js';

export interface EtcdTls {
  /** Absent: the system's root certificates. */
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

export interface EtcdStoreOptions {
  readonly endpoints: readonly string[];
  readonly prefix?: string;
  readonly tls?: EtcdTls;
  /** Deadline of every unary etcd call. */
  readonly callTimeoutMs?: number;
  /** A node's status reaches etcd at most this often (and only on a material change). */
  readonly statusFlushMs?: number;
  /** How often a probe checks that the watch is not behind etcd. */
  readonly probeIntervalMs?: number;
  /** Full relist as a backstop against anything the watch missed. */
  readonly relistIntervalMs?: number;
  readonly clock?: Clock;
  readonly latency: Pick<LatencyModel, 'sampleSmoothing' | 'sampleMaxAgeMs'>;
  readonly regionCentroids?: ReadonlyMap<string, LatLon>;
  /** Latency samples kept at most; past it the least recently updated go, here and in etcd. */
  readonly maxLatencySamples?: number;
  /**
   * How long open waits for etcd to answer (trying again with a growing pause) before it gives
   * up: a replica may start while etcd is starting too, or busy. 0: one try.
   */
  readonly startupWaitMs?: number;
  readonly logger: Logger;
}

export const DEFAULT_ETCD_STARTUP_WAIT_MS = 30_000;
/** open's pauses between tries (see backoffDelay): from 250 ms, growing to 4 s. */
const STARTUP_BACKOFF = { baseMs: 250, maxMs: 4000 } as const;

export interface EtcdStoreStats {
  /** Puts, deletes and transactions sent to etcd. */
  writes: number;
  statusReports: number;
  statusFlushes: number;
  keepalives: number;
  relists: number;
  /** Nodes written again on a new lease after theirs lapsed while they kept reporting (node-leases.ts). */
  revivals: number;
}

/** Keys per page when listing; a node document is a few kB at most. */
const LIST_PAGE = 500;

export class EtcdStore implements Store {
  private readonly client: Etcd3;
  private readonly prefix: string;
  private readonly codec: KeyCodec;
  private readonly clock: Clock;
  private readonly callTimeoutMs: number;
  readonly sessions: EtcdSessions;
  /** One LeaseKeepAlive stream for every node lease this replica renews. */
  private readonly renewer: LeaseRenewer;
  private readonly statusFlushMs: number;
  private readonly index: RegistryIndex;
  private readonly mirror: EtcdMirror;
  private secret: Buffer = Buffer.alloc(0);
  private currentUsageLease:
    | { readonly id: string; readonly grantedAtMs: number; readonly keepMs: number }
    | undefined;
  private usageLeaseGrant: Promise<string> | undefined;
  readonly ledgers: EtcdLedgers;
  /** Last status this replica wrote to etcd, per node. */
  private readonly flushed = new Map<string, LoadDoc>();
  private readonly keptAliveAtMs = new Map<string, number>();
  private readonly unrenewed = new UnrenewedLeases();
  private healing: Promise<void> | undefined;
  private watcher: Watcher | undefined;
  private probe: { revision: number; atMs: number } | undefined;
  private lastConfirmedMs: number;
  private unreachableSinceMs: number | undefined;
  /** When etcd last answered again after being unreachable. */
  private reachableAgainAtMs: number | undefined;
  private resyncing: Promise<void> | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private closed = false;
  readonly stats: EtcdStoreStats = {
    writes: 0,
    statusReports: 0,
    statusFlushes: 0,
    keepalives: 0,
    relists: 0,
    revivals: 0,
  };
  readonly view: RoutingView;

  private constructor(private readonly options: EtcdStoreOptions) {
    this.prefix = options.prefix ?? '/cpn/v1/';
    this.codec = new KeyCodec(this.prefix);
    this.index = new RegistryIndex(options.maxLatencySamples);
    this.view = this.index.view;
    this.clock = options.clock ?? Date.now;
    this.callTimeoutMs = options.callTimeoutMs ?? 2000;
    this.statusFlushMs = options.statusFlushMs ?? 2000;
    this.lastConfirmedMs = this.clock();
    const callTimeoutMs = this.callTimeoutMs;
    this.client = new Etcd3({
      hosts: [...options.endpoints],
      credentials: options.tls
        ? {
            rootCertificate: options.tls.ca as Buffer,
            privateKey: options.tls.key,
            certChain: options.tls.cert,
          }
        : undefined,
      dialTimeout: callTimeoutMs,
      grpcOptions: { 'grpc.max_receive_message_length': 64 * 1024 * 1024 },
      // Unary calls get a deadline; streams (watch, keepalive) must not.
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
      // One retry on another host, not three: writes must fail fast when etcd is gone. Only
      // transport failures count against a host: a refused request (too large, NOSPACE) must not
      // open the breaker and make every healthy write fail "unreachable".
      faultHandling: {
        global: retry(handleWhen(isHostFailure), { maxAttempts: 1 }),
        host: () =>
          circuitBreaker(handleWhen(isHostFailure), {
            halfOpenAfter: Math.min(5000, callTimeoutMs),
            breaker: new ConsecutiveBreaker(3),
          }),
      },
    });
    this.renewer = LeaseRenewer.for(this.client, callTimeoutMs);
    this.ledgers = new EtcdLedgers({
      client: this.client,
      key: (id) => this.key('ledgers', id),
      call: (what, run) => this.call(what, run),
      countWrite: () => {
        this.stats.writes += 1;
      },
    });
    this.sessions = new EtcdSessions({
      client: this.client,
      key: (id) => this.key('sessions', id),
      call: (what, run) => this.call(what, run),
      renewer: this.renewer,
      clock: this.clock,
      countWrite: () => {
        this.stats.writes += 1;
      },
    });
    this.mirror = new EtcdMirror({
      sessions: this.sessions,
      index: this.index,
      codec: this.codec,
      ledgers: this.ledgers,
      logger: options.logger,
      onNodeGone: (nodeId) => this.forgetLeaseState(nodeId),
    });
  }

  /** Connects, loads the registry and starts watching. Fails if etcd cannot be reached. */
  static async open(options: EtcdStoreOptions): Promise<EtcdStore> {
    const store = new EtcdStore(options);
    const waitMs = options.startupWaitMs ?? DEFAULT_ETCD_STARTUP_WAIT_MS;
    const started = performance.now();
    for (let failures = 1; ; failures += 1) {
      try {
        await store.resync();
        store.secret = await store.loadSecret();
        break;
      } catch (error) {
        const waitedMs = performance.now() - started;
        const pauseMs = backoffDelay(failures, STARTUP_BACKOFF);
        const unreachable = error instanceof StoreUnavailableError || isUnreachable(error);
        if (unreachable && waitedMs + pauseMs <= waitMs) {
          options.logger.warn('etcd not answering at start-up; trying again', {
            err: (error as Error).message,
            retryInMs: Math.round(pauseMs),
            waitedMs: Math.round(waitedMs),
          });
          await new Promise((resolve) => setTimeout(resolve, pauseMs));
          continue;
        }
        store.client.close();
        if (unreachable && waitMs > 0)
          throw new StoreUnavailableError(
            `${(error as Error).message} (waited ${(waitedMs / 1000).toFixed(1)} s at start-up; --etcd-startup-wait-ms)`,
            error instanceof StoreUnavailableError ? error.sinceMs : undefined,
          );
        throw error;
      }
    }
    store.every(options.probeIntervalMs ?? 2000, () => store.probeWatch());
    store.every(options.relistIntervalMs ?? 60_000, () => store.resync());
    return store;
  }

  /** The cluster's secret for reservation ids: created by the first replica, read by the others. */
  reservationSecret(): Buffer {
    return this.secret;
  }

  private async loadSecret(): Promise<Buffer> {
    const key = this.key('secrets', 'reservation');
    const response = await this.call('read the cluster secret', () =>
      this.client.kv.txn({
        compare: [{ key, target: 'Create', result: 'Equal', create_revision: 0 }],
        success: [{ request_put: { key, value: Buffer.from(randomBytes(32).toString('base64')) } }],
        failure: [{ request_range: { key } }],
      }),
    );
    if (response.succeeded) return this.loadSecret();
    const value = response.responses[0]?.response_range?.kvs[0]?.value;
    if (value === undefined) throw new Error('the cluster secret vanished while it was read');
    return Buffer.from(value.toString(), 'base64');
  }

  /** Milliseconds since the cache last confirmed it is current with etcd. */
  stalenessMs(): number {
    return Math.max(0, this.clock() - this.lastConfirmedMs);
  }

  /** When etcd became unreachable, if it is now. */
  unreachableSince(): number | undefined {
    return this.unreachableSinceMs;
  }

  pricing(): PricingState {
    return this.mirror.pricingState;
  }

  async schedulePricing(change: ScheduledPricing): Promise<void> {
    const response = await this.call('schedule a price change', () =>
      this.client.kv.put({
        key: this.key('pricing', `scheduled/${change.id}`),
        value: Buffer.from(JSON.stringify(change)),
      }),
    );
    this.stats.writes += 1;
    this.mirror.apply('pricing', `scheduled/${change.id}`, change, Number(response.header.revision));
  }

  async cancelPricing(id: string): Promise<boolean> {
    const response = await this.call('cancel a price change', () =>
      this.client.kv.deleteRange({ key: this.key('pricing', `scheduled/${id}`) }),
    );
    this.stats.writes += 1;
    this.mirror.apply('pricing', `scheduled/${id}`, undefined, Number(response.header.revision));
    return Number(response.deleted) > 0;
  }

  async foldDuePricing(nowMs: number): Promise<number> {
    const due = duePricing(this.mirror.pricingState, nowMs);
    const latest = due[due.length - 1];
    if (latest === undefined) return 0;
    const response = await this.call('apply due price changes', () =>
      this.client.kv.txn({
        success: [
          {
            request_put: {
              key: this.key('pricing', 'current'),
              value: Buffer.from(JSON.stringify(latest.policy)),
            },
          },
          ...due.map((change) => ({
            request_delete_range: { key: this.key('pricing', `scheduled/${change.id}`) },
          })),
        ],
      }),
    );
    this.stats.writes += 1;
    const revision = Number(response.header.revision);
    this.mirror.apply('pricing', 'current', latest.policy, revision);
    for (const change of due) this.mirror.apply('pricing', `scheduled/${change.id}`, undefined, revision);
    return due.length;
  }

  leadership(name: string, ttlS: number): Leadership {
    return new EtcdLeadership({
      client: this.client,
      key: `${this.prefix}election/${name}`,
      identity: `${hostname()}:${process.pid}`,
      ttlS,
      logger: this.options.logger,
      clock: this.clock,
    });
  }

  health(): StoreHealth {
    return {
      kind: 'etcd',
      reachable: this.unreachableSinceMs === undefined,
      stalenessMs: this.stalenessMs(),
      unreachableSinceMs: this.unreachableSinceMs,
    };
  }

  async registerNode(
    spec: NodeSpec,
    options: RegisterOptions,
  ): Promise<{ node: NodeRecord; created: boolean }> {
    const previous = this.mirror.nodeDocs.get(spec.id) ?? (await this.fetchDoc<NodeDoc>('nodes', spec.id));
    const leaseId = options.permanent
      ? '0'
      : (await this.call('grant a lease', () => this.client.leaseClient.leaseGrant({ TTL: options.ttlS })))
          .ID;
    const doc: NodeDoc = {
      spec,
      ttlS: options.ttlS,
      permanent: options.permanent,
      registeredAtMs: this.clock(),
      leaseId,
    };
    const response = await this.call('register the node', () =>
      this.client.kv.txn({
        success: [
          {
            request_put: {
              key: this.key('nodes', spec.id),
              value: Buffer.from(JSON.stringify(doc)),
              lease: leaseId,
            },
          },
          { request_delete_range: { key: this.key('load', spec.id) } },
        ],
      }),
    ).catch(async (error: unknown) => {
      // Nothing points at the new lease: give it back rather than let it run out.
      if (leaseId !== '0') await this.revoke(leaseId);
      throw error;
    });
    this.stats.writes += 1;
    if (previous !== undefined && previous.leaseId !== '0' && previous.leaseId !== leaseId) {
      await this.revoke(previous.leaseId);
    }
    const revision = Number(response.header.revision);
    this.mirror.apply('nodes', spec.id, doc, revision);
    this.mirror.apply('load', spec.id, undefined, revision);
    this.keptAliveAtMs.set(spec.id, this.clock());
    this.flushed.delete(spec.id);
    return { node: this.index.get(spec.id) as NodeRecord, created: previous === undefined };
  }

  async reportStatus(status: NodeStatus): Promise<StatusOutcome> {
    this.stats.statusReports += 1;
    const nowMs = this.clock();
    const load: LoadDoc = { status, statusAtMs: nowMs };
    // Gone from the cache: if it lapsed while this replica could not renew it, write it again
    // (without asking etcd first, which may still be refusing calls as it comes back).
    const revived = this.mirror.nodeDocs.has(status.nodeId)
      ? undefined
      : this.unrenewed.live(status.nodeId, this.owedAsOf(nowMs));
    let doc =
      this.mirror.nodeDocs.get(status.nodeId) ??
      revived?.doc ??
      (await this.fetchDoc<NodeDoc>('nodes', status.nodeId));
    if (doc === undefined) return { kind: 'unknown_node' };
    if (revived !== undefined) {
      this.unrenewed.note(revived.doc, load);
      // Still unreachable (undefined): routable here on the strength of its reports until etcd answers.
      doc = (await this.revive(status.nodeId)) ?? revived.doc;
    } else if (
      !doc.permanent &&
      nowMs - (this.keptAliveAtMs.get(status.nodeId) ?? 0) >= (doc.ttlS * 1000) / 3
    ) {
      // Known unreachable: no keepalive to wait for; the probe notices when etcd is back.
      const ttl = this.unreachableSinceMs === undefined ? await this.keepAlive(doc.leaseId) : undefined;
      if (ttl === undefined) {
        // etcd is unreachable: the report counts here, and the lease is renewed (or the node
        // written again on a new one) once etcd is back (node-leases.ts).
        this.unrenewed.note(doc, load);
      } else if (ttl <= 0) {
        // Lapsed. Still owed if it reported through the outage — or, whatever this replica noted,
        // if an outage ended within its TTL: its lease lapsed while etcd could not be told, and it
        // is reporting now.
        const outageJustEnded =
          this.reachableAgainAtMs !== undefined && nowMs - this.reachableAgainAtMs <= doc.ttlS * 1000;
        if (this.unrenewed.live(status.nodeId, this.owedAsOf(nowMs)) === undefined && !outageJustEnded) {
          this.mirror.forget(status.nodeId);
          return { kind: 'expired', expiredAtMs: nowMs };
        }
        this.unrenewed.note(doc, load);
        doc = (await this.revive(status.nodeId)) ?? doc;
      } else {
        this.keptAliveAtMs.set(status.nodeId, nowMs);
        this.unrenewed.settled(status.nodeId);
      }
    } else if (this.unrenewed.live(status.nodeId, this.owedAsOf(nowMs)) !== undefined) {
      this.unrenewed.note(doc, load);
    }
    // A document read from etcd (or kept through an outage) ahead of the watch counts now.
    if (!this.mirror.nodeDocs.has(status.nodeId)) this.mirror.nodeDocs.set(status.nodeId, doc);
    this.mirror.loadDocs.set(status.nodeId, load);
    this.mirror.rebuild(status.nodeId);
    // The record as this report left it: the watch may remove the node while the flush is away
    // (its lease lapsed), and the next report revives it.
    const node = this.index.get(status.nodeId) as NodeRecord;
    if (shouldFlush(doc.spec, this.flushed.get(status.nodeId), load, this.statusFlushMs)) {
      const leaseId = doc.leaseId;
      try {
        await this.call('flush the status', () =>
          this.client.kv.put({
            key: this.key('load', status.nodeId),
            value: Buffer.from(JSON.stringify(load)),
            lease: leaseId,
          }),
        );
        this.stats.writes += 1;
        this.stats.statusFlushes += 1;
        this.flushed.set(status.nodeId, load);
      } catch (error) {
        // Unreachable: kept locally and flushed later. A lease that lapsed since the keepalive:
        // the next report revives the node.
        if (!(error instanceof StoreUnavailableError) && !/lease not found/i.test(String(error))) throw error;
      }
    }
    return { kind: 'accepted', node };
  }

  /**
   * Writes a node that reported while its lease could not be renewed, and lapsed, again on a new
   * lease with its last status (node-leases.ts). Resolves with the document now in etcd, or
   * undefined if etcd is unreachable (the report still counts locally; a later one tries again).
   */
  private async revive(nodeId: string): Promise<NodeDoc | undefined> {
    const entry = this.unrenewed.live(nodeId, this.owedAsOf(this.clock()));
    if (entry === undefined) return undefined;
    try {
      const leaseId = (
        await this.call('grant a lease', () => this.client.leaseClient.leaseGrant({ TTL: entry.doc.ttlS }))
      ).ID;
      const doc: NodeDoc = { ...entry.doc, leaseId };
      const key = this.key('nodes', nodeId);
      const response = await this.call('write the node again', () =>
        this.client.kv.txn({
          compare: [{ key, target: 'Create', result: 'Equal', create_revision: 0 }],
          success: [
            { request_put: { key, value: Buffer.from(JSON.stringify(doc)), lease: leaseId } },
            {
              request_put: {
                key: this.key('load', nodeId),
                value: Buffer.from(JSON.stringify(entry.load)),
                lease: leaseId,
              },
            },
          ],
          failure: [{ request_range: { key } }],
        }),
      );
      this.stats.writes += 1;
      const revision = Number(response.header.revision);
      if (!response.succeeded) {
        await this.revoke(leaseId);
        const kv = response.responses[0]?.response_range?.kvs[0];
        const existing = kv === undefined ? undefined : (JSON.parse(kv.value.toString()) as NodeDoc);
        if (existing !== undefined && existing.leaseId === entry.doc.leaseId && entry.doc.leaseId !== '0') {
          // Still the document on the lapsed lease: etcd said the lease is gone but has not yet
          // deleted its keys. Keep the claim; the next report writes the node again.
          return entry.doc;
        }
        // Another replica (or a re-registration) wrote it first: that one stands.
        this.unrenewed.settled(nodeId);
        if (kv === undefined) return undefined;
        this.mirror.applyKeyValue(kv, false);
        return this.mirror.nodeDocs.get(nodeId);
      }
      this.unrenewed.settled(nodeId);
      this.stats.revivals += 1;
      this.options.logger.info('node written again on a new lease after etcd was unreachable', {
        node: nodeId,
      });
      this.mirror.apply('nodes', nodeId, doc, revision);
      this.mirror.apply('load', nodeId, entry.load, revision);
      this.keptAliveAtMs.set(nodeId, this.clock());
      this.flushed.set(nodeId, entry.load);
      return doc;
    } catch (error) {
      if (error instanceof StoreUnavailableError) return undefined;
      throw error;
    }
  }

  /**
   * The moment a node's last unrenewed report is measured against: when etcd answered again (a
   * node that reported within its TTL of that moment kept its claim through the outage, however
   * slowly its next report arrives), or now while etcd is still away.
   */
  private owedAsOf(nowMs: number): number {
    return this.unreachableSinceMs === undefined && this.reachableAgainAtMs !== undefined
      ? Math.min(nowMs, this.reachableAgainAtMs)
      : nowMs;
  }

  /** Once etcd is reachable again: renews every lease that reports could not, reviving lapsed ones. */
  private healLeases(): Promise<void> {
    this.healing ??= (async () => {
      for (const nodeId of this.unrenewed.nodeIds()) {
        if (this.closed || this.unreachableSinceMs !== undefined) return;
        const entry = this.unrenewed.live(nodeId, this.owedAsOf(this.clock()));
        if (entry === undefined) continue;
        const current = this.mirror.nodeDocs.get(nodeId);
        const ttl = current === undefined || current.permanent ? 0 : await this.keepAlive(current.leaseId);
        if (ttl === undefined) return;
        if (current?.permanent) this.unrenewed.settled(nodeId);
        else if (ttl > 0) {
          this.keptAliveAtMs.set(nodeId, this.clock());
          this.unrenewed.settled(nodeId);
        } else await this.revive(nodeId);
      }
    })()
      .catch((error: Error) =>
        this.options.logger.warn('could not renew node leases', { err: error.message }),
      )
      .finally(() => {
        this.healing = undefined;
      });
    return this.healing;
  }

  async deregisterNode(nodeId: string): Promise<boolean> {
    const doc = this.mirror.nodeDocs.get(nodeId) ?? (await this.fetchDoc<NodeDoc>('nodes', nodeId));
    if (doc === undefined) return false;
    const response = await this.call('deregister the node', () =>
      this.client.kv.txn({
        success: (['nodes', 'load', 'admin'] as const).map((kind) => ({
          request_delete_range: { key: this.key(kind, nodeId) },
        })),
      }),
    );
    this.stats.writes += 1;
    if (doc.leaseId !== '0') await this.revoke(doc.leaseId);
    const revision = Number(response.header.revision);
    for (const kind of ['nodes', 'load', 'admin'] as const)
      this.mirror.apply(kind, nodeId, undefined, revision);
    return true;
  }

  async setDraining(nodeId: string, draining: boolean): Promise<NodeRecord | undefined> {
    const doc = this.mirror.nodeDocs.get(nodeId) ?? (await this.fetchDoc<NodeDoc>('nodes', nodeId));
    if (doc === undefined) return undefined;
    const key = this.key('admin', nodeId);
    const response = await this.call(draining ? 'drain the node' : 'undrain the node', async () =>
      draining
        ? await this.client.kv.put({ key, value: Buffer.from(JSON.stringify({ draining: true })) })
        : await this.client.kv.deleteRange({ key }),
    );
    this.stats.writes += 1;
    this.mirror.apply(
      'admin',
      nodeId,
      draining ? { draining: true } : undefined,
      Number(response.header.revision),
    );
    return this.index.get(nodeId);
  }

  getNode(nodeId: string): NodeRecord | undefined {
    return this.index.get(nodeId);
  }

  listNodes(filter: NodeFilter): NodeRecord[] {
    return this.index.list(filter);
  }

  listNodePage(filter: NodeFilter, page: NodePage): NodeListing {
    return this.index.page(filter, page);
  }

  latencySources(): number {
    return this.index.sampleSources;
  }

  async reportLatency(reports: readonly LatencyReport[]): Promise<number> {
    const nowMs = this.clock();
    const puts: { from: string; nodeId: string; sample: LatencySample }[] = [];
    const evicted = new Map<string, [string, string]>();
    for (const { from, nodeId, rttMs } of reports) {
      if (this.index.get(nodeId) === undefined) continue;
      const sample = smoothSample(this.index.getSample(from, nodeId), rttMs, nowMs, this.options.latency);
      for (const pair of this.index.setSample(from, nodeId, sample))
        evicted.set(`${pair[0]}/${pair[1]}`, pair);
      puts.push({ from, nodeId, sample });
    }
    // Samples past the ceiling leave etcd too (never one this call writes: a key once per txn).
    for (const { from, nodeId } of puts) evicted.delete(`${from}/${nodeId}`);
    const deletes = [...evicted.keys()].map((id) => ({
      request_delete_range: { key: this.key('latency', id) },
    }));
    for (let start = 0; start < deletes.length; start += 100) {
      await this.call('remove evicted latency samples', () =>
        this.client.kv.txn({ success: deletes.slice(start, start + 100) }),
      );
      this.stats.writes += 1;
    }
    // etcd allows 128 operations per transaction.
    for (let start = 0; start < puts.length; start += 100) {
      const batch = puts.slice(start, start + 100);
      const response = await this.call('store latency samples', () =>
        this.client.kv.txn({
          success: batch.map(({ from, nodeId, sample }) => ({
            request_put: {
              key: this.key('latency', `${from}/${nodeId}`),
              value: Buffer.from(JSON.stringify(sample)),
            },
          })),
        }),
      );
      this.stats.writes += 1;
      // Record the revision, so that the watch echo of an earlier put cannot undo this one.
      const revision = Number(response.header.revision);
      for (const { from, nodeId, sample } of batch)
        this.mirror.apply('latency', `${from}/${nodeId}`, sample, revision);
    }
    return puts.length;
  }

  async recordUsage(record: UsageRecord, keepMs: number): Promise<boolean> {
    const key = this.key('usage', record.reservationId);
    const write = async () => {
      const lease = await this.usageLease(keepMs);
      return this.call('record usage', () =>
        this.client.kv.txn({
          compare: [{ key, target: 'Create', result: 'Equal', create_revision: 0 }],
          success: [{ request_put: { key, value: Buffer.from(JSON.stringify(record)), lease } }],
        }),
      );
    };
    let response: Awaited<ReturnType<typeof write>>;
    try {
      response = await write();
    } catch (error) {
      // The lease ended sooner than this replica's clock said (etcd keeps time): take a new one.
      if (!/lease not found/.test(String((error as Error).message))) throw error;
      this.currentUsageLease = undefined;
      response = await write();
    }
    this.stats.writes += 1;
    return response.succeeded;
  }

  /**
   * The lease usage records are written on: one lease of twice `keepMs`, replaced once it is
   * `keepMs` old, so every record lives between `keepMs` and twice that and then goes with its
   * lease. Never kept alive: one grant per `keepMs`, no keepalive traffic.
   */
  private async usageLease(keepMs: number): Promise<string> {
    const nowMs = this.clock();
    const current = this.currentUsageLease;
    if (current !== undefined && current.keepMs === keepMs && nowMs - current.grantedAtMs < keepMs)
      return current.id;
    // One grant at a time: concurrent Releases wait for it rather than each granting a lease.
    this.usageLeaseGrant ??= this.call('grant the usage lease', () =>
      this.client.leaseClient.leaseGrant({ TTL: Math.ceil((2 * keepMs) / 1000) }),
    )
      .then((granted) => {
        this.currentUsageLease = { id: granted.ID, grantedAtMs: nowMs, keepMs };
        return granted.ID;
      })
      .finally(() => {
        this.usageLeaseGrant = undefined;
      });
    return this.usageLeaseGrant;
  }

  onUsageRecorded(listener: (reservationId: string) => void): void {
    this.mirror.usageListeners.push(listener);
  }

  /** Usage records in etcd, oldest reservation first (read straight from etcd). */
  async usageRecords(): Promise<UsageRecord[]> {
    const start = Buffer.from(this.key('usage', ''));
    const response = await this.call('read usage', () =>
      this.client.kv.range({ key: start, range_end: prefixEnd(start) }),
    );
    return response.kvs
      .sort((a, b) => Number(a.create_revision) - Number(b.create_revision))
      .map((kv) => JSON.parse(kv.value.toString()) as UsageRecord);
  }

  /** Tenants and keys: read from the watch-fed cache, written to etcd first (read-your-writes). */
  readonly accounts: AccountsStore = {
    apiKey: (id) => this.mirror.accounts.apiKey(id),
    apiKeys: () => this.mirror.accounts.apiKeys(),
    tenant: (name) => this.mirror.accounts.tenant(name),
    tenants: () => this.mirror.accounts.tenants(),
    putApiKey: async (record) => {
      const response = await this.call('store the API key', () =>
        this.client.kv.put({ key: this.key('keys', record.id), value: Buffer.from(JSON.stringify(record)) }),
      );
      this.stats.writes += 1;
      this.mirror.apply('keys', record.id, record, Number(response.header.revision));
    },
    putTenant: async (record) => {
      const response = await this.call('store the tenant', () =>
        this.client.kv.put({
          key: this.key('tenants', record.name),
          value: Buffer.from(JSON.stringify(record)),
        }),
      );
      this.stats.writes += 1;
      this.mirror.apply('tenants', record.name, record, Number(response.header.revision));
    },
    createTenant: async (record) => {
      const key = this.key('tenants', record.name);
      const response = await this.call('create the tenant', () =>
        this.client.kv.txn({
          compare: [{ key, target: 'Create', result: 'Equal', create_revision: 0 }],
          success: [{ request_put: { key, value: Buffer.from(JSON.stringify(record)) } }],
        }),
      );
      this.stats.writes += 1;
      if (response.succeeded)
        this.mirror.apply('tenants', record.name, record, Number(response.header.revision));
      return response.succeeded;
    },
  };

  regionCentroids(): ReadonlyMap<string, LatLon> {
    return this.options.regionCentroids ?? new Map();
  }

  async sweep(_graceMs: number): Promise<{ removedNodes: string[]; removedSamples: number }> {
    // Nodes expire with their leases; only stale latency samples need removing.
    const nowMs = this.clock();
    const stale = [...this.index.allSamples()].filter(
      ([, , sample]) => nowMs - sample.updatedAtMs > this.options.latency.sampleMaxAgeMs,
    );
    for (let start = 0; start < stale.length; start += 100) {
      const batch = stale.slice(start, start + 100);
      await this.call('remove stale latency samples', () =>
        this.client.kv.txn({
          success: batch.map(([from, nodeId]) => ({
            request_delete_range: { key: this.key('latency', `${from}/${nodeId}`) },
          })),
        }),
      );
      this.stats.writes += 1;
      for (const [from, nodeId] of batch) this.index.deleteSample(from, nodeId);
    }
    return { removedNodes: [], removedSamples: stale.length };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const timer of this.timers) clearInterval(timer);
    await this.watcher?.cancel().catch(() => undefined);
    this.renewer.close();
    this.client.close();
  }

  // ---- cache maintenance ------------------------------------------------------------------

  /** Lists everything under the prefix at revision R and watches from R + 1. Idempotent while running. */
  resync(): Promise<void> {
    this.resyncing ??= this.doResync().finally(() => {
      this.resyncing = undefined;
    });
    return this.resyncing;
  }

  private async doResync(): Promise<void> {
    const listedAtMs = this.clock();
    const { kvs, revision } = await this.listAll();
    this.stats.relists += 1;
    this.mirror.relisted(kvs, revision);
    this.confirm(listedAtMs);
    await this.watchFrom(revision + 1);
  }

  /** Every key under the prefix at one revision, read in pages so no response grows unbounded. */
  private async listAll(): Promise<{ kvs: IKeyValue[]; revision: number }> {
    const end = prefixEnd(Buffer.from(this.prefix));
    const kvs: IKeyValue[] = [];
    let from = Buffer.from(this.prefix);
    let revision: number | undefined;
    for (;;) {
      const page = await this.call('list the registry', () =>
        this.client.kv.range({ key: from, range_end: end, limit: LIST_PAGE, revision: revision ?? 0 }),
      );
      revision ??= Number(page.header.revision);
      kvs.push(...page.kvs);
      const last = page.kvs[page.kvs.length - 1];
      if (!page.more || last === undefined) return { kvs, revision };
      from = Buffer.concat([last.key, Buffer.from([0])]);
    }
  }

  private async watchFrom(revision: number): Promise<void> {
    const previous = this.watcher;
    this.watcher = undefined;
    await previous?.cancel().catch(() => undefined);
    if (this.closed) return;
    const watcher = await this.client.watch().prefix(this.prefix).startRevision(String(revision)).create();
    watcher.on('put', (kv) => this.mirror.applyKeyValue(kv, false));
    watcher.on('delete', (kv) => this.mirror.applyKeyValue(kv, true));
    watcher.on('data', (response) => {
      this.mirror.seenRevision = Math.max(this.mirror.seenRevision, Number(response.header.revision));
    });
    watcher.on('error', (error) => {
      // Cancelled by etcd, e.g. because the revision was compacted: start over from a fresh list.
      this.options.logger.warn('etcd watch cancelled; relisting', { err: error.message });
      if (this.watcher === watcher) this.resync().catch(() => undefined);
    });
    this.watcher = watcher;
  }

  /**
   * Detects a silent watch stall: the newest key under the prefix has a revision the watch has
   * not delivered even one probe interval later. Also measures reachability and staleness.
   */
  private async probeWatch(): Promise<void> {
    const start = Buffer.from(this.prefix);
    const probedAtMs = this.clock();
    const response = await this.call('probe the registry', () =>
      this.client.kv.range({
        key: start,
        range_end: prefixEnd(start),
        sort_target: 'Mod',
        sort_order: 'Descend',
        limit: 1,
        keys_only: true,
      }),
    );
    const newest = Number(response.kvs[0]?.mod_revision ?? 0);
    if (this.mirror.seenRevision >= newest) {
      this.confirm(probedAtMs);
      this.probe = undefined;
      return;
    }
    if (this.probe !== undefined && this.mirror.seenRevision < this.probe.revision) {
      this.options.logger.warn('etcd watch is behind; relisting', { seen: this.mirror.seenRevision, newest });
      this.probe = undefined;
      await this.resync();
      return;
    }
    this.probe ??= { revision: newest, atMs: probedAtMs };
  }

  private confirm(atMs: number): void {
    this.lastConfirmedMs = Math.max(this.lastConfirmedMs, atMs);
  }

  /** A node left the registry: its lease bookkeeping goes too. */
  private forgetLeaseState(nodeId: string): void {
    this.flushed.delete(nodeId);
    this.keptAliveAtMs.delete(nodeId);
  }

  // ---- etcd calls -------------------------------------------------------------------------

  private key(kind: Kind, id: string): Buffer {
    return this.codec.key(kind, id);
  }

  private async fetchDoc<T>(kind: Kind, id: string): Promise<T | undefined> {
    const response = await this.call('read the registry', () =>
      this.client.kv.range({ key: this.key(kind, id) }),
    );
    const kv = response.kvs[0];
    return kv === undefined ? undefined : (JSON.parse(kv.value.toString()) as T);
  }

  /** Renews a lease once; returns its remaining TTL (≤ 0: expired), or undefined if etcd is unreachable. */
  private async keepAlive(leaseId: string): Promise<number | undefined> {
    try {
      const ttl = await this.call('renew the node lease', () => this.renewer.renew(leaseId));
      this.stats.keepalives += 1;
      return ttl;
    } catch (error) {
      if (error instanceof StoreUnavailableError) return undefined;
      throw error;
    }
  }

  private async revoke(leaseId: string): Promise<void> {
    try {
      await this.client.leaseClient.leaseRevoke({ ID: leaseId });
    } catch {
      // Already expired or revoked: nothing is attached to it any more.
    }
  }

  /** Runs an etcd call; any failure to reach etcd becomes StoreUnavailableError. */
  private async call<T>(what: string, run: () => Promise<T>): Promise<T> {
    try {
      const result = await run();
      if (this.unreachableSinceMs !== undefined) {
        this.options.logger.info('etcd reachable again', {
          unreachableForMs: this.clock() - this.unreachableSinceMs,
        });
        this.unreachableSinceMs = undefined;
        this.reachableAgainAtMs = this.clock();
        if (this.unrenewed.size > 0) void this.healLeases();
      }
      return result;
    } catch (error) {
      const message = (error as Error)?.message ?? String(error);
      // etcd refused the request itself (too large, out of space): not an outage, and retrying
      // will not help. Said as such, for every write.
      if (isRefused(error)) throw new StoreRejectedError(`etcd refused to ${what}: ${message}`);
      if (!isUnreachable(error)) throw error;
      if (this.unreachableSinceMs === undefined) {
        this.unreachableSinceMs = this.clock();
        this.options.logger.warn('etcd unreachable', { err: message });
      }
      throw new StoreUnavailableError(
        `etcd is unreachable (${this.options.endpoints.join(',')}): could not ${what}: ${message}`,
        this.unreachableSinceMs,
      );
    }
  }

  private every(intervalMs: number, run: () => Promise<void>): void {
    const timer = setInterval(() => {
      run().catch(() => undefined);
    }, intervalMs);
    timer.unref();
    this.timers.push(timer);
  }
}
