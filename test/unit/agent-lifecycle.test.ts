// The agent's lifecycle against a scripted control plane: it keeps trying to register while the
// control plane cannot be reached (a sidecar may start first) but gives up at once on a refusal;
// a stop during those retries ends cleanly; while it waits for running requests on stop it keeps
// reporting, so a grace longer than the TTL does not let the node expire mid-drain.
import { createServer, type Server } from 'node:http';
import { type ServiceError, status } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { Agent, type AgentPlane } from '../../src/agent/agent.js';
import type { NodeStatus } from '../../src/gen/cpn/v1/types.js';
import { silentLogger } from '../../src/ops/log.js';
import { eventually } from '../helpers/etcd.js';
import { type EngineLoad, vllmMetrics } from '../helpers/fake-engine-metrics.js';
import { protoSpec } from '../helpers/grpc.js';

const failure = (code: number) =>
  Object.assign(new Error(status[code]), { code, details: status[code] }) as ServiceError;

function scriptedPlane(registerFailures: number[]) {
  const calls: string[] = [];
  const reports: NodeStatus[] = [];
  const plane: AgentPlane = {
    register: async () => {
      calls.push('register');
      const code = registerFailures.shift();
      if (code !== undefined) throw failure(code);
    },
    report: async (s) => {
      reports.push(s);
    },
    drain: async () => {
      calls.push('drain');
    },
    deregister: async () => {
      calls.push('deregister');
    },
    reportLatency: async () => undefined,
  };
  return { plane, calls, reports };
}

let server: Server | undefined;
afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

async function engine(load: EngineLoad): Promise<string> {
  server = createServer((_req, res) => res.end(vllmMetrics('m', load)));
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/metrics`;
}

const agentWith = (plane: AgentPlane, metricsUrl: string, ttlS = 60, graceMs = 30_000) =>
  new Agent({
    plane,
    spec: protoSpec('n1'),
    ttlS,
    engine: 'vllm',
    metricsUrl,
    intervalMs: 50,
    graceMs,
    logger: silentLogger,
  });

describe('agent lifecycle', () => {
  it('keeps registering while the control plane is unreachable, then runs', async () => {
    const { plane, calls, reports } = scriptedPlane([status.UNAVAILABLE, status.DEADLINE_EXCEEDED]);
    const load: EngineLoad = { running: 1, waiting: 0, kv: 0.1 };
    const agent = agentWith(plane, await engine(load));
    expect(await agent.start()).toBe(true);
    expect(calls.filter((c) => c === 'register')).toHaveLength(3);
    await eventually(() => reports.length > 0);
    load.running = 0;
    await agent.stop();
    expect(calls.at(-1)).toBe('deregister');
  });

  it('a refusal (a bad key) is not retried', async () => {
    const { plane, calls } = scriptedPlane([status.PERMISSION_DENIED]);
    const agent = agentWith(plane, await engine({ running: 0, waiting: 0, kv: 0 }));
    await expect(agent.start()).rejects.toMatchObject({ code: status.PERMISSION_DENIED });
    expect(calls).toEqual(['register']);
  });

  it('a stop while it retries ends the start without registering', async () => {
    const { plane, calls } = scriptedPlane(Array(100).fill(status.UNAVAILABLE));
    const agent = agentWith(plane, await engine({ running: 0, waiting: 0, kv: 0 }));
    const started = agent.start();
    await eventually(() => calls.length >= 1);
    await agent.stop();
    expect(await started).toBe(false);
  });

  it('keeps reporting while it waits for running requests on stop (grace longer than the TTL)', async () => {
    const load: EngineLoad = { running: 3, waiting: 0, kv: 0.1 };
    const { plane, calls, reports } = scriptedPlane([]);
    // TTL 1 s: a keep-alive every third of a second.
    const agent = agentWith(plane, await engine(load), 1, 20_000);
    expect(await agent.start()).toBe(true);
    await eventually(() => reports.length > 0);
    const stopped = agent.stop();
    await eventually(() => calls.includes('drain'));
    const before = reports.length;
    // Three keep-alives while draining: over a TTL without a report would have let it expire.
    await eventually(() => reports.length >= before + 3, 10_000, 20);
    expect(calls).not.toContain('deregister');
    load.running = 0;
    await stopped;
    expect(calls.at(-1)).toBe('deregister');
  });
});
