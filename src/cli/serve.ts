// `cpn serve`: the options come from the settings table; the work is the composition root's.

import { type Command, Command as CommandClass } from 'commander';
import { runControlPlane } from './control-plane-process.js';
import { resolveServeSettings, serveOptions, settingSources } from './serve-settings.js';

export function serveCommand(): Command {
  const command = new CommandClass('serve').description(
    'run the gRPC control plane (Registry, Scheduler, health, reflection)',
  );
  for (const option of serveOptions()) command.addOption(option);
  return command.action(async (_opts, self: Command) => {
    const settings = await resolveServeSettings(self);
    await runControlPlane(settings, settingSources(self));
  });
}
