// The `cpn` command line. Each command group lives in its own file; this one assembles them and
// turns failures into exit codes (0 done, 1 failed, 2 bad usage or configuration).

import { Command, CommanderError } from 'commander';
import { ConfigError } from '../ops/yaml-config.js';
import { keysCommand, tenantsCommand } from './accounts.js';
import { agentCommand } from './agent.js';
import { gatewayCommand } from './gateway.js';
import { drainCommand, nodesCommand, statusCommand } from './nodes.js';
import { planCommand } from './plan.js';
import { pricingCommand } from './pricing.js';
import { replayCommand } from './replay.js';
import { releaseCommand, routeCommand } from './route.js';
import { CliError } from './rpc.js';
import { serveCommand } from './serve.js';
import { sessionCommand } from './session.js';
import { simulateCommand } from './simulate.js';
import { billCommand, packagesCommand, usageCommand } from './usage.js';

export function buildProgram(): Command {
  const program = new Command('cpn')
    .description(
      'Computing-power network scheduler: routes each inference request to the cheapest node that meets its latency budget.',
    )
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  for (const command of [
    serveCommand(),
    gatewayCommand(),
    agentCommand(),
    routeCommand(),
    releaseCommand(),
    sessionCommand(),
    nodesCommand(),
    statusCommand(),
    pricingCommand(),
    simulateCommand(),
    replayCommand(),
    planCommand(),
    drainCommand(),
    tenantsCommand(),
    keysCommand(),
    packagesCommand(),
    usageCommand(),
    billCommand(),
  ]) {
    inherit(command, program);
    program.addCommand(command);
  }
  return program;
}

/** Commands built on their own do not inherit exitOverride and help settings: copy them down. */
function inherit(command: Command, parent: Command): void {
  command.copyInheritedSettings(parent);
  for (const sub of command.commands) inherit(sub, command);
}

export async function main(argv: readonly string[]): Promise<number> {
  // `cpn nodes | head` closes the pipe early: that is not an error.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    throw error;
  });
  try {
    await buildProgram().parseAsync(argv as string[], { from: 'user' });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      return error.code === 'commander.helpDisplayed' ||
        error.code === 'commander.version' ||
        error.exitCode === 0
        ? 0
        : 2;
    }
    if (error instanceof CliError) {
      process.stderr.write(`cpn: ${error.message}\n`);
      return error.exitCode;
    }
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      return 2;
    }
    process.stderr.write(`cpn: ${(error as Error).message ?? String(error)}\n`);
    return 1;
  }
}
