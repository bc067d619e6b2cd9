import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';
import { UnauthenticatedError } from '../../kernel/errors.js';
import type { AuthService, Principal, SignOptions } from '../../kernel/ports/services.port.js';
import type { AuthOptions } from './auth.schema.js';

/** JWT verification per API.md §2 (jose): only the configured algorithms, `exp` honoured, `sub` required. */
export class JwtAuthService implements AuthService {
  private readonly key: Uint8Array;
  constructor(private readonly options: AuthOptions) {
    this.key = new TextEncoder().encode(options.jwtSecret);
  }

  async verify(token: string): Promise<Principal> {
    if (!token) throw new UnauthenticatedError('missing bearer token');
    try {
      const { payload } = await jwtVerify(token, this.key, {
        algorithms: this.options.algorithms,
        issuer: this.options.issuer,
        audience: this.options.audience,
        clockTolerance: this.options.clockToleranceSeconds,
      });
      if (typeof payload.sub !== 'string' || payload.sub === '') throw new UnauthenticatedError('token has no sub');
      const scope = (payload as { scope?: unknown }).scope;
      const scopes = Array.isArray(scope) ? scope.map(String) : typeof scope === 'string' ? scope.split(/\s+/) : [];
      return { user_id: payload.sub, admin: scopes.includes('admin') };
    } catch (err) {
      if (err instanceof UnauthenticatedError) throw err;
      if (err instanceof joseErrors.JWTExpired) throw new UnauthenticatedError('token expired');
      if (err instanceof joseErrors.JOSEAlgNotAllowed) throw new UnauthenticatedError('token algorithm not allowed');
      throw new UnauthenticatedError('invalid token');
    }
  }

  async sign(userId: string, options: SignOptions = {}): Promise<string> {
    const jwt = new SignJWT(options.admin ? { scope: 'admin' } : {})
      .setProtectedHeader({ alg: this.options.algorithms[0]!, typ: 'JWT' })
      .setSubject(userId)
      .setIssuedAt();
    if (this.options.issuer) jwt.setIssuer(this.options.issuer);
    if (this.options.audience) jwt.setAudience(this.options.audience);
    if (options.expiresInSeconds) jwt.setExpirationTime(Math.floor(Date.now() / 1000) + options.expiresInSeconds);
    return jwt.sign(this.key);
  }
}
