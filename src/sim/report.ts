// report.html: one self-contained page (inline SVG and CSS, no scripts, no network) that a
// planner reads at a glance: SLO attainment and cost per policy, load and utilisation by level over
// time with the scenario's events marked, TTFT percentiles, the worst regions, and — with mobile
// classes — how vehicles fared per request, sticky and with sessions, along their route.

import { type LatLon, LEVELS } from '../core/model.js';
import { CHINA_OUTLINE } from './china-outline.js';
import { ROUTE_BIN_KM } from './mobility.js';
import type { SimulationOutput } from './run.js';
import type { Scenario } from './scenario.js';
import type { PolicyResult } from './simulate.js';

const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2'];
const LEVEL_COLORS: Record<string, string> = {
  CENTER: '#1d4ed8',
  PROVINCE: '#16a34a',
  EDGE: '#ea580c',
  TERMINAL: '#9333ea',
};

export const esc = (text: string): string =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string,
  );

type PolicySummary = {
  slo_attainment: number;
  cost_per_mtok_cny: number;
  ttft_ms: { p50: number | null; p95: number | null; p99: number | null };
  by_region: Record<string, { slo_attainment: number; requests: number }>;
  requests: number;
};

function barChart(
  title: string,
  labels: string[],
  values: number[],
  format: (v: number) => string,
  max?: number,
): string {
  const width = 460;
  const rowHeight = 28;
  const labelWidth = 140;
  const top = max ?? Math.max(...values, 1e-9);
  const rows = labels
    .map((label, i) => {
      const value = values[i] ?? 0;
      const barWidth = Math.max(1, ((width - labelWidth - 80) * value) / top);
      const y = 10 + i * rowHeight;
      return `<text x="0" y="${y + 17}" class="label">${esc(label)}</text><rect x="${labelWidth}" y="${y + 4}" width="${barWidth.toFixed(1)}" height="18" fill="${COLORS[i % COLORS.length]}"/><text x="${(labelWidth + barWidth + 6).toFixed(1)}" y="${y + 17}" class="value">${esc(format(value))}</text>`;
    })
    .join('');
  const height = 20 + labels.length * rowHeight;
  return `<figure><figcaption>${esc(title)}</figcaption><svg viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img">${rows}</svg></figure>`;
}

interface Series {
  readonly name: string;
  readonly color: string;
  readonly values: readonly number[];
}

/** Simulated seconds → China clock time, e.g. 19:30. */
type ClockLabel = (seconds: number) => string;

function lineChart(
  title: string,
  xs: readonly number[],
  series: readonly Series[],
  events: readonly { atS: number; label: string }[],
  yFormat: (v: number) => string,
  clock: ClockLabel,
): string {
  const width = 940;
  const height = 260;
  const left = 60;
  const bottom = 30;
  const xMax = Math.max(...xs, 1);
  const yMax = Math.max(...series.flatMap((s) => s.values), 1e-9);
  const x = (v: number) => left + ((width - left - 10) * v) / xMax;
  const y = (v: number) => height - bottom - ((height - bottom - 10) * v) / yMax;
  const lines = series
    .map((s) => {
      const points = s.values.map((v, i) => `${x(xs[i] ?? 0).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
      return `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${points}"/>`;
    })
    .join('');
  const ticks = [0, 0.25, 0.5, 0.75, 1]
    .map(
      (f) =>
        `<text x="${left - 6}" y="${y(f * yMax) + 4}" class="axis" text-anchor="end">${esc(yFormat(f * yMax))}</text><line x1="${left}" x2="${width - 10}" y1="${y(f * yMax)}" y2="${y(f * yMax)}" class="grid"/>`,
    )
    .join('');
  const xTicks = Array.from({ length: 7 }, (_, i) => (i * xMax) / 6)
    .map((v) => `<text x="${x(v)}" y="${height - 10}" class="axis" text-anchor="middle">${clock(v)}</text>`)
    .join('');
  const marks = events
    .map(
      (e) =>
        `<line x1="${x(e.atS)}" x2="${x(e.atS)}" y1="10" y2="${height - bottom}" class="event"/><text x="${x(e.atS) + 3}" y="22" class="event-label">${esc(e.label)}</text>`,
    )
    .join('');
  const legend = series
    .map((s) => `<span class="key" style="--c:${s.color}">${esc(s.name)}</span>`)
    .join(' ');
  return `<figure><figcaption>${esc(title)}</figcaption><svg viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img">${ticks}${marks}${lines}${xTicks}</svg><div class="legend">${legend}</div></figure>`;
}

/**
 * The vehicles of demand.mobile under each way of serving them: a table, and handovers and SLO
 * misses along the route (its kilometres from the first waypoint).
 */
function vehiclesSection(scenario: Scenario, output: SimulationOutput, pct: (v: number) => string): string {
  if (output.mobility.length === 0) return '';
  const rows = output.mobility
    .map((r) => {
      const m = r.mobile?.summary() as
        | {
            requests: number;
            slo_attainment: number;
            ttft_ms: { p95: number | null };
            handovers_per_vehicle_hour: number;
            reprefilled_tokens: number;
            cost_cny: number;
          }
        | undefined;
      if (m === undefined) return '';
      return `<tr><th>${esc(r.mobility ?? '')}</th><td>${m.requests}</td><td>${pct(m.slo_attainment)}</td><td>${m.ttft_ms.p95 ?? '-'}</td><td>${m.handovers_per_vehicle_hour}</td><td>${m.reprefilled_tokens}</td><td>${m.cost_cny}</td></tr>`;
    })
    .join('');
  const bins = new Set<number>();
  for (const r of output.mobility)
    for (const map of [r.mobile?.handoversByKm, r.mobile?.missesByKm])
      for (const bin of map?.keys() ?? []) bins.add(bin);
  const maxBin = Math.max(0, ...bins);
  const xs = Array.from({ length: maxBin + 1 }, (_, i) => (i + 0.5) * ROUTE_BIN_KM);
  const along = (title: string, pick: (r: PolicyResult) => ReadonlyMap<number, number> | undefined) =>
    lineChart(
      title,
      xs,
      output.mobility.map((r, i) => ({
        name: r.mobility ?? '',
        color: COLORS[i % COLORS.length] as string,
        values: xs.map((_, bin) => pick(r)?.get(bin) ?? 0),
      })),
      [],
      (v) => v.toFixed(0),
      (km) => `${km.toFixed(0)} km`,
    );
  const names = scenario.demand.mobile.map((m) => esc(m.name)).join(', ');
  return `<h2>Vehicles (${names}): per-request routing, sticky-forever and sessions on identical trips</h2>
<table><tr><th>served</th><th>requests</th><th>SLO met</th><th>TTFT p95 ms</th><th>handovers / vehicle-hour</th><th>context tokens prefilled again</th><th>CNY</th></tr>${rows}</table>
${along(`Handovers along the route (per ${ROUTE_BIN_KM} km)`, (r) => r.mobile?.handoversByKm)}
${along(`SLO misses along the route (per ${ROUTE_BIN_KM} km)`, (r) => r.mobile?.missesByKm)}`;
}

/** Equirectangular view of China: longitude 73–136 °E, latitude 17–54 °N, x scaled by cos 35°. */
export const MAP = { west: 73, east: 136, south: 17, north: 54, width: 460 };
export const mapHeight = Math.round(
  (MAP.width * (MAP.north - MAP.south)) / ((MAP.east - MAP.west) * Math.cos((35 * Math.PI) / 180)),
);

/** Map coordinates of a longitude and a latitude. */
export const mapX = (lon: number) => ((lon - MAP.west) / (MAP.east - MAP.west)) * MAP.width;
export const mapY = (lat: number) => ((MAP.north - lat) / (MAP.north - MAP.south)) * mapHeight;

/** What every map draws first: its frame, China's outline (see china-outline.ts) and meridians. */
export function mapBackdrop(): string {
  const frame = `<rect x="0" y="0" width="${MAP.width}" height="${mapHeight}" fill="#f8fafc" stroke="#cbd5e1"/>`;
  const outline = CHINA_OUTLINE.map((ring) => {
    let d = '';
    for (let i = 0; i + 1 < ring.length; i += 2)
      d += `${i === 0 ? 'M' : 'L'}${mapX(ring[i] as number).toFixed(1)},${mapY(ring[i + 1] as number).toFixed(1)}`;
    return `<path class="outline" d="${d}Z"/>`;
  }).join('');
  const grid = [80, 90, 100, 110, 120, 130]
    .map(
      (lon) =>
        `<line x1="${mapX(lon)}" x2="${mapX(lon)}" y1="0" y2="${mapHeight}" class="grid"/><text x="${mapX(lon) + 2}" y="${mapHeight - 4}" class="axis">${lon}°E</text>`,
    )
    .join('');
  return `${frame}${outline}${grid}`;
}

/** A region at its centre, coloured by its SLO attainment (grey when it has none), labelled. */
export function regionMark(region: string, at: LatLon, share: number | undefined, title: string): string {
  const fill = share === undefined ? '#e2e8f0' : sloColour(share);
  const cx = mapX(at.lon).toFixed(1);
  const cy = mapY(at.lat);
  return `<g class="region"><circle cx="${cx}" cy="${cy.toFixed(1)}" r="13" fill="${fill}" fill-opacity="0.35" stroke="${fill}"><title>${esc(title)}</title></circle><text x="${cx}" y="${(cy + 3).toFixed(1)}" class="region-label" text-anchor="middle">${esc(region.replace(/^CN-/, ''))}</text></g>`;
}

/** Green at or above the budget share 99 %, amber to 95 %, red below. */
function sloColour(share: number): string {
  return share >= 0.99 ? '#16a34a' : share >= 0.95 ? '#f59e0b' : '#dc2626';
}

/** Utilisation 0 → pale blue, 1 → deep red. */
function utilisationColour(u: number): string {
  const t = Math.max(0, Math.min(1, u));
  const mix = (a: number, b: number) => Math.round(a + (b - a) * t);
  return `rgb(${mix(147, 185)},${mix(197, 28)},${mix(253, 28)})`;
}

/**
 * One map per policy: regions (at their centres, the topology's coordinates) coloured by SLO
 * attainment, nodes by level (CENTER squares, others circles) sized by slots and coloured by
 * utilisation after the warmup. Inline SVG, no network.
 */
function maps(scenario: Scenario, output: SimulationOutput): string {
  const x = mapX;
  const y = mapY;
  const measuredMs = scenario.duration - scenario.warmup;
  const slots = new Map(
    output.topology.nodes.map((n) => [n.id, n.models.reduce((sum, o) => sum + o.maxConcurrency, 0)]),
  );
  const maxSlots = Math.max(1, ...slots.values());
  const policies = (output.summary as { policies: Record<string, PolicySummary> }).policies;
  const drawn = output.results.map((r) => {
    const byRegion = policies[r.policy]?.by_region ?? {};
    const regions = [...output.topology.regionCentroids.entries()]
      .map(([region, at]) => {
        const s = byRegion[region];
        return regionMark(
          region,
          at,
          s === undefined || s.requests === 0 ? undefined : s.slo_attainment,
          s === undefined
            ? `${region}: no requests`
            : `${region}: SLO ${(s.slo_attainment * 100).toFixed(2)} % of ${s.requests}`,
        );
      })
      .join('');
    const nodes = [...output.topology.nodes]
      .sort((a, b) => LEVELS.indexOf(b.level) - LEVELS.indexOf(a.level))
      .flatMap((n) => {
        // A node without coordinates has no place on the map.
        if (n.location === undefined) return [];
        const capacity = slots.get(n.id) ?? 0;
        const u = capacity === 0 ? 0 : (r.busyByNode.get(n.id) ?? 0) / (capacity * measuredMs);
        const size = 2 + 7 * Math.sqrt(capacity / maxSlots);
        const cx = x(n.location.lon);
        const cy = y(n.location.lat);
        const title = `<title>${esc(`${n.id} (${n.level}): ${capacity} slots, ${(u * 100).toFixed(1)} % busy`)}</title>`;
        return n.level === 'CENTER'
          ? `<rect class="node" x="${(cx - size).toFixed(1)}" y="${(cy - size).toFixed(1)}" width="${(2 * size).toFixed(1)}" height="${(2 * size).toFixed(1)}" fill="${utilisationColour(u)}" stroke="#1e293b" stroke-width="0.6">${title}</rect>`
          : `<circle class="node" cx="${cx.toFixed(1)}" cy="${cy.toFixed(1)}" r="${size.toFixed(1)}" fill="${utilisationColour(u)}" stroke="#1e293b" stroke-width="0.4">${title}</circle>`;
      })
      .join('');
    return `<figure class="map"><figcaption>${esc(r.policy)}</figcaption><svg viewBox="0 0 ${MAP.width} ${mapHeight}" width="${MAP.width}" height="${mapHeight}" role="img">${mapBackdrop()}${regions}${nodes}</svg></figure>`;
  });
  const legend = `<div class="legend">regions: <span class="key" style="--c:#16a34a">SLO ≥ 99 %</span><span class="key" style="--c:#f59e0b">≥ 95 %</span><span class="key" style="--c:#dc2626">below</span> · nodes (■ CENTER, ● others; size: slots): <span class="key" style="--c:${utilisationColour(0)}">idle</span><span class="key" style="--c:${utilisationColour(0.5)}">half busy</span><span class="key" style="--c:${utilisationColour(1)}">full</span></div>`;
  return `<div class="row">${drawn.join('')}</div>${legend}`;
}

export function renderReport(scenario: Scenario, output: SimulationOutput): string {
  const summary = output.summary as {
    policies: Record<string, PolicySummary>;
    nodes: Record<string, number>;
  };
  const policies = Object.keys(summary.policies);
  const p = (name: string) => summary.policies[name] as PolicySummary;
  const pct = (v: number) => `${(v * 100).toFixed(2)} %`;

  const slo = barChart(
    'SLO attainment (share of requests whose measured TTFT met the budget)',
    policies,
    policies.map((n) => p(n).slo_attainment),
    pct,
    1,
  );
  const cost = barChart(
    'Cost per million tokens (CNY)',
    policies,
    policies.map((n) => p(n).cost_per_mtok_cny),
    (v) => v.toFixed(3),
  );
  const ttft = ['p50', 'p95', 'p99']
    .map((q) =>
      barChart(
        `TTFT ${q} (ms)`,
        policies,
        policies.map((n) => p(n).ttft_ms[q as 'p50'] ?? 0),
        (v) => v.toFixed(1),
      ),
    )
    .join('');

  const events = scenario.events.map((e) => ({
    atS: e.at / 1000,
    label:
      e.kind === 'surge'
        ? `surge ×${e.factor} ${e.region}`
        : e.kind === 'node_down'
          ? `${e.node} down`
          : e.kind === 'region_down'
            ? `${e.region} down`
            : e.kind === 'link_degraded'
              ? `${e.region} +${e.add_ms} ms`
              : 'price change',
  }));
  const clock: ClockLabel = (seconds) => {
    const minutes = Math.round(scenario.demand.start_hour * 60 + seconds / 60);
    return `${String(Math.floor(minutes / 60) % 24).padStart(2, '0')}:${String(minutes % 60).padStart(2, '0')}`;
  };
  const first = output.results[0];
  const xs = first?.buckets.map((b) => b.startMs / 1000) ?? [];
  const load = lineChart(
    'Arrivals per bucket',
    xs,
    [{ name: 'requests', color: '#334155', values: first?.buckets.map((b) => b.arrivals) ?? [] }],
    events,
    (v) => v.toFixed(0),
    clock,
  );
  const slots: Record<string, number> = { CENTER: 0, PROVINCE: 0, EDGE: 0, TERMINAL: 0 };
  for (const spec of output.topology.nodes)
    for (const offer of spec.models) slots[spec.level] = (slots[spec.level] ?? 0) + offer.maxConcurrency;
  const utilization = output.results
    .map((r) =>
      lineChart(
        `Utilisation by level over time — ${r.policy}`,
        xs,
        LEVELS.map((level) => ({
          name: level,
          color: LEVEL_COLORS[level] as string,
          values: r.buckets.map((b) => {
            const length = Math.min(scenario.bucket, scenario.duration - b.startMs);
            return slots[level] ? b.busySlotMs[level] / ((slots[level] as number) * length) : 0;
          }),
        })),
        events,
        pct,
        clock,
      ),
    )
    .join('');
  const sloOverTime = lineChart(
    'SLO attainment over time',
    xs,
    output.results.map((r, i) => ({
      name: r.policy,
      color: COLORS[i % COLORS.length] as string,
      values: r.buckets.map((b) => (b.arrivals === 0 ? 1 : b.sloMet / b.arrivals)),
    })),
    events,
    pct,
    clock,
  );

  const worst = policies
    .map((name) => {
      const regions = Object.entries(p(name).by_region)
        .sort((a, b) => a[1].slo_attainment - b[1].slo_attainment || (a[0] < b[0] ? -1 : 1))
        .slice(0, 5)
        .map(([region, s]) => `<td>${esc(region)} ${pct(s.slo_attainment)}</td>`)
        .join('');
      return `<tr><th>${esc(name)}</th>${regions}</tr>`;
    })
    .join('');
  const vehicles = vehiclesSection(scenario, output, pct);
  const nodes = Object.entries(summary.nodes)
    .map(([level, n]) => `${n} ${level}`)
    .join(', ');

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cpn simulation: ${esc(scenario.name)}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#0f172a;max-width:1000px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
figure{margin:8px 0 16px} figcaption{font-weight:600;margin-bottom:4px}
.row{display:flex;flex-wrap:wrap;gap:24px}
.label{font-size:12px;fill:#0f172a}.value{font-size:12px;fill:#334155}.axis{font-size:11px;fill:#475569}
.grid{stroke:#e2e8f0}.outline{fill:#eef2f7;stroke:#94a3b8;stroke-width:0.8}.region-label{font-size:8px;fill:#334155}.event{stroke:#f59e0b;stroke-dasharray:4 3}.event-label{font-size:11px;fill:#b45309}
.legend{font-size:12px}.key::before{content:"";display:inline-block;width:10px;height:10px;background:var(--c);margin:0 4px 0 12px}
table{border-collapse:collapse}td,th{border:1px solid #e2e8f0;padding:4px 8px;text-align:left}
</style></head><body>
<h1>${esc(scenario.name)}</h1>
<p>${esc(scenario.description ?? '')}<br>${(scenario.duration / 3_600_000).toFixed(2)} h simulated from ${scenario.demand.start_hour}:00 (China time), seed ${scenario.seed}; ${esc(nodes)} nodes; policies compared on identical arrivals.</p>
<h2>SLO and cost per policy</h2><div class="row">${slo}${cost}</div>
<h2>Map: regions by SLO attainment (at their centres), nodes by utilisation (hover for figures)</h2>${maps(scenario, output)}
<h2>Load and SLO over time (China time; dashed lines mark scenario events)</h2>${load}${sloOverTime}
<h2>Utilisation by level</h2>${utilization}
<h2>Time to first token</h2><div class="row">${ttft}</div>
<h2>Worst regions (lowest SLO attainment)</h2><table>${worst}</table>
${vehicles}
</body></html>
`;
}
