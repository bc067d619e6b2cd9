import type { Cradle } from '../../kernel/container.js';
import { UnauthenticatedError } from '../../kernel/errors.js';
import type { Principal } from '../../kernel/ports/services.port.js';
import type { HttpRequest, RouteDefinition } from '../http/http.public.js';
import { aiTestResponseSchema, interactionsQuerySchema, interactionsResponseSchema } from './ai-router.schema.js';

function principal(req: HttpRequest): Principal {
  if (!req.principal) throw new UnauthenticatedError();
  return req.principal;
}

/** The AI endpoints of API.md §4, contributed to the http plugin. */
export function aiRoutes(cradle: () => Cradle): RouteDefinition[] {
  return [
    {
      method: 'GET',
      path: '/api/ai/interactions',
      auth: 'user',
      summary: 'AI interaction records, newest first (admin, or a DOCTOR member of group_id)',
      tags: ['ai'],
      schemas: { query: interactionsQuerySchema, response: interactionsResponseSchema },
      async handler(req) {
        const records = await cradle().aiRouter.listInteractions(principal(req), req.query);
        return { status: 200, body: { records } };
      },
    },
    {
      method: 'POST',
      path: '/api/ai/test',
      auth: 'user',
      summary: 'One real call to the configured AI service (admin)',
      tags: ['ai'],
      schemas: { response: aiTestResponseSchema },
      async handler(req) {
        const result = await cradle().aiRouter.testCall(principal(req));
        return { status: 200, body: result };
      },
    },
  ];
}
