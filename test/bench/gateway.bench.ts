// Gateway overhead (#11): streams through `cpn serve --demo`'s gateway against the same fake
// engine called directly, same run, same load generator. The engine (its own process) streams a
// fixed answer of 20 chunks, CPN_BENCH_CHUNK_MS apart (default 10: a 100 tokens/s decode; 0 makes
// the engine free and the run CPU-bound on the shared cores); C streams are kept in flight for S
// seconds each way.
// Figures: time to first byte p50/p99 and completed streams per second, and their ratios.
// Run: npm run bench:gateway (builds first). CPN_BENCH_CONCURRENCY (100), CPN_BENCH_SECONDS (10).
import { spawn } from 'node:child_process';
import { credentials } from '@grpc/grpc-js';
import { Agent, request } from 'undici';
import { RegistryClient } from '../../src/gen/cpn/v1/registry.js';
import { CLI_OPERATOR_KEY, startServe } from '../helpers/cli.js';
import { bearer, protoSpec } from '../helpers/grpc.js';

const CONCURRENCY = Number(process.env.CPN_BENCH_CONCURRENCY ?? 100);
const CHUNK_MS = Number(process.env.CPN_BENCH_CHUNK_MS ?? 10);
const SECONDS = Number(process.env.CPN_BENCH_SECONDS ?? 10);

const engineProcess = spawn(
  process.execPath,
  ['--import', 'tsx', 'test/bench/fake-engine-server.ts', '20', String(CHUNK_MS)],
  {
    stdio: ['pipe', 'pipe', 'inherit'],
  },
);
process.on('exit', () => engineProcess.kill('SIGKILL'));
const engineUrl = await new Promise<string>((resolve) => {
  let out = '';
  engineProcess.stdout?.on('data', (chunk: Buffer) => {
    out += chunk.toString();
    const match = /READY (\S+)/.exec(out);
    if (match?.[1]) resolve(match[1]);
  });
});
const serve = await startServe(['--demo'], 30_000, {
  CPN_BOOTSTRAP_OPERATOR_KEY: CLI_OPERATOR_KEY,
  ...(process.env.CPN_BENCH_PROFILE
    ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${process.env.CPN_BENCH_PROFILE}` }
    : {}),
});
process.on('exit', () => serve.child.kill('SIGKILL'));
const gateway = /export OPENAI_BASE_URL=(\S+) OPENAI_API_KEY=(\S+)/.exec(serve.stdout());
if (gateway?.[1] === undefined || gateway[2] === undefined) throw new Error('no gateway address printed');
const registry = new RegistryClient(serve.address, credentials.createInsecure(), bearer(CLI_OPERATOR_KEY));
const spec = protoSpec('bench-engine');
await new Promise((resolve, reject) =>
  registry.registerNode(
    {
      spec: {
        ...spec,
        endpoint: engineUrl,
        models: spec.models.map((offer) => ({
          ...offer,
          model: 'bench-m',
          maxConcurrency: 100_000,
          maxQueue: 0,
        })),
      },
      ttlS: 3600,
      permanent: false,
    },
    (error) => (error ? reject(error) : resolve(undefined)),
  ),
);
registry.close();

const agent = new Agent({ connections: CONCURRENCY * 2, pipelining: 1 });
const body = JSON.stringify({
  model: 'bench-m',
  stream: true,
  messages: [{ role: 'user', content: 'hello' }],
  max_tokens: 20,
});

async function run(
  url: string,
  headers: Record<string, string>,
): Promise<{ ttfb: number[]; completed: number; failed: number }> {
  const ttfb: number[] = [];
  let completed = 0;
  let failed = 0;
  const until = performance.now() + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (let i = 0; i < 1_000_000 && performance.now() < until; i += 1) {
        const started = performance.now();
        try {
          const response = await request(url, {
            method: 'POST',
            headers: { 'content-type': 'application/json', ...headers },
            body,
            dispatcher: agent,
          });
          let first = true;
          for await (const _chunk of response.body) {
            if (first) ttfb.push(performance.now() - started);
            first = false;
          }
          if (response.statusCode === 200) completed += 1;
          else failed += 1;
        } catch {
          failed += 1;
        }
      }
    }),
  );
  return { ttfb, completed, failed };
}
const pct = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
};

try {
  // Warm both paths, then measure direct and through the gateway.
  await run(`${engineUrl}/v1/chat/completions`, {});
  await run(`${gateway[1]}/chat/completions`, { authorization: `Bearer ${gateway[2]}` });
  const direct = await run(`${engineUrl}/v1/chat/completions`, {});
  const viaGateway = await run(`${gateway[1]}/chat/completions`, { authorization: `Bearer ${gateway[2]}` });
  for (const [name, r] of [
    ['direct', direct],
    ['gateway', viaGateway],
  ] as const) {
    console.log(
      `${name.padEnd(8)} ${String(Math.round(r.completed / SECONDS)).padStart(6)} streams/s  ttfb p50 ${pct(r.ttfb, 50).toFixed(2)} ms  p99 ${pct(r.ttfb, 99).toFixed(2)} ms  (${r.failed} failed)`,
    );
  }
  console.log(
    `gateway vs direct, ${CONCURRENCY} streams in flight, chunks ${CHUNK_MS} ms apart: throughput ${(viaGateway.completed / direct.completed).toFixed(2)}×, added ttfb p50 ${(pct(viaGateway.ttfb, 50) - pct(direct.ttfb, 50)).toFixed(2)} ms, p99 ${(pct(viaGateway.ttfb, 99) - pct(direct.ttfb, 99)).toFixed(2)} ms`,
  );
} finally {
  await agent.close();
  engineProcess.stdin?.end();
  await serve.stop();
}
