// The Heartbeat stream over real gRPC: each status gets the node's state; one stream speaks for
// one node, and an agent only for its own; drain and goodbye act at once; a stream that ends
// without a goodbye leaves the node to its TTL; refusals end the stream with a status that says why.
import { type ClientDuplexStream, credentials, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type HeartbeatRequest,
  type HeartbeatResponse,
  RegistryClient,
} from '../../src/gen/cpn/v1/registry.js';
import { NodeState, type NodeStatus } from '../../src/gen/cpn/v1/types.js';
import { eventually } from '../helpers/etcd.js';
import { ok, protoSpec, rpc, startTestServer, TEST_OPERATOR_KEY, type TestServer } from '../helpers/grpc.js';

type Stream = ClientDuplexStream<HeartbeatRequest, HeartbeatResponse>;

/** A stream whose responses and end can be awaited in order. */
function open(client: RegistryClient, key: string) {
  const metadata = new Metadata();
  metadata.set('authorization', `Bearer ${key}`);
  const stream: Stream = client.heartbeat(metadata);
  const responses: HeartbeatResponse[] = [];
  const waiters: (() => void)[] = [];
  const ended = new Promise<{ code: number; details: string }>((resolve) => {
    stream.on('error', (error: ServiceError) => resolve({ code: error.code, details: error.details }));
    stream.on('status', (s) => {
      if (s.code === status.OK) resolve({ code: s.code, details: s.details });
    });
  });
  stream.on('data', (response: HeartbeatResponse) => {
    responses.push(response);
    for (const wake of waiters.splice(0)) wake();
  });
  return {
    stream,
    ended,
    /** Sends a message and resolves with its response (or undefined if the stream ended first). */
    async send(message: HeartbeatRequest): Promise<HeartbeatResponse | undefined> {
      const index = responses.length;
      stream.write(message);
      while (responses.length <= index) {
        const next = new Promise<void>((wake) => waiters.push(wake));
        const done = await Promise.race([next.then(() => false), ended.then(() => true)]);
        if (done && responses.length <= index) return undefined;
      }
      return responses[index];
    },
  };
}

const statusOf = (nodeId: string, active: number, healthy = true): NodeStatus => ({
  nodeId,
  load: [{ model: 'm', active, queued: 0 }],
  gpuUtilization: 0.5,
  kvCacheUtilization: undefined,
  healthy,
});

describe('Heartbeat stream', () => {
  let t: TestServer;
  let client: RegistryClient;
  let agentKey: string;
  let clientKey: string;

  beforeAll(async () => {
    t = await startTestServer();
    client = new RegistryClient(t.address, credentials.createInsecure());
    for (const id of ['hb-1', 'hb-2'])
      await ok(t.registry, t.registry.registerNode, { spec: protoSpec(id), ttlS: 30, permanent: false });
    const agent = await t.server.plane.accounts.createApiKey({ role: 'agent', name: 'hb', nodeId: 'hb-1' });
    if (agent.kind !== 'created') throw new Error('no agent key');
    agentKey = agent.secret;
    await t.server.plane.accounts.createTenant('acme', 'Acme');
    const tenantKey = await t.server.plane.accounts.createApiKey({
      role: 'client',
      name: 'c',
      tenant: 'acme',
    });
    if (tenantKey.kind !== 'created') throw new Error('no client key');
    clientKey = tenantKey.secret;
  });
  afterAll(async () => {
    client?.close();
    await t?.close();
  });

  const node = async (id: string) => (await ok(t.registry, t.registry.getNode, { nodeId: id })).node;

  it('answers each status with the state, and the status shows in GetNode', async () => {
    const s = open(client, agentKey);
    expect((await s.send({ status: statusOf('hb-1', 3) }))?.state).toBe(NodeState.NODE_STATE_READY);
    expect((await node('hb-1'))?.status?.load[0]?.active).toBe(3);
    expect((await s.send({ status: statusOf('hb-1', 5, false) }))?.state).toBe(
      NodeState.NODE_STATE_UNHEALTHY,
    );
    const after = await node('hb-1');
    expect(after?.status?.load[0]?.active).toBe(5);
    // An engine without a KV-cache gauge: unknown stays unknown, not zero.
    expect(after?.status?.kvCacheUtilization).toBeUndefined();
    expect((await s.send({ status: statusOf('hb-1', 1) }))?.state).toBe(NodeState.NODE_STATE_READY);
    // Ending without a goodbye changes nothing now: the node is left to its TTL.
    s.stream.end();
    expect((await s.ended).code).toBe(status.OK);
    expect((await node('hb-1'))?.state).toBe(NodeState.NODE_STATE_READY);
    t.advance(31_000);
    expect((await node('hb-1'))?.state).toBe(NodeState.NODE_STATE_DOWN);
    // A report on a new stream within the store's grace brings it back, or it must register again.
    await ok(t.registry, t.registry.registerNode, { spec: protoSpec('hb-1'), ttlS: 30, permanent: false });
  });

  it('an agent speaks only for its node; one stream is for one node', async () => {
    const foreign = open(client, agentKey);
    expect(await foreign.send({ status: statusOf('hb-2', 1) })).toBeUndefined();
    const denied = await foreign.ended;
    expect(denied.code).toBe(status.PERMISSION_DENIED);
    expect(denied.details).toMatch(/hb-1.*hb-2|may not speak for node hb-2/);

    const operator = open(client, TEST_OPERATOR_KEY);
    expect((await operator.send({ status: statusOf('hb-1', 1) }))?.state).toBe(NodeState.NODE_STATE_READY);
    expect(await operator.send({ status: statusOf('hb-2', 1) })).toBeUndefined();
    const switched = await operator.ended;
    expect(switched.code).toBe(status.INVALID_ARGUMENT);
    expect(switched.details).toMatch(/this stream is for node hb-1; open one stream per node/);

    const tenant = open(client, clientKey);
    expect(await tenant.send({ status: statusOf('hb-1', 1) })).toBeUndefined();
    expect((await tenant.ended).code).toBe(status.PERMISSION_DENIED);

    const nobody = open(client, 'not-a-key');
    expect(await nobody.send({ status: statusOf('hb-1', 1) })).toBeUndefined();
    expect((await nobody.ended).code).toBe(status.UNAUTHENTICATED);
  });

  it('refuses a stream that does not start with a status, an empty message and an unknown node', async () => {
    const drainFirst = open(client, agentKey);
    expect(await drainFirst.send({ drain: {} })).toBeUndefined();
    const first = await drainFirst.ended;
    expect(first.code).toBe(status.INVALID_ARGUMENT);
    expect(first.details).toMatch(/first message must be a status/);

    const empty = open(client, agentKey);
    expect(await empty.send({})).toBeUndefined();
    expect((await empty.ended).details).toMatch(/must hold a status, a drain or a goodbye/);

    const unknown = open(client, TEST_OPERATOR_KEY);
    expect(await unknown.send({ status: statusOf('nobody', 1) })).toBeUndefined();
    const missing = await unknown.ended;
    expect(missing.code).toBe(status.NOT_FOUND);
    expect(missing.details).toMatch(/call RegisterNode first/);

    const bad = open(client, agentKey);
    expect(await bad.send({ status: { ...statusOf('hb-1', 1), gpuUtilization: 7 } })).toBeUndefined();
    expect((await bad.ended).details).toMatch(/gpu_utilization/);
  });

  it('drain stops new placements at once; goodbye deregisters and ends the stream with OK', async () => {
    await ok(t.registry, t.registry.registerNode, { spec: protoSpec('hb-2'), ttlS: 30, permanent: false });
    const s = open(client, TEST_OPERATOR_KEY);
    expect((await s.send({ status: statusOf('hb-2', 0) }))?.state).toBe(NodeState.NODE_STATE_READY);
    expect((await s.send({ drain: {} }))?.state).toBe(NodeState.NODE_STATE_DRAINING);
    expect((await node('hb-2'))?.state).toBe(NodeState.NODE_STATE_DRAINING);
    // A status after the drain keeps it draining.
    expect((await s.send({ status: statusOf('hb-2', 0) }))?.state).toBe(NodeState.NODE_STATE_DRAINING);
    expect((await s.send({ goodbye: {} }))?.state).toBe(NodeState.NODE_STATE_UNSPECIFIED);
    expect((await s.ended).code).toBe(status.OK);
    const gone = await rpc(t.registry, t.registry.getNode, { nodeId: 'hb-2' });
    expect(gone.ok ? 'found' : gone.error.code).toBe(status.NOT_FOUND);
  });

  it('counts the messages it reads in the metrics', async () => {
    const s = open(client, agentKey);
    for (let i = 0; i < 3; i += 1) await s.send({ status: statusOf('hb-1', i) });
    s.stream.end();
    await s.ended;
    const text = await t.server.metrics.registry.metrics();
    const line = text
      .split('\n')
      .find((l) => l.startsWith('cpn_rpc_stream_messages_total{method="Heartbeat"}'));
    expect(Number(line?.split(' ')[1])).toBeGreaterThanOrEqual(3);
    expect(text).toMatch(/cpn_rpc_requests_total\{method="Heartbeat",code="OK"\} \d+/);
  });
});

describe('Heartbeat stream cancelled by the client', () => {
  it('the server lets go of a stream whose agent vanished (no handler left waiting)', async () => {
    const t = await startTestServer();
    const client = new RegistryClient(t.address, credentials.createInsecure());
    try {
      await ok(t.registry, t.registry.registerNode, { spec: protoSpec('hb-c'), ttlS: 30, permanent: false });
      const finished = async () => {
        const text = await t.server.metrics.registry.metrics();
        return text
          .split('\n')
          .filter((l) => l.startsWith('cpn_rpc_requests_total{method="Heartbeat",code="CANCELLED"}'))
          .reduce((sum, l) => sum + Number(l.split(' ')[1]), 0);
      };
      const before = await finished();
      const s = open(client, TEST_OPERATOR_KEY);
      expect((await s.send({ status: statusOf('hb-c', 1) }))?.state).toBe(NodeState.NODE_STATE_READY);
      s.stream.cancel();
      expect((await s.ended).code).toBe(status.CANCELLED);
      await eventually(async () => (await finished()) === before + 1, 10_000, 20);
      expect((await ok(t.registry, t.registry.getNode, { nodeId: 'hb-c' })).node?.state).toBe(
        NodeState.NODE_STATE_READY,
      );
    } finally {
      client.close();
      await t.close();
    }
  });
});

describe('Heartbeat stream limits and lifetime', () => {
  it('a key revoked while its stream is open stops working at the next message', async () => {
    const t = await startTestServer();
    const client = new RegistryClient(t.address, credentials.createInsecure());
    try {
      await ok(t.registry, t.registry.registerNode, { spec: protoSpec('hb-r'), ttlS: 30, permanent: false });
      const key = await t.server.plane.accounts.createApiKey({ role: 'agent', name: 'r', nodeId: 'hb-r' });
      if (key.kind !== 'created') throw new Error('no key');
      const s = open(client, key.secret);
      expect((await s.send({ status: statusOf('hb-r', 1) }))?.state).toBe(NodeState.NODE_STATE_READY);
      expect(await t.server.plane.accounts.revokeApiKey(key.record.id)).toBeTruthy();
      expect(await s.send({ status: statusOf('hb-r', 2) })).toBeUndefined();
      expect((await s.ended).code).toBe(status.UNAUTHENTICATED);
      // The status after the revocation was not applied.
      expect(
        (await ok(t.registry, t.registry.getNode, { nodeId: 'hb-r' })).node?.status?.load[0]?.active,
      ).toBe(1);
    } finally {
      client.close();
      await t.close();
    }
  });

  it('a stream must name its node soon; a node gets a bounded number of streams', async () => {
    const t = await startTestServer({ heartbeat: { firstMessageMs: 200, maxStreamsPerNode: 2 } });
    const client = new RegistryClient(t.address, credentials.createInsecure());
    try {
      await ok(t.registry, t.registry.registerNode, { spec: protoSpec('hb-l'), ttlS: 30, permanent: false });
      const silent = open(client, TEST_OPERATOR_KEY);
      const idle = await silent.ended;
      expect(idle.code).toBe(status.DEADLINE_EXCEEDED);
      expect(idle.details).toMatch(/no message within 200 ms/);
      const first = open(client, TEST_OPERATOR_KEY);
      const second = open(client, TEST_OPERATOR_KEY);
      expect((await first.send({ status: statusOf('hb-l', 1) }))?.state).toBe(NodeState.NODE_STATE_READY);
      expect((await second.send({ status: statusOf('hb-l', 1) }))?.state).toBe(NodeState.NODE_STATE_READY);
      const third = open(client, TEST_OPERATOR_KEY);
      expect(await third.send({ status: statusOf('hb-l', 1) })).toBeUndefined();
      const refused = await third.ended;
      expect(refused.code).toBe(status.RESOURCE_EXHAUSTED);
      expect(refused.details).toMatch(/already has 2 streams open/);
      // Closing one frees its place.
      first.stream.end();
      await first.ended;
      const fourth = open(client, TEST_OPERATOR_KEY);
      await eventually(
        async () =>
          (await fourth.send({ status: statusOf('hb-l', 1) }))?.state === NodeState.NODE_STATE_READY,
      );
      second.stream.end();
      fourth.stream.end();
    } finally {
      client.close();
      await t.close();
    }
  });

  it('a replica shutting down ends its heartbeat streams at once with UNAVAILABLE', async () => {
    const t = await startTestServer();
    const client = new RegistryClient(t.address, credentials.createInsecure());
    try {
      await ok(t.registry, t.registry.registerNode, { spec: protoSpec('hb-s'), ttlS: 30, permanent: false });
      const s = open(client, TEST_OPERATOR_KEY);
      expect((await s.send({ status: statusOf('hb-s', 1) }))?.state).toBe(NodeState.NODE_STATE_READY);
      // A grace far longer than the test: only the early end lets the stream close in time.
      const stopping = t.server.shutdown(120_000);
      const ended = await s.ended;
      expect(ended.code).toBe(status.UNAVAILABLE);
      expect(ended.details).toMatch(/shutting down/);
      await stopping;
    } finally {
      client.close();
      t.registry.close();
      t.scheduler.close();
    }
  });
});
