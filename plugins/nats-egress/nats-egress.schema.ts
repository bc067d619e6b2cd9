import Joi from 'joi';
import { brokerUrl } from '../../lib/broker-payload.js';
import { natsConnectionKeys, natsSharedEndpoint, type NatsConnectionSettings, type NatsEndpoint } from '../../lib/nats-connection.js';
import { validateOptions } from '../../lib/validate.js';

/** JetStream mode: every event is published with an acknowledgement (the stream has stored it) and retried until it has one. */
export interface JetStreamEgressOptions {
  /** Stream capturing `<subjectPrefix>.>`. */
  stream: string;
  /** Create the stream (subjects `<subjectPrefix>.>`, file storage) when it does not exist; otherwise a missing stream fails start-up. */
  createStream: boolean;
  /** Publishes awaiting their acknowledgement at once. */
  maxUnconfirmed: number;
  /** Attempts per event before it is dropped (no acknowledgement in time, no stream answering, a connection lost before the acknowledgement). */
  maxAttempts: number;
  /** How long one publish waits for its acknowledgement. */
  ackTimeoutMs: number;
  /** How long stop() waits for buffered events to be acknowledged. */
  drainTimeoutMs: number;
}

/** Section `nats-egress`; the URL and its credentials / TLS come from the shared section `nats` (IM_NATS_*). */
export interface NatsEgressOptions extends Omit<NatsConnectionSettings, 'connectionName'> {
  /** `nats.url` (IM_NATS_URL) with the shared security settings of section `nats` (credentials, TLS). */
  endpoint: NatsEndpoint;
  /** Default: `im-nats-egress@<instanceId>`. */
  connectionName?: string;
  /** Subjects: `<prefix>.message.<group_id>` and `<prefix>.member.<group_id>`. */
  subjectPrefix: string;
  /** Events held while NATS is away (JetStream mode: and those awaiting an acknowledgement); beyond it new events are dropped (logged and counted). */
  maxBuffer: number;
  /** Publish into a JetStream stream with acknowledgements instead of core NATS (null: core mode). */
  jetstream: JetStreamEgressOptions | null;
}

const schema = Joi.object({
  subjectPrefix: Joi.string().pattern(/^[^*>\s]+$/).max(200).default('im.events'),
  maxBuffer: Joi.number().integer().min(1).max(1_000_000).default(10_000),
  jetstream: Joi.object({
    stream: Joi.string()
      .pattern(/^[^.*>\s]+$/)
      .max(255)
      .default('IM_EVENTS')
      .messages({ 'string.pattern.base': "must be a stream name (no '.', '*', '>' or spaces)" }),
    createStream: Joi.boolean().default(false),
    maxUnconfirmed: Joi.number().integer().min(1).max(100_000).default(1000),
    maxAttempts: Joi.number().integer().min(1).max(100).default(5),
    ackTimeoutMs: Joi.number().integer().min(100).max(120_000).default(5000),
    drainTimeoutMs: Joi.number().integer().min(0).max(120_000).default(5000),
  })
    .allow(null)
    .default(null),
  ...natsConnectionKeys,
});

export function natsEgressOptions(raw: unknown, config: Readonly<Record<string, unknown>>): NatsEgressOptions {
  const url = brokerUrl(config, 'nats', ['nats', 'tls', 'ws', 'wss']);
  const own = validateOptions(schema, raw);
  return { ...own, endpoint: natsSharedEndpoint(config, url) } as NatsEgressOptions;
}
