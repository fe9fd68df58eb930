// report.html: placeholder until the charted report lands; self-contained, no network access.
import type { SimulationOutput } from './run.js';
import type { Scenario } from './scenario.js';

const escape = (text: string) => text.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

export function renderReport(scenario: Scenario, output: SimulationOutput): string {
  return `<!doctype html><meta charset="utf-8"><title>cpn simulation: ${escape(scenario.name)}</title><pre>${escape(
    JSON.stringify(output.summary, null, 2),
  )}</pre>\n`;
}
