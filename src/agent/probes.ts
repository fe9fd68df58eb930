// Measured latency from access points or regions to this node: TCP connect time to an address
// that stands for the place (`--probe CN-GD=10.1.2.3:443`), several samples, the median, reported
// through ReportLatency for this node. The control plane smooths and expires samples.

import { connect } from 'node:net';

export interface ProbeTarget {
  /** The access point or region the samples are from. */
  readonly from: string;
  readonly host: string;
  readonly port: number;
}

/** Parses `NAME=HOST:PORT` (an IPv6 host in brackets). */
export function parseProbe(value: string): ProbeTarget {
  const match = /^([A-Za-z0-9][A-Za-z0-9._:-]{0,127})=(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/.exec(
    value.trim(),
  );
  const port = Number(match?.[3]);
  if (match === null || !(port >= 1 && port <= 65535))
    throw new Error(
      `--probe must look like NAME=HOST:PORT (e.g. CN-GD=10.1.2.3:443), got "${value.slice(0, 80)}"`,
    );
  return { from: match[1] as string, host: (match[2] as string).replace(/^\[|\]$/g, ''), port };
}

/** One TCP connect time in ms, or undefined if it failed or took longer than `timeoutMs`. */
export function connectTime(target: ProbeTarget, timeoutMs: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const started = performance.now();
    const socket = connect({ host: target.host, port: target.port });
    const done = (rtt: number | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(rtt);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    socket.once('connect', () => done(performance.now() - started));
    socket.once('error', () => done(undefined));
  });
}

/** The median of `samples` connect times (failed ones left out); undefined if all failed. */
export async function measure(
  target: ProbeTarget,
  samples: number,
  timeoutMs: number,
): Promise<number | undefined> {
  const times: number[] = [];
  for (let i = 0; i < samples; i += 1) {
    const rtt = await connectTime(target, timeoutMs);
    if (rtt !== undefined) times.push(rtt);
  }
  if (times.length === 0) return undefined;
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}
