import type { Logger } from '../../kernel/logger.js';

type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

/** pino's level values, by the labels `Logger.level` holds. */
const LEVEL_VALUES: Readonly<Record<string, number>> = {
  trace: 10,
  debug: 20,
  info: 30,
  warn: 40,
  error: 50,
  fatal: 60,
  silent: Infinity,
};

/**
 * The logger of one request: every line carries `req_id`, and `user_id` once
 * the token is verified. The child logger is made on the first line written
 * at an enabled level, with both ids at once: one child per request that logs
 * (the access line at `info`), none below the level (a child costs about as
 * much as the rest of the request's logging).
 */
export class RequestLogger implements Logger {
  private bound: Logger | null = null;
  private userId: string | undefined;

  constructor(
    private readonly base: Logger,
    private readonly requestId: string,
  ) {}

  get level(): string {
    return this.base.level;
  }

  /** Lines written from now on carry `user_id`. */
  setUser(userId: string): void {
    this.userId = userId;
    // a child made before the token was verified (rare) lacks user_id
    this.bound = null;
  }

  fatal(a: object | string, msg?: string): void {
    this.write('fatal', a, msg);
  }
  error(a: object | string, msg?: string): void {
    this.write('error', a, msg);
  }
  warn(a: object | string, msg?: string): void {
    this.write('warn', a, msg);
  }
  info(a: object | string, msg?: string): void {
    this.write('info', a, msg);
  }
  debug(a: object | string, msg?: string): void {
    this.write('debug', a, msg);
  }
  trace(a: object | string, msg?: string): void {
    this.write('trace', a, msg);
  }

  child(bindings: Record<string, unknown>): Logger {
    return this.logger().child(bindings);
  }

  private write(level: Level, a: object | string, msg?: string): void {
    // an unknown (custom) level label: let the logger decide
    const min: number | undefined = LEVEL_VALUES[this.base.level];
    if (min !== undefined && LEVEL_VALUES[level] < min) return;
    const logger = this.logger();
    if (typeof a === 'string') logger[level](a);
    else logger[level](a, msg);
  }

  private logger(): Logger {
    this.bound ??= this.base.child(
      this.userId === undefined ? { req_id: this.requestId } : { req_id: this.requestId, user_id: this.userId },
    );
    return this.bound;
  }
}
