// Structured logs: pino, JSON lines on stderr (stdout stays for what a person asked to see).
// One line per notable event; per-request lines only at debug.

import { writeSync } from 'node:fs';
import pino from 'pino';
import type { Logger } from '../common/logger.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

export type { Logger } from '../common/logger.js';

export type LogFormat = 'json' | 'pretty';

/** One readable line per record: `12:00:01 INFO  node registered node=edge-1 level=EDGE`. */
function prettyLine(line: string): string {
  const { time, level, msg, service: _service, ...fields } = JSON.parse(line) as Record<string, unknown>;
  const clock = typeof time === 'string' ? time.slice(11, 19) : '';
  const rest = Object.entries(fields)
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
    .join(' ');
  return `${clock} ${String(level).toUpperCase().padEnd(5)} ${String(msg)}${rest ? ` ${rest}` : ''}\n`;
}

/**
 * A pino logger behind the Logger interface, writing to file descriptor `destination` (2 = stderr):
 * JSON lines by default, or readable lines with format 'pretty'.
 */
export function createLogger(level: LogLevel, destination = 2, format: LogFormat = 'json'): Logger {
  const sink =
    format === 'json'
      ? pino.destination({ fd: destination, sync: true })
      : {
          write(line: string) {
            writeSync(destination, prettyLine(line));
          },
        };
  const log = pino(
    {
      level,
      base: { service: 'cpn' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      // Never print credentials, whatever a caller passes in.
      redact: { paths: ['password', '*.password', 'key', '*.key', 'token', '*.token'], censor: '[redacted]' },
    },
    sink,
  );
  return {
    debug: (message, fields = {}) => log.debug(fields, message),
    info: (message, fields = {}) => log.info(fields, message),
    warn: (message, fields = {}) => log.warn(fields, message),
    error: (message, fields = {}) => log.error(fields, message),
  };
}

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};
