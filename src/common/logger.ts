// The logging interface every layer may be handed (ops/log.ts implements it with pino). It lives
// below store and ops so that neither imports the other for it.

export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}
