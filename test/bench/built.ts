// The benchmarks measure the built JavaScript, as `cpn serve` and `cpn simulate` run it (the
// scripts run `npm run build` first): through the TypeScript loader the same code is slower
// (its closures are wrapped to keep their names), and by a different amount for each side of a
// comparison.

/** The module at `path` under dist/ (e.g. 'core/cost.js'); type it as `typeof import('../../src/…')`. */
export function built(path: string): Promise<unknown> {
  return import(new URL(`../../dist/${path}`, import.meta.url).href);
}
