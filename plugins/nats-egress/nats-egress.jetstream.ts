import { jetstream, type JetStreamClient, type PubAck } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../../kernel/logger.js';
import { logEgressEvent, type EgressEvent } from '../../lib/broker-payload.js';
import { NatsConnectionManager } from '../../lib/nats-connection.js';
import { ensureStream, NatsStreamMissingError, type StreamSpec } from '../../lib/nats-jetstream.js';
import { settledWithin } from '../../lib/settled-within.js';
import { eventHeaders, logBufferFull, subjectOf, type NatsEgress, type NatsEgressSettings, type NatsEgressStats } from './nats-egress.core.js';
import type { JetStreamEgressOptions } from './nats-egress.schema.js';

interface Item {
  event: EgressEvent;
  /** Order of arrival: a retried event goes back before the ones that came after it. */
  order: number;
  attempts: number;
}

/**
 * JetStream: each event is published with `msgID` = its id and counts as
 * published once the stream's acknowledgement (PubAck) is in. At most
 * `maxUnconfirmed` publishes await theirs; one that fails (timeout, no stream
 * answering, connection lost) goes back to the front and is retried, up to
 * `maxAttempts`; the stream's de-duplication (on `Nats-Msg-Id`, within its
 * duplicate window) keeps a retry after a lost acknowledgement from storing the
 * event twice. Events wait in the bounded buffer (`maxBuffer`, counting those
 * awaiting an acknowledgement) while NATS is away; the bus is never blocked.
 * The stream is checked on every connection and after every reconnect before
 * anything is published (created there when `createStream`); a missing stream
 * fails start() when NATS answers during it.
 */
export class NatsJetStreamEgress implements NatsEgress {
  private readonly conn: NatsConnectionManager;
  private readonly spec: StreamSpec;
  /** Set once the stream is checked on the current connection (since its last reconnect). */
  private client: JetStreamClient | null = null;
  /** The connection setup() has just checked: its first onUp needs no second check. */
  private checkedBy: NatsConnection | null = null;
  /** Bumped by every check after a reconnect: only the answer to the latest one counts. */
  private checks = 0;
  private readonly queue: Item[] = [];
  private readonly unconfirmed = new Set<Item>();
  private arrivals = 0;
  private stopped = false;
  /** Resolved by setup() when the stream is missing while start() waits. */
  private refuseStart: ((err: NatsStreamMissingError) => void) | null = null;
  /** stop()'s wait for the last acknowledgement. */
  private drained: (() => void) | null = null;
  readonly stats: NatsEgressStats = { published: 0, dropped: 0, failed: 0, duplicate: 0 };

  constructor(
    private readonly opts: NatsEgressSettings,
    private readonly o: JetStreamEgressOptions,
    private readonly logger: Logger,
  ) {
    this.spec = { name: this.o.stream, subjects: [`${opts.subjectPrefix}.>`], create: this.o.createStream, createSetting: 'jetstream.createStream' };
    this.conn = new NatsConnectionManager(
      opts.endpoint,
      opts,
      logger,
      (nc) => this.setup(nc),
      (nc) => this.up(nc),
    );
  }

  get connected(): boolean {
    return this.conn.connected && this.client !== null;
  }

  /** Events buffered or awaiting an acknowledgement. */
  get pending(): number {
    return this.queue.length + this.unconfirmed.size;
  }

  /** Waits for the first connection like core mode, but fails when the server says the stream is missing. */
  async start(): Promise<void> {
    const missing = new Promise<NatsStreamMissingError>((resolve) => (this.refuseStart = resolve));
    const refused = await Promise.race([this.conn.open().then(() => null), missing]);
    this.refuseStart = null;
    if (refused) {
      await this.conn.close(false);
      throw refused;
    }
  }

  /** A new connection: the stream must be there before it counts as up. */
  private async setup(nc: NatsConnection): Promise<void> {
    this.client = null;
    try {
      await ensureStream(nc, this.spec, this.logger);
    } catch (err) {
      if (err instanceof NatsStreamMissingError) this.refuseStart?.(err);
      throw err;
    }
    this.checkedBy = nc;
  }

  /** Connected (a new connection, or the client's reconnect): check the stream, then publish. */
  private up(nc: NatsConnection): void {
    if (this.checkedBy === nc) {
      this.checkedBy = null;
      this.ready(nc);
      return;
    }
    // the server may have restarted with another store: the stream is checked (or created) again first
    this.client = null;
    const check = ++this.checks;
    ensureStream(nc, this.spec, this.logger).then(
      () => {
        if (check === this.checks && this.conn.connection === nc) this.ready(nc);
      },
      (err: unknown) => {
        if (check !== this.checks || this.conn.connection !== nc || this.stopped) return;
        // a new connection runs setup(), which retries the check with the reconnect backoff
        this.logger.error({ err: (err as Error).message, stream: this.o.stream }, 'nats egress: stream check after the reconnect failed; events are held, opening a new connection');
        nc.close().catch(() => undefined);
      },
    );
  }

  private ready(nc: NatsConnection): void {
    this.client = jetstream(nc);
    this.logger.info({ stream: this.o.stream, pending: this.pending }, 'nats egress ready (jetstream)');
    this.pump();
  }

  /** Called from the bus: enqueue only. */
  enqueue(event: EgressEvent): void {
    if (this.stopped) return;
    if (this.pending >= this.opts.maxBuffer) {
      this.stats.dropped += 1;
      logBufferFull(this.logger, event, this.pending);
      return;
    }
    this.queue.push({ event, order: this.arrivals++, attempts: 0 });
    this.pump();
  }

  private pump(): void {
    const js = this.client;
    while (js && this.client === js && this.conn.connected && this.queue.length > 0 && this.unconfirmed.size < this.o.maxUnconfirmed) {
      const item = this.queue.shift()!;
      item.attempts += 1;
      this.unconfirmed.add(item);
      const e = item.event;
      js.publish(subjectOf(this.opts.subjectPrefix, e), e.body, { msgID: e.id, headers: eventHeaders(e), timeout: this.o.ackTimeoutMs }).then(
        (ack) => this.settle(item, ack, null),
        (err: unknown) => this.settle(item, null, err),
      );
    }
  }

  private settle(item: Item, ack: PubAck | null, err: unknown): void {
    // gone from the set: reported by stop() as not confirmed
    if (!this.unconfirmed.delete(item)) return;
    if (ack) {
      this.stats.published += 1;
      if (ack.duplicate) this.stats.duplicate += 1;
    } else this.failed(item, err);
    this.pump();
    if (this.pending === 0) this.drained?.();
  }

  private failed(item: Item, err: unknown): void {
    const msg = err instanceof Error ? err.message : String(err);
    const e = item.event;
    if (item.attempts < this.o.maxAttempts && !this.stopped) {
      logEgressEvent(this.logger, 'warn', e, 'nats egress publish not acknowledged; will retry', { err: msg, attempt: item.attempts });
      // back to the front, before the events that came after it
      const at = this.queue.findIndex((q) => q.order > item.order);
      this.queue.splice(at < 0 ? this.queue.length : at, 0, item);
      return;
    }
    this.stats.failed += 1;
    logEgressEvent(this.logger, 'error', e, 'nats egress publish failed: event dropped', { err: msg });
  }

  /** Stop taking events, give buffered ones up to drainTimeoutMs to be acknowledged, then close. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.pending > 0 && this.connected) {
      await settledWithin(new Promise<void>((resolve) => (this.drained = resolve)), this.o.drainTimeoutMs);
    }
    if (this.pending > 0) {
      // buffered: never reached the server; awaiting an acknowledgement: may be stored, unknown
      this.stats.dropped += this.queue.length;
      const left = [...this.unconfirmed, ...this.queue];
      this.logger.error(
        { unpublished: left.length, unconfirmed: this.unconfirmed.size, ids: left.slice(0, 20).map((i) => i.event.id) },
        'nats egress stopped with events not confirmed',
      );
    }
    this.queue.length = 0;
    this.unconfirmed.clear();
    await this.conn.close(true);
  }
}
