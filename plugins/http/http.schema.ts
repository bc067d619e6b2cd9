import Joi from 'joi';
import { MSG_TYPES, USER_ROLES } from '../../kernel/domain.js';
import { idSchema } from '../../lib/ids.schema.js';

export interface HttpOptions {
  /** Interface to bind (IM_HTTP_PORT sets the port only). */
  host: string;
  /** TCP port; 0 = an ephemeral port (tests), see `httpAddress`. */
  port: number;
  /** Largest accepted request body in bytes (413 above it). */
  bodyLimit: number;
  /** How long stop() lets in-flight requests finish before closing their connections. */
  shutdownGraceMs: number;
  /** Trust X-Forwarded-For / X-Forwarded-Proto (behind a load balancer). */
  trustProxy: boolean;
  /** Time limit of each /readyz check. */
  readinessTimeoutMs: number;
}

export const httpOptionsSchema = Joi.object<HttpOptions>({
  host: Joi.string().min(1).default('0.0.0.0'),
  port: Joi.number().integer().min(0).max(65535).default(8000),
  bodyLimit: Joi.number().integer().min(1).max(64 * 1024 * 1024).default(65536),
  shutdownGraceMs: Joi.number().integer().min(0).max(600_000).default(10_000),
  trustProxy: Joi.boolean().default(false),
  readinessTimeoutMs: Joi.number().integer().min(10).max(60_000).default(2000),
});

/*
 * Response shapes for the OpenAPI document only (requests are validated by the
 * services with their own schemas, which the route table references). They
 * describe kernel/domain.ts and API.md §3.
 */
const timestamp = Joi.string().isoDate().description('ISO-8601 UTC');

export const userDoc = Joi.object({
  user_id: idSchema.required(),
  username: Joi.string().required(),
  user_role: Joi.string().valid(...USER_ROLES).required(),
  created_at: timestamp.required(),
  updated_at: timestamp.required(),
}).label('User');

export const groupDoc = Joi.object({
  group_id: idSchema.required(),
  group_name: Joi.string().required(),
  description: Joi.string().allow(null).required(),
  created_by: idSchema.required(),
  created_at: timestamp.required(),
  updated_at: timestamp.required(),
}).label('Group');

export const memberDoc = Joi.object({
  group_id: idSchema.required(),
  user_id: idSchema.required(),
  user_role: Joi.string().valid(...USER_ROLES).required(),
  joined_at: timestamp.required(),
}).label('Member');

export const messageDoc = Joi.object({
  message_id: Joi.string().required(),
  group_id: idSchema.required(),
  seq: Joi.number().integer().min(1).required(),
  from_user_id: idSchema.required(),
  msg_type: Joi.string().valid(...MSG_TYPES).required(),
  msg_content: Joi.string().required(),
  client_msg_id: Joi.string().allow(null).required(),
  created_at: timestamp.required(),
}).label('Message');

export const groupsDoc = Joi.object({ groups: Joi.array().items(groupDoc).required() });
export const membersDoc = Joi.object({ members: Joi.array().items(memberDoc).required() });
export const messagePageDoc = Joi.object({
  messages: Joi.array().items(messageDoc).required().description('ascending seq'),
  has_more: Joi.boolean().required(),
});

export const errorDoc = Joi.object({
  error: Joi.object({
    code: Joi.string()
      .valid(
        'VALIDATION_FAILED',
        'INVALID_JSON',
        'UNAUTHENTICATED',
        'FORBIDDEN',
        'NOT_FOUND',
        'CONFLICT',
        'PAYLOAD_TOO_LARGE',
        'RATE_LIMITED',
        'UNAVAILABLE',
        'INTERNAL',
      )
      .required(),
    message: Joi.string().required(),
    details: Joi.array()
      .items(Joi.object({ path: Joi.string().required(), message: Joi.string().required() }))
      .required(),
  }).required(),
}).label('Error');

export const healthDoc = Joi.object({ status: Joi.string().valid('ok').required() });
export const readyDoc = Joi.object({
  status: Joi.string().valid('ok').required(),
  checks: Joi.object().pattern(Joi.string(), Joi.string().valid('ok')).required(),
});

/** Path parameters. */
export const userIdParams = Joi.object({ user_id: idSchema.required() });
export const groupIdParams = Joi.object({ group_id: idSchema.required() });
export const memberParams = Joi.object({ group_id: idSchema.required(), user_id: idSchema.required() });
export const messageIdParams = Joi.object({ message_id: Joi.string().min(1).max(64).required() });

/** Incoming X-Request-Id values kept as they are; anything else is replaced by a generated id. */
export const REQUEST_ID_PATTERN = /^[A-Za-z0-9._:@-]{1,128}$/;
