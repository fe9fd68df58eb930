// Floods against a real `cpn serve --demo` process (build first: npm run build), for #10 and
// BENCHMARKS.md. Run: npm run bench:floods. Each phase prints what the server refused or evicted,
// its resident memory (VmRSS from /proc) and how routing of another client fared meanwhile,
// against a quiet phase measured first in the same run:
//   1. 10⁷ latency samples: 1,000 calls of 10,000 samples, 10,000 distinct `from` names over 1,000
//      nodes (every pair distinct) — held at --max-latency-samples, the oldest evicted
//   2. a status report with 60,000 load entries
//   3. 10,000 SchedulePricing calls
//   4. 15,000 TCP connections that never send the HTTP/2 preface (closed after the handshake timeout)
// Sizes scale with CPN_BENCH_FLOOD_SCALE (default 1; 0.1 for a quick look).

import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { credentials, type ServiceError, status } from '@grpc/grpc-js';
import { RegistryClient } from '../../src/gen/cpn/v1/registry.js';
import { RouteRequest, type RouteResponse, SchedulerClient } from '../../src/gen/cpn/v1/scheduler.js';
import { CLI_OPERATOR_KEY, startServe } from '../helpers/cli.js';
import { bearer, protoSpec } from '../helpers/grpc.js';

const SCALE = Number(process.env.CPN_BENCH_FLOOD_SCALE ?? 1);
const NODES = 1000;
const SAMPLE_CALLS = Math.round(1000 * SCALE);
const PRICING_CALLS = Math.round(10_000 * SCALE);
const CONNECTIONS = Math.round(15_000 * SCALE);

const serve = await startServe(['--demo', '--handshake-timeout-ms', '10000'], 30_000, {
  CPN_BOOTSTRAP_OPERATOR_KEY: CLI_OPERATOR_KEY,
});
// Never leave the server behind, however this script ends.
process.on('exit', () => serve.child.kill('SIGKILL'));
const options = { 'grpc.max_send_message_length': 64 * 1024 * 1024, ...bearer(CLI_OPERATOR_KEY) };
const registry = new RegistryClient(serve.address, credentials.createInsecure(), options);
const scheduler = new SchedulerClient(serve.address, credentials.createInsecure(), options);
const port = Number(serve.address.split(':').pop());

const rssMb = () => {
  const line = readFileSync(`/proc/${serve.child.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/);
  return Math.round(Number(line?.[1] ?? 0) / 1024);
};
const call = <Req, Res>(
  client: object,
  method: (req: Req, cb: (e: ServiceError | null, r: Res) => void) => void,
  request: Req,
) =>
  new Promise<{ code: number; details: string }>((resolve) =>
    method.call(client, request, (error) =>
      resolve({ code: error?.code ?? status.OK, details: error?.details ?? '' }),
    ),
  );

/** Routes one at a time from another client until `stop` resolves; latencies in ms. */
async function victim(stop: Promise<unknown>): Promise<number[]> {
  let running = true;
  stop.then(() => {
    running = false;
  });
  const request = RouteRequest.fromPartial({
    model: 'qwen3-32b',
    client: { region: 'CN-GD' },
    latencyBudgetMs: 2000,
    inputTokens: 200,
    maxOutputTokens: 50,
  });
  const latencies: number[] = [];
  for (let i = 0; running && i < 1_000_000; i += 1) {
    const started = performance.now();
    const placed = await new Promise<RouteResponse>((resolve, reject) =>
      scheduler.route(request, (error, response) =>
        error
          ? reject(new Error(`victim route failed: ${status[error.code]} ${error.details}`))
          : resolve(response),
      ),
    );
    latencies.push(performance.now() - started);
    await call(scheduler, scheduler.release, {
      reservationId: placed.reservationId,
      usage: { inputTokens: 200, cachedInputTokens: 0, outputTokens: 50 },
      success: true,
    });
  }
  return latencies;
}
const pct = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
};

async function phase(name: string, work: () => Promise<string>): Promise<void> {
  const started = performance.now();
  let peak = rssMb();
  const sampler = setInterval(() => {
    peak = Math.max(peak, rssMb());
  }, 100);
  let finish: (value?: unknown) => void = () => {};
  const done = new Promise((resolve) => {
    finish = resolve;
  });
  let failed: Error | undefined;
  const routes = victim(done).catch((error: Error) => {
    failed = error;
    return [] as number[];
  });
  const outcome = await work();
  finish();
  const latencies = await routes;
  if (failed !== undefined) throw failed;
  clearInterval(sampler);
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `${name.padEnd(22)} ${seconds.toFixed(1).padStart(6)} s  rss peak ${String(peak).padStart(5)} MB, after ${String(rssMb()).padStart(5)} MB  ` +
      `victim ${String(Math.round(latencies.length / seconds)).padStart(5)} routes/s p50 ${pct(latencies, 50).toFixed(1)} ms p99 ${pct(latencies, 99).toFixed(1)} ms  ${outcome}`,
  );
}

async function inParallel(count: number, width: number, run: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < count) await run(next++);
    }),
  );
}

try {
  for (let start = 0; start < NODES; start += 100) {
    await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        call(registry, registry.registerNode, {
          spec: protoSpec(`flood-${start + i}`),
          ttlS: 3600,
          permanent: false,
        }),
      ),
    );
  }
  console.log(`cpn serve --demo with ${NODES} extra nodes; rss ${rssMb()} MB; scale ${SCALE}`);
  await phase('quiet (baseline)', async () => {
    await new Promise((resolve) => setTimeout(resolve, 3000));
    return '';
  });

  await phase(`latency ${SAMPLE_CALLS}×10,000`, async () => {
    const codes = new Map<string, number>();
    await inParallel(SAMPLE_CALLS, 2, async (c) => {
      const samples = [];
      for (let f = 0; f < 10; f += 1) {
        for (let n = 0; n < NODES; n += 1)
          samples.push({ from: `ap-${c * 10 + f}`, nodeId: `flood-${n}`, rttMs: 5 });
      }
      const outcome = await call(registry, registry.reportLatency, { samples });
      codes.set(status[outcome.code] as string, (codes.get(status[outcome.code] as string) ?? 0) + 1);
    });
    return [...codes].map(([code, n]) => `${code} ${n}`).join(', ');
  });

  await phase('status 60,000 entries', async () => {
    const outcome = await call(registry, registry.reportStatus, {
      nodeId: 'flood-0',
      load: Array.from({ length: 60_000 }, (_, i) => ({ model: `m${i}`, active: 1, queued: 0 })),
      gpuUtilization: 0.5,
      kvCacheUtilization: 0.5,
      healthy: true,
    });
    return `${status[outcome.code]}: ${outcome.details.slice(0, 60)}`;
  });

  await phase(`pricing ${PRICING_CALLS} calls`, async () => {
    const codes = new Map<string, number>();
    const at = new Date(Date.now() + 86_400_000);
    await inParallel(PRICING_CALLS, 8, async (i) => {
      const outcome = await call(registry, registry.schedulePricing, {
        at: new Date(at.getTime() + i * 1000),
        policy: {
          rules: Array.from({ length: 16 }, () => ({
            level: 0,
            region: 'CN-GD',
            model: 'qwen3-32b',
            factor: 0.9,
            windowed: false,
            fromHour: 0,
            toHour: 0,
          })),
          utcOffsetHours: 8,
        },
      });
      codes.set(status[outcome.code] as string, (codes.get(status[outcome.code] as string) ?? 0) + 1);
    });
    return [...codes].map(([code, n]) => `${code} ${n}`).join(', ');
  });

  await phase(`${CONNECTIONS} idle connections`, async () => {
    const sockets: Socket[] = [];
    let closedByServer = 0;
    for (let i = 0; i < CONNECTIONS; i += 500) {
      await Promise.all(
        Array.from(
          { length: Math.min(500, CONNECTIONS - i) },
          () =>
            new Promise<void>((resolve) => {
              const socket = connect({ host: '127.0.0.1', port }, () => resolve());
              socket.on('error', () => resolve());
              socket.on('close', () => {
                closedByServer += 1;
              });
              sockets.push(socket);
            }),
        ),
      );
    }
    const peakHeld = sockets.length - closedByServer;
    const rssHeld = rssMb();
    // The server closes them once the handshake timeout passes (bounded wait).
    for (let waited = 0; waited < 30_000 && closedByServer < sockets.length; waited += 250) {
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const closed = closedByServer;
    for (const socket of sockets) socket.destroy();
    return `held ${peakHeld} at ${rssHeld} MB, ${closed} closed by the server`;
  });
} finally {
  registry.close();
  scheduler.close();
  await serve.stop();
}
