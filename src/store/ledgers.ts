// Where quota ledgers live: one per tenant and period (see core/quota.ts). A change is applied as
// a compare-and-swap: read the ledger, compute the next one, write it only if nobody wrote in
// between, else read again and recompute. So replicas admitting the same tenant at once never
// both spend the same points, and a Release is counted once.

import type { Ledger } from '../core/quota.js';

/** What a change computes from the ledger as read: the next ledger (undefined: no write) and a result. */
export type LedgerChange<T> = (current: Ledger | undefined) => { readonly next?: Ledger; readonly result: T };

export interface LedgerStore {
  /** The ledger as this replica last saw it (from its own writes and, on etcd, the watch). */
  cached(tenant: string, period: string): Ledger | undefined;
  /** Every cached ledger, optionally of one tenant. */
  cachedAll(tenant?: string): Ledger[];
  /**
   * Applies `change` atomically. `change` may run several times (once per conflict) and must be a
   * pure function of the ledger it is given. Resolves once the write is durable.
   */
  update<T>(tenant: string, period: string, change: LedgerChange<T>): Promise<T>;
  /** Told of every ledger this replica learns of, its own writes and other replicas'. */
  onLedgerChanged(listener: (ledger: Ledger) => void): void;
}

export const ledgerKey = (tenant: string, period: string): string => `${tenant}/${period}`;

/** Files ledger `key` under its tenant, so that a tenant's ledgers are found without a scan. */
export function indexLedger(byTenant: Map<string, Set<string>>, tenant: string, key: string): void {
  let keys = byTenant.get(tenant);
  if (keys === undefined) {
    keys = new Set();
    byTenant.set(tenant, keys);
  }
  keys.add(key);
}

/** Ledgers in this process's memory (the embedded store). */
export class MemoryLedgers implements LedgerStore {
  private readonly ledgers = new Map<string, Ledger>();
  private readonly byTenant = new Map<string, Set<string>>();
  private readonly listeners: ((ledger: Ledger) => void)[] = [];

  cached(tenant: string, period: string): Ledger | undefined {
    return this.ledgers.get(ledgerKey(tenant, period));
  }

  cachedAll(tenant?: string): Ledger[] {
    if (tenant === undefined) return [...this.ledgers.values()];
    return [...(this.byTenant.get(tenant) ?? [])].flatMap((key) => this.ledgers.get(key) ?? []);
  }

  async update<T>(tenant: string, period: string, change: LedgerChange<T>): Promise<T> {
    const { next, result } = change(this.cached(tenant, period));
    if (next !== undefined) {
      this.ledgers.set(ledgerKey(tenant, period), next);
      indexLedger(this.byTenant, tenant, ledgerKey(tenant, period));
      for (const listener of this.listeners) listener(next);
    }
    return result;
  }

  onLedgerChanged(listener: (ledger: Ledger) => void): void {
    this.listeners.push(listener);
  }
}
