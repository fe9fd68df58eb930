// The five-minute tour of the README, run for real: `cpn serve --demo` and the client commands.

import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../../src/gen/cpn/v1/registry.js';
import { Level } from '../../src/gen/cpn/v1/types.js';
import {
  CLI_OPERATOR_KEY,
  CPN_BIN,
  runCli,
  type ServeProcess,
  startServe,
  tempDir,
  tempFile,
} from '../helpers/cli.js';
import { eventually } from '../helpers/etcd.js';
import { startMetricsServer, vllmMetrics } from '../helpers/fake-engine-metrics.js';
import { bearer, ok, protoSpec, rpc } from '../helpers/grpc.js';

describe('cpn CLI against the demo topology', () => {
  let serve: ServeProcess;
  let server: string[];
  let demoKey = '';
  let demoClientKey = '';
  /** The CLI as the README's reader runs it: with the operator key `serve --demo` printed. */
  const cli = (args: readonly string[], env: Record<string, string | undefined> = {}) =>
    runCli(args, 20_000, { CPN_API_KEY: demoKey, ...env });
  beforeAll(async () => {
    serve = await startServe(['--demo'], 20_000, { CPN_BOOTSTRAP_OPERATOR_KEY: '' });
    server = ['--server', serve.address];
    demoKey = /export CPN_API_KEY=(\S+)/.exec(serve.stdout())?.[1] ?? '';
    demoClientKey = /client key of tenant "demo": (\S+)/.exec(serve.stdout())?.[1] ?? '';
  });
  /** `cpn route` for qwen3-8b from Guangdong with a budget, against the demo server. */
  const routeInGuangdong = (budgetMs: string, ...flags: string[]) =>
    cli(['route', '--model', 'qwen3-8b', '--region', 'CN-GD', '--budget-ms', budgetMs, ...flags, ...server]);
  afterAll(async () => {
    await serve?.stop('SIGKILL');
  });

  it('prints demo credentials once: an operator key to export, and a client key of tenant demo', () => {
    expect(demoKey).toMatch(/^cpn_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(demoClientKey).toMatch(/^cpn_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
  });

  it('cpn gateway serves the OpenAI API in front of a remote control plane, and stops on SIGTERM', async () => {
    const { spawn } = await import('node:child_process');
    const child = spawn(
      process.execPath,
      [CPN_BIN, 'gateway', '--port', '0', '--region', 'CN-GD', ...server],
      {
        env: { ...process.env, CPN_API_KEY: demoKey },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout?.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          const match = /listening on (http:\/\/\S+\/v1)/.exec(out);
          if (match?.[1]) resolve(match[1]);
        });
        exited.then((code) => reject(new Error(`cpn gateway exited with ${code}`)));
      });
      const sdk = new OpenAI({ baseURL: url, apiKey: demoClientKey, maxRetries: 0 });
      expect((await sdk.models.list()).data.map((model) => model.id)).toContain('qwen3-32b');
      const metrics = await (await fetch(url.replace(/\/v1$/, '/metrics'))).text();
      expect(metrics).toMatch(/^cpn_gateway_requests_in_flight 0$/m);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
    const noKey = await runCli(['gateway', '--port', '0', ...server], 10_000, { CPN_API_KEY: undefined });
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toContain('needs its own operator key');
  });

  it('starts the OpenAI-compatible gateway and prints how to point the OpenAI SDK at it as tenant demo', async () => {
    const printed = /export OPENAI_BASE_URL=(\S+) OPENAI_API_KEY=(\S+)/.exec(serve.stdout());
    expect(printed?.[2]).toBe(demoClientKey);
    const sdk = new OpenAI({ baseURL: printed?.[1], apiKey: printed?.[2], maxRetries: 0 });
    const models = (await sdk.models.list()).data.map((model) => model.id);
    expect(models).toContain('qwen3-32b');
  });

  it('without a key a command says how to get one; a client key routes but cannot list nodes', async () => {
    const anonymous = await cli(['nodes', ...server], { CPN_API_KEY: undefined });
    expect(anonymous.code).toBe(1);
    expect(anonymous.stderr).toMatch(/UNAUTHENTICATED: .*set CPN_API_KEY/);
    const placed = await cli(
      ['route', '--model', 'qwen3-32b', '--region', 'CN-GD', '--budget-ms', '2000', '--json', ...server],
      {
        CPN_API_KEY: demoClientKey,
      },
    );
    expect(placed.code).toBe(0);
    expect(JSON.parse(placed.stdout).reservationId).toMatch(/~demo$/);
    const nodes = await cli(['nodes', ...server], { CPN_API_KEY: demoClientKey });
    expect(nodes.code).toBe(1);
    expect(nodes.stderr).toMatch(/PERMISSION_DENIED: ListNodes needs role operator or planner/);
  });

  it('operators manage tenants and keys; a revoked key stops working', async () => {
    expect(
      (await cli(['tenants', 'create', 'acme-auto', '--display-name', 'Acme Auto', ...server])).stdout,
    ).toContain('created tenant acme-auto');
    const tenants = await cli(['tenants', 'list', ...server]);
    expect(tenants.stdout).toMatch(/acme-auto.*Acme Auto/);
    const created = await cli([
      'keys',
      'create',
      '--role',
      'client',
      '--tenant',
      'acme-auto',
      '--name',
      'fleet',
      '--json',
      ...server,
    ]);
    expect(created.code).toBe(0);
    const { key, secret } = JSON.parse(created.stdout);
    const route = ['route', '--model', 'qwen3-32b', '--region', 'CN-GD', '--budget-ms', '2000', ...server];
    expect((await cli(route, { CPN_API_KEY: secret })).code).toBe(0);
    const listed = await cli(['keys', 'list', '--tenant', 'acme-auto', ...server]);
    expect(listed.stdout).toContain(key.id);
    expect(listed.stdout).not.toContain(secret);
    expect((await cli(['keys', 'revoke', key.id, ...server])).stdout).toContain(`revoked ${key.id}`);
    const refused = await cli(route, { CPN_API_KEY: secret });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/UNAUTHENTICATED: .*revoked/);
    const badRole = await cli(['keys', 'create', '--role', 'root', ...server]);
    expect(badRole.code).toBe(2);
  });

  it('a package meters the demo tenant: route, release, usage and a bill that adds up', async () => {
    const file = await tempFile(
      'starter.yaml',
      'name: starter\nquota_points: 1000\nweights:\n  qwen3-32b: { input: 100, output: 200 }\nover_quota: REJECT\n',
    );
    const set = await cli(['packages', 'set', 'demo', '--file', file, ...server]);
    expect(set.stdout).toContain(
      'package starter: 1000 points per calendar month (Asia/Shanghai); over quota: REJECT',
    );
    const asClient = { CPN_API_KEY: demoClientKey };
    const route = [
      'route',
      '--model',
      'qwen3-32b',
      '--region',
      'CN-GD',
      '--budget-ms',
      '2000',
      '--input-tokens',
      '1000',
      '--output-tokens',
      '1000',
      '--json',
      ...server,
    ];
    const placed = JSON.parse((await cli(route, asClient)).stdout);
    expect(placed.reservedPoints).toBe(300);
    const released = await cli(
      ['release', placed.reservationId, '--input-tokens', '1000', '--output-tokens', '500', ...server],
      asClient,
    );
    expect(released.stdout).toContain('200 points counted, 100 returned');
    const csv = await cli(['usage', '--tenant', 'demo', '--csv', ...server], asClient);
    expect(csv.stdout.split('\n')[1]).toMatch(
      /^demo,\d{4}-\d{2},qwen3-32b,CENTER,1,1000,0,500,200,0,0,0\.0000,0$/,
    );
    const other = await cli(['usage', '--tenant', 'acme-auto', ...server], asClient);
    expect(other.stderr).toMatch(/PERMISSION_DENIED/);
    const bill = await cli(['bill', '--tenant', 'demo', ...server]);
    expect(bill.stdout).toContain('quota: 200 of 1000 points used');
    expect(bill.stdout).toContain('points counted against the quota: 200');
    // Points per token kind, as recorded at the Release: 1000 input × 100 and 500 output × 200 per 1k.
    expect(bill.stdout).toMatch(/input\s.*1000.*100\.000/);
    expect(bill.stdout).toMatch(/output\s.*500.*100\.000/);
    expect(bill.stdout).toContain('total to pay beyond the package: 0.0000');
    // Over the quota under REJECT: refused, and the reason says so.
    for (let i = 0; i < 2; i += 1) await cli(route, asClient);
    const refused = await cli(route, asClient);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      /RESOURCE_EXHAUSTED: .*refused by quota: tenant demo has \d+ of 1000 points left/,
    );
  });

  it('prints how to send a first request', () => {
    expect(serve.stdout()).toContain('69 nodes from simulations/topologies/demo-national.yaml');
    expect(serve.stdout()).toContain('npx cpn route --model qwen3-8b --region CN-GD --budget-ms 2000');
  });

  it('a loose budget places on a cheap western hub, and the card shows the whole estimate', async () => {
    const result = await routeInGuangdong('2000');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(
      /^Placed on hub-(gz-guian|gs-qingyang|nx-zhongwei|nm-horinger) {2}\(CENTER, CN-\w\w\)/,
    );
    for (const label of ['network RTT', 'queue', 'prefill', 'TTFT', 'cost', 'reservation'])
      expect(result.stdout).toContain(label);
    expect(result.stdout).toContain('(coordinates)');
  });

  it('a 30 ms budget places on a nearby edge or province node', async () => {
    const result = await routeInGuangdong('30');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^Placed on \S+ {2}\((EDGE|PROVINCE), CN-GD\)/);
  });

  it('cpn replay: a measured trace through a GPU profile, deterministic; a bad trace names its line', async () => {
    const args = [
      'replay',
      '--profile',
      'simulations/profiles/h200',
      '--trace',
      'simulations/profiles/h200/traces/rate-6.86.csv',
      '--json',
    ];
    const first = await runCli(args);
    expect(first.code, first.stderr).toBe(0);
    const out = JSON.parse(first.stdout);
    expect(out.requests).toBe(428);
    expect(out.ttft_ms.p50).toBeGreaterThan(5);
    expect(out.tpot_ms.p50).toBeGreaterThan(1);
    expect(out.mean_batch).toBeGreaterThan(1);
    expect((await runCli(args)).stdout).toBe(first.stdout);
    const table = await runCli(args.slice(0, -1));
    expect(table.stdout).toMatch(/TTFT ms/);
    const bad = await tempFile('bad.csv', 'arrival_s,input_tokens,output_tokens\n0.1,100,10\n0.2,-5,10\n');
    const refused = await runCli(['replay', '--profile', 'simulations/profiles/h200', '--trace', bad]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/bad\.csv:3: input_tokens must be a whole number >= 1, got "-5"/);
  });

  it('cpn plan: runs within its budget, prints plan.json, writes the report; a bad plan file names its line', async () => {
    const out = await tempDir();
    const result = await runCli(
      ['plan', 'test/sim/plan/plan.yaml', '--max-runs', '5', '--json', '--out', out],
      60_000,
    );
    expect(result.code, result.stderr).toBe(0);
    const summary = JSON.parse(result.stdout);
    expect(summary.scenario).toBe('plan-tiny');
    expect(summary.runs.length).toBeLessThanOrEqual(5);
    expect(summary.baseline.meets_targets).toBe(false);
    // One progress line per run, on stderr.
    expect(result.stderr.match(/^run \d+ \((baseline|greedy|uniform|prune)\)/gm)?.length).toBe(
      summary.runs.length,
    );
    expect(JSON.parse(await readFile(join(out, 'plan.json'), 'utf8'))).toEqual(summary);
    expect(await readFile(join(out, 'plan.html'), 'utf8')).toContain('<h2>Runs tried</h2>');
    const bad = join(out, 'bad.yaml');
    await writeFile(bad, 'scenario: nowhere.yaml\ntargets: []\n');
    const refused = await runCli(['plan', bad]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/bad\.yaml:2: targets/);
  });

  it('cpn session: open, update while driving, watch, close; a closed session is gone', async () => {
    const opened = await cli([
      'session',
      'open',
      '--model',
      'qwen3-8b',
      '--budget-ms',
      '120',
      '--lat',
      '23.13',
      '--lon',
      '113.26',
      '--context-tokens',
      '2000',
      ...server,
    ]);
    expect(opened.code, opened.stderr).toBe(0);
    const id = /^session ([0-9a-f]{32})$/m.exec(opened.stdout)?.[1] ?? '';
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    expect(opened.stdout).toMatch(/on \S+ \(CN-[A-Z]{2}\) at \S+: TTFT [\d.]+ ms/);
    const updated = await cli([
      'session',
      'update',
      id,
      '--lat',
      '24.0',
      '--lon',
      '114.0',
      '--json',
      ...server,
    ]);
    expect(updated.code, updated.stderr).toBe(0);
    const body = JSON.parse(updated.stdout);
    expect(body.placement.nodeId).toMatch(/\S/);
    // The context is warm on its node: staying prefills only the new tokens.
    expect(body.placement.estimate.prefillMs).toBeLessThan(20);
    // Watch: the placement first; when the session closes, the end, and exit 0.
    const { spawn } = await import('node:child_process');
    const watch = spawn(process.execPath, [CPN_BIN, 'session', 'watch', id, ...server], {
      env: { ...process.env, CPN_API_KEY: demoKey },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let watchOut = '';
    const firstEvent = new Promise<void>((resolve) =>
      watch.stdout.on('data', (chunk: Buffer) => {
        watchOut += chunk.toString();
        if (watchOut.includes(' on ')) resolve();
      }),
    );
    const watchExit = new Promise<number | null>((resolve) => watch.once('exit', resolve));
    try {
      await firstEvent;
      const closed = await cli(['session', 'close', id, ...server]);
      expect(closed.code).toBe(0);
      expect(await watchExit).toBe(0);
      expect(watchOut).toContain(`session ${id} ended`);
    } finally {
      watch.kill('SIGKILL');
    }
    const again = await cli(['session', 'update', id, '--lat', '24.0', '--lon', '114.0', ...server]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('NOT_FOUND');
    const bad = await cli(['session', 'update', id, '--lat', '24.0', ...server]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('give --lat and --lon together');
  });

  it('--explain lists every node with its verdict; --json is machine-readable', async () => {
    // qwen3-32b: the terminals do not serve it.
    const explained = await cli([
      'route',
      '--model',
      'qwen3-32b',
      '--region',
      'CN-GD',
      '--budget-ms',
      '60',
      '--explain',
      ...server,
    ]);
    expect(explained.code, explained.stderr).toBe(0);
    for (const verdict of ['SELECTED', 'FALLBACK', 'OVER_BUDGET', 'MODEL_NOT_SERVED'])
      expect(explained.stdout).toContain(verdict);
    const json = await cli([
      'route',
      '--model',
      'qwen3-8b',
      '--region',
      'CN-SH',
      '--budget-ms',
      '50',
      '--json',
      ...server,
    ]);
    expect(json.code).toBe(0);
    const parsed = JSON.parse(json.stdout);
    expect(parsed.placement.estimate.latencySource).toBe('LATENCY_SOURCE_COORDINATES');
    expect(parsed.reservationId).toBeTruthy();
  });

  it('draining the chosen node moves the next placement elsewhere; --undo brings it back', async () => {
    const route = () => routeInGuangdong('30', '--json');
    const first = JSON.parse((await route()).stdout).placement.nodeId as string;
    const drained = await cli(['drain', first, ...server]);
    expect(drained.code).toBe(0);
    expect(drained.stdout).toContain(`${first} is draining`);
    const nodes = await cli(['nodes', '--region', 'CN-GD', ...server]);
    expect(nodes.stdout).toMatch(new RegExp(`${first.replace(/\./g, '\\.')}\\s+\\S+\\s+CN-GD\\s+DRAINING`));
    const second = JSON.parse((await route()).stdout).placement.nodeId as string;
    expect(second).not.toBe(first);
    expect((await cli(['drain', first, '--undo', ...server])).code).toBe(0);
    expect(JSON.parse((await route()).stdout).placement.nodeId).toBe(first);
  });

  it('nodes filters by level and prints JSON', async () => {
    const result = await cli(['nodes', '--level', 'center', '--json', ...server]);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout).nodes).toHaveLength(8);
  });

  it('fails with one line and exit 1 when nothing is feasible', async () => {
    const tight = await routeInGuangdong('1');
    expect(tight.code).toBe(1);
    expect(tight.stderr.trim().split('\n')).toHaveLength(1);
    expect(tight.stderr).toMatch(
      /^cpn: FAILED_PRECONDITION: model qwen3-8b within 1 ms from CN-GD: \d+ nodes serve it/,
    );
    const unknown = await cli([
      'route',
      '--model',
      'gpt-x',
      '--region',
      'CN-GD',
      '--budget-ms',
      '100',
      ...server,
    ]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/^cpn: NOT_FOUND: /);
  });

  it('rejects bad usage with exit 2 and answers --help with exit 0', async () => {
    const bad = await cli(['route', '--model', 'm', '--region', 'CN-GD', '--budget-ms', '-3', ...server]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('expected a number > 0, got "-3"');
    const noPosition = await cli(['route', '--model', 'm', '--budget-ms', '3', ...server]);
    expect(noPosition.code).toBe(2);
    expect(noPosition.stderr).toContain('give the client position');
    const help = await cli(['route', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--budget-ms <ms>');
  });
});

describe('cpn CLI failures and lifecycle', () => {
  it('--auth none is refused on a non-loopback address, and warns on loopback', async () => {
    const exposed = await runCli([
      'serve',
      '--auth',
      'none',
      '--host',
      '0.0.0.0',
      '--port',
      '0',
      '--metrics-port',
      '0',
    ]);
    expect(exposed.code).toBe(2);
    expect(exposed.stderr).toMatch(/--auth none is allowed only on a loopback address/);
    const open = await startServe(['--auth', 'none', '--log-level', 'warn']);
    try {
      expect(open.stdout()).toContain('WARNING: authentication is off');
      const nodes = await runCli(['nodes', '--server', open.address], 20_000, { CPN_API_KEY: undefined });
      expect(nodes.code).toBe(0);
    } finally {
      await open.stop();
    }
  });

  it('installs the bootstrap operator key from a file, and refuses both the file and the variable', async () => {
    const secret = 'file-operator-key-0123456789abcdef0123456789';
    const file = await tempFile('operator-key', `${secret}\n`);
    const both = await runCli(
      ['serve', '--port', '0', '--metrics-port', '0', '--bootstrap-operator-key-file', file],
      20_000,
      {
        CPN_BOOTSTRAP_OPERATOR_KEY: secret,
      },
    );
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/not both/);
    const serve = await startServe(['--bootstrap-operator-key-file', file], 20_000, {
      CPN_BOOTSTRAP_OPERATOR_KEY: '',
    });
    try {
      expect(serve.stdout()).toContain('the bootstrap operator key is installed');
      const nodes = await runCli(['nodes', '--server', serve.address], 20_000, { CPN_API_KEY: secret });
      expect(nodes.code).toBe(0);
      const wrong = await runCli(['nodes', '--server', serve.address], 20_000, { CPN_API_KEY: `${secret}x` });
      expect(wrong.stderr).toMatch(/UNAUTHENTICATED: ListNodes: wrong secret for API key bootstrap/);
    } finally {
      await serve.stop();
    }
  });

  it('refuses a bootstrap key that is too short, naming the rule', async () => {
    const result = await runCli(['serve', '--port', '0', '--metrics-port', '0'], 20_000, {
      CPN_BOOTSTRAP_OPERATOR_KEY: 'short',
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/bootstrap operator key must be at least 32 printable characters/);
  });

  it('says where it tried to connect when no server is there', async () => {
    const result = await runCli(['nodes', '--server', '127.0.0.1:1', '--timeout-ms', '2000']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^cpn: (UNAVAILABLE|DEADLINE_EXCEEDED): .*127\.0\.0\.1:1/);
  });

  it('refuses an invalid topology with file:line and exit 2', async () => {
    const file = await tempFile('bad.yaml', 'version: 1\nregions: {}\nmodels: {}\nprofiles: {}\nnodes: []\n');
    const result = await runCli(['serve', '--port', '0', '--topology', file]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`${file}:5: nodes`);
  });

  it('nodes over a large registry: a summary by default, pages behind --all and --limit', async () => {
    const serve = await startServe([]);
    const server = ['--server', serve.address];
    const registry = new RegistryClient(
      serve.address,
      credentials.createInsecure(),
      bearer(CLI_OPERATOR_KEY),
    );
    try {
      const count = 1234;
      for (let start = 0; start < count; start += 200) {
        await Promise.all(
          Array.from({ length: Math.min(200, count - start) }, (_, i) =>
            ok(registry, registry.registerNode, {
              spec: protoSpec(`bulk-${String(start + i).padStart(5, '0')}`, {
                level: (start + i) % 3 === 0 ? Level.LEVEL_EDGE : Level.LEVEL_PROVINCE,
              }),
              ttlS: 3600,
              permanent: false,
            }),
          ),
        );
      }
      const summary = await runCli(['nodes', ...server]);
      expect(summary.code, summary.stderr).toBe(0);
      expect(summary.stderr).toContain(`${count} nodes: showing counts per level and region`);
      expect(summary.stdout).toMatch(/^PROVINCE\s+CN-GD\s+822\s+822\s+0\s+0\s+0$/m);
      expect(summary.stdout).toMatch(/^EDGE\s+CN-GD\s+412\s+412\s+/m);
      expect(summary.stdout).toContain(`${count} nodes in 2 level/region groups`);

      const first = await runCli(['nodes', '--limit', '3', ...server]);
      expect(
        first.stdout
          .trim()
          .split('\n')
          .slice(1, 4)
          .map((line) => line.split(/\s+/)[0]),
      ).toEqual(['bulk-00000', 'bulk-00001', 'bulk-00002']);
      expect(first.stdout).toContain(`first 3 of ${count} nodes`);

      const all = await runCli(['nodes', '--all', '--json', ...server]);
      const ids = (JSON.parse(all.stdout).nodes as { spec: { id: string } }[]).map((n) => n.spec.id);
      expect(ids).toHaveLength(count);
      expect(new Set(ids).size).toBe(count);
      expect([...ids].sort()).toEqual(ids);
      const edge = await runCli(['nodes', '--level', 'edge', '--all', ...server]);
      expect(edge.stdout).toContain('412 nodes');
    } finally {
      registry.close();
      await serve.stop();
    }
  });

  it('cpn agent registers its node from a topology file, reports the engine load, and on SIGTERM drains and deregisters it', async () => {
    const { spawn } = await import('node:child_process');
    const load = { running: 4, waiting: 1, kv: 0.5 };
    const metrics = await startMetricsServer(() => vllmMetrics('qwen3-32b', load));
    const serve = await startServe([]);
    const dir = await tempDir();
    // Settings from a --config file (the server from the flag).
    const config = join(dir, 'agent.yaml');
    await writeFile(
      config,
      [
        'node: simulations/topologies/demo-national.yaml',
        'node_id: hub-gba-shaoguan',
        `engine_metrics: ${metrics.url}`,
        'interval_ms: 100',
        'grace_ms: 10000',
        'probe: [CN-GD=127.0.0.1:9]',
      ].join('\n'),
    );
    const child = spawn(process.execPath, [CPN_BIN, 'agent', '--config', config, '--server', serve.address], {
      env: { ...process.env, CPN_API_KEY: CLI_OPERATOR_KEY },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await eventually(
        async () => {
          const listed = await runCli(['nodes', '--json', '--server', serve.address]);
          const node = (JSON.parse(listed.stdout).nodes ?? []).find(
            (n: { spec: { id: string } }) => n.spec.id === 'hub-gba-shaoguan',
          );
          const served = node?.status?.load?.find((entry: { model: string }) => entry.model === 'qwen3-32b');
          return node?.state === 'NODE_STATE_READY' && served?.active === 4 && served?.queued === 1;
        },
        15_000,
        200,
      );
      // On SIGTERM the agent waits for the engine's running requests to finish: let them.
      load.running = 0;
      load.waiting = 0;
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      // Drained and deregistered on the way out.
      const after = JSON.parse((await runCli(['nodes', '--json', '--server', serve.address])).stdout);
      expect((after.nodes ?? []).map((n: { spec: { id: string } }) => n.spec.id)).not.toContain(
        'hub-gba-shaoguan',
      );
      // Every flag also as CPN_AGENT_*: here the node file and the metrics URL.
      const missing = await runCli(['agent', '--server', serve.address], 20_000, {
        CPN_AGENT_NODE: 'simulations/topologies/demo-national.yaml',
        CPN_AGENT_ENGINE_METRICS: metrics.url,
      });
      expect(missing.code).toBe(2);
      expect(missing.stderr).toContain('say which with --node-id');
      // A bad config names its file and line; a missing required setting says where to give it.
      await writeFile(config, 'node: x.yaml\ninterval_ms: 5\n');
      const bad = await runCli(['agent', '--config', config, '--server', serve.address]);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/agent\.yaml:2: interval_ms/);
      await writeFile(config, 'node: simulations/topologies/demo-national.yaml\n');
      const unset = await runCli(['agent', '--config', config, '--server', serve.address]);
      expect(unset.code).toBe(2);
      expect(unset.stderr).toContain(
        '--engine-metrics is required (or CPN_AGENT_ENGINE_METRICS, or engine_metrics: in --config)',
      );
    } finally {
      child.kill('SIGKILL');
      await serve.stop();
      await metrics.close();
    }
  });

  it('schedules a pricing policy from a file and shows it in force', async () => {
    const serve = await startServe([]);
    const server = ['--server', serve.address];
    const scheduled = await runCli([
      'pricing',
      'schedule',
      '--file',
      'simulations/pricing/off-peak-west.yaml',
      '--at',
      'now',
      ...server,
    ]);
    expect(scheduled.code, scheduled.stderr).toBe(0);
    expect(scheduled.stdout).toMatch(/^scheduled p-\S+ for 20\d\d-/);
    const shown = await runCli(['pricing', 'show', ...server]);
    expect(shown.stdout).toContain('in force now: ×0.5 CENTER 0:00-8:00 (UTC+8)');
    const badTime = await runCli([
      'pricing',
      'schedule',
      '--file',
      'simulations/pricing/off-peak-west.yaml',
      '--at',
      'soon',
      ...server,
    ]);
    expect(badTime.code).toBe(2);
    expect(badTime.stderr).toContain('--at: "soon" is not an ISO 8601 time');
    expect(await serve.stop('SIGTERM')).toBe(0);
  });

  it('reads a --config file; CPN_* variables and flags win over it; a bad file stops it with file:line', async () => {
    const file = await tempFile('cpn.yaml', 'demo: true\nreservation_ttl_s: 45\n');
    const heldFor = async (extraArgs: string[], env: Record<string, string> = {}) => {
      const serve = await startServe(['--config', file, ...extraArgs], 20_000, env);
      try {
        expect(serve.stdout()).toContain('69 nodes');
        const before = Date.now();
        const routed = await runCli([
          'route',
          '--model',
          'qwen3-8b',
          '--region',
          'CN-GD',
          '--budget-ms',
          '500',
          '--json',
          '--server',
          serve.address,
        ]);
        return (Date.parse(JSON.parse(routed.stdout).reservationExpiresAt) - before) / 1000;
      } finally {
        await serve.stop('SIGTERM');
      }
    };
    expect(await heldFor([])).toBeCloseTo(45, -1);
    expect(await heldFor(['--reservation-ttl-s', '20'])).toBeCloseTo(20, -1);
    expect(await heldFor([], { CPN_RESERVATION_TTL_S: '25' })).toBeCloseTo(25, -1);
    const bad = await tempFile('bad.yaml', 'port: 0\nreservation_ttl_s: 0\nlogg: x\n');
    const refused = await runCli(['serve', '--config', bad]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`${bad}:2: reservation_ttl_s Too small`);
    expect(refused.stderr).toContain(`${bad}:3: logg is not a known key here`);
  });

  it('exits 0 on SIGTERM', async () => {
    const serve = await startServe([]);
    expect(await serve.stop('SIGTERM')).toBe(0);
  });

  it('on SIGTERM answers /readyz 503 before the port closes; a second SIGTERM does not cut the drain', async () => {
    const serve = await startServe(['--drain-delay-ms', '4000']);
    const registry = new RegistryClient(
      serve.address,
      credentials.createInsecure(),
      bearer(CLI_OPERATOR_KEY),
    );
    try {
      const ready = async () => (await fetch(`${serve.metricsUrl()}/readyz`)).status;
      expect(await ready()).toBe(200);
      serve.child.kill('SIGTERM');
      // Not ready at once, while the gRPC port still answers.
      await eventually(async () => (await ready()) === 503, 3000);
      expect((await rpc(registry, registry.getStoreStatus, {})).ok).toBe(true);
      serve.child.kill('SIGTERM');
      expect(await serve.exited()).toBe(0);
    } finally {
      registry.close();
    }
  });
});
