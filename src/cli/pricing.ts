// `cpn pricing show | schedule | cancel`: time-of-use pricing, with policy files validated with
// line-precise errors.

import { Command } from 'commander';
import { z } from 'zod';
import { LEVELS } from '../core/model.js';
import { GetPricingResponse, type PricingPolicy } from '../gen/cpn/v1/registry.js';
import { YamlSource } from '../ops/yaml-config.js';
import { levelToProto } from '../server/convert.js';
import { describePolicy } from './format.js';
import { CliError, callAndPrint, withClientOptions, withSession } from './rpc.js';

const WINDOW = /^(\d{1,2})(?::00)?-(\d{1,2})(?::00)?$/;

const policySchema = z.strictObject({
  utc_offset_hours: z.number().min(-12).max(14).default(8),
  rules: z
    .array(
      z.strictObject({
        level: z.enum(LEVELS).optional(),
        region: z.string().min(1).optional(),
        model: z.string().min(1).optional(),
        factor: z.number().positive().max(100),
        window: z
          .string()
          .regex(WINDOW, 'must look like "00-08" or "22:00-06:00"')
          .refine((value) => {
            const [, from, to] = WINDOW.exec(value) ?? [];
            return Number(from) <= 24 && Number(to) <= 24 && from !== to;
          }, 'hours must be 0..24 and differ')
          .optional(),
      }),
    )
    .max(256),
});

export async function loadPricingPolicy(file: string): Promise<PricingPolicy> {
  const doc = (await YamlSource.load(file)).validate(policySchema);
  return {
    utcOffsetHours: doc.utc_offset_hours,
    rules: doc.rules.map((rule) => {
      const [, from, to] = WINDOW.exec(rule.window ?? '') ?? [];
      return {
        level: rule.level === undefined ? 0 : levelToProto(rule.level),
        region: rule.region ?? '',
        model: rule.model ?? '',
        factor: rule.factor,
        windowed: rule.window !== undefined,
        fromHour: Number(from ?? 0),
        toHour: Number(to ?? 0),
      };
    }),
  };
}

export function pricingCommand(): Command {
  const pricing = new Command('pricing').description(
    'time-of-use pricing: show the policy, schedule a change, cancel one',
  );
  pricing.addCommand(
    withClientOptions(
      new Command('show')
        .description('the policy in force now, the base policy, and scheduled changes')
        .option('--json', 'print the GetPricingResponse as JSON'),
    ).action(async (opts) => {
      await callAndPrint(
        opts,
        (session) => session.call(session.registry, session.registry.getPricing, {}),
        GetPricingResponse.toJSON,
        (response) =>
          [
            `in force now: ${describePolicy(response.effective)}`,
            `base:         ${describePolicy(response.current)}`,
            ...response.scheduled.map(
              (change) =>
                `scheduled ${change.id} at ${change.at?.toISOString()}: ${describePolicy(change.policy)}`,
            ),
          ].join('\n'),
      );
    }),
  );
  pricing.addCommand(
    withClientOptions(
      new Command('schedule')
        .description('schedule a pricing policy (YAML file) to take effect at a time on every replica')
        .requiredOption(
          '--file <policy.yaml>',
          'the policy: utc_offset_hours and rules [{level, region, model, factor, window: "00-08"}]',
        )
        .requiredOption('--at <time>', 'ISO 8601 time, e.g. 2026-12-01T00:00:00+08:00, or "now"'),
    )
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
        const response = await withSession(opts, (session) =>
          session.call(session.registry, session.registry.schedulePricing, { at, policy }),
        );
        process.stdout.write(
          `scheduled ${response.scheduled?.id} for ${response.scheduled?.at?.toISOString()}\n`,
        );
      }),
  );
  pricing.addCommand(
    withClientOptions(
      new Command('cancel')
        .description('cancel a scheduled pricing change')
        .argument('<id>', 'id printed by `cpn pricing schedule`'),
    ).action(async (id: string, opts) => {
      await withSession(opts, (session) =>
        session.call(session.registry, session.registry.cancelPricing, { id }),
      );
      process.stdout.write(`cancelled ${id}\n`);
    }),
  );
  return pricing;
}
