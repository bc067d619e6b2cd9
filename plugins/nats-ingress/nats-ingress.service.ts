import { AckPolicy, DeliverPolicy, jetstream, JetStreamApiCodes, type ConsumerMessages, type JetStreamClient, type JsMsg } from '@nats-io/jetstream';
import { headers as natsHeaders, nanos, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { UnavailableError } from '../../kernel/errors.js';
import {
  deadLetter,
  Delays,
  type DeliveryStats,
  InFlight,
  type IngressOutcome,
  type IngressStatus,
  logOutcome,
  processInbound,
  Slots,
} from '../../lib/broker-payload.js';
import { NatsConnectionManager } from '../../lib/nats-connection.js';
import { settledWithin } from '../../lib/settled-within.js';
import { ensureStream, isJetStreamApiError } from '../../lib/nats-jetstream.js';
import type { NatsIngressOptions } from './nats-ingress.schema.js';
import type { IngressDeps } from '../../lib/ingress-plugin.js';


/**
 * NATS ingress. Core mode: a queue-group subscription on the inbound subject
 * (at most once: a retryable failure is retried in-process while the delivery
 * holds its slot; the requester, when there is a reply inbox, gets the
 * outcome). JetStream mode: a durable pull consumer with explicit acks: ack
 * after commit, nak with a delay on outages, term + DLQ for invalid payloads.
 */
export class NatsIngress implements IngressStatus {
  private readonly conn: NatsConnectionManager;
  private readonly inflight = new InFlight();
  private readonly loops = new InFlight();
  private readonly delays = new Delays();
  private readonly slots: Slots;
  private sub: Subscription | null = null;
  private messages: ConsumerMessages | null = null;
  private consuming = false;
  private stopping = false;

  constructor(
    private readonly opts: NatsIngressOptions & { connectionName: string },
    private readonly deps: IngressDeps,
  ) {
    this.slots = new Slots(opts.maxInFlight);
    this.conn = new NatsConnectionManager(opts.endpoint, opts, deps.logger, (nc) => this.setup(nc));
  }

  get connected(): boolean {
    return this.conn.connected && this.consuming;
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

  async check(): Promise<void> {
    if (!this.connected) throw new UnavailableError(`nats: not connected or not consuming (subject '${this.opts.subject}')`);
  }

  private async setup(nc: NatsConnection): Promise<void> {
    if (this.opts.jetstream) await this.setupJetStream(nc);
    else await this.setupCore(nc);
  }

  private async setupCore(nc: NatsConnection): Promise<void> {
    const sub = nc.subscribe(this.opts.subject, { queue: this.opts.queueGroup });
    await nc.flush();
    this.sub = sub;
    this.consuming = true;
    this.deps.logger.info({ subject: this.opts.subject, queue: this.opts.queueGroup, max_in_flight: this.opts.maxInFlight }, 'nats ingress subscribed');
    this.loops.track(
      (async () => {
        for await (const m of sub) {
          await this.slots.acquire();
          this.inflight.track(
            this.handleCore(nc, m)
              .catch((err: unknown) => this.deps.logger.error({ err }, 'nats delivery handling failed'))
              .finally(() => this.slots.release()),
          );
        }
      })().finally(() => {
        if (this.sub === sub) this.consuming = false;
      }),
    );
  }

  private async setupJetStream(nc: NatsConnection): Promise<void> {
    const o = this.opts.jetstream!;
    const jsm = await ensureStream(
      nc,
      { name: o.stream, subjects: [this.opts.subject, this.opts.dlqSubject], create: o.createStream, createSetting: 'jetstream.createStream' },
      this.deps.logger,
    );
    try {
      await jsm.consumers.info(o.stream, o.durable);
    } catch (err) {
      if (!isJetStreamApiError(err, JetStreamApiCodes.ConsumerNotFound)) throw err;
      await jsm.consumers.add(o.stream, {
        durable_name: o.durable,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        filter_subject: this.opts.subject,
        max_ack_pending: o.maxAckPending,
        ack_wait: nanos(o.ackWaitMs),
      });
      this.deps.logger.info({ stream: o.stream, durable: o.durable }, 'nats durable consumer created');
    }
    const js = jetstream(nc);
    const consumer = await js.consumers.get(o.stream, o.durable);
    const messages = await consumer.consume({ max_messages: this.opts.maxInFlight });
    this.messages = messages;
    this.consuming = true;
    this.deps.logger.info({ stream: o.stream, durable: o.durable, max_in_flight: this.opts.maxInFlight }, 'nats ingress consuming (jetstream)');
    void (async () => {
      for await (const s of messages.status()) {
        if (s.type === 'heartbeats_missed' || s.type === 'consumer_not_found' || s.type === 'consumer_deleted' || s.type === 'stream_not_found') {
          this.deps.logger.warn({ status: s.type }, 'nats consumer status');
        } else this.deps.logger.debug({ status: s.type }, 'nats consumer status');
      }
    })().catch(() => undefined);
    this.loops.track(
      (async () => {
        for await (const m of messages) {
          if (this.stopping) {
            // fetched before the stop: hand it back at once
            m.nak();
            continue;
          }
          await this.slots.acquire();
          this.inflight.track(
            this.handleJs(js, m)
              .catch((err: unknown) => this.deps.logger.error({ err }, 'nats delivery handling failed'))
              .finally(() => this.slots.release()),
          );
        }
      })().finally(() => {
        if (this.messages === messages) this.consuming = false;
      }),
    );
  }

  private process(data: Uint8Array): Promise<IngressOutcome> {
    return processInbound(this.deps.chatService, data, {
      transport: 'nats',
      maxPayloadBytes: this.opts.maxPayloadBytes,
      retryDelayMs: this.opts.retryDelayMs,
    });
  }

  private letter(data: Uint8Array, outcome: Extract<IngressOutcome, { kind: 'dead' }>) {
    const l = deadLetter(data, outcome.reason, {
      source: this.opts.subject,
      transport: 'nats',
      now: this.deps.clock.nowIso(),
      instanceId: this.deps.instanceId,
    });
    const h = natsHeaders();
    for (const [k, v] of Object.entries(l.headers)) h.set(k, v.replace(/[\r\n]/g, ' '));
    return { body: l.body, headers: h };
  }

  private async handleCore(nc: NatsConnection, m: Msg): Promise<void> {
    const { logger, record } = this.deps;
    for (;;) {
      const outcome = await this.process(m.data);
      logOutcome(logger, outcome, { subject: this.opts.subject });
      if (outcome.kind === 'stored' || outcome.kind === 'duplicate') {
        record(outcome.kind);
        this.reply(m, { status: outcome.kind, message: outcome.message });
        return;
      }
      if (outcome.kind === 'dead') {
        const l = this.letter(m.data, outcome);
        nc.publish(this.opts.dlqSubject, l.body, { headers: l.headers });
        record('dead_lettered');
        this.reply(m, { error: outcome.reason });
        return;
      }
      if (outcome.kind !== 'retry') return;
      // retryable: core NATS cannot redeliver, so retry here while holding the slot
      record('requeued');
      if (this.stopping) {
        logger.error({ ...outcome.ids, code: outcome.reason.code }, 'nats core delivery not stored before shutdown (use JetStream for redelivery)');
        this.reply(m, { error: outcome.reason });
        return;
      }
      await this.delays.wait(outcome.delayMs);
    }
  }

  private reply(m: Msg, body: unknown): void {
    if (!m.reply) return;
    try {
      m.respond(Buffer.from(JSON.stringify(body)));
    } catch (err) {
      this.deps.logger.debug({ err: (err as Error).message }, 'nats reply failed');
    }
  }

  private async handleJs(js: JetStreamClient, m: JsMsg): Promise<void> {
    const { logger, record } = this.deps;
    const outcome = await this.process(m.data);
    logOutcome(logger, outcome, { subject: this.opts.subject, stream_seq: m.seq, redelivered: m.redelivered });
    try {
      switch (outcome.kind) {
        case 'stored':
        case 'duplicate':
          m.ack();
          record(outcome.kind);
          return;
        case 'dead': {
          const l = this.letter(m.data, outcome);
          try {
            // persisted when a stream holds the DLQ subject (the one created by createStream does)
            await js.publish(this.opts.dlqSubject, l.body, { headers: l.headers, msgID: `dlq-${this.opts.jetstream!.stream}-${m.seq}` });
          } catch (err) {
            const nc = this.conn.connection;
            if (!nc) throw err;
            logger.debug({ err: (err as Error).message }, 'no stream holds the DLQ subject: published on core NATS');
            nc.publish(this.opts.dlqSubject, l.body, { headers: l.headers });
          }
          m.term();
          record('dead_lettered');
          return;
        }
        case 'retry':
          m.nak(this.stopping ? 0 : outcome.delayMs);
          record('requeued');
          return;
      }
    } catch (err) {
      // not acknowledged: the server redelivers after ack_wait
      logger.warn({ err: (err as Error).message, stream_seq: m.seq }, 'nats delivery not settled; it will be redelivered');
    }
  }

  /** Stop taking deliveries, let in-flight ones finish and settle, then drain and close. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.delays.cancelAll();
    if (this.sub) {
      // stops interest; messages already received are still processed (a drain needs the server: not when it is away)
      if (this.conn.connected) {
        await settledWithin(this.sub.drain(), 5000);
      }
      if (!this.sub.isClosed()) this.sub.unsubscribe();
    }
    if (this.messages) {
      this.messages.stop();
    }
    await this.loops.idle();
    await this.inflight.idle();
    this.consuming = false;
    await this.conn.close(true);
    this.deps.logger.info({ subject: this.opts.subject }, 'nats ingress stopped');
  }
}
