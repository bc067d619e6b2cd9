import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { Container } from '../../kernel/container.js';
import { AppError, NotFoundError, UnavailableError } from '../../kernel/errors.js';
import type { Logger } from '../../kernel/logger.js';
import type { HttpResponse, ReadinessCheck, RouteDefinition } from './http.public.js';
import { healthDoc, readyDoc } from './http.schema.js';

export interface OpsDeps {
  container: Container;
  logger: Logger;
  /** Storage ping plus every contributed check. */
  checks: () => readonly ReadinessCheck[];
  readinessTimeoutMs: number;
  /** True once stop() began: /readyz answers 503 so load balancers drain this instance. */
  draining: () => boolean;
  /** The generated OpenAPI document (built once the route table is complete). */
  openApi: () => unknown;
}

function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Files of swagger-ui-dist served under /docs/ (a fixed list: never a path from the request). */
const DOCS_FILES: Record<string, string> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'index.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'text/javascript; charset=utf-8',
  'swagger-ui-standalone-preset.js': 'text/javascript; charset=utf-8',
  'favicon-32x32.png': 'image/png',
  'favicon-16x16.png': 'image/png',
};

const DOCS_HTML = `<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>IM service API</title>
    <link rel="stylesheet" type="text/css" href="/docs/swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="/docs/index.css" />
    <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/docs/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="/docs/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script src="/docs/docs-init.js" charset="UTF-8"></script>
  </body>
</html>
`;

const DOCS_INIT = `window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: '/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: 'StandaloneLayout',
  });
};
`;

function swaggerUiDir(): string {
  const require = createRequire(import.meta.url);
  return (require('swagger-ui-dist') as { getAbsoluteFSPath(): string }).getAbsoluteFSPath();
}

/** /healthz, /readyz, /openapi.json and the /docs page. */
export function opsRoutes(deps: OpsDeps): RouteDefinition[] {
  const fileCache = new Map<string, Buffer>();
  let uiDir: string | undefined;
  return [
    {
      method: 'GET',
      path: '/healthz',
      auth: 'none',
      summary: 'Liveness: 200 while the process runs',
      tags: ['operations'],
      schemas: { response: healthDoc },
      handler: async () => ({ status: 200, body: { status: 'ok' } }),
    },
    {
      method: 'GET',
      path: '/readyz',
      auth: 'none',
      summary: 'Readiness: 200 when storage and every enabled broker answer; 503 listing the failing checks otherwise',
      tags: ['operations'],
      schemas: { response: readyDoc },
      handler: async (req) => {
        if (deps.draining()) throw new UnavailableError('shutting down');
        const checks = deps.checks();
        const results = await Promise.all(
          checks.map(async (c) => {
            try {
              await withTimeout(Promise.resolve().then(() => c.check()), deps.readinessTimeoutMs);
              return { name: c.name, error: null };
            } catch (err) {
              req.logger.warn({ check: c.name, err }, 'readiness check failed');
              const message = err instanceof AppError || /^timed out/.test((err as Error)?.message ?? '') ? (err as Error).message : 'check failed';
              return { name: c.name, error: message };
            }
          }),
        );
        const failing = results.filter((r) => r.error !== null);
        if (failing.length > 0) {
          const e = new UnavailableError(`not ready: ${failing.map((f) => f.name).join(', ')}`);
          e.details.push(...failing.map((f) => ({ path: f.name, message: f.error! })));
          throw e;
        }
        return { status: 200, body: { status: 'ok', checks: Object.fromEntries(results.map((r) => [r.name, 'ok'])) } };
      },
    },
    {
      method: 'GET',
      path: '/openapi.json',
      auth: 'none',
      summary: 'This OpenAPI 3 document, generated from the route table and its joi schemas',
      tags: ['operations'],
      handler: async () => ({ status: 200, body: deps.openApi() }),
    },
    {
      method: 'GET',
      path: '/docs',
      auth: 'none',
      summary: 'Human-readable API docs (Swagger UI, served locally)',
      hidden: true,
      handler: async () => ({ status: 200, body: DOCS_HTML, headers: { 'content-type': 'text/html; charset=utf-8' } }),
    },
    {
      method: 'GET',
      path: '/docs/:file',
      auth: 'none',
      summary: 'Docs page assets',
      hidden: true,
      handler: async (req): Promise<HttpResponse> => {
        const name = req.params.file!;
        if (name === 'docs-init.js') {
          return { status: 200, body: DOCS_INIT, headers: { 'content-type': 'text/javascript; charset=utf-8' } };
        }
        const type = DOCS_FILES[name];
        if (!type) throw new NotFoundError(`no docs file '${name}'`);
        let data = fileCache.get(name);
        if (!data) {
          uiDir ??= swaggerUiDir();
          data = await readFile(join(uiDir, name));
          fileCache.set(name, data);
        }
        return { status: 200, body: data, headers: { 'content-type': type, 'cache-control': 'public, max-age=3600' } };
      },
    },
  ];
}
