// Human-readable output for the CLI: tables and the placement card.

import Table from 'cli-table3';
import { OverQuotaPolicy, Role } from '../gen/cpn/v1/accounts.js';
import type { NodeGroup, PricingPolicy } from '../gen/cpn/v1/registry.js';
import {
  type ExplainEntry,
  LatencySource,
  type Placement,
  type RouteResponse,
  Verdict,
} from '../gen/cpn/v1/scheduler.js';
import { Level, type Node, NodeState } from '../gen/cpn/v1/types.js';

const stripPrefix = (name: string | undefined, prefix: string): string =>
  name === undefined ? '?' : name.startsWith(prefix) ? name.slice(prefix.length) : name;

export const levelName = (level: Level): string => stripPrefix(Level[level], 'LEVEL_');
export const roleName = (role: Role): string => stripPrefix(Role[role], 'ROLE_').toLowerCase();
export const overQuotaName = (policy: OverQuotaPolicy): string =>
  stripPrefix(OverQuotaPolicy[policy], 'OVER_QUOTA_POLICY_');
export const stateName = (state: NodeState): string => stripPrefix(NodeState[state], 'NODE_STATE_');
export const verdictName = (verdict: Verdict): string => stripPrefix(Verdict[verdict], 'VERDICT_');
export const sourceName = (source: LatencySource): string =>
  stripPrefix(LatencySource[source], 'LATENCY_SOURCE_').toLowerCase().replace('_', ' ');

const ms = (value: number | undefined): string => (value === undefined ? '-' : value.toFixed(1));
/** Costs are tiny per request; show enough digits to compare nodes. */
export const money = (value: number | undefined): string =>
  value === undefined ? '-' : value === 0 ? '0' : value >= 1 ? value.toFixed(2) : value.toPrecision(3);

function table(head: string[]): Table.Table {
  return new Table({
    head,
    chars: {
      top: '',
      'top-mid': '',
      'top-left': '',
      'top-right': '',
      bottom: '',
      'bottom-mid': '',
      'bottom-left': '',
      'bottom-right': '',
      left: '',
      'left-mid': '',
      mid: '',
      'mid-mid': '',
      right: '',
      'right-mid': '',
      middle: '  ',
    },
    style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 },
  });
}

export function formatPlacementCard(response: RouteResponse, budgetMs: number): string {
  const placement = response.placement as Placement;
  const e = placement.estimate;
  const lines = [
    `${response.degraded ? 'DEGRADED placement' : 'Placed'} on ${placement.nodeId}  (${levelName(placement.level)}, ${placement.region})`,
    `  endpoint      ${placement.endpoint}`,
    `  network RTT   ${ms(e?.networkRttMs)} ms  (${e ? sourceName(e.latencySource) : '-'})`,
    `  queue         ${ms(e?.queueMs)} ms`,
    `  prefill       ${ms(e?.prefillMs)} ms`,
    `  TTFT          ${ms(e?.ttftMs)} ms  (budget ${budgetMs} ms)`,
    `  cost          ${money(e?.cost)} CNY`,
    `  reservation   ${response.reservationId}  (held until ${response.reservationExpiresAt?.toISOString() ?? '?'} or Release)`,
  ];
  if (response.fallbacks.length > 0) {
    const fallbacks = table(['fallback', 'level', 'region', 'ttft_ms', 'cost']);
    for (const f of response.fallbacks) {
      fallbacks.push([
        f.nodeId,
        levelName(f.level),
        f.region,
        ms(f.estimate?.ttftMs),
        money(f.estimate?.cost),
      ]);
    }
    lines.push('', fallbacks.toString());
  }
  lines.push('', response.summary);
  return lines.join('\n');
}

export function formatExplain(entries: readonly ExplainEntry[], total: number): string {
  const out = table([
    'node',
    'level',
    'region',
    'verdict',
    'rtt_ms',
    'queue_ms',
    'prefill_ms',
    'ttft_ms',
    'cost',
    'latency',
  ]);
  for (const entry of entries) {
    const e = entry.estimate;
    out.push([
      entry.nodeId,
      levelName(entry.level),
      entry.region,
      verdictName(entry.verdict),
      ms(e?.networkRttMs),
      ms(e?.queueMs),
      ms(e?.prefillMs),
      ms(e?.ttftMs),
      money(e?.cost),
      e ? sourceName(e.latencySource) : '-',
    ]);
  }
  const more = total > entries.length ? `\n(${total - entries.length} more not shown)` : '';
  return `${out.toString()}${more}`;
}

/** Columns padded to their widest cell, two spaces apart: linear in the rows, for long listings. */
export function alignedTable(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = head.map((title) => title.length);
  for (const row of rows) {
    for (const [i, cell] of row.entries()) widths[i] = Math.max(widths[i] ?? 0, cell.length);
  }
  const line = (cells: readonly string[]) =>
    cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  ');
  return [line(head), ...rows.map(line)].join('\n');
}

export function formatNodes(nodes: readonly Node[], total = nodes.length): string {
  const rows: string[][] = [];
  for (const node of nodes) {
    const spec = node.spec;
    if (spec === undefined) continue;
    const load = node.status?.load.reduce((sum, entry) => sum + entry.active + entry.queued, 0);
    const reserved = node.reserved.reduce((sum, entry) => sum + entry.reserved, 0);
    rows.push([
      spec.id,
      levelName(spec.level),
      spec.region,
      stateName(node.state),
      spec.models.map((offer) => offer.model).join(','),
      load === undefined ? '-' : String(load),
      String(reserved),
      spec.gpus.map((gpu) => `${gpu.count}x${gpu.type}`).join(','),
      spec.endpoint,
    ]);
  }
  const head = ['id', 'level', 'region', 'state', 'models', 'load', 'reserved', 'gpus', 'endpoint'];
  const count = `${total} node${total === 1 ? '' : 's'}`;
  return `${alignedTable(head, rows)}\n${nodes.length < total ? `first ${nodes.length} of ${count}` : count}`;
}

export function formatNodeGroups(groups: readonly NodeGroup[], total: number): string {
  const rows = groups.map((group) => [
    levelName(group.level),
    group.region,
    String(group.ready + group.draining + group.down + group.unhealthy),
    String(group.ready),
    String(group.draining),
    String(group.down),
    String(group.unhealthy),
  ]);
  const head = ['level', 'region', 'nodes', 'ready', 'draining', 'down', 'unhealthy'];
  return `${alignedTable(head, rows)}\n${total} node${total === 1 ? '' : 's'} in ${groups.length} level/region group${groups.length === 1 ? '' : 's'}`;
}

export function describePolicy(policy: PricingPolicy | undefined): string {
  if (policy === undefined || policy.rules.length === 0) return 'list prices';
  const rules = policy.rules.map((rule) => {
    const scope = [
      rule.level === Level.LEVEL_UNSPECIFIED ? '' : levelName(rule.level),
      rule.region,
      rule.model,
    ].filter(Boolean);
    const window = rule.windowed ? ` ${rule.fromHour}:00-${rule.toHour}:00` : '';
    return `×${rule.factor} ${scope.length > 0 ? scope.join('/') : 'all'}${window}`;
  });
  return `${rules.join('; ')} (UTC${policy.utcOffsetHours >= 0 ? '+' : ''}${policy.utcOffsetHours})`;
}
