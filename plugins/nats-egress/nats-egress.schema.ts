import Joi from 'joi';
import { brokerUrl } from '../../lib/broker-payload.js';
import { natsConnectionKeys, type NatsConnectionSettings } from '../../lib/nats-connection.js';
import { validateOptions } from '../../lib/validate.js';

/** Section `nats-egress`; the URL comes from the shared section `nats.url` (IM_NATS_URL). */
export interface NatsEgressOptions extends Omit<NatsConnectionSettings, 'connectionName'> {
  url: string;
  /** Default: `im-nats-egress@<instanceId>`. */
  connectionName?: string;
  /** Subjects: `<prefix>.message.<group_id>` and `<prefix>.member.<group_id>`. */
  subjectPrefix: string;
}

const schema = Joi.object({
  subjectPrefix: Joi.string().pattern(/^[^*>\s]+$/).max(200).default('im.events'),
  ...natsConnectionKeys,
});

export function natsEgressOptions(raw: unknown, config: Readonly<Record<string, unknown>>): NatsEgressOptions {
  const url = brokerUrl(config, 'nats', ['nats', 'tls', 'ws', 'wss']);
  return { ...validateOptions(schema, raw), url } as NatsEgressOptions;
}
