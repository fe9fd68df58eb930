// The systemd unit and its environment file for `cpn agent`: every variable they set is one the
// agent reads, it runs `cpn agent`, stops with SIGTERM, and systemd waits longer than the agent's
// grace before killing it.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/main.js';

const unit = readFileSync('ops/systemd/cpn-agent.service', 'utf8');
const envFile = readFileSync('ops/systemd/cpn-agent.env', 'utf8');
const read = new Set(
  (buildProgram().commands.find((c) => c.name() === 'agent')?.options ?? []).map((o) => o.envVar),
);

describe('systemd unit for cpn agent', () => {
  it('sets only variables cpn agent reads (the unit and its environment file, commented-out ones too)', () => {
    const set = [
      ...[...unit.matchAll(/^Environment=(CPN_[A-Z_]+)=/gm)].map((m) => m[1]),
      ...[...envFile.matchAll(/^#?\s*(CPN_[A-Z_]+)=/gm)].map((m) => m[1]),
    ];
    expect(set.length).toBeGreaterThan(6);
    expect(set.filter((name) => !read.has(name))).toEqual([]);
  });

  it('runs cpn agent, stops it with SIGTERM and waits longer than its grace', () => {
    expect(unit).toMatch(/^ExecStart=.*\bcpn agent\b/m);
    expect(unit).toMatch(/^KillSignal=SIGTERM$/m);
    const stopS = Number(/^TimeoutStopSec=(\d+)$/m.exec(unit)?.[1]);
    const graceMs = Number(/^CPN_AGENT_GRACE_MS=(\d+)$/m.exec(envFile)?.[1]);
    expect(graceMs).toBeGreaterThan(0);
    // The agent gives up at grace + 15 s whatever happens: systemd must wait longer than that.
    expect(stopS * 1000).toBeGreaterThan(graceMs + 15_000);
    expect(unit).toMatch(/^User=cpn$/m);
  });
});
