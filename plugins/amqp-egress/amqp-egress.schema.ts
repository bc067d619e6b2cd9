import Joi from 'joi';
import { amqpConnectionKeys, type AmqpConnectionSettings } from '../../lib/amqp-connection.js';
import { brokerUrl } from '../../lib/broker-payload.js';
import { validateOptions } from '../../lib/validate.js';

/** Section `amqp-egress`; the URL comes from the shared section `amqp.url` (IM_AMQP_URL). */
export interface AmqpEgressOptions extends Omit<AmqpConnectionSettings, 'connectionName'> {
  url: string;
  /** Default: `im-amqp-egress@<instanceId>`. */
  connectionName?: string;
  /** Durable topic exchange the events are published to. */
  exchange: string;
  /** Events waiting to be published or confirmed; beyond it new events are dropped (logged and counted). */
  maxBuffer: number;
  /** Publishes awaiting a broker confirm at once. */
  maxUnconfirmed: number;
  /** Attempts per event before it is dropped (a nack or a channel lost before the confirm). */
  maxAttempts: number;
  /** How long stop() waits for buffered events to be confirmed. */
  drainTimeoutMs: number;
}

const schema = Joi.object({
  exchange: Joi.string().min(1).max(255).default('im.events'),
  maxBuffer: Joi.number().integer().min(1).max(1_000_000).default(10_000),
  maxUnconfirmed: Joi.number().integer().min(1).max(100_000).default(1000),
  maxAttempts: Joi.number().integer().min(1).max(100).default(5),
  drainTimeoutMs: Joi.number().integer().min(0).max(120_000).default(5000),
  ...amqpConnectionKeys,
});

export function amqpEgressOptions(raw: unknown, config: Readonly<Record<string, unknown>>): AmqpEgressOptions {
  const url = brokerUrl(config, 'amqp', ['amqp', 'amqps']);
  return { ...validateOptions(schema, raw), url } as AmqpEgressOptions;
}
