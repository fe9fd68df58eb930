import { describe, expect, it } from 'vitest';
import { agentConfigSchema } from '../../src/cli/agent.js';
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

describe('cpn agent settings', () => {
  const agent = buildProgram().commands.find((command) => command.name() === 'agent');
  const options = agent?.options ?? [];

  it('every flag has a CPN_AGENT_* variable', () => {
    expect(options.length).toBeGreaterThan(12);
    expect(
      options.filter((option) => !option.envVar?.startsWith('CPN_AGENT_')).map((option) => option.long),
    ).toEqual([]);
  });

  it('every flag but --config and --api-key has a key in the --config file, and every key is a flag', () => {
    const keys = Object.keys(agentConfigSchema.shape).sort();
    const flags = options
      .map((option) => (option.long ?? '').replace(/^--/, '').replaceAll('-', '_'))
      .filter((flag) => flag !== 'config' && flag !== 'api_key')
      .sort();
    expect(keys).toEqual(flags);
  });

  it('a repeated --probe adds to the list', () => {
    const parsed = buildProgram().commands.find((command) => command.name() === 'agent');
    parsed?.action(() => undefined);
    parsed?.parse(['--probe', 'a=1.2.3.4:1', '--probe', 'b=1.2.3.4:2,c=1.2.3.4:3'], { from: 'user' });
    expect(parsed?.getOptionValue('probe')).toBe('a=1.2.3.4:1,b=1.2.3.4:2,c=1.2.3.4:3');
  });
});
