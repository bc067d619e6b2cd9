/**
 * An AMQP connection that reconnects with exponential backoff (amqplib's
 * built-in recovery) and runs `setup` (channels, queues, consumers) on every
 * new connection. Shared by amqp-ingress and amqp-egress; imported only by
 * them, so amqplib is never loaded when neither is enabled.
 */
import Joi from 'joi';
import amqp, { type ChannelModel, type RecoveringChannelModel } from 'amqplib';
import type { Logger } from '../kernel/logger.js';

export interface AmqpConnectionSettings {
  /** Shown in the RabbitMQ management UI and `rabbitmqctl list_connections client_properties`. */
  connectionName: string;
  heartbeatSeconds: number;
  reconnect: { initialDelayMs: number; maxDelayMs: number };
  /** How long start() waits for the first connection before going on (readiness stays red meanwhile). */
  startWaitMs: number;
}

/** Joi keys shared by both AMQP plugins' option schemas. */
export const amqpConnectionKeys = {
  connectionName: Joi.string().max(200),
  heartbeatSeconds: Joi.number().integer().min(0).max(600).default(30),
  reconnect: Joi.object({
    initialDelayMs: Joi.number().integer().min(10).max(60_000).default(500),
    maxDelayMs: Joi.number().integer().min(10).max(600_000).default(30_000),
  }).default(),
  startWaitMs: Joi.number().integer().min(0).max(120_000).default(5000),
};

function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}

export class AmqpConnection {
  private model: RecoveringChannelModel | null = null;
  private current: ChannelModel | null = null;
  private ready = false;
  private closed = false;

  constructor(
    private readonly url: string,
    private readonly settings: AmqpConnectionSettings,
    private readonly logger: Logger,
    /** Runs on every (re)connection; a throw closes that connection and schedules another attempt. */
    private readonly setup: (model: ChannelModel) => Promise<void>,
  ) {}

  /** Connected and `setup` completed. */
  get connected(): boolean {
    return this.ready && !this.closed;
  }

  async open(): Promise<void> {
    const s = this.settings;
    const u = new URL(this.url);
    if (!u.searchParams.has('heartbeat')) u.searchParams.set('heartbeat', String(s.heartbeatSeconds));
    const model = await amqp.connect(u.toString(), {
      clientProperties: { connection_name: s.connectionName },
      recovery: {
        initialDelay: s.reconnect.initialDelayMs,
        maxDelay: Math.max(s.reconnect.initialDelayMs, s.reconnect.maxDelayMs),
        waitForConnect: false,
        setup: async (m: ChannelModel) => {
          if (this.closed) throw new Error('closing');
          await this.setup(m);
        },
      },
    });
    this.model = model;
    model.on('connect', (m: ChannelModel) => {
      this.current = m;
      this.ready = true;
      this.logger.info({ url: redact(this.url), connection_name: s.connectionName }, 'amqp connected');
    });
    model.on('disconnect', (err: Error) => {
      this.ready = false;
      this.current = null;
      if (!this.closed) this.logger.warn({ err: err.message }, 'amqp connection lost; reconnecting');
    });
    model.on('connect-failed', (err: Error) => {
      if (!this.closed) this.logger.warn({ err: err.message, url: redact(this.url) }, 'amqp connect failed');
    });
    model.on('reconnect-scheduled', (info: { attempt: number; delay: number }) => {
      this.logger.debug({ attempt: info.attempt, delay_ms: info.delay }, 'amqp reconnect scheduled');
    });
    model.on('reconnect-failed', (err: Error) => {
      this.ready = false;
      this.logger.error({ err: err.message }, 'amqp recovery gave up');
    });
    model.on('error', (err: Error) => {
      this.logger.warn({ err: err.message }, 'amqp connection error');
    });
    model.on('blocked', (reason: string) => this.logger.warn({ reason }, 'amqp connection blocked by the broker'));
    model.on('unblocked', () => this.logger.info('amqp connection unblocked'));

    if (s.startWaitMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      const first = await Promise.race([
        model.waitForConnect().then(
          () => true,
          () => false,
        ),
        new Promise<false>((resolve) => {
          timer = setTimeout(() => resolve(false), s.startWaitMs);
        }),
      ]);
      clearTimeout(timer);
      if (!first && !this.closed) {
        this.logger.warn({ url: redact(this.url), waited_ms: s.startWaitMs }, 'amqp broker not reachable yet; still trying in the background');
      }
    }
  }

  /**
   * Closes the live connection (not the recovery): a fresh connection and a
   * fresh `setup` follow. Used when a channel or consumer is lost.
   */
  recycle(reason: string): void {
    const m = this.current;
    if (!m || this.closed) return;
    // A lost connection closes its channels first: let its own 'disconnect' land, and act only on a channel lost alone.
    setImmediate(() => {
      if (this.current !== m || !this.ready || this.closed) return;
      this.logger.warn({ reason }, 'amqp channel lost; reopening the connection');
      this.ready = false;
      m.close().catch(() => undefined);
    });
  }

  /** Stops reconnecting and closes the connection. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    this.ready = false;
    const m = this.model;
    this.model = null;
    if (m) await m.close().catch(() => undefined);
  }
}
