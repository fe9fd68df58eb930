// plan.html: one self-contained page (inline SVG and CSS, no scripts, no network) for `cpn plan`:
// the plan, what it costs against adding GPUs uniformly, the SLO of each target before and after,
// a map of where the GPUs go with regions coloured by the targeted classes' SLO, and every run tried.

import { costOf, type Evaluation, type PlanOutcome, targetLabel } from './plan.js';
import { esc, MAP, mapBackdrop, mapHeight, mapX, mapY, regionMark } from './report.js';

/** A share as a percentage with three decimals (plan targets sit close to 100 %). */
export const pct = (v: number) => `${(v * 100).toFixed(3)} %`;

/** SLO attainment of the targeted classes in each region, under `e`. */
function regionAttainment(
  outcome: PlanOutcome,
  e: Evaluation,
): Map<string, { requests: number; met: number }> {
  const classes = new Set(outcome.input.doc.targets.map((t) => t.class));
  const byRegion = new Map<string, { requests: number; met: number }>();
  for (const cls of classes)
    for (const [region, a] of Object.entries(e.attainment[cls] ?? {})) {
      const sum = byRegion.get(region) ?? { requests: 0, met: 0 };
      sum.requests += a.requests;
      sum.met += a.slo * a.requests;
      byRegion.set(region, sum);
    }
  return byRegion;
}

function siteMap(outcome: PlanOutcome, e: Evaluation, caption: string): string {
  const x = mapX;
  const y = mapY;
  const centroids = outcome.input.topology.regionCentroids;
  const attained = regionAttainment(outcome, e);
  const regions = [...centroids.entries()]
    .map(([region, at]) => {
      const a = attained.get(region);
      const share = a === undefined || a.requests === 0 ? undefined : a.met / a.requests;
      return regionMark(
        region,
        at,
        share,
        share === undefined
          ? `${region}: no targeted requests`
          : `${region}: SLO ${pct(share)} of ${a?.requests}`,
      );
    })
    .join('');
  const gpusByRegion = new Map<string, number>();
  for (const site of e.sites) gpusByRegion.set(site.region, (gpusByRegion.get(site.region) ?? 0) + site.gpus);
  const most = Math.max(1, ...gpusByRegion.values());
  const sites = [...gpusByRegion.entries()]
    .flatMap(([region, gpus]) => {
      const at = centroids.get(region);
      if (at === undefined) return [];
      const r = 3 + 9 * Math.sqrt(gpus / most);
      const detail = e.sites
        .filter((s) => s.region === region)
        .map((s) => `${s.gpus} ${s.gpu} (${s.model}, ${s.level})`)
        .join(', ');
      return [
        `<circle class="site" cx="${x(at.lon).toFixed(1)}" cy="${y(at.lat).toFixed(1)}" r="${r.toFixed(1)}" fill="#1d4ed8" fill-opacity="0.75" stroke="#0f172a"><title>${esc(`${region}: + ${detail}`)}</title></circle>`,
      ];
    })
    .join('');
  return `<figure class="map"><figcaption>${esc(caption)}</figcaption><svg viewBox="0 0 ${MAP.width} ${mapHeight}" width="${MAP.width}" height="${mapHeight}" role="img">${mapBackdrop()}${regions}${sites}</svg></figure>`;
}

export function renderPlanReport(outcome: PlanOutcome): string {
  const { input, baseline } = outcome;
  const chosen = outcome.plan ?? outcome.closest;
  const sites = chosen.sites
    .map(
      (s) =>
        `<tr><td>${esc(s.region)}</td><td>${esc(s.level)}</td><td>${esc(s.gpu)}</td><td>${esc(s.model)}</td><td>${s.gpus}</td><td>${costOf(input, [s]).toFixed(2)}</td></tr>`,
    )
    .join('');
  const uniformHead = outcome.uniform.map((u) => `<th>uniform ${esc(u.gpu)}</th>`).join('');
  const targets = chosen.targets
    .map((t, i) => {
      const cell = (e: Evaluation | undefined) => {
        const a = e?.targets[i];
        return a === undefined
          ? '<td>-</td>'
          : `<td class="${a.shortfall === 0 ? 'ok' : 'short'}">${pct(a.attainment)}</td>`;
      };
      return `<tr><th>${esc(targetLabel(t))}</th><td>${pct(t.slo)}</td>${cell(baseline)}${cell(chosen)}${outcome.uniform.map((u) => cell(u.plan)).join('')}</tr>`;
    })
    .join('');
  const cost = (e: Evaluation | undefined) =>
    e === undefined ? 'none meets the targets' : `${e.gpus} GPUs, ${e.costPerHour.toFixed(2)} CNY/h`;
  const comparison = [
    `<tr><th>least-cost plan found</th><td>${outcome.plan === undefined ? 'none meets the targets' : cost(outcome.plan)}</td></tr>`,
    ...outcome.uniform.map(
      (u) =>
        `<tr><th>uniform ${esc(u.gpu)} in every menu region</th><td>${cost(u.plan)}${u.plan !== undefined && outcome.plan !== undefined ? ` (${(u.plan.costPerHour / Math.max(1e-9, outcome.plan.costPerHour)).toFixed(2)}× the plan)` : ''}${u.note === undefined ? '' : ` — ${esc(u.note)}`}</td></tr>`,
    ),
  ].join('');
  const runs = outcome.runs
    .map(
      (e) =>
        `<tr><td>${e.index + 1}</td><td>${e.phase}</td><td>${esc(e.label)}</td><td>${e.gpus}</td><td>${e.costPerHour.toFixed(2)}</td><td>${e.meets ? 'meets every target' : `${e.shortfall} requests short`}</td></tr>`,
    )
    .join('');
  const bestUniform = outcome.uniform
    .filter((u) => u.plan !== undefined)
    .sort((a, b) => (a.plan?.costPerHour ?? 0) - (b.plan?.costPerHour ?? 0))[0];
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cpn plan: ${esc(input.scenario.name)}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#0f172a;max-width:1000px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
figure{margin:8px 0 16px} figcaption{font-weight:600;margin-bottom:4px}
.row{display:flex;flex-wrap:wrap;gap:24px}.region-label{font-size:8px;fill:#334155}
.grid{stroke:#e2e8f0}.axis{font-size:11px;fill:#475569}.outline{fill:#eef2f7;stroke:#94a3b8;stroke-width:0.8}
table{border-collapse:collapse}td,th{border:1px solid #e2e8f0;padding:4px 8px;text-align:left}
.ok{color:#15803d}.short{color:#b91c1c}
</style></head><body>
<h1>Capacity plan: ${esc(input.scenario.name)}</h1>
<p>${esc(input.file)} · policy ${esc(input.doc.policy)} · seed ${input.scenario.seed} · ${outcome.runs.length} simulator runs${outcome.stopped === undefined ? '' : ` · stopped: ${esc(outcome.stopped)}`}</p>
<h2>${outcome.plan === undefined ? 'No plan on the menu met every target; the closest tried' : 'The plan'}</h2>
${chosen.sites.length === 0 ? '<p>Nothing to add.</p>' : `<table><tr><th>region</th><th>level</th><th>GPU</th><th>model</th><th>GPUs</th><th>CNY / hour</th></tr>${sites}</table>`}
<h2>Cost</h2><table>${comparison}</table>
<h2>SLO targets</h2><table><tr><th>target</th><th>wanted</th><th>before</th><th>with the plan</th>${uniformHead}</tr>${targets}</table>
<h2>Where the GPUs go (regions coloured by the targeted classes' SLO; hover for figures)</h2>
<div class="row">${siteMap(outcome, baseline, 'before')}${siteMap(outcome, chosen, outcome.plan === undefined ? 'closest plan' : 'with the plan')}${bestUniform?.plan === undefined ? '' : siteMap(outcome, bestUniform.plan, `uniform ${bestUniform.gpu}`)}</div>
<h2>Runs tried</h2><table><tr><th>#</th><th>phase</th><th>tried</th><th>GPUs</th><th>CNY / hour</th><th>outcome</th></tr>${runs}</table>
</body></html>
`;
}
