// Starts a real etcd (Debian's etcd-server) on free loopback ports with a temporary data dir.
// Fails loudly, with the install command, when no etcd binary is found: etcd tests never skip.

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findBinary } from './binaries.js';

export interface EtcdServer {
  readonly endpoint: string;
  readonly dataDir: string;
  /** Stops etcd (SIGTERM), keeping the data dir. */
  stop(): Promise<void>;
  /** Starts etcd again on the same ports and data dir. */
  start(): Promise<void>;
  /** Freezes the etcd process (SIGSTOP): connections stay open, nothing is answered, no lease ticks. */
  pause(): void;
  /** Thaws it (SIGCONT). */
  resume(): void;
  /** Stops etcd and removes the data dir. */
  destroy(): Promise<void>;
}

export function etcdBinary(): string {
  return findBinary(
    'etcd tests need a real etcd binary',
    [process.env.CPN_ETCD_BIN, '/usr/bin/etcd', '/usr/local/bin/etcd'],
    'apt-get update && apt-get install -y etcd-server (or set CPN_ETCD_BIN)',
  );
}

/**
 * `count` distinct free loopback ports: every probe stays open until all are bound (ports probed
 * one after another can repeat once the first is closed).
 */
async function freePorts(count: number): Promise<number[]> {
  const servers = Array.from({ length: count }, () => createServer());
  // Every probe settles (bound or failed) before any closes, so none is left listening.
  const probes = await Promise.allSettled(
    servers.map(
      (server) =>
        new Promise<number>((resolve, reject) => {
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => {
            const address = server.address();
            resolve(typeof address === 'object' && address !== null ? address.port : 0);
          });
        }),
    ),
  );
  await Promise.all(
    servers.map(
      (server) =>
        new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve())),
    ),
  );
  return probes.map((probe) => {
    if (probe.status === 'rejected') throw probe.reason;
    return probe.value;
  });
}

/** Attempts at new ports when another process takes one between the probe and etcd's bind. */
const PORT_ATTEMPTS = 3;

export async function startEtcd(): Promise<EtcdServer> {
  const binary = etcdBinary();
  const dataDir = mkdtempSync(join(tmpdir(), 'cpn-etcd-'));
  let endpoint = '';
  let peer = '';
  let child: ChildProcess | undefined;
  let log = '';

  const start = () =>
    new Promise<void>((resolve, reject) => {
      log = '';
      const proc = spawn(
        binary,
        [
          '--name=cpn-test',
          `--data-dir=${dataDir}`,
          `--listen-client-urls=${endpoint}`,
          `--advertise-client-urls=${endpoint}`,
          `--listen-peer-urls=${peer}`,
          `--initial-advertise-peer-urls=${peer}`,
          `--initial-cluster=cpn-test=${peer}`,
          '--logger=zap',
          '--log-outputs=stderr',
          '--auto-compaction-retention=0',
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      child = proc;
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        reject(new Error(`etcd did not become ready in 20 s:\n${log.slice(-2000)}`));
      }, 20_000);
      proc.stderr?.on('data', (chunk: Buffer) => {
        log += chunk.toString();
        if (log.includes('serving client traffic')) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`etcd exited with ${code} before it was ready:\n${log.slice(-2000)}`));
      });
    });

  const stop = () =>
    new Promise<void>((resolve) => {
      const proc = child;
      child = undefined;
      if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) {
        resolve();
        return;
      }
      const kill = setTimeout(() => proc.kill('SIGKILL'), 5000);
      proc.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      proc.kill('SIGTERM');
    });

  for (let attempt = 1; ; attempt += 1) {
    const [clientPort, peerPort] = await freePorts(2);
    endpoint = `http://127.0.0.1:${clientPort}`;
    peer = `http://127.0.0.1:${peerPort}`;
    try {
      await start();
      break;
    } catch (error) {
      if (attempt >= PORT_ATTEMPTS || !log.includes('address already in use')) throw error;
    }
  }
  return {
    endpoint,
    dataDir,
    stop,
    start,
    pause: () => child?.kill('SIGSTOP'),
    resume: () => child?.kill('SIGCONT'),
    async destroy() {
      child?.kill('SIGCONT');
      await stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Resolves once `check()` holds, polling every `everyMs`; fails after `timeoutMs`. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  everyMs = 25,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}
