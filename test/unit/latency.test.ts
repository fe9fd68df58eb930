import { describe, expect, it } from 'vitest';
import {
  arcKm,
  DEFAULT_LATENCY_MODEL,
  estimateRtt,
  greatCircleKm,
  locatedRttMs,
  smoothSample,
  unitVector,
  unsampledRttMs,
} from '../../src/core/latency.js';
import type { Level } from '../../src/core/model.js';
import { spec } from '../helpers/fixtures.js';

const BEIJING = { lat: 39.904, lon: 116.407 };
const SHANGHAI = { lat: 31.23, lon: 121.474 };

describe('latency estimates', () => {
  it('great-circle distance Beijing–Shanghai is about 1067 km', () => {
    expect(greatCircleKm(BEIJING, SHANGHAI)).toBeGreaterThan(1060);
    expect(greatCircleKm(BEIJING, SHANGHAI)).toBeLessThan(1075);
    expect(greatCircleKm(BEIJING, BEIJING)).toBe(0);
  });

  it('coordinates: distance × 2 / fibre speed × stretch + level overhead + cross-region penalty', () => {
    const node = { ...spec({ id: 'n', level: 'EDGE', region: 'CN-SH' }), location: SHANGHAI };
    const client = { region: 'CN-BJ', accessPoint: '', location: BEIJING };
    const estimate = estimateRtt(client, node, DEFAULT_LATENCY_MODEL, () => undefined, 0);
    const km = greatCircleKm(BEIJING, SHANGHAI);
    expect(estimate.source).toBe('COORDINATES');
    expect(estimate.rttMs).toBeCloseTo(((km * 2) / 200) * 2 + 1 + 5, 9);
  });

  it('a located RTT from vectors, level and region is the coordinate RTT to the bit', () => {
    // The search works out a ranked node's RTT this way, without reading its record; the full
    // scan and every other caller by unsampledRttMs from the node's spec.
    const places = [
      BEIJING,
      SHANGHAI,
      { lat: 0.1, lon: 179.99 },
      { lat: -89.5, lon: -180 },
      { lat: 23, lon: 113 },
    ];
    const levels: Level[] = ['CENTER', 'PROVINCE', 'EDGE', 'TERMINAL'];
    let compared = 0;
    for (const [c, clientAt] of places.entries())
      for (const [n, nodeAt] of places.entries())
        for (const level of levels)
          for (const clientRegion of ['', 'R0', 'R1']) {
            const node = { level, region: `R${n % 2}`, location: nodeAt };
            const client = { region: clientRegion, location: clientAt };
            // The coordinate RTT as written before locatedRttMs existed (session 19): the arc over
            // the chord, twice, over the fibre speed, stretched, plus the level's overhead and the
            // cross-region penalty.
            const model = DEFAULT_LATENCY_MODEL;
            const km = arcKm(unitVector(clientAt), unitVector(nodeAt));
            const expected =
              ((km * 2) / model.fiberKmPerMs) * model.routeStretch +
              model.accessOverheadMs[level] +
              (clientRegion !== '' && clientRegion !== node.region ? model.crossRegionPenaltyMs : 0);
            const where = `client ${c} node ${n} ${level} '${clientRegion}'`;
            expect(Object.is(unsampledRttMs(client, node, model), expected), where).toBe(true);
            // From a group's level and region, as a search reads them, and the vectors it holds.
            const group = { level, region: node.region };
            const got = locatedRttMs(clientRegion, group, model, unitVector(clientAt), unitVector(nodeAt));
            expect(Object.is(got, expected), where).toBe(true);
            compared += 1;
          }
    expect(compared).toBe(places.length * places.length * levels.length * 3);
  });

  it('uses the region centroid when the client gives only its region', () => {
    const node = { ...spec({ id: 'n', level: 'PROVINCE', region: 'CN-BJ' }), location: BEIJING };
    const model = { ...DEFAULT_LATENCY_MODEL, regionCentroids: new Map([['CN-BJ', BEIJING]]) };
    const estimate = estimateRtt(
      { region: 'CN-BJ', accessPoint: '', location: undefined },
      node,
      model,
      () => undefined,
      0,
    );
    expect(estimate).toEqual({ rttMs: 3, source: 'COORDINATES' });
  });

  it('falls back to region defaults without coordinates', () => {
    const node = { ...spec({ id: 'n', level: 'CENTER', region: 'CN-GS' }), location: undefined };
    const client = { region: 'CN-GD', accessPoint: '', location: undefined };
    expect(estimateRtt(client, node, DEFAULT_LATENCY_MODEL, () => undefined, 0)).toEqual({
      rttMs: 45 + 6,
      source: 'REGION_DEFAULT',
    });
    const local = { region: 'CN-GS', accessPoint: '', location: undefined };
    expect(estimateRtt(local, node, DEFAULT_LATENCY_MODEL, () => undefined, 0)).toEqual({
      rttMs: 8 + 6,
      source: 'REGION_DEFAULT',
    });
  });

  it('smooths samples with an EWMA and restarts after they go stale', () => {
    const model = { sampleSmoothing: 0.5, sampleMaxAgeMs: 1000 };
    const first = smoothSample(undefined, 10, 0, model);
    const second = smoothSample(first, 20, 100, model);
    expect(second).toEqual({ rttMs: 15, updatedAtMs: 100, count: 2 });
    expect(smoothSample(second, 40, 5000, model)).toEqual({ rttMs: 40, updatedAtMs: 5000, count: 1 });
  });
});
