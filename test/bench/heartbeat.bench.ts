// What heartbeats cost, for #12 and BENCHMARKS.md. Run: npm run bench:heartbeat (builds first).
//
// Control plane: a real `cpn serve` process (on a real etcd, and on the memory store), N simulated
// agents (nodes with TTL 10 s, the agent's default: a lease renewal per node every 3.3 s) each sending a status every second; CHANGED of them (a fifth by default) change
// materially per beat, the rest repeat their status (a keep-alive). For each phase it prints the
// server's CPU per 1,000 heartbeats (utime + stime from /proc), the heartbeats it handled, the share
// that reached etcd (etcd's own counters of puts and lease renewals), and the nodes one replica could follow at a
// 1 s heartbeat on one core (Node runs handlers on one thread) — at 100 % and at 70 % of it.
// Baseline in the same run: the same beats as unary ReportStatus calls.
//
// Agent: CPU per scrape of a vLLM-sized /metrics page (HTTP GET over loopback + parse), in process.
//
// Sizes: CPN_BENCH_HEARTBEAT_NODES (default 2000), CPN_BENCH_HEARTBEAT_SECONDS (measured window,
// default 15; 5 s of warm-up before it).

import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { type ClientDuplexStream, credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { request } from 'undici';
import { readEngineMetrics } from '../../src/agent/engine-metrics.js';
import {
  type HeartbeatRequest,
  type HeartbeatResponse,
  RegistryClient,
} from '../../src/gen/cpn/v1/registry.js';
import type { NodeStatus } from '../../src/gen/cpn/v1/types.js';
import { CLI_OPERATOR_KEY, type ServeProcess, startServe } from '../helpers/cli.js';
import { startEtcd } from '../helpers/etcd.js';
import { startMetricsServer, vllmMetrics } from '../helpers/fake-engine-metrics.js';
import { protoSpec } from '../helpers/grpc.js';

const NODES = Number(process.env.CPN_BENCH_HEARTBEAT_NODES ?? 2000);
const WINDOW_S = Number(process.env.CPN_BENCH_HEARTBEAT_SECONDS ?? 15);
const WARMUP_S = 5;
const CHANGED = 0.2;
const AGENTS_PER_CHANNEL = 25;
/** /proc times are in clock ticks: CLK_TCK is 100 on Linux, 10 ms a tick. */
const MS_PER_TICK = 10;

const cpuMs = (pid: number): number => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  // utime and stime are fields 14 and 15 of stat; after "pid (comm) " they are at 11 and 12.
  return (Number(fields[11]) + Number(fields[12])) * MS_PER_TICK;
};

/** etcd's own counters: keys written (puts, in transactions too) and lease renewals. */
async function etcdOps(endpoint: string): Promise<{ puts: number; renewals: number }> {
  const text = await (await request(`${endpoint}/metrics`)).body.text();
  const value = (name: string) =>
    Number(
      text
        .split('\n')
        .find((l) => l.startsWith(`${name} `))
        ?.split(' ')[1] ?? Number.NaN,
    );
  return { puts: value('etcd_mvcc_put_total'), renewals: value('etcd_debugging_lease_renewed_total') };
}

async function serverHeartbeats(serve: ServeProcess): Promise<number> {
  const text = await (await request(`${serve.metricsUrl()}/metrics`)).body.text();
  const stream = text
    .split('\n')
    .find((l) => l.startsWith('cpn_rpc_stream_messages_total{method="Heartbeat"}'));
  const unary = text
    .split('\n')
    .filter((l) => l.startsWith('cpn_rpc_requests_total{method="ReportStatus"'))
    .reduce((sum, l) => sum + Number(l.split(' ')[1]), 0);
  return Number(stream?.split(' ')[1] ?? 0) + unary;
}

function statusOf(nodeId: string, active: number): NodeStatus {
  return {
    nodeId,
    load: [{ model: 'm', active, queued: 0 }],
    gpuUtilization: 0.5,
    kvCacheUtilization: 0.3,
    healthy: true,
  };
}

interface Phase {
  readonly name: string;
  readonly store: 'etcd' | 'memory';
  readonly mode: 'stream' | 'unary';
}

interface Result {
  readonly phase: Phase;
  readonly beats: number;
  readonly errors: number;
  readonly cpuMsPer1000: number;
  readonly etcdShare: number | undefined;
  readonly renewalShare: number | undefined;
  readonly serverCpuShare: number;
}

async function runPhase(phase: Phase, etcdEndpoint: string | undefined): Promise<Result> {
  const args =
    phase.store === 'etcd'
      ? ['--store', 'etcd', '--etcd-endpoints', etcdEndpoint as string]
      : ['--store', 'memory'];
  const serve = await startServe(args, 30_000);
  process.on('exit', () => serve.child.kill('SIGKILL'));
  const pid = serve.child.pid as number;
  const metadata = new Metadata();
  metadata.set('authorization', `Bearer ${CLI_OPERATOR_KEY}`);
  const channels = Array.from(
    { length: Math.ceil(NODES / AGENTS_PER_CHANNEL) },
    (_, i) =>
      new RegistryClient(serve.address, credentials.createInsecure(), {
        // One connection per channel, as separate agents would have.
        'grpc.use_local_subchannel_pool': 1,
        'cpn.channel': i,
      }),
  );
  const client = (i: number) => channels[Math.floor(i / AGENTS_PER_CHANNEL)] as RegistryClient;
  const ids = Array.from({ length: NODES }, (_, i) => `hb-${String(i).padStart(5, '0')}`);
  // Register every node (64 at a time).
  for (let i = 0; i < NODES; i += 64) {
    await Promise.all(
      ids
        .slice(i, i + 64)
        .map(
          (id, j) =>
            new Promise<void>((resolve, reject) =>
              client(i + j).registerNode(
                { spec: protoSpec(id), ttlS: 10, permanent: false },
                metadata,
                (error) => (error ? reject(error) : resolve()),
              ),
            ),
        ),
    );
  }
  const active = new Array<number>(NODES).fill(1);
  let errors = 0;
  let streams: ClientDuplexStream<HeartbeatRequest, HeartbeatResponse>[] = [];
  if (phase.mode === 'stream') {
    streams = ids.map((_, i) => {
      const stream = client(i).heartbeat(metadata);
      stream.on('data', () => undefined);
      stream.on('error', () => {
        errors += 1;
      });
      return stream;
    });
  }
  /** One beat of agent i: a fifth change their load by half the capacity, the rest repeat. */
  const beat = (i: number) => {
    if (Math.random() < CHANGED) active[i] = (active[i] as number) > 4 ? 1 : 9;
    const status = statusOf(ids[i] as string, active[i] as number);
    if (phase.mode === 'stream') streams[i]?.write({ status });
    else
      client(i).reportStatus(status, metadata, (error: ServiceError | null) => {
        if (error) errors += 1;
      });
  };
  // Every agent beats once a second, spread evenly over the second.
  const start = performance.now();
  const endAt = start + (WARMUP_S + WINDOW_S) * 1000;
  let next = 0;
  let measuredFrom:
    | { cpu: number; beats: number; etcd: { puts: number; renewals: number } | undefined; at: number }
    | undefined;
  while (performance.now() < endAt) {
    const elapsed = performance.now() - start;
    const due = Math.floor((elapsed / 1000) * NODES);
    for (; next < due; next += 1) beat(next % NODES);
    if (measuredFrom === undefined && elapsed >= WARMUP_S * 1000) {
      measuredFrom = {
        cpu: cpuMs(pid),
        beats: await serverHeartbeats(serve),
        etcd: phase.store === 'etcd' ? await etcdOps(etcdEndpoint as string) : undefined,
        at: performance.now(),
      };
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const cpu = cpuMs(pid) - (measuredFrom?.cpu ?? 0);
  const beats = (await serverHeartbeats(serve)) - (measuredFrom?.beats ?? 0);
  const ops = phase.store === 'etcd' ? await etcdOps(etcdEndpoint as string) : undefined;
  const puts = ops && measuredFrom?.etcd ? ops.puts - measuredFrom.etcd.puts : undefined;
  const renewals = ops && measuredFrom?.etcd ? ops.renewals - measuredFrom.etcd.renewals : undefined;
  const wallMs = performance.now() - (measuredFrom?.at ?? start);
  for (const stream of streams) stream.end();
  for (const channel of channels) channel.close();
  await serve.stop();
  // What the server warned about (an overloaded etcd shows here as timeouts), first of each kind.
  const warnings = new Map<string, number>();
  for (const line of serve.stderr().split('\n')) {
    const msg = /"msg":"([^"]*)"/.exec(line)?.[1];
    if (msg !== undefined && /"level":(40|50)/.test(line)) warnings.set(msg, (warnings.get(msg) ?? 0) + 1);
  }
  for (const [msg, count] of warnings) console.log(`  server warned ${count}×: ${msg}`);
  return {
    phase,
    beats,
    errors,
    cpuMsPer1000: (cpu / beats) * 1000,
    etcdShare: puts === undefined ? undefined : puts / beats,
    renewalShare: renewals === undefined ? undefined : renewals / beats,
    serverCpuShare: cpu / wallMs,
  };
}

async function scrapeCost(): Promise<{ bytes: number; cpuUsPerScrape: number; parseUsPerScrape: number }> {
  // A page the size of a busy vLLM's: its gauges and counters plus its latency histograms.
  const histogram = (name: string) => {
    const lines = [`# HELP ${name} Histogram.`, `# TYPE ${name} histogram`];
    for (const le of [
      0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80,
    ])
      lines.push(`${name}_bucket{engine="0",model_name="m",le="${le}"} ${Math.round(le * 1000)}.0`);
    lines.push(`${name}_bucket{engine="0",model_name="m",le="+Inf"} 100000.0`);
    lines.push(
      `${name}_count{engine="0",model_name="m"} 100000.0`,
      `${name}_sum{engine="0",model_name="m"} 4242.0`,
    );
    return lines.join('\n');
  };
  const extra = [
    'vllm:time_to_first_token_seconds',
    'vllm:inter_token_latency_seconds',
    'vllm:e2e_request_latency_seconds',
    'vllm:request_queue_time_seconds',
    'vllm:request_inference_time_seconds',
    'vllm:request_prefill_time_seconds',
    'vllm:request_decode_time_seconds',
    'vllm:request_prompt_tokens',
    'vllm:request_generation_tokens',
    'vllm:iteration_tokens_total',
    'vllm:request_max_num_generation_tokens',
    'vllm:request_params_max_tokens',
  ].map(histogram);
  const page = [vllmMetrics('m', { running: 12, waiting: 3, kv: 0.4 }), ...extra, ''].join('\n');
  const server = await startMetricsServer(() => page);
  const runs = 500;
  for (let i = 0; i < 50; i += 1) await (await request(server.url)).body.text();
  const before = process.cpuUsage();
  for (let i = 0; i < runs; i += 1) {
    const text = await (await request(server.url)).body.text();
    readEngineMetrics(text, 'auto', ['m']);
  }
  const used = process.cpuUsage(before);
  // The metrics server runs in this process too: measure the parse alone as well.
  const parseStart = process.cpuUsage();
  for (let i = 0; i < runs; i += 1) readEngineMetrics(page, 'auto', ['m']);
  const parsed = process.cpuUsage(parseStart);
  await server.close();
  return {
    bytes: Buffer.byteLength(page),
    cpuUsPerScrape: (used.user + used.system) / runs,
    parseUsPerScrape: (parsed.user + parsed.system) / runs,
  };
}

const etcd = await startEtcd();
process.on('exit', () => {
  void etcd.destroy();
});
console.log(
  `heartbeats: ${NODES} simulated agents, one status per second each (${CHANGED * 100} % changed per beat)`,
);
console.log(
  `measured window ${WINDOW_S} s after ${WARMUP_S} s of warm-up; server CPU from /proc (one core = 1000 ms/s)`,
);
const phases: Phase[] = [
  { name: 'etcd, unary ReportStatus (baseline)', store: 'etcd', mode: 'unary' },
  { name: 'etcd, Heartbeat stream', store: 'etcd', mode: 'stream' },
  { name: 'memory, unary ReportStatus', store: 'memory', mode: 'unary' },
  { name: 'memory, Heartbeat stream', store: 'memory', mode: 'stream' },
];
const results: Result[] = [];
for (const phase of phases) {
  const result = await runPhase(phase, etcd.endpoint);
  results.push(result);
  const perBeatMs = result.cpuMsPer1000 / 1000;
  console.log(
    [
      `${phase.name.padEnd(38)}`,
      `${result.beats} beats (${(result.beats / WINDOW_S).toFixed(0)}/s, ${result.errors} errors)`,
      `server CPU ${result.cpuMsPer1000.toFixed(0)} ms per 1,000`,
      `busy ${(result.serverCpuShare * 100).toFixed(0)} % of a core`,
      result.etcdShare === undefined
        ? ''
        : `to etcd: puts ${(result.etcdShare * 100).toFixed(1)} %, lease renewals ${((result.renewalShare ?? 0) * 100).toFixed(1)} % of beats`,
      `→ ${Math.floor(1000 / perBeatMs)} nodes at 1 s (${Math.floor(700 / perBeatMs)} at 70 %)`,
    ]
      .filter(Boolean)
      .join(' · '),
  );
}
const [unaryEtcd, streamEtcd] = results;
if (unaryEtcd && streamEtcd)
  console.log(
    `stream / unary CPU per heartbeat on etcd: ${(streamEtcd.cpuMsPer1000 / unaryEtcd.cpuMsPer1000).toFixed(2)}`,
  );
const scrape = await scrapeCost();
console.log(
  `agent: one scrape of a ${(scrape.bytes / 1024).toFixed(0)} KiB vLLM page costs ${scrape.cpuUsPerScrape.toFixed(0)} µs of CPU (HTTP both ends + parse; parse alone ${scrape.parseUsPerScrape.toFixed(0)} µs): ${((scrape.cpuUsPerScrape / 1e6) * 100).toFixed(2)} % of a core at one scrape a second`,
);
await etcd.destroy();
process.exit(0);
