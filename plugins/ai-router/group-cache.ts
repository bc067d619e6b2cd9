import type { Member, Message, User } from '../../kernel/domain.js';
import type { Repositories } from '../../kernel/ports/storage.port.js';

/** A group's members as the router reads them: the list, by user id, and the AI_ASSISTANT member. */
export interface GroupMembers {
  list: Member[];
  byId: ReadonlyMap<string, Member>;
  /** The first AI_ASSISTANT member (the sender of replies), or null. */
  assistant: Member | null;
}

interface MembersEntry {
  members: GroupMembers;
  /** Remembered until (ms). */
  until: number;
  /** Users of this group already read, with user_role = their role in the group when they are members. */
  users: Map<string, User>;
}

export function groupMembers(list: Member[]): GroupMembers {
  const byId = new Map<string, Member>();
  let assistant: Member | null = null;
  for (const m of list) {
    byId.set(m.user_id, m);
    if (assistant === null && m.user_role === 'AI_ASSISTANT') assistant = m;
  }
  return { list, byId, assistant };
}

/**
 * The members of the groups the router works on (and the users among them),
 * remembered for `ttlMs`. `invalidate(group)` (called for every
 * 'member.added' / 'member.removed', from any instance) drops a group at once,
 * and a read that was in flight when a change arrived is not remembered, so
 * the next decision after the event sees the change; the TTL is the backstop
 * for an event that never arrives. Concurrent reads of one group share one
 * storage call. `ttlMs` 0 = ask storage every time.
 */
export class MembersCache {
  private readonly entries = new Map<string, MembersEntry>();
  private readonly loading = new Map<string, Promise<GroupMembers>>();
  /** Bumped by every invalidation: a read that started before one is not remembered. */
  private epoch = 0;

  constructor(
    private readonly storage: Repositories,
    private readonly nowMs: () => number,
    private readonly ttlMs: number,
    private readonly maxGroups: number,
  ) {}

  invalidate(groupId: string): void {
    this.epoch++;
    this.entries.delete(groupId);
    this.loading.delete(groupId);
  }

  clear(): void {
    this.epoch++;
    this.entries.clear();
    this.loading.clear();
  }

  async get(groupId: string): Promise<GroupMembers> {
    if (this.ttlMs <= 0) return groupMembers(await this.storage.members.list(groupId));
    const entry = this.fresh(groupId);
    if (entry) return entry.members;
    const inFlight = this.loading.get(groupId);
    if (inFlight) return inFlight;
    const epoch = this.epoch;
    const read = this.storage.members.list(groupId).then(
      (list) => {
        const members = groupMembers(list);
        if (this.loading.get(groupId) === read) this.loading.delete(groupId);
        if (this.epoch === epoch) this.remember(groupId, members);
        return members;
      },
      (err: unknown) => {
        if (this.loading.get(groupId) === read) this.loading.delete(groupId);
        throw err;
      },
    );
    this.loading.set(groupId, read);
    return read;
  }

  /**
   * The users `ids` (distinct) seen in a group, those that exist, with
   * user_role = their role in the group when they are members. Users already
   * read for the group come from its entry (remembered as long as the members
   * are, so for at most `ttlMs`); the others in one `users.getMany`.
   */
  async users(groupId: string, members: GroupMembers, ids: readonly string[]): Promise<Map<string, User>> {
    const fresh = this.ttlMs > 0 ? this.fresh(groupId) : undefined;
    const entry = fresh && fresh.members === members ? fresh : undefined;
    const out = new Map<string, User>();
    let missing: string[] | null = null;
    for (const id of ids) {
      const u = entry?.users.get(id);
      if (u) out.set(id, u);
      else (missing ??= []).push(id);
    }
    if (missing === null) return out;
    for (const u of await this.storage.users.getMany(missing)) {
      const m = members.byId.get(u.user_id);
      const user = m && m.user_role !== u.user_role ? { ...u, user_role: m.user_role } : u;
      entry?.users.set(u.user_id, user);
      out.set(u.user_id, user);
    }
    return out;
  }

  private fresh(groupId: string): MembersEntry | undefined {
    const entry = this.entries.get(groupId);
    if (!entry) return undefined;
    if (entry.until > this.nowMs()) return entry;
    this.entries.delete(groupId);
    return undefined;
  }

  private remember(groupId: string, members: GroupMembers): void {
    this.entries.delete(groupId);
    if (this.entries.size >= this.maxGroups) this.entries.delete(this.entries.keys().next().value as string);
    this.entries.set(groupId, { members, until: this.nowMs() + this.ttlMs, users: new Map() });
  }
}

interface GroupHistory {
  /** seq -> message; every key is > maxSeq - keep. */
  bySeq: Map<number, Message>;
  maxSeq: number;
  chars: number;
}

/**
 * The recent messages of the groups the router forwards from, by seq: fed by
 * 'message.stored' (every origin) for groups already tracked and by the
 * storage reads it replaces. Messages never change and seq is gap-free per
 * group, so a range answered from here is exactly what storage would answer;
 * when any seq of the range is missing, storage is asked (and its answer
 * remembered). Bounded: `keep` messages per group (the newest), and at most
 * `maxMessages` messages / `maxChars` characters of content in all (the least
 * recently used groups are dropped first).
 */
export class HistoryCache {
  private readonly groups = new Map<string, GroupHistory>();
  private messages = 0;
  private chars = 0;

  constructor(
    private readonly storage: Repositories,
    private readonly keep: number,
    private readonly maxMessages: number,
    private readonly maxChars: number,
  ) {}

  /** A stored message (bus event): remembered when its group is tracked. */
  add(message: Message): void {
    const g = this.groups.get(message.group_id);
    if (!g) return;
    this.put(g, message);
    this.evict();
  }

  /** Starts tracking the message's group (a message the router forwards) and remembers the message. */
  track(message: Message): void {
    this.put(this.group(message.group_id), message);
    this.evict();
  }

  /** A message of a tracked group by id, or undefined. */
  find(groupId: string, messageId: string): Message | undefined {
    const g = this.groups.get(groupId);
    if (!g) return undefined;
    for (const m of g.bySeq.values()) if (m.message_id === messageId) return m;
    return undefined;
  }

  /** The message with this seq in a tracked group, or undefined. */
  at(groupId: string, seq: number): Message | undefined {
    return this.groups.get(groupId)?.bySeq.get(seq);
  }

  /** The last `n` messages of the group up to `message` (ascending seq, `message` last), as messages.list would give them. */
  async upTo(message: Message, n: number): Promise<Message[]> {
    const g = this.groups.get(message.group_id);
    if (g) {
      this.touch(message.group_id, g);
      const from = Math.max(1, message.seq - n + 1);
      const out: Message[] = [];
      for (let s = from; s <= message.seq; s++) {
        const m = s === message.seq ? message : g.bySeq.get(s);
        if (!m) break;
        out.push(m);
      }
      if (out.length === message.seq - from + 1) return out;
    }
    const page = await this.storage.messages.list(message.group_id, { before_seq: message.seq + 1, limit: n });
    this.remember(message.group_id, page.messages);
    return page.messages.some((m) => m.message_id === message.message_id) ? page.messages : [...page.messages, message];
  }

  /** Remembers messages read from storage (tracking their group). */
  remember(groupId: string, messages: readonly Message[]): void {
    if (messages.length === 0) return;
    const g = this.group(groupId);
    for (const m of messages) this.put(g, m);
    this.evict();
  }

  private group(groupId: string): GroupHistory {
    let g = this.groups.get(groupId);
    if (!g) {
      g = { bySeq: new Map(), maxSeq: 0, chars: 0 };
      this.groups.set(groupId, g);
    } else this.touch(groupId, g);
    return g;
  }

  /** Most recently used last (eviction takes the first). */
  private touch(groupId: string, g: GroupHistory): void {
    this.groups.delete(groupId);
    this.groups.set(groupId, g);
  }

  private put(g: GroupHistory, m: Message): void {
    if (m.seq <= g.maxSeq - this.keep || g.bySeq.has(m.seq)) return;
    if (m.seq > g.maxSeq) {
      const oldFloor = g.maxSeq - this.keep;
      const floor = m.seq - this.keep;
      if (floor - oldFloor >= this.keep) this.clearGroup(g);
      else for (let s = oldFloor + 1; s <= floor; s++) this.dropSeq(g, s);
      g.maxSeq = m.seq;
    }
    g.bySeq.set(m.seq, m);
    g.chars += m.msg_content.length;
    this.chars += m.msg_content.length;
    this.messages++;
  }

  private dropSeq(g: GroupHistory, seq: number): void {
    const m = g.bySeq.get(seq);
    if (!m) return;
    g.bySeq.delete(seq);
    g.chars -= m.msg_content.length;
    this.chars -= m.msg_content.length;
    this.messages--;
  }

  private clearGroup(g: GroupHistory): void {
    this.chars -= g.chars;
    this.messages -= g.bySeq.size;
    g.bySeq.clear();
    g.chars = 0;
  }

  private evict(): void {
    while ((this.messages > this.maxMessages || this.chars > this.maxChars) && this.groups.size > 1) {
      const [groupId, g] = this.groups.entries().next().value as [string, GroupHistory];
      this.clearGroup(g);
      this.groups.delete(groupId);
    }
  }
}
