// The agent given two replicas of one control plane on etcd: when the one it talks to is killed
// or frozen, it reports through the other, and the node never leaves the registry or goes DOWN.
import { credentials, status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { agentPlaneFor } from '../../src/cli/agent.js';
import { RegistryClient } from '../../src/gen/cpn/v1/registry.js';
import { NodeState } from '../../src/gen/cpn/v1/types.js';
import { silentLogger } from '../../src/ops/log.js';
import { CLI_OPERATOR_KEY, type ServeProcess } from '../helpers/cli.js';
import { type EtcdServer, eventually, startEtcd } from '../helpers/etcd.js';
import { startMetricsServer, vllmMetrics } from '../helpers/fake-engine-metrics.js';
import { bearer, protoSpec, rpc } from '../helpers/grpc.js';
import { serveOnEtcd } from '../helpers/replica.js';

const TTL_S = 3;

describe.each([
  ['killed (SIGKILL: its connections close)', 'SIGKILL'],
  ['frozen (SIGSTOP: its connections stay open, nothing answers)', 'SIGSTOP'],
] as const)('agent failover when the replica it talks to is %s', (_what, signal) => {
  let etcd: EtcdServer;
  const replicas: ServeProcess[] = [];
  let metrics: Awaited<ReturnType<typeof startMetricsServer>>;
  let agent: Agent;
  let plane: ReturnType<typeof agentPlaneFor>;
  let observer: RegistryClient;

  beforeAll(async () => {
    etcd = await startEtcd();
    for (let i = 0; i < 2; i += 1) {
      replicas.push(await serveOnEtcd(etcd.endpoint, 1000));
    }
    metrics = await startMetricsServer(() => vllmMetrics('m', { running: 2, waiting: 0, kv: 0.1 }));
    plane = agentPlaneFor(
      replicas.map((r) => r.address),
      CLI_OPERATOR_KEY,
      TTL_S,
      5000,
      silentLogger,
    );
    agent = new Agent({
      plane,
      spec: protoSpec('edge-1'),
      ttlS: TTL_S,
      engine: 'vllm',
      metricsUrl: metrics.url,
      intervalMs: 200,
      graceMs: 0,
      logger: silentLogger,
    });
    await agent.start();
    observer = new RegistryClient(
      replicas[1]?.address ?? '',
      credentials.createInsecure(),
      bearer(CLI_OPERATOR_KEY),
    );
  }, 60_000);

  afterAll(async () => {
    await agent?.stop();
    plane?.close();
    observer?.close();
    for (const r of replicas) await r.stop('SIGKILL');
    replicas.length = 0;
    await metrics?.close();
    await etcd?.destroy();
  });

  it('reports through the second replica; the node stays READY for three TTLs', async () => {
    const state = async () => {
      const outcome = await rpc(observer, observer.getNode, { nodeId: 'edge-1' });
      return outcome.ok ? outcome.value.node?.state : `error ${status[outcome.error.code]}`;
    };
    await eventually(async () => (await state()) === NodeState.NODE_STATE_READY, 10_000, 50);
    const reportsBefore = agent.counts.reports;
    if (signal === 'SIGKILL') await replicas[0]?.stop('SIGKILL');
    else replicas[0]?.child.kill('SIGSTOP');
    // Observe through the surviving replica for three TTLs: never gone, never DOWN.
    const seen = new Set<unknown>();
    const until = Date.now() + 3 * TTL_S * 1000;
    while (Date.now() < until) {
      seen.add(await state());
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect([...seen]).toEqual([NodeState.NODE_STATE_READY]);
    // Keep-alives went on, through the second replica.
    expect(agent.counts.reports).toBeGreaterThan(reportsBefore);
  }, 60_000);
});
