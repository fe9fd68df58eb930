// Packages, usage and bills: `cpn packages set|show|remove`, `cpn usage`, `cpn bill`.
// Points and money are integers on the wire (money in 1/10,000 of a currency unit); the bill
// prints money with four decimals and adds up exactly.

import Table from 'cli-table3';
import { Command, Option } from 'commander';
import { z } from 'zod';
import { LEVELS } from '../core/model.js';
import { MONEY_UNITS } from '../core/quota.js';
import {
  GetTenantResponse,
  GetUsageResponse,
  Meter,
  OverQuotaPolicy,
  type Package,
  type UsageLine,
} from '../gen/cpn/v1/accounts.js';
import { YamlSource } from '../ops/yaml-config.js';
import { levelToProto } from '../server/convert.js';
import { POLICY_TO_PROTO } from '../server/package-convert.js';
import { levelName, overQuotaName } from './format.js';
import { CliError, callAndPrint, printResponse, withClientOptions, withSession } from './rpc.js';

const weightSchema = z.strictObject({
  input: z.number().int().min(0).max(1_000_000),
  output: z.number().int().min(0).max(1_000_000),
  cached_input: z.number().int().min(0).max(1_000_000).default(0),
});

const packageSchema = z.strictObject({
  name: z.string().min(1).max(128),
  quota_points: z.number().int().min(1).max(1e15),
  time_zone: z.string().min(1).optional(),
  period_seconds: z
    .number()
    .int()
    .min(3600)
    .max(366 * 24 * 3600)
    .optional(),
  weights: z.record(z.string().min(1), weightSchema),
  allowed_levels: z.array(z.enum(LEVELS)).max(4).default([]),
  over_quota: z.enum(['REJECT', 'THROTTLE', 'PAY_AS_YOU_GO']),
  throttle: z
    .strictObject({ requests_per_s: z.number().positive(), budget_ms: z.number().positive() })
    .optional(),
  /** client: the client's Release settles; trusted: only the serving node's agent (or an operator). */
  meter: z.enum(['client', 'trusted']).default('client'),
});

const money = (units: number) => (units / MONEY_UNITS).toFixed(4);

/** Reads a package YAML (validated, file:line on mistakes). */
export async function loadPackage(file: string): Promise<Package> {
  const doc = (await YamlSource.load(file)).validate(packageSchema);
  if (doc.over_quota === 'THROTTLE' && doc.throttle === undefined)
    throw new CliError(`${file}: over_quota THROTTLE needs throttle: { requests_per_s, budget_ms }`, 2);
  return {
    name: doc.name,
    quotaPoints: doc.quota_points,
    timeZone: doc.time_zone ?? '',
    periodSeconds: doc.period_seconds ?? 0,
    periodAnchor: undefined,
    weights: Object.entries(doc.weights).map(([model, w]) => ({
      model,
      inputPer1k: w.input,
      outputPer1k: w.output,
      cachedInputPer1k: w.cached_input,
    })),
    allowedLevels: doc.allowed_levels.map(levelToProto),
    overQuota: POLICY_TO_PROTO[doc.over_quota],
    throttleRequestsPerS: doc.throttle?.requests_per_s ?? 0,
    throttleBudgetMs: doc.throttle?.budget_ms ?? 0,
    meter: doc.meter === 'trusted' ? Meter.METER_TRUSTED : Meter.METER_CLIENT,
  };
}

export function describePackage(pkg: Package | undefined): string {
  if (pkg === undefined) return 'no package: routes are unmetered';
  const period = pkg.periodSeconds > 0 ? `every ${pkg.periodSeconds} s` : `calendar month (${pkg.timeZone})`;
  const lines = [
    `package ${pkg.name}: ${pkg.quotaPoints} points per ${period}; over quota: ${overQuotaName(pkg.overQuota)}`,
  ];
  if (pkg.overQuota === OverQuotaPolicy.OVER_QUOTA_POLICY_THROTTLE)
    lines.push(`  throttled to ${pkg.throttleRequestsPerS} requests/s within ${pkg.throttleBudgetMs} ms`);
  if (pkg.allowedLevels.length > 0) lines.push(`  levels: ${pkg.allowedLevels.map(levelName).join(', ')}`);
  if (pkg.meter === Meter.METER_TRUSTED)
    lines.push("  metered by a trusted meter: the serving node's agent settles, not the client's Release");
  const table = new Table({ head: ['model', 'points / 1k input', 'per 1k output', 'per 1k cached input'] });
  for (const w of pkg.weights) table.push([w.model, w.inputPer1k, w.outputPer1k, w.cachedInputPer1k]);
  lines.push(table.toString());
  return lines.join('\n');
}

export function packagesCommand(): Command {
  const packages = new Command('packages').description(
    "tenants' token packages: quota, weights per model, over-quota policy",
  );
  packages.addCommand(
    withClientOptions(
      new Command('set')
        .description("set a tenant's package from a YAML file")
        .argument('<tenant>')
        .requiredOption('--file <package.yaml>', 'the package (see --help)'),
    )
      .addHelpText(
        'after',
        '\nExample package (points per 1,000 tokens; "*" weighs every other model):\n' +
          '  name: starter\n  quota_points: 1000000\n  time_zone: Asia/Shanghai   # or period_seconds: 86400\n' +
          '  weights:\n    qwen3-32b: { input: 2, output: 8, cached_input: 1 }\n    "*": { input: 1, output: 4 }\n' +
          '  allowed_levels: [EDGE, PROVINCE]\n  over_quota: THROTTLE        # REJECT | THROTTLE | PAY_AS_YOU_GO\n' +
          "  throttle: { requests_per_s: 5, budget_ms: 2000 }\n  meter: client                # or trusted: only the serving node's agent settles\n",
      )
      .action(async (tenant: string, opts) => {
        const pkg = await loadPackage(opts.file);
        const response = await withSession(opts, (session) =>
          session.call(session.accounts, session.accounts.setPackage, { tenant, package: pkg }),
        );
        process.stdout.write(`${tenant}: ${describePackage(response.tenant?.package)}\n`);
      }),
  );
  packages.addCommand(
    withClientOptions(
      new Command('show')
        .description("show a tenant's package")
        .argument('<tenant>')
        .option('--json', 'print JSON'),
    ).action(async (tenant: string, opts) => {
      await callAndPrint(
        opts,
        (session) => session.call(session.accounts, session.accounts.getTenant, { name: tenant }),
        GetTenantResponse.toJSON,
        (response) => `${tenant}: ${describePackage(response.tenant?.package)}`,
      );
    }),
  );
  packages.addCommand(
    withClientOptions(
      new Command('remove')
        .description("remove a tenant's package (its routes become unmetered)")
        .argument('<tenant>'),
    ).action(async (tenant: string, opts) => {
      await withSession(opts, (session) =>
        session.call(session.accounts, session.accounts.setPackage, { tenant, package: undefined }),
      );
      process.stdout.write(`${tenant}: package removed\n`);
    }),
  );
  return packages;
}

type By = 'model' | 'level' | 'kind';

/** Usage lines folded by model, level or token kind. */
export function foldUsage(
  lines: readonly UsageLine[],
  by: By,
): { key: string; values: Record<string, number> }[] {
  if (by === 'kind') {
    const sum = (field: 'inputTokens' | 'cachedInputTokens' | 'outputTokens') =>
      lines.reduce((total, line) => total + line[field], 0);
    return [
      { key: 'input (uncached)', values: { tokens: sum('inputTokens') - sum('cachedInputTokens') } },
      { key: 'cache-hit input', values: { tokens: sum('cachedInputTokens') } },
      { key: 'output', values: { tokens: sum('outputTokens') } },
    ];
  }
  const groups = new Map<string, Record<string, number>>();
  for (const line of lines) {
    const key = by === 'model' ? `${line.tenant} ${line.model}` : `${line.tenant} ${levelName(line.level)}`;
    const values = groups.get(key) ?? {};
    for (const field of [
      'requests',
      'inputTokens',
      'cachedInputTokens',
      'outputTokens',
      'points',
      'overQuotaPoints',
      'overQuotaMoney',
    ] as const)
      values[field] = (values[field] ?? 0) + line[field];
    groups.set(key, values);
  }
  return [...groups].map(([key, values]) => ({ key, values }));
}

function usageText(response: GetUsageResponse, by: By): string {
  if (response.periods.length === 0) return 'no metered usage (tenants without a package are not metered)';
  const periods = new Table({ head: ['tenant', 'period', 'quota', 'used', 'held now', 'left'] });
  for (const p of response.periods)
    periods.push([
      p.tenant,
      p.period,
      p.quotaPoints,
      p.usedPoints,
      p.reservedPoints,
      p.quotaPoints - p.usedPoints - p.reservedPoints,
    ]);
  const folded = foldUsage(response.lines, by);
  const columns = [...new Set(folded.flatMap((row) => Object.keys(row.values)))];
  const table = new Table({ head: [by, ...columns] });
  for (const row of folded) table.push([row.key, ...columns.map((c) => row.values[c] ?? 0)]);
  return `${periods.toString()}\n${table.toString()}`;
}

function usageCsv(response: GetUsageResponse): string {
  const head =
    'tenant,period,model,level,requests,input_tokens,cached_input_tokens,output_tokens,points,over_quota_points,over_quota_tokens,over_quota_money,unbilled_points';
  const rows = response.lines.map((l) =>
    [
      l.tenant,
      l.period,
      l.model,
      levelName(l.level),
      l.requests,
      l.inputTokens,
      l.cachedInputTokens,
      l.outputTokens,
      l.points,
      l.overQuotaPoints,
      l.overQuotaTokens,
      money(l.overQuotaMoney),
      l.unbilledPoints,
    ].join(','),
  );
  return [head, ...rows].join('\n');
}

export function usageCommand(): Command {
  return withClientOptions(
    new Command('usage')
      .description('metered usage per tenant and period, by model, level or token kind')
      .option('--tenant <name>', 'one tenant (a client key sees its own only)')
      .option('--period <p>', 'e.g. 2026-11 (default: the current period)')
      .addOption(
        new Option('--by <what>', 'fold the lines').choices(['model', 'level', 'kind']).default('model'),
      )
      .option('--json', 'print the GetUsageResponse as JSON')
      .option('--csv', 'print one CSV row per tenant, period, model and level'),
  ).action(async (opts) => {
    const response = await withSession(opts, (session) =>
      session.call(session.accounts, session.accounts.getUsage, {
        tenant: opts.tenant ?? '',
        period: opts.period ?? '',
      }),
    );
    if (opts.csv) process.stdout.write(`${usageCsv(response)}\n`);
    else printResponse(opts.json, response, GetUsageResponse.toJSON, (r) => usageText(r, opts.by));
  });
}

/**
 * The bill of one tenant for one period: quota, points per model, level and token kind (as
 * recorded at each Release), over-quota charges. Every figure comes from the usage records.
 */
export function formatBill(tenant: string, pkg: Package | undefined, usage: GetUsageResponse): string {
  const period = usage.periods[0];
  if (period === undefined) return `${tenant}: no metered usage in that period`;
  const lines = [
    `Bill for ${tenant}, period ${period.period}${pkg ? ` — package ${pkg.name}` : ''}`,
    `  quota: ${period.usedPoints} of ${period.quotaPoints} points used (${period.reservedPoints} held by requests in flight)`,
  ];
  const table = new Table({ head: ['model', 'level', 'kind', 'tokens', 'points'] });
  const milli = (value: number) => (value / 1000).toFixed(3);
  let within = 0;
  let over = 0;
  let unbilled = 0;
  let overMoney = 0;
  let overTokens = 0;
  for (const line of usage.lines) {
    const where = [line.model, levelName(line.level)];
    table.push([...where, 'input', line.inputTokens - line.cachedInputTokens, milli(line.inputMilliPoints)]);
    table.push([...where, 'cache-hit input', line.cachedInputTokens, milli(line.cachedInputMilliPoints)]);
    table.push([...where, 'output', line.outputTokens, milli(line.outputMilliPoints)]);
    const exact = line.inputMilliPoints + line.cachedInputMilliPoints + line.outputMilliPoints;
    const charged = line.points + line.overQuotaPoints + line.unbilledPoints;
    table.push([...where, 'rounding up, per request', '', milli(charged * 1000 - exact)]);
    within += line.points;
    over += line.overQuotaPoints;
    unbilled += line.unbilledPoints;
    overMoney += line.overQuotaMoney;
    overTokens += line.overQuotaTokens;
  }
  lines.push(table.toString());
  lines.push(`  points counted against the quota: ${within}`);
  if (over > 0) lines.push(`  over quota: ${over} points`);
  if (overTokens > 0)
    lines.push(`  over-quota tokens billed at list price: ${overTokens}, ${money(overMoney)}`);
  if (unbilled > 0) lines.push(`  not billed (beyond the quota under REJECT): ${unbilled} points`);
  lines.push(`  total to pay beyond the package: ${money(overMoney)}`);
  return lines.join('\n');
}

export function billCommand(): Command {
  return withClientOptions(
    new Command('bill')
      .description(
        "a tenant's bill for a period: quota used, points per model and token kind, over-quota charges",
      )
      .requiredOption('--tenant <name>', 'the tenant')
      .option('--period <p>', 'e.g. 2026-11 (default: the current period)')
      .option('--json', 'print the usage and package as JSON'),
  ).action(async (opts) => {
    const { tenant, usage } = await withSession(opts, async (session) => ({
      tenant: await session.call(session.accounts, session.accounts.getTenant, { name: opts.tenant }),
      usage: await session.call(session.accounts, session.accounts.getUsage, {
        tenant: opts.tenant,
        period: opts.period ?? '',
      }),
    }));
    if (opts.json) {
      process.stdout.write(
        `${JSON.stringify({ tenant: GetTenantResponse.toJSON(tenant), usage: GetUsageResponse.toJSON(usage) }, null, 2)}\n`,
      );
      return;
    }
    process.stdout.write(`${formatBill(opts.tenant, tenant.tenant?.package, usage)}\n`);
  });
}
