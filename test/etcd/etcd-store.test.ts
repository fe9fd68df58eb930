// The etcd store against a real etcd: the shared contract, then what only a distributed store has.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authenticator } from '../../src/auth/authenticator.js';
import { DEFAULT_LATENCY_MODEL } from '../../src/core/latency.js';
import { effectivePolicy } from '../../src/core/pricing.js';
import { silentLogger } from '../../src/ops/log.js';
import { ControlPlane } from '../../src/plane/control-plane.js';
import { EtcdStore } from '../../src/store/etcd/etcd-store.js';
import { StoreRejectedError, StoreUnavailableError } from '../../src/store/store.js';
import { storeContract } from '../contract/store-contract.js';
import { type EtcdServer, eventually, startEtcd } from '../helpers/etcd.js';
import { request, spec } from '../helpers/fixtures.js';

let etcd: EtcdServer;
let namespaces = 0;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.destroy();
});

const open = (prefix: string, extra: Partial<Parameters<typeof EtcdStore.open>[0]> = {}) =>
  EtcdStore.open({
    endpoints: [etcd.endpoint],
    prefix,
    latency: DEFAULT_LATENCY_MODEL,
    logger: silentLogger,
    callTimeoutMs: 1000,
    probeIntervalMs: 200,
    ...extra,
  });

storeContract('etcd', async (options) => {
  // Each test gets its own prefix on the shared etcd, so nothing leaks between them.
  namespaces += 1;
  const store = await open(`/cpn-test-${namespaces}/`, options);
  return {
    store,
    now: () => Date.now(),
    pass: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    settle: (check) => eventually(check, 10_000),
    usage: () => store.usageRecords(),
    close: () => store.close(),
  };
});

describe('etcd store: replicas, watch, outages', () => {
  it('a reservation is released once whichever replica each Release reaches', async () => {
    const stores = [await open('/cpn-release/'), await open('/cpn-release/')] as const;
    try {
      const [a, b] = stores.map(
        (store, i) =>
          new ControlPlane({ store, clock: Date.now, reservationTtlMs: 30_000, replicaId: `replica-${i}` }),
      ) as [ControlPlane, ControlPlane];
      await stores[0].registerNode(spec({ id: 'n1' }), { ttlS: 30, permanent: false });
      await eventually(() => stores[1].getNode('n1') !== undefined, 1000);
      const usage = { inputTokens: 10, cachedInputTokens: 0, outputTokens: 5 };
      for (const [first, second] of [
        [a, b],
        [b, a],
      ] as const) {
        const placed = first.route(request({ explain: false }));
        if (placed.reservation === undefined) throw new Error(placed.decision.summary);
        const id = placed.reservation.id;
        expect(first.reservationCount()).toBe(1);
        expect(await second.release(id, usage, true)).toEqual({ released: true, nodeId: 'n1' });
        // The reserving replica frees its slot when the usage record reaches it through the watch.
        await eventually(() => first.reservationCount() === 0, 2000);
        expect(await first.release(id, usage, true)).toEqual({ released: false, nodeId: 'n1' });
        expect(await second.release(id, usage, true)).toEqual({ released: false, nodeId: 'n1' });
      }
      expect(a.reservationCount() + b.reservationCount()).toBe(0);
      expect((await stores[0].usageRecords()).map((record) => record.nodeId)).toEqual(['n1', 'n1']);
    } finally {
      await Promise.all(stores.map((store) => store.close()));
    }
  });

  it('a key revoked through one replica stops working on another as soon as the watch delivers it', async () => {
    const stores = [await open('/cpn-keys/'), await open('/cpn-keys/')] as const;
    try {
      const [a, b] = stores.map(
        (store, i) =>
          new ControlPlane({ store, clock: Date.now, reservationTtlMs: 30_000, replicaId: `replica-${i}` }),
      ) as [ControlPlane, ControlPlane];
      expect(await a.accounts.createTenant('acme', 'Acme')).toMatchObject({ kind: 'created' });
      // Another replica refuses the same name, even before its watch has shown it the tenant.
      expect(await b.accounts.createTenant('acme', 'Acme again')).toMatchObject({ kind: 'exists' });
      const created = await a.accounts.createApiKey({ role: 'client', name: 'fleet', tenant: 'acme' });
      if (created.kind !== 'created') throw new Error(created.kind);
      const authenticator = new Authenticator({
        mode: 'api-key',
        accounts: stores[1].accounts,
        clock: Date.now,
      });
      await eventually(() => stores[1].accounts.apiKey(created.record.id) !== undefined, 2000);
      expect(await authenticator.authenticate(`Bearer ${created.secret}`, undefined)).toMatchObject({
        ok: true,
        identity: { role: 'client', tenant: 'acme' },
      });
      await a.accounts.revokeApiKey(created.record.id);
      await eventually(() => {
        const outcome = authenticator.authenticate(`Bearer ${created.secret}`, undefined);
        return !(outcome instanceof Promise) && !outcome.ok && outcome.failure === 'revoked';
      }, 2000);
      // A fresh store lists what is in etcd.
      const third = await open('/cpn-keys/');
      expect(third.accounts.apiKey(created.record.id)?.revokedAtMs).toBeGreaterThan(0);
      expect(third.accounts.tenants().map((t) => t.name)).toEqual(['acme']);
      await third.close();
    } finally {
      await Promise.all(stores.map((store) => store.close()));
    }
  });

  it('a registration through one replica reaches another through the watch; so do drains and deregistrations', async () => {
    const a = await open('/cpn-replicas/');
    const b = await open('/cpn-replicas/');
    try {
      await a.registerNode(spec({ id: 'n1' }), { ttlS: 30, permanent: false });
      await eventually(() => b.getNode('n1') !== undefined, 1000);
      await b.setDraining('n1', true);
      await eventually(() => a.getNode('n1')?.draining === true, 1000);
      await a.reportStatus({
        nodeId: 'n1',
        load: [{ model: 'm', active: 2, queued: 1 }],
        gpuUtilization: 0.5,
        kvCacheUtilization: 0.1,
        healthy: true,
      });
      await eventually(() => b.getNode('n1')?.status?.load[0]?.queued === 1, 1000);
      await b.deregisterNode('n1');
      await eventually(() => a.getNode('n1') === undefined, 1000);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('writes only material status changes to etcd, at most every statusFlushMs', async () => {
    const store = await open('/cpn-flush/', { statusFlushMs: 60_000 });
    try {
      await store.registerNode(spec({ id: 'busy' }), { ttlS: 30, permanent: false });
      for (let i = 0; i < 50; i += 1) {
        await store.reportStatus({
          nodeId: 'busy',
          load: [{ model: 'm', active: i % 3, queued: 0 }],
          gpuUtilization: 0.5,
          kvCacheUtilization: 0.1,
          healthy: true,
        });
      }
      expect(store.stats.statusReports).toBe(50);
      expect(store.stats.statusFlushes).toBe(1);
      // The replica itself routes with the newest report.
      expect(store.getNode('busy')?.status?.load[0]?.active).toBe(49 % 3);
    } finally {
      await store.close();
    }
  });

  it('relists after a watch is cancelled by compaction and does not lose later writes', async () => {
    const a = await open('/cpn-compact/');
    const b = await open('/cpn-compact/');
    try {
      await a.registerNode(spec({ id: 'before' }), { ttlS: 30, permanent: false });
      await eventually(() => b.getNode('before') !== undefined, 1000);
      const relists = b.stats.relists;
      // Force b's watch back to a compacted revision: compact everything, then make b re-watch from 1.
      const { Etcd3 } = await import('etcd3');
      const admin = new Etcd3({ hosts: etcd.endpoint });
      const head = await admin.kv.range({ key: Buffer.from('/cpn-compact/') });
      await admin.kv.compact({ revision: head.header.revision, physical: true });
      admin.close();
      await (b as unknown as { watchFrom(revision: number): Promise<void> }).watchFrom(1);
      await a.registerNode(spec({ id: 'after' }), { ttlS: 30, permanent: false });
      await eventually(() => b.getNode('after') !== undefined && b.stats.relists > relists, 5000);
      expect(b.getNode('before')).toBeDefined();
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('recovers from a lost lease: the node leaves the cache, its agent is told to register again, and can', async () => {
    const store = await open('/cpn-lost-lease/');
    const { Etcd3 } = await import('etcd3');
    const admin = new Etcd3({ hosts: etcd.endpoint });
    try {
      await store.registerNode(spec({ id: 'n1' }), { ttlS: 30, permanent: false });
      const stored = await admin.get('/cpn-lost-lease/nodes/n1').json();
      await admin.leaseClient.leaseRevoke({ ID: (stored as { leaseId: string }).leaseId });
      await eventually(() => store.getNode('n1') === undefined, 2000);
      const report = { nodeId: 'n1', load: [], gpuUtilization: 0, kvCacheUtilization: 0, healthy: true };
      expect(['unknown_node', 'expired']).toContain((await store.reportStatus(report)).kind);
      await store.registerNode(spec({ id: 'n1' }), { ttlS: 30, permanent: false });
      expect((await store.reportStatus(report)).kind).toBe('accepted');
      expect(store.getNode('n1')).toBeDefined();
    } finally {
      admin.close();
      await store.close();
    }
  });

  it('latency samples evicted past the ceiling leave etcd too: a fresh replica loads only the kept ones', async () => {
    const store = await open('/cpn-evict/', { maxLatencySamples: 2 });
    try {
      await store.registerNode(spec({ id: 'n1' }), { ttlS: 30, permanent: false });
      for (const from of ['f1', 'f2', 'f3']) await store.reportLatency([{ from, nodeId: 'n1', rttMs: 10 }]);
      const fresh = await open('/cpn-evict/');
      try {
        expect(['f1', 'f2', 'f3'].filter((from) => fresh.view.samplesFrom(from) !== undefined)).toEqual([
          'f2',
          'f3',
        ]);
      } finally {
        await fresh.close();
      }
    } finally {
      await store.close();
    }
  });

  it('a request etcd refuses (too large) is StoreRejectedError, leaves the cache unchanged and never opens the breaker', async () => {
    const store = await open('/cpn-refused/');
    try {
      const huge = spec({ id: 'huge' });
      const tooLarge = { ...huge, labels: { blob: 'x'.repeat(2 * 1024 * 1024) } };
      for (let i = 0; i < 6; i += 1) {
        await expect(store.registerNode(tooLarge, { ttlS: 30, permanent: false })).rejects.toBeInstanceOf(
          StoreRejectedError,
        );
      }
      expect(store.getNode('huge')).toBeUndefined();
      // Healthy writes go straight through: no "unreachable", no open circuit.
      await store.registerNode(spec({ id: 'fine' }), { ttlS: 30, permanent: false });
      expect(store.getNode('fine')).toBeDefined();
      expect(store.health().reachable).toBe(true);
    } finally {
      await store.close();
    }
  });

  it('elects one leader; a leader whose lease is lost stops leading at once and another takes over', async () => {
    const a = await open('/cpn-election/');
    const b = await open('/cpn-election/');
    const la = a.leadership('jobs', 2);
    const lb = b.leadership('jobs', 2);
    const { Etcd3 } = await import('etcd3');
    const admin = new Etcd3({ hosts: etcd.endpoint });
    try {
      await eventually(() => la.isLeader() || lb.isLeader(), 5000);
      expect(la.isLeader() && lb.isLeader()).toBe(false);
      const [leader, follower] = la.isLeader() ? [la, lb] : [lb, la];
      const changes: boolean[] = [];
      leader.onChange((now) => changes.push(now));
      const held = await admin.kv.range({ key: Buffer.from('/cpn-election/election/jobs') });
      await admin.leaseClient.leaseRevoke({ ID: held.kvs[0]?.lease ?? '0' });
      const revokedAt = Date.now();
      await eventually(() => !leader.isLeader(), 2000, 10);
      expect(Date.now() - revokedAt).toBeLessThan(2000);
      expect(changes).toEqual([false]);
      await eventually(() => follower.isLeader() || leader.isLeader(), 5000);
      expect(la.isLeader() && lb.isLeader()).toBe(false);
    } finally {
      admin.close();
      await la.close();
      await lb.close();
      await a.close();
      await b.close();
    }
  });

  it('a price change scheduled through one replica takes effect on another at its time, and folds once due', async () => {
    const a = await open('/cpn-pricing/');
    const b = await open('/cpn-pricing/');
    try {
      const atMs = Date.now() + 60_000;
      const policy = {
        utcOffsetHours: 8,
        rules: [
          { level: 'CENTER' as const, region: undefined, model: undefined, factor: 0.5, window: undefined },
        ],
      };
      await a.schedulePricing({ id: 'half', atMs, policy });
      await eventually(() => b.pricing().scheduled.length === 1, 1000);
      expect(effectivePolicy(b.pricing(), atMs - 1).rules).toEqual([]);
      expect(effectivePolicy(b.pricing(), atMs)).toEqual(policy);
      expect(await a.foldDuePricing(atMs - 1)).toBe(0);
      expect(await a.foldDuePricing(atMs)).toBe(1);
      await eventually(
        () => b.pricing().scheduled.length === 0 && b.pricing().current.rules.length === 1,
        1000,
      );
      expect(await b.cancelPricing('half')).toBe(false);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('serves from its cache while etcd is down, fails writes fast, and resyncs when it returns', async () => {
    const local = await startEtcd();
    const store = await EtcdStore.open({
      endpoints: [local.endpoint],
      latency: DEFAULT_LATENCY_MODEL,
      logger: silentLogger,
      callTimeoutMs: 1000,
      probeIntervalMs: 200,
    });
    try {
      await store.registerNode(spec({ id: 'kept' }), { ttlS: 30, permanent: false });
      await local.stop();
      expect(store.getNode('kept')).toBeDefined();
      const started = Date.now();
      await expect(
        store.registerNode(spec({ id: 'during' }), { ttlS: 30, permanent: false }),
      ).rejects.toBeInstanceOf(StoreUnavailableError);
      expect(Date.now() - started).toBeLessThan(5000);
      await eventually(() => store.unreachableSince() !== undefined && store.stalenessMs() > 400, 5000);
      // A node that keeps reporting during the outage is accepted locally.
      expect(
        (
          await store.reportStatus({
            nodeId: 'kept',
            load: [],
            gpuUtilization: 0,
            kvCacheUtilization: 0,
            healthy: true,
          })
        ).kind,
      ).toBe('accepted');
      await local.start();
      await eventually(() => store.stalenessMs() < 1000, 15_000);
      // The etcd3 client's circuit breaker may still hold writes back for a moment after the
      // cache is current again; a write must go through within a bounded time, and until then
      // each attempt must fail as UNAVAILABLE, never as something else.
      await eventually(
        () =>
          store.registerNode(spec({ id: 'after' }), { ttlS: 30, permanent: false }).then(
            () => true,
            (error: unknown) => {
              expect(error).toBeInstanceOf(StoreUnavailableError);
              return false;
            },
          ),
        15_000,
        200,
      );
      expect(store.listNodes({}).map((n) => n.spec.id)).toEqual(['after', 'kept']);
    } finally {
      await store.close();
      await local.destroy();
    }
  });
});
