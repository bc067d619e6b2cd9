/**
 * Typed errors. Every domain error maps one-to-one onto an error code of
 * API.md §1; only transports turn them into a wire format.
 */
export type ErrorCode =
  | 'VALIDATION_FAILED'
  | 'INVALID_JSON'
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  | 'NOT_FOUND'
  | 'CONFLICT'
  | 'PAYLOAD_TOO_LARGE'
  | 'RATE_LIMITED'
  | 'UNAVAILABLE'
  | 'INTERNAL';

export const HTTP_STATUS: Readonly<Record<ErrorCode, number>> = {
  VALIDATION_FAILED: 400,
  INVALID_JSON: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  RATE_LIMITED: 429,
  UNAVAILABLE: 503,
  INTERNAL: 500,
};

export interface ErrorDetail {
  path: string;
  message: string;
}

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetail[];
  /** True when the same operation may succeed if tried again later. */
  readonly retryable: boolean;
  constructor(code: ErrorCode, message: string, opts: { details?: ErrorDetail[]; retryable?: boolean; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = opts.details ?? [];
    this.retryable = opts.retryable ?? false;
  }
  get status(): number {
    return HTTP_STATUS[this.code];
  }
  /** The body of API.md §1; never contains a stack trace or SQL. */
  toJSON(): { error: { code: ErrorCode; message: string; details: ErrorDetail[] } } {
    return { error: { code: this.code, message: this.message, details: this.details } };
  }
}

export class ValidationError extends AppError {
  constructor(message: string, details: ErrorDetail[] = []) {
    super('VALIDATION_FAILED', message, { details });
  }
}
export class InvalidJsonError extends AppError {
  constructor(message = 'body is not valid JSON') {
    super('INVALID_JSON', message);
  }
}
export class UnauthenticatedError extends AppError {
  constructor(message = 'authentication required') {
    super('UNAUTHENTICATED', message);
  }
}
export class ForbiddenError extends AppError {
  constructor(message = 'not allowed') {
    super('FORBIDDEN', message);
  }
}
export class NotFoundError extends AppError {
  constructor(message = 'not found') {
    super('NOT_FOUND', message);
  }
}
export class ConflictError extends AppError {
  constructor(message = 'already exists') {
    super('CONFLICT', message);
  }
}
export class PayloadTooLargeError extends AppError {
  constructor(message = 'request body too large') {
    super('PAYLOAD_TOO_LARGE', message);
  }
}
export class RateLimitedError extends AppError {
  readonly retryAfterSeconds: number;
  constructor(retryAfterSeconds: number, message = 'send rate exceeded') {
    super('RATE_LIMITED', message, { retryable: true });
    this.retryAfterSeconds = Math.max(1, Math.ceil(retryAfterSeconds));
  }
}
export class UnavailableError extends AppError {
  constructor(message = 'storage unavailable', cause?: unknown) {
    super('UNAVAILABLE', message, { retryable: true, cause });
  }
}
export class InternalError extends AppError {
  constructor(message = 'internal error', cause?: unknown) {
    super('INTERNAL', message, { cause });
  }
}

/** Start-up and lifecycle failures (bad config, unknown plugin, cycle). Not an API error. */
export class KernelError extends Error {
  constructor(message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = 'KernelError';
  }
}
export class ConfigError extends KernelError {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Anything thrown, as an AppError: unknown errors become INTERNAL (message hidden). */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  return new InternalError('internal error', err);
}
