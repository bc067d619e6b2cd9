import Joi from 'joi';
import { idSchema } from '../../lib/ids.schema.js';

export interface ConsoleOptions {
  /**
   * Development only: enables POST /console/dev-token, which signs a token for
   * any user id without a password. Refused when NODE_ENV=production.
   */
  devTokens: boolean;
  /** Lifetime of a dev token, in seconds. */
  devTokenTtlSeconds: number;
}

export const consoleOptionsSchema = Joi.object<ConsoleOptions>({
  devTokens: Joi.boolean().default(false),
  devTokenTtlSeconds: Joi.number().integer().min(60).max(7 * 24 * 3600).default(12 * 3600),
});

export interface DevTokenInput {
  user_id: string;
  admin: boolean;
}

export const devTokenBodySchema = Joi.object<DevTokenInput>({
  user_id: idSchema.required(),
  admin: Joi.boolean().default(false),
});

export const devTokenResponseSchema = Joi.object({
  token: Joi.string().required(),
  user_id: Joi.string().required(),
  admin: Joi.boolean().required(),
  expires_in: Joi.number().integer().required(),
});
