import Joi from 'joi';
import { MSG_TYPES, type MsgType } from '../../kernel/domain.js';
import { AI_TRANSPORT } from '../../kernel/ports/services.port.js';
import { idSchema } from '../../lib/ids.schema.js';

export interface ChatOptions {
  /** Longest msg_content accepted, in characters (UTF-16 code units). */
  maxContentLength: number;
  /**
   * Per-user send rate: `points` sends per `durationSeconds`; 0 points =
   * unlimited. It applies to sends through the listed `transports` (default:
   * the clients' own, http and ws); broker ingress is a trusted back end whose
   * pace is its prefetch / maxInFlight, and AI replies are never limited.
   */
  rateLimit: { points: number; durationSeconds: number; transports: string[] };
  /**
   * How long a confirmed membership is remembered for the send/read checks
   * (ms; 0 = ask storage every time). Removals arriving on the bus (this
   * instance, or others through the cluster bus) end it at once.
   */
  membershipCacheMs: number;
  /** Most memberships remembered. */
  membershipCacheSize: number;
}

export const chatOptionsSchema = Joi.object<ChatOptions>({
  maxContentLength: Joi.number().integer().min(1).max(1_000_000).default(8000),
  rateLimit: Joi.object({
    points: Joi.number().integer().min(0).default(50),
    durationSeconds: Joi.number().integer().min(1).default(1),
    transports: Joi.array()
      // transport names as SendOptions.transport gives them (http, ws, amqp, nats, a plugin's own); never the AI layer's
      .items(Joi.string().pattern(/^[a-z][a-z0-9-]*$/).invalid(AI_TRANSPORT))
      .unique()
      .default(['http', 'ws']),
  }).default(),
  membershipCacheMs: Joi.number().integer().min(0).max(600_000).default(5000),
  membershipCacheSize: Joi.number().integer().min(1).max(10_000_000).default(100_000),
});

export interface SendInput {
  group_id: string;
  msg_type: MsgType;
  msg_content: string;
  client_msg_id?: string;
  from_user_id?: string;
}

/** The send body of API.md §4; content is kept byte-for-byte (no trimming, no escaping). */
export function sendMessageSchema(maxContentLength = 8000): Joi.ObjectSchema<SendInput> {
  return Joi.object<SendInput>({
    group_id: idSchema.required(),
    msg_type: Joi.string().valid(...MSG_TYPES).default('TEXT'),
    msg_content: Joi.string()
      .max(maxContentLength)
      .pattern(/\S/)
      .message('{{#label}} must not be blank') // the rule's own message: see idSchema
      .required(),
    client_msg_id: Joi.string().min(1).max(128),
    from_user_id: idSchema,
  });
}

export interface ListQuery {
  group_id: string;
  after_seq?: number;
  before_seq?: number;
  limit: number;
}

export const listMessagesSchema = Joi.object<ListQuery>({
  group_id: idSchema.required(),
  after_seq: Joi.number().integer().min(0),
  before_seq: Joi.number().integer().min(1),
  limit: Joi.number().integer().min(1).max(200).default(50),
});
