// Operator commands for tenants and API keys: `cpn tenants create|list|show` and
// `cpn keys create|list|revoke`. A key's secret is printed once, at creation.

import Table from 'cli-table3';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ROLES } from '../auth/identity.js';
import {
  type ApiKey,
  CreateApiKeyResponse,
  CreateTenantResponse,
  GetTenantResponse,
  ListApiKeysResponse,
  ListTenantsResponse,
  Role,
  type Tenant,
} from '../gen/cpn/v1/accounts.js';
import { ROLE_TO_PROTO } from '../server/accounts-service.js';
import { roleName } from './format.js';
import { callAndPrint, printResponse, withClientOptions, withSession } from './rpc.js';

function roleArg(value: string): Role {
  const role = ROLES.find((name) => name === value.toLowerCase());
  if (role === undefined)
    throw new InvalidArgumentError(`expected one of ${ROLES.join(', ')}, got "${value}"`);
  return ROLE_TO_PROTO[role];
}

function expiryArg(value: string): Date {
  const days = /^(\d+)d$/.exec(value);
  const at = days ? new Date(Date.now() + Number(days[1]) * 86_400_000) : new Date(value);
  if (Number.isNaN(at.getTime()))
    throw new InvalidArgumentError(`expected an ISO 8601 time or a number of days like 90d, got "${value}"`);
  return at;
}

const day = (date: Date | undefined) =>
  date === undefined ? '' : date.toISOString().replace(/\.\d+Z$/, 'Z');

function formatTenants(tenants: readonly Tenant[]): string {
  if (tenants.length === 0) return 'no tenants (create one: cpn tenants create NAME)';
  const table = new Table({ head: ['tenant', 'display name', 'created'] });
  for (const tenant of tenants) table.push([tenant.name, tenant.displayName, day(tenant.createdAt)]);
  return table.toString();
}

function formatKeys(keys: readonly ApiKey[]): string {
  if (keys.length === 0) return 'no API keys';
  const table = new Table({ head: ['id', 'role', 'tenant / node', 'name', 'created', 'expires', 'revoked'] });
  for (const key of keys) {
    table.push([
      key.id,
      roleName(key.role),
      key.tenant || key.nodeId,
      key.name,
      day(key.createdAt),
      day(key.expiresAt),
      day(key.revokedAt),
    ]);
  }
  return table.toString();
}

export function tenantsCommand(): Command {
  const tenants = new Command('tenants').description(
    'tenants: the buyers that keys act for and usage is billed to',
  );
  tenants.addCommand(
    withClientOptions(
      new Command('create')
        .description('create a tenant')
        .argument('<name>', 'lowercase letters, digits and inner hyphens, e.g. acme-auto')
        .option('--display-name <text>', 'a name for people', '')
        .option('--json', 'print the answer as JSON'),
    ).action(async (name: string, opts) => {
      await callAndPrint(
        opts,
        (session) =>
          session.call(session.accounts, session.accounts.createTenant, {
            name,
            displayName: opts.displayName,
          }),
        CreateTenantResponse.toJSON,
        (response) => `created tenant ${response.tenant?.name}`,
      );
    }),
  );
  tenants.addCommand(
    withClientOptions(
      new Command('list')
        .description('list tenants')
        .option('--json', 'print the ListTenantsResponse as JSON'),
    ).action(async (opts) => {
      await callAndPrint(
        opts,
        (session) => session.call(session.accounts, session.accounts.listTenants, {}),
        ListTenantsResponse.toJSON,
        (response) => formatTenants(response.tenants),
      );
    }),
  );
  tenants.addCommand(
    withClientOptions(
      new Command('show')
        .description('show one tenant')
        .argument('<name>')
        .option('--json', 'print the GetTenantResponse as JSON'),
    ).action(async (name: string, opts) => {
      await callAndPrint(
        opts,
        (session) => session.call(session.accounts, session.accounts.getTenant, { name }),
        GetTenantResponse.toJSON,
        (response) => formatTenants(response.tenant ? [response.tenant] : []),
      );
    }),
  );
  return tenants;
}

export function keysCommand(): Command {
  const keys = new Command('keys').description('API keys: create (the secret is shown once), list, revoke');
  keys.addCommand(
    withClientOptions(
      new Command('create')
        .description('create an API key and print its secret (once: only a hash is stored)')
        .addOption(
          new Option('--role <role>', `what the key may do: ${ROLES.join(', ')}`)
            .argParser(roleArg)
            .makeOptionMandatory(),
        )
        .option('--tenant <name>', 'client keys: the tenant its routes are billed to')
        .option('--node <id>', 'agent keys: the one node it speaks for')
        .option('--name <text>', 'who holds the key, what for', '')
        .option('--expires <when>', 'ISO 8601 time or days from now, e.g. 90d (default: never)', expiryArg)
        .option('--json', 'print the answer as JSON'),
    )
      .addHelpText(
        'after',
        "\nRoles: operator (every method), agent (its node's registration, status, latency),\n" +
          'client (Route, Release, its own usage), planner (read-only).',
      )
      .action(async (opts) => {
        const response = await withSession(opts, (session) =>
          session.call(session.accounts, session.accounts.createApiKey, {
            role: opts.role,
            tenant: opts.tenant ?? '',
            nodeId: opts.node ?? '',
            name: opts.name,
            expiresAt: opts.expires,
          }),
        );
        printResponse(opts.json, response, CreateApiKeyResponse.toJSON, (created) =>
          [
            `created ${roleName(created.key?.role ?? Role.ROLE_UNSPECIFIED)} key ${created.key?.id}; its secret, shown only now:`,
            `  ${created.secret}`,
          ].join('\n'),
        );
      }),
  );
  keys.addCommand(
    withClientOptions(
      new Command('list')
        .description('list API keys (never their secrets)')
        .option('--tenant <name>', "only this tenant's keys")
        .option('--json', 'print the ListApiKeysResponse as JSON'),
    ).action(async (opts) => {
      await callAndPrint(
        opts,
        (session) =>
          session.call(session.accounts, session.accounts.listApiKeys, { tenant: opts.tenant ?? '' }),
        ListApiKeysResponse.toJSON,
        (response) => formatKeys(response.keys),
      );
    }),
  );
  keys.addCommand(
    withClientOptions(
      new Command('revoke')
        .description('revoke an API key at once, on every replica')
        .argument('<id>', 'the key id (16 hex characters, as listed)'),
    ).action(async (id: string, opts) => {
      await withSession(opts, (session) =>
        session.call(session.accounts, session.accounts.revokeApiKey, { id }),
      );
      process.stdout.write(`revoked ${id}\n`);
    }),
  );
  return keys;
}
