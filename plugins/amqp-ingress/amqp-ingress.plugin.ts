import { asValue } from 'awilix';
import { definePlugin } from '../../kernel/plugin.js';
import { deliveryRecorder, type IngressStatus, newStats } from '../../lib/broker-payload.js';
import { READINESS_CHECKS, type ReadinessCheck } from '../http/http.public.js';
import { amqpIngressOptions, type AmqpIngressOptions } from './amqp-ingress.schema.js';
import { AmqpIngress } from './amqp-ingress.service.js';

declare module '../../kernel/container.js' {
  interface Cradle {
    /** Present when `amqp-ingress` is enabled: connection state and delivery counters. */
    amqpIngress: IngressStatus;
  }
}

/** Per-kernel instance, keyed by the kernel's container (no module-level mutable state). */
const runtimes = new WeakMap<object, AmqpIngress>();
const factories = new WeakMap<object, () => AmqpIngress>();

/**
 * Broker ingress over AMQP (API.md §7): consumes queue `im.inbound`, sends each
 * payload through chatService as its sender, acks after commit, dead-letters
 * invalid payloads to `im.inbound.dlq`, requeues after a delay on outages.
 */
export const amqpIngressPlugin = definePlugin<AmqpIngressOptions>({
  name: 'amqp-ingress',
  dependsOn: ['chat'],
  // Started after the transports and egress that react to what it stores, so it stops first.
  after: ['metrics', 'http', 'ws', 'ai-router', 'amqp-egress', 'nats-egress', 'cluster'],
  options: amqpIngressOptions,
  register({ container, options, logger, contributions }) {
    const stats = newStats();
    // built in start(): chatService and the metrics registry are resolved once every unit has registered
    factories.set(container, () => {
      const c = container.cradle;
      const ingress = new AmqpIngress(
        { ...options, connectionName: options.connectionName ?? `im-amqp-ingress@${c.instanceId}` },
        { chatService: c.chatService, clock: c.clock, instanceId: c.instanceId, logger, stats, record: deliveryRecorder(container, 'amqp', stats) },
      );
      runtimes.set(container, ingress);
      return ingress;
    });
    container.register({
      amqpIngress: asValue<IngressStatus>({
        get connected() {
          return runtimes.get(container)?.connected ?? false;
        },
        get stats() {
          return stats;
        },
        get inFlight() {
          return runtimes.get(container)?.inFlight ?? 0;
        },
      }),
    });
    const check: ReadinessCheck = {
      name: 'amqp',
      check: () => runtimes.get(container)?.check() ?? Promise.reject(new Error('amqp: ingress not started')),
    };
    contributions.add(READINESS_CHECKS, check);
  },
  async start({ container }) {
    await factories.get(container)!().start();
  },
  async stop({ container }) {
    await runtimes.get(container)?.stop();
  },
});
