import type { ChannelModel, ConfirmChannel } from 'amqplib';
import type { Logger } from '../../kernel/logger.js';
import { AmqpConnection } from '../../lib/amqp-connection.js';
import { logEgressEvent, type EgressEvent } from '../../lib/broker-payload.js';
import { settledWithin } from '../../lib/settled-within.js';
import type { AmqpEgressOptions } from './amqp-egress.schema.js';

interface Item {
  routingKey: string;
  event: EgressEvent;
  attempts: number;
}

export interface EgressStats {
  published: number;
  dropped: number;
  failed: number;
}

/** Routing key of an event on the topic exchange: `message.stored.<group_id>`, `member.added.<group_id>`, ... */
export function routingKeyOf(e: EgressEvent): string {
  return `${e.event}.${e.group_id}`;
}

/**
 * Publishes bus events to a topic exchange with publisher confirms. The bus
 * handler only enqueues (never blocks); a bounded buffer absorbs broker
 * outages, and events beyond it are dropped with a log line.
 */
export class AmqpEgress {
  private readonly conn: AmqpConnection;
  private channel: ConfirmChannel | null = null;
  private readonly queue: Item[] = [];
  private unconfirmed = 0;
  private writable = true;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];
  readonly stats: EgressStats = { published: 0, dropped: 0, failed: 0 };

  constructor(
    private readonly opts: AmqpEgressOptions & { connectionName: string },
    private readonly logger: Logger,
  ) {
    this.conn = new AmqpConnection(opts.url, opts, logger, (m) => this.setup(m));
  }

  get connected(): boolean {
    return this.conn.connected && this.channel !== null;
  }

  /** Events buffered or awaiting a confirm. */
  get pending(): number {
    return this.queue.length + this.unconfirmed;
  }

  async start(): Promise<void> {
    await this.conn.open();
  }

  private async setup(model: ChannelModel): Promise<void> {
    const ch = await model.createConfirmChannel();
    ch.on('error', (err: Error) => this.logger.warn({ err: err.message }, 'amqp egress channel error'));
    ch.on('close', () => {
      if (this.channel !== ch) return;
      this.channel = null;
      if (!this.stopped) this.conn.recycle('egress channel closed');
    });
    ch.on('drain', () => {
      this.writable = true;
      this.pump();
    });
    await ch.assertExchange(this.opts.exchange, 'topic', { durable: true });
    this.channel = ch;
    this.writable = true;
    this.logger.info({ exchange: this.opts.exchange }, 'amqp egress ready');
    queueMicrotask(() => this.pump());
  }

  /** Called from the bus: enqueue only. */
  enqueue(event: EgressEvent): void {
    if (this.stopped) return;
    if (this.pending >= this.opts.maxBuffer) {
      this.stats.dropped += 1;
      logEgressEvent(this.logger, 'error', event, 'amqp egress buffer full: event dropped', { buffered: this.pending });
      return;
    }
    this.queue.push({ routingKey: routingKeyOf(event), event, attempts: 0 });
    this.pump();
  }

  private pump(): void {
    const ch = this.channel;
    while (ch && this.channel === ch && this.writable && this.queue.length > 0 && this.unconfirmed < this.opts.maxUnconfirmed) {
      const item = this.queue.shift()!;
      item.attempts += 1;
      this.unconfirmed += 1;
      let settled = false;
      const done = (err: unknown): void => {
        if (settled) return;
        settled = true;
        this.unconfirmed -= 1;
        if (err) this.failed(item, err);
        else this.stats.published += 1;
        this.pump();
        this.notifyIdle();
      };
      try {
        this.writable = ch.publish(
          this.opts.exchange,
          item.routingKey,
          item.event.body,
          {
            persistent: true,
            contentType: 'application/json',
            messageId: item.event.id,
            type: item.event.event,
            timestamp: Math.floor(Date.now() / 1000),
          },
          (err: unknown) => done(err),
        );
      } catch (err) {
        done(err);
        return;
      }
    }
  }

  private failed(item: Item, err: unknown): void {
    const msg = err instanceof Error ? err.message : String(err);
    if (item.attempts < this.opts.maxAttempts && !this.stopped) {
      logEgressEvent(this.logger, 'warn', item.event, 'amqp egress publish not confirmed; will retry', { err: msg, attempt: item.attempts });
      this.queue.unshift(item);
      return;
    }
    this.stats.failed += 1;
    logEgressEvent(this.logger, 'error', item.event, 'amqp egress publish failed: event dropped', { err: msg });
  }

  private notifyIdle(): void {
    if (this.pending > 0) return;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Stop taking events, give buffered ones up to drainTimeoutMs to be confirmed, then close. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.pending > 0 && this.channel) {
      await settledWithin(new Promise<void>((resolve) => this.idleWaiters.push(resolve)), this.opts.drainTimeoutMs);
    }
    if (this.pending > 0) {
      this.stats.dropped += this.queue.length;
      this.logger.error({ unpublished: this.pending }, 'amqp egress stopped with events not confirmed');
    }
    this.queue.length = 0;
    const ch = this.channel;
    this.channel = null;
    if (ch) await ch.close().catch(() => undefined);
    await this.conn.close();
  }
}
