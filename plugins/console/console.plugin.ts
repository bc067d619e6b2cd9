import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { NotFoundError } from '../../kernel/errors.js';
import { definePlugin } from '../../kernel/plugin.js';
import { validate, validateOptions } from '../../lib/validate.js';
import { HTTP_ROUTES, type HttpRequest, type HttpResponse, type RouteDefinition } from '../http/http.public.js';
import { ConsoleAssets } from './console-assets.service.js';
import { consoleOptionsSchema, devTokenBodySchema, devTokenResponseSchema, type ConsoleOptions } from './console.schema.js';

/**
 * The static files live in the source tree (tsc does not copy them): from
 * build/plugins/console/ that is <root>/plugins/console/public; when the
 * source itself is run, it is ./public beside this file.
 */
function publicDir(): string {
  const candidates = [new URL('../../../plugins/console/public/', import.meta.url), new URL('./public/', import.meta.url)];
  for (const url of candidates) {
    const dir = fileURLToPath(url);
    if (existsSync(dir)) return dir;
  }
  return fileURLToPath(candidates[0]!);
}

function header(req: HttpRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

/**
 * A web console at /console: a static page (plain ES modules) that uses only
 * the public HTTP and WebSocket API. Optionally (development only) mints
 * tokens for a user id at POST /console/dev-token.
 */
export const consolePlugin = definePlugin<ConsoleOptions>({
  name: 'console',
  dependsOn: ['http'],
  options: (raw) => {
    const options = validateOptions(consoleOptionsSchema, raw);
    if (options.devTokens && process.env.NODE_ENV === 'production') {
      throw new Error('devTokens: must not be enabled when NODE_ENV=production (it signs a token for anyone who asks)');
    }
    return options;
  },
  async register({ container, contributions, options, logger }) {
    const assets = await ConsoleAssets.load(publicDir());
    const serve = async (path: string, req: HttpRequest): Promise<HttpResponse> => {
      if (path === 'config.json') {
        return {
          status: 200,
          body: { dev_tokens: options.devTokens },
          headers: { 'cache-control': 'no-store' },
        };
      }
      const res = assets.respond(path, header(req, 'if-none-match'));
      if (!res) throw new NotFoundError('no such console file');
      return res;
    };
    const routes: RouteDefinition[] = [
      {
        method: 'GET',
        path: '/console',
        auth: 'none',
        hidden: true,
        summary: 'Web console page',
        handler: (req) => serve('', req),
      },
      {
        method: 'GET',
        path: '/console/*path',
        auth: 'none',
        hidden: true,
        summary: 'Web console static files',
        handler: (req) => serve(req.params.path ?? '', req),
      },
    ];
    if (options.devTokens) {
      routes.push({
        method: 'POST',
        path: '/console/dev-token',
        auth: 'none',
        hidden: true,
        summary: 'Development only: a signed token for any user id',
        schemas: { body: devTokenBodySchema, response: devTokenResponseSchema },
        async handler(req) {
          const body = validate(devTokenBodySchema, req.body ?? {}, 'body');
          const token = await container.cradle.authService.sign(body.user_id, {
            admin: body.admin,
            expiresInSeconds: options.devTokenTtlSeconds,
          });
          req.logger.warn({ user_id: body.user_id, admin: body.admin }, 'console: dev token issued');
          return {
            status: 201,
            body: { token, user_id: body.user_id, admin: body.admin, expires_in: options.devTokenTtlSeconds },
            headers: { 'cache-control': 'no-store' },
          };
        },
      });
      logger.warn('console: devTokens is enabled: anyone who can reach /console/dev-token can act as any user (development only)');
    }
    for (const r of routes) contributions.add<RouteDefinition>(HTTP_ROUTES, r);
  },
});
