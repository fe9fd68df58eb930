// Seeded pseudo-random numbers for the simulator and any randomised policy. The core never uses the
// global generator: whoever needs randomness passes an Rng, so every run replays from its seed.

export interface Rng {
  /** Uniform in [0, 1). */
  next(): number;
}

/** sfc32 seeded through splitmix32: small, fast, and good enough for simulation. */
export function seededRng(seed: number): Rng {
  let state = seed >>> 0;
  const splitmix = () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = splitmix();
  let b = splitmix();
  let c = splitmix();
  let d = splitmix();
  return {
    next() {
      const t = (((a + b) >>> 0) + d) >>> 0;
      d = (d + 1) >>> 0;
      a = b ^ (b >>> 9);
      b = (c + (c << 3)) >>> 0;
      c = ((c << 21) | (c >>> 11)) >>> 0;
      c = (c + t) >>> 0;
      return t / 4294967296;
    },
  };
}

/** Derives an independent stream from a seed and a label (e.g. one per policy or purpose). */
export function deriveSeed(seed: number, label: string): number {
  let hash = seed >>> 0;
  for (let i = 0; i < label.length; i += 1) {
    hash = Math.imul(hash ^ label.charCodeAt(i), 0x01000193) >>> 0;
  }
  return hash;
}

export function exponential(rng: Rng, ratePerMs: number): number {
  return -Math.log(1 - rng.next()) / ratePerMs;
}

export function standardNormal(rng: Rng): number {
  // Box–Muller; 1 - u keeps the logarithm finite.
  const u = 1 - rng.next();
  const v = rng.next();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** Lognormal parameters (μ, σ) with the given mean and 95th percentile (p95 ≥ mean). */
export function lognormalFromMeanP95(mean: number, p95: number): { mu: number; sigma: number } {
  // mean = exp(μ + σ²/2), p95 = exp(μ + 1.6449σ)  ⇒  σ²/2 − 1.6449σ + ln(p95/mean) = 0.
  const z = 1.6448536269514722;
  const ratio = Math.log(p95 / mean);
  const discriminant = z * z - 2 * ratio;
  const sigma = discriminant <= 0 ? z : z - Math.sqrt(discriminant);
  return { mu: Math.log(mean) - (sigma * sigma) / 2, sigma: Math.max(0, sigma) };
}

export function lognormal(rng: Rng, mu: number, sigma: number): number {
  return Math.exp(mu + sigma * standardNormal(rng));
}
