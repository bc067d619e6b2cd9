import { ConflictError } from '../../../kernel/errors.js';
import type { AiInteractionRecord, Group, Member, Message, User } from '../../../kernel/domain.js';
import type {
  AiRecordPatch,
  AiRecordQuery,
  AppendResult,
  ClaimRequest,
  MessagePage,
  MessageQuery,
  NewAiRecord,
  NewMessage,
  Repositories,
  Storage,
} from '../../../kernel/ports/storage.port.js';

interface State {
  users: Map<string, User>;
  groups: Map<string, Group>;
  /** group_id -> user_id -> member (insertion order = join order) */
  members: Map<string, Map<string, Member>>;
  messages: Map<string, Message>;
  /** group_id -> messages by seq (index seq-1) */
  byGroup: Map<string, Message[]>;
  /** `${group}\u0000${from}\u0000${client_msg_id}` -> message_id */
  clientIds: Map<string, string>;
  records: Map<string, AiInteractionRecord>;
  recordByMessage: Map<string, string>;
}

function emptyState(): State {
  return {
    users: new Map(),
    groups: new Map(),
    members: new Map(),
    messages: new Map(),
    byGroup: new Map(),
    clientIds: new Map(),
    records: new Map(),
    recordByMessage: new Map(),
  };
}

function cloneState(s: State): State {
  return {
    users: new Map(s.users),
    groups: new Map(s.groups),
    members: new Map([...s.members].map(([k, v]) => [k, new Map(v)])),
    messages: new Map(s.messages),
    byGroup: new Map([...s.byGroup].map(([k, v]) => [k, [...v]])),
    clientIds: new Map(s.clientIds),
    records: new Map(s.records),
    recordByMessage: new Map(s.recordByMessage),
  };
}

const copy = <T extends object>(v: T): T => ({ ...v });

/**
 * In-memory implementation of every storage port, for unit tests and demos.
 * Objects are copied in and out so callers cannot mutate stored state.
 * Transactions run one at a time on a snapshot that replaces the state on commit.
 */
export class MemoryStorage implements Storage {
  private state: State = emptyState();
  private txChain: Promise<unknown> = Promise.resolve();
  readonly users: Repositories['users'];
  readonly groups: Repositories['groups'];
  readonly members: Repositories['members'];
  readonly messages: Repositories['messages'];
  readonly aiRecords: Repositories['aiRecords'];
  /** One process, no pools: background work is ordinary work. */
  readonly background: Repositories = this;

  constructor() {
    // Single operations queue behind a running transaction, so its commit
    // (which swaps in its snapshot) cannot drop them.
    const repos = MemoryStorage.serialized(MemoryStorage.repositories(() => this.state), (fn) => this.enqueue(fn));
    this.users = repos.users;
    this.groups = repos.groups;
    this.members = repos.members;
    this.messages = repos.messages;
    this.aiRecords = repos.aiRecords;
  }

  async ping(): Promise<void> {}

  transaction<T>(work: (tx: Repositories) => Promise<T>): Promise<T> {
    return this.enqueue(async () => {
      const draft = cloneState(this.state);
      const result = await work(MemoryStorage.repositories(() => draft));
      this.state = draft;
      return result;
    });
  }

  private enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.txChain.then(fn, fn);
    this.txChain = p.catch(() => undefined);
    return p;
  }

  private static serialized(repos: Repositories, enqueue: <T>(fn: () => Promise<T>) => Promise<T>): Repositories {
    const wrap = <R extends object>(repo: R): R => {
      const out: Record<string, unknown> = {};
      for (const [k, fn] of Object.entries(repo)) {
        out[k] = (...args: unknown[]) => enqueue(() => (fn as (...a: unknown[]) => Promise<unknown>)(...args));
      }
      return out as R;
    };
    return {
      users: wrap(repos.users),
      groups: wrap(repos.groups),
      members: wrap(repos.members),
      messages: wrap(repos.messages),
      aiRecords: wrap(repos.aiRecords),
    };
  }

  private static repositories(s: () => State): Repositories {
    const listPage = (groupId: string, q: MessageQuery): MessagePage => {
      const all = s().byGroup.get(groupId) ?? [];
      const upper = q.before_seq !== undefined ? Math.min(q.before_seq - 1, all.length) : all.length;
      if (q.after_seq !== undefined) {
        const from = Math.max(0, q.after_seq);
        const slice = all.slice(from, Math.max(from, upper));
        return { messages: slice.slice(0, q.limit).map(copy), has_more: slice.length > q.limit };
      }
      const end = Math.max(0, upper);
      const start = Math.max(0, end - q.limit);
      return { messages: all.slice(start, end).map(copy), has_more: start > 0 };
    };
    return {
      users: {
        async create(user) {
          if (s().users.has(user.user_id)) throw new ConflictError(`user '${user.user_id}' already exists`);
          s().users.set(user.user_id, copy(user));
          return copy(user);
        },
        async get(id) {
          const u = s().users.get(id);
          return u ? copy(u) : null;
        },
        async getMany(ids) {
          return ids.flatMap((id) => {
            const u = s().users.get(id);
            return u ? [copy(u)] : [];
          });
        },
        async updateRole(id, role, updatedAt) {
          const u = s().users.get(id);
          if (!u) return null;
          const next = { ...u, user_role: role, updated_at: updatedAt };
          s().users.set(id, next);
          return copy(next);
        },
      },
      groups: {
        async create(group: Group) {
          if (s().groups.has(group.group_id)) throw new ConflictError(`group '${group.group_id}' already exists`);
          s().groups.set(group.group_id, copy(group));
          return copy(group);
        },
        async get(id) {
          const g = s().groups.get(id);
          return g ? copy(g) : null;
        },
        async listForUser(userId) {
          const mine: Array<{ g: Group; at: string }> = [];
          for (const [gid, members] of s().members) {
            const m = members.get(userId);
            const g = s().groups.get(gid);
            if (m && g) mine.push({ g, at: m.joined_at });
          }
          return mine.sort((a, b) => a.at.localeCompare(b.at)).map((x) => copy(x.g));
        },
      },
      members: {
        async add(member: Member) {
          let ms = s().members.get(member.group_id);
          if (!ms) {
            ms = new Map();
            s().members.set(member.group_id, ms);
          }
          if (ms.has(member.user_id)) throw new ConflictError(`user '${member.user_id}' is already a member`);
          ms.set(member.user_id, copy(member));
          return copy(member);
        },
        async get(groupId, userId) {
          const m = s().members.get(groupId)?.get(userId);
          return m ? copy(m) : null;
        },
        async list(groupId) {
          return [...(s().members.get(groupId)?.values() ?? [])].map(copy);
        },
        async remove(groupId, userId) {
          return s().members.get(groupId)?.delete(userId) ?? false;
        },
        async groupIdsOfUser(userId) {
          const out: string[] = [];
          for (const [gid, ms] of s().members) if (ms.has(userId)) out.push(gid);
          return out;
        },
      },
      messages: {
        async append(m: NewMessage): Promise<AppendResult> {
          const st = s();
          const key = m.client_msg_id === null ? null : `${m.group_id}\u0000${m.from_user_id}\u0000${m.client_msg_id}`;
          if (key !== null) {
            const existing = st.clientIds.get(key);
            if (existing) return { message: copy(st.messages.get(existing)!), created: false };
          }
          if (st.messages.has(m.message_id)) throw new ConflictError(`message '${m.message_id}' already exists`);
          if (key !== null) st.clientIds.set(key, m.message_id);
          let list = st.byGroup.get(m.group_id);
          if (!list) {
            list = [];
            st.byGroup.set(m.group_id, list);
          }
          const message: Message = { ...m, seq: list.length + 1 };
          list.push(message);
          st.messages.set(message.message_id, message);
          return { message: copy(message), created: true };
        },
        async get(id) {
          const m = s().messages.get(id);
          return m ? copy(m) : null;
        },
        async list(groupId: string, q: MessageQuery): Promise<MessagePage> {
          return listPage(groupId, q);
        },
        async listRecent(since: string, limit: number) {
          return [...s().messages.values()]
            .filter((m) => m.created_at >= since)
            .sort((a, b) => a.created_at.localeCompare(b.created_at) || a.message_id.localeCompare(b.message_id))
            .slice(0, limit)
            .map(copy);
        },
      },
      aiRecords: {
        async createIfAbsent(r: NewAiRecord) {
          const st = s();
          const existing = st.recordByMessage.get(r.user_message_id);
          if (existing) return { record: copy(st.records.get(existing)!), created: false };
          const record: AiInteractionRecord = {
            ...r,
            ai_message_id: null,
            request_content: null,
            response_content: null,
            status: 0,
            duration_ms: null,
            error_message: null,
            attempts: 0,
            next_attempt_at: null,
            lease_owner: null,
            lease_until: null,
            updated_at: r.created_at,
          };
          st.records.set(record.record_id, record);
          st.recordByMessage.set(record.user_message_id, record.record_id);
          return { record: copy(record), created: true };
        },
        async get(id) {
          const r = s().records.get(id);
          return r ? copy(r) : null;
        },
        async update(id, patch: AiRecordPatch) {
          const r = s().records.get(id);
          if (!r) return null;
          const next = { ...r, ...patch };
          s().records.set(id, next);
          return copy(next);
        },
        async claimDue(req: ClaimRequest) {
          const due = [...s().records.values()]
            .filter(
              (r) =>
                r.status === 0 &&
                (r.next_attempt_at === null || r.next_attempt_at <= req.now) &&
                (r.lease_until === null || r.lease_until < req.now || r.lease_owner === req.owner),
            )
            .sort((a, b) => a.created_at.localeCompare(b.created_at) || a.record_id.localeCompare(b.record_id))
            .slice(0, req.limit);
          return due.map((r) => {
            const next = { ...r, lease_owner: req.owner, lease_until: req.lease_until, updated_at: req.now };
            s().records.set(r.record_id, next);
            return copy(next);
          });
        },
        async list(q: AiRecordQuery) {
          return [...s().records.values()]
            .filter((r) => (q.group_id === undefined || r.group_id === q.group_id) && (q.status === undefined || r.status === q.status))
            .sort((a, b) => b.created_at.localeCompare(a.created_at) || b.record_id.localeCompare(a.record_id))
            .slice(0, q.limit)
            .map(copy);
        },
      },
    };
  }
}
