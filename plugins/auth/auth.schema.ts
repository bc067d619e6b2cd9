import Joi from 'joi';

export interface AuthOptions {
  /** HS256 secret (IM_JWT_SECRET). */
  jwtSecret: string;
  /** Accepted algorithms; only HMAC ones are verified with the secret. */
  algorithms: Array<'HS256' | 'HS384' | 'HS512'>;
  issuer?: string;
  audience?: string;
  /** Allowed clock skew in seconds for exp/nbf. */
  clockToleranceSeconds: number;
}

export const authOptionsSchema = Joi.object<AuthOptions>({
  jwtSecret: Joi.string().min(16).required().messages({ 'string.min': 'must be at least 16 characters' }),
  algorithms: Joi.array().items(Joi.string().valid('HS256', 'HS384', 'HS512')).min(1).default(['HS256']),
  issuer: Joi.string(),
  audience: Joi.string(),
  clockToleranceSeconds: Joi.number().integer().min(0).max(300).default(5),
});
