// Quota across replicas on a real etcd: two `cpn serve` processes admit one tenant under REJECT at
// once. Settled usage never exceeds the quota, equals what the acknowledged Releases counted, reads
// the same from either replica; a repeated Release changes nothing; a replica killed with SIGKILL
// loses no acknowledged Release and leaks no reservation past its TTL.
import { credentials, status } from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AccountsClient, Meter, OverQuotaPolicy, Role } from '../../src/gen/cpn/v1/accounts.js';
import { RegistryClient } from '../../src/gen/cpn/v1/registry.js';
import { SchedulerClient } from '../../src/gen/cpn/v1/scheduler.js';
import { Level } from '../../src/gen/cpn/v1/types.js';
import { CLI_OPERATOR_KEY, type ServeProcess } from '../helpers/cli.js';
import { type EtcdServer, eventually, startEtcd } from '../helpers/etcd.js';
import { bearer, ok, rpc } from '../helpers/grpc.js';
import { serveOnEtcd } from '../helpers/replica.js';

const QUOTA = 600;
/** 100 points per 1k output tokens: a request of up to 100 output tokens holds 10 points. */
const WEIGHTS = { model: 'm', inputPer1k: 0, outputPer1k: 100, cachedInputPer1k: 0 };
const TTL_S = 2;

interface Replica {
  readonly serve: ServeProcess;
  readonly accounts: AccountsClient;
  readonly scheduler: SchedulerClient;
  close(): void;
}

const routeRequest = {
  requestId: '',
  tenant: '',
  model: 'm',
  client: { region: 'CN-GD', accessPoint: '', location: undefined },
  latencyBudgetMs: 5000,
  inputTokens: 50,
  cachedInputTokens: 0,
  maxOutputTokens: 100,
  allowedLevels: [],
  allowedRegions: [],
  allowDegraded: false,
  explain: false,
  maxFallbacks: 0,
};

describe('quota on etcd with two replicas', () => {
  let etcd: EtcdServer;
  let replicas: Replica[];
  let clientKey = '';

  const open = async (key: string, ttlS: number): Promise<Replica> => {
    const serve = await serveOnEtcd(etcd.endpoint, 2000, '--reservation-ttl-s', String(ttlS));
    return withKey(serve, key);
  };
  const withKey = (serve: ServeProcess, key: string): Replica => {
    const accounts = new AccountsClient(serve.address, credentials.createInsecure(), bearer(key));
    const scheduler = new SchedulerClient(serve.address, credentials.createInsecure(), bearer(key));
    return {
      serve,
      accounts,
      scheduler,
      close() {
        accounts.close();
        scheduler.close();
      },
    };
  };

  beforeEach(async (context) => {
    etcd = await startEtcd();
    // Reservations outlive the run unless the test is about expiry (then they must expire in it).
    const ttlS = context.task.name.includes('killed') ? TTL_S : 60;
    const a = await open(CLI_OPERATOR_KEY, ttlS);
    const b = await open(CLI_OPERATOR_KEY, ttlS);
    const registry = new RegistryClient(
      a.serve.address,
      credentials.createInsecure(),
      bearer(CLI_OPERATOR_KEY),
    );
    await ok(registry, registry.registerNode, {
      spec: {
        id: 'n1',
        level: Level.LEVEL_PROVINCE,
        region: 'CN-GD',
        parentId: '',
        endpoint: 'https://n1.example',
        location: { lat: 23.1, lon: 113.3 },
        gpus: [{ type: 'H800', count: 8, memoryGib: 80 }],
        models: [
          {
            model: 'm',
            maxConcurrency: 1000,
            maxQueue: 0,
            prefillTokensPerS: 100_000,
            decodeTokensPerS: 50,
            price: { inputPerMtok: 1, outputPerMtok: 4, cachedInputPerMtok: 0.1 },
          },
        ],
        labels: {},
      },
      ttlS: 0,
      permanent: true,
    });
    registry.close();
    await ok(a.accounts, a.accounts.createTenant, { name: 'fleet', displayName: 'Fleet' });
    await ok(a.accounts, a.accounts.setPackage, {
      tenant: 'fleet',
      package: {
        name: 'small',
        quotaPoints: QUOTA,
        timeZone: '',
        periodSeconds: 0,
        periodAnchor: undefined,
        weights: [WEIGHTS],
        allowedLevels: [],
        overQuota: OverQuotaPolicy.OVER_QUOTA_POLICY_REJECT,
        throttleRequestsPerS: 0,
        throttleBudgetMs: 0,
        meter: Meter.METER_CLIENT,
      },
    });
    const key = await ok(a.accounts, a.accounts.createApiKey, {
      role: Role.ROLE_CLIENT,
      tenant: 'fleet',
      nodeId: '',
      name: 'fleet',
      expiresAt: undefined,
    });
    clientKey = key.secret;
    for (const r of [a, b]) r.close();
    replicas = [withKey(a.serve, clientKey), withKey(b.serve, clientKey)];
    // Both replicas see the node, the package and the key before the run.
    const b2 = replicas[1] as Replica;
    let warmUp = '';
    await eventually(async () => {
      const placed = await rpc(b2.scheduler, b2.scheduler.route, routeRequest);
      if (placed.ok) warmUp = placed.value.reservationId;
      return placed.ok;
    }, 10_000);
    await ok(b2.scheduler, b2.scheduler.release, {
      reservationId: warmUp,
      usage: { inputTokens: 0, cachedInputTokens: 0, outputTokens: 0 },
      success: true,
    });
  }, 60_000);

  afterEach(async () => {
    for (const r of replicas ?? []) {
      r.close();
      await r.serve.stop('SIGKILL');
    }
    await etcd?.destroy();
  });

  const usageOn = async (r: Replica) => {
    const operator = new AccountsClient(
      r.serve.address,
      credentials.createInsecure(),
      bearer(CLI_OPERATOR_KEY),
    );
    try {
      return (await ok(operator, operator.getUsage, { tenant: 'fleet', period: '' })).periods[0];
    } finally {
      operator.close();
    }
  };

  /**
   * `cycles` Route+Release cycles, `inFlight` at a time, each routed on one replica and released
   * on the other; returns the points the acknowledged Releases counted.
   */
  async function run(cycles: number, inFlight: number, live: () => Replica[]) {
    let next = 0;
    let settled = 0;
    /** Points of the usage the acknowledged Releases reported. */
    let reported = 0;
    let refusedByQuota = 0;
    let failed = 0;
    /** Points of Releases whose answer never came: counted or not, nobody was told. */
    let unacknowledged = 0;
    const ids: string[] = [];
    const worker = async () => {
      while (next < cycles) {
        const i = next++;
        const pool = live();
        const on = pool[i % pool.length] as Replica;
        const off = pool[(i + 1) % pool.length] as Replica;
        const placed = await rpc(on.scheduler, on.scheduler.route, routeRequest);
        if (!placed.ok) {
          if (placed.error.code === status.RESOURCE_EXHAUSTED) refusedByQuota += 1;
          else {
            failed += 1;
          }
          continue;
        }
        const outputTokens = (i * 37) % 101;
        const released = await rpc(off.scheduler, off.scheduler.release, {
          reservationId: placed.value.reservationId,
          usage: { inputTokens: 50, cachedInputTokens: 0, outputTokens },
          success: true,
        });
        if (released.ok && released.value.released) {
          settled += released.value.settledPoints;
          reported += Math.ceil((outputTokens * 100) / 1000);
          // Less only for a Release after its reservation expired (its points may be gone).
          expect(released.value.settledPoints).toBeLessThanOrEqual(Math.ceil((outputTokens * 100) / 1000));
          ids.push(placed.value.reservationId);
        } else {
          failed += 1;
          if (!released.ok) unacknowledged += Math.ceil((outputTokens * 100) / 1000);
        }
      }
    };
    await Promise.all(Array.from({ length: inFlight }, worker));
    return { settled, reported, refusedByQuota, failed, unacknowledged, ids };
  }

  it('hundreds of concurrent cycles on both replicas: used ≤ quota, = what Release counted, the same on both', async () => {
    const result = await run(240, 24, () => replicas);
    expect(result.failed).toBe(0);
    expect(result.refusedByQuota).toBeGreaterThan(0);
    const [a, b] = replicas as [Replica, Replica];
    const onA = await usageOn(a);
    // No reservation expired in this run: every Release counted exactly what it reported.
    expect(result.settled).toBe(result.reported);
    expect(onA?.usedPoints).toBe(result.settled);
    expect(onA?.usedPoints).toBeLessThanOrEqual(QUOTA);
    expect(onA?.reservedPoints).toBe(0);
    await eventually(async () => (await usageOn(b))?.usedPoints === result.settled, 5000);
    // A repeated Release, on either replica, changes nothing.
    const again = await ok(b.scheduler, b.scheduler.release, {
      reservationId: result.ids[0] ?? '',
      usage: { inputTokens: 50, cachedInputTokens: 0, outputTokens: 100 },
      success: true,
    });
    expect(again).toMatchObject({ released: false, settledPoints: 0 });
    expect((await usageOn(a))?.usedPoints).toBe(result.settled);
  }, 120_000);

  it('a replica killed mid-run loses no acknowledged Release and leaks no reservation past its TTL', async () => {
    const [a, b] = replicas as [Replica, Replica];
    let killed = false;
    const live = () => (killed ? [a] : [a, b]);
    const running = run(200, 16, live);
    await eventually(async () => ((await usageOn(a))?.usedPoints ?? 0) > 50, 20_000);
    await b.serve.stop('SIGKILL');
    killed = true;
    const result = await running;
    // Releases B acknowledged before dying are in the ledger; the rest failed and were not counted.
    const afterTtl = Date.now() + (TTL_S + 1) * 1000;
    await eventually(async () => Date.now() > afterTtl && (await usageOn(a))?.reservedPoints === 0, 20_000);
    const usage = await usageOn(a);
    // Every acknowledged Release is counted; a Release cut off by the kill may or may not be.
    expect(usage?.usedPoints).toBeGreaterThanOrEqual(result.settled);
    expect(usage?.usedPoints).toBeLessThanOrEqual(result.settled + result.unacknowledged);
    expect(usage?.usedPoints).toBeLessThanOrEqual(QUOTA);
    expect(result.failed).toBeGreaterThan(0);
  }, 120_000);
});
