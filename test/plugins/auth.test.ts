import t from 'tap';
import { SignJWT, UnsecuredJWT } from 'jose';
import { bootKernel, TEST_JWT_SECRET } from '../helpers/boot.js';
import { UnauthenticatedError } from '../../kernel/errors.js';

const key = new TextEncoder().encode(TEST_JWT_SECRET);

t.test('auth: verifies HS256 tokens per API.md §2', async (t) => {
  const { c } = await bootKernel(t, { plugins: ['auth'] });
  const auth = c.authService;

  t.same(await auth.verify(await auth.sign('u1')), { user_id: 'u1', admin: false });
  t.same(await auth.verify(await auth.sign('ops', { admin: true })), { user_id: 'ops', admin: true });
  const scoped = await new SignJWT({ scope: 'read admin' }).setProtectedHeader({ alg: 'HS256' }).setSubject('svc').sign(key);
  t.same(await auth.verify(scoped), { user_id: 'svc', admin: true }, 'scope is a space-separated list');

  const reject = async (token: string, message: RegExp, what: string): Promise<void> => {
    await t.rejects(auth.verify(token), UnauthenticatedError, what);
    await t.rejects(auth.verify(token), { message }, what);
  };
  await reject('', /missing/, 'empty token');
  await reject('not.a.jwt', /invalid token/, 'garbage');
  await reject(await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('u').sign(new TextEncoder().encode('another-secret-0123456789')), /invalid token/, 'bad signature');
  await reject(await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('u').setExpirationTime(Math.floor(Date.now() / 1000) - 60).sign(key), /expired/, 'expired');
  await reject(new UnsecuredJWT({ sub: 'u' }).encode(), /./, 'alg none');
  await reject(await new SignJWT({}).setProtectedHeader({ alg: 'HS512' }).setSubject('u').sign(key), /algorithm not allowed/, 'unlisted algorithm');
  await reject(await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).sign(key), /no sub/, 'no sub');
});

t.test('auth: more algorithms only when configured', async (t) => {
  const { c } = await bootKernel(t, { plugins: ['auth'], config: { auth: { algorithms: ['HS256', 'HS512'] } } });
  const token = await new SignJWT({}).setProtectedHeader({ alg: 'HS512' }).setSubject('u').sign(key);
  t.same(await c.authService.verify(token), { user_id: 'u', admin: false });
});

t.test('auth: verified tokens are cached, never past exp or the cache ttl', async (t) => {
  const { JwtAuthService } = await import('../../plugins/auth/auth.service.js');
  let now = Date.now();
  const options = { jwtSecret: TEST_JWT_SECRET, algorithms: ['HS256' as const], clockToleranceSeconds: 0, cacheSize: 2, cacheTtlSeconds: 60 };
  const auth = new JwtAuthService(options, () => now);
  const exp = Math.floor(now / 1000) + 30;
  const token = await new SignJWT({ scope: 'admin' }).setProtectedHeader({ alg: 'HS256' }).setSubject('u').setExpirationTime(exp).sign(key);
  const first = await auth.verify(token);
  first.admin = false; // callers cannot corrupt the cache
  t.same(await auth.verify(token), { user_id: 'u', admin: true }, 'served from the cache');
  now = exp * 1000 + 1;
  await t.rejects(auth.verify(token), { message: /expired/ }, 'a cached token still expires at its exp');

  const forged = `${token.slice(0, -2)}xx`;
  await t.rejects(auth.verify(forged), UnauthenticatedError, 'a failed verification is never cached');
  await t.rejects(auth.verify(forged), UnauthenticatedError);

  now = Date.now();
  const noExp = await auth.sign('v');
  await auth.verify(noExp);
  now += 61_000;
  t.same(await auth.verify(noExp), { user_id: 'v', admin: false }, 'past the ttl it is verified again (still valid)');

  const off = new JwtAuthService({ ...options, cacheSize: 0 }, () => now);
  t.same(await off.verify(noExp), { user_id: 'v', admin: false });
});
