// Partitions between cpn and etcd (node-leases.ts): two `cpn serve` replicas reach one real etcd
// through fault-injecting TCP proxies, nodes keep reporting to them, and etcd is cut off (proxies
// paused) or frozen (SIGSTOP) for longer than the nodes' TTL. Every report is answered OK during
// the fault, the leader steps down, and afterwards every node that kept reporting is READY on both
// replicas again, on a new lease, without re-registering; exactly one replica leads.
import { credentials, status } from '@grpc/grpc-js';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../../src/gen/cpn/v1/registry.js';
import { Level, NodeState } from '../../src/gen/cpn/v1/types.js';
import { CLI_OPERATOR_KEY, type ServeProcess } from '../helpers/cli.js';
import { type EtcdServer, eventually, startEtcd } from '../helpers/etcd.js';
import { ALL_NODES, bearer, ok, protoSpec, rpc } from '../helpers/grpc.js';
import { serveOnEtcd } from '../helpers/replica.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

const TTL_S = 3;
const NODES = 8;

interface Replica {
  readonly serve: ServeProcess;
  readonly proxy: TcpProxy;
  readonly registry: RegistryClient;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('etcd partitions', () => {
  let etcd: EtcdServer;
  let direct: Etcd3;
  const replicas: Replica[] = [];
  const ids = Array.from({ length: NODES }, (_, i) => `n${i}`);
  /** Node i reports to replica i % 2. */
  const home = (i: number) => replicas[i % 2] as Replica;
  const failures: string[] = [];
  let reports = 0;
  let reporting = true;
  let reporter: Promise<void> = Promise.resolve();

  const leaseIds = async () =>
    Promise.all(
      ids.map(async (id) => {
        const value = await direct.get(`/cpn/v1/nodes/${id}`).string();
        return value === null ? 'absent' : (JSON.parse(value) as { leaseId: string }).leaseId;
      }),
    );
  const readyEverywhere = async () => {
    for (const replica of replicas) {
      const listed = await rpc(replica.registry, replica.registry.listNodes, ALL_NODES);
      if (!listed.ok) return false;
      const ready = listed.value.nodes.filter((n) => n.state === NodeState.NODE_STATE_READY).length;
      if (ready !== NODES) return false;
    }
    return true;
  };
  const leaders = async () =>
    Promise.all(
      replicas.map(async (r) => {
        const text = await (await fetch(`${r.serve.metricsUrl()}/metrics`)).text();
        return /^cpn_leader 1$/m.test(text);
      }),
    );

  beforeAll(async () => {
    etcd = await startEtcd();
    direct = new Etcd3({ hosts: etcd.endpoint });
    const port = Number(new URL(etcd.endpoint).port);
    for (let i = 0; i < 2; i += 1) {
      const proxy = await startTcpProxy('127.0.0.1', port);
      const serve = await serveOnEtcd(`http://${proxy.address}`, 500);
      replicas.push({
        serve,
        proxy,
        registry: new RegistryClient(serve.address, credentials.createInsecure(), bearer(CLI_OPERATOR_KEY)),
      });
    }
    for (const [i, id] of ids.entries()) {
      await ok(home(i).registry, home(i).registry.registerNode, {
        spec: protoSpec(id, { level: Level.LEVEL_EDGE }),
        ttlS: TTL_S,
        permanent: false,
      });
    }
    // Every node reports to its replica every 400 ms for as long as the tests run (bounded).
    reporter = (async () => {
      for (let round = 0; reporting && round < 400; round += 1) {
        await Promise.all(
          ids.map(async (id, i) => {
            const outcome = await rpc(home(i).registry, home(i).registry.reportStatus, {
              nodeId: id,
              load: [{ model: 'm', active: round % 3, queued: 0 }],
              gpuUtilization: 0.5,
              kvCacheUtilization: 0.2,
              healthy: true,
            });
            reports += 1;
            if (!outcome.ok) failures.push(`${id}: ${status[outcome.error.code]} ${outcome.error.details}`);
          }),
        );
        await sleep(400);
      }
    })();
    await eventually(readyEverywhere, 30_000, 100);
    await eventually(async () => (await leaders()).filter(Boolean).length === 1, 40_000, 200);
  }, 120_000);

  afterAll(async () => {
    reporting = false;
    await reporter;
    for (const r of replicas) {
      r.registry.close();
      await r.serve.stop('SIGKILL');
      await r.proxy.close();
    }
    direct?.close();
    await etcd?.destroy();
  });

  it('both replicas cut off from etcd for 3 TTLs: reports keep succeeding, nodes come back on new leases, one leader', async () => {
    const before = await leaseIds();
    const reportsBefore = reports;
    for (const r of replicas) r.proxy.pause();
    // The leader stops believing it leads (its validity is 2/3 of the 10 s election TTL).
    await eventually(async () => (await leaders()).every((leader) => !leader), 30_000, 200);
    // Meanwhile etcd expired every node lease: nothing renewed them.
    await eventually(async () => (await leaseIds()).every((lease) => lease === 'absent'), 30_000, 200);
    // Reports kept flowing through the cut (each node at least twice, however busy the machine).
    expect(reports - reportsBefore).toBeGreaterThanOrEqual(NODES * 2);
    for (const r of replicas) r.proxy.resume();

    await eventually(readyEverywhere, 30_000, 100);
    await eventually(async () => (await leaseIds()).every((lease) => lease !== 'absent'), 30_000, 100);
    const after = await leaseIds();
    for (const [i, lease] of after.entries()) expect(lease).not.toBe(before[i]);
    await eventually(async () => (await leaders()).filter(Boolean).length === 1, 40_000, 200);
    expect(failures).toEqual([]);
  }, 150_000);

  it('etcd frozen (SIGSTOP) beyond the TTL: the same, and nodes stay READY afterwards', async () => {
    const before = await leaseIds();
    etcd.pause();
    await sleep((TTL_S + 2) * 1000);
    etcd.resume();
    await eventually(
      async () => {
        const leases = await leaseIds();
        return leases.every((lease, i) => lease !== 'absent' && lease !== before[i]);
      },
      30_000,
      100,
    );
    await eventually(readyEverywhere, 30_000, 100);
    // Still there two TTLs later: the new leases are being renewed.
    await sleep(2 * TTL_S * 1000);
    expect(await readyEverywhere()).toBe(true);
    expect(failures, replicas.map((r) => r.serve.stderr()).join('\n')).toEqual([]);
  }, 150_000);
});
