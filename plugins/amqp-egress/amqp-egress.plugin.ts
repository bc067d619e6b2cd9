import { asValue } from 'awilix';
import { UnavailableError } from '../../kernel/errors.js';
import { definePlugin } from '../../kernel/plugin.js';
import { exportEgressMetrics, subscribeEgress } from '../../lib/broker-payload.js';
import { READINESS_CHECKS, type ReadinessCheck } from '../http/http.public.js';
import { amqpEgressOptions, type AmqpEgressOptions } from './amqp-egress.schema.js';
import { AmqpEgress, type EgressStats } from './amqp-egress.service.js';

export interface AmqpEgressStatus {
  readonly connected: boolean;
  /** Events buffered or awaiting a broker confirm. */
  readonly pending: number;
  readonly stats: Readonly<EgressStats>;
}

declare module '../../kernel/container.js' {
  interface Cradle {
    /** Present when `amqp-egress` is enabled. */
    amqpEgress: AmqpEgressStatus;
  }
}

interface Runtime {
  egress: AmqpEgress;
  unsubscribe: (() => void) | null;
}

/** Per-kernel state, keyed by the kernel's container. */
const runtimes = new WeakMap<object, Runtime>();

/**
 * Broker egress over AMQP: every message stored and every membership change
 * (of local origin, so once per cluster) is published as JSON to the topic
 * exchange `im.events` with routing key `<event>.<group_id>`.
 */
export const amqpEgressPlugin = definePlugin<AmqpEgressOptions>({
  name: 'amqp-egress',
  after: ['metrics'],
  options: amqpEgressOptions,
  register({ container, options, logger, contributions }) {
    const egress = new AmqpEgress({ ...options, connectionName: options.connectionName ?? `im-amqp-egress@${container.cradle.instanceId}` }, logger);
    runtimes.set(container, { egress, unsubscribe: null });
    container.register({
      amqpEgress: asValue<AmqpEgressStatus>({
        get connected() {
          return egress.connected;
        },
        get pending() {
          return egress.pending;
        },
        get stats() {
          return egress.stats;
        },
      }),
    });
    const check: ReadinessCheck = {
      name: 'amqp-egress',
      check: async () => {
        if (!egress.connected) throw new UnavailableError(`amqp: egress not connected (exchange '${options.exchange}')`);
      },
    };
    contributions.add(READINESS_CHECKS, check);
    exportEgressMetrics(container, 'amqp', egress);
  },
  async start({ container }) {
    const rt = runtimes.get(container)!;
    const { bus, instanceId } = container.cradle;
    // Subscribe first: events stored while the broker is still connecting are buffered.
    rt.unsubscribe = subscribeEgress(bus, instanceId, (e) => rt.egress.enqueue(e));
    await rt.egress.start();
  },
  async stop({ container }) {
    const rt = runtimes.get(container);
    if (!rt) return;
    rt.unsubscribe?.();
    rt.unsubscribe = null;
    await rt.egress.stop();
  },
});
