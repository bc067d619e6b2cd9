import Joi from 'joi';
import { amqpConnectionKeys, type AmqpConnectionSettings } from '../../lib/amqp-connection.js';
import { brokerUrl } from '../../lib/broker-payload.js';
import { validateOptions } from '../../lib/validate.js';

/** Section `amqp-ingress`; the URL comes from the shared section `amqp.url` (IM_AMQP_URL). */
export interface AmqpIngressOptions extends Omit<AmqpConnectionSettings, 'connectionName'> {
  /** Default: `im-amqp-ingress@<instanceId>`. */
  connectionName?: string;
  url: string;
  /** Durable queue consumed (API.md §7). */
  queue: string;
  /** Durable dead-letter queue for payloads that will never be accepted. */
  dlq: string;
  /** Unacknowledged deliveries the broker may push to this instance (bounded in-flight). */
  prefetch: number;
  /** Delay before a delivery that failed for a retryable reason (storage down) is requeued. */
  retryDelayMs: number;
  /** Payloads over this size are dead-lettered unparsed. */
  maxPayloadBytes: number;
}

const schema = Joi.object({
  queue: Joi.string().min(1).max(255).default('im.inbound'),
  dlq: Joi.string().min(1).max(255).default('im.inbound.dlq'),
  prefetch: Joi.number().integer().min(1).max(65_535).default(200),
  retryDelayMs: Joi.number().integer().min(0).max(600_000).default(2000),
  maxPayloadBytes: Joi.number().integer().min(64).max(16 * 1024 * 1024).default(64 * 1024),
  ...amqpConnectionKeys,
});

export function amqpIngressOptions(raw: unknown, config: Readonly<Record<string, unknown>>): AmqpIngressOptions {
  const url = brokerUrl(config, 'amqp', ['amqp', 'amqps']);
  return { ...validateOptions(schema, raw), url } as AmqpIngressOptions;
}
