// The sessions tests' ground: Guangzhou and Shanghai, a straight drive between them, and three
// nodes — gz and sh at list price 1, fs beside Guangzhou dearer (5), where gz's sessions go when it
// drains (Shanghai is over a 20 ms budget from Guangzhou).
import type { RegistryClient } from '../../src/gen/cpn/v1/registry.js';
import { GUANGZHOU } from './fixtures.js';
import { ok, protoSpec } from './grpc.js';

export { GUANGZHOU };
export const SHANGHAI = { lat: 31.23, lon: 121.474 };

/** The point a fraction `f` of the way from Guangzhou to Shanghai (straight in lat/lon). */
export const along = (f: number) => ({
  lat: GUANGZHOU.lat + (SHANGHAI.lat - GUANGZHOU.lat) * f,
  lon: GUANGZHOU.lon + (SHANGHAI.lon - GUANGZHOU.lon) * f,
});

/** Registers gz, sh and fs (permanent) through `registry`. */
export async function registerCorridor(registry: RegistryClient): Promise<void> {
  for (const [id, location, region, price] of [
    ['gz', GUANGZHOU, 'CN-GD', 1],
    ['sh', SHANGHAI, 'CN-SH', 1],
    ['fs', { lat: 23.021, lon: 113.121 }, 'CN-GD', 5],
  ] as const) {
    await ok(registry, registry.registerNode, {
      spec: { ...protoSpec(id, { inputPerMtok: price }), location, region },
      ttlS: 0,
      permanent: true,
    });
  }
}

/** An OpenSession request: a model-m client at Guangzhou with a 20 ms budget (fields in `extra` win). */
export const openRequest = (extra: Record<string, unknown> = {}) => ({
  tenant: '',
  model: 'm',
  client: { region: '', accessPoint: '', location: GUANGZHOU },
  latencyBudgetMs: 20,
  inputTokens: 10,
  maxOutputTokens: 10,
  contextTokens: 0,
  allowedLevels: [],
  allowedRegions: [],
  ttlS: 0,
  ...extra,
});
