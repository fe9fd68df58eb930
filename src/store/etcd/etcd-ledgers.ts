// Quota ledgers on etcd: key `ledgers/<tenant>/<period>`, a JSON ledger. An update is an etcd
// transaction that compares the key's mod revision with the one the change was computed from:
// optimistic, so the uncontended path is one round trip (from the watch-fed cache); on conflict the
// ledger is read again and the change recomputed, a bounded number of times.

import type { Etcd3 } from 'etcd3';
import type { Ledger } from '../../core/quota.js';
import { indexLedger, type LedgerChange, type LedgerStore, ledgerKey } from '../ledgers.js';
import { StoreUnavailableError } from '../store.js';

/** After this many conflicts in a row the update gives up (UNAVAILABLE: retry). */
export const MAX_LEDGER_ATTEMPTS = 64;

/** Changes committed in one transaction at most. */
const MAX_BATCH = 256;

interface Queue {
  readonly pending: {
    change: LedgerChange<unknown>;
    resolve: (value: unknown) => void;
    reject: (error: unknown) => void;
  }[];
  running: boolean;
}

interface Cached {
  readonly ledger: Ledger;
  readonly modRevision: number;
}

export interface EtcdLedgersOptions {
  readonly client: Etcd3;
  readonly key: (id: string) => Buffer;
  /** Runs an etcd call, turning unreachability into StoreUnavailableError. */
  readonly call: <T>(what: string, run: () => Promise<T>) => Promise<T>;
  readonly countWrite: () => void;
}

export class EtcdLedgers implements LedgerStore {
  private readonly cache = new Map<string, Cached>();
  private readonly listeners: ((ledger: Ledger) => void)[] = [];
  private readonly queues = new Map<string, Queue>();
  private readonly byTenant = new Map<string, Set<string>>();

  constructor(private readonly options: EtcdLedgersOptions) {}

  cached(tenant: string, period: string): Ledger | undefined {
    return this.cache.get(ledgerKey(tenant, period))?.ledger;
  }

  cachedAll(tenant?: string): Ledger[] {
    if (tenant === undefined) return [...this.cache.values()].map((entry) => entry.ledger);
    return [...(this.byTenant.get(tenant) ?? [])].flatMap((id) => this.cache.get(id)?.ledger ?? []);
  }

  onLedgerChanged(listener: (ledger: Ledger) => void): void {
    this.listeners.push(listener);
  }

  /** A ledger from the watch or a list; older revisions than the cached one are ignored. */
  apply(id: string, ledger: Ledger | undefined, modRevision: number): void {
    const current = this.cache.get(id);
    if (current !== undefined && current.modRevision >= modRevision) return;
    if (ledger === undefined) {
      this.cache.delete(id);
      this.byTenant.get(id.slice(0, id.indexOf('/')))?.delete(id);
      return;
    }
    this.cache.set(id, { ledger, modRevision });
    indexLedger(this.byTenant, ledger.tenant, id);
    for (const listener of this.listeners) listener(ledger);
  }

  /**
   * Changes to one ledger are queued and committed together: one transaction per batch, one batch
   * in flight per ledger on this replica. Concurrent requests of a tenant then cost one etcd round
   * trip between them instead of racing each other into conflicts; conflicts remain only between
   * replicas.
   */
  update<T>(tenant: string, period: string, change: LedgerChange<T>): Promise<T> {
    const id = ledgerKey(tenant, period);
    let queue = this.queues.get(id);
    if (queue === undefined) {
      queue = { pending: [], running: false };
      this.queues.set(id, queue);
    }
    const promise = new Promise<T>((resolve, reject) => {
      queue.pending.push({
        change: change as LedgerChange<unknown>,
        resolve: resolve as (value: unknown) => void,
        reject,
      });
    });
    if (!queue.running) void this.drain(id, tenant, queue);
    return promise;
  }

  private async drain(id: string, tenant: string, queue: Queue): Promise<void> {
    queue.running = true;
    while (queue.pending.length > 0) {
      const batch = queue.pending.splice(0, MAX_BATCH);
      try {
        const results = await this.commit(
          id,
          tenant,
          batch.map((entry) => entry.change),
        );
        batch.forEach((entry, i) => {
          entry.resolve(results[i]);
        });
      } catch (error) {
        for (const entry of batch) entry.reject(error);
      }
    }
    queue.running = false;
    this.queues.delete(id);
  }

  /** Applies `changes` in order to one ledger and writes it in one compare-and-swap. */
  private async commit(
    id: string,
    tenant: string,
    changes: readonly LedgerChange<unknown>[],
  ): Promise<unknown[]> {
    const key = this.options.key(id);
    let base: Cached | undefined = this.cache.get(id);
    for (let attempt = 0; attempt < MAX_LEDGER_ATTEMPTS; attempt += 1) {
      let ledger = base?.ledger;
      let wrote = false;
      const results: unknown[] = [];
      for (const change of changes) {
        const { next, result } = change(ledger);
        if (next !== undefined) {
          ledger = next;
          wrote = true;
        }
        results.push(result);
      }
      // Nothing to write: answers computed from a fresh read stand; answers computed from the
      // cache are confirmed by the comparison below (the watch may be behind).
      if (!wrote && attempt > 0) return results;
      const compare =
        base === undefined
          ? { key, target: 'Create' as const, result: 'Equal' as const, create_revision: 0 }
          : { key, target: 'Mod' as const, result: 'Equal' as const, mod_revision: base.modRevision };
      const written = ledger;
      const response = await this.options.call('update the quota ledger', () =>
        this.options.client.kv.txn({
          compare: [compare],
          success:
            wrote && written !== undefined
              ? [{ request_put: { key, value: Buffer.from(JSON.stringify(written)) } }]
              : [],
          failure: [{ request_range: { key } }],
        }),
      );
      if (response.succeeded) {
        if (wrote && written !== undefined) {
          this.options.countWrite();
          this.apply(id, written, Number(response.header.revision));
        }
        return results;
      }
      const kv = response.responses[0]?.response_range?.kvs[0];
      base =
        kv === undefined
          ? undefined
          : { ledger: JSON.parse(kv.value.toString()) as Ledger, modRevision: Number(kv.mod_revision) };
      if (base !== undefined) this.apply(id, base.ledger, base.modRevision);
    }
    throw new StoreUnavailableError(
      `the quota ledger of tenant ${tenant} changed ${MAX_LEDGER_ATTEMPTS} times while this replica tried to update it`,
    );
  }
}
