import { defineEgressPlugin, type EgressStatus } from '../../lib/egress-plugin.js';
import { amqpEgressOptions } from './amqp-egress.schema.js';
import { AmqpEgress, type EgressStats } from './amqp-egress.service.js';

/** `pending`: events buffered or awaiting a broker confirm. */
export type AmqpEgressStatus = EgressStatus<EgressStats>;

declare module '../../kernel/container.js' {
  interface Cradle {
    /** Present when `amqp-egress` is enabled. */
    amqpEgress: AmqpEgressStatus;
  }
}

/**
 * Broker egress over AMQP: every message stored and every membership change
 * (of local origin, so once per cluster) is published as JSON to the topic
 * exchange `im.events` with routing key `<event>.<group_id>`.
 */
export const amqpEgressPlugin = defineEgressPlugin({
  name: 'amqp-egress',
  transport: 'amqp',
  statusKey: 'amqpEgress',
  options: amqpEgressOptions,
  create: (options, logger) => new AmqpEgress(options, logger),
  notReady: (options) => `amqp: egress not connected (exchange '${options.exchange}')`,
});
