import { hostname } from 'node:os';
import { pino } from 'pino';
import type { Logger } from '../kernel/logger.js';

/** The process logger: the kernel's Logger port plus a flush before exit. */
export interface ProcessLogger extends Logger {
  /** Writes out anything buffered, then calls back (logs are written asynchronously). */
  flush(cb?: (err?: Error) => void): void;
}

/**
 * Never logged in clear, whatever the level: message content and AI
 * request/response bodies are medical data; tokens and secrets are credentials.
 */
export const REDACTED_PATHS = [
  'msg_content',
  '*.msg_content',
  '*.*.msg_content',
  'request_content',
  'response_content',
  '*.request_content',
  '*.response_content',
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'jwtSecret',
  '*.jwtSecret',
  'apiKey',
  '*.apiKey',
  // NATS credentials (section nats / cluster; the client option is `pass`)
  'password',
  '*.password',
  'pass',
  '*.pass',
];

/**
 * JSON lines (pino) on stdout: `level` as a label, ISO `time`, `pid`,
 * `hostname`, then the fields of each call (plugin, req_id, user_id, ...).
 * The instance id is not a base field (units log `instance_id` themselves and
 * a line must not carry a key twice); `hostname` + `pid` identify the process.
 * Writes are asynchronous: call `flush` before exiting (bin/main.ts does).
 */
export function createLogger(level: string): ProcessLogger {
  return pino({
    level,
    base: { pid: process.pid, hostname: hostname() },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
  }) as unknown as ProcessLogger;
}
