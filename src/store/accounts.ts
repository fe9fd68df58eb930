// The accounts part of the store: tenants and API keys. Reads are synchronous (every RPC checks
// its caller's key, so they come from memory — on etcd a watch-fed cache); writes reach the
// backend before they resolve. A revoked key stays listed with its revocation time.

import type { KeyHash } from '../auth/api-keys.js';
import type { Role } from '../auth/identity.js';
import type { Package } from '../core/quota.js';

export interface ApiKeyRecord extends KeyHash {
  readonly id: string;
  /** Free text for people: who holds the key, what for. */
  readonly name: string;
  readonly role: Role;
  /** Set for client keys: every Route with the key is this tenant's. */
  readonly tenant?: string;
  /** Set for agent keys: the one node the key may speak for. */
  readonly nodeId?: string;
  readonly createdAtMs: number;
  readonly expiresAtMs?: number;
  readonly revokedAtMs?: number;
}

export interface TenantRecord {
  readonly name: string;
  readonly displayName: string;
  readonly createdAtMs: number;
  /** The token package the tenant bought; without one its routes are unmetered. */
  readonly package?: Package;
}

export interface AccountsStore {
  apiKey(id: string): ApiKeyRecord | undefined;
  /** Every key, revoked ones included, by id. */
  apiKeys(): ApiKeyRecord[];
  /** Creates or replaces the key with `record.id`. */
  putApiKey(record: ApiKeyRecord): Promise<void>;
  tenant(name: string): TenantRecord | undefined;
  /** Every tenant, by name. */
  tenants(): TenantRecord[];
  /** Creates the tenant; false (and nothing written) when one of that name exists. */
  createTenant(record: TenantRecord): Promise<boolean>;
  /** Replaces an existing tenant's record (its package). */
  putTenant(record: TenantRecord): Promise<void>;
}

/** The in-memory accounts: the memory store's, and the etcd store's watch-fed cache. */
export class AccountsCache {
  readonly keys = new Map<string, ApiKeyRecord>();
  readonly tenantsByName = new Map<string, TenantRecord>();

  apiKey(id: string): ApiKeyRecord | undefined {
    return this.keys.get(id);
  }

  apiKeys(): ApiKeyRecord[] {
    return [...this.keys.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  tenant(name: string): TenantRecord | undefined {
    return this.tenantsByName.get(name);
  }

  tenants(): TenantRecord[] {
    return [...this.tenantsByName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
}

/** Accounts held in memory only (the embedded store): lost on restart. */
export class MemoryAccounts extends AccountsCache implements AccountsStore {
  async putApiKey(record: ApiKeyRecord): Promise<void> {
    this.keys.set(record.id, record);
  }

  async createTenant(record: TenantRecord): Promise<boolean> {
    if (this.tenantsByName.has(record.name)) return false;
    this.tenantsByName.set(record.name, record);
    return true;
  }

  async putTenant(record: TenantRecord): Promise<void> {
    this.tenantsByName.set(record.name, record);
  }
}
