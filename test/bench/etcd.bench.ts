// etcd figures for BENCHMARKS.md. Needs etcd (apt-get install -y etcd-server). Run: npm run bench:etcd
//  1. etcd writes while 1,000 simulated nodes report status every second (target: ≤ 10 % of reports).
//  2. time for a fresh replica to load 10,000 registered nodes and serve its first route, against
//     a baseline measured in the same run: a bare range read of the same keys.
//  3. quota on two replicas: Route on one, Release on the other, one tenant, 32 cycles in flight;
//     cycles/s and etcd writes per Release, metered (a package) against unmetered (no package).

import { Etcd3 } from 'etcd3';
import { DEFAULT_LATENCY_MODEL } from '../../src/core/latency.js';
import { silentLogger } from '../../src/ops/log.js';
import { ControlPlane } from '../../src/plane/control-plane.js';
import { EtcdStore } from '../../src/store/etcd/etcd-store.js';
import { startEtcd } from '../helpers/etcd.js';
import { offer, request, spec } from '../helpers/fixtures.js';

const REPORTING_NODES = Number(process.env.CPN_BENCH_REPORTING_NODES ?? 1000);
const REPORT_SECONDS = Number(process.env.CPN_BENCH_REPORT_SECONDS ?? 60);
const LOADED_NODES = Number(process.env.CPN_BENCH_LOADED_NODES ?? 10_000);
const QUOTA_SECONDS = Number(process.env.CPN_BENCH_QUOTA_SECONDS ?? 10);

async function inParallel<T>(
  items: readonly T[],
  width: number,
  run: (item: T) => Promise<unknown>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await run(items[next++] as T);
    }),
  );
}

const etcd = await startEtcd();
try {
  // ---- 1. status write amplification --------------------------------------------------------
  let now = Date.now();
  const store = await EtcdStore.open({
    endpoints: [etcd.endpoint],
    prefix: '/bench-status/',
    clock: () => now,
    latency: DEFAULT_LATENCY_MODEL,
    logger: silentLogger,
    statusFlushMs: 2000,
  });
  const ids = Array.from({ length: REPORTING_NODES }, (_, i) => `n${i}`);
  const capacity = { maxConcurrency: 16, maxQueue: 16 };
  await inParallel(ids, 32, (id) =>
    store.registerNode(spec({ id, offers: [offer(capacity)] }), { ttlS: 30, permanent: false }),
  );
  const writesBefore = store.stats.writes;
  const keepalivesBefore = store.stats.keepalives;
  // Each node's load is a random walk of ±1 request a second: the everyday jitter of a busy node.
  let seed = 7;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const active = new Map(ids.map((id) => [id, 8]));
  const started = process.hrtime.bigint();
  for (let second = 0; second < REPORT_SECONDS; second += 1) {
    now += 1000;
    await inParallel(ids, 64, (id) => {
      const load = Math.max(0, Math.min(32, (active.get(id) ?? 0) + (random() < 0.5 ? -1 : 1)));
      active.set(id, load);
      return store.reportStatus({
        nodeId: id,
        load: [{ model: 'm', active: Math.min(load, 16), queued: Math.max(0, load - 16) }],
        gpuUtilization: load / 32,
        kvCacheUtilization: load / 40,
        healthy: true,
      });
    });
  }
  const wallS = Number(process.hrtime.bigint() - started) / 1e9;
  const reports = REPORTING_NODES * REPORT_SECONDS;
  const writes = store.stats.writes - writesBefore;
  const keepalives = store.stats.keepalives - keepalivesBefore;
  process.stdout.write(
    `status reports: ${REPORTING_NODES} nodes × ${REPORT_SECONDS} s = ${reports} reports (${(reports / wallS).toFixed(0)} reports/s processed)\n` +
      `  etcd writes ${writes} = ${(writes / REPORT_SECONDS).toFixed(1)}/s = ${((100 * writes) / reports).toFixed(2)} % of reports\n` +
      `  lease keepalives ${keepalives} = ${(keepalives / REPORT_SECONDS).toFixed(1)}/s = ${((100 * keepalives) / reports).toFixed(2)} % of reports\n`,
  );
  await store.close();

  // ---- 2. fresh replica load time -----------------------------------------------------------
  const writer = await EtcdStore.open({
    endpoints: [etcd.endpoint],
    prefix: '/bench-load/',
    latency: DEFAULT_LATENCY_MODEL,
    logger: silentLogger,
  });
  const many = Array.from({ length: LOADED_NODES }, (_, i) => `m${i}`);
  await inParallel(many, 64, (id) =>
    writer.registerNode(spec({ id, km: (Number(id.slice(1)) % 2000) - 1000 }), {
      ttlS: 300,
      permanent: false,
    }),
  );
  await writer.close();

  const raw = new Etcd3({ hosts: etcd.endpoint });
  const t0 = process.hrtime.bigint();
  const listed = await raw.getAll().prefix('/bench-load/').keys();
  const baselineMs = Number(process.hrtime.bigint() - t0) / 1e6;
  raw.close();

  const t1 = process.hrtime.bigint();
  const fresh = await EtcdStore.open({
    endpoints: [etcd.endpoint],
    prefix: '/bench-load/',
    latency: DEFAULT_LATENCY_MODEL,
    logger: silentLogger,
  });
  const plane = new ControlPlane({
    store: fresh,
    clock: Date.now,
    reservationTtlMs: 30_000,
    replicaId: 'bench',
  });
  const result = plane.route(request({ latencyBudgetMs: 5000, explain: false }));
  const loadMs = Number(process.hrtime.bigint() - t1) / 1e6;
  await fresh.close();
  process.stdout.write(
    `fresh replica: ${fresh.listNodes({}).length} nodes (${listed.length} keys)\n` +
      `  baseline: bare range read of the keys  ${baselineMs.toFixed(0)} ms\n` +
      `  open + watch + first route (${result.decision.kind})  ${loadMs.toFixed(0)} ms  (ratio ${(loadMs / baselineMs).toFixed(2)})\n`,
  );

  // ---- 3. quota across two replicas ---------------------------------------------------------
  const stores = [
    await EtcdStore.open({
      endpoints: [etcd.endpoint],
      prefix: '/bench-quota/',
      latency: DEFAULT_LATENCY_MODEL,
      logger: silentLogger,
    }),
    await EtcdStore.open({
      endpoints: [etcd.endpoint],
      prefix: '/bench-quota/',
      latency: DEFAULT_LATENCY_MODEL,
      logger: silentLogger,
    }),
  ] as const;
  const planes = stores.map(
    (store, i) => new ControlPlane({ store, clock: Date.now, reservationTtlMs: 30_000, replicaId: `q${i}` }),
  );
  await stores[0].registerNode(
    spec({ id: 'q1', offers: [offer({ maxConcurrency: 100_000, maxQueue: 0 })] }),
    {
      ttlS: 0,
      permanent: true,
    },
  );
  for (const tenant of ['metered', 'unmetered']) await planes[0]?.accounts.createTenant(tenant, tenant);
  await planes[0]?.accounts.setPackage('metered', {
    name: 'bench',
    quotaPoints: 1e12,
    period: { kind: 'calendar-month', timeZone: 'Asia/Shanghai' },
    weights: { '*': { inputPer1k: 1, outputPer1k: 4, cachedInputPer1k: 0 } },
    allowedLevels: [],
    overQuota: 'REJECT',
    throttleRequestsPerS: 0,
    throttleBudgetMs: 0,
  });
  // Both replicas see the node and the package before the run.
  while (stores[1].getNode('q1') === undefined || stores[1].accounts.tenant('metered')?.package === undefined)
    await new Promise((resolve) => setTimeout(resolve, 20));
  for (const tenant of ['unmetered', 'metered']) {
    const writesBefore = stores[0].stats.writes + stores[1].stats.writes;
    let cycles = 0;
    let failures = 0;
    const until = Date.now() + QUOTA_SECONDS * 1000;
    const t2 = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: 32 }, async (_, worker) => {
        while (Date.now() < until) {
          const on = planes[(cycles + worker) % 2] as ControlPlane;
          const off = planes[(cycles + worker + 1) % 2] as ControlPlane;
          const placed = await on.routeMetered(request({ tenant, latencyBudgetMs: 5000, explain: false }));
          if (placed.reservation === undefined) {
            failures += 1;
            continue;
          }
          const released = await off.release(
            placed.reservation.id,
            { inputTokens: 100, cachedInputTokens: 0, outputTokens: 50 },
            true,
          );
          if (released.released) cycles += 1;
          else failures += 1;
        }
      }),
    );
    const seconds = Number(process.hrtime.bigint() - t2) / 1e9;
    const writes = stores[0].stats.writes + stores[1].stats.writes - writesBefore;
    process.stdout.write(
      `quota, two replicas, Route on one and Release on the other, 32 in flight (${tenant}):\n` +
        `  ${(cycles / seconds).toFixed(0)} cycles/s (${cycles} cycles, ${failures} failed), etcd writes per Release ${(writes / Math.max(1, cycles)).toFixed(2)}\n`,
    );
  }
  for (const store of stores) await store.close();
} finally {
  await etcd.destroy();
}
