import t from 'tap';
import type { Message } from '../../kernel/domain.js';
import { admin, as, bootKernel, seedGroup } from '../helpers/boot.js';

const tricky = ['你好，医生', 'emoji 😷🩺👩‍⚕️', `quotes "double" 'single' \\ back`, '<script>alert(1)</script>', "'; DROP TABLE messages; --", '  leading and trailing  \n'];

t.test('chat: send, idempotency, access rules, bus', async (t) => {
  const { c } = await bootKernel(t);
  await seedGroup(c, 'g1', ['pat', 'doc', 'ai']);
  await seedGroup(c, 'g2', ['pat2']);
  const stored: Array<{ m: Message; transport: string }> = [];
  c.bus.subscribe('message.stored', (e) => { stored.push({ m: e.message, transport: e.transport }); });
  const chat = c.chatService;

  const r1 = await chat.send(as('pat'), { group_id: 'g1', msg_content: 'hello', client_msg_id: 'c1' }, { transport: 'http' });
  t.equal(r1.created, true);
  t.match(r1.message, { group_id: 'g1', seq: 1, from_user_id: 'pat', msg_type: 'TEXT', msg_content: 'hello', client_msg_id: 'c1' });
  const replay = await chat.send(as('pat'), { group_id: 'g1', msg_content: 'changed', client_msg_id: 'c1' }, { transport: 'http' });
  t.equal(replay.created, false);
  t.same(replay.message, r1.message, 'replay returns the original');
  const other = await chat.send(as('doc'), { group_id: 'g1', msg_content: 'same id, other sender', client_msg_id: 'c1' }, { transport: 'ws' });
  t.equal(other.message.seq, 2, 'client_msg_id is scoped to the sender');
  await new Promise((r) => setImmediate(r));
  t.same(stored.map((s) => [s.m.seq, s.transport]), [[1, 'http'], [2, 'ws']], 'published once per stored message, never for replays');

  for (const text of tricky) {
    const { message } = await chat.send(as('pat'), { group_id: 'g1', msg_content: text }, { transport: 'http' });
    t.equal((await chat.get(as('doc'), message.message_id)).msg_content, text, 'byte-for-byte');
  }
  const img = await chat.send(as('pat'), { group_id: 'g1', msg_type: 'IMAGE', msg_content: 'https://cdn.example/x.png' }, { transport: 'http' });
  t.equal(img.message.msg_type, 'IMAGE');

  await t.rejects(chat.send(as('pat'), { group_id: 'g1', msg_type: 'AI_REPLY', msg_content: 'x' }, { transport: 'http' }), { code: 'VALIDATION_FAILED', details: [{ path: 'msg_type' }] });
  const ai = await chat.send(as('ai'), { group_id: 'g1', msg_type: 'AI_REPLY', msg_content: 'x' }, { transport: 'ai', allowAiReply: true });
  t.equal(ai.message.msg_type, 'AI_REPLY');
  for (const bad of [{ group_id: 'g1', msg_content: '   ' }, { group_id: 'g1' }, { group_id: 'g1', msg_content: 'x'.repeat(8001) }, { group_id: 'g1', msg_content: 'x', extra: 1 }, { msg_content: 'x' }, 'text', undefined, null]) {
    await t.rejects(chat.send(as('pat'), bad, { transport: 'http' }), { code: 'VALIDATION_FAILED' }, String(JSON.stringify(bad)).slice(0, 40));
  }
  t.equal((await chat.send(as('pat'), { group_id: 'g1', msg_content: 'x'.repeat(8000) }, { transport: 'http' })).created, true, '8000 characters allowed');
  await t.rejects(chat.send(as('pat2'), { group_id: 'g1', msg_content: 'x' }, { transport: 'http' }), { code: 'FORBIDDEN' });
  await t.rejects(chat.send(as('pat'), { group_id: 'nope', msg_content: 'x' }, { transport: 'http' }), { code: 'NOT_FOUND' });
  await t.rejects(chat.send(as('pat'), { group_id: 'g1', msg_content: 'x', from_user_id: 'doc' }, { transport: 'http' }), { code: 'FORBIDDEN' }, 'acting as someone else');
  const asDoc = await chat.send(admin, { group_id: 'g1', msg_content: 'x', from_user_id: 'doc' }, { transport: 'http' });
  t.equal(asDoc.message.from_user_id, 'doc', 'admin may set from_user_id');
  await t.rejects(chat.send(admin, { group_id: 'g1', msg_content: 'x', from_user_id: 'pat2' }, { transport: 'http' }), { code: 'FORBIDDEN' }, 'sender must be a member');

  await t.rejects(chat.get(as('pat2'), r1.message.message_id), { code: 'FORBIDDEN' });
  await t.rejects(chat.get(as('pat'), 'nope'), { code: 'NOT_FOUND' });
  t.same(await chat.get(admin, r1.message.message_id), r1.message);
});

t.test('chat: paging by seq', async (t) => {
  const { c } = await bootKernel(t);
  await seedGroup(c, 'g', ['pat', 'doc']);
  for (let i = 1; i <= 7; i++) await c.chatService.send(as('pat'), { group_id: 'g', msg_content: `m${i}` }, { transport: 'http' });
  const list = (q: Record<string, unknown>) => c.chatService.list(as('doc'), { group_id: 'g', ...q });
  const seqs = async (q: Record<string, unknown>) => {
    const p = await list(q);
    return [p.messages.map((m) => m.seq), p.has_more];
  };
  t.same(await seqs({ limit: 3 }), [[5, 6, 7], true], 'newest page, ascending');
  t.same(await seqs({ limit: 3, before_seq: 5 }), [[2, 3, 4], true]);
  t.same(await seqs({ limit: 3, before_seq: 2 }), [[1], false]);
  t.same(await seqs({ after_seq: 0, limit: 3 }), [[1, 2, 3], true]);
  t.same(await seqs({ after_seq: 5 }), [[6, 7], false]);
  t.same(await seqs({ after_seq: 7 }), [[], false]);
  t.same(await seqs({ after_seq: 1, before_seq: 4 }), [[2, 3], false]);
  t.same(await seqs({ after_seq: '2', limit: '2' }), [[3, 4], true], 'query strings are converted');
  await t.rejects(list({ limit: 0 }), { code: 'VALIDATION_FAILED' });
  await t.rejects(list({ limit: 201 }), { code: 'VALIDATION_FAILED' });
  await t.rejects(list({ after_seq: -1 }), { code: 'VALIDATION_FAILED' });
  await t.rejects(c.chatService.list(as('doc'), {}), { code: 'VALIDATION_FAILED', details: [{ path: 'group_id' }] });
  await t.rejects(c.chatService.list(as('stranger'), { group_id: 'g' }), { code: 'FORBIDDEN' });
  await t.rejects(c.chatService.list(admin, { group_id: 'nope' }), { code: 'NOT_FOUND' });
  t.equal((await c.chatService.list(admin, { group_id: 'g' })).messages.length, 7);

  // listSerialized: the same page as JSON text, the same rules
  await c.chatService.send(as('doc'), { group_id: 'g', msg_content: 'quote " \\ \u2028 <b> 🩺' }, { transport: 'http' });
  for (const q of [{ limit: 3 }, { after_seq: 0, limit: 50 }, { before_seq: 4, limit: 2 }, { after_seq: 99 }]) {
    const page = await list(q);
    const ser = await c.chatService.listSerialized(as('doc'), { group_id: 'g', ...q });
    t.same(ser, { messages_json: JSON.stringify(page.messages), has_more: page.has_more }, `listSerialized ${JSON.stringify(q)}: list's page as JSON text`);
  }
  await t.rejects(c.chatService.listSerialized(as('stranger'), { group_id: 'g' }), { code: 'FORBIDDEN' }, 'listSerialized: members only');
  await t.rejects(c.chatService.listSerialized(as('doc'), { group_id: 'g', limit: 0 }), { code: 'VALIDATION_FAILED' });
});

t.test('chat: per-user rate limit', async (t) => {
  const { c } = await bootKernel(t, { config: { chat: { rateLimit: { points: 3, durationSeconds: 60 } } } });
  await seedGroup(c, 'g', ['pat', 'doc']);
  for (let i = 0; i < 3; i++) await c.chatService.send(as('pat'), { group_id: 'g', msg_content: 'x' }, { transport: 'http' });
  const err = await c.chatService.send(as('pat'), { group_id: 'g', msg_content: 'x' }, { transport: 'http' }).catch((e: unknown) => e);
  t.match(err, { code: 'RATE_LIMITED' });
  t.ok((err as { retryAfterSeconds: number }).retryAfterSeconds >= 1);
  t.equal((await c.chatService.send(as('doc'), { group_id: 'g', msg_content: 'x' }, { transport: 'http' })).created, true, 'per user');
  t.equal((await c.chatService.list(admin, { group_id: 'g' })).messages.length, 4, 'the limited send stored nothing');
  for (let i = 0; i < 5; i++) {
    t.equal((await c.chatService.send(as('pat'), { group_id: 'g', msg_content: 'x' }, { transport: 'amqp' })).created, true, 'broker ingress is not counted by default');
  }
  await t.rejects(c.chatService.send(as('pat'), { group_id: 'g', msg_content: 'x' }, { transport: 'ws' }), { code: 'RATE_LIMITED' }, 'ws is');
});

t.test('chat: rateLimit.transports chooses what the limit counts', async (t) => {
  const { c } = await bootKernel(t, { config: { chat: { rateLimit: { points: 1, durationSeconds: 60, transports: ['nats'] } } } });
  await seedGroup(c, 'g', ['pat']);
  await c.chatService.send(as('pat'), { group_id: 'g', msg_content: 'x' }, { transport: 'nats' });
  await t.rejects(c.chatService.send(as('pat'), { group_id: 'g', msg_content: 'x' }, { transport: 'nats' }), { code: 'RATE_LIMITED' });
  t.equal((await c.chatService.send(as('pat'), { group_id: 'g', msg_content: 'x' }, { transport: 'http' })).created, true, 'http not listed: not counted');
  await t.rejects(
    bootKernel(t, { config: { chat: { rateLimit: { transports: ['ai'] } } } }),
    /transports/,
    'the AI layer cannot be rate limited',
  );
});

t.test('chat: concurrent sends keep seq gap-free', async (t) => {
  const { c } = await bootKernel(t);
  const ids = Array.from({ length: 20 }, (_, i) => `p${i}`);
  await seedGroup(c, 'g', ids);
  await Promise.all(ids.flatMap((id) => [1, 2, 3].map((n) => c.chatService.send(as(id), { group_id: 'g', msg_content: `${id}-${n}`, client_msg_id: `${n}` }, { transport: 'http' }))));
  await Promise.all(ids.map((id) => c.chatService.send(as(id), { group_id: 'g', msg_content: 'retry', client_msg_id: '1' }, { transport: 'http' })));
  const page = await c.chatService.list(admin, { group_id: 'g', after_seq: 0, limit: 200 });
  t.same(page.messages.map((m) => m.seq), Array.from({ length: 60 }, (_, i) => i + 1));
});

t.test('chat: membership cache ends at once on removal events, and at its ttl otherwise', async (t) => {
  let nowMs = Date.parse('2026-01-01T00:00:00.000Z');
  const clock = { now: () => new Date(nowMs), nowIso: () => new Date(nowMs).toISOString() };
  const { c } = await bootKernel(t, { clock, config: { chat: { membershipCacheMs: 5000 } } });
  await seedGroup(c, 'g', ['pat', 'pat2', 'pat3', 'doc']);
  const send = (u: string) => c.chatService.send(as(u), { group_id: 'g', msg_content: 'x' }, { transport: 'http' });
  const settle = () => new Promise((r) => setImmediate(r));
  for (const u of ['pat', 'pat2', 'pat3']) await send(u); // memberships now cached

  await c.groupService.removeMember(admin, 'g', 'pat');
  await settle();
  await t.rejects(send('pat'), { code: 'FORBIDDEN' }, 'a removal on this instance ends the cached membership at once');
  await t.rejects(c.chatService.list(as('pat'), { group_id: 'g' }), { code: 'FORBIDDEN' }, 'reads too');

  const member = (await c.storage.members.get('g', 'pat2'))!;
  await c.storage.members.remove('g', 'pat2');
  c.bus.publish('member.removed', { member }, { origin: 'remote', instance_id: 'other' });
  await settle();
  await t.rejects(send('pat2'), { code: 'FORBIDDEN' }, 'a removal relayed from another instance too');

  await c.storage.members.remove('g', 'pat3'); // behind the service's back: no event
  t.equal((await send('pat3')).created, true, 'without an event the cached answer holds ...');
  nowMs += 5001;
  await t.rejects(send('pat3'), { code: 'FORBIDDEN' }, '... until membershipCacheMs has passed');

  await c.groupService.addMember(admin, 'g', { user_id: 'pat' });
  t.equal((await send('pat')).created, true, 'a re-added member may send again');
});

t.test("chat: recentSendP99Ms reports the users' sends of the last complete half-second, AI replies not counted", async (t) => {
  let nowMs = Date.parse('2026-01-01T00:00:00.000Z');
  const clock = { now: () => new Date(nowMs), nowIso: () => new Date(nowMs).toISOString() };
  const { c } = await bootKernel(t, { clock });
  await seedGroup(c, 'g1', ['pat', 'ai']);
  const chat = c.chatService;
  t.equal(chat.recentSendP99Ms(), 0, 'nothing sent: 0');
  for (let i = 0; i < 3; i++) await chat.send(as('pat'), { group_id: 'g1', msg_content: `m${i}` }, { transport: 'http' });
  t.equal(chat.recentSendP99Ms(), 0, 'the half-second in progress is not reported');
  nowMs += 500;
  const p99 = chat.recentSendP99Ms();
  t.ok(p99 > 0, `the half-second that ended: p99 of its sends (${p99} ms)`);
  t.equal(chat.recentSendP99Ms(), p99, 'the same answer until the next one ends');
  await chat.send(as('ai'), { group_id: 'g1', msg_type: 'AI_REPLY', msg_content: 'reply' }, { transport: 'ai', allowAiReply: true });
  nowMs += 500;
  t.equal(chat.recentSendP99Ms(), 0, 'a half-second with only AI replies: 0');
});
