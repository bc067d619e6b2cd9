import Joi from 'joi';
import { MSG_TYPES, USER_ROLES } from '../../../kernel/domain.js';
import { idSchema } from '../../../lib/ids.schema.js';
import { natsSecurityKeys, withNatsSecurityRules, type NatsEndpoint, type NatsSecurity } from '../../../lib/nats-connection.js';

/**
 * Settings of the NATS cluster bus (config section `cluster`; the URL may come
 * from `nats.url`). The credentials / TLS keys (lib/nats-connection.ts) are
 * allowed here only together with `cluster.url`: without it the bus uses
 * `nats.url` and the security settings of section `nats`.
 */
export interface NatsClusterSettings extends Partial<Omit<NatsSecurity, 'tls'>> {
  tls?: NatsSecurity['tls'];
  /** NATS server URL(s), comma-separated: `cluster.url`, else `nats.url` (IM_NATS_URL). */
  url: string;
  /** Subjects are `<subjectPrefix>.<event name>`; every instance of one deployment must use the same prefix. */
  subjectPrefix: string;
  /** First reconnect delay; doubles per failed attempt up to reconnectMaxMs (plus up to 20 % jitter). Reconnects never give up. */
  reconnectMinMs: number;
  reconnectMaxMs: number;
  /** Limit for the first connection (start fails after it) and for each handshake. */
  connectTimeoutMs: number;
  /** On stop: how long draining (deliver what is pending, then close) may take before the connection is closed outright. */
  drainTimeoutMs: number;
  /** Local events kept while disconnected, sent after the reconnect; beyond it the oldest are dropped. */
  outboxMaxEvents: number;
}

/** The validated settings plus the resolved connection (servers, credentials, TLS). */
export interface NatsClusterOptions extends NatsClusterSettings {
  endpoint: NatsEndpoint;
}

const serverUrl = Joi.string().pattern(/^(nats|tls|ws|wss):\/\/\S+$|^[A-Za-z0-9.-]+:\d+$/);

export const natsClusterOptionsSchema = withNatsSecurityRules(Joi.object<NatsClusterSettings>({
  url: Joi.string()
    .required()
    .custom((v: string, helpers) => {
      for (const part of v.split(',')) {
        if (serverUrl.validate(part.trim()).error) return helpers.error('string.natsUrl', { part: part.trim() });
      }
      return v;
    })
    .messages({
      'any.required': 'is required: set cluster.url, nats.url or IM_NATS_URL',
      'string.natsUrl': "'{{#part}}' is not a NATS URL (nats://host:port)",
    }),
  subjectPrefix: Joi.string()
    .pattern(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/)
    .default('im.cluster')
    .messages({ 'string.pattern.base': 'must be dot-separated tokens of letters, digits, _ and - (no wildcards)' }),
  reconnectMinMs: Joi.number().integer().min(10).max(60_000).default(250),
  reconnectMaxMs: Joi.number().integer().min(10).max(600_000).default(10_000),
  connectTimeoutMs: Joi.number().integer().min(100).max(120_000).default(5_000),
  drainTimeoutMs: Joi.number().integer().min(0).max(60_000).default(5_000),
  outboxMaxEvents: Joi.number().integer().min(0).max(1_000_000).default(10_000),
  ...natsSecurityKeys,
}));

/** What travels on NATS: one bus event and the instance that published it. */
export interface ClusterEnvelope {
  v: 1;
  instance_id: string;
  name: string;
  payload: Record<string, unknown>;
}

export const clusterEnvelopeSchema = Joi.object<ClusterEnvelope>({
  v: Joi.number().valid(1).required(),
  instance_id: Joi.string().min(1).max(128).required(),
  name: Joi.string()
    .pattern(/^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$/)
    .max(128)
    .required(),
  payload: Joi.object().required(),
});

const iso = Joi.string().isoDate();

const messageSchema = Joi.object({
  message_id: Joi.string().min(1).max(128).required(),
  group_id: idSchema.required(),
  seq: Joi.number().integer().min(1).required(),
  from_user_id: idSchema.required(),
  msg_type: Joi.string()
    .valid(...MSG_TYPES)
    .required(),
  msg_content: Joi.string().allow('').required(),
  client_msg_id: Joi.string().allow(null).required(),
  created_at: iso.required(),
}).unknown(true);

const memberSchema = Joi.object({
  group_id: idSchema.required(),
  user_id: idSchema.required(),
  user_role: Joi.string()
    .valid(...USER_ROLES)
    .required(),
  joined_at: iso.required(),
}).unknown(true);

const memberEvent = Joi.object({ member: memberSchema.required() }).unknown(true);

/**
 * Payload schemas of the kernel's own events. Events added by plugins (bus
 * augmentation) are relayed as objects: the plugin that defines them checks
 * meta.origin and validates what it needs.
 */
export const EVENT_PAYLOAD_SCHEMAS: Readonly<Record<string, Joi.ObjectSchema>> = {
  'message.stored': Joi.object({ message: messageSchema.required(), transport: Joi.string().max(64).required() }).unknown(true),
  'member.added': memberEvent,
  'member.removed': memberEvent,
  'group.notify': Joi.object({
    group_id: idSchema.required(),
    frame: Joi.object({ type: Joi.string().min(1).max(64).required() }).unknown(true).required(),
  }).unknown(true),
};
