import { ConflictError, ForbiddenError, NotFoundError, ValidationError } from '../../kernel/errors.js';
import type { Group, Member } from '../../kernel/domain.js';
import type { MessageBus } from '../../kernel/bus.js';
import type { Clock, IdGenerator } from '../../kernel/clock.js';
import type { Storage } from '../../kernel/ports/storage.port.js';
import type { CallOptions, GroupService, Principal } from '../../kernel/ports/services.port.js';
import { validate } from '../../lib/validate.js';
import { addMemberSchema, createGroupSchema } from './groups.schema.js';

interface Deps {
  storage: Storage;
  clock: Clock;
  ids: IdGenerator;
  bus: MessageBus;
}

export class GroupsService implements GroupService {
  constructor(private readonly deps: Deps) {}

  async create(actor: Principal, input: unknown, options?: CallOptions): Promise<Group> {
    const v = validate(createGroupSchema, input);
    const { storage, clock, ids } = this.deps;
    const creator = await storage.users.get(actor.user_id);
    if (!creator && !actor.admin) throw new ForbiddenError(`caller '${actor.user_id}' is not a registered user`);
    const now = clock.nowIso();
    const group: Group = {
      group_id: v.group_id ?? ids.next(),
      group_name: v.group_name,
      description: v.description ?? null,
      created_by: actor.user_id,
      created_at: now,
      updated_at: now,
    };
    const memberIds = [...new Set([...(creator ? [creator.user_id] : []), ...(v.members ?? [])])];
    const users = await storage.users.getMany(memberIds);
    const found = new Map(users.map((u) => [u.user_id, u]));
    const missing = memberIds.filter((id) => !found.has(id));
    if (missing.length > 0) {
      throw new ValidationError(
        `unknown users: ${missing.join(', ')}`,
        missing.map((id) => ({ path: 'members', message: `user '${id}' not found` })),
      );
    }
    const members: Member[] = memberIds.map((id) => ({ group_id: group.group_id, user_id: id, user_role: found.get(id)!.user_role, joined_at: now }));
    const created = await storage.transaction(async (tx) => {
      const g = await tx.groups.create(group);
      for (const m of members) await tx.members.add(m);
      return g;
    });
    for (const member of members) this.deps.bus.publish('member.added', { member }, options);
    return created;
  }

  async get(actor: Principal, groupId: string): Promise<Group> {
    const g = await this.requireGroup(groupId);
    await this.requireMemberOrAdmin(actor, groupId);
    return g;
  }

  async listForUser(actor: Principal, userId: string): Promise<Group[]> {
    if (!actor.admin && actor.user_id !== userId) throw new ForbiddenError("only the user itself or an admin may list a user's groups");
    const u = await this.deps.storage.users.get(userId);
    if (!u) throw new NotFoundError(`user '${userId}' not found`);
    return this.deps.storage.groups.listForUser(userId);
  }

  async addMember(actor: Principal, groupId: string, input: unknown, options?: CallOptions): Promise<Member> {
    const v = validate(addMemberSchema, input);
    const g = await this.requireGroup(groupId);
    await this.requireManager(actor, g);
    const user = await this.deps.storage.users.get(v.user_id);
    if (!user) throw new NotFoundError(`user '${v.user_id}' not found`);
    const member: Member = { group_id: groupId, user_id: user.user_id, user_role: v.user_role ?? user.user_role, joined_at: this.deps.clock.nowIso() };
    const added = await this.deps.storage.members.add(member).catch((err: unknown) => {
      if (err instanceof ConflictError) throw new ConflictError(`user '${v.user_id}' is already a member of '${groupId}'`);
      throw err;
    });
    this.deps.bus.publish('member.added', { member: added }, options);
    return added;
  }

  async listMembers(actor: Principal, groupId: string): Promise<Member[]> {
    await this.requireGroup(groupId);
    await this.requireMemberOrAdmin(actor, groupId);
    return this.deps.storage.members.list(groupId);
  }

  async removeMember(actor: Principal, groupId: string, userId: string, options?: CallOptions): Promise<void> {
    const g = await this.requireGroup(groupId);
    if (actor.user_id !== userId || actor.admin) await this.requireManager(actor, g);
    const member = await this.deps.storage.members.get(groupId, userId);
    if (!member) throw new NotFoundError(`user '${userId}' is not a member of '${groupId}'`);
    const removed = await this.deps.storage.members.remove(groupId, userId);
    if (removed) this.deps.bus.publish('member.removed', { member }, options);
  }

  groupIdsOf(userId: string): Promise<string[]> {
    return this.deps.storage.members.groupIdsOfUser(userId);
  }

  private async requireGroup(groupId: string): Promise<Group> {
    const g = await this.deps.storage.groups.get(groupId);
    if (!g) throw new NotFoundError(`group '${groupId}' not found`);
    return g;
  }

  private async requireMemberOrAdmin(actor: Principal, groupId: string): Promise<void> {
    if (actor.admin) return;
    const m = await this.deps.storage.members.get(groupId, actor.user_id);
    if (!m) throw new ForbiddenError(`not a member of group '${groupId}'`);
  }

  /** Admin, the creator, or a DOCTOR member. */
  private async requireManager(actor: Principal, group: Group): Promise<void> {
    if (actor.admin || group.created_by === actor.user_id) return;
    const m = await this.deps.storage.members.get(group.group_id, actor.user_id);
    if (m?.user_role !== 'DOCTOR') throw new ForbiddenError('only an admin, the creator or a doctor of the group may manage members');
  }
}
