// `cpn gateway`: the OpenAI-compatible gateway on its own, in front of a remote control plane
// (over gRPC). `cpn serve --gateway-port` runs the same gateway inside the control plane process.

import { Command, Option } from 'commander';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { startGateway } from '../gateway/gateway.js';
import { GatewayMetrics } from '../gateway/gateway-metrics.js';
import { remoteBackend } from '../gateway/remote-backend.js';
import { createLogger, type LogFormat, type LogLevel } from '../ops/log.js';
import { integer } from './args.js';
import { CliError, withClientOptions } from './rpc.js';

export function gatewayCommand(): Command {
  return withClientOptions(
    new Command('gateway')
      .description(
        "serve the OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models) in front of a remote control plane; --api-key is the gateway's own operator key (it settles usage as the trusted meter), tenants bring their client keys",
      )
      .addOption(new Option('--host <host>', 'address to bind').default('127.0.0.1').env('CPN_GATEWAY_HOST'))
      .addOption(
        new Option('--port <port>', 'HTTP port (0 picks a free one)')
          .default(8080)
          .argParser(integer(0, 65535))
          .env('CPN_GATEWAY_PORT'),
      )
      .addOption(
        new Option(
          '--region <code>',
          "requests without x-cpn-region come from this region (this site's)",
        ).env('CPN_GATEWAY_REGION'),
      )
      .addOption(
        new Option(
          '--access-point <name>',
          'requests without x-cpn-access-point come from this access point',
        ).env('CPN_GATEWAY_ACCESS_POINT'),
      )
      .addOption(
        new Option('--budget-ms <ms>', 'latency budget of requests without x-cpn-latency-budget-ms')
          .default(2000)
          .argParser(integer(1, 3_600_000)),
      )
      .addOption(
        new Option('--max-concurrent <n>', 'requests in flight at most; more are answered 503')
          .default(1024)
          .argParser(integer(1, 1_000_000)),
      )
      .addOption(
        new Option('--grace-ms <ms>', 'on SIGTERM/SIGINT, how long open streams may finish')
          .default(30_000)
          .argParser(integer(0, 600_000)),
      )
      .addOption(
        new Option('--log-level <level>', 'debug, info, warn, error or silent')
          .choices(['debug', 'info', 'warn', 'error', 'silent'])
          .default('info'),
      )
      .addOption(
        new Option('--log-format <format>', 'json or pretty').choices(['json', 'pretty']).default('json'),
      ),
  ).action(async (opts) => {
    if (opts.apiKey === undefined || opts.apiKey === '')
      throw new CliError(
        'cpn gateway needs its own operator key (--api-key or CPN_API_KEY): it settles usage as the trusted meter',
        2,
      );
    const logger = createLogger(opts.logLevel as LogLevel, 2, opts.logFormat as LogFormat);
    const registry = new Registry();
    collectDefaultMetrics({ register: registry, prefix: 'cpn_gateway_' });
    const gateway = await startGateway({
      backend: remoteBackend({ server: opts.server, apiKey: opts.apiKey, timeoutMs: opts.timeoutMs, logger }),
      logger,
      host: opts.host,
      port: opts.port,
      defaultRegion: opts.region,
      defaultAccessPoint: opts.accessPoint,
      defaultBudgetMs: opts.budgetMs,
      maxConcurrent: opts.maxConcurrent,
      metrics: new GatewayMetrics(registry),
      metricsRegistry: registry,
    }).catch((error: Error) => {
      throw new CliError(`cannot start the gateway on ${opts.host}:${opts.port}: ${error.message}`);
    });
    process.stdout.write(
      `cpn gateway listening on http://${gateway.address}/v1 (control plane ${opts.server}${opts.region ? `; routes as ${opts.region} unless a request sends x-cpn-region` : ''})\n`,
    );
    await new Promise<void>((resolve) => {
      let signals = 0;
      const stop = (signal: string) => {
        signals += 1;
        if (signals > 1) return;
        logger.info('gateway shutting down', { signal, graceMs: opts.graceMs });
        gateway.close(opts.graceMs).then(resolve);
      };
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGTERM', () => stop('SIGTERM'));
    });
  });
}
