// A `cpn serve --store etcd` replica on a real etcd, with operator clients to it.
import { credentials } from '@grpc/grpc-js';
import { RegistryClient } from '../../src/gen/cpn/v1/registry.js';
import { SchedulerClient } from '../../src/gen/cpn/v1/scheduler.js';
import { CLI_OPERATOR_KEY, type ServeProcess, startServe } from './cli.js';
import type { EtcdServer } from './etcd.js';
import { bearer } from './grpc.js';

export interface Replica {
  readonly serve: ServeProcess;
  readonly registry: RegistryClient;
  readonly scheduler: SchedulerClient;
}

/** `cpn serve` on the etcd at `endpoint`, its calls timing out after `etcdTimeoutMs`; `flags` after. */
export function serveOnEtcd(
  endpoint: string,
  etcdTimeoutMs: number,
  ...flags: string[]
): Promise<ServeProcess> {
  return startServe([
    '--store',
    'etcd',
    '--etcd-endpoints',
    endpoint,
    '--etcd-timeout-ms',
    String(etcdTimeoutMs),
    ...flags,
  ]);
}

/** Starts a replica on `etcd` (etcd calls time out after 1 s). */
export async function startReplica(etcd: EtcdServer): Promise<Replica> {
  return replicaOf(await serveOnEtcd(etcd.endpoint, 1000));
}

/** Operator clients to a `cpn serve` already started. */
export function replicaOf(serve: ServeProcess): Replica {
  return {
    serve,
    registry: new RegistryClient(serve.address, credentials.createInsecure(), bearer(CLI_OPERATOR_KEY)),
    scheduler: new SchedulerClient(serve.address, credentials.createInsecure(), bearer(CLI_OPERATOR_KEY)),
  };
}

/** Closes a replica's clients and kills it (nothing when it never started). */
export async function stopReplica(replica: Replica | undefined): Promise<void> {
  replica?.registry.close();
  replica?.scheduler.close();
  await replica?.serve.stop('SIGKILL');
}
