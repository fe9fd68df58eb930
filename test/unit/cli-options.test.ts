import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/main.js';
import { serveConfigSchema } from '../../src/cli/serve-settings.js';

describe('cpn serve settings', () => {
  const serve = buildProgram().commands.find((command) => command.name() === 'serve');
  const options = serve?.options ?? [];

  it('every flag has a CPN_* variable', () => {
    expect(options.length).toBeGreaterThan(15);
    expect(
      options.filter((option) => !option.envVar?.startsWith('CPN_')).map((option) => option.long),
    ).toEqual([]);
  });

  it('every flag but --config has a key in the --config file, and every key is a flag', () => {
    const keys = Object.keys(serveConfigSchema.shape).sort();
    const flags = options
      .map((option) => (option.long ?? '').replace(/^--/, '').replaceAll('-', '_'))
      .filter((flag) => flag !== 'config')
      .sort();
    expect(keys).toEqual(flags);
  });
});
