// The registry commands: `cpn nodes` (list), `cpn drain` (stop or resume placements on a node) and
// `cpn status` (the control plane's store).

import { Command } from 'commander';
import { GetStoreStatusResponse, ListNodesResponse } from '../gen/cpn/v1/registry.js';
import { Level } from '../gen/cpn/v1/types.js';
import { levelArg } from './args.js';
import { formatNodes } from './format.js';
import { callAndPrint, withClientOptions, withSession } from './rpc.js';

export function nodesCommand(): Command {
  return withClientOptions(
    new Command('nodes')
      .description('list registered nodes with their state, load and reservations')
      .option(
        '--level <level>',
        'only this level: CENTER, PROVINCE, EDGE, TERMINAL',
        (value: string) => levelArg(value)[0],
      )
      .option('--region <code>', 'only this region')
      .option('--model <name>', 'only nodes serving this model')
      .option('--json', 'print the ListNodesResponse as JSON'),
  ).action(async (opts) => {
    const request = {
      level: opts.level ?? Level.LEVEL_UNSPECIFIED,
      region: opts.region ?? '',
      model: opts.model ?? '',
    };
    await callAndPrint(
      opts,
      (session) => session.call(session.registry, session.registry.listNodes, request),
      ListNodesResponse.toJSON,
      (response) => formatNodes(response.nodes),
    );
  });
}

export function drainCommand(): Command {
  return withClientOptions(
    new Command('drain')
      .description('stop new placements on a node (existing ones finish); --undo lifts the drain')
      .argument('<node>', 'node id')
      .option('--undo', 'make the node schedulable again'),
  ).action(async (nodeId: string, opts) => {
    await withSession(opts, (session) =>
      session.call(session.registry, session.registry.drainNode, { nodeId, drain: !opts.undo }),
    );
    process.stdout.write(
      `${nodeId} ${opts.undo ? 'is schedulable again' : 'is draining: no new placements'}\n`,
    );
  });
}

export function statusCommand(): Command {
  return withClientOptions(
    new Command('status')
      .description("show the control plane's store: kind, reachability, cache staleness, node count")
      .option('--json', 'print the GetStoreStatusResponse as JSON'),
  ).action(async (opts) => {
    await callAndPrint(
      opts,
      (session) => session.call(session.registry, session.registry.getStoreStatus, {}),
      GetStoreStatusResponse.toJSON,
      (response) => {
        const since = response.unreachableSince ? ` since ${response.unreachableSince.toISOString()}` : '';
        return [
          `store      ${response.kind}`,
          `reachable  ${response.reachable ? 'yes' : `NO${since}`}`,
          `staleness  ${response.stalenessS.toFixed(1)} s`,
          `nodes      ${response.nodes}`,
        ].join('\n');
      },
    );
  });
}
