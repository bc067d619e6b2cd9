import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type Koa from 'koa';
import { Router } from '@koa/router';
import {
  AppError,
  InvalidJsonError,
  NotFoundError,
  PayloadTooLargeError,
  RateLimitedError,
  ValidationError,
  toAppError,
} from '../../kernel/errors.js';
import { ContextLogger, type Logger } from '../../kernel/logger.js';
import type { AuthService } from '../../kernel/ports/services.port.js';
import type { HttpRequest, HttpState, RouteDefinition } from './http.public.js';
import { REQUEST_ID_PATTERN } from './http.schema.js';

type Ctx = Koa.ParameterizedContext;

/** Per-request values the plugin keeps on ctx.state (HttpState plus the request logger). */
interface State extends HttpState {
  /** Every line of the request carries req_id, and user_id once the token is verified. */
  logger: ContextLogger;
  started: bigint;
}

function state(ctx: Ctx): State {
  return ctx.state as State;
}

/** Writes the error body of API.md §1 (and Retry-After for 429). */
export function sendError(ctx: Ctx, err: AppError, status = err.status): void {
  ctx.status = status;
  if (err instanceof RateLimitedError) ctx.set('Retry-After', String(err.retryAfterSeconds));
  if (err.code === 'UNAUTHENTICATED') ctx.set('WWW-Authenticate', 'Bearer');
  ctx.body = err.toJSON();
}

/** Maps anything thrown to an AppError: Koa/router http errors by status, the rest INTERNAL. */
function classify(err: unknown): { error: AppError; status: number } {
  if (err instanceof AppError) return { error: err, status: err.status };
  const status = (err as { status?: unknown; expose?: unknown } | null)?.status;
  if (typeof status === 'number' && (err as { expose?: unknown }).expose === true) {
    if (status === 404) return { error: new NotFoundError(), status };
    if (status === 405) return { error: new NotFoundError('method not allowed'), status };
    if (status === 413) return { error: new PayloadTooLargeError(), status };
    if (status >= 400 && status < 500) return { error: new ValidationError((err as Error).message), status: 400 };
  }
  return { error: toAppError(err), status: 500 };
}

/**
 * Outermost: request id, the request logger, the access-log line, and a last
 * error safety net (errors thrown by contributed middleware included).
 */
export function requestContext(baseLogger: Logger, isDraining: () => boolean): Koa.Middleware {
  return async (ctx, next) => {
    // node's lower-cased header (ctx.get() lower-cases the name on every call)
    const incoming = ctx.req.headers['x-request-id'];
    const requestId = typeof incoming === 'string' && REQUEST_ID_PATTERN.test(incoming) ? incoming : randomUUID();
    const st = state(ctx);
    st.requestId = requestId;
    st.started = process.hrtime.bigint();
    st.logger = new ContextLogger(baseLogger, { req_id: requestId });
    // ctx.set() for one string value, without the arrays it builds per call (nothing is sent yet)
    ctx.res.setHeader('X-Request-Id', requestId);
    if (isDraining()) ctx.set('Connection', 'close');
    try {
      await next();
    } catch (err) {
      handleError(ctx, err);
    }
    const durationMs = Number(process.hrtime.bigint() - st.started) / 1e6;
    st.logger.info(
      { method: ctx.method, route: st.route ?? null, status: ctx.status, duration_ms: Math.round(durationMs * 10) / 10 },
      'request',
    );
  };
}

function handleError(ctx: Ctx, err: unknown): void {
  const { error, status } = classify(err);
  const st = state(ctx);
  // a body left unread (auth failed first, wrong content type, too large) is not drained: close instead
  if (hasBody(ctx.req) && !ctx.req.complete) ctx.set('Connection', 'close');
  if (status >= 500 && !(err instanceof AppError && err.code === 'UNAVAILABLE')) {
    st.logger.error({ err, route: st.route ?? null }, 'request failed');
  } else if (status === 503) {
    st.logger.warn({ err: { message: (err as Error)?.message }, route: st.route ?? null }, 'unavailable');
  }
  if (status === 405) {
    const allow = ctx.response.get('Allow');
    sendError(ctx, new NotFoundError(`method ${ctx.method} not allowed${allow ? ` (allowed: ${allow})` : ''}`), 405);
    return;
  }
  sendError(ctx, error, status);
}

/** Inner error handler: runs inside contributed middleware, so they see the final status. */
export function errorHandler(): Koa.Middleware {
  return async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      handleError(ctx, err);
    }
  };
}

function hasBody(req: IncomingMessage): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const len = req.headers['content-length'];
  return len !== undefined && len !== '0';
}

const decoder = new TextDecoder('utf-8', { fatal: true });

/** What `ctx.type = 'application/json'` sets; set as it is, without a mime lookup per response. */
const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';

/**
 * Reads a JSON body of at most `limit` bytes. A declared length over the limit
 * fails before reading; a streamed body fails as soon as it passes the limit
 * (the connection is then closed, so the rest is never read).
 */
export async function readJsonBody(ctx: Ctx, limit: number): Promise<unknown> {
  const req = ctx.req;
  if (!hasBody(req)) return undefined;
  // the usual header is taken as it is; anything else is parsed and matched by ctx.is
  if (req.headers['content-type'] !== 'application/json' && !ctx.is('application/json', '+json')) {
    throw new ValidationError('request body must be JSON (Content-Type: application/json)', [
      { path: 'content-type', message: `'content-type' must be application/json` },
    ]);
  }
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    ctx.set('Connection', 'close');
    throw new PayloadTooLargeError(`request body over ${limit} bytes`);
  }
  const { chunks, size } = await collect(req, limit).catch((err: unknown) => {
    if (err instanceof PayloadTooLargeError) ctx.set('Connection', 'close');
    throw err;
  });
  if (size === 0) return undefined;
  let text: string;
  try {
    text = decoder.decode(Buffer.concat(chunks, size));
  } catch {
    throw new InvalidJsonError('body is not valid UTF-8');
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new InvalidJsonError();
  }
}

/**
 * Buffers the request body up to `limit` bytes. Past the limit it stops
 * listening and pauses the stream without destroying it, so the 413 answer
 * can still be written (the connection is closed after it).
 */
function collect(req: IncomingMessage, limit: number): Promise<{ chunks: Buffer[]; size: number }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        req.pause();
        reject(new PayloadTooLargeError(`request body over ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve({ chunks, size });
    };
    const onError = (): void => {
      cleanup();
      reject(new ValidationError('request body could not be read'));
    };
    const onClose = (): void => {
      if (!req.complete) onError();
    };
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', onError);
    req.once('close', onClose);
  });
}

function bearer(ctx: Ctx): string {
  const h = ctx.req.headers.authorization ?? ''; // see requestContext
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(h);
  return m ? m[1]! : '';
}

export interface RouterDeps {
  routes: readonly RouteDefinition[];
  auth: AuthService;
  bodyLimit: number;
}

/** A route path without parameters or wildcards (`/api/message/send`). */
const STATIC_PATH = /^[A-Za-z0-9/_.~-]*$/;

/**
 * One @koa/router built from the route table (auth, body, handler, encoding),
 * and `staticPaths`, installed before it: a request for exactly a path without
 * parameters (most API calls) is found by method and path instead of being
 * matched against every route's pattern; anything else (parameters, another
 * case, a trailing slash, an unknown path or method) goes on to the router.
 */
export function buildRouter(deps: RouterDeps): { router: Router; staticPaths: Koa.Middleware } {
  const router = new Router();
  const candidates: Array<{ method: string; path: string; mw: Koa.Middleware }> = [];
  for (const route of deps.routes) {
    const mw: Koa.Middleware = async (ctx) => {
      const st = state(ctx);
      st.route = route.path;
      let principal = null;
      if (route.auth === 'user') {
        principal = await deps.auth.verify(bearer(ctx));
        st.userId = principal.user_id;
        st.logger.setUser(principal.user_id);
      }
      const body = route.method === 'GET' ? undefined : await readJsonBody(ctx, deps.bodyLimit);
      const req: HttpRequest = {
        principal,
        // both made for this request (by the router, by Koa): handed over, not copied
        params: (ctx as unknown as { params?: Record<string, string> }).params ?? {},
        query: ctx.query,
        body,
        headers: ctx.headers,
        requestId: st.requestId,
        logger: st.logger,
        logContext: st.logger.context,
      };
      const res = await route.handler(req);
      if (res.headers) for (const k in res.headers) ctx.set(k, res.headers[k]!);
      ctx.status = res.status;
      let json = res.json;
      if (json === undefined && res.body !== undefined && res.status !== 204) {
        if (typeof res.body === 'string' || Buffer.isBuffer(res.body)) ctx.body = res.body;
        else json = JSON.stringify(res.body);
      }
      if (json !== undefined) {
        ctx.res.setHeader('Content-Type', JSON_CONTENT_TYPE); // as in requestContext
        ctx.body = json;
      }
    };
    if (route.method === 'GET') router.get(route.path, mw);
    else if (route.method === 'POST') router.post(route.path, mw);
    else if (route.method === 'PUT') router.put(route.path, mw);
    else router.delete(route.path, mw);
    if (STATIC_PATH.test(route.path)) {
      // the router answers HEAD with the GET route
      for (const method of route.method === 'GET' ? ['GET', 'HEAD'] : [route.method]) candidates.push({ method, path: route.path, mw });
    }
  }
  /** method -> path -> the route's middleware */
  const byPath = new Map<string, Map<string, Koa.Middleware>>();
  for (const { method, path, mw } of candidates) {
    // only where the router runs this route first for that path (an earlier pattern may take it)
    const first = router.match(path, method).pathAndMethod[0];
    if (!first || !(first.stack as unknown[]).includes(mw)) continue;
    let paths = byPath.get(method);
    if (!paths) byPath.set(method, (paths = new Map()));
    paths.set(path, mw);
  }
  const staticPaths: Koa.Middleware = (ctx, next) => {
    const mw = byPath.get(ctx.method)?.get(ctx.path);
    return mw ? mw(ctx, next) : next();
  };
  return { router, staticPaths };
}

/**
 * Around routing: an unknown path is 404 NOT_FOUND; a known path with another
 * method is 405 (router's allowedMethods set the Allow header) with the same
 * error body, code NOT_FOUND.
 */
export function notFound(): Koa.Middleware {
  return async (ctx, next) => {
    await next();
    if (ctx.body !== undefined && ctx.body !== null) return;
    if (ctx.status === 404 && state(ctx).route === undefined) {
      throw new NotFoundError(`no route for ${ctx.method} ${ctx.path}`);
    }
    if (ctx.status === 405) {
      const allow = ctx.response.get('Allow');
      sendError(ctx, new NotFoundError(`method ${ctx.method} not allowed on ${ctx.path}${allow ? ` (allowed: ${allow})` : ''}`), 405);
    } else if (ctx.status >= 400) {
      // e.g. 501 from the router for a method it does not know
      sendError(ctx, new NotFoundError(`method ${ctx.method} not supported`), ctx.status);
    }
  };
}
