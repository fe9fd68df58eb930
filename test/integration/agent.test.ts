// The node agent against a real gRPC control plane and a fake engine serving vLLM's metrics text:
// the node appears READY with the engine's load, a material change shows within a few reads, a
// wiggle below the hysteresis sends nothing, an engine that cannot be read makes the node
// UNHEALTHY (and Route chooses another node) until it is readable again.
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { grpcAgentPlane } from '../../src/cli/agent.js';
import { RouteRequest } from '../../src/gen/cpn/v1/scheduler.js';
import { NodeState } from '../../src/gen/cpn/v1/types.js';
import { silentLogger } from '../../src/ops/log.js';
import { eventually } from '../helpers/etcd.js';
import {
  type EngineLoad,
  sglangMetrics,
  startMetricsServer,
  tgiMetrics,
  vllmMetrics,
} from '../helpers/fake-engine-metrics.js';
import { ok, protoSpec, rpc, startTestServer, TEST_OPERATOR_KEY, type TestServer } from '../helpers/grpc.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';

describe('cpn agent beside a vLLM engine', () => {
  let t: TestServer;
  let metrics: Awaited<ReturnType<typeof startMetricsServer>>;
  let agent: Agent;
  let plane: ReturnType<typeof grpcAgentPlane>;
  const load: EngineLoad = { running: 3, waiting: 0, kv: 0.2 };
  const node = async () => (await ok(t.registry, t.registry.getNode, { nodeId: 'gpu-1' })).node;
  const routed = async () =>
    (
      await ok(
        t.scheduler,
        t.scheduler.route,
        RouteRequest.fromPartial({
          model: 'm',
          client: { region: 'CN-GD' },
          latencyBudgetMs: 60_000,
          inputTokens: 10,
        }),
      )
    ).placement?.nodeId;
  /** Resolves after the agent has read the engine `n` more times. */
  const reads = async (n: number) => {
    const target = agent.counts.reads + n;
    await eventually(() => agent.counts.reads >= target, 10_000, 10);
  };

  beforeAll(async () => {
    t = await startTestServer();
    metrics = await startMetricsServer(() => vllmMetrics('m', load));
    // A dearer node without an agent, for Route to fall back on.
    await ok(t.registry, t.registry.registerNode, {
      spec: protoSpec('gpu-2', { inputPerMtok: 5 }),
      ttlS: 0,
      permanent: true,
    });
    const key = await t.server.plane.accounts.createApiKey({
      role: 'agent',
      name: 'agent of gpu-1',
      nodeId: 'gpu-1',
    });
    if (key.kind !== 'created') throw new Error('no agent key');
    plane = grpcAgentPlane([t.address], key.secret, 5000);
    agent = new Agent({
      plane,
      spec: protoSpec('gpu-1'),
      ttlS: 60,
      engine: 'auto',
      metricsUrl: metrics.url,
      intervalMs: 50,
      unhealthyAfter: 3,
      graceMs: 2000,
      logger: silentLogger,
      // The metrics server's port stands for an access point's address.
      probes: [{ from: 'ap-gd-1', host: '127.0.0.1', port: Number(new URL(metrics.url).port) }],
      probeIntervalMs: 200,
    });
    await agent.start();
  });
  afterAll(async () => {
    await agent?.stop();
    plane?.close();
    await metrics?.close();
    await t?.close();
  });

  it('registers the node, which is READY with the load the engine reports', async () => {
    await eventually(async () => (await node())?.status?.load[0]?.active === 3);
    expect((await node())?.state).toBe(NodeState.NODE_STATE_READY);
    expect((await node())?.status?.kvCacheUtilization).toBeCloseTo(0.2);
    expect(await routed()).toBe('gpu-1');
    // Statuses go on one Heartbeat stream, not as ReportStatus calls.
    const text = await t.server.metrics.registry.metrics();
    expect(text).toMatch(/cpn_rpc_stream_messages_total\{method="Heartbeat"\} [1-9]/);
    expect(text).not.toMatch(/method="ReportStatus"/);
    expect(plane.link.counts.opened).toBe(1);
  });

  it("measures TCP connect time from its probe targets and reports it as the node's latency", async () => {
    await eventually(() => t.store.view.samplesFrom('ap-gd-1')?.get('gpu-1') !== undefined);
    const sample = t.store.view.samplesFrom('ap-gd-1')?.get('gpu-1');
    expect(sample?.rttMs).toBeGreaterThanOrEqual(0);
    expect(sample?.rttMs).toBeLessThan(2000);
  });

  it('a material change shows within a few reads; a wiggle below the hysteresis sends nothing', async () => {
    const readsBefore = agent.counts.reads;
    load.running = 8;
    load.waiting = 2;
    await eventually(async () => (await node())?.status?.load[0]?.active === 8);
    // Reported from the read in flight at the change (a read is counted when it starts, and the
    // engine may answer it after the change), the first that started after it, or the next: within
    // two heartbeat intervals.
    expect(agent.counts.readsAtLastReport - readsBefore).toBeGreaterThanOrEqual(0);
    expect(agent.counts.readsAtLastReport - readsBefore).toBeLessThanOrEqual(2);
    expect((await node())?.status?.load[0]?.queued).toBe(2);
    await reads(2);
    const sent = agent.counts.reports;
    load.running = 9; // one more of a capacity of 16: below a tenth
    await reads(5);
    expect(agent.counts.reports).toBe(sent);
    expect((await node())?.status?.load[0]?.active).toBe(8);
  });

  it('an engine that cannot be read makes the node UNHEALTHY after the configured failures, READY when it returns', async () => {
    metrics.down = true;
    await eventually(async () => (await node())?.state === NodeState.NODE_STATE_UNHEALTHY);
    expect(agent.counts.failedReads).toBeGreaterThanOrEqual(3);
    expect(await routed()).toBe('gpu-2');
    metrics.down = false;
    await eventually(async () => (await node())?.state === NodeState.NODE_STATE_READY);
    expect(await routed()).toBe('gpu-1');
  });

  it('stop drains the node, waits for the engine to finish what it runs, then deregisters it', async () => {
    load.running = 2;
    const stopped = agent.stop();
    await eventually(async () => (await node())?.state === NodeState.NODE_STATE_DRAINING);
    expect(await routed()).toBe('gpu-2');
    // Still registered while the engine has work.
    await reads(2);
    expect((await node())?.spec?.id).toBe('gpu-1');
    load.running = 0;
    await stopped;
    const gone = await rpc(t.registry, t.registry.getNode, { nodeId: 'gpu-1' });
    expect(gone.ok || gone.error.code).toBe(status.NOT_FOUND);
    // The goodbye went on the stream.
    expect(await t.server.metrics.registry.metrics()).not.toMatch(/method="DeregisterNode"/);
  });
});

describe('cpn agent whose connection to the control plane breaks', () => {
  it('reconnects with backoff, keeps reading meanwhile, and sends its latest state on the new stream', async () => {
    const t = await startTestServer();
    const proxy = await startTcpProxy('127.0.0.1', t.server.port);
    const load: EngineLoad = { running: 1, waiting: 0, kv: 0.1 };
    const metrics = await startMetricsServer(() => vllmMetrics('m', load));
    const plane = grpcAgentPlane([proxy.address], TEST_OPERATOR_KEY, 2000, silentLogger, {
      baseMs: 50,
      maxMs: 400,
    });
    const agent = new Agent({
      plane,
      spec: protoSpec('gpu-9'),
      ttlS: 60,
      engine: 'vllm',
      metricsUrl: metrics.url,
      intervalMs: 50,
      graceMs: 0,
      logger: silentLogger,
    });
    const node = async () => (await ok(t.registry, t.registry.getNode, { nodeId: 'gpu-9' })).node;
    try {
      await agent.start();
      await eventually(async () => (await node())?.status?.load[0]?.active === 1);
      proxy.drop();
      // While cut off: the engine is still read, reports fail, and a change is not yet seen.
      const reads = agent.counts.reads;
      load.running = 12;
      await eventually(() => agent.counts.failedReports >= 2 && agent.counts.reads >= reads + 3);
      expect((await node())?.status?.load[0]?.active).toBe(1);
      proxy.resume();
      await eventually(async () => (await node())?.status?.load[0]?.active === 12);
      expect(plane.link.counts.opened).toBeGreaterThanOrEqual(2);
      expect(plane.link.counts.broken).toBeGreaterThanOrEqual(1);
      // Nothing changed since: the damper is back in charge, and the keep-alive is far off.
      const sent = agent.counts.reports;
      await eventually(() => agent.counts.reads >= reads + 10);
      expect(agent.counts.reports).toBe(sent);
    } finally {
      await agent.stop();
      plane.close();
      await metrics.close();
      await proxy.close();
      await t.close();
    }
  });
});

describe.each([
  ['SGLang', (load: EngineLoad) => sglangMetrics('m', load), 0.4],
  ['TGI', (load: EngineLoad) => tgiMetrics(load), undefined],
] as const)('cpn agent beside %s (engine auto)', (_engine, page, kv) => {
  it('the node is READY with the engine load, follows a change, and goes UNHEALTHY when the engine does', async () => {
    const t = await startTestServer();
    const load: EngineLoad = { running: 2, waiting: 1, kv: 0.4 };
    const metrics = await startMetricsServer(() => page(load));
    const plane = grpcAgentPlane([t.address], TEST_OPERATOR_KEY, 2000, silentLogger);
    const agent = new Agent({
      plane,
      spec: protoSpec('gpu-e'),
      ttlS: 60,
      engine: 'auto',
      metricsUrl: metrics.url,
      intervalMs: 50,
      unhealthyAfter: 2,
      graceMs: 0,
      logger: silentLogger,
    });
    const node = async () => (await ok(t.registry, t.registry.getNode, { nodeId: 'gpu-e' })).node;
    try {
      await agent.start();
      await eventually(async () => (await node())?.status?.load[0]?.active === 2);
      expect((await node())?.state).toBe(NodeState.NODE_STATE_READY);
      expect((await node())?.status?.load[0]?.queued).toBe(1);
      // TGI has no KV-cache gauge: unknown, not zero.
      if (kv === undefined) expect((await node())?.status?.kvCacheUtilization).toBeUndefined();
      else expect((await node())?.status?.kvCacheUtilization).toBeCloseTo(kv);
      load.running = 9;
      await eventually(async () => (await node())?.status?.load[0]?.active === 9);
      metrics.down = true;
      await eventually(async () => (await node())?.state === NodeState.NODE_STATE_UNHEALTHY);
      metrics.down = false;
      await eventually(async () => (await node())?.state === NodeState.NODE_STATE_READY);
    } finally {
      load.running = 0;
      await agent.stop();
      plane.close();
      await metrics.close();
      await t.close();
    }
  });
});
