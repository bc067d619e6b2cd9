import type { Logger } from './logger.js';
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

  publish<K extends BusEventName>(name: K, payload: BusEvents[K], meta?: EventMeta): void {
    const m: EventMeta = meta ?? { origin: 'local', instance_id: this.instanceId };
    const set = this.handlers.get(name);
    if (set) for (const h of set) this.run(name, () => h(payload, m));
    for (const h of this.anyHandlers) this.run(name, () => h(name, payload, m));
  }

  listenerCount(name: BusEventName): number {
    return (this.handlers.get(name)?.size ?? 0) + this.anyHandlers.size;
  }

  private run(name: string, call: () => void | Promise<void>): void {
    queueMicrotask(() => {
      try {
        const r = call();
        if (r && typeof (r as Promise<void>).then === 'function') {
          (r as Promise<void>).catch((err: unknown) => this.fail(name, err));
        }
      } catch (err) {
        this.fail(name, err);
      }
    });
  }

  private fail(name: string, err: unknown): void {
    this.logger.error({ err, event: name }, 'bus subscriber failed');
  }
}
