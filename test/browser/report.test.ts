// Opens a real report.html in headless Chromium: charts rendered, no console errors, no network.
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadPlan, plan } from '../../src/sim/plan.js';
import { renderPlanReport } from '../../src/sim/plan-report.js';
import { simulate, writeOutputs } from '../../src/sim/run.js';
import { loadScenario } from '../../src/sim/scenario.js';
import { launchChromium } from '../helpers/browser.js';

describe('report.html in a browser', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('renders its charts with no console errors and no network requests', async () => {
    const scenario = await loadScenario('simulations/province-surge.yaml');
    const short = {
      ...scenario,
      duration: 20 * 60_000,
      warmup: 0,
      bucket: 2 * 60_000,
      policies: ['cheapest-feasible' as const, 'nearest' as const],
      events: scenario.events.map((e) => ({ ...e, at: 5 * 60_000 })),
    };
    const dir = await mkdtemp(join(tmpdir(), 'cpn-report-'));
    await writeOutputs(dir, short, await simulate(short));

    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    const consoleErrors: string[] = [];
    const requests: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(message.text());
    });
    page.on('pageerror', (error) => consoleErrors.push(error.message));
    page.on('request', (request) => {
      if (!request.url().startsWith('file:')) requests.push(request.url());
    });
    await page.goto(pathToFileURL(join(dir, 'report.html')).href);

    const charts = await page.locator('svg').count();
    expect(charts).toBeGreaterThanOrEqual(6);
    // Every chart drew something: bars or lines.
    const emptyCharts = await page
      .locator('svg')
      .evaluateAll(
        (svgs) => svgs.filter((svg) => svg.querySelectorAll('rect, polyline').length === 0).length,
      );
    expect(emptyCharts).toBe(0);
    const box = await page.locator('svg').first().boundingBox();
    expect(box?.width ?? 0).toBeGreaterThan(100);
    expect(await page.locator('.event-label').first().textContent()).toContain('surge');
    // A map per policy: every region at its centre, every node, coloured.
    const maps = page.locator('figure.map');
    expect(await maps.count()).toBe(2);
    expect(await maps.first().locator('.region').count()).toBe(31);
    // China's outline (the mainland and Hainan) is drawn under them, across most of the map.
    const outline = maps.first().locator('path.outline');
    expect(await outline.count()).toBe(2);
    const mainland = await outline.first().boundingBox();
    expect(mainland?.width ?? 0).toBeGreaterThan(300);
    expect(await maps.first().locator('.node').count()).toBeGreaterThan(50);
    const mapBox = await maps.first().locator('svg').boundingBox();
    expect(mapBox?.width ?? 0).toBeGreaterThan(300);
    // Each node says how busy it was.
    const busiest = await maps.first().locator('.node title').allTextContents();
    expect(busiest.some((t) => /% busy/.test(t))).toBe(true);
    expect(consoleErrors).toEqual([]);
    expect(requests).toEqual([]);

    const artifacts = join('test-artifacts');
    await mkdir(artifacts, { recursive: true });
    await page.screenshot({ path: join(artifacts, 'report.png'), fullPage: true });
    await page.close();
  }, 120_000);

  it('shows how vehicles fared per request, sticky and with sessions, along their route', async () => {
    const scenario = await loadScenario('simulations/vehicle-corridor.yaml');
    const short = {
      ...scenario,
      duration: 30 * 60_000,
      warmup: 0,
      bucket: 5 * 60_000,
      demand: { ...scenario.demand, rate_per_s: 5 },
      policies: ['cheapest-feasible' as const],
      events: [],
    };
    const dir = await mkdtemp(join(tmpdir(), 'cpn-report-vehicles-'));
    await writeOutputs(dir, short, await simulate(short));
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    const consoleErrors: string[] = [];
    page.on('pageerror', (error) => consoleErrors.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(message.text());
    });
    await page.goto(pathToFileURL(join(dir, 'report.html')).href);
    const heading = page.locator('h2', { hasText: 'Vehicles' });
    expect(await heading.count()).toBe(1);
    // One row per way of serving them, and the two charts along the route, each with three lines.
    const rows = await page.locator('h2:has-text("Vehicles") + table tr').count();
    expect(rows).toBe(4);
    const routeCharts = page.locator('figure', { hasText: 'along the route' });
    expect(await routeCharts.count()).toBe(2);
    expect(await routeCharts.first().locator('polyline').count()).toBe(3);
    expect(await routeCharts.first().textContent()).toContain('km');
    expect(consoleErrors).toEqual([]);
    await mkdir('test-artifacts', { recursive: true });
    await heading.scrollIntoViewIfNeeded();
    await page.screenshot({ path: join('test-artifacts', 'report-vehicles.png'), fullPage: true });
    await page.close();
  }, 120_000);

  it('plan.html shows the plan, its cost against uniform, the targets and where the GPUs go', async () => {
    const outcome = await plan(await loadPlan('test/sim/plan/plan.yaml'));
    const dir = await mkdtemp(join(tmpdir(), 'cpn-plan-report-'));
    await writeFile(join(dir, 'plan.html'), renderPlanReport(outcome));
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    const consoleErrors: string[] = [];
    const requests: string[] = [];
    page.on('pageerror', (error) => consoleErrors.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(message.text());
    });
    page.on('request', (request) => {
      if (!request.url().startsWith('file:')) requests.push(request.url());
    });
    await page.goto(pathToFileURL(join(dir, 'plan.html')).href);
    // One row per site of the plan, under its header.
    const siteRows = await page.locator('h2:has-text("The plan") + table tr').count();
    expect(siteRows).toBe(1 + (outcome.plan?.sites.length ?? 0));
    expect(await page.locator('h2:has-text("Cost") + table').textContent()).toContain('uniform h100');
    // Maps: before, with the plan, and the cheapest uniform plan; the added GPUs drawn on the last two.
    const maps = page.locator('figure.map');
    expect(await maps.count()).toBe(3);
    expect(await maps.nth(0).locator('.site').count()).toBe(0);
    expect(await maps.nth(1).locator('.site').count()).toBe(1);
    expect(await maps.nth(1).locator('.site title').textContent()).toContain('h200');
    expect(await page.locator('h2:has-text("Runs tried") + table tr').count()).toBe(1 + outcome.runs.length);
    expect(consoleErrors).toEqual([]);
    expect(requests).toEqual([]);
    await mkdir('test-artifacts', { recursive: true });
    await page.screenshot({ path: join('test-artifacts', 'plan.png'), fullPage: true });
    await page.close();
  }, 120_000);
});
