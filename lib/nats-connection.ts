/**
 * A NATS connection for the broker plugins (nats-ingress, nats-egress): the
 * first connection is retried with exponential backoff in the background
 * (start-up does not hang on a broker that is down), later drops are healed by
 * the client's own reconnect (subscriptions and consumers resume), and the
 * status is tracked for /readyz and logged. Imported only by those plugins.
 */
import Joi from 'joi';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../kernel/logger.js';

export interface NatsConnectionSettings {
  /** Client name shown by the server (`/connz`). */
  connectionName: string;
  reconnect: { initialDelayMs: number; maxDelayMs: number };
  /** How long start() waits for the first connection before going on (readiness stays red meanwhile). */
  startWaitMs: number;
}

export const natsConnectionKeys = {
  connectionName: Joi.string().max(200),
  reconnect: Joi.object({
    initialDelayMs: Joi.number().integer().min(10).max(60_000).default(250),
    maxDelayMs: Joi.number().integer().min(10).max(600_000).default(10_000),
  }).default(),
  startWaitMs: Joi.number().integer().min(0).max(120_000).default(5000),
};

function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/g, '//***@');
}

export class NatsConnectionManager {
  private nc: NatsConnection | null = null;
  private up = false;
  private closed = false;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private reconnectAttempts = 0;
  /** Bumped on every disconnect/reconnect, so a late flush cannot mark a newer outage as up. */
  private generation = 0;

  constructor(
    private readonly url: string,
    private readonly settings: NatsConnectionSettings,
    private readonly logger: Logger,
    /** Runs once per connection (subscriptions survive the client's reconnects); a throw closes it and retries. */
    private readonly setup: (nc: NatsConnection) => Promise<void>,
  ) {}

  get connected(): boolean {
    return this.up && !this.closed && this.nc !== null && !this.nc.isClosed();
  }

  get connection(): NatsConnection | null {
    return this.nc;
  }

  private delay(attempt: number): number {
    const { initialDelayMs, maxDelayMs } = this.settings.reconnect;
    const base = Math.min(maxDelayMs, initialDelayMs * 2 ** Math.min(attempt, 20));
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done(): void {
        clearTimeout(timer);
        self.wake = null;
        resolve();
      }
      this.wake = done;
    });
  }

  async open(): Promise<void> {
    let first!: () => void;
    const connectedOnce = new Promise<void>((resolve) => (first = resolve));
    this.loop = this.run(first);
    if (this.settings.startWaitMs <= 0) return;
    let timer: NodeJS.Timeout | undefined;
    const ok = await Promise.race([
      connectedOnce.then(() => true),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), this.settings.startWaitMs))),
    ]);
    clearTimeout(timer);
    if (!ok && !this.closed) {
      this.logger.warn({ url: redact(this.url), waited_ms: this.settings.startWaitMs }, 'nats server not reachable yet; still trying in the background');
    }
  }

  private async run(first: () => void): Promise<void> {
    let attempt = 0;
    const servers = this.url.split(',').map((s) => s.trim());
    while (!this.closed) {
      let nc: NatsConnection | null = null;
      try {
        nc = await connect({
          servers,
          name: this.settings.connectionName,
          reconnect: true,
          maxReconnectAttempts: -1,
          reconnectDelayHandler: () => this.delay(this.reconnectAttempts++),
          waitOnFirstConnect: false,
        });
        if (this.closed) {
          await nc.close().catch(() => undefined);
          return;
        }
        this.nc = nc;
        this.watch(nc);
        await this.setup(nc);
        attempt = 0;
        this.reconnectAttempts = 0;
        this.up = true;
        this.logger.info({ url: redact(this.url), server: nc.getServer() }, 'nats connected');
        first();
        const err = await nc.closed();
        this.up = false;
        if (this.closed) return;
        this.logger.error({ err: err instanceof Error ? err.message : undefined }, 'nats connection closed; opening a new one');
      } catch (err) {
        this.up = false;
        if (this.closed) return;
        this.logger.warn({ err: (err as Error).message, url: redact(this.url) }, 'nats connect or setup failed');
        if (nc) await nc.close().catch(() => undefined);
      }
      if (this.nc === nc) this.nc = null;
      if (this.closed) return;
      await this.sleep(this.delay(attempt++));
    }
  }

  private watch(nc: NatsConnection): void {
    void (async () => {
      for await (const s of nc.status()) {
        if (this.nc !== nc) return;
        switch (s.type) {
          case 'disconnect':
            this.up = false;
            this.generation++;
            if (!this.closed) this.logger.warn({ server: s.server }, 'nats disconnected; reconnecting');
            break;
          case 'reconnect': {
            this.reconnectAttempts = 0;
            // The client re-sends its subscriptions on reconnect; count as up only once the
            // server has answered a PING sent after them, so readiness never runs ahead of them.
            const generation = ++this.generation;
            nc.flush().then(
              () => {
                if (this.generation !== generation || this.nc !== nc) return;
                this.up = true;
                this.logger.info({ server: s.server }, 'nats reconnected');
              },
              () => undefined,
            );
            break;
          }
          case 'error':
            this.logger.warn({ err: s.error.message }, 'nats server error');
            break;
          case 'slowConsumer':
            this.logger.warn({ pending: s.pending }, 'nats slow consumer');
            break;
          case 'staleConnection':
            this.logger.warn('nats stale connection');
            break;
          default:
            this.logger.debug({ status: s.type }, 'nats status');
        }
      }
    })().catch(() => undefined);
  }

  /**
   * Stops retrying. With drain: unsubscribes, lets the client deliver what it
   * holds, flushes and closes; otherwise closes at once. Idempotent.
   */
  async close(drain = true): Promise<void> {
    const wasUp = this.connected;
    this.closed = true;
    this.wake?.();
    const nc = this.nc;
    if (nc && !nc.isClosed()) {
      if (drain && wasUp && !nc.isDraining()) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([nc.drain().catch(() => undefined), new Promise<void>((r) => (timer = setTimeout(r, 5000)))]);
        clearTimeout(timer);
      }
      if (!nc.isClosed()) await nc.close().catch(() => undefined);
    }
    this.up = false;
    await this.loop?.catch(() => undefined);
  }
}
