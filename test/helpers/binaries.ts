// Finds a system binary the tests need, or fails loudly with how to install it: never skips.

import { execFileSync } from 'node:child_process';

export function findBinary(
  what: string,
  candidates: readonly (string | undefined)[],
  install: string,
): string {
  for (const candidate of candidates.filter((c): c is string => Boolean(c))) {
    try {
      execFileSync(candidate, ['--version'], { stdio: 'ignore' });
      return candidate;
    } catch {
      // try the next one
    }
  }
  throw new Error(`${what} and none was found. Install it with: ${install}`);
}
