import t from 'tap';
import { admin, as, bootKernel } from '../helpers/boot.js';

t.test('users', async (t) => {
  const { c } = await bootKernel(t, { plugins: ['auth', 'users'] });
  const users = c.userService;

  const u = await users.create(admin, { user_id: 'p1', username: '患者 😀' });
  t.match(u, { user_id: 'p1', username: '患者 😀', user_role: 'PATIENT' });
  t.equal(u.created_at, u.updated_at);
  t.match(u.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  t.same(await users.get(as('p1'), 'p1'), u);

  await t.rejects(users.create(admin, { user_id: 'p1', username: 'again' }), { code: 'CONFLICT' });
  await t.rejects(users.create(as('p1'), { user_id: 'x', username: 'x' }), { code: 'FORBIDDEN' }, 'admin only');
  await t.rejects(users.create(admin, { user_id: 'x', username: 'x', extra: 1 }), { code: 'VALIDATION_FAILED', details: [{ path: 'extra' }] });
  await t.rejects(users.create(admin, { user_id: 'a b/c', username: 'x', user_role: 'NURSE' }), {
    code: 'VALIDATION_FAILED',
    details: [{ path: 'user_id' }, { path: 'user_role' }],
  });
  await t.rejects(users.create(admin, { user_id: 'x', username: '   ' }), { code: 'VALIDATION_FAILED' });
  await t.rejects(users.get(as('p1'), 'ghost'), { code: 'NOT_FOUND' });
  await t.rejects(users.create(admin, undefined), { code: 'VALIDATION_FAILED' }, 'an absent body is invalid');

  const d = await users.setRole(admin, 'p1', { user_role: 'DOCTOR' });
  t.equal(d.user_role, 'DOCTOR');
  await t.rejects(users.setRole(as('p1'), 'p1', { user_role: 'DOCTOR' }), { code: 'FORBIDDEN' });
  await t.rejects(users.setRole(admin, 'ghost', { user_role: 'DOCTOR' }), { code: 'NOT_FOUND' });
  await t.rejects(users.setRole(admin, 'p1', {}), { code: 'VALIDATION_FAILED' });
});
