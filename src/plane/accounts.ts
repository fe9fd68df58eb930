// Tenants and API keys, as the control plane manages them: creation (the secret is returned once
// and only its hash stored), revocation, listing, and the operator keys installed at start
// (bootstrap from a secret, demo keys). Validation of names happens at the boundary; limits on how
// many of each the store holds are enforced here.

import { BOOTSTRAP_KEY_ID, generateApiKey, hashApiKey, verifyApiKey } from '../auth/api-keys.js';
import type { Role } from '../auth/identity.js';
import type { Package } from '../core/quota.js';
import type { AccountsStore, ApiKeyRecord, TenantRecord } from '../store/accounts.js';
import type { Clock } from '../store/store.js';

export const DEFAULT_MAX_TENANTS = 10_000;
export const DEFAULT_MAX_API_KEYS = 50_000;

export interface NewApiKey {
  readonly role: Role;
  readonly name: string;
  readonly tenant?: string;
  readonly nodeId?: string;
  readonly expiresAtMs?: number;
}

export type CreateTenantResult =
  | { readonly kind: 'created'; readonly tenant: TenantRecord }
  | { readonly kind: 'exists' }
  | { readonly kind: 'limit'; readonly limit: number };

export type CreateKeyResult =
  | { readonly kind: 'created'; readonly record: ApiKeyRecord; readonly secret: string }
  | { readonly kind: 'unknown_tenant'; readonly tenant: string }
  | { readonly kind: 'limit'; readonly limit: number };

export class Accounts {
  constructor(
    private readonly store: AccountsStore,
    private readonly clock: Clock,
    private readonly limits: { readonly maxTenants: number; readonly maxApiKeys: number } = {
      maxTenants: DEFAULT_MAX_TENANTS,
      maxApiKeys: DEFAULT_MAX_API_KEYS,
    },
  ) {}

  async createTenant(name: string, displayName: string): Promise<CreateTenantResult> {
    if (this.store.tenant(name) !== undefined) return { kind: 'exists' };
    if (this.store.tenants().length >= this.limits.maxTenants)
      return { kind: 'limit', limit: this.limits.maxTenants };
    const tenant = { name, displayName, createdAtMs: this.clock() };
    return (await this.store.createTenant(tenant)) ? { kind: 'created', tenant } : { kind: 'exists' };
  }

  tenant(name: string): TenantRecord | undefined {
    return this.store.tenant(name);
  }

  tenants(): TenantRecord[] {
    return this.store.tenants();
  }

  /** Sets or removes the tenant's package; undefined if there is no such tenant. */
  async setPackage(tenant: string, pkg: Package | undefined): Promise<TenantRecord | undefined> {
    const record = this.store.tenant(tenant);
    if (record === undefined) return undefined;
    const next: TenantRecord = {
      name: record.name,
      displayName: record.displayName,
      createdAtMs: record.createdAtMs,
    };
    const updated = pkg === undefined ? next : { ...next, package: pkg };
    await this.store.putTenant(updated);
    return updated;
  }

  async createApiKey(request: NewApiKey): Promise<CreateKeyResult> {
    if (request.tenant !== undefined && this.store.tenant(request.tenant) === undefined)
      return { kind: 'unknown_tenant', tenant: request.tenant };
    if (this.store.apiKeys().length >= this.limits.maxApiKeys)
      return { kind: 'limit', limit: this.limits.maxApiKeys };
    const { id, key } = generateApiKey();
    const record: ApiKeyRecord = {
      id,
      name: request.name,
      role: request.role,
      ...(request.tenant === undefined ? {} : { tenant: request.tenant }),
      ...(request.nodeId === undefined ? {} : { nodeId: request.nodeId }),
      createdAtMs: this.clock(),
      ...(request.expiresAtMs === undefined ? {} : { expiresAtMs: request.expiresAtMs }),
      ...(await hashApiKey(key)),
    };
    await this.store.putApiKey(record);
    return { kind: 'created', record, secret: key };
  }

  /** Revokes the key (keeping it listed); undefined if there is no such key. Idempotent. */
  async revokeApiKey(id: string): Promise<ApiKeyRecord | undefined> {
    const record = this.store.apiKey(id);
    if (record === undefined || record.revokedAtMs !== undefined) return record;
    const revoked = { ...record, revokedAtMs: this.clock() };
    await this.store.putApiKey(revoked);
    return revoked;
  }

  apiKeys(tenant?: string): ApiKeyRecord[] {
    const keys = this.store.apiKeys();
    return tenant === undefined ? keys : keys.filter((key) => key.tenant === tenant);
  }

  /**
   * Makes `secret` the operator key with id `bootstrap` (for automation: a Kubernetes secret, a
   * CI variable). Leaves the stored key alone when it already verifies, so replicas starting with
   * the same secret do not rewrite it; replaces it (and so revokes the old secret) otherwise.
   */
  async installBootstrapKey(secret: string): Promise<void> {
    const existing = this.store.apiKey(BOOTSTRAP_KEY_ID);
    if (
      existing !== undefined &&
      existing.revokedAtMs === undefined &&
      (await verifyApiKey(secret, existing))
    )
      return;
    await this.store.putApiKey({
      id: BOOTSTRAP_KEY_ID,
      name: 'bootstrap operator key (CPN_BOOTSTRAP_OPERATOR_KEY)',
      role: 'operator',
      createdAtMs: this.clock(),
      ...(await hashApiKey(secret)),
    });
  }
}
