// The benchmarks measure the built JavaScript, as `cpn serve` and `cpn simulate` run it (the
// scripts run `npm run build` first): through the TypeScript loader the same code is slower
// (its closures are wrapped to keep their names), and by a different amount for each side of a
// comparison.

/** The module at `path` under dist/ (e.g. 'core/cost.js'); type it as `typeof import('../../src/…')`. */
export function built(path: string): Promise<unknown> {
  return import(new URL(`../../dist/${path}`, import.meta.url).href);
}

/**
 * Stack traces formatted as `cpn` (bin/cpn.js, plain Node) formats them: without source maps.
 * tsx turns them on, and a grpc-js client formats a stack for every call that fails: through the
 * source maps that cost the load generator about 100-160 µs of CPU per refused Route, which
 * shared cores then take from the server under test (measured with `--cpu-prof` on the client).
 */
export function stacksAsInProduction(): void {
  process.setSourceMapsEnabled(false);
}
