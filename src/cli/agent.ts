// `cpn agent`: the node agent beside one inference server (src/agent/agent.ts).

import { credentials, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { Command, Option } from 'commander';
import { Agent, type AgentPlane } from '../agent/agent.js';
import { ENGINES, type Engine } from '../agent/engine-metrics.js';
import { type BackoffOptions, HeartbeatLink, UNREACHABLE_CODES } from '../agent/heartbeat-link.js';
import { type ProbeTarget, parseProbe } from '../agent/probes.js';
import { callUnary, type UnaryMethod } from '../common/grpc-unary.js';
import type { Logger } from '../common/logger.js';
import { RegistryClient } from '../gen/cpn/v1/registry.js';
import { createLogger, type LogFormat, type LogLevel } from '../ops/log.js';
import { loadTopology } from '../ops/topology.js';
import { ConfigError } from '../ops/yaml-config.js';
import { specToProto } from '../server/convert.js';
import { integer } from './args.js';
import { CliError, withClientOptions } from './rpc.js';

type Unary<Req> = UnaryMethod<Req, unknown>;

/**
 * The agent's calls over gRPC, each with the agent's key and a deadline. Statuses go on the
 * Heartbeat stream (heartbeat-link.ts); the rest are unary. With several servers (replicas of one
 * control plane), a call or stream that cannot reach one goes to the next, which then stays
 * current until it fails in turn.
 */
export function grpcAgentPlane(
  servers: readonly string[],
  apiKey: string | undefined,
  timeoutMs: number,
  logger?: Logger,
  backoff?: BackoffOptions,
): AgentPlane & { close(): void; readonly link: HeartbeatLink } {
  if (servers.length === 0) throw new CliError('--server needs at least one address', 2);
  const registries = servers.map((server) => new RegistryClient(server, credentials.createInsecure()));
  let current = 0;
  const metadata = new Metadata();
  if (apiKey) metadata.set('authorization', `Bearer ${apiKey}`);
  const next = (why: string) => {
    if (registries.length < 2) return;
    const from = servers[current];
    current = (current + 1) % registries.length;
    logger?.warn('control plane unreachable; trying the next', { from, to: servers[current], why });
  };
  const once = <Req>(registry: RegistryClient, method: Unary<Req>, request: Req) =>
    callUnary(registry, method, request, metadata.clone(), timeoutMs).then(() => undefined);
  const call = async <Req>(pick: (registry: RegistryClient) => Unary<Req>, request: Req) => {
    for (let attempt = 0; ; attempt += 1) {
      const registry = registries[current] as RegistryClient;
      try {
        return await once(registry, pick(registry), request);
      } catch (error) {
        const code = (error as ServiceError).code;
        if (!UNREACHABLE_CODES.has(code) || attempt + 1 >= registries.length) throw error;
        next((error as ServiceError).details ?? status[code] ?? String(code));
      }
    }
  };
  const listeners: (() => void)[] = [];
  const link = new HeartbeatLink(() => (registries[current] as RegistryClient).heartbeat(metadata.clone()), {
    ...backoff,
    timeoutMs,
    onBroken: (code, message) => {
      if (UNREACHABLE_CODES.has(code)) next(message);
      for (const listener of listeners) listener();
    },
  });
  return {
    link,
    register: (spec, ttlS) => call((r) => r.registerNode as Unary<unknown>, { spec, ttlS, permanent: false }),
    report: (nodeStatus) => link.send({ status: nodeStatus }).then(() => undefined),
    onDisconnect: (listener) => {
      listeners.push(listener);
    },
    drain: (nodeId) => call((r) => r.drainNode as Unary<unknown>, { nodeId, drain: true }),
    // A goodbye on the stream when it is up; DeregisterNode otherwise.
    deregister: async (nodeId) => {
      if (link.connected) {
        const said = await link.send({ goodbye: {} }).then(
          () => true,
          () => false,
        );
        if (said) return;
      }
      await call((r) => r.deregisterNode as Unary<unknown>, { nodeId });
    },
    reportLatency: (samples) => call((r) => r.reportLatency as Unary<unknown>, { samples: [...samples] }),
    close: () => {
      link.close();
      for (const registry of registries) registry.close();
    },
  };
}

export function agentCommand(): Command {
  return withClientOptions(
    new Command('agent')
      .description(
        "run beside one inference server (vLLM, SGLang, TGI): register the node, read the engine's metrics, report its load and health (damped, with a keep-alive); --api-key is an agent key bound to the node; --server may list several replicas, comma-separated (the next is tried when one is unreachable)",
      )
      .addOption(
        new Option(
          '--node <file>',
          'the node in the topology format (a topology file with this node; --node-id picks one of several)',
        )
          .makeOptionMandatory()
          .env('CPN_AGENT_NODE'),
      )
      .addOption(new Option('--node-id <id>', 'which node of --node to run for').env('CPN_AGENT_NODE_ID'))
      .addOption(
        new Option('--engine <engine>', 'the inference server, or auto to detect it from its metrics')
          .choices([...ENGINES, 'auto'])
          .default('auto')
          .env('CPN_AGENT_ENGINE'),
      )
      .addOption(
        new Option(
          '--engine-metrics <url>',
          "the engine's Prometheus endpoint, e.g. http://127.0.0.1:8000/metrics",
        )
          .makeOptionMandatory()
          .env('CPN_AGENT_ENGINE_METRICS'),
      )
      .addOption(
        new Option('--probe-interval-ms <ms>', 'how often to measure the probes')
          .default(10_000)
          .argParser(integer(1000, 3_600_000))
          .env('CPN_AGENT_PROBE_INTERVAL_MS'),
      )
      .addOption(
        new Option(
          '--probe <name=host:port>',
          'measure TCP connect time from a place to this node (an address standing for the access point or region NAME), reported as latency; repeatable (CPN_AGENT_PROBES: comma-separated)',
        ).argParser((value: string, previous: string[] = []) => [...previous, value]),
      )
      .addOption(
        new Option('--interval-ms <ms>', 'how often to read the engine')
          .default(1000)
          .argParser(integer(100, 60_000))
          .env('CPN_AGENT_INTERVAL_MS'),
      )
      .addOption(
        new Option('--ttl-s <s>', "the node's TTL: silent this long, it is DOWN")
          .default(10)
          .argParser(integer(1, 86_400))
          .env('CPN_AGENT_TTL_S'),
      )
      .addOption(
        new Option('--unhealthy-after <n>', 'failed reads in a row before the node is reported unhealthy')
          .default(3)
          .argParser(integer(1, 1000))
          .env('CPN_AGENT_UNHEALTHY_AFTER'),
      )
      .addOption(
        new Option('--grace-ms <ms>', 'on SIGTERM, how long to wait for running requests to finish')
          .default(30_000)
          .argParser(integer(0, 3_600_000))
          .env('CPN_AGENT_GRACE_MS'),
      )
      .addOption(
        new Option('--log-level <level>', 'debug, info, warn, error or silent')
          .choices(['debug', 'info', 'warn', 'error', 'silent'])
          .default('info')
          .env('CPN_AGENT_LOG_LEVEL'),
      )
      .addOption(
        new Option('--log-format <format>', 'json or pretty')
          .choices(['json', 'pretty'])
          .default('json')
          .env('CPN_AGENT_LOG_FORMAT'),
      ),
  ).action(async (opts) => {
    let nodes: Awaited<ReturnType<typeof loadTopology>>['nodes'];
    try {
      nodes = (await loadTopology(opts.node)).nodes;
    } catch (error) {
      if (error instanceof ConfigError) throw new CliError(error.message, 2);
      throw new CliError(`cannot read --node ${opts.node}: ${(error as Error).message}`, 2);
    }
    const spec =
      opts.nodeId === undefined
        ? nodes.length === 1
          ? nodes[0]
          : undefined
        : nodes.find((n) => n.id === opts.nodeId);
    if (spec === undefined)
      throw new CliError(
        opts.nodeId === undefined
          ? `${opts.node} holds ${nodes.length} nodes; say which with --node-id (${nodes
              .slice(0, 5)
              .map((n) => n.id)
              .join(', ')}…)`
          : `${opts.node} has no node ${opts.nodeId}`,
        2,
      );
    let probes: ProbeTarget[];
    try {
      const listed = (process.env.CPN_AGENT_PROBES ?? '').split(',').filter((probe) => probe.trim() !== '');
      probes = [...((opts.probe as string[] | undefined) ?? listed)].map(parseProbe);
    } catch (error) {
      throw new CliError((error as Error).message, 2);
    }
    const logger = createLogger(opts.logLevel as LogLevel, 2, opts.logFormat as LogFormat);
    const servers = String(opts.server)
      .split(',')
      .map((server) => server.trim())
      .filter(Boolean);
    const plane = grpcAgentPlane(servers, opts.apiKey, opts.timeoutMs, logger);
    const agent = new Agent({
      plane,
      spec: specToProto(spec),
      ttlS: opts.ttlS,
      engine: opts.engine as Engine | 'auto',
      metricsUrl: opts.engineMetrics,
      intervalMs: opts.intervalMs,
      unhealthyAfter: opts.unhealthyAfter,
      graceMs: opts.graceMs,
      logger,
      probes,
      probeIntervalMs: opts.probeIntervalMs,
    });
    try {
      await agent.start();
    } catch (error) {
      plane.close();
      throw new CliError(
        `cannot register node ${spec.id} at ${opts.server}: ${(error as ServiceError).details ?? (error as Error).message}`,
      );
    }
    process.stdout.write(
      `cpn agent running for node ${spec.id} (engine ${opts.engine}, ${opts.engineMetrics}) against ${opts.server}\n`,
    );
    await new Promise<void>((resolve) => {
      let signals = 0;
      const stop = () => {
        signals += 1;
        if (signals > 1) return;
        agent.stop().then(resolve);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    plane.close();
  });
}
