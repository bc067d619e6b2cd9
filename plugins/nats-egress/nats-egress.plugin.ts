import { asValue } from 'awilix';
import { headers as natsHeaders } from '@nats-io/transport-node';
import { UnavailableError } from '../../kernel/errors.js';
import { definePlugin } from '../../kernel/plugin.js';
import { type EgressEvent, subscribeEgress } from '../../lib/broker-payload.js';
import { NatsConnectionManager } from '../../lib/nats-connection.js';
import { READINESS_CHECKS, type ReadinessCheck } from '../http/http.public.js';
import { natsEgressOptions, type NatsEgressOptions } from './nats-egress.schema.js';

export interface NatsEgressStatus {
  readonly connected: boolean;
  readonly stats: Readonly<{ published: number; dropped: number }>;
}

declare module '../../kernel/container.js' {
  interface Cradle {
    /** Present when `nats-egress` is enabled. */
    natsEgress: NatsEgressStatus;
  }
}

interface Runtime {
  conn: NatsConnectionManager;
  stats: { published: number; dropped: number };
  unsubscribe: (() => void) | null;
}

/** Per-kernel state, keyed by the kernel's container. */
const runtimes = new WeakMap<object, Runtime>();

/** `im.events.message.<group_id>` for messages, `im.events.member.<group_id>` for membership changes. */
export function subjectOf(prefix: string, e: EgressEvent): string {
  return `${prefix}.${e.event === 'message.stored' ? 'message' : 'member'}.${e.group_id}`;
}

/**
 * Broker egress over NATS: every message stored and every membership change of
 * local origin (once per cluster) is published as JSON. The client buffers
 * while it reconnects; a publish it refuses is logged and counted, never
 * blocking the bus.
 */
export const natsEgressPlugin = definePlugin<NatsEgressOptions>({
  name: 'nats-egress',
  after: ['metrics'],
  options: natsEgressOptions,
  register({ container, options, logger, contributions }) {
    const conn = new NatsConnectionManager(
      options.endpoint,
      { ...options, connectionName: options.connectionName ?? `im-nats-egress@${container.cradle.instanceId}` },
      logger,
      async () => undefined,
    );
    const rt: Runtime = { conn, stats: { published: 0, dropped: 0 }, unsubscribe: null };
    runtimes.set(container, rt);
    container.register({
      natsEgress: asValue<NatsEgressStatus>({
        get connected() {
          return conn.connected;
        },
        get stats() {
          return rt.stats;
        },
      }),
    });
    const check: ReadinessCheck = {
      name: 'nats-egress',
      check: async () => {
        if (!conn.connected) throw new UnavailableError('nats: egress not connected');
      },
    };
    contributions.add(READINESS_CHECKS, check);
  },
  async start({ container, options, logger }) {
    const rt = runtimes.get(container)!;
    const { bus, instanceId } = container.cradle;
    rt.unsubscribe = subscribeEgress(bus, instanceId, (e) => {
      const nc = rt.conn.connection;
      const subject = subjectOf(options.subjectPrefix, e);
      if (!nc || nc.isClosed()) {
        rt.stats.dropped += 1;
        logger.error({ event: e.event, group_id: e.group_id, id: e.id }, 'nats egress not connected: event dropped');
        return;
      }
      try {
        const h = natsHeaders();
        // JetStream de-duplication when a stream captures the subject
        h.set('Nats-Msg-Id', e.id);
        h.set('im-event', e.event);
        nc.publish(subject, e.body, { headers: h });
        rt.stats.published += 1;
      } catch (err) {
        rt.stats.dropped += 1;
        logger.error({ err: (err as Error).message, event: e.event, group_id: e.group_id, id: e.id }, 'nats egress publish failed: event dropped');
      }
    });
    await rt.conn.open();
  },
  async stop({ container }) {
    const rt = runtimes.get(container);
    if (!rt) return;
    rt.unsubscribe?.();
    rt.unsubscribe = null;
    // drain flushes what the client still buffers
    await rt.conn.close(true);
  },
});
