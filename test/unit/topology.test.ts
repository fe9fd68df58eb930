import { describe, expect, it } from 'vitest';
import { greatCircleKm } from '../../src/core/latency.js';
import { findOffer, type NodeSpec } from '../../src/core/model.js';
import { loadTopology, parseTopology } from '../../src/ops/topology.js';
import { ConfigError } from '../../src/ops/yaml-config.js';

const DEMO = 'simulations/topologies/demo-national.yaml';

describe('demo national topology', async () => {
  const topology = await loadTopology(DEMO);
  const byLevel = (level: NodeSpec['level']) => topology.nodes.filter((node) => node.level === level);

  it('has 8 hubs, 31 provincial capitals, city edges and terminals', () => {
    expect(byLevel('CENTER')).toHaveLength(8);
    expect(byLevel('PROVINCE')).toHaveLength(31);
    expect(new Set(byLevel('PROVINCE').map((node) => node.region)).size).toBe(31);
    expect(byLevel('EDGE').length).toBeGreaterThanOrEqual(15);
    expect(byLevel('TERMINAL').length).toBeGreaterThanOrEqual(3);
    expect(topology.regionCentroids.size).toBe(31);
  });

  it('puts provincial nodes at their capitals (Guangzhou within 5 km)', () => {
    const guangdong = byLevel('PROVINCE').find((node) => node.region === 'CN-GD');
    expect(
      guangdong?.location && greatCircleKm(guangdong.location, { lat: 23.129, lon: 113.264 }),
    ).toBeLessThan(5);
  });

  it('makes western hubs cheapest and edges dearest; cache hits ~1/10 of input, output ~4× input', () => {
    const price = (id: string) =>
      findOffer(topology.nodes.find((node) => node.id === id) as NodeSpec, 'qwen3-32b')?.price;
    const west = price('hub-gs-qingyang');
    const east = price('hub-gba-shaoguan');
    const province = price('prov-gd-guangzhou');
    const edge = price('edge-gd-guangzhou');
    expect(west && east && province && edge).toBeTruthy();
    if (!west || !east || !province || !edge) return;
    expect(west.inputPerMtok).toBeLessThan(province.inputPerMtok);
    expect(province.inputPerMtok).toBeLessThan(edge.inputPerMtok);
    expect(east.inputPerMtok).toBeLessThan(edge.inputPerMtok);
    for (const p of [west, east, province, edge]) {
      expect(p.cachedInputPerMtok / p.inputPerMtok).toBeCloseTo(0.1, 5);
      expect(p.outputPerMtok / p.inputPerMtok).toBeCloseTo(4, 5);
    }
  });

  it('links every non-hub node to an existing parent', () => {
    const ids = new Set(topology.nodes.map((node) => node.id));
    for (const node of topology.nodes.filter((n) => n.level !== 'CENTER'))
      expect(ids.has(node.parentId)).toBe(true);
  });
});

describe('topology validation errors name file, line and field', () => {
  const valid = [
    'version: 1',
    'regions:',
    '  CN-GD: { name: Guangdong, lat: 23.1, lon: 113.3 }',
    'models:',
    '  m: { input_per_mtok: 1, output_per_mtok: 4, cached_input_per_mtok: 0.1 }',
    'profiles:',
    '  p:',
    '    gpus: [{ type: L20, count: 8, memory_gib: 48 }]',
    '    offers:',
    '      m: { max_concurrency: 4, max_queue: 4, prefill_tokens_per_s: 1000, decode_tokens_per_s: 50 }',
    'nodes:',
    '  - { id: a, level: EDGE, region: CN-GD, profile: p, lat: 23.1, lon: 113.3 }',
  ];
  const cases: { name: string; edit: (lines: string[]) => string[]; want: RegExp }[] = [
    {
      name: 'a negative rate',
      edit: (l) => l.map((x) => x.replace('prefill_tokens_per_s: 1000', 'prefill_tokens_per_s: -3')),
      want: /^t\.yaml:10: profiles\.p\.offers\.m\.prefill_tokens_per_s .*>0.*got -3/,
    },
    {
      name: 'an unknown level',
      edit: (l) => l.map((x) => x.replace('level: EDGE', 'level: CITY')),
      want: /^t\.yaml:12: nodes\[0\]\.level .*got "CITY"/,
    },
    {
      name: 'a bad node id',
      edit: (l) => l.map((x) => x.replace('id: a,', 'id: Bad_Id,')),
      want: /^t\.yaml:12: nodes\[0\]\.id must match/,
    },
    {
      name: 'an unknown region',
      edit: (l) => l.map((x) => x.replace('region: CN-GD, profile', 'region: CN-XX, profile')),
      want: /^t\.yaml:12: nodes\[0\]\.region CN-XX is not under regions/,
    },
    {
      name: 'an unknown model in a profile',
      edit: (l) => l.map((x) => x.replace('      m: {', '      zz: {')),
      want: /^t\.yaml:10: profiles\.p\.offers\.zz names model zz/,
    },
    {
      // Route would take it, and Release refuse the ids Route issues for it.
      name: 'a model name the API would refuse',
      edit: (l) => l.map((x) => x.replace(/^( *)m: \{/, '$1"deepseek v3": {')),
      want: /^t\.yaml:5: models\.deepseek v3.*a model name must match/,
    },
    {
      name: 'a misspelt key',
      edit: (l) => [
        ...l.slice(0, 11),
        '  - { id: a, level: EDGE, region: CN-GD, profil: p, lat: 23.1, lon: 113.3 }',
      ],
      want: /^t\.yaml:12: nodes\[0\]/,
    },
    { name: 'a YAML syntax error', edit: (l) => [...l, '  - { id: b'], want: /^t\.yaml:1[34]: / },
  ];
  it('accepts the valid base document', () => {
    expect(parseTopology('t.yaml', valid.join('\n')).nodes).toHaveLength(1);
  });
  for (const c of cases) {
    it(c.name, () => {
      let error: unknown;
      try {
        parseTopology('t.yaml', c.edit([...valid]).join('\n'));
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).problems.join('\n')).toMatch(c.want);
    });
  }
});
