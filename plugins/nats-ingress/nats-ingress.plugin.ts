import { asValue } from 'awilix';
import { definePlugin } from '../../kernel/plugin.js';
import { deliveryRecorder, type IngressStatus, newStats } from '../../lib/broker-payload.js';
import { READINESS_CHECKS, type ReadinessCheck } from '../http/http.public.js';
import { natsIngressOptions, type NatsIngressOptions } from './nats-ingress.schema.js';
import { NatsIngress } from './nats-ingress.service.js';

declare module '../../kernel/container.js' {
  interface Cradle {
    /** Present when `nats-ingress` is enabled: connection state and delivery counters. */
    natsIngress: IngressStatus;
  }
}

/** Per-kernel state, keyed by the kernel's container (no module-level mutable state). */
const runtimes = new WeakMap<object, NatsIngress>();
const factories = new WeakMap<object, () => NatsIngress>();

/**
 * Broker ingress over NATS (API.md §7): subject `im.inbound` in a queue group,
 * or a JetStream durable consumer when `jetstream` is configured. Each payload
 * goes through chatService as its sender; invalid ones go to `im.inbound.dlq`.
 */
export const natsIngressPlugin = definePlugin<NatsIngressOptions>({
  name: 'nats-ingress',
  dependsOn: ['chat'],
  // Started after what reacts to stored messages, so it stops first.
  after: ['metrics', 'http', 'ws', 'ai-router', 'amqp-egress', 'nats-egress', 'cluster'],
  options: natsIngressOptions,
  register({ container, options, logger, contributions }) {
    const stats = newStats();
    factories.set(container, () => {
      const c = container.cradle;
      const ingress = new NatsIngress(
        { ...options, connectionName: options.connectionName ?? `im-nats-ingress@${c.instanceId}` },
        { chatService: c.chatService, clock: c.clock, instanceId: c.instanceId, logger, stats, record: deliveryRecorder(container, 'nats', stats) },
      );
      runtimes.set(container, ingress);
      return ingress;
    });
    container.register({
      natsIngress: asValue<IngressStatus>({
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
      name: 'nats',
      check: () => runtimes.get(container)?.check() ?? Promise.reject(new Error('nats: ingress not started')),
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
