/** The logging port: the subset of pino the code uses. bin/ creates the real (pino) logger. */
export interface LogFn {
  (obj: object, msg?: string): void;
  (msg: string): void;
}
export interface Logger {
  level: string;
  fatal: LogFn;
  error: LogFn;
  warn: LogFn;
  info: LogFn;
  debug: LogFn;
  trace: LogFn;
  child(bindings: Record<string, unknown>): Logger;
}

const noop: LogFn = () => undefined;
/** A logger that writes nothing (tests that do not care about logs). */
export const silentLogger: Logger = {
  level: 'silent',
  fatal: noop,
  error: noop,
  warn: noop,
  info: noop,
  debug: noop,
  trace: noop,
  child: () => silentLogger,
};

/**
 * The ids of the work a line is written for, added to it as fields: an HTTP
 * request's `req_id` and caller (`user_id`, once the token is verified), a
 * WebSocket's connection (`conn`) and user. It travels with the work
 * (HttpRequest.logContext, a service's CallOptions, the bus's EventMeta)
 * instead of living in AsyncLocalStorage, whose promise hooks would cost
 * every promise of the send path.
 */
export type LogContext = {
  readonly req_id?: string;
  readonly conn?: number;
  readonly user_id?: string;
};

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
 * A logger whose every line carries a LogContext. The child logger is made on
 * the first line written at an enabled level: none for work that writes
 * nothing at the level (a child costs about as much as the rest of a
 * request's logging).
 */
export class ContextLogger implements Logger {
  private bound: Logger | null = null;

  constructor(
    private readonly base: Logger,
    private ctx: LogContext,
  ) {}

  get level(): string {
    return this.base.level;
  }

  /** The ids its lines carry now (hand them on to services and bus events). */
  get context(): LogContext {
    return this.ctx;
  }

  /** Lines written from now on also carry `user_id` (an HTTP request, once its token is verified). */
  setUser(userId: string): void {
    this.ctx = { ...this.ctx, user_id: userId };
    // a child made before (rare) lacks user_id
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
    if (min !== undefined && LEVEL_VALUES[level]! < min) return;
    const logger = this.logger();
    if (typeof a === 'string') logger[level](a);
    else logger[level](a, msg);
  }

  private logger(): Logger {
    this.bound ??= this.base.child(this.ctx);
    return this.bound;
  }
}

/** `logger`, its lines carrying `context` when there is one (work of a request or a socket). */
export function withContext(logger: Logger, context: LogContext | undefined): Logger {
  return context === undefined ? logger : new ContextLogger(logger, context);
}
