import type { Group, Member, Message, User } from '../domain.js';
import type { LogContext } from '../logger.js';
import type { MessagePage } from './storage.port.js';

/**
 * The public services of the core feature plugins. Transports (http, ws,
 * ingress) and upper layers (ai-router) call these; they receive raw input and
 * validate it themselves, so every transport gets the same rules and errors.
 */

/** Who is acting: the JWT's `sub`, and whether its `scope` contains `admin`. */
export interface Principal {
  user_id: string;
  admin: boolean;
}

export interface SignOptions {
  admin?: boolean;
  /** Lifetime in seconds; none = no `exp`. */
  expiresInSeconds?: number;
}

export interface AuthService {
  /** Throws UnauthenticatedError for a missing, malformed, expired or wrongly signed token. */
  verify(token: string): Promise<Principal>;
  sign(userId: string, options?: SignOptions): Promise<string>;
}

export interface UserService {
  create(actor: Principal, input: unknown): Promise<User>;
  get(actor: Principal, userId: string): Promise<User>;
  setRole(actor: Principal, userId: string, input: unknown): Promise<User>;
}

/** What a transport tells a service about the work it serves. */
export interface CallOptions {
  /**
   * The ids of the request or WebSocket connection being served: the lines
   * written for this call (by the service and by the subscribers of the bus
   * events it publishes) carry them.
   */
  logContext?: LogContext;
}

export interface GroupService {
  create(actor: Principal, input: unknown, options?: CallOptions): Promise<Group>;
  get(actor: Principal, groupId: string): Promise<Group>;
  listForUser(actor: Principal, userId: string): Promise<Group[]>;
  addMember(actor: Principal, groupId: string, input: unknown, options?: CallOptions): Promise<Member>;
  listMembers(actor: Principal, groupId: string): Promise<Member[]>;
  removeMember(actor: Principal, groupId: string, userId: string, options?: CallOptions): Promise<void>;
  /** Group ids of a user, without access checks (for transports that already authenticated the user). */
  groupIdsOf(userId: string): Promise<string[]>;
}

/** The transport name of the AI layer's replies (SendOptions.transport). */
export const AI_TRANSPORT = 'ai';

export interface SendOptions extends CallOptions {
  /** Which transport stored it (metrics, logs): http, ws, amqp, nats, ai, ... */
  transport: string;
  /** Only the AI layer sets this: permits msg_type AI_REPLY. */
  allowAiReply?: boolean;
}

export interface SendResult {
  message: Message;
  /** False when client_msg_id was already used by this sender in this group (idempotent replay). */
  created: boolean;
}

/**
 * A history page serialised once: `messages_json` is the JSON text of the
 * `messages` array (each message as in API.md §3), which the HTTP route and
 * the WebSocket `sync` frame write into their bodies as it is.
 */
export interface SerializedMessagePage {
  messages_json: string;
  has_more: boolean;
}

export interface ChatService {
  send(actor: Principal, input: unknown, options: SendOptions): Promise<SendResult>;
  list(actor: Principal, query: unknown): Promise<MessagePage>;
  /** `list`, serialised once (byte for byte `JSON.stringify(list(...).messages)`). */
  listSerialized(actor: Principal, query: unknown): Promise<SerializedMessagePage>;
  get(actor: Principal, messageId: string): Promise<Message>;
  /**
   * p99 (ms) of the users' sends (every transport but the AI layer's replies)
   * completed in the last complete half-second, 0 when there were none: what
   * the AI layer watches to yield to users (ai-router.loadShedding.maxSendP99Ms).
   */
  recentSendP99Ms(): number;
}
