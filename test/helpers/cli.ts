// Runs the built `cpn` command (bin/cpn.js → dist/) as a child process.

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CPN_BIN = join(import.meta.dirname, '../../bin/cpn.js');

/** A new temporary directory for one test. */
export function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'cpn-test-'));
}

/** Writes `text` to a file `name` in a new temporary directory; returns its path. */
export async function tempFile(name: string, text: string): Promise<string> {
  const file = join(await tempDir(), name);
  await writeFile(file, text);
  return file;
}

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** The operator key `startServe` installs, and `runCli` sends unless `env` says otherwise. */
export const CLI_OPERATOR_KEY = 'cli-test-operator-key-0123456789abcdef01234';

export function runCli(
  args: readonly string[],
  timeoutMs = 20_000,
  env: Record<string, string | undefined> = {},
): Promise<CliResult> {
  const childEnv: Record<string, string | undefined> = {
    ...process.env,
    CPN_API_KEY: CLI_OPERATOR_KEY,
    ...env,
  };
  for (const [name, value] of Object.entries(childEnv)) if (value === undefined) delete childEnv[name];
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CPN_BIN, ...args],
      { timeout: timeoutMs, env: childEnv, maxBuffer: 256 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

export interface ServeProcess {
  readonly child: ChildProcess;
  readonly address: string;
  /** Base URL of /metrics, /healthz, /readyz. */
  metricsUrl(): string;
  stdout(): string;
  stderr(): string;
  /** Sends `signal` (unless it has exited) and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Resolves with the exit code once the process has exited, without signalling it. */
  exited(): Promise<number | null>;
}

/**
 * Starts `cpn serve` with `args` on a free port; resolves once it prints where it listens.
 * `onStderr` sees its standard error as it comes (e.g. to act on a log line before it listens).
 */
export function startServe(
  args: readonly string[],
  timeoutMs = 20_000,
  env: Record<string, string> = {},
  onStderr?: (chunk: string) => void,
): Promise<ServeProcess> {
  const child = spawn(
    process.execPath,
    [
      CPN_BIN,
      'serve',
      '--port',
      '0',
      '--metrics-port',
      '0',
      '--gateway-port',
      '0',
      '--log-level',
      'warn',
      ...args,
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, CPN_BOOTSTRAP_OPERATOR_KEY: CLI_OPERATOR_KEY, ...env },
    },
  );
  let out = '';
  let err = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`cpn serve did not start in ${timeoutMs} ms; stderr: ${err}`));
    }, timeoutMs);
    child.stderr?.on('data', (chunk: Buffer) => {
      err += chunk.toString();
      onStderr?.(chunk.toString());
    });
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /listening on (\S+)/.exec(out);
      if (match?.[1]) {
        clearTimeout(timer);
        resolve({
          child,
          address: match[1],
          metricsUrl: () => /Metrics and probes: (http:\/\/\S+?)\/metrics/.exec(out)?.[1] ?? '',
          stdout: () => out,
          stderr: () => err,
          exited: () => exited,
          stop: (signal = 'SIGTERM') => {
            if (child.exitCode === null && child.signalCode === null) child.kill(signal);
            return exited;
          },
        });
      }
    });
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`cpn serve exited with ${code} before listening; stderr: ${err}`));
    });
  });
}
