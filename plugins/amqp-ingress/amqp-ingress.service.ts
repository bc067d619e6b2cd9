import type { ChannelModel, ConfirmChannel, ConsumeMessage } from 'amqplib';
import { UnavailableError } from '../../kernel/errors.js';
import { AmqpConnection } from '../../lib/amqp-connection.js';
import {
  deadLetter,
  Delays,
  type DeliveryStats,
  InFlight,
  type IngressStatus,
  logOutcome,
  processInbound,
} from '../../lib/broker-payload.js';
import type { AmqpIngressOptions } from './amqp-ingress.schema.js';
import type { IngressDeps } from '../../lib/ingress-plugin.js';


/**
 * Consumes the inbound queue with manual acknowledgements: a delivery is
 * acked only after chatService.send() committed (or after its dead letter was
 * confirmed by the broker), requeued after a delay on retryable failures.
 */
export class AmqpIngress implements IngressStatus {
  private readonly conn: AmqpConnection;
  private channel: ConfirmChannel | null = null;
  private consumerTag: string | null = null;
  private readonly inflight = new InFlight();
  private readonly delays = new Delays();
  private stopping = false;

  constructor(
    private readonly opts: AmqpIngressOptions & { connectionName: string },
    private readonly deps: IngressDeps,
  ) {
    this.conn = new AmqpConnection(opts.url, opts, deps.logger, (m) => this.setup(m));
  }

  get connected(): boolean {
    return this.conn.connected && this.channel !== null && this.consumerTag !== null;
  }

  get stats(): Readonly<DeliveryStats> {
    return this.deps.stats;
  }

  get inFlight(): number {
    return this.inflight.size;
  }

  async start(): Promise<void> {
    await this.conn.open();
  }

  /** Readiness: throws while disconnected or not consuming. */
  async check(): Promise<void> {
    if (!this.connected) throw new UnavailableError(`amqp: not connected to the broker (queue '${this.opts.queue}')`);
  }

  /** Runs on every (re)connection. */
  private async setup(model: ChannelModel): Promise<void> {
    const { queue, dlq, prefetch } = this.opts;
    const ch = await model.createConfirmChannel();
    ch.on('error', (err: Error) => this.deps.logger.warn({ err: err.message }, 'amqp channel error'));
    ch.on('close', () => {
      if (this.channel !== ch) return;
      this.channel = null;
      this.consumerTag = null;
      if (!this.stopping) this.conn.recycle('channel closed');
    });
    await ch.assertQueue(queue, { durable: true });
    await ch.assertQueue(dlq, { durable: true });
    await ch.prefetch(prefetch);
    if (this.stopping) {
      await ch.close().catch(() => undefined);
      throw new Error('stopping');
    }
    this.channel = ch;
    const { consumerTag } = await ch.consume(queue, (msg) => this.onDelivery(ch, msg), { noAck: false });
    this.consumerTag = consumerTag;
    this.deps.logger.info({ queue, dlq, prefetch }, 'amqp ingress consuming');
  }

  private onDelivery(ch: ConfirmChannel, msg: ConsumeMessage | null): void {
    if (msg === null) {
      // The broker cancelled the consumer (queue deleted, node down): start over.
      this.consumerTag = null;
      if (!this.stopping) this.conn.recycle('consumer cancelled by the broker');
      return;
    }
    if (this.stopping) {
      // Prefetched before the cancel took effect: hand it back untouched.
      this.settle(ch, msg, 'nack');
      return;
    }
    this.inflight.track(this.handle(ch, msg).catch((err: unknown) => this.deps.logger.error({ err }, 'amqp delivery handling failed')));
  }

  private async handle(ch: ConfirmChannel, msg: ConsumeMessage): Promise<void> {
    const { chatService, clock, instanceId, logger, record } = this.deps;
    const outcome = await processInbound(chatService, msg.content, {
      transport: 'amqp',
      maxPayloadBytes: this.opts.maxPayloadBytes,
      retryDelayMs: this.opts.retryDelayMs,
    });
    logOutcome(logger, outcome, { queue: this.opts.queue, redelivered: msg.fields.redelivered });
    switch (outcome.kind) {
      case 'stored':
      case 'duplicate':
        if (this.settle(ch, msg, 'ack')) record(outcome.kind);
        return;
      case 'dead': {
        const letter = deadLetter(msg.content, outcome.reason, {
          source: this.opts.queue,
          transport: 'amqp',
          now: clock.nowIso(),
          instanceId,
        });
        try {
          await new Promise<void>((resolve, reject) => {
            ch.sendToQueue(
              this.opts.dlq,
              letter.body,
              {
                persistent: true,
                contentType: 'application/json',
                headers: letter.headers,
                timestamp: Math.floor(clock.now().getTime() / 1000),
                messageId: msg.properties.messageId as string | undefined,
              },
              (err: unknown) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve()),
            );
          });
        } catch (err) {
          logger.warn({ err: (err as Error).message, dlq: this.opts.dlq }, 'amqp dead letter not confirmed; requeueing the original');
          await this.delays.wait(this.opts.retryDelayMs);
          if (this.settle(ch, msg, 'nack')) record('requeued');
          return;
        }
        if (this.settle(ch, msg, 'ack')) record('dead_lettered');
        return;
      }
      case 'retry':
        // Hold the delivery (it keeps its prefetch slot, which throttles intake during an outage), then requeue.
        await this.delays.wait(outcome.delayMs);
        if (this.settle(ch, msg, 'nack')) record('requeued');
        return;
    }
  }

  /** Ack or requeue on the channel the delivery came from; false when that channel is gone (the broker redelivers). */
  private settle(ch: ConfirmChannel, msg: ConsumeMessage, how: 'ack' | 'nack'): boolean {
    try {
      if (how === 'ack') ch.ack(msg);
      else ch.nack(msg, false, true);
      return true;
    } catch (err) {
      this.deps.logger.debug({ err: (err as Error).message }, 'amqp channel closed before settling; the broker will redeliver');
      return false;
    }
  }

  /** Cancel the consumer, let in-flight deliveries finish and settle, then close (no more reconnects). */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const ch = this.channel;
    const tag = this.consumerTag;
    if (ch && tag) {
      try {
        await ch.cancel(tag);
      } catch (err) {
        this.deps.logger.debug({ err: (err as Error).message }, 'amqp cancel failed');
      }
    }
    this.consumerTag = null;
    this.delays.cancelAll();
    await this.inflight.idle();
    if (ch) await ch.close().catch(() => undefined);
    this.channel = null;
    await this.conn.close();
    this.deps.logger.info({ queue: this.opts.queue }, 'amqp ingress stopped');
  }
}
