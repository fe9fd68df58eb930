// `topology: { generate: national }`: a national four-level layout built from a base topology's
// regions, model prices and capacity profiles — its hubs and provincial nodes, plus generated
// edges around each provincial capital and terminals around each edge.

import type { LatLon } from '../core/model.js';
import { expandTopology, loadTopologyDoc, type Topology, type TopologyDoc } from '../ops/topology.js';

export interface NationalOptions {
  readonly base: string;
  readonly hubs: number;
  readonly provinces: number;
  readonly edgesPerProvince: number;
  readonly terminalsPerEdge: number;
  readonly priceFactors?: Readonly<Record<string, number>>;
}

const GOLDEN_ANGLE = Math.PI * (3 - Math.sqrt(5));

/** The i-th point of a sunflower spiral around `centre`, within `radiusDeg` degrees. */
function around(centre: LatLon, i: number, count: number, radiusDeg: number): LatLon {
  const r = radiusDeg * Math.sqrt((i + 0.5) / Math.max(1, count));
  const angle = i * GOLDEN_ANGLE;
  return {
    lat: Math.round((centre.lat + r * Math.sin(angle)) * 1e4) / 1e4,
    lon:
      Math.round((centre.lon + (r * Math.cos(angle)) / Math.cos((centre.lat * Math.PI) / 180)) * 1e4) / 1e4,
  };
}

export async function generateNational(options: NationalOptions): Promise<Topology> {
  const base = await loadTopologyDoc(options.base);
  const profileOf = (level: string) => base.nodes.find((node) => node.level === level)?.profile;
  const edgeProfile = profileOf('EDGE');
  const terminalProfile = profileOf('TERMINAL');
  const nodes: TopologyDoc['nodes'] = [];
  nodes.push(...base.nodes.filter((node) => node.level === 'CENTER').slice(0, options.hubs));
  const provinces = base.nodes.filter((node) => node.level === 'PROVINCE').slice(0, options.provinces);
  for (const province of provinces) {
    nodes.push({
      ...province,
      parent: nodes.some((n) => n.id === province.parent) ? province.parent : undefined,
    });
    if (edgeProfile === undefined) continue;
    const code = province.region.slice(3).toLowerCase();
    for (let e = 0; e < options.edgesPerProvince; e += 1) {
      const edgeId = `edge-${code}-${e + 1}`;
      const at = around(province, e, options.edgesPerProvince, 1.2);
      nodes.push({
        id: edgeId,
        level: 'EDGE',
        region: province.region,
        profile: edgeProfile,
        parent: province.id,
        ...at,
      });
      if (terminalProfile === undefined) continue;
      for (let t = 0; t < options.terminalsPerEdge; t += 1) {
        const spot = around(at, t, options.terminalsPerEdge, 0.15);
        nodes.push({
          id: `${edgeId}-t${t + 1}`,
          level: 'TERMINAL',
          region: province.region,
          profile: terminalProfile,
          parent: edgeId,
          ...spot,
        });
      }
    }
  }
  const profiles = Object.fromEntries(
    Object.entries(base.profiles).map(([name, profile]) => [
      name,
      { ...profile, price_factor: options.priceFactors?.[name] ?? profile.price_factor },
    ]),
  );
  return expandTopology(
    { ...base, profiles, nodes },
    `${options.base} (generated national)`,
    (path, message) => `${path.join('.')}: ${message}`,
  );
}
