import type { AiInteractionRecord, AiRecordStatus, Group, Member, Message, User, UserRole } from '../domain.js';

/**
 * Repository ports. Adapters (memory, sequelize, ...) implement them and are
 * checked by the shared contract suite in test/contracts/.
 *
 * Conventions: lookups return null when absent; a unique-key violation throws
 * ConflictError; an unreachable store throws UnavailableError (nothing written).
 */
export interface UserRepository {
  create(user: User): Promise<User>;
  get(userId: string): Promise<User | null>;
  getMany(userIds: readonly string[]): Promise<User[]>;
  updateRole(userId: string, role: UserRole, updatedAt: string): Promise<User | null>;
}

export interface GroupRepository {
  create(group: Group): Promise<Group>;
  get(groupId: string): Promise<Group | null>;
  /** Groups the user is a member of, oldest membership first. */
  listForUser(userId: string): Promise<Group[]>;
}

export interface MemberRepository {
  add(member: Member): Promise<Member>;
  get(groupId: string, userId: string): Promise<Member | null>;
  list(groupId: string): Promise<Member[]>;
  /** True when a member was removed. */
  remove(groupId: string, userId: string): Promise<boolean>;
  /** Group ids the user belongs to. */
  groupIdsOfUser(userId: string): Promise<string[]>;
}

export interface NewMessage {
  message_id: string;
  group_id: string;
  from_user_id: string;
  msg_type: Message['msg_type'];
  msg_content: string;
  client_msg_id: string | null;
  created_at: string;
}

export interface AppendResult {
  message: Message;
  /** False when (group_id, from_user_id, client_msg_id) was already stored: `message` is the original. */
  created: boolean;
}

export interface MessagePage {
  messages: Message[];
  has_more: boolean;
}

export interface MessageQuery {
  after_seq?: number;
  before_seq?: number;
  limit: number;
}

export interface MessageRepository {
  /**
   * Stores the message and assigns the group's next seq in the same commit
   * (gap-free, strictly increasing by 1 per group, in commit order).
   * Idempotent on (group_id, from_user_id, client_msg_id).
   */
  append(message: NewMessage): Promise<AppendResult>;
  get(messageId: string): Promise<Message | null>;
  /**
   * Ascending seq. With after_seq: the first `limit` messages after it, has_more
   * when more follow. Otherwise: the last `limit` messages before before_seq (or
   * the newest), has_more when older ones exist. With both: after_seq wins, and
   * only messages below before_seq are returned.
   */
  list(groupId: string, query: MessageQuery): Promise<MessagePage>;
  /**
   * Messages of every group created at or after `since` (ISO), oldest first
   * (created_at, then message_id), at most `limit`: for crash recovery scans.
   */
  listRecent(since: string, limit: number): Promise<Message[]>;
}

export type NewAiRecord = Pick<
  AiInteractionRecord,
  'record_id' | 'group_id' | 'user_message_id' | 'ai_service_url' | 'created_at'
>;

export type AiRecordPatch = Partial<
  Pick<
    AiInteractionRecord,
    | 'ai_message_id'
    | 'request_content'
    | 'response_content'
    | 'status'
    | 'duration_ms'
    | 'error_message'
    | 'attempts'
    | 'next_attempt_at'
    | 'lease_owner'
    | 'lease_until'
    | 'ai_service_url'
  >
> & { updated_at: string };

export interface AiRecordQuery {
  group_id?: string;
  status?: AiRecordStatus;
  limit: number;
}

export interface ClaimRequest {
  owner: string;
  now: string;
  lease_until: string;
  limit: number;
}

export interface AiRecordRepository {
  /** Creates a pending record; when one exists for user_message_id, returns it with created=false. */
  createIfAbsent(record: NewAiRecord): Promise<{ record: AiInteractionRecord; created: boolean }>;
  get(recordId: string): Promise<AiInteractionRecord | null>;
  update(recordId: string, patch: AiRecordPatch): Promise<AiInteractionRecord | null>;
  /**
   * Atomically claims pending records that are due (next_attempt_at <= now or null)
   * and not leased by another owner (lease_until null or < now): sets lease_owner
   * and lease_until, and returns them, oldest first.
   */
  claimDue(request: ClaimRequest): Promise<AiInteractionRecord[]>;
  /** Newest first. */
  list(query: AiRecordQuery): Promise<AiInteractionRecord[]>;
}

export interface Repositories {
  users: UserRepository;
  groups: GroupRepository;
  members: MemberRepository;
  messages: MessageRepository;
  aiRecords: AiRecordRepository;
}

/** The storage port: repositories plus a unit of work. */
export interface Storage extends Repositories {
  /**
   * The same repositories, for work no user is waiting on (the AI router's
   * records, reads and recovery scans): it must never delay sends. On
   * PostgreSQL it runs on a small pool of its own (`storage.pool.backgroundMax`),
   * so a burst of it never queues ahead of appends for a connection; appends
   * made through it join the same group commit. Its other writes may be
   * committed without waiting for the disk (PostgreSQL: synchronous_commit
   * off): a database crash can lose the last fraction of a second of them,
   * never half of one, and never one older than a durable commit made after
   * it. Use it only for work that is found again or redone after such a loss
   * (the AI records: the recovery scan, and replies idempotent per record).
   * Elsewhere it is the storage itself.
   */
  readonly background: Repositories;
  /** Runs `work` in one transaction: every repository call on `tx` commits together or not at all. */
  transaction<T>(work: (tx: Repositories) => Promise<T>): Promise<T>;
  /** Resolves when the store is reachable; throws UnavailableError otherwise. */
  ping(): Promise<void>;
}
