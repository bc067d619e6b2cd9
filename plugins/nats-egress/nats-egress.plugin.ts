import { asValue } from 'awilix';
import { headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import { UnavailableError } from '../../kernel/errors.js';
import { withContext } from '../../kernel/logger.js';
import { definePlugin } from '../../kernel/plugin.js';
import { type EgressEvent, subscribeEgress } from '../../lib/broker-payload.js';
import { NatsConnectionManager } from '../../lib/nats-connection.js';
import { READINESS_CHECKS, type ReadinessCheck } from '../http/http.public.js';
import { natsEgressOptions, type NatsEgressOptions } from './nats-egress.schema.js';

export interface NatsEgressStatus {
  readonly connected: boolean;
  /** Events held while NATS is away, published after the reconnect. */
  readonly pending: number;
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
  /** Events of the time NATS was away (the client itself discards what it buffered on every reconnect attempt). */
  queue: EgressEvent[];
  /** The bus handler: publish now, or hold while disconnected. */
  enqueue: (e: EgressEvent) => void;
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
 * local origin (once per cluster) is published as JSON. While NATS is away
 * (before the first connection, during a reconnect) events wait in a bounded
 * buffer of this plugin and are published, in order, once the connection is
 * back: the NATS client's own buffer cannot be relied on, it is reset on every
 * reconnect attempt. Beyond `maxBuffer`, and for a publish the client refuses,
 * the event is dropped, logged and counted; the bus is never blocked.
 */
export const natsEgressPlugin = definePlugin<NatsEgressOptions>({
  name: 'nats-egress',
  after: ['metrics'],
  options: natsEgressOptions,
  register({ container, options, logger, contributions }) {
    const stats = { published: 0, dropped: 0 };
    const queue: EgressEvent[] = [];
    const publish = (nc: NatsConnection, e: EgressEvent): void => {
      try {
        const h = natsHeaders();
        // JetStream de-duplication when a stream captures the subject
        h.set('Nats-Msg-Id', e.id);
        h.set('im-event', e.event);
        nc.publish(subjectOf(options.subjectPrefix, e), e.body, { headers: h });
        stats.published += 1;
      } catch (err) {
        stats.dropped += 1;
        withContext(logger, e.logContext).error({ err: (err as Error).message, event: e.event, group_id: e.group_id, id: e.id }, 'nats egress publish failed: event dropped');
      }
    };
    const conn = new NatsConnectionManager(
      options.endpoint,
      { ...options, connectionName: options.connectionName ?? `im-nats-egress@${container.cradle.instanceId}` },
      logger,
      async () => undefined,
      // connected again: what waited goes out first, in order
      (nc) => {
        const items = queue.splice(0);
        for (const e of items) publish(nc, e);
        if (items.length > 0) logger.info({ published: items.length }, 'nats egress: events held while disconnected published');
      },
    );
    const enqueue = (e: EgressEvent): void => {
      const nc = conn.connection;
      if (conn.connected && nc && queue.length === 0) return publish(nc, e);
      if (queue.length >= options.maxBuffer) {
        stats.dropped += 1;
        withContext(logger, e.logContext).error({ event: e.event, group_id: e.group_id, id: e.id, buffered: queue.length }, 'nats egress buffer full: event dropped');
        return;
      }
      queue.push(e);
    };
    const rt: Runtime = { conn, stats, queue, enqueue, unsubscribe: null };
    runtimes.set(container, rt);
    container.register({
      natsEgress: asValue<NatsEgressStatus>({
        get connected() {
          return conn.connected;
        },
        get pending() {
          return queue.length;
        },
        get stats() {
          return stats;
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
  async start({ container }) {
    const rt = runtimes.get(container)!;
    const { bus, instanceId } = container.cradle;
    // subscribed first: events stored while the first connection is being made wait in the buffer
    rt.unsubscribe = subscribeEgress(bus, instanceId, rt.enqueue);
    await rt.conn.open();
  },
  async stop({ container, logger }) {
    const rt = runtimes.get(container);
    if (!rt) return;
    rt.unsubscribe?.();
    rt.unsubscribe = null;
    // drain flushes what the client still buffers
    await rt.conn.close(true);
    if (rt.queue.length > 0) {
      // NATS was away until the end: these were never published
      rt.stats.dropped += rt.queue.length;
      logger.error({ dropped: rt.queue.length, ids: rt.queue.slice(0, 20).map((e) => e.id) }, 'nats egress stopped while disconnected: buffered events dropped');
      rt.queue.length = 0;
    }
  },
});
