// Pricing policy files for `cpn pricing schedule`, validated with line-precise errors.

import { z } from 'zod';
import { LEVELS } from '../core/model.js';
import type { PricingPolicy } from '../gen/cpn/v1/registry.js';
import { YamlSource } from '../ops/yaml-config.js';
import { levelToProto } from '../server/convert.js';

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
