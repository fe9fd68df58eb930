// The registry commands: `cpn nodes` (list), `cpn drain` (stop or resume placements on a node) and
// `cpn status` (the control plane's store).

import { Command } from 'commander';
import { GetStoreStatusResponse, ListNodesRequest, ListNodesResponse } from '../gen/cpn/v1/registry.js';
import { Level } from '../gen/cpn/v1/types.js';
import { integer, levelArg } from './args.js';
import { formatNodeGroups, formatNodes } from './format.js';
import { callAndPrint, printResponse, withClientOptions, withSession } from './rpc.js';

/** Past this many nodes, `cpn nodes` shows counts per level and region unless asked for rows. */
const SUMMARY_ABOVE = 1000;
const PAGE_SIZE = 1000;

export function nodesCommand(): Command {
  return withClientOptions(
    new Command('nodes')
      .description(
        `list registered nodes with their state, load and reservations; above ${SUMMARY_ABOVE} nodes, counts per level and region (--all for every row)`,
      )
      .option(
        '--level <level>',
        'only this level: CENTER, PROVINCE, EDGE, TERMINAL',
        (value: string) => levelArg(value)[0],
      )
      .option('--region <code>', 'only this region')
      .option('--model <name>', 'only nodes serving this model')
      .option('--all', 'list every matching node, however many')
      .option('--limit <n>', 'list at most this many nodes (in id order)', integer(1, 10_000_000))
      .option('--summary', 'only counts per level, region and state')
      .option('--json', 'print the ListNodesResponse as JSON (every page merged, or the summary)'),
  ).action(async (opts) => {
    const filter = ListNodesRequest.fromPartial({
      level: opts.level ?? Level.LEVEL_UNSPECIFIED,
      region: opts.region ?? '',
      model: opts.model ?? '',
    });
    const limit: number | undefined = opts.all ? undefined : opts.limit;
    const response = await withSession(opts, async (session) => {
      const list = (request: ListNodesRequest) =>
        session.call(session.registry, session.registry.listNodes, request);
      if (opts.summary) return list({ ...filter, summary: true });
      const first = await list({ ...filter, pageSize: Math.min(limit ?? PAGE_SIZE, PAGE_SIZE) });
      if (first.total > SUMMARY_ABOVE && !opts.all && limit === undefined) {
        const summary = await list({ ...filter, summary: true });
        process.stderr.write(
          `${summary.total} nodes: showing counts per level and region; --all lists every node, --limit N the first N, --level/--region/--model filter\n`,
        );
        return summary;
      }
      // Every page, in id order; each page is one bounded call to the server.
      const nodes = [...first.nodes];
      let token = first.nextPageToken;
      while (token !== '' && (limit === undefined || nodes.length < limit)) {
        const pageSize = Math.min(PAGE_SIZE, limit === undefined ? PAGE_SIZE : limit - nodes.length);
        const page = await list({ ...filter, pageSize, pageToken: token });
        nodes.push(...page.nodes);
        token = page.nextPageToken;
      }
      return { ...first, nodes, nextPageToken: '' };
    });
    printResponse(opts.json, response, ListNodesResponse.toJSON, (r) =>
      r.groups.length > 0 || (opts.summary && r.total === 0)
        ? formatNodeGroups(r.groups, r.total)
        : formatNodes(r.nodes, r.total),
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
