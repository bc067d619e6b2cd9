import Joi from 'joi';
import type { UserRole } from '../../kernel/domain.js';
import { idSchema, roleSchema } from '../../lib/ids.schema.js';

export interface CreateUserInput {
  user_id: string;
  username: string;
  user_role: UserRole;
}

export const createUserSchema = Joi.object<CreateUserInput>({
  user_id: idSchema.required(),
  username: Joi.string().min(1).max(100).pattern(/\S/).required(),
  user_role: roleSchema.default('PATIENT'),
});

export const setRoleSchema = Joi.object<{ user_role: UserRole }>({
  user_role: roleSchema.required(),
});
