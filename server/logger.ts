// One structured logger for the process. JSON lines on stdout, so a log shipper can parse every
// line; the level comes from the configuration.
import { pino, type Logger } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

export function createLogger(level: LogLevel): Logger {
  return pino({
    level,
    base: { service: 'acm-serve' },
    // Error objects under `err` keep their stack; anything else under it is logged as given.
    serializers: { err: pino.stdSerializers.err },
  });
}
