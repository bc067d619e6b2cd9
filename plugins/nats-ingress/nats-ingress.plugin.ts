import type { IngressStatus } from '../../lib/broker-payload.js';
import { defineIngressPlugin } from '../../lib/ingress-plugin.js';
import { natsIngressOptions } from './nats-ingress.schema.js';
import { NatsIngress } from './nats-ingress.service.js';

declare module '../../kernel/container.js' {
  interface Cradle {
    /** Present when `nats-ingress` is enabled: connection state and delivery counters. */
    natsIngress: IngressStatus;
  }
}

/**
 * Broker ingress over NATS (API.md §7): subject `im.inbound` in a queue group,
 * or a JetStream durable consumer when `jetstream` is configured. Each payload
 * goes through chatService as its sender; invalid ones go to `im.inbound.dlq`.
 */
export const natsIngressPlugin = defineIngressPlugin({
  name: 'nats-ingress',
  transport: 'nats',
  statusKey: 'natsIngress',
  options: natsIngressOptions,
  create: (options, deps) => new NatsIngress(options, deps),
});
