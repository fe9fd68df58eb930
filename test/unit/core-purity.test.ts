// The core must stay pure (DESIGN.md §1): no I/O imports, no clock, no global randomness.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const coreDir = join(import.meta.dirname, '../../src/core');
// Every .ts file under src/core, subfolders included (routing/).
const sources = (readdirSync(coreDir, { recursive: true }) as string[]).filter((file) =>
  file.endsWith('.ts'),
);

describe('src/core purity', () => {
  it('has source files to check', () => {
    expect(sources.length).toBeGreaterThan(3);
  });
  for (const file of sources) {
    it(`${file} imports only other core modules and reads no clock or global RNG`, () => {
      const text = readFileSync(join(coreDir, file), 'utf8');
      const imports = [...text.matchAll(/from\s+'([^']+)'/g)].map((match) => match[1]);
      for (const source of imports)
        expect(source, `${file} imports ${source}`).toMatch(/^\.\.?\/(?:[a-z-]+\/)?[a-z-]+\.js$/);
      expect(text).not.toMatch(
        /Date\.now|new Date\(|Math\.random|performance\.now|process\.|setTimeout|setInterval/,
      );
    });
  }
});
