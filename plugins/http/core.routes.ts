import type { Container } from '../../kernel/container.js';
import type { Principal } from '../../kernel/ports/services.port.js';
import { UnauthenticatedError } from '../../kernel/errors.js';
import { createUserSchema, setRoleSchema } from '../users/users.schema.js';
import { addMemberSchema, createGroupSchema } from '../groups/groups.schema.js';
import { listMessagesSchema, sendMessageSchema } from '../chat/chat.schema.js';
import type { HttpRequest, RouteDefinition } from './http.public.js';
import {
  groupDoc,
  groupIdParams,
  groupsDoc,
  memberDoc,
  memberParams,
  membersDoc,
  messageDoc,
  messageIdParams,
  messagePageDoc,
  userDoc,
  userIdParams,
} from './http.schema.js';

/** Routes with auth 'user' always carry a principal; this narrows the type. */
function who(req: HttpRequest): Principal {
  if (!req.principal) throw new UnauthenticatedError();
  return req.principal;
}

/**
 * A request without a body is validated as `{}`, so the services report every
 * missing required field (their schemas would let `undefined` through).
 */
function bodyOf(req: HttpRequest): unknown {
  return req.body === undefined ? {} : req.body;
}

/**
 * The core routes of API.md §4: each one decodes the request, calls a service
 * from the container and encodes its answer. Access rules and validation live
 * in the services. Called at start, when every service is registered; they are
 * singletons, resolved once here rather than per request.
 */
export function coreRoutes(container: Container, maxContentLength: number): RouteDefinition[] {
  const userService = container.resolve('userService');
  const groupService = container.resolve('groupService');
  const chatService = container.resolve('chatService');
  return [
    {
      method: 'POST',
      path: '/api/user',
      auth: 'user',
      summary: 'Create a user (admin); 409 if the user_id exists',
      tags: ['users'],
      schemas: { body: createUserSchema, response: userDoc },
      successStatus: 201,
      handler: async (req) => ({ status: 201, body: await userService.create(who(req), bodyOf(req)) }),
    },
    {
      method: 'GET',
      path: '/api/user/:user_id',
      auth: 'user',
      summary: 'Get a user (any authenticated caller)',
      tags: ['users'],
      schemas: { params: userIdParams, response: userDoc },
      handler: async (req) => ({ status: 200, body: await userService.get(who(req), req.params.user_id!) }),
    },
    {
      method: 'PUT',
      path: '/api/user/:user_id/role',
      auth: 'user',
      summary: "Change a user's role (admin)",
      tags: ['users'],
      schemas: { params: userIdParams, body: setRoleSchema, response: userDoc },
      handler: async (req) => ({ status: 200, body: await userService.setRole(who(req), req.params.user_id!, bodyOf(req)) }),
    },
    {
      method: 'GET',
      path: '/api/user/:user_id/groups',
      auth: 'user',
      summary: "List a user's groups (that user or admin)",
      tags: ['users', 'groups'],
      schemas: { params: userIdParams, response: groupsDoc },
      handler: async (req) => ({ status: 200, body: { groups: await groupService.listForUser(who(req), req.params.user_id!) } }),
    },
    {
      method: 'POST',
      path: '/api/group/create',
      auth: 'user',
      summary: 'Create a group (the caller becomes creator and member; admin may create for others)',
      tags: ['groups'],
      schemas: { body: createGroupSchema, response: groupDoc },
      successStatus: 201,
      handler: async (req) => ({ status: 201, body: await groupService.create(who(req), bodyOf(req), { logContext: req.logContext }) }),
    },
    {
      method: 'GET',
      path: '/api/group/:group_id',
      auth: 'user',
      summary: 'Get a group (member or admin)',
      tags: ['groups'],
      schemas: { params: groupIdParams, response: groupDoc },
      handler: async (req) => ({ status: 200, body: await groupService.get(who(req), req.params.group_id!) }),
    },
    {
      method: 'POST',
      path: '/api/group/:group_id/members',
      auth: 'user',
      summary: 'Add a member (admin, the creator, or a DOCTOR member); 409 if already in',
      tags: ['groups'],
      schemas: { params: groupIdParams, body: addMemberSchema, response: memberDoc },
      successStatus: 201,
      handler: async (req) => ({ status: 201, body: await groupService.addMember(who(req), req.params.group_id!, bodyOf(req), { logContext: req.logContext }) }),
    },
    {
      method: 'GET',
      path: '/api/group/:group_id/members',
      auth: 'user',
      summary: 'List members (member or admin)',
      tags: ['groups'],
      schemas: { params: groupIdParams, response: membersDoc },
      handler: async (req) => ({ status: 200, body: { members: await groupService.listMembers(who(req), req.params.group_id!) } }),
    },
    {
      method: 'DELETE',
      path: '/api/group/:group_id/members/:user_id',
      auth: 'user',
      summary: 'Remove a member (admin, the creator, a DOCTOR member, or the user itself to leave)',
      tags: ['groups'],
      schemas: { params: memberParams },
      successStatus: 204,
      handler: async (req) => {
        await groupService.removeMember(who(req), req.params.group_id!, req.params.user_id!, { logContext: req.logContext });
        return { status: 204 };
      },
    },
    {
      method: 'POST',
      path: '/api/message/send',
      auth: 'user',
      summary:
        'Send a message (member of the group; admin may set from_user_id). 201 when stored, 200 with the original when client_msg_id was already used by this sender in this group',
      tags: ['messages'],
      schemas: { body: sendMessageSchema(maxContentLength), response: messageDoc },
      successStatus: 201,
      handler: async (req) => {
        const { message, created } = await chatService.send(who(req), bodyOf(req), { transport: 'http', logContext: req.logContext });
        return { status: created ? 201 : 200, body: message };
      },
    },
    {
      method: 'GET',
      path: '/api/message/list',
      auth: 'user',
      summary: 'Page through a group\'s messages (member or admin), ascending seq; after_seq pages forward, before_seq backward',
      tags: ['messages'],
      schemas: { query: listMessagesSchema, response: messagePageDoc },
      handler: async (req) => {
        // the storage wrote the messages' JSON: the body is assembled around it, not re-serialised
        const page = await chatService.listSerialized(who(req), req.query);
        return { status: 200, json: `{"messages":${page.messages_json},"has_more":${page.has_more}}` };
      },
    },
    {
      method: 'GET',
      path: '/api/message/:message_id',
      auth: 'user',
      summary: 'Get a message (member of its group or admin)',
      tags: ['messages'],
      schemas: { params: messageIdParams, response: messageDoc },
      handler: async (req) => ({ status: 200, body: await chatService.get(who(req), req.params.message_id!) }),
    },
  ];
}
