// A coarse spatial index: items bucketed into 1° × 1° latitude/longitude cells, so that a search
// around a point visits only the cells that can hold items within a radius. Items without a
// location live in a separate list that every search returns.

import type { LatLon } from './model.js';

const KM_PER_DEGREE_LAT = 111.0; // slightly under the true 111.2: spans come out a little wide
const cellOf = (lat: number, lon: number): number => (Math.floor(lat) + 90) * 360 + (Math.floor(lon) + 180);

export class GeoGrid<T> {
  private readonly cells = new Map<number, Map<string, T>>();
  private readonly unlocated = new Map<string, T>();
  private readonly where = new Map<string, number | undefined>();

  set(id: string, location: LatLon | undefined, item: T): void {
    this.delete(id);
    if (location === undefined) {
      this.unlocated.set(id, item);
      this.where.set(id, undefined);
      return;
    }
    const cell = cellOf(location.lat, location.lon);
    let bucket = this.cells.get(cell);
    if (bucket === undefined) {
      bucket = new Map();
      this.cells.set(cell, bucket);
    }
    bucket.set(id, item);
    this.where.set(id, cell);
  }

  delete(id: string): void {
    if (!this.where.has(id)) return;
    const cell = this.where.get(id);
    this.where.delete(id);
    if (cell === undefined) {
      this.unlocated.delete(id);
      return;
    }
    const bucket = this.cells.get(cell);
    bucket?.delete(id);
    if (bucket?.size === 0) this.cells.delete(cell);
  }

  /**
   * Every item that may lie within `radiusKm` of `center` (great-circle), plus every unlocated
   * item; may return some farther ones. Returns undefined when the box would cover everything,
   * so the caller scans all items instead.
   */
  near(center: LatLon, radiusKm: number): T[] | undefined {
    const latSpan = radiusKm / KM_PER_DEGREE_LAT;
    const maxAbsLat = Math.min(90, Math.abs(center.lat) + latSpan);
    if (maxAbsLat >= 89 || latSpan >= 45) return undefined;
    const lonSpan = (latSpan / Math.cos((maxAbsLat * Math.PI) / 180)) * 1.01;
    if (lonSpan >= 180) return undefined;
    const found: T[] = [...this.unlocated.values()];
    const latFrom = Math.floor(center.lat - latSpan);
    const latTo = Math.floor(center.lat + latSpan);
    const lonFrom = Math.floor(center.lon - lonSpan);
    const lonTo = Math.floor(center.lon + lonSpan);
    for (let lat = latFrom; lat <= latTo; lat += 1) {
      for (let lon = lonFrom; lon <= lonTo; lon += 1) {
        const wrapped = ((((lon + 180) % 360) + 360) % 360) - 180;
        const bucket = this.cells.get(cellOf(lat, wrapped));
        if (bucket !== undefined) for (const item of bucket.values()) found.push(item);
      }
    }
    return found;
  }

  /** Whether `id` is in a cell that near(center, radiusKm) visits (or unlocated). */
  covers(id: string, center: LatLon, radiusKm: number): boolean {
    if (!this.where.has(id)) return false;
    const cell = this.where.get(id);
    if (cell === undefined) return true;
    const latSpan = radiusKm / KM_PER_DEGREE_LAT;
    const maxAbsLat = Math.min(90, Math.abs(center.lat) + latSpan);
    const lonSpan = (latSpan / Math.cos((maxAbsLat * Math.PI) / 180)) * 1.01;
    const lat = Math.floor(cell / 360) - 90;
    const lon = (cell % 360) - 180;
    if (lat < Math.floor(center.lat - latSpan) || lat > Math.floor(center.lat + latSpan)) return false;
    for (let l = Math.floor(center.lon - lonSpan); l <= Math.floor(center.lon + lonSpan); l += 1) {
      if (((((l + 180) % 360) + 360) % 360) - 180 === lon) return true;
    }
    return false;
  }
}
