// Structured logs: pino, JSON lines on stderr (stdout stays for what a person asked to see).
// One line per notable event; per-request lines only at debug.

import pino from 'pino';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

/** A pino logger behind the Logger interface; `destination` is a file descriptor (2 = stderr). */
export function createLogger(level: LogLevel, destination = 2): Logger {
  const log = pino(
    {
      level,
      base: { service: 'cpn' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      // Never print credentials, whatever a caller passes in.
      redact: { paths: ['password', '*.password', 'key', '*.key', 'token', '*.token'], censor: '[redacted]' },
    },
    pino.destination({ fd: destination, sync: true }),
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
