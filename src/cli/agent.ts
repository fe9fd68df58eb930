// `cpn agent`: the node agent beside one inference server (src/agent/agent.ts).

import { readFile } from 'node:fs/promises';
import { credentials, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { Command } from 'commander';
import { Agent, type AgentPlane } from '../agent/agent.js';
import { ENGINES, type Engine } from '../agent/engine-metrics.js';
import { HeartbeatLink, UNREACHABLE_CODES } from '../agent/heartbeat-link.js';
import { type ProbeTarget, parseProbe } from '../agent/probes.js';
import type { BackoffOptions } from '../common/backoff.js';
import { callUnary, type UnaryMethod } from '../common/grpc-unary.js';
import type { Logger } from '../common/logger.js';
import { RegistryClient } from '../gen/cpn/v1/registry.js';
import { createLogger, type LogFormat, type LogLevel } from '../ops/log.js';
import { loadTopology } from '../ops/topology.js';
import { ConfigError } from '../ops/yaml-config.js';
import { specToProto } from '../server/convert.js';
import { CliError } from './rpc.js';
import { choice, int, list, type Setting, SettingsTable, type SettingValues, text } from './settings.js';

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
  /** Ping the control plane this often (and give it as long to answer): a replica that vanished without closing its connections is noticed in about twice this. */
  keepaliveMs = 10_000,
): AgentPlane & { close(): void; readonly link: HeartbeatLink } {
  if (servers.length === 0) throw new CliError('--server needs at least one address', 2);
  const registries = servers.map(
    (server) =>
      new RegistryClient(server, credentials.createInsecure(), {
        'grpc.keepalive_time_ms': keepaliveMs,
        'grpc.keepalive_timeout_ms': keepaliveMs,
        'grpc.keepalive_permit_without_calls': 1,
      }),
  );
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

/**
 * The agent's plane with timings that keep a node alive through a replica's loss, whatever the
 * TTL: a report waits at most a fifth of the TTL before it is sent elsewhere, reconnecting backs
 * off to at most a quarter of it, and a replica that vanished without closing its connections is
 * noticed by keepalive pings within about a third of it.
 */
export function agentPlaneFor(
  servers: readonly string[],
  apiKey: string | undefined,
  ttlS: number,
  timeoutMs: number,
  logger?: Logger,
) {
  const ttlMs = ttlS * 1000;
  return grpcAgentPlane(
    servers,
    apiKey,
    Math.min(timeoutMs, Math.max(500, ttlMs / 5)),
    logger,
    { maxMs: Math.min(5000, ttlMs / 4) },
    Math.max(500, ttlMs / 6),
  );
}

/** Every `cpn agent` setting: flag, CPN_AGENT_* variable and `--config` YAML key (settings.ts). */
export const AGENT_SETTINGS = {
  config: {
    kind: text,
    arg: '<file>',
    help: 'YAML with the same settings in snake_case (flags and CPN_AGENT_* variables win)',
    notInFile: true,
  },
  server: {
    kind: text,
    arg: '<host:port,…>',
    help: 'the control plane; several replicas comma-separated (the next is tried when one is unreachable); CPN_SERVER if unset',
  },
  apiKey: {
    kind: text,
    arg: '<key>',
    help: 'an agent key bound to the node (prefer the variable or --api-key-file: flags show in ps); CPN_API_KEY if unset',
    notInFile: true,
  },
  apiKeyFile: { kind: text, arg: '<file>', help: 'read the API key from this file (e.g. a mounted secret)' },
  timeoutMs: { kind: int(100, 600_000), arg: '<ms>', help: 'deadline of each call', default: 5000 },
  node: {
    kind: text,
    arg: '<file>',
    help: 'the node in the topology format (a topology file with this node; --node-id picks one of several); required',
  },
  nodeId: { kind: text, arg: '<id>', help: 'which node of --node to run for' },
  engine: {
    kind: choice(...ENGINES, 'auto'),
    arg: '<engine>',
    help: 'the inference server, or auto to detect it from its metrics',
    default: 'auto',
  },
  engineMetrics: {
    kind: text,
    arg: '<url>',
    help: "the engine's Prometheus endpoint, e.g. http://127.0.0.1:8000/metrics; required",
  },
  intervalMs: { kind: int(100, 60_000), arg: '<ms>', help: 'how often to read the engine', default: 1000 },
  ttlS: {
    kind: int(1, 86_400),
    arg: '<s>',
    help: "the node's TTL: silent this long, it is DOWN",
    default: 10,
  },
  unhealthyAfter: {
    kind: int(1, 1000),
    arg: '<n>',
    help: 'failed reads in a row before the node is reported unhealthy',
    default: 3,
  },
  graceMs: {
    kind: int(0, 3_600_000),
    arg: '<ms>',
    help: 'on SIGTERM, how long to wait for running requests to finish',
    default: 30_000,
  },
  probe: {
    kind: list,
    arg: '<name=host:port>',
    help: 'measure TCP connect time from a place to this node (an address standing for the access point or region NAME), reported as latency; repeatable or comma-separated',
  },
  probeIntervalMs: {
    kind: int(1000, 3_600_000),
    arg: '<ms>',
    help: 'how often to measure the probes',
    default: 10_000,
  },
  logLevel: {
    kind: choice('debug', 'info', 'warn', 'error', 'silent'),
    arg: '<level>',
    help: 'log level',
    default: 'info',
  },
  logFormat: { kind: choice('json', 'pretty'), arg: '<format>', help: 'log format', default: 'json' },
} as const satisfies Record<string, Setting>;

const agentSettings = new SettingsTable(AGENT_SETTINGS, 'CPN_AGENT_');
export const agentConfigSchema = agentSettings.schema;

/** The node of `file` this agent runs for (`nodeId` picks one of several). */
async function nodeOf(file: string, nodeId: string | undefined) {
  let nodes: Awaited<ReturnType<typeof loadTopology>>['nodes'];
  try {
    nodes = (await loadTopology(file)).nodes;
  } catch (error) {
    if (error instanceof ConfigError) throw new CliError(error.message, 2);
    throw new CliError(`cannot read --node ${file}: ${(error as Error).message}`, 2);
  }
  const spec =
    nodeId === undefined ? (nodes.length === 1 ? nodes[0] : undefined) : nodes.find((n) => n.id === nodeId);
  if (spec === undefined)
    throw new CliError(
      nodeId === undefined
        ? `${file} holds ${nodes.length} nodes; say which with --node-id (${nodes
            .slice(0, 5)
            .map((n) => n.id)
            .join(', ')}…)`
        : `${file} has no node ${nodeId}`,
      2,
    );
  return spec;
}

async function apiKeyOf(settings: SettingValues<typeof AGENT_SETTINGS>): Promise<string | undefined> {
  if (settings.apiKey !== undefined) return settings.apiKey;
  if (settings.apiKeyFile !== undefined) {
    try {
      const key = (await readFile(settings.apiKeyFile, 'utf8')).trim();
      if (key === '') throw new Error('the file is empty');
      return key;
    } catch (error) {
      throw new CliError(`cannot read --api-key-file ${settings.apiKeyFile}: ${(error as Error).message}`, 2);
    }
  }
  return process.env.CPN_API_KEY || undefined;
}

export function agentCommand(): Command {
  const command = new Command('agent').description(
    "run beside one inference server (vLLM, SGLang, TGI): register the node, read the engine's metrics, report its load and health on a Heartbeat stream (damped, with a keep-alive every TTL/3), measure latency from --probe places; on SIGTERM drain, wait for running requests, deregister. Every flag is also a CPN_AGENT_* variable (--engine-metrics: CPN_AGENT_ENGINE_METRICS) and a key of the --config YAML (engine_metrics).",
  );
  for (const option of agentSettings.options()) command.addOption(option);
  return command.action(async (_opts, self: Command) => {
    const settings = await agentSettings.resolve(self).catch((error: unknown) => {
      if (error instanceof ConfigError) throw new CliError(error.message, 2);
      throw error;
    });
    const required = (key: 'node' | 'engineMetrics'): string => {
      const value = settings[key];
      if (value === undefined)
        throw new CliError(
          `${agentSettings.flagOf(key)} is required (or ${agentSettings.envOf(key)}, or ${agentSettings.fileKeyOf(key)}: in --config)`,
          2,
        );
      return value;
    };
    const nodeFile = required('node');
    const engineMetrics = required('engineMetrics');
    const spec = await nodeOf(nodeFile, settings.nodeId);
    let probes: ProbeTarget[];
    try {
      probes = (settings.probe ?? '')
        .split(',')
        .filter((probe) => probe.trim() !== '')
        .map(parseProbe);
    } catch (error) {
      throw new CliError((error as Error).message, 2);
    }
    const apiKey = await apiKeyOf(settings);
    const serverList = settings.server ?? (process.env.CPN_SERVER || 'localhost:50051');
    const logger = createLogger(settings.logLevel as LogLevel, 2, settings.logFormat as LogFormat);
    const servers = serverList
      .split(',')
      .map((server) => server.trim())
      .filter(Boolean);
    const plane = agentPlaneFor(servers, apiKey, settings.ttlS, settings.timeoutMs, logger);
    const agent = new Agent({
      plane,
      spec: specToProto(spec),
      ttlS: settings.ttlS,
      engine: settings.engine as Engine | 'auto',
      metricsUrl: engineMetrics,
      intervalMs: settings.intervalMs,
      unhealthyAfter: settings.unhealthyAfter,
      graceMs: settings.graceMs,
      logger,
      probes,
      probeIntervalMs: settings.probeIntervalMs,
    });
    let signals = 0;
    let done: () => void = () => undefined;
    const stopped = new Promise<void>((resolve) => {
      done = resolve;
    });
    const stop = () => {
      signals += 1;
      if (signals > 1) {
        // A second signal: do not wait for the drain.
        logger.warn('second signal: exiting without waiting for the drain', { node: spec.id });
        process.exit(130);
      }
      agent.stop().then(done);
      // Whatever the control plane does, the process ends within the grace and a little more.
      setTimeout(() => {
        logger.error('stop took too long; exiting', { node: spec.id, graceMs: settings.graceMs });
        process.exit(1);
      }, settings.graceMs + 15_000).unref();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    let registered: boolean;
    try {
      registered = await agent.start();
    } catch (error) {
      plane.close();
      throw new CliError(
        `cannot register node ${spec.id} at ${serverList}: ${(error as ServiceError).details ?? (error as Error).message}`,
      );
    }
    if (registered)
      process.stdout.write(
        `cpn agent running for node ${spec.id} (engine ${settings.engine}, ${engineMetrics}) against ${serverList}\n`,
      );
    await stopped;
    plane.close();
  });
}
