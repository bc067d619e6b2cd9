import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { ForbiddenError, NotFoundError, RateLimitedError, ValidationError } from '../../kernel/errors.js';
import type { Message } from '../../kernel/domain.js';
import type { MessageBus } from '../../kernel/bus.js';
import type { Clock, IdGenerator } from '../../kernel/clock.js';
import type { MessagePage, Storage } from '../../kernel/ports/storage.port.js';
import { AI_TRANSPORT, type ChatService, type Principal, type SendOptions, type SendResult, type SerializedMessagePage } from '../../kernel/ports/services.port.js';
import { validate } from '../../lib/validate.js';
import { WindowedP99 } from '../../lib/windowed-p99.js';
import { listMessagesSchema, sendMessageSchema, type ChatOptions, type ListQuery } from './chat.schema.js';

/** Window of recentSendP99Ms (ms). */
const SEND_LATENCY_WINDOW_MS = 500;

interface Deps {
  storage: Storage;
  clock: Clock;
  ids: IdGenerator;
  bus: MessageBus;
}

/**
 * The send path of every transport: validate, check membership, store (seq is
 * assigned in the storage commit), then publish `message.stored`.
 */
export class ChatServiceImpl implements ChatService {
  private readonly sendSchema;
  private readonly limiter: RateLimiterMemory | null;
  /** The transports whose sends the limiter counts. */
  private readonly limited: ReadonlySet<string>;
  /** `${group_id}\u0000${user_id}` -> remembered until (ms); positive answers only. */
  private readonly members = new Map<string, number>();
  /** Durations of users' sends (AI replies excluded), per window of SEND_LATENCY_WINDOW_MS. */
  private readonly sendLatency: WindowedP99;

  constructor(
    private readonly deps: Deps,
    private readonly options: ChatOptions,
  ) {
    deps.bus.subscribe('member.removed', ({ member }) => {
      this.members.delete(memberKey(member.group_id, member.user_id));
    });
    this.sendSchema = sendMessageSchema(options.maxContentLength);
    // windows follow the kernel's clock (tests move it); durations are measured with performance.now()
    this.sendLatency = new WindowedP99(SEND_LATENCY_WINDOW_MS, () => deps.clock.now().getTime());
    this.limiter =
      options.rateLimit.points > 0
        ? new RateLimiterMemory({ points: options.rateLimit.points, duration: options.rateLimit.durationSeconds })
        : null;
    this.limited = new Set(options.rateLimit.transports);
  }

  async send(actor: Principal, input: unknown, options: SendOptions): Promise<SendResult> {
    if (options.transport === AI_TRANSPORT) return this.store(actor, input, options);
    const t0 = performance.now();
    try {
      return await this.store(actor, input, options);
    } finally {
      this.sendLatency.record(performance.now() - t0);
    }
  }

  recentSendP99Ms(): number {
    return this.sendLatency.last().p99Ms;
  }

  private async store(actor: Principal, input: unknown, options: SendOptions): Promise<SendResult> {
    const v = validate(this.sendSchema, input);
    if (v.msg_type === 'AI_REPLY' && !options.allowAiReply) {
      throw new ValidationError('msg_type AI_REPLY is written only by the AI layer', [
        { path: 'msg_type', message: "'msg_type' must be one of [TEXT, IMAGE]" },
      ]);
    }
    const from = v.from_user_id ?? actor.user_id;
    if (from !== actor.user_id && !actor.admin) throw new ForbiddenError('only an admin may send as another user');
    await this.consumeRate(from, options);
    const { storage, clock, ids, bus } = this.deps;
    await this.requireMember(v.group_id, from);
    const { message, created } = await storage.messages.append({
      message_id: ids.next(),
      group_id: v.group_id,
      from_user_id: from,
      msg_type: v.msg_type,
      msg_content: v.msg_content,
      client_msg_id: v.client_msg_id ?? null,
      created_at: clock.nowIso(),
    });
    // the options carry the caller's logContext onto the event
    if (created) bus.publish('message.stored', { message, transport: options.transport }, options);
    return { message, created };
  }

  async list(actor: Principal, query: unknown): Promise<MessagePage> {
    const q = await this.pageQuery(actor, query);
    return this.deps.storage.messages.list(q.group_id, q);
  }

  async listSerialized(actor: Principal, query: unknown): Promise<SerializedMessagePage> {
    const q = await this.pageQuery(actor, query);
    const page = await this.deps.storage.messages.list(q.group_id, q);
    return { messages_json: JSON.stringify(page.messages), has_more: page.has_more };
  }

  /** The validated history query of a member (or admin) of its group. */
  private async pageQuery(actor: Principal, query: unknown): Promise<ListQuery> {
    const q = validate(listMessagesSchema, query, 'query');
    await this.requireAccess(actor, q.group_id);
    return q;
  }

  async get(actor: Principal, messageId: string): Promise<Message> {
    const m = await this.deps.storage.messages.get(messageId);
    if (!m) throw new NotFoundError(`message '${messageId}' not found`);
    await this.requireAccess(actor, m.group_id);
    return m;
  }

  private async consumeRate(userId: string, options: SendOptions): Promise<void> {
    if (!this.limiter || !this.limited.has(options.transport)) return;
    try {
      await this.limiter.consume(userId);
    } catch (res) {
      if (res instanceof RateLimiterRes) throw new RateLimitedError(res.msBeforeNext / 1000);
      throw res;
    }
  }

  /** Sender must be a member; an unknown group is 404, a non-member 403. */
  private async requireMember(groupId: string, userId: string): Promise<void> {
    if (await this.isMember(groupId, userId)) return;
    const g = await this.deps.storage.groups.get(groupId);
    if (!g) throw new NotFoundError(`group '${groupId}' not found`);
    throw new ForbiddenError(`'${userId}' is not a member of group '${groupId}'`);
  }

  private async isMember(groupId: string, userId: string): Promise<boolean> {
    const { membershipCacheMs, membershipCacheSize } = this.options;
    const key = memberKey(groupId, userId);
    const now = this.deps.clock.now().getTime();
    const until = this.members.get(key);
    if (until !== undefined) {
      if (until > now) return true;
      this.members.delete(key);
    }
    const m = await this.deps.storage.members.get(groupId, userId);
    if (!m) return false;
    if (membershipCacheMs > 0) {
      if (this.members.size >= membershipCacheSize) this.members.delete(this.members.keys().next().value as string);
      this.members.set(key, now + membershipCacheMs);
    }
    return true;
  }

  private async requireAccess(actor: Principal, groupId: string): Promise<void> {
    if (actor.admin) {
      if (!(await this.deps.storage.groups.get(groupId))) throw new NotFoundError(`group '${groupId}' not found`);
      return;
    }
    await this.requireMember(groupId, actor.user_id);
  }
}

function memberKey(groupId: string, userId: string): string {
  return `${groupId}\u0000${userId}`;
}
