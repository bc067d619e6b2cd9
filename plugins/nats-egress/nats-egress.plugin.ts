import { asValue } from 'awilix';
import { UnavailableError } from '../../kernel/errors.js';
import { definePlugin } from '../../kernel/plugin.js';
import { exportEgressMetrics, subscribeEgress } from '../../lib/broker-payload.js';
import { READINESS_CHECKS, type ReadinessCheck } from '../http/http.public.js';
import { NatsCoreEgress, type NatsEgress, type NatsEgressStats } from './nats-egress.core.js';
import { NatsJetStreamEgress } from './nats-egress.jetstream.js';
import { natsEgressOptions, type NatsEgressOptions } from './nats-egress.schema.js';

export { subjectOf } from './nats-egress.core.js';

export interface NatsEgressStatus {
  readonly connected: boolean;
  /** Events held while NATS is away, published after the reconnect (JetStream mode: and those awaiting an acknowledgement). */
  readonly pending: number;
  readonly stats: Readonly<NatsEgressStats>;
}

declare module '../../kernel/container.js' {
  interface Cradle {
    /** Present when `nats-egress` is enabled. */
    natsEgress: NatsEgressStatus;
  }
}

interface Runtime {
  egress: NatsEgress;
  unsubscribe: (() => void) | null;
}

/** Per-kernel state, keyed by the kernel's container. */
const runtimes = new WeakMap<object, Runtime>();

/**
 * Broker egress over NATS: every message stored and every membership change of
 * local origin (once per cluster) is published as JSON, on core NATS
 * (NatsCoreEgress) or, with `jetstream` set, into a JetStream stream with an
 * acknowledgement per event (NatsJetStreamEgress). Either way events wait in
 * a bounded buffer while NATS is away and go out once it is back; the bus is
 * never blocked.
 */
export const natsEgressPlugin = definePlugin<NatsEgressOptions>({
  name: 'nats-egress',
  after: ['metrics'],
  options: natsEgressOptions,
  register({ container, options, logger, contributions }) {
    const settings = { ...options, connectionName: options.connectionName ?? `im-nats-egress@${container.cradle.instanceId}` };
    const egress: NatsEgress = options.jetstream ? new NatsJetStreamEgress(settings, options.jetstream, logger) : new NatsCoreEgress(settings, logger);
    runtimes.set(container, { egress, unsubscribe: null });
    container.register({
      natsEgress: asValue<NatsEgressStatus>({
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
      name: 'nats-egress',
      check: async () => {
        if (!egress.connected) throw new UnavailableError(options.jetstream ? `nats: egress not connected or stream '${options.jetstream.stream}' not checked` : 'nats: egress not connected');
      },
    };
    contributions.add(READINESS_CHECKS, check);
    exportEgressMetrics(container, 'nats', egress);
  },
  async start({ container }) {
    const rt = runtimes.get(container)!;
    const { bus, instanceId } = container.cradle;
    // subscribed first: events stored while the first connection is being made wait in the buffer
    rt.unsubscribe = subscribeEgress(bus, instanceId, (e) => rt.egress.enqueue(e));
    try {
      await rt.egress.start();
    } catch (err) {
      // a failed start is not followed by stop()
      rt.unsubscribe();
      rt.unsubscribe = null;
      throw err;
    }
  },
  async stop({ container }) {
    const rt = runtimes.get(container);
    if (!rt) return;
    rt.unsubscribe?.();
    rt.unsubscribe = null;
    await rt.egress.stop();
  },
});
