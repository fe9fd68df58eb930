// Network round-trip estimates between a client position and a node.
// Sources, best first: measured samples, coordinates, configured region defaults.

import type { LatLon, Level, NodeSpec } from './model.js';

export type LatencySource = 'MEASURED' | 'COORDINATES' | 'REGION_DEFAULT';

export interface ClientPosition {
  readonly region: string;
  readonly accessPoint: string;
  readonly location: LatLon | undefined;
}

export interface RttEstimate {
  readonly rttMs: number;
  readonly source: LatencySource;
}

/** A smoothed measurement of the RTT from an access point or region to a node. */
export interface LatencySample {
  readonly rttMs: number;
  readonly updatedAtMs: number;
  readonly count: number;
}

export interface LatencyModel {
  /** Light in fibre covers about 200 km per millisecond. */
  readonly fiberKmPerMs: number;
  /** Real routes are longer than great circles; multiplies the distance term. */
  readonly routeStretch: number;
  /** Added per node level: the last hops from the backbone into the site. */
  readonly accessOverheadMs: Readonly<Record<Level, number>>;
  /** Added when client and node are in different regions (inter-provincial backbone hops). */
  readonly crossRegionPenaltyMs: number;
  /** Used when neither samples nor coordinates are available. */
  readonly sameRegionRttMs: number;
  readonly crossRegionRttMs: number;
  /** Where a client is when it names only its region. */
  readonly regionCentroids: ReadonlyMap<string, LatLon>;
  /** Samples older than this are ignored. */
  readonly sampleMaxAgeMs: number;
  /** Weight of a new sample in the exponentially weighted moving average (0..1]. */
  readonly sampleSmoothing: number;
}

export const DEFAULT_LATENCY_MODEL: LatencyModel = {
  fiberKmPerMs: 200,
  routeStretch: 2,
  accessOverheadMs: { CENTER: 6, PROVINCE: 3, EDGE: 1, TERMINAL: 0.5 },
  crossRegionPenaltyMs: 5,
  sameRegionRttMs: 8,
  crossRegionRttMs: 45,
  regionCentroids: new Map(),
  sampleMaxAgeMs: 5 * 60 * 1000,
  sampleSmoothing: 0.3,
};

export const EARTH_RADIUS_KM = 6371.0088;

/** A point on the unit sphere (see unitVector). */
export interface Vec3 {
  readonly x: number;
  readonly y: number;
  readonly z: number;
}

export function unitVector(location: LatLon): Vec3 {
  const rad = Math.PI / 180;
  const lat = location.lat * rad;
  const lon = location.lon * rad;
  return { x: Math.cos(lat) * Math.cos(lon), y: Math.cos(lat) * Math.sin(lon), z: Math.sin(lat) };
}

/**
 * The great-circle distance between two points given by their unit vectors, in km: the arc over
 * their chord. The distance coordinate RTTs are worked out from (see unsampledRttMs): a search
 * that holds the vectors already pays one arc sine for it, not the haversine's five trigonometric
 * functions.
 */
export function arcKm(a: Vec3, b: Vec3): number {
  return arcKmTo(a, b.x, b.y, b.z);
}

/** arcKm to the point of unit vector (x, y, z). */
function arcKmTo(a: Vec3, x: number, y: number, z: number): number {
  const dx = a.x - x;
  const dy = a.y - y;
  const dz = a.z - z;
  return 2 * EARTH_RADIUS_KM * Math.asin(Math.min(1, Math.sqrt(dx * dx + dy * dy + dz * dz) / 2));
}

/**
 * Unit vectors of long-lived locations (a node's, a region's centroid), once per location object.
 * The object must not change in place.
 */
const locationVectors = new WeakMap<LatLon, Vec3>();

/** unitVector of `location`, worked out once per location object (see locationVectors). */
export function locationVector(location: LatLon): Vec3 {
  let vector = locationVectors.get(location);
  if (vector === undefined) {
    vector = unitVector(location);
    locationVectors.set(location, vector);
  }
  return vector;
}

export function greatCircleKm(a: LatLon, b: LatLon): number {
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_KM * Math.asin(Math.min(1, Math.sqrt(h)));
}

/** Folds a new measurement into the previous sample (EWMA). */
export function smoothSample(
  previous: LatencySample | undefined,
  rttMs: number,
  nowMs: number,
  model: Pick<LatencyModel, 'sampleSmoothing' | 'sampleMaxAgeMs'>,
): LatencySample {
  if (previous === undefined || nowMs - previous.updatedAtMs > model.sampleMaxAgeMs) {
    return { rttMs, updatedAtMs: nowMs, count: 1 };
  }
  const alpha = model.sampleSmoothing;
  return {
    rttMs: alpha * rttMs + (1 - alpha) * previous.rttMs,
    updatedAtMs: nowMs,
    count: previous.count + 1,
  };
}

/** Smoothed samples measured from an access point or region, by node id. */
export type SamplesFrom = (from: string) => ReadonlyMap<string, LatencySample> | undefined;

/** What estimateRtt needs about a client, looked up once per request rather than once per node. */
export interface PreparedClient {
  readonly region: string;
  readonly location: LatLon | undefined;
  /** Sample maps to try in order: from the access point, then from the region. */
  readonly sampleMaps: readonly ReadonlyMap<string, LatencySample>[];
}

/**
 * `location` when a distance can be worked out from it (both coordinates finite numbers), else
 * undefined: a place whose coordinates are not numbers counts as no place, for the estimate and
 * for the index alike. The API refuses such coordinates; a programmatic caller may not.
 */
export function coordinatesOf(location: LatLon | undefined): LatLon | undefined {
  return location !== undefined && Number.isFinite(location.lat) && Number.isFinite(location.lon)
    ? location
    : undefined;
}

/** Where the client is on the map: its own coordinates, else its region's centroid. */
export function clientLocation(client: ClientPosition, model: LatencyModel): LatLon | undefined {
  return coordinatesOf(client.location) ?? coordinatesOf(model.regionCentroids.get(client.region));
}

export function prepareClient(
  client: ClientPosition,
  model: LatencyModel,
  samplesFrom: SamplesFrom,
): PreparedClient {
  const sampleMaps: ReadonlyMap<string, LatencySample>[] = [];
  // The access point first, then the region (see freshSample).
  const fromAccessPoint = client.accessPoint === '' ? undefined : samplesFrom(client.accessPoint);
  if (fromAccessPoint !== undefined) sampleMaps.push(fromAccessPoint);
  const fromRegion = client.region === '' ? undefined : samplesFrom(client.region);
  if (fromRegion !== undefined) sampleMaps.push(fromRegion);
  return { region: client.region, location: clientLocation(client, model), sampleMaps };
}

/**
 * Estimates the RTT from a client to `node`. A fresh measured sample from the access point wins,
 * then one from the region; then coordinates (client location or region centroid, and the node's
 * location); then the region default.
 */
export function estimateRttFor(
  client: PreparedClient,
  node: NodeSpec,
  model: LatencyModel,
  nowMs: number,
): RttEstimate {
  const sample = freshSample(client, node.id, model, nowMs);
  if (sample !== undefined) return { rttMs: sample.rttMs, source: 'MEASURED' };
  return unsampledRtt(client, node, model);
}

/** Whether a measured sample is young enough to use at `nowMs`. */
export function isFresh(
  sample: LatencySample,
  model: Pick<LatencyModel, 'sampleMaxAgeMs'>,
  nowMs: number,
): boolean {
  return nowMs - sample.updatedAtMs <= model.sampleMaxAgeMs;
}

/** The sample estimateRttFor uses for `nodeId`: from the access point first, then the region. */
export function freshSample(
  client: PreparedClient,
  nodeId: string,
  model: Pick<LatencyModel, 'sampleMaxAgeMs'>,
  nowMs: number,
): LatencySample | undefined {
  for (const samples of client.sampleMaps) {
    const sample = samples.get(nodeId);
    if (sample !== undefined && isFresh(sample, model, nowMs)) return sample;
  }
  return undefined;
}

/** The RTT when no fresh measured sample applies: by coordinates, else the region default. */
export function unsampledRtt(
  client: Pick<PreparedClient, 'region' | 'location'>,
  node: Pick<NodeSpec, 'level' | 'region' | 'location'>,
  model: LatencyModel,
): RttEstimate {
  return { rttMs: unsampledRttMs(client, node, model), source: unsampledSource(client, node) };
}

/**
 * unsampledRtt's RTT alone (a search reads it for many nodes and builds no record for most).
 * `clientVector` and `nodeVector`, when given, must be unitVector of the client's and the node's
 * locations (a caller that holds them spares working them out).
 */
export function unsampledRttMs(
  client: Pick<PreparedClient, 'region' | 'location'>,
  node: Pick<NodeSpec, 'level' | 'region' | 'location'>,
  model: LatencyModel,
  clientVector?: Vec3,
  nodeVector?: Vec3,
): number {
  const clientAt = coordinatesOf(client.location);
  const nodeAt = coordinatesOf(node.location);
  if (clientAt !== undefined && nodeAt !== undefined)
    return locatedRttMs(
      client.region,
      node,
      model,
      clientVector ?? unitVector(clientAt),
      nodeVector ?? locationVector(nodeAt),
    );
  const baseMs = client.region === node.region ? model.sameRegionRttMs : model.crossRegionRttMs;
  return baseMs + model.accessOverheadMs[node.level];
}

/**
 * unsampledRttMs of a client and a node that both have coordinates, from their unit vectors and
 * the node's level and region alone: a search that holds them (the index keeps each node's vector,
 * level and region) works out a node's RTT without reading the node's record or location.
 */
export function locatedRttMs(
  clientRegion: string,
  node: { readonly level: Level; readonly region: string },
  model: LatencyModel,
  clientVector: Vec3,
  nodeVector: Vec3,
): number {
  return locatedRttMsAt(clientRegion, node, model, clientVector, nodeVector.x, nodeVector.y, nodeVector.z);
}

/** locatedRttMs with the node's unit vector as three numbers (as the index keeps it: see F). */
export function locatedRttMsAt(
  clientRegion: string,
  node: { readonly level: Level; readonly region: string },
  model: LatencyModel,
  clientVector: Vec3,
  x: number,
  y: number,
  z: number,
): number {
  const distanceMs = ((arcKmTo(clientVector, x, y, z) * 2) / model.fiberKmPerMs) * model.routeStretch;
  const crossRegionMs = clientRegion !== '' && clientRegion !== node.region ? model.crossRegionPenaltyMs : 0;
  return distanceMs + model.accessOverheadMs[node.level] + crossRegionMs;
}

/** Where unsampledRtt's RTT comes from. */
export function unsampledSource(
  client: Pick<PreparedClient, 'location'>,
  node: Pick<NodeSpec, 'location'>,
): LatencySource {
  return coordinatesOf(client.location) !== undefined && coordinatesOf(node.location) !== undefined
    ? 'COORDINATES'
    : 'REGION_DEFAULT';
}

/** One-off form of estimateRttFor. */
export function estimateRtt(
  client: ClientPosition,
  node: NodeSpec,
  model: LatencyModel,
  samplesFrom: SamplesFrom,
  nowMs: number,
): RttEstimate {
  return estimateRttFor(prepareClient(client, model, samplesFrom), node, model, nowMs);
}
