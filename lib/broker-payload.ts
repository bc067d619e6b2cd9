/**
 * What every broker ingress shares (API.md §7): the inbound payload schema,
 * the decode -> validate -> chatService.send() step and its outcome (ack,
 * dead-letter or retry), the dead-letter envelope, delivery statistics and
 * metrics. Transports (amqp-ingress, nats-ingress) only map the outcome onto
 * their broker's ack/nack/term and publish the dead letter.
 */
import Joi from 'joi';
import { Counter, type Registry } from 'prom-client';
import type { BusEvents, MessageBus } from '../kernel/bus.js';
import type { Container } from '../kernel/container.js';
import type { Message } from '../kernel/domain.js';
import { AppError, type ErrorCode, type ErrorDetail, InvalidJsonError, PayloadTooLargeError, RateLimitedError, toAppError } from '../kernel/errors.js';
import { withContext, type LogContext, type Logger } from '../kernel/logger.js';
import type { ChatService } from '../kernel/ports/services.port.js';
import { idSchema } from './ids.schema.js';
import { metricRegistries } from './metrics.js';
import { validate } from './validate.js';

/** The inbound payload of API.md §7. Content rules (length, blank, msg_type) are chatService's. */
export interface InboundPayload {
  from_user_id: string;
  group_id: string;
  msg_type?: string;
  msg_content: string;
  client_msg_id: string;
}

export const inboundPayloadSchema = Joi.object<InboundPayload>({
  from_user_id: idSchema.required(),
  group_id: idSchema.required(),
  msg_type: Joi.string(),
  msg_content: Joi.string().allow('').required(),
  client_msg_id: Joi.string().min(1).max(128).required(),
});

/** Identifiers of a delivery, for logs (never msg_content). */
export interface DeliveryIds {
  group_id?: string;
  from_user_id?: string;
  client_msg_id?: string;
}

export interface ReasonBody {
  code: ErrorCode;
  message: string;
  details: ErrorDetail[];
}

export type IngressOutcome =
  | { kind: 'stored' | 'duplicate'; message: Message; ids: DeliveryIds }
  /** Not retried: dead-letter it with the reason, then acknowledge the original. */
  | { kind: 'dead'; reason: ReasonBody; ids: DeliveryIds }
  /** Retried: requeue after delayMs (storage outage, rate limit, internal fault). */
  | { kind: 'retry'; delayMs: number; reason: ReasonBody; ids: DeliveryIds };

export type DeliveryOutcome = 'stored' | 'duplicate' | 'dead_lettered' | 'requeued';

/** Error codes that mean "this payload will never be accepted": dead-lettered. */
const DEAD_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'VALIDATION_FAILED',
  'INVALID_JSON',
  'NOT_FOUND',
  'FORBIDDEN',
  'CONFLICT',
  'PAYLOAD_TOO_LARGE',
  'UNAUTHENTICATED',
]);

export interface ProcessOptions {
  transport: 'amqp' | 'nats';
  /** Larger payloads are dead-lettered without being parsed. */
  maxPayloadBytes: number;
  /** Delay before a retryable failure is tried again (rate limits use their own delay when longer). */
  retryDelayMs: number;
}

function reasonOf(err: AppError): ReasonBody {
  return { code: err.code, message: err.message, details: err.details };
}

function idsOf(value: unknown): DeliveryIds {
  if (typeof value !== 'object' || value === null) return {};
  const o = value as Record<string, unknown>;
  const ids: DeliveryIds = {};
  if (typeof o.group_id === 'string') ids.group_id = o.group_id.slice(0, 64);
  if (typeof o.from_user_id === 'string') ids.from_user_id = o.from_user_id.slice(0, 64);
  if (typeof o.client_msg_id === 'string') ids.client_msg_id = o.client_msg_id.slice(0, 128);
  return ids;
}

/**
 * One delivery through the core: decode, validate, send as the payload's
 * sender (not an admin: the sender must be a member), and classify the result.
 * Never throws.
 */
export async function processInbound(chat: ChatService, body: Uint8Array, opts: ProcessOptions): Promise<IngressOutcome> {
  let ids: DeliveryIds = {};
  try {
    if (body.byteLength > opts.maxPayloadBytes) {
      throw new PayloadTooLargeError(`payload of ${body.byteLength} bytes is over the limit of ${opts.maxPayloadBytes}`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'));
    } catch {
      throw new InvalidJsonError('payload is not valid JSON');
    }
    ids = idsOf(parsed);
    const p = validate(inboundPayloadSchema, parsed, 'payload');
    const input: Record<string, unknown> = { group_id: p.group_id, msg_content: p.msg_content, client_msg_id: p.client_msg_id };
    if (p.msg_type !== undefined) input.msg_type = p.msg_type;
    const { message, created } = await chat.send({ user_id: p.from_user_id, admin: false }, input, { transport: opts.transport });
    return { kind: created ? 'stored' : 'duplicate', message, ids };
  } catch (err) {
    const e = toAppError(err);
    if (DEAD_CODES.has(e.code)) return { kind: 'dead', reason: reasonOf(e), ids };
    const delayMs = e instanceof RateLimitedError ? Math.max(opts.retryDelayMs, e.retryAfterSeconds * 1000) : opts.retryDelayMs;
    // INTERNAL is retried too: a server-side fault must never drop a message.
    return { kind: 'retry', delayMs, reason: reasonOf(e), ids };
  }
}

/** The dead letter: a JSON envelope holding the reason, the original payload and the time. */
export interface DeadLetter {
  error: ReasonBody;
  /** The original payload as text (base64 when it is not valid UTF-8; see payload_encoding). */
  payload: string;
  payload_encoding: 'utf8' | 'base64';
  /** Queue or subject the payload was consumed from. */
  source: string;
  transport: 'amqp' | 'nats';
  failed_at: string;
  instance_id: string;
}

export function deadLetter(
  body: Uint8Array,
  reason: ReasonBody,
  meta: { source: string; transport: 'amqp' | 'nats'; now: string; instanceId: string },
): { body: Buffer; headers: Record<string, string> } {
  const buf = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  let payload: string;
  let encoding: 'utf8' | 'base64' = 'utf8';
  const text = buf.toString('utf8');
  if (Buffer.from(text, 'utf8').equals(buf)) payload = text;
  else {
    payload = buf.toString('base64');
    encoding = 'base64';
  }
  const letter: DeadLetter = {
    error: reason,
    payload,
    payload_encoding: encoding,
    source: meta.source,
    transport: meta.transport,
    failed_at: meta.now,
    instance_id: meta.instanceId,
  };
  return {
    body: Buffer.from(JSON.stringify(letter), 'utf8'),
    headers: {
      'x-im-error-code': reason.code,
      'x-im-error-message': reason.message.slice(0, 1000),
      'x-im-failed-at': meta.now,
      'x-im-source': meta.source,
    },
  };
}

/** Per-plugin delivery counters (exposed on the plugin's status object; tests and ops read them). */
export type DeliveryStats = Record<DeliveryOutcome, number>;

export function newStats(): DeliveryStats {
  return { stored: 0, duplicate: 0, dead_lettered: 0, requeued: 0 };
}

/** What an ingress plugin registers in the container (e.g. `amqpIngress`). */
export interface IngressStatus {
  /** True while connected to the broker and consuming. */
  readonly connected: boolean;
  readonly stats: Readonly<DeliveryStats>;
  /** Deliveries being processed right now. */
  readonly inFlight: number;
}

const METRIC = 'im_broker_deliveries_total';

/**
 * Counts deliveries by transport and outcome, in this kernel's metrics registry
 * when the metrics plugin is enabled (shared by both ingress plugins: get-or-create).
 */
export function deliveryRecorder(container: Container, transport: 'amqp' | 'nats', stats: DeliveryStats): (o: DeliveryOutcome) => void {
  const counters = metricRegistries(container).map((reg: Registry) => {
    const existing = reg.getSingleMetric(METRIC);
    if (existing) return existing as Counter<'transport' | 'outcome'>;
    return new Counter({
      name: METRIC,
      help: 'Broker ingress deliveries by transport and outcome (stored, duplicate, dead_lettered, requeued)',
      labelNames: ['transport', 'outcome'] as const,
      registers: [reg],
    });
  });
  return (o) => {
    stats[o] += 1;
    for (const c of counters) c.inc({ transport, outcome: o });
  };
}

/** Logs one outcome: ids and error codes only (never msg_content). */
export function logOutcome(logger: Logger, outcome: IngressOutcome, extra: Record<string, unknown> = {}): void {
  const base = { ...outcome.ids, ...extra };
  switch (outcome.kind) {
    case 'stored':
    case 'duplicate':
      logger.debug({ ...base, outcome: outcome.kind, message_id: outcome.message.message_id, seq: outcome.message.seq }, 'broker delivery stored');
      return;
    case 'dead':
      logger.warn({ ...base, code: outcome.reason.code, reason: outcome.reason.message }, 'broker delivery dead-lettered');
      return;
    case 'retry':
      logger.warn({ ...base, code: outcome.reason.code, reason: outcome.reason.message, delay_ms: outcome.delayMs }, 'broker delivery will be retried');
      return;
  }
}

/** A sleep that stop() can cut short (returns early, so the delivery is released at once). */
export class Delays {
  private readonly pending = new Set<() => void>();
  private cancelled = false;
  wait(ms: number): Promise<void> {
    if (this.cancelled) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.pending.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.pending.add(done);
    });
  }
  /** Ends every wait now, and every later wait at once. */
  cancelAll(): void {
    this.cancelled = true;
    for (const d of [...this.pending]) d();
  }
}

/** A counting semaphore bounding deliveries in flight. */
export class Slots {
  private used = 0;
  private readonly waiters: (() => void)[] = [];
  constructor(private readonly size: number) {}
  get inUse(): number {
    return this.used;
  }
  async acquire(): Promise<void> {
    if (this.used < this.size) {
      this.used += 1;
      return;
    }
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }
  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.used -= 1;
  }
}

/** Tracks in-flight work so stop() can wait for it. */
export class InFlight {
  private readonly set = new Set<Promise<unknown>>();
  get size(): number {
    return this.set.size;
  }
  track(p: Promise<unknown>): void {
    const q = p.finally(() => this.set.delete(q));
    this.set.add(q);
  }
  async idle(): Promise<void> {
    while (this.set.size > 0) await Promise.allSettled([...this.set]);
  }
}

/** The shared `amqp` / `nats` config sections (config/loader.ts puts IM_AMQP_URL / IM_NATS_URL there). */
export function brokerUrl(config: Readonly<Record<string, unknown>>, section: 'amqp' | 'nats', schemes: string[]): string {
  const s = config[section];
  const url = typeof s === 'object' && s !== null ? (s as Record<string, unknown>).url : undefined;
  if (typeof url !== 'string' || url === '') throw new Error(`${section}.url: is required (set IM_${section.toUpperCase()}_URL)`);
  for (const u of url.split(',')) {
    let scheme: string;
    try {
      scheme = new URL(u.trim()).protocol.replace(/:$/, '');
    } catch {
      throw new Error(`${section}.url: '${u.trim().replace(/\/\/[^@/]*@/, '//***@')}' is not a URL`);
    }
    if (!schemes.includes(scheme)) throw new Error(`${section}.url: scheme must be one of ${schemes.join(', ')}`);
  }
  return url;
}

/** Bus events published by the egress plugins (local origin only: once per cluster). */
export const EGRESS_EVENTS = ['message.stored', 'member.added', 'member.removed'] as const;
export type EgressEventName = (typeof EGRESS_EVENTS)[number];

export interface EgressEvent {
  event: EgressEventName;
  group_id: string;
  /** Stable id of the event (message_id for messages): broker-side de-duplication. */
  id: string;
  /** JSON: `{event, data, transport?, instance_id}`. */
  body: Buffer;
  /** The ids of the work that published it (an HTTP request's req_id, a socket's conn, the user): lines about this event carry them (`withContext`). Never published. */
  logContext?: LogContext;
}

export function egressEvent<K extends EgressEventName>(event: K, payload: BusEvents[K], instanceId: string): EgressEvent {
  if (event === 'message.stored') {
    const p = payload as BusEvents['message.stored'];
    const body = { event, data: p.message, transport: p.transport, instance_id: instanceId };
    return { event, group_id: p.message.group_id, id: p.message.message_id, body: Buffer.from(JSON.stringify(body)) };
  }
  const m = (payload as BusEvents['member.added']).member;
  const body = { event, data: m, instance_id: instanceId };
  return { event, group_id: m.group_id, id: `${event}:${m.group_id}:${m.user_id}:${m.joined_at}`, body: Buffer.from(JSON.stringify(body)) };
}

/**
 * A line about one egress event (dropped, retried): its name, group and id,
 * written with the ids of the request or socket that published it
 * (`logContext`: req_id or conn, user_id). Never its content.
 */
export function logEgressEvent(logger: Logger, level: 'warn' | 'error', e: EgressEvent, msg: string, extra: Record<string, unknown> = {}): void {
  withContext(logger, e.logContext)[level]({ ...extra, event: e.event, group_id: e.group_id, id: e.id }, msg);
}

/** Subscribes `publish` to the egress events of local origin; returns the unsubscribe. */
export function subscribeEgress(bus: MessageBus, instanceId: string, publish: (e: EgressEvent) => void): () => void {
  const offs = EGRESS_EVENTS.map((name) =>
    bus.subscribe(name, (payload, meta) => {
      if (meta.origin !== 'local') return;
      const e = egressEvent(name, payload as BusEvents[typeof name], instanceId);
      if (meta.logContext !== undefined) e.logContext = meta.logContext;
      publish(e);
    }),
  );
  return () => {
    for (const off of offs) off();
  };
}
