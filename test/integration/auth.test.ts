// Authentication and roles over real gRPC: every RPC × every role, scopes (an agent's node, a
// client's tenant), the hijacks a keyless server allowed, and key lifecycle (revocation, expiry).
import { credentials, type ServiceError, status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccountsClient, AccountsService, Role } from '../../src/gen/cpn/v1/accounts.js';
import { RegistryClient, RegistryService } from '../../src/gen/cpn/v1/registry.js';
import { RouteRequest, SchedulerClient, SchedulerService } from '../../src/gen/cpn/v1/scheduler.js';
import { Level, NodeState } from '../../src/gen/cpn/v1/types.js';
import {
  ALL_NODES,
  bearer,
  ok,
  rpc,
  startTestServer,
  TEST_OPERATOR_KEY,
  type TestServer,
} from '../helpers/grpc.js';
import { GUANGZHOU, openRequest } from '../helpers/sessions.js';

const spec = (id: string, prefillTokensPerS = 16_000) => ({
  id,
  level: Level.LEVEL_PROVINCE,
  region: 'CN-GD',
  parentId: '',
  endpoint: `https://${id}.example:8000`,
  location: GUANGZHOU,
  gpus: [{ type: 'L20', count: 8, memoryGib: 48 }],
  models: [
    {
      model: 'qwen3-32b',
      maxConcurrency: 4,
      maxQueue: 2,
      prefillTokensPerS,
      decodeTokensPerS: 45,
      price: { inputPerMtok: 2, outputPerMtok: 8, cachedInputPerMtok: 0.2 },
    },
  ],
  labels: {},
});

const route = (overrides: Record<string, unknown> = {}) => ({
  requestId: '',
  tenant: '',
  model: 'qwen3-32b',
  client: { region: 'CN-GD', accessPoint: '', location: undefined },
  latencyBudgetMs: 2000,
  inputTokens: 100,
  cachedInputTokens: 0,
  maxOutputTokens: 100,
  allowedLevels: [],
  allowedRegions: [],
  allowDegraded: false,
  explain: false,
  maxFallbacks: 0,
  ...overrides,
});

interface Clients {
  readonly registry: RegistryClient;
  readonly scheduler: SchedulerClient;
  readonly accounts: AccountsClient;
}

type Who = 'none' | 'operator' | 'agent' | 'client' | 'planner';

/** A stream's first answer or its error, as an rpc() outcome; the stream is cancelled after. */
function firstOf(
  stream: {
    on(event: 'data', listener: (data: unknown) => void): unknown;
    on(event: 'error', listener: (error: ServiceError) => void): unknown;
    on(event: 'status', listener: (s: { code: number }) => void): unknown;
  },
  cancel: () => void,
): Promise<{ ok: boolean; error?: ServiceError }> {
  return new Promise((resolve) => {
    stream.on('data', () => {
      resolve({ ok: true });
      cancel();
    });
    stream.on('error', (error) => resolve({ ok: false, error }));
    stream.on('status', (s) => {
      if (s.code === status.OK) resolve({ ok: true });
    });
  });
}

describe('authentication and roles over gRPC', () => {
  let t: TestServer;
  const clients = new Map<Who, Clients>();
  const secrets = new Map<Who, string>();
  let clientKeyId = '';

  const open = (key: string | undefined): Clients => {
    const options = key === undefined ? {} : bearer(key);
    const creds = credentials.createInsecure();
    return {
      registry: new RegistryClient(t.address, creds, options),
      scheduler: new SchedulerClient(t.address, creds, options),
      accounts: new AccountsClient(t.address, creds, options),
    };
  };
  const as = (who: Who) => clients.get(who) as Clients;

  beforeAll(async () => {
    t = await startTestServer();
    const operator = open(TEST_OPERATOR_KEY);
    clients.set('operator', operator);
    clients.set('none', open(undefined));
    await ok(operator.registry, operator.registry.registerNode, {
      spec: spec('a1'),
      ttlS: 0,
      permanent: true,
    });
    await ok(operator.registry, operator.registry.registerNode, {
      spec: spec('a2'),
      ttlS: 0,
      permanent: true,
    });
    for (const name of ['acme', 'other'])
      await ok(operator.accounts, operator.accounts.createTenant, { name, displayName: name });
    const create = async (role: Role, extra: { tenant?: string; nodeId?: string } = {}) =>
      ok(operator.accounts, operator.accounts.createApiKey, {
        role,
        tenant: extra.tenant ?? '',
        nodeId: extra.nodeId ?? '',
        name: `test ${role}`,
        expiresAt: undefined,
      });
    const agent = await create(Role.ROLE_AGENT, { nodeId: 'a1' });
    const client = await create(Role.ROLE_CLIENT, { tenant: 'acme' });
    const planner = await create(Role.ROLE_PLANNER);
    clientKeyId = client.key?.id ?? '';
    for (const [who, created] of [
      ['agent', agent],
      ['client', client],
      ['planner', planner],
    ] as const) {
      secrets.set(who, created.secret);
      clients.set(who, open(created.secret));
    }
  });

  afterAll(async () => {
    for (const c of clients.values()) {
      c.registry.close();
      c.scheduler.close();
      c.accounts.close();
    }
    await t.close();
  });

  // Each method with a request that is valid for the agent's node / the client's tenant, so that
  // an allowed caller gets past the gate (the call may still fail for its own reasons).
  const methods: Record<
    string,
    { allowed: readonly Who[]; call: (c: Clients) => Promise<{ ok: boolean; error?: ServiceError }> }
  > = {
    RegisterNode: {
      allowed: ['operator', 'agent'],
      call: (c) => rpc(c.registry, c.registry.registerNode, { spec: spec('a1'), ttlS: 0, permanent: true }),
    },
    ReportStatus: {
      allowed: ['operator', 'agent'],
      call: (c) =>
        rpc(c.registry, c.registry.reportStatus, {
          nodeId: 'a1',
          healthy: true,
          gpuUtilization: 0.1,
          kvCacheUtilization: 0.1,
          load: [],
        }),
    },
    Heartbeat: {
      allowed: ['operator', 'agent'],
      call: (c) => {
        const stream = c.registry.heartbeat();
        stream.write({
          status: { nodeId: 'a1', healthy: true, gpuUtilization: 0.1, kvCacheUtilization: 0.1, load: [] },
        });
        stream.end();
        return firstOf(stream, () => stream.cancel());
      },
    },
    OpenSession: {
      allowed: ['operator', 'client'],
      call: (c) =>
        rpc(
          c.scheduler,
          c.scheduler.openSession,
          openRequest({
            client: { region: 'CN-GD', accessPoint: '', location: undefined },
            latencyBudgetMs: 60_000,
          }),
        ),
    },
    UpdateSession: {
      allowed: ['operator', 'client'],
      call: (c) =>
        rpc(c.scheduler, c.scheduler.updateSession, {
          tenant: '',
          sessionId: '0'.repeat(32),
          client: { region: 'CN-GD', accessPoint: '', location: undefined },
        }),
    },
    CloseSession: {
      allowed: ['operator', 'client'],
      call: (c) => rpc(c.scheduler, c.scheduler.closeSession, { tenant: '', sessionId: '0'.repeat(32) }),
    },
    WatchSession: {
      allowed: ['operator', 'client'],
      call: (c) => {
        const stream = c.scheduler.watchSession({ tenant: '', sessionId: '0'.repeat(32) });
        return firstOf(stream, () => stream.cancel());
      },
    },
    ReportLatency: {
      allowed: ['operator', 'agent'],
      call: (c) =>
        rpc(c.registry, c.registry.reportLatency, { samples: [{ from: 'CN-GD', nodeId: 'a1', rttMs: 9 }] }),
    },
    DeregisterNode: {
      allowed: ['operator'],
      call: (c) => rpc(c.registry, c.registry.deregisterNode, { nodeId: 'never-registered' }),
    },
    DrainNode: {
      allowed: ['operator'],
      call: (c) => rpc(c.registry, c.registry.drainNode, { nodeId: 'a2', drain: false }),
    },
    GetNode: {
      allowed: ['operator', 'planner'],
      call: (c) => rpc(c.registry, c.registry.getNode, { nodeId: 'a1' }),
    },
    ListNodes: {
      allowed: ['operator', 'planner'],
      call: (c) => rpc(c.registry, c.registry.listNodes, ALL_NODES),
    },
    GetStoreStatus: {
      allowed: ['operator', 'planner'],
      call: (c) => rpc(c.registry, c.registry.getStoreStatus, {}),
    },
    SchedulePricing: {
      allowed: ['operator'],
      call: (c) =>
        rpc(c.registry, c.registry.schedulePricing, {
          at: new Date(Date.UTC(2026, 10, 23)),
          policy: { utcOffsetHours: 8, rules: [] },
        }),
    },
    CancelPricing: {
      allowed: ['operator'],
      call: (c) => rpc(c.registry, c.registry.cancelPricing, { id: 'p-none' }),
    },
    GetPricing: {
      allowed: ['operator', 'planner', 'client'],
      call: (c) => rpc(c.registry, c.registry.getPricing, {}),
    },
    Route: { allowed: ['operator', 'client'], call: (c) => rpc(c.scheduler, c.scheduler.route, route()) },
    Release: {
      allowed: ['operator', 'client', 'agent'],
      call: (c) =>
        rpc(c.scheduler, c.scheduler.release, {
          reservationId: 'peer.1.0123456789abcdef~a1~qwen3-32b~acme',
          usage: { inputTokens: 1, cachedInputTokens: 0, outputTokens: 1 },
          success: true,
        }),
    },
    CreateTenant: {
      allowed: ['operator'],
      call: (c) => rpc(c.accounts, c.accounts.createTenant, { name: 'acme', displayName: '' }),
    },
    GetTenant: {
      allowed: ['operator', 'client'],
      call: (c) => rpc(c.accounts, c.accounts.getTenant, { name: 'acme' }),
    },
    ListTenants: { allowed: ['operator'], call: (c) => rpc(c.accounts, c.accounts.listTenants, {}) },
    CreateApiKey: {
      allowed: ['operator'],
      call: (c) =>
        rpc(c.accounts, c.accounts.createApiKey, {
          role: Role.ROLE_CLIENT,
          tenant: 'no-such-tenant',
          nodeId: '',
          name: '',
          expiresAt: undefined,
        }),
    },
    RevokeApiKey: {
      allowed: ['operator'],
      call: (c) => rpc(c.accounts, c.accounts.revokeApiKey, { id: '0000000000000000' }),
    },
    ListApiKeys: {
      allowed: ['operator'],
      call: (c) => rpc(c.accounts, c.accounts.listApiKeys, { tenant: '' }),
    },
    SetPackage: {
      allowed: ['operator'],
      call: (c) => rpc(c.accounts, c.accounts.setPackage, { tenant: 'no-such-tenant', package: undefined }),
    },
    GetUsage: {
      allowed: ['operator', 'planner', 'client'],
      call: (c) => rpc(c.accounts, c.accounts.getUsage, { tenant: '', period: '' }),
    },
    WhoAmI: {
      allowed: ['operator', 'planner', 'client', 'agent'],
      call: (c) => rpc(c.accounts, c.accounts.whoAmI, {}),
    },
  };

  it('covers every method of every service', () => {
    const served = [RegistryService, SchedulerService, AccountsService].flatMap((service) =>
      Object.values(service).map((method) => method.path.split('/').pop()),
    );
    expect(Object.keys(methods).sort()).toEqual(served.sort());
  });

  for (const [method, { allowed, call }] of Object.entries(methods)) {
    it(`${method}: ${allowed.join(', ')} may call it; others are refused`, async () => {
      for (const who of ['none', 'operator', 'agent', 'client', 'planner'] as const) {
        const outcome = await call(as(who));
        const code = outcome.ok ? status.OK : outcome.error?.code;
        if (who === 'none') expect(code, `${method} without a key`).toBe(status.UNAUTHENTICATED);
        else if (allowed.includes(who))
          expect([status.UNAUTHENTICATED, status.PERMISSION_DENIED], `${method} as ${who}`).not.toContain(
            code,
          );
        else expect(code, `${method} as ${who}`).toBe(status.PERMISSION_DENIED);
      }
    });
  }

  it('an agent key speaks only for its own node', async () => {
    const agent = as('agent');
    const other = await rpc(agent.registry, agent.registry.registerNode, {
      spec: spec('a2'),
      ttlS: 0,
      permanent: true,
    });
    expect(other.ok || other.error.code).toBe(status.PERMISSION_DENIED);
    expect(other.ok || other.error.details).toMatch(/agent key for node a1 and may not speak for node a2/);
    const status2 = await rpc(agent.registry, agent.registry.reportStatus, {
      nodeId: 'a2',
      healthy: false,
      gpuUtilization: 0,
      kvCacheUtilization: 0,
      load: [],
    });
    expect(status2.ok || status2.error.code).toBe(status.PERMISSION_DENIED);
    const latency = await rpc(agent.registry, agent.registry.reportLatency, {
      samples: [
        { from: 'CN-GD', nodeId: 'a1', rttMs: 5 },
        { from: 'CN-GD', nodeId: 'a2', rttMs: 5 },
      ],
    });
    expect(latency.ok || latency.error.code).toBe(status.PERMISSION_DENIED);
    expect(t.store.getNode('a2')?.spec.endpoint).toBe('https://a2.example:8000');
  });

  it('WhoAmI tells each role who it is; only an operator may abandon a reservation', async () => {
    expect(await ok(as('client').accounts, as('client').accounts.whoAmI, {})).toMatchObject({
      role: Role.ROLE_CLIENT,
      tenant: 'acme',
      nodeId: '',
    });
    expect(await ok(as('agent').accounts, as('agent').accounts.whoAmI, {})).toMatchObject({
      role: Role.ROLE_AGENT,
      nodeId: 'a1',
    });
    expect((await ok(as('operator').accounts, as('operator').accounts.whoAmI, {})).role).toBe(
      Role.ROLE_OPERATOR,
    );
    const anonymous = await rpc(as('none').accounts, as('none').accounts.whoAmI, {});
    expect(anonymous.ok || anonymous.error.code).toBe(status.UNAUTHENTICATED);

    const client = as('client');
    const placed = await ok(client.scheduler, client.scheduler.route, {
      ...RouteRequest.fromPartial({
        model: 'qwen3-32b',
        client: { region: 'CN-GD' },
        latencyBudgetMs: 5000,
        inputTokens: 10,
      }),
    });
    const abandon = {
      reservationId: placed.reservationId,
      usage: undefined,
      success: false,
      abandoned: true,
    };
    const refused = await rpc(client.scheduler, client.scheduler.release, abandon);
    expect(refused.ok || refused.error.code).toBe(status.PERMISSION_DENIED);
    const operator = as('operator');
    expect((await ok(operator.scheduler, operator.scheduler.release, abandon)).released).toBe(true);
    // Placing again while avoiding the node that held it.
    const avoided = await ok(client.scheduler, client.scheduler.route, {
      ...RouteRequest.fromPartial({
        model: 'qwen3-32b',
        client: { region: 'CN-GD' },
        latencyBudgetMs: 5000,
        inputTokens: 10,
      }),
      avoid: { nodeIds: [placed.placement?.nodeId ?? ''] },
    });
    expect(avoided.placement?.nodeId).not.toBe(placed.placement?.nodeId);
    const tooMany = await rpc(client.scheduler, client.scheduler.route, {
      ...RouteRequest.fromPartial({ model: 'qwen3-32b', client: { region: 'CN-GD' }, latencyBudgetMs: 5000 }),
      avoid: { nodeIds: Array.from({ length: 9 }, (_, i) => `n${i}`) },
    });
    expect(tooMany.ok || [tooMany.error.code, tooMany.error.details]).toEqual([
      status.INVALID_ARGUMENT,
      expect.stringContaining('at most 8'),
    ]);
  });

  it('an agent may drain and deregister its own node, not lift a drain, and not touch another node', async () => {
    const operator = as('operator');
    await ok(operator.registry, operator.registry.registerNode, {
      spec: spec('a3'),
      ttlS: 0,
      permanent: true,
    });
    const created = await ok(operator.accounts, operator.accounts.createApiKey, {
      role: Role.ROLE_AGENT,
      tenant: '',
      nodeId: 'a3',
      name: 'agent of a3',
      expiresAt: undefined,
    });
    const agent = open(created.secret);
    try {
      const other = await rpc(agent.registry, agent.registry.drainNode, { nodeId: 'a1', drain: true });
      expect(other.ok || other.error.code).toBe(status.PERMISSION_DENIED);
      expect(
        (await ok(agent.registry, agent.registry.drainNode, { nodeId: 'a3', drain: true })).node?.state,
      ).toBe(NodeState.NODE_STATE_DRAINING);
      const lift = await rpc(agent.registry, agent.registry.drainNode, { nodeId: 'a3', drain: false });
      expect(lift.ok || [lift.error.code, lift.error.details]).toEqual([
        status.PERMISSION_DENIED,
        expect.stringContaining('not lift a drain'),
      ]);
      const foreign = await rpc(agent.registry, agent.registry.deregisterNode, { nodeId: 'a1' });
      expect(foreign.ok || foreign.error.code).toBe(status.PERMISSION_DENIED);
      await ok(agent.registry, agent.registry.deregisterNode, { nodeId: 'a3' });
      expect(t.store.getNode('a3')).toBeUndefined();
      expect(t.store.getNode('a1')).toBeDefined();
    } finally {
      agent.registry.close();
      agent.scheduler.close();
      agent.accounts.close();
    }
  });

  it('the hijacks of an open server are refused for a client key, and change nothing', async () => {
    const client = as('client');
    const pricingBefore = t.store.pricing();
    const attempts = await Promise.all([
      // Re-register a permanent node with an attacker's endpoint.
      rpc(client.registry, client.registry.registerNode, {
        spec: { ...spec('a1'), endpoint: 'https://attacker.example' },
        ttlS: 0,
        permanent: true,
      }),
      // A fake free node with a huge prefill rate.
      rpc(client.registry, client.registry.registerNode, {
        spec: spec('fake', 10_000_000),
        ttlS: 60,
        permanent: false,
      }),
      // A fake 0 ms latency sample.
      rpc(client.registry, client.registry.reportLatency, {
        samples: [{ from: 'CN-GD', nodeId: 'a2', rttMs: 0 }],
      }),
      rpc(client.registry, client.registry.drainNode, { nodeId: 'a1', drain: true }),
      rpc(client.registry, client.registry.schedulePricing, {
        at: new Date(Date.UTC(2026, 10, 22, 13)),
        policy: {
          utcOffsetHours: 8,
          rules: [{ level: 0, region: '', model: '', factor: 100, windowed: false, fromHour: 0, toHour: 0 }],
        },
      }),
      rpc(client.accounts, client.accounts.createApiKey, {
        role: Role.ROLE_OPERATOR,
        tenant: '',
        nodeId: '',
        name: 'escalate',
        expiresAt: undefined,
      }),
    ]);
    // Forged usage: a well-formed reservation id on any node, with 10^8 tokens.
    const usageBefore = t.store.usageRecords().length;
    const issued = Math.floor(t.server.plane.now() / 1000).toString(36);
    const forgedUsage = await rpc(client.scheduler, client.scheduler.release, {
      reservationId: `x.1.${issued}.0123456789abcdef~a2~qwen3-32b~acme`,
      usage: { inputTokens: 100_000_000, cachedInputTokens: 0, outputTokens: 100_000_000 },
      success: true,
    });
    for (const attempt of [...attempts, forgedUsage])
      expect(attempt.ok || attempt.error.code).toBe(status.PERMISSION_DENIED);
    expect(t.store.usageRecords().length).toBe(usageBefore);
    expect(t.store.getNode('a1')?.spec.endpoint).toBe('https://a1.example:8000');
    expect(t.store.getNode('a1')?.draining).toBe(false);
    expect(t.store.getNode('fake')).toBeUndefined();
    expect(t.store.pricing()).toEqual(pricingBefore);
  });

  it("a Route is billed to the key's tenant; another tenant cannot release it", async () => {
    const client = as('client');
    const placed = await ok(client.scheduler, client.scheduler.route, route());
    expect(placed.reservationId.endsWith('~acme')).toBe(true);
    const claimed = await rpc(client.scheduler, client.scheduler.route, route({ tenant: 'other' }));
    expect(claimed.ok || claimed.error.code).toBe(status.PERMISSION_DENIED);

    const operator = as('operator');
    const otherKey = await ok(operator.accounts, operator.accounts.createApiKey, {
      role: Role.ROLE_CLIENT,
      tenant: 'other',
      nodeId: '',
      name: 'other tenant',
      expiresAt: undefined,
    });
    const other = open(otherKey.secret);
    const usage = { inputTokens: 10, cachedInputTokens: 0, outputTokens: 1_000_000 };
    const before = t.store.usageRecords().length;
    const stolen = await rpc(other.scheduler, other.scheduler.release, {
      reservationId: placed.reservationId,
      usage,
      success: true,
    });
    expect(stolen.ok || stolen.error.code).toBe(status.PERMISSION_DENIED);
    // The same id re-labelled with the other tenant does not verify: refused, nothing recorded.
    const relabelled = placed.reservationId.replace(/~acme$/, '~other');
    const forged = await rpc(other.scheduler, other.scheduler.release, {
      reservationId: relabelled,
      usage,
      success: true,
    });
    expect(forged.ok || forged.error.code).toBe(status.PERMISSION_DENIED);
    expect(t.store.usageRecords().length).toBe(before);
    const own = await ok(client.scheduler, client.scheduler.release, {
      reservationId: placed.reservationId,
      usage: { inputTokens: 100, cachedInputTokens: 0, outputTokens: 20 },
      success: true,
    });
    expect(own.released).toBe(true);
    const records = t.store.usageRecords().slice(before);
    expect(records.find((r) => r.reservationId === placed.reservationId)).toMatchObject({
      tenant: 'acme',
      usage: { inputTokens: 100, outputTokens: 20 },
    });
    other.registry.close();
    other.scheduler.close();
    other.accounts.close();
  });

  it('a wrong secret, a malformed header and an unknown key are UNAUTHENTICATED without echoing the secret', async () => {
    const secret = secrets.get('planner') as string;
    const wrong = `${secret.slice(0, -4)}AAAA`;
    for (const key of [wrong, 'cpn_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', 'short']) {
      const c = open(key);
      const outcome = await rpc(c.registry, c.registry.listNodes, ALL_NODES);
      expect(outcome.ok || outcome.error.code).toBe(status.UNAUTHENTICATED);
      if (key.length > 30) expect(outcome.ok || outcome.error.details).not.toContain(key.slice(21));
      c.registry.close();
      c.scheduler.close();
      c.accounts.close();
    }
  });

  it('a revoked key stops working at once; an expired key at its expiry', async () => {
    const operator = as('operator');
    const created = await ok(operator.accounts, operator.accounts.createApiKey, {
      role: Role.ROLE_PLANNER,
      tenant: '',
      nodeId: '',
      name: 'short-lived',
      expiresAt: new Date(t.server.plane.now() + 60_000),
    });
    const planner = open(created.secret);
    const list = () => rpc(planner.registry, planner.registry.listNodes, ALL_NODES);
    expect((await list()).ok).toBe(true);
    t.advance(61_000);
    const expired = await list();
    expect(expired.ok || expired.error.details).toMatch(/expired at/);

    const client = as('client');
    expect((await rpc(client.registry, client.registry.getPricing, {})).ok).toBe(true);
    const revoked = await ok(operator.accounts, operator.accounts.revokeApiKey, { id: clientKeyId });
    expect(revoked.key?.revokedAt).toBeInstanceOf(Date);
    const after = await rpc(client.registry, client.registry.getPricing, {});
    expect(after.ok || after.error.code).toBe(status.UNAUTHENTICATED);
    expect(after.ok || after.error.details).toMatch(/revoked/);
    const listed = await ok(operator.accounts, operator.accounts.listApiKeys, { tenant: 'acme' });
    expect(listed.keys.map((k) => k.id)).toContain(clientKeyId);
    expect(JSON.stringify(listed)).not.toContain(secrets.get('client') as string);
    planner.registry.close();
    planner.scheduler.close();
    planner.accounts.close();
  });
});
