// The `cpn` command line: `serve` runs the control plane; `route`, `nodes`, `drain` talk to one.

import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { Metadata } from '@grpc/grpc-js';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { DEFAULT_LATENCY_MODEL } from '../core/latency.js';
import { type LatLon, LEVELS } from '../core/model.js';
import {
  GetPricingResponse,
  GetStoreStatusResponse,
  ListNodesResponse,
  type RegistryClient,
} from '../gen/cpn/v1/registry.js';
import { RouteResponse, type SchedulerClient } from '../gen/cpn/v1/scheduler.js';
import { Level } from '../gen/cpn/v1/types.js';
import { createLogger, type LogFormat, type Logger, type LogLevel } from '../ops/log.js';
import { loadTopology } from '../ops/topology.js';
import { ConfigError } from '../ops/yaml-config.js';
import { startServer } from '../server/server.js';
import { ROUTE_RESPONSE_TRAILER } from '../server/services.js';
import { POLICIES } from '../sim/scenario.js';
import { EtcdStore } from '../store/etcd/etcd-store.js';
import { MemoryStore } from '../store/memory/memory-store.js';
import type { Store } from '../store/store.js';
import { CliError, call, connect } from './client.js';
import { describePolicy, formatExplain, formatNodes, formatPlacementCard } from './format.js';
import { loadPricingPolicy } from './pricing-file.js';
import { applyServeConfig } from './serve-config.js';
import { runSimulate } from './simulate.js';

export const DEMO_TOPOLOGY = fileURLToPath(
  new URL('../../simulations/topologies/demo-national.yaml', import.meta.url),
);

function integer(min: number, max: number) {
  return (value: string): number => {
    const parsed = Number(value);
    if (!Number.isInteger(parsed) || parsed < min || parsed > max) {
      throw new InvalidArgumentError(`expected an integer from ${min} to ${max}, got "${value}"`);
    }
    return parsed;
  };
}

function positiveNumber(value: string): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed <= 0)
    throw new InvalidArgumentError(`expected a number > 0, got "${value}"`);
  return parsed;
}

function levelArg(value: string, previous: Level[] = []): Level[] {
  const name = value.toUpperCase().replace(/^LEVEL_/, '');
  const index = (LEVELS as readonly string[]).indexOf(name);
  if (index < 0) throw new InvalidArgumentError(`expected one of ${LEVELS.join(', ')}, got "${value}"`);
  return [...previous, (index + 1) as Level];
}

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

const serverOption = () =>
  new Option('--server <host:port>', 'control plane address').default('localhost:50051').env('CPN_SERVER');
const timeoutOption = () =>
  new Option('--timeout-ms <ms>', 'deadline for the call').default(5000).argParser(integer(1, 3_600_000));

async function withClients<T>(
  opts: { server: string; timeoutMs: number },
  run: (clients: { registry: RegistryClient; scheduler: SchedulerClient; deadline: Date }) => Promise<T>,
): Promise<T> {
  const clients = connect(opts.server, opts.timeoutMs);
  try {
    return await run({
      registry: clients.registry,
      scheduler: clients.scheduler,
      deadline: clients.deadline(),
    });
  } finally {
    clients.close();
  }
}

interface StoreFlags {
  store: 'memory' | 'etcd';
  etcdEndpoints?: string;
  etcdPrefix: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdTimeoutMs: number;
  statusFlushMs: number;
}

async function openStore(
  flags: StoreFlags,
  regionCentroids: ReadonlyMap<string, LatLon> | undefined,
  logger: Logger,
): Promise<Store> {
  if (flags.store === 'memory') {
    return new MemoryStore({ clock: Date.now, latency: DEFAULT_LATENCY_MODEL, regionCentroids });
  }
  const endpoints = (flags.etcdEndpoints ?? '')
    .split(',')
    .map((endpoint) => endpoint.trim())
    .filter(Boolean);
  if (endpoints.length === 0) {
    throw new CliError(
      '--store etcd needs --etcd-endpoints (or CPN_ETCD_ENDPOINTS), e.g. http://127.0.0.1:2379',
      2,
    );
  }
  for (const endpoint of endpoints) {
    if (!/^https?:\/\/[^/\s]+$/.test(endpoint)) {
      throw new CliError(
        `--etcd-endpoints: "${endpoint}" must look like http://host:port or https://host:port`,
        2,
      );
    }
  }
  if ((flags.etcdCert === undefined) !== (flags.etcdKey === undefined)) {
    throw new CliError('--etcd-cert and --etcd-key go together', 2);
  }
  const read = async (flag: string, file: string | undefined) => {
    if (file === undefined) return undefined;
    try {
      return await readFile(file);
    } catch (error) {
      throw new CliError(`${flag} ${file}: ${(error as Error).message}`, 2);
    }
  };
  const ca = await read('--etcd-ca', flags.etcdCa);
  const tls =
    ca === undefined && flags.etcdCert === undefined
      ? undefined
      : {
          ca,
          cert: await read('--etcd-cert', flags.etcdCert),
          key: await read('--etcd-key', flags.etcdKey),
        };
  try {
    return await EtcdStore.open({
      endpoints,
      prefix: flags.etcdPrefix,
      tls,
      callTimeoutMs: flags.etcdTimeoutMs,
      statusFlushMs: flags.statusFlushMs,
      latency: DEFAULT_LATENCY_MODEL,
      regionCentroids,
      logger,
    });
  } catch (error) {
    throw new CliError(`cannot start on etcd: ${(error as Error).message}`);
  }
}

export function buildProgram(): Command {
  const program = new Command('cpn')
    .description(
      'Computing-power network scheduler: routes each inference request to the cheapest node that meets its latency budget.',
    )
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  program
    .command('serve')
    .description('run the gRPC control plane (Registry, Scheduler, health, reflection)')
    .addOption(
      new Option(
        '--config <file>',
        'YAML with the same settings in snake_case (flags and CPN_* variables win)',
      ).env('CPN_CONFIG'),
    )
    .addOption(
      new Option('--port <port>', 'gRPC port (0 picks a free one)')
        .default(50051)
        .env('CPN_PORT')
        .argParser(integer(0, 65535)),
    )
    .addOption(
      new Option('--host <host>', 'address to bind; 0.0.0.0 to accept remote clients')
        .default('127.0.0.1')
        .env('CPN_HOST'),
    )
    .addOption(
      new Option(
        '--store <kind>',
        'registry store: memory (embedded, not shared) or etcd (shared by replicas)',
      )
        .choices(['memory', 'etcd'])
        .default('memory')
        .env('CPN_STORE'),
    )
    .addOption(
      new Option(
        '--etcd-endpoints <urls>',
        'comma-separated etcd client URLs, e.g. http://127.0.0.1:2379',
      ).env('CPN_ETCD_ENDPOINTS'),
    )
    .addOption(
      new Option('--etcd-prefix <prefix>', 'key prefix in etcd').default('/cpn/v1/').env('CPN_ETCD_PREFIX'),
    )
    .addOption(new Option('--etcd-ca <file>', 'CA certificate for etcd over TLS').env('CPN_ETCD_CA'))
    .addOption(
      new Option('--etcd-cert <file>', 'client certificate for etcd (with --etcd-key)').env('CPN_ETCD_CERT'),
    )
    .addOption(new Option('--etcd-key <file>', 'client key for etcd (with --etcd-cert)').env('CPN_ETCD_KEY'))
    .addOption(
      new Option(
        '--etcd-timeout-ms <ms>',
        'deadline of every etcd call; writes fail with UNAVAILABLE after it',
      )
        .default(2000)
        .env('CPN_ETCD_TIMEOUT_MS')
        .argParser(integer(100, 60_000)),
    )
    .addOption(
      new Option(
        '--status-flush-ms <ms>',
        'a node status reaches etcd at most this often (and only on change)',
      )
        .default(2000)
        .env('CPN_STATUS_FLUSH_MS')
        .argParser(integer(0, 600_000)),
    )
    .addOption(
      new Option(
        '--topology <file>',
        'register the nodes of this topology YAML at start (as permanent nodes)',
      ).env('CPN_TOPOLOGY'),
    )
    .addOption(
      new Option(
        '--demo',
        `shorthand for --topology ${DEMO_TOPOLOGY.replace(/^.*simulations/, 'simulations')}`,
      ).env('CPN_DEMO'),
    )
    .addOption(
      new Option('--reservation-ttl-s <s>', 'how long a placement holds its slot without Release')
        .default(30)
        .env('CPN_RESERVATION_TTL_S')
        .argParser(integer(1, 3600)),
    )
    .addOption(
      new Option(
        '--max-explain-nodes <n>',
        'an explained Route evaluates at most this many nodes; the answer says how many it left out',
      )
        .default(5000)
        .env('CPN_MAX_EXPLAIN_NODES')
        .argParser(integer(1, 1_000_000)),
    )
    .addOption(
      new Option('--log-level <level>', 'log level')
        .choices(['debug', 'info', 'warn', 'error', 'silent'])
        .default('info')
        .env('CPN_LOG_LEVEL'),
    )
    .addOption(
      new Option('--log-format <format>', 'json lines (default) or pretty, for a person at a terminal')
        .choices(['json', 'pretty'])
        .default('json')
        .env('CPN_LOG_FORMAT'),
    )
    .addOption(
      new Option('--metrics-port <port>', 'HTTP port for /metrics, /healthz and /readyz (0: any free port)')
        .default(9464)
        .env('CPN_METRICS_PORT')
        .argParser(integer(0, 65535)),
    )
    .addOption(
      new Option('--grace-ms <ms>', 'on SIGTERM/SIGINT, how long in-flight calls may finish')
        .default(10_000)
        .env('CPN_GRACE_MS')
        .argParser(integer(0, 600_000)),
    )
    .action(async (_opts, command: Command) => {
      if (command.getOptionValue('config') !== undefined)
        await applyServeConfig(command, command.getOptionValue('config'));
      const opts = command.opts();
      const logger = createLogger(opts.logLevel as LogLevel, 2, opts.logFormat as LogFormat);
      const topologyFile: string | undefined = opts.topology ?? (opts.demo ? DEMO_TOPOLOGY : undefined);
      const topology = topologyFile === undefined ? undefined : await loadTopology(topologyFile);
      const store = await openStore(opts as StoreFlags, topology?.regionCentroids, logger);
      const server = await startServer({
        store,
        logger,
        host: opts.host,
        port: opts.port,
        reservationTtlMs: opts.reservationTtlS * 1000,
        maxExplainNodes: opts.maxExplainNodes,
        permanentNodes: topology?.nodes ?? [],
        metricsPort: opts.metricsPort,
      });
      // Handle signals before announcing the address: whoever reads it may signal at once.
      const stopped = new Promise<void>((resolve) => {
        const stop = (signal: string) => {
          logger.info('shutting down', { signal, graceMs: opts.graceMs });
          server
            .shutdown(opts.graceMs)
            .then(() => store.close())
            .then(resolve);
        };
        process.once('SIGINT', () => stop('SIGINT'));
        process.once('SIGTERM', () => stop('SIGTERM'));
      });
      logger.info('control plane serving', {
        address: server.address,
        metricsPort: server.metricsPort,
        config: Object.fromEntries(
          Object.entries(opts).map(([key, value]) => [
            key,
            { value, from: command.getOptionValueSource(key) },
          ]),
        ),
        store: opts.store,
        topology: topologyFile,
        nodes: topology?.nodes.length ?? 0,
        reservationTtlS: opts.reservationTtlS,
      });
      const serverFlag = server.port === 50051 ? '' : ` --server localhost:${server.port}`;
      process.stdout.write(
        [
          `cpn control plane listening on ${server.address} (${opts.store} store, ${topology?.nodes.length ?? 0} nodes${topologyFile ? ` from ${topologyFile.replace(/^.*\/simulations/, 'simulations')}` : ''})`,
          'Try, in another terminal:',
          `  npx cpn route --model qwen3-32b --region CN-GD --budget-ms 2000${serverFlag}     # loose budget: cheapest hub`,
          `  npx cpn route --model qwen3-32b --region CN-GD --budget-ms 30${serverFlag}       # tight budget: nearby node`,
          `  npx cpn route --model qwen3-32b --region CN-GD --budget-ms 30 --explain${serverFlag}`,
          `  npx cpn nodes --region CN-GD${serverFlag}`,
          `Metrics and probes: http://${server.address.replace(/:\d+$/, '')}:${server.metricsPort}/metrics, /healthz, /readyz`,
          'Stop with Ctrl-C.',
          '',
        ].join('\n'),
      );
      await stopped;
      logger.info('stopped', {});
    });

  program
    .command('route')
    .description('ask for a placement: the cheapest node that meets the latency budget (reserves a slot)')
    .requiredOption('--model <name>', 'model to run, e.g. qwen3-32b')
    .option('--region <code>', 'client region, e.g. CN-GD')
    .option('--access-point <name>', 'client access point (measured latencies are looked up by it first)')
    .option('--lat <deg>', 'client latitude', Number)
    .option('--lon <deg>', 'client longitude', Number)
    .requiredOption('--budget-ms <ms>', 'time-to-first-token budget in ms', positiveNumber)
    .addOption(
      new Option('--input-tokens <n>', 'prompt tokens').default(256).argParser(integer(0, 100_000_000)),
    )
    .addOption(
      new Option('--cached-tokens <n>', 'prompt tokens expected to hit the prefix cache')
        .default(0)
        .argParser(integer(0, 100_000_000)),
    )
    .addOption(
      new Option('--output-tokens <n>', 'maximum output tokens')
        .default(256)
        .argParser(integer(0, 100_000_000)),
    )
    .option('--level <level>', 'allowed level (repeatable): CENTER, PROVINCE, EDGE, TERMINAL', levelArg)
    .option('--allow-region <code>', 'allowed node region (repeatable)', collect)
    .option('--degraded', 'if nothing meets the budget, take the lowest-TTFT node with a slot')
    .addOption(
      new Option('--fallbacks <n>', 'ordered alternatives to return').default(2).argParser(integer(0, 16)),
    )
    .option('--tenant <name>', 'tenant to bill', '')
    .option('--explain', 'show every node with its estimate and verdict')
    .option('--json', 'print the RouteResponse as JSON')
    .addOption(serverOption())
    .addOption(timeoutOption())
    .addHelpText(
      'after',
      "\nThe placement holds one slot until Release or the server's reservation TTL (30 s by default).\n" +
        'Exit codes: 0 placed, 1 not placed or the call failed (the reason is printed), 2 bad usage.',
    )
    .action(async (opts) => {
      if (!opts.region && !opts.accessPoint && opts.lat === undefined) {
        throw new CliError('give the client position: --region CN-GD, --access-point NAME or --lat/--lon', 2);
      }
      if ((opts.lat === undefined) !== (opts.lon === undefined))
        throw new CliError('give --lat and --lon together', 2);
      const request = {
        requestId: '',
        tenant: opts.tenant,
        model: opts.model,
        client: {
          region: opts.region ?? '',
          accessPoint: opts.accessPoint ?? '',
          location: opts.lat === undefined ? undefined : { lat: opts.lat, lon: opts.lon },
        },
        latencyBudgetMs: opts.budgetMs,
        inputTokens: opts.inputTokens,
        cachedInputTokens: opts.cachedTokens,
        maxOutputTokens: opts.outputTokens,
        allowedLevels: opts.level ?? [],
        allowedRegions: opts.allowRegion ?? [],
        allowDegraded: Boolean(opts.degraded),
        explain: Boolean(opts.explain),
        maxFallbacks: opts.fallbacks,
      };
      await withClients(opts, async ({ scheduler, deadline }) => {
        try {
          const response = await call(
            scheduler,
            scheduler.route,
            request,
            new Metadata(),
            deadline,
            opts.server,
          );
          if (opts.json) {
            process.stdout.write(`${JSON.stringify(RouteResponse.toJSON(response), null, 2)}\n`);
            return;
          }
          if (opts.explain)
            process.stdout.write(`${formatExplain(response.explain, response.explainTotal)}\n\n`);
          process.stdout.write(`${formatPlacementCard(response, opts.budgetMs)}\n`);
        } catch (error) {
          const trailer =
            error instanceof CliError ? error.trailers?.get(ROUTE_RESPONSE_TRAILER)[0] : undefined;
          if (trailer instanceof Buffer) {
            const partial = RouteResponse.decode(trailer);
            if (opts.json)
              process.stdout.write(`${JSON.stringify(RouteResponse.toJSON(partial), null, 2)}\n`);
            else process.stdout.write(`${formatExplain(partial.explain, partial.explainTotal)}\n\n`);
          }
          throw error;
        }
      });
    });

  program
    .command('nodes')
    .description('list registered nodes with their state, load and reservations')
    .option(
      '--level <level>',
      'only this level: CENTER, PROVINCE, EDGE, TERMINAL',
      (value: string) => levelArg(value)[0],
    )
    .option('--region <code>', 'only this region')
    .option('--model <name>', 'only nodes serving this model')
    .option('--json', 'print the ListNodesResponse as JSON')
    .addOption(serverOption())
    .addOption(timeoutOption())
    .action(async (opts) => {
      await withClients(opts, async ({ registry, deadline }) => {
        const request = {
          level: opts.level ?? Level.LEVEL_UNSPECIFIED,
          region: opts.region ?? '',
          model: opts.model ?? '',
        };
        const response = await call(
          registry,
          registry.listNodes,
          request,
          new Metadata(),
          deadline,
          opts.server,
        );
        process.stdout.write(
          opts.json
            ? `${JSON.stringify(ListNodesResponse.toJSON(response), null, 2)}\n`
            : `${formatNodes(response.nodes)}\n`,
        );
      });
    });

  program
    .command('status')
    .description("show the control plane's store: kind, reachability, cache staleness, node count")
    .option('--json', 'print the GetStoreStatusResponse as JSON')
    .addOption(serverOption())
    .addOption(timeoutOption())
    .action(async (opts) => {
      await withClients(opts, async ({ registry, deadline }) => {
        const response = await call(
          registry,
          registry.getStoreStatus,
          {},
          new Metadata(),
          deadline,
          opts.server,
        );
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(GetStoreStatusResponse.toJSON(response), null, 2)}\n`);
          return;
        }
        const since = response.unreachableSince ? ` since ${response.unreachableSince.toISOString()}` : '';
        process.stdout.write(
          [
            `store      ${response.kind}`,
            `reachable  ${response.reachable ? 'yes' : `NO${since}`}`,
            `staleness  ${response.stalenessS.toFixed(1)} s`,
            `nodes      ${response.nodes}`,
            '',
          ].join('\n'),
        );
      });
    });

  const pricing = program
    .command('pricing')
    .description('time-of-use pricing: show the policy, schedule a change, cancel one');

  pricing
    .command('show')
    .description('the policy in force now, the base policy, and scheduled changes')
    .option('--json', 'print the GetPricingResponse as JSON')
    .addOption(serverOption())
    .addOption(timeoutOption())
    .action(async (opts) => {
      await withClients(opts, async ({ registry, deadline }) => {
        const response = await call(registry, registry.getPricing, {}, new Metadata(), deadline, opts.server);
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(GetPricingResponse.toJSON(response), null, 2)}\n`);
          return;
        }
        const lines = [
          `in force now: ${describePolicy(response.effective)}`,
          `base:         ${describePolicy(response.current)}`,
        ];
        for (const change of response.scheduled) {
          lines.push(
            `scheduled ${change.id} at ${change.at?.toISOString()}: ${describePolicy(change.policy)}`,
          );
        }
        process.stdout.write(`${lines.join('\n')}\n`);
      });
    });

  pricing
    .command('schedule')
    .description('schedule a pricing policy (YAML file) to take effect at a time on every replica')
    .requiredOption(
      '--file <policy.yaml>',
      'the policy: utc_offset_hours and rules [{level, region, model, factor, window: "00-08"}]',
    )
    .requiredOption('--at <time>', 'ISO 8601 time, e.g. 2026-12-01T00:00:00+08:00, or "now"')
    .addOption(serverOption())
    .addOption(timeoutOption())
    .addHelpText(
      'after',
      '\nExample policy (half price at western hubs from 00:00 to 08:00 China time):\n' +
        '  utc_offset_hours: 8\n  rules:\n    - { level: CENTER, factor: 0.5, window: "00-08" }\n',
    )
    .action(async (opts) => {
      const at = opts.at === 'now' ? new Date() : new Date(opts.at);
      if (Number.isNaN(at.getTime()))
        throw new CliError(`--at: "${opts.at}" is not an ISO 8601 time or "now"`, 2);
      const policy = await loadPricingPolicy(opts.file);
      await withClients(opts, async ({ registry, deadline }) => {
        const response = await call(
          registry,
          registry.schedulePricing,
          { at, policy },
          new Metadata(),
          deadline,
          opts.server,
        );
        process.stdout.write(
          `scheduled ${response.scheduled?.id} for ${response.scheduled?.at?.toISOString()}\n`,
        );
      });
    });

  pricing
    .command('cancel')
    .description('cancel a scheduled pricing change')
    .argument('<id>', 'id printed by `cpn pricing schedule`')
    .addOption(serverOption())
    .addOption(timeoutOption())
    .action(async (id: string, opts) => {
      await withClients(opts, async ({ registry, deadline }) => {
        await call(registry, registry.cancelPricing, { id }, new Metadata(), deadline, opts.server);
        process.stdout.write(`cancelled ${id}\n`);
      });
    });

  program
    .command('simulate')
    .description(
      'run a scenario (YAML) through the real scheduling core for each policy; write summary.json, timeseries.csv, report.html',
    )
    .argument('<scenario>', 'scenario file, e.g. simulations/national-day.yaml')
    .option('--out <dir>', 'output directory (default: sim-out/<scenario name>/)')
    .option('--seed <n>', 'override the scenario seed', integer(0, 2 ** 31))
    .option('--policy <name>', `run only this policy (repeatable): ${POLICIES.join(', ')}`, collect)
    .option('--duration <d>', 'override the simulated duration, e.g. 2h')
    .addHelpText(
      'after',
      '\nSame scenario and seed give a byte-identical summary.json. Exit code 2: the scenario is invalid (file:line says where).',
    )
    .action(async (file: string, opts) => runSimulate(file, opts));

  program
    .command('drain')
    .description('stop new placements on a node (existing ones finish); --undo lifts the drain')
    .argument('<node>', 'node id')
    .option('--undo', 'make the node schedulable again')
    .addOption(serverOption())
    .addOption(timeoutOption())
    .action(async (nodeId: string, opts) => {
      await withClients(opts, async ({ registry, deadline }) => {
        const request = { nodeId, drain: !opts.undo };
        await call(registry, registry.drainNode, request, new Metadata(), deadline, opts.server);
        process.stdout.write(
          `${nodeId} ${opts.undo ? 'is schedulable again' : 'is draining: no new placements'}\n`,
        );
      });
    });

  return program;
}

export async function main(argv: readonly string[]): Promise<number> {
  // `cpn nodes | head` closes the pipe early: that is not an error.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    throw error;
  });
  try {
    await buildProgram().parseAsync(argv as string[], { from: 'user' });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      return error.code === 'commander.helpDisplayed' ||
        error.code === 'commander.version' ||
        error.exitCode === 0
        ? 0
        : 2;
    }
    if (error instanceof CliError) {
      process.stderr.write(`cpn: ${error.message}\n`);
      return error.exitCode;
    }
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      return 2;
    }
    process.stderr.write(`cpn: ${(error as Error).message ?? String(error)}\n`);
    return 1;
  }
}
