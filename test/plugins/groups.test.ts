import t from 'tap';
import type { BusEvents } from '../../kernel/bus.js';
import { admin, as, bootKernel } from '../helpers/boot.js';

t.test('groups and members', async (t) => {
  const { c } = await bootKernel(t, { plugins: ['auth', 'users', 'groups'] });
  const events: string[] = [];
  c.bus.subscribe('member.added', (e: BusEvents['member.added']) => { events.push(`+${e.member.user_id}:${e.member.user_role}`); });
  c.bus.subscribe('member.removed', (e) => { events.push(`-${e.member.user_id}`); });
  for (const [id, role] of [['pat', 'PATIENT'], ['doc', 'DOCTOR'], ['ai', 'AI_ASSISTANT'], ['pat2', 'PATIENT'], ['out', 'PATIENT']] as const) {
    await c.userService.create(admin, { user_id: id, username: id, user_role: role });
  }
  const gs = c.groupService;

  const g = await gs.create(as('pat'), { group_name: 'consult', members: ['doc', 'ai'] });
  t.match(g, { group_name: 'consult', created_by: 'pat', description: null });
  t.ok(g.group_id.length > 0, 'id generated');
  const members = await gs.listMembers(as('doc'), g.group_id);
  t.same(members.map((m) => [m.user_id, m.user_role]), [['pat', 'PATIENT'], ['doc', 'DOCTOR'], ['ai', 'AI_ASSISTANT']]);
  await new Promise((r) => setImmediate(r));
  t.same(events, ['+pat:PATIENT', '+doc:DOCTOR', '+ai:AI_ASSISTANT']);

  await t.rejects(gs.create(as('pat'), { group_name: 'x', group_id: g.group_id }), { code: 'CONFLICT' });
  await t.rejects(gs.create(as('pat'), { group_name: 'x', members: ['ghost'] }), { code: 'VALIDATION_FAILED' });
  t.equal((await gs.listForUser(as('pat'), 'pat')).length, 1, 'failed creates left nothing behind');
  await t.rejects(gs.create(as('nobody'), { group_name: 'x' }), { code: 'FORBIDDEN' });
  await t.rejects(gs.create(as('pat'), { group_name: '' }), { code: 'VALIDATION_FAILED' });
  const byAdmin = await gs.create(admin, { group_name: 'ops', group_id: 'ops-1', description: 'by admin', members: ['doc'] });
  t.equal(byAdmin.group_id, 'ops-1');
  t.same((await gs.listMembers(admin, 'ops-1')).map((m) => m.user_id), ['doc'], 'an admin that is no user is not made a member');

  t.same(await gs.get(as('pat'), g.group_id), g);
  await t.rejects(gs.get(as('out'), g.group_id), { code: 'FORBIDDEN' });
  await t.rejects(gs.get(as('pat'), 'nope'), { code: 'NOT_FOUND' });
  t.same(await gs.get(admin, g.group_id), g);

  // adding members: admin, the creator, or a DOCTOR member
  const added = await gs.addMember(as('pat'), g.group_id, { user_id: 'pat2' });
  t.match(added, { user_id: 'pat2', user_role: 'PATIENT' });
  await gs.addMember(as('doc'), g.group_id, { user_id: 'out', user_role: 'DOCTOR' });
  t.equal((await gs.listMembers(admin, g.group_id)).find((m) => m.user_id === 'out')?.user_role, 'DOCTOR', 'role in the group may differ');
  await gs.removeMember(admin, g.group_id, 'out');
  await t.rejects(gs.addMember(as('pat2'), g.group_id, { user_id: 'out' }), { code: 'FORBIDDEN' }, 'a patient member who is not the creator');
  await t.rejects(gs.addMember(as('doc'), g.group_id, { user_id: 'pat2' }), { code: 'CONFLICT' });
  await t.rejects(gs.addMember(as('doc'), g.group_id, { user_id: 'ghost' }), { code: 'NOT_FOUND' });
  await t.rejects(gs.addMember(as('doc'), 'nope', { user_id: 'pat2' }), { code: 'NOT_FOUND' });
  await t.rejects(gs.addMember(as('doc'), g.group_id, { user_id: 'pat2', bogus: true }), { code: 'VALIDATION_FAILED' });

  // removing: admin, creator, doctor, or the user itself
  await gs.removeMember(as('pat2'), g.group_id, 'pat2');
  await gs.addMember(admin, g.group_id, { user_id: 'pat2' });
  await t.rejects(gs.removeMember(as('pat2'), g.group_id, 'ai'), { code: 'FORBIDDEN' });
  await gs.removeMember(as('doc'), g.group_id, 'pat2');
  await t.rejects(gs.removeMember(as('doc'), g.group_id, 'pat2'), { code: 'NOT_FOUND' });
  await t.rejects(gs.listMembers(as('pat2'), g.group_id), { code: 'FORBIDDEN' }, 'removed member lost access');

  // user's groups: that user or admin
  t.same((await gs.listForUser(as('doc'), 'doc')).map((x) => x.group_id), [g.group_id, 'ops-1']);
  await t.rejects(gs.listForUser(as('pat'), 'doc'), { code: 'FORBIDDEN' });
  await t.rejects(gs.listForUser(admin, 'ghost'), { code: 'NOT_FOUND' });
  t.same((await gs.groupIdsOf('doc')).sort(), [g.group_id, 'ops-1'].sort());
  await new Promise((r) => setImmediate(r));
  t.ok(events.includes('-pat2'));
});
