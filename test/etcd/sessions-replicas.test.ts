// Mobility sessions on a real etcd, two `cpn serve` replicas: a session opened on A is updated on
// B; a watcher on B hears a handover B decides; A is killed (SIGKILL) and B keeps serving the
// session; closed on B, it is gone for both.
import { Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HandoverReason, type WatchSessionResponse } from '../../src/gen/cpn/v1/scheduler.js';
import { type EtcdServer, eventually, startEtcd } from '../helpers/etcd.js';
import { ok, rpc } from '../helpers/grpc.js';
import { type Replica, startReplica, stopReplica } from '../helpers/replica.js';
import { along, openRequest, registerCorridor } from '../helpers/sessions.js';

describe('sessions across replicas on etcd', () => {
  let etcd: EtcdServer;
  let a: Replica;
  let b: Replica;
  const replica = () => startReplica(etcd);

  beforeAll(async () => {
    etcd = await startEtcd();
    a = await replica();
    b = await replica();
    await registerCorridor(a.registry);
    // B sees them through the watch.
    await eventually(async () => {
      const got = await rpc(b.registry, b.registry.getNode, { nodeId: 'fs' });
      return got.ok;
    });
  });
  afterAll(async () => {
    for (const r of [a, b]) await stopReplica(r);
    await etcd?.destroy();
  });

  it('opened on A, updated and watched on B; B keeps serving it after A is killed', async () => {
    const opened = await ok(a.scheduler, a.scheduler.openSession, openRequest({ ttlS: 60 }));
    expect(opened.placement?.nodeId).toBe('gz');
    const id = opened.sessionId;
    // Updated on B straight away (read from etcd if the watch has not brought it yet).
    const first = await ok(b.scheduler, b.scheduler.updateSession, {
      tenant: '',
      sessionId: id,
      client: { region: '', accessPoint: '', location: along(0.05) },
    });
    expect(first.placement?.nodeId).toBe('gz');

    // A watcher on B; the drain goes through A; B's watcher hears the handover (whichever replica
    // made it), within seconds.
    const events: WatchSessionResponse[] = [];
    const watch = b.scheduler.watchSession({ tenant: '', sessionId: id }, new Metadata());
    watch.on('data', (event: WatchSessionResponse) => events.push(event));
    const watchEnded = new Promise<number>((resolve) => {
      watch.on('error', (error: ServiceError) => resolve(error.code));
      watch.on('status', (s) => {
        if (s.code === status.OK) resolve(status.OK);
      });
    });
    await eventually(() => events.length >= 1, 10_000);
    expect(events[0]?.placement?.nodeId).toBe('gz');
    await ok(a.registry, a.registry.drainNode, { nodeId: 'gz', drain: true });
    await eventually(() => events.some((e) => e.handover !== undefined), 15_000, 50);
    const handover = events.find((e) => e.handover !== undefined);
    expect(handover?.handover?.reason).toBe(HandoverReason.HANDOVER_REASON_NODE_UNAVAILABLE);
    expect(handover?.placement?.nodeId).toBe('fs');

    await a.serve.stop('SIGKILL');
    // B alone: the session is still there, and still follows the client.
    const after = await ok(b.scheduler, b.scheduler.updateSession, {
      tenant: '',
      sessionId: id,
      client: { region: '', accessPoint: '', location: along(0.06) },
    });
    expect(after.placement?.nodeId).toBe('fs');
    await ok(b.scheduler, b.scheduler.closeSession, { tenant: '', sessionId: id });
    expect(await watchEnded).toBe(status.OK);
    expect(events.at(-1)?.ended).toBe(true);
    const gone = await rpc(b.scheduler, b.scheduler.updateSession, {
      tenant: '',
      sessionId: id,
      client: { region: '', accessPoint: '', location: along(0.07) },
    });
    expect(gone.ok ? 'ok' : gone.error.code).toBe(status.NOT_FOUND);
  });
});
