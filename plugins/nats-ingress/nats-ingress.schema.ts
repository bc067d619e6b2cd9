import Joi from 'joi';
import { brokerUrl } from '../../lib/broker-payload.js';
import { natsConnectionKeys, natsSharedEndpoint, type NatsConnectionSettings, type NatsEndpoint } from '../../lib/nats-connection.js';
import { validateOptions } from '../../lib/validate.js';

export interface JetStreamIngressOptions {
  /** Stream holding the inbound subject. */
  stream: string;
  /** Durable pull consumer (shared by every instance: the load is spread). */
  durable: string;
  /** Create the stream (subjects: inbound + DLQ) when it does not exist. */
  createStream: boolean;
  /** max_ack_pending of the consumer when this plugin creates it. */
  maxAckPending: number;
  /** ack_wait of the consumer when this plugin creates it. */
  ackWaitMs: number;
}

/** Section `nats-ingress`; the URL and its credentials / TLS come from the shared section `nats` (IM_NATS_*). */
export interface NatsIngressOptions extends Omit<NatsConnectionSettings, 'connectionName'> {
  /** `nats.url` (IM_NATS_URL) with the shared security settings of section `nats` (credentials, TLS). */
  endpoint: NatsEndpoint;
  /** Default: `im-nats-ingress@<instanceId>`. */
  connectionName?: string;
  /** Inbound subject (API.md §7). */
  subject: string;
  /** Subject dead letters are published to. */
  dlqSubject: string;
  /** Core mode: queue group, so instances share the load. */
  queueGroup: string;
  /** Deliveries processed at once (bounded in-flight). */
  maxInFlight: number;
  /** Delay before a retryable failure (storage down) is retried. */
  retryDelayMs: number;
  maxPayloadBytes: number;
  /** Consume a JetStream durable consumer instead of the core subject. */
  jetstream: JetStreamIngressOptions | null;
}

const schema = Joi.object({
  subject: Joi.string().min(1).max(255).default('im.inbound'),
  dlqSubject: Joi.string().min(1).max(255).default('im.inbound.dlq'),
  queueGroup: Joi.string().min(1).max(255).default('im-ingress'),
  maxInFlight: Joi.number().integer().min(1).max(10_000).default(200),
  retryDelayMs: Joi.number().integer().min(0).max(600_000).default(2000),
  maxPayloadBytes: Joi.number().integer().min(64).max(16 * 1024 * 1024).default(64 * 1024),
  jetstream: Joi.object({
    stream: Joi.string().pattern(/^[^.*>\s]+$/).default('IM_INBOUND'),
    durable: Joi.string().pattern(/^[^.*>\s]+$/).default('im-ingress'),
    createStream: Joi.boolean().default(false),
    maxAckPending: Joi.number().integer().min(1).max(1_000_000).default(1000),
    ackWaitMs: Joi.number().integer().min(1000).max(3_600_000).default(30_000),
  })
    .allow(null)
    .default(null),
  ...natsConnectionKeys,
});

export function natsIngressOptions(raw: unknown, config: Readonly<Record<string, unknown>>): NatsIngressOptions {
  const url = brokerUrl(config, 'nats', ['nats', 'tls', 'ws', 'wss']);
  const own = validateOptions(schema, raw);
  return { ...own, endpoint: natsSharedEndpoint(config, url) } as NatsIngressOptions;
}
