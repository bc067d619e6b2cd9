import type { Logger } from '../../kernel/logger.js';

/** One recorded log line: its level, bindings and fields flattened, and the message. */
export interface LogLine {
  level: string;
  msg?: string;
  [field: string]: unknown;
}

/** A logger that records every line with its bindings (to assert on what is, and is never, logged). */
export function recordingLogger(lines: LogLine[], bindings: Record<string, unknown> = {}): Logger {
  const at =
    (level: string) =>
    (a: object | string, b?: string): void => {
      lines.push(typeof a === 'string' ? { level, ...bindings, msg: a } : { level, ...bindings, ...a, msg: b });
    };
  return {
    level: 'trace',
    fatal: at('fatal'),
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    trace: at('trace'),
    child: (b) => recordingLogger(lines, { ...bindings, ...b }),
  };
}
