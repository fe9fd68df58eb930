// SIGTERM on a real `cpn agent` process while clients keep routing to its node: once the node is
// seen DRAINING, no route sent after that lands on it (they go to the other node, and none fail);
// the agent waits for the engine's running requests, deregisters the node and exits 0.
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RouteRequest } from '../../src/gen/cpn/v1/scheduler.js';
import { NodeState } from '../../src/gen/cpn/v1/types.js';
import { CPN_BIN } from '../helpers/cli.js';
import { eventually } from '../helpers/etcd.js';
import { type EngineLoad, startMetricsServer, vllmMetrics } from '../helpers/fake-engine-metrics.js';
import { ok, protoSpec, rpc, startTestServer, type TestServer } from '../helpers/grpc.js';

const TOPOLOGY = `version: 1
regions:
  CN-GD: { name: Guangdong, lat: 23.129, lon: 113.264 }
models:
  m: { input_per_mtok: 1.0, output_per_mtok: 4.0, cached_input_per_mtok: 0.1 }
profiles:
  site:
    price_factor: 1
    gpus: [{ type: L20, count: 8, memory_gib: 48 }]
    offers:
      m: { max_concurrency: 64, max_queue: 64, prefill_tokens_per_s: 10000, decode_tokens_per_s: 50 }
nodes:
  - { id: agent-node, level: PROVINCE, region: CN-GD, profile: site, lat: 23.1, lon: 113.3 }
`;

describe('cpn agent SIGTERM under routing load', () => {
  let t: TestServer;
  let dir: string;
  let metrics: Awaited<ReturnType<typeof startMetricsServer>>;
  const load: EngineLoad = { running: 2, waiting: 0, kv: 0.3 };

  beforeAll(async () => {
    t = await startTestServer();
    dir = await mkdtemp(join(tmpdir(), 'cpn-agent-sigterm-'));
    await writeFile(join(dir, 'node.yaml'), TOPOLOGY);
    metrics = await startMetricsServer(() => vllmMetrics('m', load));
    // Dearer, always there: where routes go once the agent's node drains.
    await ok(t.registry, t.registry.registerNode, {
      spec: protoSpec('other', { inputPerMtok: 5 }),
      ttlS: 0,
      permanent: true,
    });
  });
  afterAll(async () => {
    await metrics?.close();
    await t?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('no placement on the node after its drain is seen; deregistered at the end; exit 0', async () => {
    const key = await t.server.plane.accounts.createApiKey({
      role: 'agent',
      name: 'a',
      nodeId: 'agent-node',
    });
    if (key.kind !== 'created') throw new Error('no agent key');
    const child = spawn(
      process.execPath,
      [
        CPN_BIN,
        'agent',
        '--node',
        join(dir, 'node.yaml'),
        '--engine-metrics',
        metrics.url,
        '--interval-ms',
        '100',
        '--grace-ms',
        '30000',
        '--server',
        t.address,
      ],
      { env: { ...process.env, CPN_API_KEY: key.secret }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const state = async () => {
      const got = await rpc(t.registry, t.registry.getNode, { nodeId: 'agent-node' });
      return got.ok ? got.value.node?.state : got.error.code === status.NOT_FOUND ? 'gone' : 'error';
    };

    const routes: { sentAt: number; nodeId: string | undefined; failed: boolean }[] = [];
    let stopLoad = false;
    const deadline = performance.now() + 60_000;
    /** One client: route, release, again (bounded in count and time). */
    const client = async () => {
      for (let i = 0; i < 5000 && !stopLoad && performance.now() < deadline; i += 1) {
        const sentAt = performance.now();
        const routed = await rpc(
          t.scheduler,
          t.scheduler.route,
          RouteRequest.fromPartial({
            model: 'm',
            client: { region: 'CN-GD' },
            latencyBudgetMs: 60_000,
            inputTokens: 100,
          }),
        );
        routes.push({
          sentAt,
          nodeId: routed.ok ? routed.value.placement?.nodeId : undefined,
          failed: !routed.ok,
        });
        if (routed.ok)
          await rpc(t.scheduler, t.scheduler.release, {
            reservationId: routed.value.reservationId,
            success: true,
            usage: undefined,
          });
      }
    };
    let drainSeenAt: number | undefined;
    const watch = async () => {
      while (!stopLoad && performance.now() < deadline) {
        const now = performance.now();
        const seen = await state();
        if (seen === NodeState.NODE_STATE_DRAINING || seen === 'gone') {
          drainSeenAt = now;
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };
    try {
      await eventually(async () => (await state()) === NodeState.NODE_STATE_READY, 20_000, 50);
      const clients = Promise.all([client(), client(), client(), client()]);
      // The cheaper node takes the load while it is up.
      await eventually(() => routes.filter((r) => r.nodeId === 'agent-node').length >= 20, 20_000, 10);
      const watching = watch();
      child.kill('SIGTERM');
      await watching;
      expect(drainSeenAt).toBeDefined();
      const seenAt = drainSeenAt as number;
      // Routing goes on while the engine finishes its requests; the node is still registered.
      await eventually(() => routes.filter((r) => r.sentAt > seenAt).length >= 40, 20_000, 10);
      expect(await state()).toBe(NodeState.NODE_STATE_DRAINING);
      load.running = 0;
      expect(await exited).toBe(0);
      stopLoad = true;
      await clients;

      const after = routes.filter((r) => r.sentAt > seenAt);
      expect(after.length).toBeGreaterThanOrEqual(40);
      expect(after.filter((r) => r.nodeId === 'agent-node')).toEqual([]);
      expect(after.every((r) => r.nodeId === 'other')).toBe(true);
      expect(routes.filter((r) => r.failed)).toEqual([]);
      expect(await state()).toBe('gone');
      expect(stderr).toMatch(/node drained and deregistered/);
    } finally {
      stopLoad = true;
      child.kill('SIGKILL');
    }
  });
});
