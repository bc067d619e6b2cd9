import { createHash, timingSafeEqual } from 'node:crypto';
import { BlockList } from 'node:net';
import { asValue } from 'awilix';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { AppError, ForbiddenError, UnauthenticatedError } from '../../kernel/errors.js';
import { definePlugin } from '../../kernel/plugin.js';
import type { Unsubscribe } from '../../kernel/bus.js';
import '../../lib/metrics.js';
import { validateOptions } from '../../lib/validate.js';
import { HTTP_MIDDLEWARE, HTTP_ROUTES, type HttpMiddleware, type HttpState, type RouteDefinition } from '../http/http.public.js';
import { metricsOptionsSchema, parseCidr, type MetricsOptions } from './metrics.schema.js';

/** Label value for requests no route matched (never the raw path: unbounded cardinality). */
export const UNMATCHED_ROUTE = 'unmatched';

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

function statusOf(err: unknown): number {
  if (err instanceof AppError) return err.status;
  const s = (err as { status?: unknown; statusCode?: unknown } | null)?.status ?? (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof s === 'number' && s >= 400 && s < 600 ? s : 500;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Decides whether a request may read the metrics; null = allowed, else the error to answer with. */
function accessGuard(options: MetricsOptions): (ip: string, authorization: string | undefined) => AppError | null {
  let allowList: BlockList | null = null;
  if (options.allow.length > 0) {
    allowList = new BlockList();
    for (const entry of options.allow) {
      const c = parseCidr(entry)!;
      allowList.addSubnet(c.address, c.prefix, c.family);
    }
  }
  const tokenDigest = options.token ? digest(options.token) : null;
  return (ip, authorization) => {
    if (allowList) {
      const family = ip.includes(':') ? 'ipv6' : 'ipv4';
      let ok = false;
      try {
        ok = ip !== '' && allowList.check(ip, family);
      } catch {
        ok = false;
      }
      if (!ok) return new ForbiddenError('metrics are not available to this address');
    }
    if (tokenDigest) {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
      if (!m || !timingSafeEqual(digest(m[1]!), tokenDigest)) return new UnauthenticatedError('metrics require a bearer token');
    }
    return null;
  };
}

/**
 * Prometheus metrics (API.md §4 `GET /metrics`). Registers `metricsRegistry`, a
 * prom-client Registry owned by this kernel (never the global one), in which
 * other plugins create their metrics through `metricRegistries(container)`
 * (lib/metrics.ts) after declaring `after: ['metrics']`. Adds the default Node
 * process metrics, an HTTP request duration histogram (by method, route
 * pattern and status) and a counter of messages stored by transport.
 */
export const metricsPlugin = definePlugin<MetricsOptions>({
  name: 'metrics',
  options: (raw) => validateOptions(metricsOptionsSchema, raw),
  register({ container, options, contributions }) {
    const registry = new Registry();
    if (options.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: options.defaultMetricsPrefix });
    container.register({ metricsRegistry: asValue(registry) });

    const httpDuration = new Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP request duration in seconds, by method, route pattern and status',
      labelNames: ['method', 'route', 'status'] as const,
      buckets: [...options.httpBuckets].sort((a, b) => a - b),
      registers: [registry],
    });
    new Counter({
      name: 'im_messages_stored_total',
      help: 'Messages stored by this instance, by the transport they came in through',
      labelNames: ['transport'] as const,
      registers: [registry],
    });

    const guard = accessGuard(options);
    const middleware: HttpMiddleware = async (ctx, next) => {
      const end = httpDuration.startTimer();
      const method = KNOWN_METHODS.has(ctx.method) ? ctx.method : 'OTHER';
      if (ctx.path === options.path) {
        // The TCP peer, never X-Forwarded-For (a client could forge it): scrape instances directly.
        const denied = guard(ctx.req.socket.remoteAddress ?? '', ctx.get('authorization') || undefined);
        if (denied) {
          ctx.status = denied.status;
          ctx.body = denied.toJSON();
          if (denied.code === 'UNAUTHENTICATED') ctx.set('WWW-Authenticate', 'Bearer realm="metrics"');
          end({ method, route: options.path, status: String(denied.status) });
          return;
        }
      }
      let status = 500;
      try {
        await next();
        status = ctx.status;
      } catch (err) {
        status = statusOf(err);
        throw err;
      } finally {
        // The route pattern ('/api/user/:user_id'): from the http plugin's state, else where @koa/router leaves it.
        const matched = (ctx.state as Partial<HttpState> | undefined)?.route ?? (ctx as { _matchedRoute?: string | RegExp })._matchedRoute;
        end({ method, route: matched === undefined ? UNMATCHED_ROUTE : String(matched), status: String(status) });
      }
    };
    contributions.add<HttpMiddleware>(HTTP_MIDDLEWARE, middleware);

    contributions.add<RouteDefinition>(HTTP_ROUTES, {
      method: 'GET',
      path: options.path,
      auth: 'none',
      summary: 'Prometheus metrics of this instance (text exposition format)',
      tags: ['operations'],
      hidden: options.hideFromOpenApi,
      async handler() {
        return { status: 200, body: await registry.metrics(), headers: { 'content-type': registry.contentType } };
      },
    });
  },
  async start({ container }) {
    const stored = container.resolve('metricsRegistry').getSingleMetric('im_messages_stored_total') as Counter<'transport'>;
    const unsubscribe = container.cradle.bus.subscribe('message.stored', ({ transport }, meta) => {
      // Messages relayed from other instances through the cluster bus are counted where they were stored.
      if (meta.origin === 'local') stored.inc({ transport });
    });
    container.register({ metricsUnsubscribe: asValue(unsubscribe) });
  },
  async stop({ container }) {
    if (container.hasRegistration('metricsUnsubscribe')) container.resolve('metricsUnsubscribe')();
  },
});

declare module '../../kernel/container.js' {
  interface Cradle {
    /** Internal to the metrics plugin: ends its bus subscription on stop. */
    metricsUnsubscribe: Unsubscribe;
  }
}
