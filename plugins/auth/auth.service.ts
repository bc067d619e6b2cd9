import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';
import { UnauthenticatedError } from '../../kernel/errors.js';
import type { AuthService, Principal, SignOptions } from '../../kernel/ports/services.port.js';
import type { AuthOptions } from './auth.schema.js';

/** JWT verification per API.md §2 (jose): only the configured algorithms, `exp` honoured, `sub` required. */
export class JwtAuthService implements AuthService {
  private readonly key: Uint8Array<ArrayBuffer>;
  /**
   * token -> verified principal, until min(exp, now + ttl). A signature check
   * costs ~0.1-0.2 ms, more than the rest of a typical request; insertion
   * order doubles as age, so the oldest entry is evicted when full.
   */
  private readonly cache = new Map<string, { principal: Principal; untilMs: number }>();
  /** One imported HMAC key per configured algorithm (importing per call cost ~30 % of a verify). */
  private readonly cryptoKeys = new Map<string, Promise<CryptoKey>>();

  constructor(
    private readonly options: AuthOptions,
    private readonly nowMs: () => number = Date.now,
  ) {
    this.key = new TextEncoder().encode(options.jwtSecret);
  }

  async verify(token: string): Promise<Principal> {
    if (!token) throw new UnauthenticatedError('missing bearer token');
    const hit = this.cache.get(token);
    if (hit) {
      if (hit.untilMs > this.nowMs()) return { ...hit.principal };
      this.cache.delete(token);
    }
    const { principal, exp } = await this.verifySignature(token);
    this.remember(token, principal, exp);
    return principal;
  }

  /** Only configured algorithms get a key; jose refuses the others (and `none`) before asking. */
  private cryptoKey(alg: string | undefined): Promise<CryptoKey> {
    const hash = { HS256: 'SHA-256', HS384: 'SHA-384', HS512: 'SHA-512' }[alg ?? ''];
    if (!hash || !(this.options.algorithms as string[]).includes(alg!)) return Promise.reject(new UnauthenticatedError('token algorithm not allowed'));
    let key = this.cryptoKeys.get(alg!);
    if (!key) {
      key = crypto.subtle.importKey('raw', this.key, { name: 'HMAC', hash }, false, ['verify']);
      this.cryptoKeys.set(alg!, key);
    }
    return key;
  }

  private remember(token: string, principal: Principal, exp: number | undefined): void {
    const { cacheSize, cacheTtlSeconds } = this.options;
    if (cacheSize === 0) return;
    const now = this.nowMs();
    const untilMs = Math.min(now + cacheTtlSeconds * 1000, exp === undefined ? Infinity : exp * 1000);
    if (untilMs <= now) return;
    if (this.cache.size >= cacheSize) this.cache.delete(this.cache.keys().next().value as string);
    this.cache.set(token, { principal: { ...principal }, untilMs });
  }

  private async verifySignature(token: string): Promise<{ principal: Principal; exp: number | undefined }> {
    try {
      const { payload } = await jwtVerify(token, (header) => this.cryptoKey(header.alg), {
        algorithms: this.options.algorithms,
        issuer: this.options.issuer,
        audience: this.options.audience,
        clockTolerance: this.options.clockToleranceSeconds,
        currentDate: new Date(this.nowMs()),
      });
      if (typeof payload.sub !== 'string' || payload.sub === '') throw new UnauthenticatedError('token has no sub');
      const scope = (payload as { scope?: unknown }).scope;
      const scopes = Array.isArray(scope) ? scope.map(String) : typeof scope === 'string' ? scope.split(/\s+/) : [];
      return { principal: { user_id: payload.sub, admin: scopes.includes('admin') }, exp: payload.exp };
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
