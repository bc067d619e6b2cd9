import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { asValue } from 'awilix';
import Koa from 'koa';
import type { Logger } from '../../kernel/logger.js';
import { definePlugin } from '../../kernel/plugin.js';
import { settledWithin } from '../../lib/settled-within.js';
import { validateOptions } from '../../lib/validate.js';
import { chatOptionsSchema } from '../chat/chat.schema.js';
import { buildRouter, errorHandler, notFound, requestContext } from './http-app.builder.js';
import {
  HTTP_MIDDLEWARE,
  HTTP_ROUTES,
  READINESS_CHECKS,
  type HttpAddress,
  type HttpMiddleware,
  type ReadinessCheck,
  type RouteDefinition,
} from './http.public.js';
import { httpOptionsSchema, type HttpOptions } from './http.schema.js';
import { coreRoutes } from './core.routes.js';
import { opsRoutes } from './ops.routes.js';
import { buildOpenApi } from './openapi.builder.js';

/** Runtime state of one kernel's http plugin. */
interface Runtime {
  handler: ((req: IncomingMessage, res: ServerResponse) => Promise<void>) | null;
  app: Koa;
  server: Server;
  address: HttpAddress;
  draining: boolean;
  inFlight: number;
  idleWaiters: Array<() => void>;
  listening: boolean;
  stopping: Promise<void> | null;
  openApi: unknown;
}

/** Keyed by the kernel's container, so two kernels in one process never share state. */
const runtimes = new WeakMap<object, Runtime>();

/**
 * The HTTP transport (Koa + @koa/router): API.md §4's core routes as thin
 * translations to the services, every route contributed at HTTP_ROUTES, the ops
 * endpoints (/healthz, /readyz, /openapi.json, /docs), request ids and access
 * logs. It owns the http.Server (the ws plugin attaches to it) and drains it on
 * stop.
 */
export const httpPlugin = definePlugin<HttpOptions>({
  name: 'http',
  dependsOn: ['auth', 'users', 'groups', 'chat'],
  after: ['metrics'],
  options: (raw) => validateOptions(httpOptionsSchema, raw),

  register({ container, options }) {
    const app = new Koa();
    app.proxy = options.trustProxy;
    // Koa composes its middleware when callback() is called: the real handler is
    // built in start(), once every contributed middleware and route is installed.
    const server = createServer((req, res) => {
      if (rt.handler) void rt.handler(req, res);
      else {
        res.statusCode = 503;
        res.end();
      }
    });
    const address: HttpAddress = { host: '', port: 0 };
    const rt: Runtime = {
      handler: null,
      app,
      server,
      address,
      draining: false,
      inFlight: 0,
      idleWaiters: [],
      listening: false,
      stopping: null,
      openApi: null,
    };
    // in flight = until the response is fully written (or its connection closed)
    const responseClosed = (): void => {
      rt.inFlight -= 1;
      if (rt.inFlight === 0 && rt.idleWaiters.length > 0) rt.idleWaiters.splice(0).forEach((w) => w());
    };
    server.on('request', (_req, res: ServerResponse) => {
      rt.inFlight += 1;
      res.once('close', responseClosed);
    });
    runtimes.set(container, rt);
    container.register({ koaApp: asValue(app), httpServer: asValue(server), httpAddress: asValue(address) });
  },

  async start({ container, options, contributions, logger }) {
    const rt = runtimes.get(container)!;
    const { app, server } = rt;
    app.on('error', (err: unknown) => logger.error({ err }, 'koa error'));

    app.use(requestContext(logger, () => rt.draining));
    for (const mw of contributions.list<HttpMiddleware>(HTTP_MIDDLEWARE)) app.use(mw);
    app.use(errorHandler());
    app.use(notFound());

    const config = container.resolve('config');
    const { maxContentLength } = validateOptions(chatOptionsSchema, config.chat ?? {});
    const storageCheck: ReadinessCheck = { name: 'storage', check: () => container.resolve('storage').ping() };
    const routes: RouteDefinition[] = [
      ...opsRoutes({
        container,
        logger,
        checks: () => [storageCheck, ...contributions.list<ReadinessCheck>(READINESS_CHECKS)],
        readinessTimeoutMs: options.readinessTimeoutMs,
        draining: () => rt.draining,
        openApi: () => rt.openApi,
      }),
      ...coreRoutes(container, maxContentLength),
      ...contributions.list<RouteDefinition>(HTTP_ROUTES),
    ];
    rt.openApi = buildOpenApi(routes, {
      title: 'IM service',
      version: '1',
      description: 'Instant messaging for medical consultations. Errors always use the Error body; every /api/* call needs a bearer JWT.',
    });
    const { router, staticPaths } = buildRouter({ routes, auth: container.resolve('authService'), bodyLimit: options.bodyLimit });
    app.use(staticPaths);
    app.use(router.routes());
    app.use(router.allowedMethods());
    rt.handler = app.callback();

    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(new Error(`cannot listen on ${options.host}:${options.port}: ${err.message}`));
      server.once('error', onError);
      server.listen(options.port, options.host, () => {
        server.off('error', onError);
        resolve();
      });
    });
    rt.listening = true;
    const bound = server.address();
    if (bound && typeof bound === 'object') {
      rt.address.host = bound.address;
      rt.address.port = bound.port;
    }
    logger.info({ host: rt.address.host, port: rt.address.port }, 'http listening');
  },

  stop({ container, options, logger }) {
    const rt = runtimes.get(container);
    if (!rt) return Promise.resolve();
    rt.stopping ??= drain(rt, options.shutdownGraceMs, logger);
    return rt.stopping;
  },
});

/** Stop accepting, let in-flight requests finish (bounded), close keep-alive connections. */
async function drain(rt: Runtime, graceMs: number, logger: Logger): Promise<void> {
  rt.draining = true;
  if (!rt.listening) return;
  const { server } = rt;
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  if (rt.inFlight > 0) {
    logger.info({ in_flight: rt.inFlight }, 'http draining');
    const idle = new Promise<void>((resolve) => rt.idleWaiters.push(resolve));
    if (!(await settledWithin(idle, graceMs))) logger.warn({ in_flight: rt.inFlight }, 'http grace period over: closing connections');
  }
  // every response is written: close idle keep-alive sockets and stragglers
  server.closeAllConnections();
  await settledWithin(closed, 1000);
  rt.listening = false;
}
