// `cpn session open|update|close|watch`: try mobility sessions by hand (a car's placement that
// follows it, handed over before the budget breaks).

import type { ServiceError } from '@grpc/grpc-js';
import { Command, Option } from 'commander';
import {
  type Handover,
  HandoverReason,
  OpenSessionResponse,
  type Placement,
  UpdateSessionResponse,
  WatchSessionResponse,
} from '../gen/cpn/v1/scheduler.js';
import { collect, integer, levelArg, positiveNumber } from './args.js';
import { CliError, describeFailure, printResponse, withClientOptions, withSession } from './rpc.js';

const REASONS: Record<HandoverReason, string> = {
  [HandoverReason.HANDOVER_REASON_UNSPECIFIED]: 'unspecified',
  [HandoverReason.HANDOVER_REASON_NODE_UNAVAILABLE]: 'its node drained, went down or became unhealthy',
  [HandoverReason.HANDOVER_REASON_BUDGET_BROKEN]: 'staying broke the budget here',
  [HandoverReason.HANDOVER_REASON_PREDICTED_BREAK]:
    'staying would break the budget where the client is heading',
  [HandoverReason.HANDOVER_REASON_LOST_MARGIN]:
    'staying would lose the budget margin where the client is heading',
  [HandoverReason.UNRECOGNIZED]: 'unknown',
};

const ms = (value: number | undefined) => (value === undefined ? '—' : `${value.toFixed(1)} ms`);

function placementLine(placement: Placement | undefined): string {
  if (placement === undefined) return 'no node (stranded: its node is gone and none meets the budget)';
  const e = placement.estimate;
  return `${placement.nodeId} (${placement.region}) at ${placement.endpoint}: TTFT ${ms(e?.ttftMs)} (network ${ms(e?.networkRttMs)}, queue ${ms(e?.queueMs)}, prefill ${ms(e?.prefillMs)})`;
}

function handoverLine(handover: Handover): string {
  return `handed over ${handover.fromNodeId || '(none)'} → ${handover.toNodeId}: ${REASONS[handover.reason]} (staying ${ms(handover.stayTtftMs)}, moving ${ms(handover.moveTtftMs)} with the context prefilled again)`;
}

/** Where the client is: --region, --access-point and/or --lat/--lon. */
function position(opts: { region?: string; accessPoint?: string; lat?: number; lon?: number }) {
  if (!opts.region && !opts.accessPoint && opts.lat === undefined)
    throw new CliError(
      'give the client position: --lat/--lon (a moving client), --region or --access-point',
      2,
    );
  if ((opts.lat === undefined) !== (opts.lon === undefined))
    throw new CliError('give --lat and --lon together', 2);
  return {
    region: opts.region ?? '',
    accessPoint: opts.accessPoint ?? '',
    location: opts.lat === undefined || opts.lon === undefined ? undefined : { lat: opts.lat, lon: opts.lon },
  };
}

const number = (value: string) => {
  const parsed = Number(value);
  if (value.trim() === '' || !Number.isFinite(parsed))
    throw new CliError(`expected a number, got "${value}"`, 2);
  return parsed;
};

function positionOptions(command: Command): Command {
  return command
    .option('--lat <deg>', 'client latitude', number)
    .option('--lon <deg>', 'client longitude', number)
    .option('--region <code>', 'client region, e.g. CN-GD')
    .option('--access-point <name>', 'client access point')
    .option('--heading <deg>', 'direction of travel, degrees clockwise from north', number)
    .option('--speed <kmh>', 'speed, km/h', number)
    .option('--tenant <name>', 'tenant (operators only; a client key acts for its own)', '')
    .option('--json', 'print the response as JSON');
}

function openCommand(): Command {
  return withClientOptions(
    positionOptions(
      new Command('open')
        .description('open a session: a placement that follows the client, with one slot held on its node')
        .requiredOption('--model <name>', 'model to run, e.g. qwen3-8b')
        .requiredOption('--budget-ms <ms>', 'time-to-first-token budget of each request', positiveNumber)
        .addOption(
          new Option('--input-tokens <n>', 'new prompt tokens per request')
            .default(256)
            .argParser(integer(0, 100_000_000)),
        )
        .addOption(
          new Option('--output-tokens <n>', 'maximum output tokens')
            .default(256)
            .argParser(integer(0, 100_000_000)),
        )
        .addOption(
          new Option(
            '--context-tokens <n>',
            'conversation state kept warm on the node (prefilled again on a move)',
          )
            .default(0)
            .argParser(integer(0, 100_000_000)),
        )
        .addOption(
          new Option('--ttl-s <s>', 'the session ends this long after its last update (0: 300)')
            .default(0)
            .argParser(integer(0, 3600)),
        )
        .option('--level <level>', 'allowed level (repeatable)', levelArg)
        .option('--allow-region <code>', 'allowed node region (repeatable)', collect),
    ),
  ).action(async (opts) => {
    const response = await withSession(opts, (session) =>
      session.call(session.scheduler, session.scheduler.openSession, {
        tenant: opts.tenant,
        model: opts.model,
        client: position(opts),
        latencyBudgetMs: opts.budgetMs,
        inputTokens: opts.inputTokens,
        maxOutputTokens: opts.outputTokens,
        contextTokens: opts.contextTokens,
        allowedLevels: opts.level ?? [],
        allowedRegions: opts.allowRegion ?? [],
        headingDeg: opts.heading,
        speedKmh: opts.speed,
        ttlS: opts.ttlS,
      }),
    );
    printResponse(opts.json, response, OpenSessionResponse.toJSON, (r) =>
      [
        `session ${r.sessionId}`,
        `  on ${placementLine(r.placement)}`,
        `  expires ${r.expiresAt?.toISOString()} unless updated`,
        `next: cpn session update ${r.sessionId} --lat … --lon …   (or: cpn session watch ${r.sessionId})`,
      ].join('\n'),
    );
  });
}

function updateCommand(): Command {
  return withClientOptions(
    positionOptions(
      new Command('update')
        .description(
          "report the client's new position: the placement to use now, and the handover if it moved",
        )
        .argument('<session-id>', 'the id `cpn session open` printed')
        .addOption(
          new Option('--context-tokens <n>', 'the context size now').argParser(integer(0, 100_000_000)),
        ),
    ),
  ).action(async (sessionId: string, opts) => {
    const response = await withSession(opts, (session) =>
      session.call(session.scheduler, session.scheduler.updateSession, {
        tenant: opts.tenant,
        sessionId,
        client: position(opts),
        contextTokens: opts.contextTokens,
        headingDeg: opts.heading,
        speedKmh: opts.speed,
      }),
    );
    printResponse(opts.json, response, UpdateSessionResponse.toJSON, (r) =>
      [
        ...(r.handover === undefined ? [] : [handoverLine(r.handover)]),
        `${r.handover === undefined ? 'stays on' : 'now on'} ${placementLine(r.placement)}${r.degraded ? ' — DEGRADED: no node meets the budget' : ''}`,
      ].join('\n'),
    );
  });
}

function closeCommand(): Command {
  return withClientOptions(
    new Command('close')
      .description('close a session and free its slot')
      .argument('<session-id>', 'the id `cpn session open` printed')
      .option('--tenant <name>', 'tenant (operators only)', ''),
  ).action(async (sessionId: string, opts) => {
    await withSession(opts, (session) =>
      session.call(session.scheduler, session.scheduler.closeSession, { tenant: opts.tenant, sessionId }),
    );
    process.stdout.write(`session ${sessionId} closed\n`);
  });
}

function watchCommand(): Command {
  return withClientOptions(
    new Command('watch')
      .description(
        'print the placement, then every handover as cpn decides it, until the session ends (Ctrl-C to stop)',
      )
      .argument('<session-id>', 'the id `cpn session open` printed')
      .option('--tenant <name>', 'tenant (operators only)', '')
      .option('--json', 'one JSON object per event'),
  ).action(async (sessionId: string, opts) => {
    await withSession(opts, (session) => {
      const stream = session.scheduler.watchSession({ tenant: opts.tenant, sessionId }, session.metadata());
      return new Promise<void>((resolve, reject) => {
        const stop = () => stream.cancel();
        process.once('SIGINT', stop);
        stream.on('data', (event: WatchSessionResponse) => {
          const text = event.ended
            ? `session ${sessionId} ended`
            : `${new Date().toISOString()} ${event.handover === undefined ? '' : `${handoverLine(event.handover)}; `}on ${placementLine(event.placement)}${event.degraded ? ' — DEGRADED' : ''}`;
          process.stdout.write(
            opts.json ? `${JSON.stringify(WatchSessionResponse.toJSON(event))}\n` : `${text}\n`,
          );
        });
        stream.on('error', (error: ServiceError) => {
          process.removeListener('SIGINT', stop);
          if (error.code === 1)
            resolve(); // CANCELLED: Ctrl-C
          else reject(new CliError(describeFailure(error, opts), 1));
        });
        stream.on('end', () => {
          process.removeListener('SIGINT', stop);
          resolve();
        });
      });
    });
  });
}

export function sessionCommand(): Command {
  return new Command('session')
    .description('mobility sessions: a placement that follows a moving client (open, update, close, watch)')
    .addCommand(openCommand())
    .addCommand(updateCommand())
    .addCommand(closeCommand())
    .addCommand(watchCommand());
}
