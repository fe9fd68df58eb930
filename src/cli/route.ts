// `cpn route`: ask for a placement and print it as a card, an explain table or JSON.

import { Command, Option } from 'commander';
import { ReleaseResponse, RouteResponse } from '../gen/cpn/v1/scheduler.js';
import { ROUTE_RESPONSE_TRAILER } from '../server/services.js';
import { collect, integer, levelArg, positiveNumber } from './args.js';
import { formatExplain, formatPlacementCard } from './format.js';
import { CliError, printResponse, withClientOptions, withSession } from './rpc.js';

export function routeCommand(): Command {
  return withClientOptions(
    new Command('route')
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
      .option('--json', 'print the RouteResponse as JSON'),
  )
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
      const explainText = (response: RouteResponse) => formatExplain(response.explain, response.explainTotal);
      await withSession(opts, async (session) => {
        try {
          const response = await session.call(session.scheduler, session.scheduler.route, request);
          printResponse(opts.json, response, RouteResponse.toJSON, (placed) =>
            opts.explain
              ? `${explainText(placed)}\n\n${formatPlacementCard(placed, opts.budgetMs)}`
              : formatPlacementCard(placed, opts.budgetMs),
          );
        } catch (error) {
          // A refused route carries its explain table in a trailer: print it before the reason.
          const trailer =
            error instanceof CliError ? error.trailers?.get(ROUTE_RESPONSE_TRAILER)[0] : undefined;
          if (trailer instanceof Buffer) {
            printResponse(
              opts.json,
              RouteResponse.decode(trailer),
              RouteResponse.toJSON,
              (partial) => `${explainText(partial)}\n`,
            );
          }
          throw error;
        }
      });
    });
}

export function releaseCommand(): Command {
  return withClientOptions(
    new Command('release')
      .description("free a reservation and report what the request used (settles a metered tenant's quota)")
      .argument('<reservation-id>', 'the id `cpn route` printed')
      .addOption(
        new Option('--input-tokens <n>', 'prompt tokens used').default(0).argParser(integer(0, 100_000_000)),
      )
      .addOption(
        new Option('--cached-tokens <n>', 'prompt tokens served from the prefix cache')
          .default(0)
          .argParser(integer(0, 100_000_000)),
      )
      .addOption(
        new Option('--output-tokens <n>', 'tokens generated').default(0).argParser(integer(0, 100_000_000)),
      )
      .option('--failed', 'the inference failed')
      .option('--json', 'print the ReleaseResponse as JSON'),
  ).action(async (reservationId: string, opts) => {
    const response = await withSession(opts, (session) =>
      session.call(session.scheduler, session.scheduler.release, {
        reservationId,
        usage: {
          inputTokens: opts.inputTokens,
          cachedInputTokens: opts.cachedTokens,
          outputTokens: opts.outputTokens,
        },
        success: !opts.failed,
      }),
    );
    printResponse(opts.json, response, ReleaseResponse.toJSON, (r) =>
      r.released
        ? `released ${reservationId} on ${r.nodeId}${r.settledPoints + r.returnedPoints > 0 ? `: ${r.settledPoints} points counted, ${r.returnedPoints} returned` : ''}`
        : `${reservationId} was already released or expired: nothing changed`,
    );
  });
}
