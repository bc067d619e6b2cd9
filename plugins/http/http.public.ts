/**
 * The http plugin's public surface: other plugins contribute routes,
 * readiness checks and middleware through the kernel's contribution points
 * (in their register step), and never import the http plugin's internals.
 */
import type { Server } from 'node:http';
import type Joi from 'joi';
import type Koa from 'koa';
import type { LogContext, Logger } from '../../kernel/logger.js';
import type { Principal } from '../../kernel/ports/services.port.js';

/** Contribution point: RouteDefinition values. */
export const HTTP_ROUTES = 'http.routes';
/** Readiness checks live in lib/ (adapters contribute them too); re-exported for plugins. */
export { READINESS_CHECKS, type ReadinessCheck } from '../../lib/readiness.js';
/** Contribution point: Koa middleware run before routing (e.g. metrics), in contribution order. */
export const HTTP_MIDDLEWARE = 'http.middleware';

export interface HttpRequest {
  /** Null only on routes with auth 'none'. */
  principal: Principal | null;
  params: Record<string, string>;
  query: Record<string, unknown>;
  /** Parsed JSON body (undefined when none). */
  body: unknown;
  headers: Record<string, string | string[] | undefined>;
  requestId: string;
  /** This request's logger: its lines carry req_id and user_id. */
  logger: Logger;
  /**
   * The ids its lines carry (req_id, user_id): pass them on to services (their
   * CallOptions) so the lines written for this request elsewhere carry them too.
   */
  logContext: LogContext;
}

export interface HttpResponse {
  status: number;
  /** Objects are sent as JSON; string/Buffer as they are (set content-type in headers). */
  body?: unknown;
  /** A JSON body serialised already (sent as it is, as application/json); instead of `body`. */
  json?: string;
  headers?: Record<string, string>;
}

export interface RouteDefinition {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** @koa/router syntax: '/api/user/:user_id'. */
  path: string;
  /** 'user' = a valid bearer token is required (API.md §2). */
  auth: 'none' | 'user';
  summary: string;
  tags?: string[];
  /** For the OpenAPI document (validation itself happens in the services). */
  schemas?: { body?: Joi.Schema; query?: Joi.Schema; params?: Joi.Schema; response?: Joi.Schema };
  /** Success status documented in OpenAPI (default 200). */
  successStatus?: number;
  /** Left out of /openapi.json (static files, docs page). */
  hidden?: boolean;
  handler(req: HttpRequest): Promise<HttpResponse>;
}

export type HttpMiddleware = Koa.Middleware;

/**
 * Where the server listens, filled in when the http plugin has started (the
 * real port when config asks for port 0). Before start: host '' and port 0.
 */
export interface HttpAddress {
  host: string;
  port: number;
}

/**
 * What the http plugin leaves in `ctx.state` for contributed middleware
 * (metrics, ...) to read after `await next()`.
 */
export interface HttpState {
  /** The matched route pattern ('/api/user/:user_id'); undefined when no route matched. */
  route?: string;
  requestId: string;
  /** The authenticated caller, once known. */
  userId?: string;
}

declare module '../../kernel/container.js' {
  interface Cradle {
    /** The Koa application (the ws plugin attaches to it). */
    koaApp: Koa;
    /** The HTTP server; listening once the http plugin has started. */
    httpServer: Server;
    /** Bound host and port (filled at start). */
    httpAddress: HttpAddress;
  }
}
