import { defineEgressPlugin, type EgressStatus } from '../../lib/egress-plugin.js';
import { NatsCoreEgress, type NatsEgressStats } from './nats-egress.core.js';
import { NatsJetStreamEgress } from './nats-egress.jetstream.js';
import { natsEgressOptions } from './nats-egress.schema.js';

export { subjectOf } from './nats-egress.core.js';

/** `pending`: events held while NATS is away, published after the reconnect (JetStream mode: and those awaiting an acknowledgement). */
export type NatsEgressStatus = EgressStatus<NatsEgressStats>;

declare module '../../kernel/container.js' {
  interface Cradle {
    /** Present when `nats-egress` is enabled. */
    natsEgress: NatsEgressStatus;
  }
}

/**
 * Broker egress over NATS: every message stored and every membership change of
 * local origin (once per cluster) is published as JSON, on core NATS
 * (NatsCoreEgress) or, with `jetstream` set, into a JetStream stream with an
 * acknowledgement per event (NatsJetStreamEgress). Either way events wait in
 * a bounded buffer while NATS is away and go out once it is back; the bus is
 * never blocked.
 */
export const natsEgressPlugin = defineEgressPlugin({
  name: 'nats-egress',
  transport: 'nats',
  statusKey: 'natsEgress',
  options: natsEgressOptions,
  create: (options, logger) => (options.jetstream ? new NatsJetStreamEgress(options, options.jetstream, logger) : new NatsCoreEgress(options, logger)),
  notReady: (options) => (options.jetstream ? `nats: egress not connected or stream '${options.jetstream.stream}' not checked` : 'nats: egress not connected'),
});
