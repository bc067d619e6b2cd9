import { connect, type Msg, type NatsConnection } from '@nats-io/transport-node';
import type { Counter } from 'prom-client';
import type { BusEventName, BusEvents, EventMeta, MessageBus, Unsubscribe } from '../../../kernel/bus.js';
import { KernelError } from '../../../kernel/errors.js';
import type { Logger } from '../../../kernel/logger.js';
import { validate } from '../../../lib/validate.js';
import { natsConnectFailure, natsConnectOptions, natsSecurityFields } from '../../../lib/nats-connection.js';
import { EVENT_PAYLOAD_SCHEMAS, clusterEnvelopeSchema, type ClusterEnvelope, type NatsClusterOptions } from './nats-cluster.schema.js';

/** What the rest of the process may read about the cluster bus. */
export interface ClusterBusStatus {
  readonly impl: string;
  /** True while connected to a server (false while reconnecting and after stop). */
  readonly connected: boolean;
}

/** Outbox metrics (absent when the metrics plugin is off); the queued gauge reads `outboxQueued` at scrape time. */
export interface ClusterBusMetrics {
  /** Local events never relayed: dropped from a full outbox (oldest first, past outboxMaxEvents), or left in it at stop. */
  outboxDropped: Counter;
}

/**
 * Relays kernel bus events between instances over NATS core pub/sub: every
 * event published locally goes to `<prefix>.<event name>` tagged with this
 * instance's id; events from other instances are republished on the local bus
 * with origin 'remote' (own ones are never echoed back). NATS core does not
 * persist: events published by other instances while this connection is down
 * are lost for this instance's sockets, so clients close gaps with `sync`
 * (seq makes every gap visible). This instance's own events of that time are
 * kept in a bounded outbox and sent once reconnected (with the metrics plugin:
 * `im_cluster_outbox_queued` and `im_cluster_outbox_dropped_total`).
 */
export class NatsClusterBus implements ClusterBusStatus {
  readonly impl = 'nats';
  private nc: NatsConnection | null = null;
  private unsubscribeBus: Unsubscribe | null = null;
  private stopping: Promise<void> | null = null;
  private connectedFlag = false;
  private failedAttempts = 0;
  /** Local events published while disconnected, sent once reconnected (the NATS client drops its own buffer on each dial). */
  private outbox: Array<{ subject: string; data: string }> = [];
  private outboxDropped = 0;

  constructor(
    private readonly deps: { bus: MessageBus; instanceId: string; logger: Logger; metrics?: ClusterBusMetrics | null },
    private readonly opts: NatsClusterOptions,
  ) {}

  /** Local events waiting in the outbox for the reconnect to NATS. */
  get outboxQueued(): number {
    return this.outbox.length;
  }

  get connected(): boolean {
    return this.connectedFlag;
  }

  async start(): Promise<void> {
    const { logger } = this.deps;
    const { endpoint } = this.opts;
    try {
      this.nc = await connect({
        ...natsConnectOptions(endpoint),
        name: `im-cluster-${this.deps.instanceId}`,
        noEcho: true,
        reconnect: true,
        maxReconnectAttempts: -1,
        // Reconnects never give up, also after the server refused the credentials (files are re-read on every attempt: a rotated .creds heals it).
        ignoreAuthErrorAbort: true,
        reconnectDelayHandler: () => this.nextDelay(),
        timeout: this.opts.connectTimeoutMs,
      });
    } catch (err) {
      const f = natsConnectFailure(err, endpoint);
      const hint = f.misconfigured ? ` (${f.msg.replace(/^nats /, '')})` : '';
      throw new KernelError(`cannot connect to NATS at ${endpoint.display}: ${(err as Error).message}${hint}`, { cause: err });
    }
    this.connectedFlag = true;
    void this.watchStatus(this.nc);
    this.nc.subscribe(`${this.opts.subjectPrefix}.>`, { callback: (err, msg) => this.receive(err, msg) });
    await this.nc.flush();
    this.unsubscribeBus = this.deps.bus.subscribeAll((name, payload, meta) => this.forward(name, payload, meta));
    logger.info({ server: this.nc.getServer(), prefix: this.opts.subjectPrefix, instance_id: this.deps.instanceId, ...natsSecurityFields(endpoint) }, 'cluster bus connected');
  }

  /** Stops relaying, drains (pending outbound is flushed) and closes; no reconnect afterwards. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.unsubscribeBus?.();
    this.unsubscribeBus = null;
    // Stopping during an outage: what waits in the outbox will never be relayed (say so, and count it).
    const left = this.outbox.splice(0).length;
    if (left > 0) {
      this.deps.metrics?.outboxDropped.inc(left);
      this.deps.logger.warn({ dropped: left, dropped_before: this.outboxDropped }, 'cluster bus: stopped while disconnected, events of the outbox dropped');
    }
    const nc = this.nc;
    if (!nc || nc.isClosed()) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      if (!this.connectedFlag) throw new Error('not connected: closing without drain');
      await Promise.race([
        nc.drain(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('drain timed out')), this.opts.drainTimeoutMs);
        }),
      ]);
    } catch (err) {
      this.deps.logger.warn({ err }, 'cluster bus: drain failed, closing');
    } finally {
      clearTimeout(timer);
      if (!nc.isClosed()) await nc.close();
      this.connectedFlag = false;
    }
  }

  /** Exponential backoff with jitter; reset once reconnected. */
  private nextDelay(): number {
    const n = Math.min(this.failedAttempts++, 30);
    const base = Math.min(this.opts.reconnectMaxMs, this.opts.reconnectMinMs * 2 ** n);
    return Math.round(base * (1 + Math.random() * 0.2));
  }

  private async watchStatus(nc: NatsConnection): Promise<void> {
    const { logger } = this.deps;
    try {
      for await (const s of nc.status()) {
        switch (s.type) {
          case 'disconnect':
            this.connectedFlag = false;
            logger.warn({ server: s.server }, 'cluster bus: disconnected from NATS, reconnecting');
            break;
          case 'reconnect':
            this.connectedFlag = true;
            this.failedAttempts = 0;
            logger.info({ server: s.server, queued: this.outbox.length, dropped: this.outboxDropped }, 'cluster bus: reconnected to NATS');
            this.flushOutbox();
            break;
          case 'reconnecting':
            logger.debug('cluster bus: reconnect attempt');
            break;
          case 'staleConnection':
            logger.warn('cluster bus: stale NATS connection');
            break;
          case 'error': {
            const f = natsConnectFailure(s.error, this.opts.endpoint);
            if (f.misconfigured) logger.error(f.fields, `cluster bus: ${f.msg}; retrying`);
            else logger.warn({ err: s.error }, 'cluster bus: NATS error');
            break;
          }
          case 'slowConsumer':
            logger.warn({ pending: s.pending }, 'cluster bus: slow consumer');
            break;
          case 'close':
            this.connectedFlag = false;
            logger.info('cluster bus: NATS connection closed');
            break;
          default:
            break;
        }
      }
    } catch (err) {
      logger.warn({ err }, 'cluster bus: status watch ended');
    }
  }

  private forward(name: BusEventName, payload: BusEvents[BusEventName], meta: EventMeta): void {
    if (meta.origin !== 'local' || !this.nc || this.nc.isClosed() || this.nc.isDraining()) return;
    const envelope: ClusterEnvelope = {
      v: 1,
      instance_id: this.deps.instanceId,
      name,
      payload: payload as unknown as Record<string, unknown>,
    };
    let item: { subject: string; data: string };
    try {
      item = { subject: `${this.opts.subjectPrefix}.${name}`, data: JSON.stringify(envelope) };
    } catch (err) {
      this.deps.logger.warn({ err, event: name }, 'cluster bus: event is not serializable, not relayed');
      return;
    }
    if (!this.connectedFlag) {
      // Bounded: past the limit the oldest are dropped (clients close such gaps with sync).
      this.outbox.push(item);
      if (this.outbox.length > this.opts.outboxMaxEvents) {
        this.outbox.shift();
        this.deps.metrics?.outboxDropped.inc();
        // said once per outage (the count comes with the reconnect line), so an outage that lasts is visible before it ends
        if (this.outboxDropped++ === 0) this.deps.logger.warn({ max: this.opts.outboxMaxEvents }, 'cluster bus: outbox full while disconnected, dropping the oldest events');
      }
      return;
    }
    this.publish(item);
  }

  private publish(item: { subject: string; data: string }): void {
    try {
      this.nc?.publish(item.subject, item.data);
    } catch (err) {
      this.deps.logger.warn({ err, subject: item.subject }, 'cluster bus: publish failed');
    }
  }

  private flushOutbox(): void {
    const items = this.outbox.splice(0);
    if (this.outboxDropped > 0) this.deps.logger.warn({ dropped: this.outboxDropped }, 'cluster bus: events dropped while disconnected (outbox full)');
    this.outboxDropped = 0;
    for (const item of items) this.publish(item);
  }

  private receive(err: Error | null, msg: Msg): void {
    const { logger, bus } = this.deps;
    if (err) {
      logger.warn({ err }, 'cluster bus: subscription error');
      return;
    }
    let envelope: ClusterEnvelope;
    try {
      envelope = validate(clusterEnvelopeSchema, msg.json<unknown>(), 'cluster event');
      const schema = EVENT_PAYLOAD_SCHEMAS[envelope.name];
      if (schema) envelope.payload = validate(schema, envelope.payload, `cluster event ${envelope.name}`) as Record<string, unknown>;
    } catch (e) {
      // Never log the payload: it may hold message content (medical data).
      logger.warn({ subject: msg.subject, err: (e as Error).message }, 'cluster bus: invalid event dropped');
      return;
    }
    if (envelope.instance_id === this.deps.instanceId) return;
    bus.publish(envelope.name as BusEventName, envelope.payload as unknown as BusEvents[BusEventName], {
      origin: 'remote',
      instance_id: envelope.instance_id,
    });
  }
}
