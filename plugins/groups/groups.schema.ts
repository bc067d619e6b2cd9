import Joi from 'joi';
import type { UserRole } from '../../kernel/domain.js';
import { idSchema, roleSchema } from '../../lib/ids.schema.js';

export interface CreateGroupInput {
  group_name: string;
  group_id?: string;
  description?: string;
  members?: string[];
}

export const createGroupSchema = Joi.object<CreateGroupInput>({
  group_name: Joi.string().min(1).max(100).pattern(/\S/).required(),
  group_id: idSchema,
  description: Joi.string().allow('').max(1000),
  members: Joi.array().items(idSchema).unique().max(1000),
});

export interface AddMemberInput {
  user_id: string;
  user_role?: UserRole;
}

export const addMemberSchema = Joi.object<AddMemberInput>({
  user_id: idSchema.required(),
  user_role: roleSchema,
});
