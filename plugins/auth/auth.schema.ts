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
  /** Verified tokens remembered (each at most `cacheTtlSeconds` and never past its exp); 0 = verify every time. */
  cacheSize: number;
  cacheTtlSeconds: number;
}

export const authOptionsSchema = Joi.object<AuthOptions>({
  jwtSecret: Joi.string().min(16).required().messages({ 'string.min': 'must be at least 16 characters' }),
  algorithms: Joi.array().items(Joi.string().valid('HS256', 'HS384', 'HS512')).min(1).default(['HS256']),
  issuer: Joi.string(),
  audience: Joi.string(),
  clockToleranceSeconds: Joi.number().integer().min(0).max(300).default(5),
  cacheSize: Joi.number().integer().min(0).max(1_000_000).default(10_000),
  cacheTtlSeconds: Joi.number().integer().min(1).max(3600).default(60),
});
