import type { IngressStatus } from '../../lib/broker-payload.js';
import { defineIngressPlugin } from '../../lib/ingress-plugin.js';
import { amqpIngressOptions } from './amqp-ingress.schema.js';
import { AmqpIngress } from './amqp-ingress.service.js';

declare module '../../kernel/container.js' {
  interface Cradle {
    /** Present when `amqp-ingress` is enabled: connection state and delivery counters. */
    amqpIngress: IngressStatus;
  }
}

/**
 * Broker ingress over AMQP (API.md §7): consumes queue `im.inbound`, sends each
 * payload through chatService as its sender, acks after commit, dead-letters
 * invalid payloads to `im.inbound.dlq`, requeues after a delay on outages.
 */
export const amqpIngressPlugin = defineIngressPlugin({
  name: 'amqp-ingress',
  transport: 'amqp',
  statusKey: 'amqpIngress',
  options: amqpIngressOptions,
  create: (options, deps) => new AmqpIngress(options, deps),
});
