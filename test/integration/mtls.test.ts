// mTLS: the server requires client certificates signed by its CA, and the certificate's subject CN
// is the caller's identity (operator, planner, agent:<node>, client:<tenant>). Certificates are
// made by openssl for each run.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LATENCY_MODEL } from '../../src/core/latency.js';
import { RegistryClient } from '../../src/gen/cpn/v1/registry.js';
import { SchedulerClient } from '../../src/gen/cpn/v1/scheduler.js';
import { silentLogger } from '../../src/ops/log.js';
import { type RunningServer, startServer } from '../../src/server/server.js';
import { MemoryStore } from '../../src/store/memory/memory-store.js';
import { spec } from '../helpers/fixtures.js';
import { ALL_NODES, rpc } from '../helpers/grpc.js';

/** Fails loudly (never skips) when openssl is missing; it has no --version flag for findBinary. */
function findOpenssl(): string {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return 'openssl';
  } catch {
    throw new Error(
      'the mTLS test needs openssl and none was found. Install it with: apt-get install openssl',
    );
  }
}
const openssl = findOpenssl();

function run(dir: string, ...args: string[]): void {
  execFileSync(openssl, args, { cwd: dir, stdio: 'ignore' });
}

/** A CA, a server certificate for 127.0.0.1, and client certificates with the given CNs. */
function makeCertificates(dir: string, clientNames: readonly string[]): void {
  run(
    dir,
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-days',
    '2',
    '-subj',
    '/CN=cpn test CA',
  );
  const issue = (name: string, cn: string, extensions: string) => {
    run(
      dir,
      'req',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
      '-subj',
      `/CN=${cn}`,
    );
    execFileSync('sh', ['-c', `printf '%s\\n' '${extensions}' > ${name}.ext`], { cwd: dir });
    run(
      dir,
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.pem`,
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
    );
  };
  issue('server', 'localhost', 'subjectAltName=IP:127.0.0.1,DNS:localhost');
  clientNames.forEach((cn, i) => {
    issue(`client${i}`, cn, 'extendedKeyUsage=clientAuth');
  });
}

describe('mTLS identities', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cpn-mtls-'));
  const names = ['client:acme', 'agent:n1', 'root'] as const;
  let server: RunningServer;
  const file = (name: string) => readFileSync(join(dir, name));

  beforeAll(async () => {
    makeCertificates(dir, names);
    const store = new MemoryStore({ clock: Date.now, latency: DEFAULT_LATENCY_MODEL });
    server = await startServer({
      store,
      logger: silentLogger,
      port: 0,
      permanentNodes: [spec({ id: 'n1', region: 'CN-GD' })],
      tls: { cert: file('server.pem'), key: file('server.key'), clientCa: file('ca.pem') },
    });
  });

  afterAll(async () => {
    await server?.shutdown(1000);
    rmSync(dir, { recursive: true, force: true });
  });

  const clientsAs = (index: number | undefined) => {
    const creds =
      index === undefined
        ? credentials.createSsl(file('ca.pem'))
        : credentials.createSsl(file('ca.pem'), file(`client${index}.key`), file(`client${index}.pem`));
    const address = `127.0.0.1:${server.port}`;
    return { registry: new RegistryClient(address, creds), scheduler: new SchedulerClient(address, creds) };
  };

  const listNodes = (c: ReturnType<typeof clientsAs>) =>
    rpc(c.registry, c.registry.listNodes, ALL_NODES, { deadline: new Date(Date.now() + 5000) });

  it('a client:<tenant> certificate routes for that tenant and may not list nodes', async () => {
    const c = clientsAs(0);
    const placed = await rpc(c.scheduler, c.scheduler.route, {
      requestId: '',
      tenant: '',
      model: 'm',
      client: { region: 'CN-GD', accessPoint: '', location: undefined },
      latencyBudgetMs: 5000,
      inputTokens: 10,
      cachedInputTokens: 0,
      maxOutputTokens: 10,
      allowedLevels: [],
      allowedRegions: [],
      allowDegraded: false,
      explain: false,
      maxFallbacks: 0,
    });
    expect(placed.ok && placed.value.reservationId.endsWith('~acme')).toBe(true);
    const nodes = await listNodes(c);
    expect(nodes.ok || nodes.error.code).toBe(status.PERMISSION_DENIED);
    c.registry.close();
    c.scheduler.close();
  });

  it('an agent:<node> certificate speaks for its node only', async () => {
    const c = clientsAs(1);
    const report = (nodeId: string) =>
      rpc(c.registry, c.registry.reportStatus, {
        nodeId,
        healthy: true,
        gpuUtilization: 0,
        kvCacheUtilization: 0,
        load: [],
      });
    expect((await report('n1')).ok).toBe(true);
    const other = await report('n2');
    expect(other.ok || other.error.code).toBe(status.PERMISSION_DENIED);
    c.registry.close();
    c.scheduler.close();
  });

  it('a certificate whose CN names no role is UNAUTHENTICATED; no certificate, no connection', async () => {
    const weird = clientsAs(2);
    const refused = await listNodes(weird);
    expect(refused.ok || refused.error.code).toBe(status.UNAUTHENTICATED);
    expect(refused.ok || refused.error.details).toMatch(/subject CN must be/);
    const anonymous = clientsAs(undefined);
    const noCert = await listNodes(anonymous);
    // The TLS handshake fails: the call never reaches a handler.
    expect(noCert.ok || noCert.error.code).toBe(status.UNAVAILABLE);
    for (const c of [weird, anonymous]) {
      c.registry.close();
      c.scheduler.close();
    }
  });
});
