// `cpn nodes` over a large registry (#10): registers CPN_BENCH_NODES (default 20,000) nodes in 31
// regions on a `cpn serve` process and times the CLI end to end (process start, pages, output).
// Run: npm run bench:nodes (builds first).
import { execFileSync } from 'node:child_process';
import { credentials } from '@grpc/grpc-js';
import { RegistryClient } from '../../src/gen/cpn/v1/registry.js';
import { CLI_OPERATOR_KEY, CPN_BIN, startServe } from '../helpers/cli.js';
import { bearer, protoSpec } from '../helpers/grpc.js';

const NODES = Number(process.env.CPN_BENCH_NODES ?? 20_000);
const serve = await startServe([]);
process.on('exit', () => serve.child.kill('SIGKILL'));
const registry = new RegistryClient(serve.address, credentials.createInsecure(), bearer(CLI_OPERATOR_KEY));
for (let start = 0; start < NODES; start += 500) {
  await Promise.all(
    Array.from(
      { length: Math.min(500, NODES - start) },
      (_, i) =>
        new Promise((resolve, reject) =>
          registry.registerNode(
            {
              spec: { ...protoSpec(`n-${start + i}`), region: `CN-R${(start + i) % 31}` },
              ttlS: 3600,
              permanent: false,
            },
            (error) => (error ? reject(error) : resolve(0)),
          ),
        ),
    ),
  );
}
console.log(`${NODES} nodes registered`);
for (const args of [
  ['nodes'],
  ['nodes', '--all'],
  ['nodes', '--all', '--json'],
  ['nodes', '--region', 'CN-R7', '--all'],
]) {
  const started = performance.now();
  const out = execFileSync(process.execPath, [CPN_BIN, ...args, '--server', serve.address], {
    env: { ...process.env, CPN_API_KEY: CLI_OPERATOR_KEY },
    maxBuffer: 512 * 1024 * 1024,
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `cpn ${args.join(' ').padEnd(28)} ${seconds.toFixed(2)} s  ${out.toString().split('\n').length - 1} lines`,
  );
}
registry.close();
await serve.stop();
