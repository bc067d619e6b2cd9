import type { Test } from 'tap';
import { ConflictError } from '../../kernel/errors.js';
import type { Group, Member, Message, User, UserRole } from '../../kernel/domain.js';
import type { NewAiRecord, NewMessage, Storage } from '../../kernel/ports/storage.port.js';

/**
 * The storage port's contract: every implementation (memory, SQLite,
 * PostgreSQL) must pass it. `makeStorage(t)` returns an empty, ready store for
 * one subtest and registers its own cleanup on `t`.
 */
export type MakeStorage = (t: Test) => Promise<Storage>;

/** 2026-01-01T00:00:00.000Z plus `s` seconds (ms precision, as the clock produces). */
export const at = (s: number): string => new Date(Date.UTC(2026, 0, 1) + s * 1000).toISOString();

export function user(id: string, role: UserRole = 'PATIENT', s = 0): User {
  return { user_id: id, username: `name of ${id}`, user_role: role, created_at: at(s), updated_at: at(s) };
}
export function group(id: string, createdBy: string, s = 0): Group {
  return { group_id: id, group_name: `group ${id}`, description: null, created_by: createdBy, created_at: at(s), updated_at: at(s) };
}
export function member(groupId: string, userId: string, s = 0, role: UserRole = 'PATIENT'): Member {
  return { group_id: groupId, user_id: userId, user_role: role, joined_at: at(s) };
}
let counter = 0;
export function msg(groupId: string, from: string, over: Partial<NewMessage> = {}): NewMessage {
  counter++;
  return {
    message_id: `m-${process.pid}-${counter}-${Math.random().toString(36).slice(2, 8)}`,
    group_id: groupId,
    from_user_id: from,
    msg_type: 'TEXT',
    msg_content: `hello ${counter}`,
    client_msg_id: null,
    created_at: at(100),
    ...over,
  };
}

/** Users u1, u2, doc1 and group g1 {u1, doc1}, g2 {u1, u2}. */
export async function seed(s: Storage): Promise<void> {
  await s.users.create(user('u1', 'PATIENT', 1));
  await s.users.create(user('u2', 'PATIENT', 2));
  await s.users.create(user('doc1', 'DOCTOR', 3));
  await s.groups.create(group('g1', 'u1', 10));
  await s.groups.create(group('g2', 'u1', 11));
  await s.members.add(member('g1', 'u1', 10));
  await s.members.add(member('g1', 'doc1', 10, 'DOCTOR'));
  await s.members.add(member('g2', 'u1', 11));
  await s.members.add(member('g2', 'u2', 11));
}

const seqs = (ms: readonly Message[]): number[] => ms.map((m) => m.seq);
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);
/** A new pending record for message `m`, created `sec` seconds after the epoch of `at`. */
const aiRecord = (id: string, m: Message, sec: number): NewAiRecord => ({
  record_id: id,
  group_id: m.group_id,
  user_message_id: m.message_id,
  ai_service_url: 'http://ai.local/reply',
  created_at: at(sec),
});

export async function storageContract(t: Test, name: string, makeStorage: MakeStorage): Promise<void> {
  await t.test(`storage contract: ${name}`, async (t) => {
    t.test('users: create, get, getMany, updateRole, conflicts', async (t) => {
      const s = await makeStorage(t);
      await s.ping();
      t.pass('ping resolves when the store is reachable');
      const u = user('alice', 'DOCTOR', 5);
      t.same(await s.users.create(u), u);
      t.same(await s.users.get('alice'), u);
      t.equal(await s.users.get('nobody'), null, 'absent -> null');
      await t.rejects(s.users.create({ ...u, username: 'other' }), ConflictError, 'duplicate user_id -> ConflictError');
      t.equal((await s.users.get('alice'))!.username, u.username, 'the failed create changed nothing');
      await s.users.create(user('bob'));
      t.same(
        (await s.users.getMany(['bob', 'nobody', 'alice'])).map((x) => x.user_id),
        ['bob', 'alice'],
        'getMany: known ones, in the order asked',
      );
      t.same(await s.users.getMany([]), []);
      const updated = await s.users.updateRole('bob', 'AI_ASSISTANT', at(9));
      t.same(updated, { ...user('bob'), user_role: 'AI_ASSISTANT', updated_at: at(9) });
      t.same(await s.users.get('bob'), updated);
      t.equal(await s.users.updateRole('nobody', 'DOCTOR', at(9)), null, 'updateRole of absent -> null');
      const got = (await s.users.get('alice'))!;
      got.username = 'mutated';
      t.equal((await s.users.get('alice'))!.username, u.username, 'returned objects are copies');
    });

    t.test('groups and members', async (t) => {
      const s = await makeStorage(t);
      await seed(s);
      const g = group('g3', 'admin', 20);
      g.description = 'a "quoted" description';
      t.same(await s.groups.create(g), g, 'created_by need not be a stored user (admins)');
      t.same(await s.groups.get('g3'), g);
      t.equal(await s.groups.get('nope'), null);
      await t.rejects(s.groups.create(g), ConflictError, 'duplicate group_id -> ConflictError');

      t.same(await s.members.get('g1', 'doc1'), member('g1', 'doc1', 10, 'DOCTOR'));
      t.equal(await s.members.get('g1', 'u2'), null);
      t.same(
        (await s.members.list('g1')).map((m) => m.user_id),
        ['u1', 'doc1'],
        'members in join order',
      );
      t.same(await s.members.list('nope'), []);
      await t.rejects(s.members.add(member('g1', 'u1', 30)), ConflictError, 'already a member -> ConflictError');

      // u2 joins g3 before g1 (by joined_at): listForUser is oldest membership first
      await s.members.add(member('g3', 'u2', 21));
      await s.members.add(member('g1', 'u2', 40));
      t.same(
        (await s.groups.listForUser('u2')).map((x) => x.group_id),
        ['g2', 'g3', 'g1'],
        'groups of a user, oldest membership first',
      );
      t.same((await s.groups.listForUser('u2'))[1], g, 'full group rows');
      t.same(await s.groups.listForUser('nobody'), []);
      t.same((await s.members.groupIdsOfUser('u2')).sort(), ['g1', 'g2', 'g3']);
      t.same(await s.members.groupIdsOfUser('nobody'), []);

      t.equal(await s.members.remove('g1', 'u2'), true, 'remove -> true');
      t.equal(await s.members.remove('g1', 'u2'), false, 'removing again -> false');
      t.equal(await s.members.get('g1', 'u2'), null);
      t.same((await s.members.groupIdsOfUser('u2')).sort(), ['g2', 'g3']);
      t.same(await s.members.add(member('g1', 'u2', 50)), member('g1', 'u2', 50), 'may join again after leaving');
    });

    t.test('messages: seq per group, round-trip, idempotent append', async (t) => {
      const s = await makeStorage(t);
      await seed(s);
      const contents = ['你好，医生', 'emoji 😀👍🏽', `quotes ' " \` and \\ backslash`, '<script>alert(1)</script>', "'; DROP TABLE messages; --", '$1 $$ ? :x'];
      const stored: Message[] = [];
      for (const c of contents) {
        const r = await s.messages.append(msg('g1', 'u1', { msg_content: c }));
        t.equal(r.created, true);
        stored.push(r.message);
      }
      t.same(seqs(stored), range(1, contents.length), 'seq from 1, +1 per message');
      t.same(
        stored.map((m) => m.msg_content),
        contents,
        'content round-trips byte for byte',
      );
      const first = await s.messages.append(msg('g2', 'u2', { msg_type: 'IMAGE', msg_content: 'https://x/y.png' }));
      t.equal(first.message.seq, 1, 'each group counts from 1');
      t.same(await s.messages.get(stored[0]!.message_id), stored[0], 'get returns the stored message');
      t.same(await s.messages.get(first.message.message_id), first.message);
      t.equal(await s.messages.get('nope'), null);

      // idempotency on (group, sender, client_msg_id)
      const a = await s.messages.append(msg('g1', 'u1', { client_msg_id: 'c-1', msg_content: 'original' }));
      t.equal(a.created, true);
      t.equal(a.message.client_msg_id, 'c-1');
      const replay = await s.messages.append(msg('g1', 'u1', { client_msg_id: 'c-1', msg_content: 'retry' }));
      t.equal(replay.created, false, 'replay -> created=false');
      t.same(replay.message, a.message, 'replay returns the original');
      const otherSender = await s.messages.append(msg('g1', 'doc1', { client_msg_id: 'c-1' }));
      t.equal(otherSender.created, true, 'same client_msg_id from another sender is new');
      const otherGroup = await s.messages.append(msg('g2', 'u1', { client_msg_id: 'c-1' }));
      t.equal(otherGroup.created, true, 'same client_msg_id in another group is new');
      const noId1 = await s.messages.append(msg('g1', 'u1'));
      const noId2 = await s.messages.append(msg('g1', 'u1'));
      t.ok(noId1.created && noId2.created, 'no client_msg_id: never deduplicated');
      t.same(
        seqs([a.message, otherSender.message, noId1.message, noId2.message]),
        range(contents.length + 1, contents.length + 4),
        'replays consume no seq',
      );
      const dupId = msg('g1', 'u1');
      await s.messages.append(dupId);
      await t.rejects(s.messages.append({ ...dupId, client_msg_id: 'fresh' }), ConflictError, 'duplicate message_id -> ConflictError');
      const after = await s.messages.append(msg('g1', 'u1'));
      t.equal(after.message.seq, contents.length + 6, 'a failed append leaves no gap');

      // concurrency: gap-free, one created among identical retries
      const concurrent = await Promise.all(range(1, 30).map((i) => s.messages.append(msg('g2', i % 2 ? 'u1' : 'u2'))));
      t.same(
        seqs(concurrent.map((r) => r.message)).sort((x, y) => x - y),
        range(3, 32),
        '30 concurrent appends: seq 3..32, no gap, no duplicate',
      );
      const same = msg('g2', 'u2', { client_msg_id: 'retry-storm' });
      const storm = await Promise.all(range(1, 20).map(() => s.messages.append({ ...same })));
      t.equal(storm.filter((r) => r.created).length, 1, '20 identical concurrent appends: one created');
      t.equal(new Set(storm.map((r) => r.message.message_id)).size, 1, 'all return the same message');
      t.equal(new Set(storm.map((r) => r.message.seq)).size, 1);
      const page = await s.messages.list('g2', { after_seq: 0, limit: 200 });
      t.same(seqs(page.messages), range(1, 33), 'stored seqs of g2 are exactly 1..33');
    });

    t.test('messages.list paging', async (t) => {
      const s = await makeStorage(t);
      await seed(s);
      for (let i = 0; i < 10; i++) await s.messages.append(msg('g1', 'u1', { msg_content: `n${i + 1}` }));
      const list = async (q: { after_seq?: number; before_seq?: number; limit: number }) => {
        const p = await s.messages.list('g1', q);
        return { seqs: seqs(p.messages), has_more: p.has_more };
      };
      t.same(await list({ limit: 3 }), { seqs: [8, 9, 10], has_more: true }, 'neither: the newest, ascending');
      t.same(await list({ limit: 10 }), { seqs: range(1, 10), has_more: false });
      t.same(await list({ limit: 50 }), { seqs: range(1, 10), has_more: false });
      t.same(await list({ after_seq: 0, limit: 4 }), { seqs: [1, 2, 3, 4], has_more: true }, 'after_seq: the first after it');
      t.same(await list({ after_seq: 6, limit: 4 }), { seqs: [7, 8, 9, 10], has_more: false });
      t.same(await list({ after_seq: 5, limit: 4 }), { seqs: [6, 7, 8, 9], has_more: true });
      t.same(await list({ after_seq: 10, limit: 4 }), { seqs: [], has_more: false }, 'after the newest: empty');
      t.same(await list({ after_seq: 99, limit: 4 }), { seqs: [], has_more: false });
      t.same(await list({ before_seq: 5, limit: 2 }), { seqs: [3, 4], has_more: true }, 'before_seq: the last below it');
      t.same(await list({ before_seq: 5, limit: 4 }), { seqs: [1, 2, 3, 4], has_more: false });
      t.same(await list({ before_seq: 1, limit: 4 }), { seqs: [], has_more: false });
      t.same(await list({ before_seq: 99, limit: 2 }), { seqs: [9, 10], has_more: true });
      t.same(await list({ after_seq: 2, before_seq: 6, limit: 2 }), { seqs: [3, 4], has_more: true }, 'both: after wins, bounded by before');
      t.same(await list({ after_seq: 2, before_seq: 6, limit: 3 }), { seqs: [3, 4, 5], has_more: false });
      t.same(await list({ after_seq: 2, before_seq: 6, limit: 10 }), { seqs: [3, 4, 5], has_more: false });
      t.same(await list({ after_seq: 6, before_seq: 3, limit: 10 }), { seqs: [], has_more: false });
      const full = await s.messages.list('g1', { after_seq: 0, limit: 1 });
      t.equal(full.messages[0]!.msg_content, 'n1', 'full message rows');
      t.same(await s.messages.list('g2', { limit: 5 }), { messages: [], has_more: false }, 'empty group');
      t.same(await s.messages.list('nope', { after_seq: 0, limit: 5 }), { messages: [], has_more: false }, 'unknown group');
    });

    t.test('messages: any text comes back as stored (quotes, control characters, U+2028, emoji, markup)', async (t) => {
      const s = await makeStorage(t);
      await seed(s);
      const tricky = [
        'plain',
        'quote " and backslash \\ and slash /',
        'lines\nand\ttabs\r\u0001\u001f\u007f',
        '<script>alert(1)</script>',
        '中文 · ünïcödé · \u2028\u2029 · emoji 🩺👩‍⚕️',
        '',
      ];
      for (const [i, content] of tricky.entries()) {
        await s.messages.append(
          msg('g1', i % 2 ? 'u1' : 'doc1', {
            msg_content: content,
            msg_type: i === 3 ? 'AI_REPLY' : 'TEXT',
            client_msg_id: i % 2 ? `c"${i}` : null,
            created_at: new Date(Date.UTC(2026, 0, 1, 12, 0, 0, i * 111)).toISOString(),
          }),
        );
      }
      const page = await s.messages.list('g1', { after_seq: 0, limit: 50 });
      t.same(page.messages.map((m) => m.msg_content), tricky, 'contents, in seq order');
      t.same(page.messages.map((m) => m.client_msg_id), tricky.map((_, i) => (i % 2 ? `c"${i}` : null)), 'client_msg_id');
      t.equal(page.messages[3]!.msg_type, 'AI_REPLY');
      t.same(page.messages.map((m) => m.created_at), tricky.map((_, i) => new Date(Date.UTC(2026, 0, 1, 12, 0, 0, i * 111)).toISOString()), 'created_at to the millisecond');
    });

    t.test('messages.listRecent: every group, oldest first, since, limit', async (t) => {
      const s = await makeStorage(t);
      await seed(s);
      const a = (await s.messages.append(msg('g1', 'u1', { message_id: 'r-b', created_at: at(300) }))).message;
      const b = (await s.messages.append(msg('g2', 'u2', { message_id: 'r-c', created_at: at(200) }))).message;
      const c = (await s.messages.append(msg('g1', 'doc1', { message_id: 'r-a', created_at: at(300) }))).message;
      const d = (await s.messages.append(msg('g2', 'u1', { message_id: 'r-d', created_at: at(100) }))).message;
      t.same(
        (await s.messages.listRecent(at(0), 10)).map((m) => m.message_id),
        [d, b, c, a].map((m) => m.message_id),
        'created_at, then message_id',
      );
      t.same(
        (await s.messages.listRecent(at(200), 10)).map((m) => m.message_id),
        ['r-c', 'r-a', 'r-b'],
        'since is inclusive',
      );
      t.same((await s.messages.listRecent(at(0), 2)).map((m) => m.message_id), ['r-d', 'r-c'], 'limit');
      t.same(await s.messages.listRecent(at(301), 10), []);
      t.same((await s.messages.listRecent(at(300), 1))[0], c, 'full rows');
    });

    t.test('transaction: commit together, roll back on throw', async (t) => {
      const s = await makeStorage(t);
      await seed(s);
      const g = await s.transaction(async (tx) => {
        const created = await tx.groups.create(group('tx1', 'u1', 60));
        await tx.members.add(member('tx1', 'u1', 60));
        await tx.members.add(member('tx1', 'u2', 60));
        t.same((await tx.members.list('tx1')).map((m) => m.user_id), ['u1', 'u2'], 'reads inside see the writes');
        return created;
      });
      t.equal(g.group_id, 'tx1', 'returns what work returns');
      t.same((await s.members.list('tx1')).map((m) => m.user_id), ['u1', 'u2'], 'committed');

      const boom = new Error('boom');
      await t.rejects(
        s.transaction(async (tx) => {
          await tx.groups.create(group('tx2', 'u1', 61));
          await tx.members.add(member('tx2', 'u1', 61));
          await tx.messages.append(msg('g1', 'u1'));
          throw boom;
        }),
        boom,
        'the error of work comes out unchanged',
      );
      t.equal(await s.groups.get('tx2'), null, 'rolled back: no group');
      t.same(await s.members.list('tx2'), [], 'rolled back: no members');
      t.same(await s.messages.list('g1', { limit: 10 }), { messages: [], has_more: false }, 'rolled back: no message');

      await t.rejects(
        s.transaction(async (tx) => {
          await tx.groups.create(group('tx3', 'u1', 62));
          await tx.members.add(member('tx3', 'u1', 62));
          await tx.members.add(member('tx3', 'u1', 62));
        }),
        ConflictError,
        'a conflict inside fails the transaction',
      );
      t.equal(await s.groups.get('tx3'), null, 'and nothing of it stays');

      const inTx = await s.transaction(async (tx) => {
        const r1 = await tx.messages.append(msg('g1', 'u1', { client_msg_id: 'tx-c' }));
        const r2 = await tx.messages.append(msg('g1', 'u1', { client_msg_id: 'tx-c' }));
        return [r1, r2];
      });
      t.equal(inTx[0]!.message.seq, 1, 'append inside a transaction: seq after the rolled-back one (no gap)');
      t.equal(inTx[1]!.created, false, 'idempotent inside a transaction too');
      t.same(inTx[1]!.message, inTx[0]!.message);
      t.equal((await s.messages.append(msg('g1', 'u1'))).message.seq, 2);
    });

    t.test('background: the same repositories, the same data', async (t) => {
      const s = await makeStorage(t);
      await seed(s);
      const bg = s.background;
      const a = (await s.messages.append(msg('g1', 'u1'))).message;
      const b = (await bg.messages.append(msg('g1', 'doc1'))).message;
      t.equal(b.seq, a.seq + 1, 'an append through the background view takes the next seq of the group');
      t.same((await bg.messages.list('g1', { limit: 10 })).messages, [a, b], 'history read in the background');
      t.same(await s.messages.get(b.message_id), b, 'and in the foreground');
      t.same(await bg.members.get('g1', 'doc1'), await s.members.get('g1', 'doc1'));
      t.same(await bg.users.getMany(['u1']), await s.users.getMany(['u1']));
    });

    t.test('aiRecords: concurrent creates and updates through the background view', async (t) => {
      const s = await makeStorage(t);
      await seed(s);
      const bg = s.background;
      const ms = await Promise.all(range(1, 12).map((i) => s.messages.append(msg(i % 2 ? 'g1' : 'g2', 'u2'))).map(async (p) => (await p).message));
      const first = await bg.aiRecords.createIfAbsent(aiRecord('pre', ms[0]!, 900));
      const created = await Promise.all([
        ...ms.map((m, i) => bg.aiRecords.createIfAbsent(aiRecord(`b${i}`, m, 1000 + i))),
        bg.aiRecords.createIfAbsent(aiRecord('b1-again', ms[1]!, 1100)),
      ]);
      const value = (i: number) => created[i]!;
      t.same(value(0), { record: first.record, created: false }, 'a message that already has a record: the stored one, created=false');
      for (let i = 2; i < ms.length; i++) {
        t.equal(value(i).created, true, `record b${i} created`);
        t.same(await s.aiRecords.get(`b${i}`), value(i).record, `record b${i} stored as returned`);
      }
      // b1 and b1-again race for one message: either may win, and both callers get the winner.
      const [one, again] = [value(1), value(ms.length)];
      t.equal(Number(one.created) + Number(again.created), 1, 'two records for one message in one go: one is created');
      t.same(one.record, again.record, 'and the other caller gets it');
      const winner = one.created ? 'b1' : 'b1-again';
      t.same(await s.aiRecords.get(winner), one.record, 'the winner is stored as returned');
      t.equal(await s.aiRecords.get(winner === 'b1' ? 'b1-again' : 'b1'), null, 'the loser is not stored');

      // Patches to different records at once; patches to one record one after another (the lease
      // serialises them in the ai-router). Two patches to one record in flight at once have no order.
      const updated = await Promise.all([
        bg.aiRecords.update(winner, { lease_owner: 'A', lease_until: at(2000), updated_at: at(1500) }),
        bg.aiRecords.update('b2', { status: 1, attempts: 1, duration_ms: 12, response_content: 'r2', updated_at: at(1501) }),
        bg.aiRecords.update('b3', { status: 1, attempts: 1, duration_ms: 13, response_content: 'r3', updated_at: at(1502) }),
        bg.aiRecords.update('nope', { status: 1, updated_at: at(1504) }),
        bg.aiRecords.update('b4', { next_attempt_at: at(3000), updated_at: at(1505) }),
      ]);
      t.same(updated[0], { ...value(1).record, lease_owner: 'A', lease_until: at(2000), updated_at: at(1500) }, 'each caller gets the record after its own patch');
      t.same(updated[1], { ...value(2).record, status: 1, attempts: 1, duration_ms: 12, response_content: 'r2', updated_at: at(1501) });
      t.same(await s.aiRecords.get('b3'), updated[2]);
      t.equal(updated[3], null, 'an unknown record: null');
      t.same(updated[4], { ...value(4).record, next_attempt_at: at(3000), updated_at: at(1505) });

      const gaveUp = await bg.aiRecords.update(winner, { status: 2, attempts: 3, error_message: 'gave up', lease_owner: null, lease_until: null, updated_at: at(1503) });
      t.match(gaveUp, { status: 2, attempts: 3, lease_owner: null, lease_until: null });
      const last = await bg.aiRecords.update(winner, { attempts: 4, updated_at: at(1506) });
      t.match(last, { status: 2, attempts: 4, error_message: 'gave up', lease_owner: null, lease_until: null, updated_at: at(1506) }, 'a later patch keeps what it does not name');
      t.same(await s.aiRecords.get(winner), last, 'and the foreground reads it');
    });

    t.test('aiRecords: createIfAbsent, get, update, list, claimDue', async (t) => {
      const s = await makeStorage(t);
      await seed(s);
      const m1 = (await s.messages.append(msg('g1', 'u1'))).message;
      const m2 = (await s.messages.append(msg('g1', 'u1'))).message;
      const m3 = (await s.messages.append(msg('g2', 'u2'))).message;
      const m4 = (await s.messages.append(msg('g2', 'u2'))).message;
      const m5 = (await s.messages.append(msg('g2', 'u2'))).message;
      const r1 = await s.aiRecords.createIfAbsent(aiRecord('rec1', m1, 1000));
      t.equal(r1.created, true);
      t.same(r1.record, {
        record_id: 'rec1',
        group_id: 'g1',
        user_message_id: m1.message_id,
        ai_message_id: null,
        ai_service_url: 'http://ai.local/reply',
        request_content: null,
        response_content: null,
        status: 0,
        duration_ms: null,
        error_message: null,
        attempts: 0,
        next_attempt_at: null,
        lease_owner: null,
        lease_until: null,
        created_at: at(1000),
        updated_at: at(1000),
      }, 'a new record is pending with defaults');
      const again = await s.aiRecords.createIfAbsent(aiRecord('rec1-bis', m1, 1001));
      t.equal(again.created, false, 'one record per user message');
      t.same(again.record, r1.record, 'the existing one is returned');
      t.equal(await s.aiRecords.get('rec1-bis'), null);
      t.same(await s.aiRecords.get('rec1'), r1.record);
      t.equal(await s.aiRecords.get('nope'), null);

      const upd = await s.aiRecords.update('rec1', {
        status: 1,
        ai_message_id: m2.message_id,
        request_content: '{"q":"你好"}',
        response_content: 'answer 😀',
        duration_ms: 1234,
        attempts: 1,
        updated_at: at(1005),
      });
      t.same(upd, {
        ...r1.record,
        status: 1,
        ai_message_id: m2.message_id,
        request_content: '{"q":"你好"}',
        response_content: 'answer 😀',
        duration_ms: 1234,
        attempts: 1,
        updated_at: at(1005),
      }, 'update applies the patch and returns the record');
      t.same(await s.aiRecords.get('rec1'), upd);
      t.equal(await s.aiRecords.update('nope', { status: 2, updated_at: at(1) }), null);

      await s.aiRecords.createIfAbsent(aiRecord('rec2', m2, 1010));
      await s.aiRecords.createIfAbsent(aiRecord('rec3', m3, 1020));
      await s.aiRecords.createIfAbsent(aiRecord('rec4', m4, 1030));
      await s.aiRecords.createIfAbsent(aiRecord('rec5', m5, 1040));
      t.same((await s.aiRecords.list({ limit: 10 })).map((r) => r.record_id), ['rec5', 'rec4', 'rec3', 'rec2', 'rec1'], 'newest first');
      t.same((await s.aiRecords.list({ limit: 2 })).map((r) => r.record_id), ['rec5', 'rec4'], 'limit');
      t.same((await s.aiRecords.list({ group_id: 'g1', limit: 10 })).map((r) => r.record_id), ['rec2', 'rec1'], 'by group');
      t.same((await s.aiRecords.list({ status: 1, limit: 10 })).map((r) => r.record_id), ['rec1'], 'by status');
      t.same((await s.aiRecords.list({ group_id: 'g2', status: 0, limit: 10 })).map((r) => r.record_id), ['rec5', 'rec4', 'rec3']);
      t.same(await s.aiRecords.list({ group_id: 'g2', status: 2, limit: 10 }), []);

      // due rules at now = 2000: rec2 due (null), rec3 backoff in the future, rec4 leased by B until the
      // future, rec5 lease of B expired; rec1 not pending.
      await s.aiRecords.update('rec3', { next_attempt_at: at(2500), updated_at: at(1500) });
      await s.aiRecords.update('rec4', { lease_owner: 'B', lease_until: at(2100), updated_at: at(1500) });
      await s.aiRecords.update('rec5', { lease_owner: 'B', lease_until: at(1900), next_attempt_at: at(1999), updated_at: at(1500) });
      const claimedA = await s.aiRecords.claimDue({ owner: 'A', now: at(2000), lease_until: at(2060), limit: 10 });
      t.same(claimedA.map((r) => r.record_id), ['rec2', 'rec5'], 'due, not leased by another: oldest first');
      t.ok(claimedA.every((r) => r.lease_owner === 'A' && r.lease_until === at(2060)), 'lease set on the returned records');
      t.same(await s.aiRecords.get('rec2'), claimedA[0], 'and stored');
      t.same(
        (await s.aiRecords.claimDue({ owner: 'B', now: at(2001), lease_until: at(2061), limit: 10 })).map((r) => r.record_id),
        ['rec4'],
        "B gets only its own leased record: A's leases run, rec3 waits for its backoff",
      );
      const claimedA2 = await s.aiRecords.claimDue({ owner: 'A', now: at(2002), lease_until: at(2070), limit: 1 });
      t.same(claimedA2.map((r) => r.record_id), ['rec2'], 'own leases may be claimed again; limit applies');
      const claimedB = await s.aiRecords.claimDue({ owner: 'B', now: at(2600), lease_until: at(2700), limit: 10 });
      t.same(claimedB.map((r) => r.record_id), ['rec2', 'rec3', 'rec4', 'rec5'], 'after leases expire and backoff passes, B gets them all');
    });
  });
}
