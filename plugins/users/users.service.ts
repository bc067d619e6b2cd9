import { ForbiddenError, NotFoundError } from '../../kernel/errors.js';
import type { User } from '../../kernel/domain.js';
import type { Clock } from '../../kernel/clock.js';
import type { Storage } from '../../kernel/ports/storage.port.js';
import type { Principal, UserService } from '../../kernel/ports/services.port.js';
import { validate } from '../../lib/validate.js';
import { createUserSchema, setRoleSchema } from './users.schema.js';

export function requireAdmin(actor: Principal): void {
  if (!actor.admin) throw new ForbiddenError('admin token required');
}

export class UsersService implements UserService {
  constructor(private readonly deps: { storage: Storage; clock: Clock }) {}

  async create(actor: Principal, input: unknown): Promise<User> {
    requireAdmin(actor);
    const v = validate(createUserSchema, input);
    const now = this.deps.clock.nowIso();
    return this.deps.storage.users.create({ ...v, created_at: now, updated_at: now });
  }

  async get(_actor: Principal, userId: string): Promise<User> {
    const u = await this.deps.storage.users.get(userId);
    if (!u) throw new NotFoundError(`user '${userId}' not found`);
    return u;
  }

  async setRole(actor: Principal, userId: string, input: unknown): Promise<User> {
    requireAdmin(actor);
    const { user_role } = validate(setRoleSchema, input);
    const u = await this.deps.storage.users.updateRole(userId, user_role, this.deps.clock.nowIso());
    if (!u) throw new NotFoundError(`user '${userId}' not found`);
    return u;
  }
}
