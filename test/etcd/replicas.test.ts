// Two `cpn serve --store etcd` processes on one real etcd, talked to over gRPC.
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RegisterNodeRequest } from '../../src/gen/cpn/v1/registry.js';
import type { RouteRequest } from '../../src/gen/cpn/v1/scheduler.js';
import { startServe } from '../helpers/cli.js';
import { type EtcdServer, eventually, startEtcd } from '../helpers/etcd.js';
import { ALL_NODES, ok, protoSpec, rpc } from '../helpers/grpc.js';
import { type Replica, replicaOf, startReplica, stopReplica } from '../helpers/replica.js';

const routeRequest: RouteRequest = {
  requestId: '',
  tenant: 't',
  model: 'm',
  client: { region: 'CN-GD', accessPoint: '', location: undefined },
  latencyBudgetMs: 1000,
  inputTokens: 100,
  cachedInputTokens: 0,
  maxOutputTokens: 10,
  allowedLevels: [],
  allowedRegions: [],
  allowDegraded: false,
  explain: false,
  maxFallbacks: 0,
};

describe('several replicas on one etcd', () => {
  let etcd: EtcdServer;
  let a: Replica;
  let b: Replica;
  const replica = () => startReplica(etcd);
  const routedOn = async (r: Replica) => {
    const outcome = await rpc(r.scheduler, r.scheduler.route, routeRequest);
    return outcome.ok ? outcome.value.placement?.nodeId : `error ${outcome.error.code}`;
  };

  beforeAll(async () => {
    etcd = await startEtcd();
    a = await replica();
    b = await replica();
  });
  afterAll(async () => {
    for (const r of [a, b]) await stopReplica(r);
    await etcd?.destroy();
  });

  it('a node registered through A is routable through B within a second', async () => {
    const register: RegisterNodeRequest = {
      spec: protoSpec('cheap', { inputPerMtok: 1 }),
      ttlS: 60,
      permanent: false,
    };
    await ok(a.registry, a.registry.registerNode, register);
    const registeredAt = Date.now();
    await eventually(async () => (await routedOn(b)) === 'cheap', 1000, 20);
    expect(Date.now() - registeredAt).toBeLessThan(1000);
  });

  it('a drain through B is honoured by A', async () => {
    await ok(a.registry, a.registry.registerNode, {
      spec: protoSpec('dear', { inputPerMtok: 5 }),
      ttlS: 60,
      permanent: false,
    });
    await eventually(
      async () => (await ok(b.registry, b.registry.listNodes, ALL_NODES)).nodes.length === 2,
      1000,
      20,
    );
    await ok(b.registry, b.registry.drainNode, { nodeId: 'cheap', drain: true });
    await eventually(async () => (await routedOn(a)) === 'dear', 1000, 20);
    await ok(a.registry, a.registry.drainNode, { nodeId: 'cheap', drain: false });
    await eventually(async () => (await routedOn(b)) === 'cheap', 1000, 20);
  });

  it('a node whose lease expires disappears from both replicas', async () => {
    await ok(a.registry, a.registry.registerNode, {
      spec: protoSpec('ephemeral', { inputPerMtok: 0.5 }),
      ttlS: 2,
      permanent: false,
    });
    await eventually(async () => (await routedOn(b)) === 'ephemeral', 1000, 20);
    const gone = async (r: Replica) => {
      const outcome = await rpc(r.registry, r.registry.getNode, { nodeId: 'ephemeral' });
      return !outcome.ok && outcome.error.code === status.NOT_FOUND;
    };
    await eventually(async () => (await gone(a)) && (await gone(b)), 10_000, 100);
    expect(await routedOn(a)).toBe('cheap');
  });

  it('B keeps serving after A is killed', async () => {
    await a.serve.stop('SIGKILL');
    expect(await routedOn(b)).toBe('cheap');
    const status = await ok(b.registry, b.registry.getStoreStatus, {});
    expect(status).toMatchObject({ kind: 'etcd', reachable: true });
  });
});

describe('a replica while etcd is down', () => {
  it('routes from its cache, reports staleness, fails writes fast with UNAVAILABLE, and recovers', async () => {
    const etcd = await startEtcd();
    const replica = await startReplica(etcd);
    const { registry, scheduler } = replica;
    try {
      await ok(registry, registry.registerNode, {
        spec: protoSpec('before', { inputPerMtok: 1 }),
        ttlS: 60,
        permanent: false,
      });
      await etcd.stop();

      expect((await ok(scheduler, scheduler.route, routeRequest)).placement?.nodeId).toBe('before');
      const started = Date.now();
      const refused = await rpc(registry, registry.registerNode, {
        spec: protoSpec('during', { inputPerMtok: 1 }),
        ttlS: 60,
        permanent: false,
      });
      expect(Date.now() - started).toBeLessThan(5000);
      expect(refused.ok || [refused.error.code, refused.error.details]).toEqual([
        status.UNAVAILABLE,
        expect.stringContaining('etcd is unreachable'),
      ]);
      await eventually(
        async () => {
          const health = await ok(registry, registry.getStoreStatus, {});
          return !health.reachable && health.stalenessS > 0.5 && health.unreachableSince !== undefined;
        },
        10_000,
        100,
      );

      await etcd.start();
      await eventually(
        async () =>
          (
            await rpc(registry, registry.registerNode, {
              spec: protoSpec('after', { inputPerMtok: 2 }),
              ttlS: 60,
              permanent: false,
            })
          ).ok,
        20_000,
        200,
      );
      const listed = await ok(registry, registry.listNodes, ALL_NODES);
      expect(listed.nodes.map((n) => n.spec?.id)).toEqual(['after', 'before']);
      expect((await ok(registry, registry.getStoreStatus, {})).reachable).toBe(true);
    } finally {
      await stopReplica(replica);
      await etcd.destroy();
    }
  });
});

describe('a replica started while etcd is down', () => {
  it('waits for etcd, trying again, then serves; it gives up after --etcd-startup-wait-ms, saying so', async () => {
    const etcd = await startEtcd();
    let replica: Replica | undefined;
    try {
      await etcd.stop();
      // Given up: a short wait, and the message says how long it waited and which setting to raise.
      const gaveUp = await startServe([
        '--store',
        'etcd',
        '--etcd-endpoints',
        etcd.endpoint,
        '--etcd-timeout-ms',
        '300',
        '--etcd-startup-wait-ms',
        '800',
      ]).then(
        () => 'started',
        (error: Error) => error.message,
      );
      expect(gaveUp).toMatch(/exited with 1 before listening/);
      expect(gaveUp).toMatch(
        /etcd is unreachable .*\(waited \d+\.\d s at start-up; --etcd-startup-wait-ms\)/,
      );

      // Waited for: etcd starts once the replica has said it is trying again.
      let retrying: () => void = () => undefined;
      const retried = new Promise<void>((resolve) => {
        retrying = resolve;
      });
      const starting = startServe(
        ['--store', 'etcd', '--etcd-endpoints', etcd.endpoint, '--etcd-timeout-ms', '300'],
        60_000,
        {},
        (chunk) => {
          if (chunk.includes('etcd not answering at start-up')) retrying();
        },
      );
      // (A replica that gave up instead fails here at once.)
      await Promise.race([
        retried,
        starting.then(() => {
          throw new Error('listening while etcd was down');
        }),
      ]);
      await etcd.start();
      const serve = await starting;
      replica = replicaOf(serve);
      const { registry, scheduler } = replica;
      await ok(registry, registry.registerNode, {
        spec: protoSpec('late', { inputPerMtok: 1 }),
        ttlS: 60,
        permanent: false,
      });
      expect((await ok(scheduler, scheduler.route, routeRequest)).placement?.nodeId).toBe('late');
    } finally {
      await stopReplica(replica);
      await etcd.destroy();
    }
  });
});
