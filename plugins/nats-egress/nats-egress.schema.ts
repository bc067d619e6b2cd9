import Joi from 'joi';
import { brokerUrl } from '../../lib/broker-payload.js';
import { natsConnectionKeys, natsSharedEndpoint, type NatsConnectionSettings, type NatsEndpoint } from '../../lib/nats-connection.js';
import { validateOptions } from '../../lib/validate.js';

/** Section `nats-egress`; the URL and its credentials / TLS come from the shared section `nats` (IM_NATS_*). */
export interface NatsEgressOptions extends Omit<NatsConnectionSettings, 'connectionName'> {
  /** `nats.url` (IM_NATS_URL) with the shared security settings of section `nats` (credentials, TLS). */
  endpoint: NatsEndpoint;
  /** Default: `im-nats-egress@<instanceId>`. */
  connectionName?: string;
  /** Subjects: `<prefix>.message.<group_id>` and `<prefix>.member.<group_id>`. */
  subjectPrefix: string;
  /** Events held while NATS is away (published after the reconnect); beyond it new events are dropped (logged and counted). */
  maxBuffer: number;
}

const schema = Joi.object({
  subjectPrefix: Joi.string().pattern(/^[^*>\s]+$/).max(200).default('im.events'),
  maxBuffer: Joi.number().integer().min(1).max(1_000_000).default(10_000),
  ...natsConnectionKeys,
});

export function natsEgressOptions(raw: unknown, config: Readonly<Record<string, unknown>>): NatsEgressOptions {
  const url = brokerUrl(config, 'nats', ['nats', 'tls', 'ws', 'wss']);
  const own = validateOptions(schema, raw);
  return { ...own, endpoint: natsSharedEndpoint(config, url) } as NatsEgressOptions;
}
