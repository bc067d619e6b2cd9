import { headers as natsHeaders, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../../kernel/logger.js';
import { logEgressEvent, type EgressEvent } from '../../lib/broker-payload.js';
import type { EgressRuntime } from '../../lib/egress-plugin.js';
import { NatsConnectionManager } from '../../lib/nats-connection.js';
import type { NatsEgressOptions } from './nats-egress.schema.js';

export interface NatsEgressStats {
  /** Core mode: handed to the client; JetStream mode: acknowledged by the stream. */
  published: number;
  /** Not published: past maxBuffer, refused by the client (core mode), still buffered at stop. */
  dropped: number;
  /** JetStream mode: dropped after maxAttempts publishes without an acknowledgement. */
  failed: number;
  /** JetStream mode: acknowledgements saying the stream already had the event (a retry after a lost acknowledgement; not stored twice). */
  duplicate: number;
}

/** One mode of the plugin (core NATS, JetStream). */
export type NatsEgress = EgressRuntime<NatsEgressStats>;

export type NatsEgressSettings = NatsEgressOptions & { connectionName: string };

/** `im.events.message.<group_id>` for messages, `im.events.member.<group_id>` for membership changes. */
export function subjectOf(prefix: string, e: EgressEvent): string {
  return `${prefix}.${e.event === 'message.stored' ? 'message' : 'member'}.${e.group_id}`;
}

/** `Nats-Msg-Id` (JetStream de-duplication) and `im-event`. */
export function eventHeaders(e: EgressEvent): MsgHdrs {
  const h = natsHeaders();
  h.set('Nats-Msg-Id', e.id);
  h.set('im-event', e.event);
  return h;
}

/** The line for an event dropped because the buffer is full (both modes). */
export function logBufferFull(logger: Logger, e: EgressEvent, buffered: number): void {
  logEgressEvent(logger, 'error', e, 'nats egress buffer full: event dropped', { buffered });
}

/**
 * Core NATS: `nc.publish`, no confirmation. While NATS is away (before the
 * first connection, during a reconnect) events wait in a bounded buffer of
 * this class and are published, in order, once the connection is back: the
 * NATS client's own buffer cannot be relied on, it is reset on every
 * reconnect attempt. Beyond `maxBuffer`, and for a publish the client
 * refuses, the event is dropped, logged and counted.
 */
export class NatsCoreEgress implements NatsEgress {
  private readonly conn: NatsConnectionManager;
  /** Events of the time NATS was away (the client itself discards what it buffered on every reconnect attempt). */
  private readonly queue: EgressEvent[] = [];
  readonly stats: NatsEgressStats = { published: 0, dropped: 0, failed: 0, duplicate: 0 };

  constructor(
    private readonly opts: NatsEgressSettings,
    private readonly logger: Logger,
  ) {
    this.conn = new NatsConnectionManager(
      opts.endpoint,
      opts,
      logger,
      async () => undefined,
      // connected again: what waited goes out first, in order
      (nc) => {
        const items = this.queue.splice(0);
        for (const e of items) this.publish(nc, e);
        if (items.length > 0) logger.info({ published: items.length }, 'nats egress: events held while disconnected published');
      },
    );
  }

  get connected(): boolean {
    return this.conn.connected;
  }

  /** Events held while NATS is away, published after the reconnect. */
  get pending(): number {
    return this.queue.length;
  }

  private publish(nc: NatsConnection, e: EgressEvent): void {
    try {
      nc.publish(subjectOf(this.opts.subjectPrefix, e), e.body, { headers: eventHeaders(e) });
      this.stats.published += 1;
    } catch (err) {
      this.stats.dropped += 1;
      logEgressEvent(this.logger, 'error', e, 'nats egress publish failed: event dropped', { err: (err as Error).message });
    }
  }

  enqueue(e: EgressEvent): void {
    const nc = this.conn.connection;
    if (this.conn.connected && nc && this.queue.length === 0) return this.publish(nc, e);
    if (this.queue.length >= this.opts.maxBuffer) {
      this.stats.dropped += 1;
      logBufferFull(this.logger, e, this.queue.length);
      return;
    }
    this.queue.push(e);
  }

  async start(): Promise<void> {
    await this.conn.open();
  }

  async stop(): Promise<void> {
    // drain flushes what the client still buffers
    await this.conn.close(true);
    if (this.queue.length > 0) {
      // NATS was away until the end: these were never published
      this.stats.dropped += this.queue.length;
      this.logger.error({ dropped: this.queue.length, ids: this.queue.slice(0, 20).map((e) => e.id) }, 'nats egress stopped while disconnected: buffered events dropped');
      this.queue.length = 0;
    }
  }
}
