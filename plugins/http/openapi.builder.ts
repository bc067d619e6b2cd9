import type Joi from 'joi';
import joiToJsonModule from 'joi-to-json';
import type { RouteDefinition } from './http.public.js';
import { errorDoc } from './http.schema.js';

type JsonSchema = Record<string, unknown>;
/** joi-to-json's bundled types do not resolve under NodeNext ESM: this is its documented signature. */
type JoiToJson = (schema: Joi.Schema, mode: 'open-api', shared?: Record<string, unknown>) => JsonSchema;
const joiToJson = joiToJsonModule as unknown as JoiToJson;

const convert = (schema: Joi.Schema): JsonSchema => joiToJson(schema, 'open-api');

/** '/api/user/:user_id' -> '/api/user/{user_id}' */
export function openApiPath(path: string): string {
  return path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

const ERROR_RESPONSES: Record<string, string> = {
  '400': 'VALIDATION_FAILED or INVALID_JSON',
  '401': 'UNAUTHENTICATED: missing, expired or badly signed token',
  '403': 'FORBIDDEN: authenticated but not allowed',
  '404': 'NOT_FOUND',
  '405': 'method not allowed on this path (code NOT_FOUND, Allow header set)',
  '409': 'CONFLICT',
  '413': 'PAYLOAD_TOO_LARGE',
  '429': 'RATE_LIMITED (Retry-After header set)',
  '500': 'INTERNAL',
  '503': 'UNAVAILABLE: storage unreachable, nothing was written',
};

function errorRef(description: string): JsonSchema {
  return { description, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
}

function parameters(route: RouteDefinition): JsonSchema[] {
  const out: JsonSchema[] = [];
  const pathNames = [...route.path.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1]!);
  const paramSchema = route.schemas?.params ? convert(route.schemas.params) : undefined;
  const paramProps = (paramSchema?.properties ?? {}) as Record<string, JsonSchema>;
  for (const name of pathNames) {
    out.push({ name, in: 'path', required: true, schema: paramProps[name] ?? { type: 'string' } });
  }
  if (route.schemas?.query) {
    const q = convert(route.schemas.query);
    const required = new Set((q.required as string[] | undefined) ?? []);
    for (const [name, schema] of Object.entries((q.properties ?? {}) as Record<string, JsonSchema>)) {
      out.push({ name, in: 'query', required: required.has(name), schema });
    }
  }
  return out;
}

export interface OpenApiInfo {
  title: string;
  version: string;
  description?: string;
}

/** The OpenAPI 3.0 document of a route table: generated, never kept by hand. */
export function buildOpenApi(routes: readonly RouteDefinition[], info: OpenApiInfo): JsonSchema {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const route of routes) {
    if (route.hidden) continue;
    const p = openApiPath(route.path);
    const success = String(route.successStatus ?? 200);
    const responses: Record<string, JsonSchema> = {};
    if (success === '204') responses[success] = { description: 'No Content' };
    else {
      responses[success] = {
        description: success === '201' ? 'Created' : 'OK',
        content: { 'application/json': { schema: route.schemas?.response ? convert(route.schemas.response) : { type: 'object' } } },
      };
    }
    if (route.method === 'POST' && route.path === '/api/message/send') {
      responses['200'] = {
        description: 'The original message: client_msg_id was already used by this sender in this group',
        content: { 'application/json': { schema: route.schemas?.response ? convert(route.schemas.response) : { type: 'object' } } },
      };
    }
    const codes = new Set<string>(['404', '500']);
    if (route.schemas?.body || route.schemas?.query) codes.add('400');
    if (route.schemas?.body) codes.add('413');
    if (route.auth === 'user') ['401', '403', '503'].forEach((c) => codes.add(c));
    if (route.method === 'POST' && route.successStatus === 201) codes.add('409');
    if (route.path === '/api/message/send') codes.add('429');
    if (route.path === '/readyz') codes.add('503');
    for (const c of [...codes].sort()) if (!responses[c]) responses[c] = errorRef(ERROR_RESPONSES[c] ?? 'error');
    const op: JsonSchema = {
      summary: route.summary,
      operationId: `${route.method.toLowerCase()}${p.replace(/[{}]/g, '').replace(/[^A-Za-z0-9]+(.)?/g, (_m, ch: string | undefined) => (ch ? ch.toUpperCase() : ''))}`,
      tags: route.tags ?? [],
      parameters: parameters(route),
      responses,
    };
    if (route.schemas?.body) {
      op.requestBody = { required: true, content: { 'application/json': { schema: convert(route.schemas.body) } } };
    }
    op.security = route.auth === 'user' ? [{ bearerAuth: [] }] : [];
    (paths[p] ??= {})[route.method.toLowerCase()] = op;
  }
  return {
    openapi: '3.0.3',
    info,
    paths,
    components: {
      securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
      schemas: { Error: convert(errorDoc) },
    },
  };
}
