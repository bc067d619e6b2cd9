import {
  ConnectionError,
  ForeignKeyConstraintError,
  TimeoutError,
  UniqueConstraintError,
} from 'sequelize';
import { AppError, ConflictError, InternalError, NotFoundError, UnavailableError } from '../../../kernel/errors.js';

/** Driver codes that mean "the database cannot be reached right now" (the operation did not take effect). */
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  '57P01', // admin_shutdown (also pg_terminate_backend)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up / shutting down)
  '53300', // too_many_connections
  '08000',
  '08001',
  '08003',
  '08004',
  '08006',
  'SQLITE_BUSY',
  'SQLITE_LOCKED',
  'SQLITE_CANTOPEN',
  'SQLITE_IOERR',
]);

const UNAVAILABLE_TEXT =
  /connection terminated|timeout exceeded when trying to connect|Cannot use a pool after calling end|Client was closed and is not queryable|terminating connection|not queryable|connection (?:is )?closed|server closed the connection|Connection ended|database is locked|the database system is (?:starting up|shutting down)|ConnectionManager\.getConnection was called after the connection manager was closed/i;

function driverError(err: unknown): { code?: string; message: string } {
  const e = err as { original?: unknown; parent?: unknown; code?: unknown; message?: unknown };
  const inner = (e.original ?? e.parent ?? err) as { code?: unknown; message?: unknown };
  const code = typeof inner.code === 'string' ? inner.code : typeof e.code === 'string' ? e.code : undefined;
  return { code, message: `${String(inner.message ?? '')} ${String(e.message ?? '')}` };
}

/** True when the error means the store is unreachable (connection refused/reset/terminated, pool exhausted, shutdown). */
export function isUnavailable(err: unknown): boolean {
  if (err instanceof UnavailableError) return true;
  if (err instanceof AppError) return false;
  if (err instanceof ConnectionError || err instanceof TimeoutError) return true;
  const { code, message } = driverError(err);
  if (code && (UNAVAILABLE_CODES.has(code) || code.startsWith('SQLITE_BUSY'))) return true;
  return UNAVAILABLE_TEXT.test(message);
}

/**
 * The cause kept on typed errors (for logs): name, driver code and driver
 * message only, never the statement or its bind values (medical data).
 */
export function safeCause(err: unknown): Error {
  const { code } = driverError(err);
  const e = err as { name?: unknown; original?: { message?: unknown }; parent?: { message?: unknown }; message?: unknown };
  const inner = e.original ?? e.parent;
  const out = new Error(String(inner?.message ?? e.message ?? err));
  out.name = typeof e.name === 'string' ? e.name : 'Error';
  if (code) (out as Error & { code?: string }).code = code;
  return out;
}

export interface ErrorContext {
  /** Message of the ConflictError for a unique violation (e.g. "user 'u1' already exists"). */
  conflict?: string;
  /** Message of the NotFoundError for a foreign-key violation. */
  missing?: string;
}

/**
 * Any error of a storage call -> a typed error whose message never contains SQL:
 * unique violation -> ConflictError, foreign-key violation -> NotFoundError,
 * unreachable -> UnavailableError, anything else -> InternalError (cause kept for logs).
 */
export function toStorageError(err: unknown, ctx: ErrorContext = {}): AppError {
  if (err instanceof AppError) return err;
  if (isUnavailable(err)) return new UnavailableError('storage unavailable', safeCause(err));
  if (err instanceof UniqueConstraintError) return new ConflictError(ctx.conflict ?? 'already exists');
  const { code } = driverError(err);
  if (code === '23505' || (code === 'SQLITE_CONSTRAINT' && /UNIQUE|PRIMARY KEY/i.test(driverError(err).message))) {
    return new ConflictError(ctx.conflict ?? 'already exists');
  }
  if (err instanceof ForeignKeyConstraintError || code === '23503' || (code === 'SQLITE_CONSTRAINT' && /FOREIGN KEY/i.test(driverError(err).message))) {
    return new NotFoundError(ctx.missing ?? 'a referenced user, group or message does not exist');
  }
  return new InternalError('storage error', safeCause(err));
}
