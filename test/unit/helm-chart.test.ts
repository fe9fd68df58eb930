// No helm binary can be installed here, so the chart is checked structurally: every .Values path a
// template uses exists, every value is used, every key is commented, each template is well-formed
// YAML once template directives are stripped, the ConfigMap only sets variables the CLI reads, and
// the Grafana dashboard only queries metrics the server exports.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { buildProgram } from '../../src/cli/main.js';
import { envOf, SERVE_SETTINGS, type SettingKey } from '../../src/cli/serve-settings.js';
import { DEFAULT_LATENCY_MODEL } from '../../src/core/latency.js';
import { ControlPlaneMetrics } from '../../src/ops/metrics.js';
import { parseTopology } from '../../src/ops/topology.js';
import { MemoryStore } from '../../src/store/memory/memory-store.js';

const chart = 'helm/cpn';
const templates = readdirSync(join(chart, 'templates')).map((file) => ({
  file,
  text: readFileSync(join(chart, 'templates', file), 'utf8'),
}));
const valuesText = readFileSync(join(chart, 'values.yaml'), 'utf8');
const values = parse(valuesText) as Record<string, unknown>;

const used = [
  ...new Set(
    templates.flatMap(({ text }) =>
      [...text.matchAll(/\.Values\.([A-Za-z0-9_.]+)/g)].map((m) => m[1] as string),
    ),
  ),
];

function leafPaths(value: unknown, prefix: string[] = []): string[] {
  if (value !== null && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length > 0) {
    return Object.entries(value).flatMap(([key, child]) => leafPaths(child, [...prefix, key]));
  }
  return [prefix.join('.')];
}

function lookup(path: string): unknown {
  return path
    .split('.')
    .reduce<unknown>(
      (node, key) =>
        node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[key] : undefined,
      values,
    );
}

describe('helm chart', () => {
  it('has Chart.yaml apiVersion v2 and the expected templates', () => {
    expect(parse(readFileSync(join(chart, 'Chart.yaml'), 'utf8'))).toMatchObject({
      apiVersion: 'v2',
      name: 'cpn',
    });
    expect(templates.map((t) => t.file).sort()).toEqual(
      [
        '_helpers.tpl',
        'agent.yaml',
        'configmap.yaml',
        'deployment.yaml',
        'etcd.yaml',
        'hpa.yaml',
        'pdb.yaml',
        'service.yaml',
        'servicemonitor.yaml',
      ].sort(),
    );
  });

  it('every .Values path used by a template exists in values.yaml', () => {
    expect(used.length).toBeGreaterThan(15);
    expect(used.filter((path) => lookup(path) === undefined)).toEqual([]);
  });

  it('every key in values.yaml is used by a template (itself or a parent passed whole)', () => {
    const unused = leafPaths(values).filter(
      (leaf) => !used.some((path) => leaf === path || leaf.startsWith(`${path}.`)),
    );
    expect(unused).toEqual([]);
  });

  it('every key in values.yaml has a comment above it (the resources subtree is Kubernetes’ own)', () => {
    const lines = valuesText.split('\n');
    // Inside a block scalar (`node: |`) lines are the value's text, not keys.
    let blockIndent: number | undefined;
    const uncommented = lines.flatMap((line, index) => {
      const indent = line.length - line.trimStart().length;
      if (blockIndent !== undefined && (line.trim() === '' || indent > blockIndent)) return [];
      blockIndent = /:\s*\|\s*$/.test(line) ? indent : undefined;
      const key = /^(\s*)([A-Za-z][A-Za-z0-9]*):/.exec(line);
      if (!key) return [];
      const previous = lines[index - 1]?.trim() ?? '';
      const inResources = /^\s{4}(cpu|memory):/.test(line);
      return previous.startsWith('#') || inResources ? [] : [`${index + 1}: ${line.trim()}`];
    });
    expect(uncommented).toEqual([]);
  });

  it('each template is well-formed YAML once template directives are stripped', () => {
    for (const { file, text } of templates.filter((t) => t.file.endsWith('.yaml'))) {
      const stripped = text
        .split('\n')
        .filter((line) => !/^\s*\{\{-?.*-?\}\}\s*$/.test(line))
        .map((line) => line.replace(/\{\{-?.*?-?\}\}/g, 'x'))
        .join('\n');
      const documents = parseAllDocuments(stripped);
      const errors = (Array.isArray(documents) ? documents : [documents]).flatMap((doc) =>
        doc.errors.map((e) => e.message),
      );
      expect(errors, file).toEqual([]);
      expect(stripped, file).toMatch(/^kind: /m);
    }
  });

  it("the chart's config values default to what cpn serve defaults to (one source: the settings table)", () => {
    const config = (values.config ?? {}) as Record<string, unknown>;
    expect(Object.keys(config).length).toBeGreaterThan(3);
    // Where a cluster needs another value than a laptop, on purpose.
    const clusterValues: Record<string, string> = {
      drainDelayMs: 'a Service needs time to take a pod out of its endpoints',
    };
    for (const [key, value] of Object.entries(config)) {
      const setting = (SERVE_SETTINGS as Record<string, { default?: unknown }>)[key];
      expect(setting, `values.config.${key} is not a cpn serve setting`).toBeDefined();
      if (clusterValues[key] === undefined) expect(value, `values.config.${key}`).toEqual(setting?.default);
    }
  });

  it('Kubernetes waits longer than the drain delay and the grace together', () => {
    const config = values.config as { drainDelayMs: number; graceMs: number };
    expect(values.terminationGracePeriodSeconds as number).toBeGreaterThan(
      (config.drainDelayMs + config.graceMs) / 1000,
    );
  });

  it('the ConfigMap sets only CPN_* variables that cpn serve reads', () => {
    const read = new Set<string>((Object.keys(SERVE_SETTINGS) as SettingKey[]).map(envOf));
    const configmap = templates.find((t) => t.file === 'configmap.yaml')?.text ?? '';
    const set = [...configmap.matchAll(/^\s+(CPN_[A-Z_]+):/gm)].map((m) => m[1] as string);
    expect(set.length).toBeGreaterThan(5);
    expect(set.filter((name) => !read.has(name))).toEqual([]);
  });

  it('the agent sidecar sets only CPN_AGENT_* variables cpn agent reads, for the one node of a valid topology', () => {
    const read = new Set(
      (buildProgram().commands.find((c) => c.name() === 'agent')?.options ?? []).map((o) => o.envVar),
    );
    const agent = templates.find((t) => t.file === 'agent.yaml')?.text ?? '';
    const set = [...agent.matchAll(/- name: (CPN_[A-Z_]+)/g)].map((m) => m[1] as string);
    expect(set.length).toBeGreaterThan(5);
    expect(set.filter((name) => !read.has(name))).toEqual([]);
    const topology = parseTopology('values.yaml agent.node', lookup('agent.node') as string);
    expect(topology.nodes).toHaveLength(1);
    // The engine keeps serving (preStop) while the agent drains, and Kubernetes waits for both.
    expect(agent).toMatch(/preStop:[\s\S]*sleep.*\.Values\.agent\.graceMs/);
    expect(agent).toMatch(/terminationGracePeriodSeconds: .*\.Values\.agent\.graceMs/);
  });

  it('the Dockerfile runs as non-root and the chart points at its ports', () => {
    const dockerfile = readFileSync('Dockerfile', 'utf8');
    expect(dockerfile).toMatch(/^USER 10001:10001$/m);
    expect(dockerfile).toMatch(/^FROM .* AS build$/m);
    expect(dockerfile).toMatch(/^EXPOSE 50051 9464$/m);
    expect(lookup('service.grpcPort')).toBe(50051);
    expect(lookup('service.metricsPort')).toBe(9464);
  });
});

describe('grafana dashboard', () => {
  it('queries only metrics the control plane exports', async () => {
    const dashboard = readFileSync('ops/grafana/cpn-dashboard.json', 'utf8');
    JSON.parse(dashboard);
    const store = new MemoryStore({ clock: Date.now, latency: DEFAULT_LATENCY_MODEL });
    const metrics = new ControlPlaneMetrics({
      store,
      clock: Date.now,
      reservedOn: () => new Map(),
      isLeader: () => false,
    });
    const exported = new Set((await metrics.registry.getMetricsAsJSON()).map((m) => m.name));
    const queried = [
      ...new Set(
        [...dashboard.matchAll(/\b(cpn_[a-z_]+?)(_bucket|_count|_sum)?\b/g)].map((m) => m[1] as string),
      ),
    ];
    expect(queried.length).toBeGreaterThan(6);
    expect(queried.filter((name) => !exported.has(name))).toEqual([]);
  });
});
