import { pino } from 'pino';
import type { Logger } from '../kernel/logger.js';

/** JSON logs (pino) to stdout. Message content is never logged at info level (medical data). */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: { paths: ['msg_content', '*.msg_content', 'req.headers.authorization', 'token'], censor: '[redacted]' },
  }) as unknown as Logger;
}
