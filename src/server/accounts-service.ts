// gRPC adapter for Accounts (tenants and API keys): validate → control plane → convert. A client
// may read its own tenant; everything else is for operators (see access.ts).

import { status } from '@grpc/grpc-js';
import { ROLES, type Role } from '../auth/identity.js';
import { freePoints, periodAt } from '../core/quota.js';
import { type AccountsServer, type ApiKey, Role as ProtoRole, type Tenant } from '../gen/cpn/v1/accounts.js';
import type { NewApiKey } from '../plane/accounts.js';
import type { ControlPlane } from '../plane/control-plane.js';
import type { ApiKeyRecord, TenantRecord } from '../store/accounts.js';
import { tenantFor } from './access.js';
import { ApiError, invalidArgument, notFound } from './errors.js';
import { packageToProto, toPackage, usageLinesToProto } from './package-convert.js';
import { type RpcContext, unaryMethods } from './rpc.js';
import type { EventSink } from './services.js';
import { checkNodeId, checkTenant, optionalTenant } from './validate.js';

const MAX_LABEL_CHARS = 128;
const LABEL_PATTERN = /^[\x20-\x7e]*$/;
const KEY_ID_PATTERN = /^(?:[0-9a-f]{16}|bootstrap)$/;
const MAX_KEY_LIFETIME_MS = 10 * 366 * 24 * 3600 * 1000;

export const ROLE_TO_PROTO: Readonly<Record<Role, ProtoRole>> = {
  operator: ProtoRole.ROLE_OPERATOR,
  agent: ProtoRole.ROLE_AGENT,
  client: ProtoRole.ROLE_CLIENT,
  planner: ProtoRole.ROLE_PLANNER,
};

function checkLabel(field: string, value: string): string {
  if (value.length > MAX_LABEL_CHARS || !LABEL_PATTERN.test(value))
    throw invalidArgument(`${field} must be printable ASCII, at most ${MAX_LABEL_CHARS} characters`);
  return value;
}

function toRole(value: ProtoRole): Role {
  const role = ROLES.find((name) => ROLE_TO_PROTO[name] === value);
  if (role === undefined)
    throw invalidArgument(
      `role must be one of ${ROLES.map((r) => `ROLE_${r.toUpperCase()}`).join(', ')}, got ${value}`,
    );
  return role;
}

function checkKeyId(value: string): string {
  if (!KEY_ID_PATTERN.test(value))
    throw invalidArgument('id must be a key id: 16 hex characters (the part after cpn_), or "bootstrap"');
  return value;
}

function toNewApiKey(
  request: { role: ProtoRole; tenant: string; nodeId: string; name: string; expiresAt?: Date | undefined },
  nowMs: number,
): NewApiKey {
  const role = toRole(request.role);
  const name = checkLabel('name', request.name);
  if (role === 'client') {
    if (request.nodeId !== '') throw invalidArgument('node_id is for agent keys; a client key has a tenant');
  } else if (request.tenant !== '') {
    throw invalidArgument(`tenant is for client keys; a ${role} key acts for no tenant`);
  }
  if (role !== 'agent' && request.nodeId !== '')
    throw invalidArgument(`node_id is for agent keys; a ${role} key speaks for no node`);
  let expiresAtMs: number | undefined;
  if (request.expiresAt !== undefined) {
    expiresAtMs = request.expiresAt.getTime();
    if (!Number.isFinite(expiresAtMs) || expiresAtMs <= nowMs || expiresAtMs > nowMs + MAX_KEY_LIFETIME_MS)
      throw invalidArgument('expires_at must be in the future and within 10 years');
  }
  return {
    role,
    name,
    ...(role === 'client' ? { tenant: checkTenant('tenant', request.tenant) } : {}),
    ...(role === 'agent' ? { nodeId: checkNodeId('node_id', request.nodeId) } : {}),
    ...(expiresAtMs === undefined ? {} : { expiresAtMs }),
  };
}

export const tenantToProto = (tenant: TenantRecord): Tenant => ({
  name: tenant.name,
  displayName: tenant.displayName,
  createdAt: new Date(tenant.createdAtMs),
  package: tenant.package === undefined ? undefined : packageToProto(tenant.package),
});

export const apiKeyToProto = (key: ApiKeyRecord): ApiKey => ({
  id: key.id,
  name: key.name,
  role: ROLE_TO_PROTO[key.role],
  tenant: key.tenant ?? '',
  nodeId: key.nodeId ?? '',
  createdAt: new Date(key.createdAtMs),
  expiresAt: key.expiresAtMs === undefined ? undefined : new Date(key.expiresAtMs),
  revokedAt: key.revokedAtMs === undefined ? undefined : new Date(key.revokedAtMs),
});

export function accountsService(plane: ControlPlane, log: EventSink, context: RpcContext): AccountsServer {
  const unary = unaryMethods(context);
  const accounts = plane.accounts;
  return {
    createTenant: unary('CreateTenant', async (request, _call, caller) => {
      const name = checkTenant('name', request.name);
      const result = await accounts.createTenant(name, checkLabel('display_name', request.displayName));
      if (result.kind === 'exists')
        throw new ApiError(status.ALREADY_EXISTS, `tenant ${name} already exists`);
      if (result.kind === 'limit')
        throw new ApiError(status.RESOURCE_EXHAUSTED, `at most ${result.limit} tenants can exist`);
      log.info('tenant created', { tenant: name, by: caller.subject });
      return { tenant: tenantToProto(result.tenant) };
    }),
    getTenant: unary('GetTenant', async (request, _call, caller) => {
      const name = tenantFor(caller, 'GetTenant', checkTenant('name', request.name));
      const tenant = accounts.tenant(name);
      if (tenant === undefined) throw notFound(`no tenant ${name}`);
      return { tenant: tenantToProto(tenant) };
    }),
    listTenants: unary('ListTenants', async () => ({ tenants: accounts.tenants().map(tenantToProto) })),
    createApiKey: unary('CreateApiKey', async (request, _call, caller) => {
      const result = await accounts.createApiKey(toNewApiKey(request, plane.now()));
      if (result.kind === 'unknown_tenant')
        throw notFound(`no tenant ${result.tenant}; create it first (CreateTenant)`);
      if (result.kind === 'limit')
        throw new ApiError(
          status.RESOURCE_EXHAUSTED,
          `at most ${result.limit} API keys can exist; revoke unused ones`,
        );
      log.info('API key created', {
        key: result.record.id,
        role: result.record.role,
        tenant: result.record.tenant,
        node: result.record.nodeId,
        by: caller.subject,
      });
      return { key: apiKeyToProto(result.record), secret: result.secret };
    }),
    revokeApiKey: unary('RevokeApiKey', async (request, _call, caller) => {
      const id = checkKeyId(request.id);
      const record = await accounts.revokeApiKey(id);
      if (record === undefined) throw notFound(`no API key ${id}`);
      log.info('API key revoked', { key: id, by: caller.subject });
      return { key: apiKeyToProto(record) };
    }),
    setPackage: unary('SetPackage', async (request, _call, caller) => {
      const name = checkTenant('tenant', request.tenant);
      const pkg = request.package === undefined ? undefined : toPackage(request.package);
      const tenant = await accounts.setPackage(name, pkg);
      if (tenant === undefined) throw notFound(`no tenant ${name}; create it first (CreateTenant)`);
      log.info(pkg === undefined ? 'package removed' : 'package set', {
        tenant: name,
        package: pkg?.name,
        quotaPoints: pkg?.quotaPoints,
        overQuota: pkg?.overQuota,
        by: caller.subject,
      });
      return { tenant: tenantToProto(tenant) };
    }),
    getUsage: unary('GetUsage', async (request, _call, caller) => {
      const requested = optionalTenant('tenant', request.tenant);
      // A client sees its own tenant only.
      const tenant = caller.role === 'client' ? tenantFor(caller, 'GetUsage', requested) : requested;
      if (request.period.length > 64) throw invalidArgument('period must be at most 64 characters');
      const now = plane.now();
      const ledgers = plane.ledgers(tenant === '' ? undefined : tenant).filter((ledger) => {
        if (request.period !== '') return ledger.period === request.period;
        const pkg = accounts.tenant(ledger.tenant)?.package;
        return pkg !== undefined && periodAt(pkg.period, now).id === ledger.period;
      });
      ledgers.sort((a, b) =>
        a.tenant === b.tenant ? (a.period < b.period ? -1 : 1) : a.tenant < b.tenant ? -1 : 1,
      );
      return {
        lines: ledgers.flatMap(usageLinesToProto),
        periods: ledgers.map((ledger) => {
          const pkg = accounts.tenant(ledger.tenant)?.package;
          const window = pkg === undefined ? undefined : periodAt(pkg.period, now);
          const current = window !== undefined && window.id === ledger.period;
          return {
            tenant: ledger.tenant,
            period: ledger.period,
            quotaPoints: ledger.quotaPoints,
            usedPoints: ledger.usedPoints,
            reservedPoints: ledger.quotaPoints - ledger.usedPoints - freePoints(ledger),
            periodStart: current ? new Date(window.startMs) : undefined,
            periodEnd: current ? new Date(window.endMs) : undefined,
          };
        }),
      };
    }),
    whoAmI: unary('WhoAmI', async (_request, _call, caller) => ({
      role: ROLE_TO_PROTO[caller.role],
      subject: caller.subject,
      tenant: caller.role === 'client' ? caller.tenant : '',
      nodeId: caller.role === 'agent' ? caller.nodeId : '',
    })),
    listApiKeys: unary('ListApiKeys', async (request) => {
      const tenant = optionalTenant('tenant', request.tenant);
      return { keys: accounts.apiKeys(tenant === '' ? undefined : tenant).map(apiKeyToProto) };
    }),
  };
}
