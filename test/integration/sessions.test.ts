// Mobility sessions over real gRPC: open, update while driving from Guangzhou to Shanghai (handed
// over before the Guangzhou node breaks the budget), watch (a drained node's session moves at once
// and the watcher hears of it), close; unknown, expired, malformed and other tenants' sessions.
import { type ClientReadableStream, credentials, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccountsClient, Meter, OverQuotaPolicy } from '../../src/gen/cpn/v1/accounts.js';
import {
  HandoverReason,
  SchedulerClient,
  type UpdateSessionResponse,
  type WatchSessionResponse,
} from '../../src/gen/cpn/v1/scheduler.js';
import { Level } from '../../src/gen/cpn/v1/types.js';
import {
  bearer,
  ok,
  protoSpec,
  rpc,
  startTestServer,
  TEST_OPERATOR_KEY,
  type TestServer,
} from '../helpers/grpc.js';
import { along, GUANGZHOU, openRequest, registerCorridor, SHANGHAI } from '../helpers/sessions.js';

describe('mobility sessions over gRPC', () => {
  let t: TestServer;
  let acme: SchedulerClient;
  let globex: SchedulerClient;

  beforeAll(async () => {
    t = await startTestServer();
    await registerCorridor(t.registry);
    for (const tenant of ['acme', 'globex']) await t.server.plane.accounts.createTenant(tenant, tenant);
    const key = async (tenant: string) => {
      const created = await t.server.plane.accounts.createApiKey({ role: 'client', name: tenant, tenant });
      if (created.kind !== 'created') throw new Error('no key');
      return created.secret;
    };
    acme = new SchedulerClient(t.address, credentials.createInsecure(), bearer(await key('acme')));
    globex = new SchedulerClient(t.address, credentials.createInsecure(), bearer(await key('globex')));
  });
  afterAll(async () => {
    acme?.close();
    globex?.close();
    await t?.close();
  });

  it('follows a car from Guangzhou to Shanghai: handed over once, before the Guangzhou node breaks the budget', async () => {
    const opened = await ok(acme, acme.openSession, openRequest());
    expect(opened.sessionId).toMatch(/^[0-9a-f]{32}$/);
    expect(opened.placement?.nodeId).toBe('gz');
    const updates: UpdateSessionResponse[] = [];
    for (let step = 1; step <= 10; step += 1) {
      t.advance(60_000);
      updates.push(
        await ok(acme, acme.updateSession, {
          tenant: '',
          sessionId: opened.sessionId,
          client: { region: '', accessPoint: '', location: along(step / 10) },
        }),
      );
    }
    const handovers = updates.flatMap((u, i) =>
      u.handover === undefined ? [] : [{ step: i + 1, ...u.handover }],
    );
    expect(handovers).toHaveLength(1);
    const [handover] = handovers;
    expect(handover?.fromNodeId).toBe('gz');
    expect(handover?.toNodeId).toBe('sh');
    expect([
      HandoverReason.HANDOVER_REASON_PREDICTED_BREAK,
      HandoverReason.HANDOVER_REASON_LOST_MARGIN,
    ]).toContain(handover?.reason);
    expect(handover?.moveTtftMs).toBeLessThanOrEqual(20);
    // Every answer was within budget: before the handover from gz, after it from sh.
    for (const [i, update] of updates.entries()) {
      expect(update.placement?.nodeId).toBe(i + 1 < (handover?.step ?? 0) ? 'gz' : 'sh');
      expect(update.placement?.estimate?.ttftMs).toBeLessThanOrEqual(20);
      expect(update.degraded).toBe(false);
    }
    await ok(acme, acme.closeSession, { tenant: '', sessionId: opened.sessionId });
    const after = await rpc(acme, acme.updateSession, {
      tenant: '',
      sessionId: opened.sessionId,
      client: { region: 'CN-SH', accessPoint: '', location: SHANGHAI },
    });
    expect(after.ok ? 'ok' : after.error.code).toBe(status.NOT_FOUND);
    const text = await t.server.metrics.registry.metrics();
    expect(text).toMatch(/cpn_session_handovers_total\{reason="(predicted_break|lost_margin)"\} 1/);
  });

  it("another tenant's session, an unknown one and an expired one are all NOT_FOUND; a malformed id is INVALID_ARGUMENT", async () => {
    const opened = await ok(acme, acme.openSession, openRequest({ ttlS: 5 }));
    const update = (client: SchedulerClient, sessionId: string) =>
      rpc(client, client.updateSession, {
        tenant: '',
        sessionId,
        client: { region: 'CN-GD', accessPoint: '', location: GUANGZHOU },
      });
    const foreign = await update(globex, opened.sessionId);
    const unknown = await update(acme, 'f'.repeat(32));
    expect(foreign.ok ? 'ok' : foreign.error.code).toBe(status.NOT_FOUND);
    expect(unknown.ok ? 'ok' : unknown.error.code).toBe(status.NOT_FOUND);
    // The same words: an id tells nothing about whose it is.
    expect(foreign.ok ? '' : foreign.error.details.replace(opened.sessionId, 'ID')).toBe(
      unknown.ok ? '' : unknown.error.details.replace('f'.repeat(32), 'ID'),
    );
    const closeForeign = await rpc(globex, globex.closeSession, { tenant: '', sessionId: opened.sessionId });
    expect(closeForeign.ok ? 'ok' : closeForeign.error.code).toBe(status.NOT_FOUND);
    // A client naming another tenant is refused outright.
    const named = await rpc(acme, acme.openSession, openRequest({ tenant: 'globex' }));
    expect(named.ok ? 'ok' : named.error.code).toBe(status.PERMISSION_DENIED);
    // Still the owner's, and alive.
    expect((await update(acme, opened.sessionId)).ok).toBe(true);
    t.advance(6000);
    const expired = await update(acme, opened.sessionId);
    expect(expired.ok ? 'ok' : expired.error.code).toBe(status.NOT_FOUND);
    // Its slot is given back by the next sweep of reservations, though nobody closed it.
    const held = t.server.plane.sessions.slotCount();
    t.server.plane.expireReservations();
    expect(t.server.plane.sessions.slotCount()).toBe(held - 1);
    const malformed = await update(acme, 'not-an-id');
    expect(malformed.ok ? 'ok' : malformed.error.code).toBe(status.INVALID_ARGUMENT);
    const badTtl = await rpc(acme, acme.openSession, openRequest({ ttlS: 7200 }));
    expect(badTtl.ok ? '' : badTtl.error.details).toMatch(/ttl_s/);
    const badHeading = await rpc(acme, acme.openSession, openRequest({ headingDeg: 400 }));
    expect(badHeading.ok ? '' : badHeading.error.details).toMatch(/heading_deg/);
  });

  it('twenty updates of one session at once all go through, one after another', async () => {
    const opened = await ok(acme, acme.openSession, openRequest());
    const updates = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        rpc(acme, acme.updateSession, {
          tenant: '',
          sessionId: opened.sessionId,
          client: { region: '', accessPoint: '', location: along(i / 200) },
        }),
      ),
    );
    expect(updates.filter((u) => !u.ok).map((u) => (u.ok ? 0 : u.error.details))).toEqual([]);
    await ok(acme, acme.closeSession, { tenant: '', sessionId: opened.sessionId });
  });

  it("a node that goes silent past its TTL hands its sessions over at the leader's next sweep", async () => {
    // A node with an agent (TTL 30 s) right beside Guangzhou, cheaper than gz: sessions open on it.
    await ok(t.registry, t.registry.registerNode, {
      spec: {
        ...protoSpec('agent-gz', { inputPerMtok: 0.5 }),
        location: { lat: 23.13, lon: 113.27 },
        region: 'CN-GD',
      },
      ttlS: 30,
      permanent: false,
    });
    const opened = await ok(acme, acme.openSession, openRequest());
    expect(opened.placement?.nodeId).toBe('agent-gz');
    t.advance(31_000);
    await t.server.jobs?.runOnce();
    const after = await ok(acme, acme.updateSession, {
      tenant: '',
      sessionId: opened.sessionId,
      client: { region: '', accessPoint: '', location: GUANGZHOU },
    });
    // Moved by the sweep (this update found it already moved: no handover of its own).
    expect(after.placement?.nodeId).toBe('gz');
    expect(after.handover).toBeUndefined();
    await ok(t.registry, t.registry.deregisterNode, { nodeId: 'agent-gz' });
    await ok(acme, acme.closeSession, { tenant: '', sessionId: opened.sessionId });
  });

  it('a watcher hears the placement, then a handover the moment the node drains, then the end', {
    timeout: 15_000,
  }, async () => {
    const opened = await ok(acme, acme.openSession, openRequest());
    expect(opened.placement?.nodeId).toBe('gz');
    const metadata = new Metadata();
    const stream: ClientReadableStream<WatchSessionResponse> = acme.watchSession(
      { tenant: '', sessionId: opened.sessionId },
      metadata,
    );
    const events: WatchSessionResponse[] = [];
    const waiters: (() => void)[] = [];
    stream.on('data', (event: WatchSessionResponse) => {
      events.push(event);
      for (const wake of waiters.splice(0)) wake();
    });
    const ended = new Promise<number>((resolve) => {
      stream.on('error', (error: ServiceError) => resolve(error.code));
      stream.on('status', (s) => {
        if (s.code === status.OK) resolve(status.OK);
      });
    });
    const nth = async (n: number) => {
      while (events.length < n) await new Promise<void>((wake) => waiters.push(wake));
      return events[n - 1] as WatchSessionResponse;
    };
    expect((await nth(1)).placement?.nodeId).toBe('gz');
    // Drained within the dwell time: it moves at once anyway.
    await ok(t.registry, t.registry.drainNode, { nodeId: 'gz', drain: true });
    const moved = await nth(2);
    expect(moved.handover?.reason).toBe(HandoverReason.HANDOVER_REASON_NODE_UNAVAILABLE);
    expect(moved.handover?.fromNodeId).toBe('gz');
    // The dearer node next door: Shanghai is over the 20 ms budget from Guangzhou.
    expect(moved.placement?.nodeId).toBe('fs');
    expect(moved.placement?.estimate?.ttftMs).toBeLessThanOrEqual(20);
    await ok(t.registry, t.registry.drainNode, { nodeId: 'gz', drain: false });
    await ok(acme, acme.closeSession, { tenant: '', sessionId: opened.sessionId });
    expect((await nth(3)).ended).toBe(true);
    expect(await ended).toBe(status.OK);
    // Another tenant cannot watch it.
    const other = await ok(acme, acme.openSession, openRequest());
    const foreign = globex.watchSession({ tenant: '', sessionId: other.sessionId }, new Metadata());
    const code = await new Promise<number>((resolve) => {
      foreign.on('error', (error: ServiceError) => resolve(error.code));
      foreign.on('data', () => resolve(-1));
    });
    expect(code).toBe(status.NOT_FOUND);
  });
});

describe('session limits', () => {
  it('one tenant cannot hold more than its share; others still open theirs; closing frees a place', async () => {
    const t = await startTestServer({ maxSessionsPerTenant: 2 });
    try {
      await ok(t.registry, t.registry.registerNode, {
        spec: { ...protoSpec('gz', { inputPerMtok: 1 }), location: GUANGZHOU, region: 'CN-GD' },
        ttlS: 0,
        permanent: true,
      });
      const open = (tenant: string) =>
        rpc(t.scheduler, t.scheduler.openSession, { ...openRequest(), tenant });
      const a1 = await open('acme');
      const a2 = await open('acme');
      expect(a1.ok && a2.ok).toBe(true);
      const a3 = await open('acme');
      expect(a3.ok ? 'ok' : a3.error.code).toBe(status.RESOURCE_EXHAUSTED);
      expect(a3.ok ? '' : a3.error.details).toMatch(
        /this tenant has 2 sessions open.*--max-sessions-per-tenant/,
      );
      expect((await open('globex')).ok).toBe(true);
      if (!a1.ok) throw new Error('unreachable');
      await ok(t.scheduler, t.scheduler.closeSession, { tenant: 'acme', sessionId: a1.value.sessionId });
      expect((await open('acme')).ok).toBe(true);
    } finally {
      await t.close();
    }
  });
});

describe('a watcher whose key stops working', () => {
  it('is ended with UNAUTHENTICATED at the next event; the server goes on', async () => {
    const t = await startTestServer();
    try {
      await ok(t.registry, t.registry.registerNode, {
        spec: { ...protoSpec('gz'), location: GUANGZHOU, region: 'CN-GD' },
        ttlS: 0,
        permanent: true,
      });
      await t.server.plane.accounts.createTenant('acme', 'acme');
      const key = await t.server.plane.accounts.createApiKey({ role: 'client', name: 'w', tenant: 'acme' });
      if (key.kind !== 'created') throw new Error('no key');
      const client = new SchedulerClient(t.address, credentials.createInsecure(), bearer(key.secret));
      const opened = await ok(client, client.openSession, openRequest());
      const stream = client.watchSession({ tenant: '', sessionId: opened.sessionId }, new Metadata());
      const first = new Promise<void>((resolve) => stream.once('data', () => resolve()));
      const ended = new Promise<number>((resolve) =>
        stream.on('error', (error: ServiceError) => resolve(error.code)),
      );
      await first;
      await t.server.plane.accounts.revokeApiKey(key.record.id);
      // An event on the session: an operator's update.
      await ok(t.scheduler, t.scheduler.updateSession, {
        tenant: 'acme',
        sessionId: opened.sessionId,
        client: { region: '', accessPoint: '', location: GUANGZHOU },
      });
      expect(await ended).toBe(status.UNAUTHENTICATED);
      client.close();
      // Still serving.
      expect((await rpc(t.registry, t.registry.getNode, { nodeId: 'gz' })).ok).toBe(true);
    } finally {
      await t.close();
    }
  });
});

describe('sessions and token packages', () => {
  it("a session may not use a model or a level the tenant's package leaves out", async () => {
    const t = await startTestServer();
    const accounts = new AccountsClient(t.address, credentials.createInsecure(), bearer(TEST_OPERATOR_KEY));
    try {
      await ok(t.registry, t.registry.registerNode, {
        spec: { ...protoSpec('gz'), location: GUANGZHOU, region: 'CN-GD' },
        ttlS: 0,
        permanent: true,
      });
      await ok(accounts, accounts.createTenant, { name: 'acme', displayName: 'Acme' });
      const pkg = {
        name: 'p',
        quotaPoints: 1_000_000,
        timeZone: '',
        periodSeconds: 0,
        periodAnchor: undefined,
        weights: [{ model: 'other', inputPer1k: 1, outputPer1k: 1, cachedInputPer1k: 1 }],
        allowedLevels: [],
        overQuota: OverQuotaPolicy.OVER_QUOTA_POLICY_REJECT,
        throttleRequestsPerS: 0,
        throttleBudgetMs: 0,
        meter: Meter.METER_CLIENT,
      };
      await ok(accounts, accounts.setPackage, { tenant: 'acme', package: pkg });
      const outside = await rpc(t.scheduler, t.scheduler.openSession, { ...openRequest(), tenant: 'acme' });
      expect(outside.ok ? 'ok' : outside.error.details).toMatch(/does not include model m/);
      // The model in the package, but only at the EDGE level: the province node is not for this session.
      await ok(accounts, accounts.setPackage, {
        tenant: 'acme',
        package: {
          ...pkg,
          weights: [{ model: 'm', inputPer1k: 1, outputPer1k: 1, cachedInputPer1k: 1 }],
          allowedLevels: [Level.LEVEL_EDGE],
        },
      });
      const levels = await rpc(t.scheduler, t.scheduler.openSession, { ...openRequest(), tenant: 'acme' });
      expect(levels.ok ? 'ok' : levels.error.code).toBe(status.FAILED_PRECONDITION);
      expect(levels.ok ? '' : levels.error.details).toMatch(/package does not include/);
    } finally {
      accounts.close();
      await t.close();
    }
  });
});
