import { withContext, type LogContext, type Logger } from './logger.js';
import type { Member, Message } from './domain.js';

/**
 * Events of the in-process message bus. Plugins may add their own events by
 * augmenting this interface (declaration merging):
 *   declare module '../../kernel/bus.js' { interface BusEvents { 'x.y': {...} } }
 */
export interface BusEvents {
  /** Published after the commit that stored a new message (never for idempotent replays). */
  'message.stored': { message: Message; transport: string };
  'member.added': { member: Member };
  'member.removed': { member: Member };
  /** A frame to push to every member of a group (e.g. ai_status); transports decide how. */
  'group.notify': { group_id: string; frame: { type: string } & Record<string, unknown> };
}

export type BusEventName = keyof BusEvents & string;

export interface EventMeta {
  /** 'local' = published in this process; 'remote' = received from another instance through a cluster bus. */
  origin: 'local' | 'remote';
  /** The instance that first published it. */
  instance_id: string;
  /**
   * Local events: the ids of the request or WebSocket connection whose work
   * published it, for the lines subscribers write about it (never sent to
   * other instances).
   */
  logContext?: LogContext;
}

export type BusHandler<K extends BusEventName> = (payload: BusEvents[K], meta: EventMeta) => void | Promise<void>;
export type AnyBusHandler = <K extends BusEventName>(name: K, payload: BusEvents[K], meta: EventMeta) => void | Promise<void>;

export type Unsubscribe = () => void;

/**
 * Publish never waits for subscribers: each handler runs in its own microtask,
 * its synchronous throw or rejected promise is logged and goes no further, and
 * a slow async handler does not delay the publisher or the other handlers.
 */
export class MessageBus {
  private readonly handlers = new Map<string, Set<(payload: unknown, meta: EventMeta) => void | Promise<void>>>();
  private readonly anyHandlers = new Set<AnyBusHandler>();

  constructor(
    private readonly logger: Logger,
    readonly instanceId: string,
  ) {}

  subscribe<K extends BusEventName>(name: K, handler: BusHandler<K>): Unsubscribe {
    let set = this.handlers.get(name);
    if (!set) {
      set = new Set();
      this.handlers.set(name, set);
    }
    const h = handler as (payload: unknown, meta: EventMeta) => void | Promise<void>;
    set.add(h);
    return () => {
      set.delete(h);
    };
  }

  /** Every event (used by cluster buses and egress). */
  subscribeAll(handler: AnyBusHandler): Unsubscribe {
    this.anyHandlers.add(handler);
    return () => {
      this.anyHandlers.delete(handler);
    };
  }

  /**
   * `meta` is a cluster bus's (remote events); a local publisher may pass the
   * CallOptions it was given instead (their `logContext` goes on the event).
   */
  publish<K extends BusEventName>(name: K, payload: BusEvents[K], meta?: EventMeta | { logContext?: LogContext }): void {
    const m: EventMeta =
      meta !== undefined && 'origin' in meta ? meta : { origin: 'local', instance_id: this.instanceId, logContext: meta?.logContext };
    const set = this.handlers.get(name);
    if (set) for (const h of set) this.run(name, m, () => h(payload, m));
    for (const h of this.anyHandlers) this.run(name, m, () => h(name, payload, m));
  }

  listenerCount(name: BusEventName): number {
    return (this.handlers.get(name)?.size ?? 0) + this.anyHandlers.size;
  }

  private run(name: string, meta: EventMeta, call: () => void | Promise<void>): void {
    queueMicrotask(() => {
      try {
        const r = call();
        if (r && typeof (r as Promise<void>).then === 'function') {
          (r as Promise<void>).catch((err: unknown) => this.fail(name, meta, err));
        }
      } catch (err) {
        this.fail(name, meta, err);
      }
    });
  }

  private fail(name: string, meta: EventMeta, err: unknown): void {
    withContext(this.logger, meta.logContext).error({ err, event: name }, 'bus subscriber failed');
  }
}
