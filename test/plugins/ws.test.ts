import t from 'tap';
import type { Test } from 'tap';
import { admin, as, seedGroup } from '../helpers/boot.js';
import { UnavailableError } from '../../kernel/errors.js';
import { api, bootHttp, tokenFor } from '../helpers/http.js';
import { connectWs, tryUpgrade, type Frame, type WsTestClient } from '../helpers/ws-client.js';
import type { Cradle } from '../../kernel/container.js';
import type { Message } from '../../kernel/domain.js';
import { Writable } from 'node:stream';
import { WebSocket } from 'ws';
import { silentLogger } from '../../kernel/logger.js';
import { WsHub } from '../../plugins/ws/ws-hub.service.js';
import '../../plugins/ws/ws.public.js';

const WS_PLUGINS = ['auth', 'users', 'groups', 'chat', 'http', 'ws'];

async function bootWs(t: Test, ws: Record<string, unknown> = {}, plugins = WS_PLUGINS) {
  const { booted, baseUrl } = await bootHttp(t, { plugins, config: { ws } });
  return { c: booted.c, kernel: booted.kernel, baseUrl };
}

async function open(t: Test, c: Cradle, baseUrl: string, userId: string): Promise<WsTestClient> {
  return connectWs(t, baseUrl, userId, await tokenFor(c, userId));
}

/** Waits until the hub has indexed `n` sockets under the group (the user's groups load right after the upgrade). */
async function indexed(c: Cradle, client: WsTestClient, groupId: string, n: number): Promise<void> {
  await client.until(() => c.wsConnections.groupSocketCount(groupId) === n, `${n} sockets indexed under ${groupId}`);
}

const isMessage = (id: string) => (f: Frame) => f.type === 'message' && f.data.message_id === id;

t.test('delivery to every socket of every member, acks, errors, sync', async (t) => {
  const { c, baseUrl } = await bootWs(t);
  await seedGroup(c, 'g1', ['pat1', 'doc1']);
  await seedGroup(c, 'g2', ['out1', 'doc1']);

  const a1 = await open(t, c, baseUrl, 'pat1');
  const a2 = await open(t, c, baseUrl, 'pat1');
  const b1 = await open(t, c, baseUrl, 'doc1');
  const o1 = await open(t, c, baseUrl, 'out1');
  await indexed(c, a1, 'g1', 3);
  await indexed(c, a1, 'g2', 2);
  t.equal(c.wsConnections.count('pat1'), 2, 'two sockets for pat1');
  t.equal(c.wsConnections.count(), 4);

  // send over WS: ack after commit, message frame to every socket of every member (own included)
  const ack = await a1.request(
    { type: 'send', group_id: 'g1', msg_content: 'hello  <b>doctor</b>', client_msg_id: 'c-1' },
    (f) => f.type === 'ack' || f.type === 'error',
    'ack of c-1',
  );
  t.equal(ack.type, 'ack');
  t.equal(ack.client_msg_id, 'c-1');
  const m1 = ack.data as Message;
  t.match(m1, { group_id: 'g1', seq: 1, from_user_id: 'pat1', msg_type: 'TEXT', msg_content: 'hello  <b>doctor</b>', client_msg_id: 'c-1' });
  for (const [name, cl] of [['a1', a1], ['a2', a2], ['b1', b1]] as const) {
    const f = await cl.next(isMessage(m1.message_id), `${name} gets m1`);
    t.same(f, { type: 'message', data: m1 }, `${name}: message frame`);
  }

  // a message of another transport (HTTP) reaches the sockets too
  const res = await api(baseUrl, await tokenFor(c, 'doc1')).post('/api/message/send', { group_id: 'g1', msg_content: 'via http' });
  t.equal(res.status, 201);
  await a2.next(isMessage(res.body.message_id), 'a2 gets the HTTP message');
  await b1.next(isMessage(res.body.message_id), 'b1 gets its own HTTP message');

  // none to non-members: out1 receives a later g2 message but nothing of g1
  const marker = await c.chatService.send({ user_id: 'doc1', admin: false }, { group_id: 'g2', msg_content: 'g2 only' }, { transport: 'test' });
  await o1.next(isMessage(marker.message.message_id), 'o1 gets the g2 message');
  t.same(
    o1.of('message').map((f) => f.data.group_id),
    ['g2'],
    'out1 saw no g1 message',
  );
  t.notOk(a1.frames.some((f) => f.type === 'message' && f.data.group_id === 'g2'), 'pat1 saw no g2 message');

  // idempotent replay: same client_msg_id -> ack with the original
  const replay = await a1.request({ type: 'send', group_id: 'g1', msg_content: 'again', client_msg_id: 'c-1' }, (f) => f.type === 'ack', 'replay ack');
  t.equal(replay.data.message_id, m1.message_id, 'replay acks the original message');

  // error frames; the socket stays open after each
  const err = (cl: WsTestClient, frame: unknown, what: string) => cl.request(frame, (f) => f.type === 'error' || f.type === 'ack' || f.type === 'sync', what);
  t.match(await err(a1, '{not json', 'bad json'), { type: 'error', code: 'INVALID_JSON' });
  t.match(await err(a1, '[1,2]', 'array frame'), { type: 'error', code: 'VALIDATION_FAILED' });
  t.match(await err(a1, { type: 'shout' }, 'unknown type'), { type: 'error', code: 'VALIDATION_FAILED' });
  t.match(await err(a1, { type: 'send', group_id: 'g1', msg_content: 'x' }, 'no client_msg_id'), {
    type: 'error',
    code: 'VALIDATION_FAILED',
    details: [{ path: 'client_msg_id' }],
  });
  t.match(await err(a1, { type: 'send', group_id: 'g1', msg_content: '   ', client_msg_id: 'c-blank' }, 'blank content'), {
    type: 'error',
    code: 'VALIDATION_FAILED',
    client_msg_id: 'c-blank',
  });
  t.match(await err(a1, { type: 'send', group_id: 'g1', msg_content: 'x', client_msg_id: 'c-ai', msg_type: 'AI_REPLY' }, 'AI_REPLY'), {
    type: 'error',
    code: 'VALIDATION_FAILED',
    client_msg_id: 'c-ai',
  });
  t.match(await err(a1, { type: 'send', group_id: 'g1', msg_content: 'x', client_msg_id: 'c-x', extra: 1 }, 'unknown field'), {
    type: 'error',
    code: 'VALIDATION_FAILED',
  });
  t.match(await err(o1, { type: 'send', group_id: 'g1', msg_content: 'let me in', client_msg_id: 'c-nm' }, 'not a member'), {
    type: 'error',
    code: 'FORBIDDEN',
    client_msg_id: 'c-nm',
  });
  t.match(await err(a1, { type: 'send', group_id: 'nope', msg_content: 'x', client_msg_id: 'c-404' }, 'unknown group'), {
    type: 'error',
    code: 'NOT_FOUND',
    client_msg_id: 'c-404',
  });
  t.match(await err(a1, JSON.stringify({ type: 'send', group_id: 'g1', msg_content: 'x'.repeat(70_000), client_msg_id: 'c-big' }), 'frame too large'), {
    type: 'error',
    code: 'PAYLOAD_TOO_LARGE',
  });
  const binFrom = a1.frames.length;
  a1.ws.send(Buffer.from('{"type":"ping"}'), { binary: true });
  t.match(await a1.next((f) => f.type === 'error', 'binary frame refused', binFrom), { code: 'VALIDATION_FAILED' });
  t.match(await err(o1, { type: 'sync', group_id: 'g1', after_seq: 0 }, 'sync not a member'), { type: 'error', code: 'FORBIDDEN' });
  t.match(await err(a1, { type: 'sync', group_id: 'g1' }, 'sync without after_seq'), { type: 'error', code: 'VALIDATION_FAILED' });
  t.same(await a1.request({ type: 'ping' }, (f) => f.type === 'pong', 'pong'), { type: 'pong' }, 'ping -> pong, socket still open');
  t.equal(a1.closed, null);

  // sync after a simulated disconnect: b1 drops, three messages are stored, a new socket catches up
  const lastSeen = Math.max(...b1.of('message').filter((f) => f.data.group_id === 'g1').map((f) => f.data.seq as number));
  b1.close();
  await b1.waitClosed();
  await a1.until(() => c.wsConnections.count('doc1') === 0, 'server saw b1 close');
  const missed: Message[] = [];
  for (let i = 0; i < 3; i++) {
    missed.push((await c.chatService.send({ user_id: 'pat1', admin: false }, { group_id: 'g1', msg_content: `missed ${i}` }, { transport: 'test' })).message);
  }
  const b2 = await open(t, c, baseUrl, 'doc1');
  const page1 = await b2.request({ type: 'sync', group_id: 'g1', after_seq: lastSeen, limit: 2 }, (f) => f.type === 'sync', 'sync page 1');
  t.same(page1, { type: 'sync', group_id: 'g1', data: missed.slice(0, 2), has_more: true });
  const page2 = await b2.request({ type: 'sync', group_id: 'g1', after_seq: page1.data[1].seq }, (f) => f.type === 'sync', 'sync page 2');
  t.same(page2, { type: 'sync', group_id: 'g1', data: missed.slice(2), has_more: false });
  t.same(
    [lastSeen + 1, lastSeen + 2, lastSeen + 3],
    missed.map((m) => m.seq),
    'seq makes the gap visible',
  );

  // frames of a socket's sends are handled in order
  await indexed(c, b2, 'g1', 3);
  const from = b2.frames.length;
  for (let i = 0; i < 5; i++) b2.send({ type: 'send', group_id: 'g1', msg_content: `burst ${i}`, client_msg_id: `burst-${i}` });
  await b2.until(() => b2.frames.slice(from).filter((f) => f.type === 'ack').length === 5, 'five acks');
  const acks = b2.frames.slice(from).filter((f) => f.type === 'ack');
  t.same(
    acks.map((f) => f.client_msg_id),
    ['burst-0', 'burst-1', 'burst-2', 'burst-3', 'burst-4'],
  );
  t.same(
    acks.map((f) => f.data.seq),
    [0, 1, 2, 3, 4].map((i) => acks[0]!.data.seq + i),
    'stored in the order sent',
  );

  // group.notify frames (e.g. ai_status) go to the group's members as they are
  const frame = { type: 'ai_status', group_id: 'g1', user_message_id: m1.message_id, status: 'thinking' };
  c.bus.publish('group.notify', { group_id: 'g1', frame });
  t.same(await a2.next((f) => f.type === 'ai_status', 'ai_status on a2'), frame);
  t.same(await b2.next((f) => f.type === 'ai_status', 'ai_status on b2'), frame);

  // events relayed from another instance (origin remote) are delivered like local ones
  const remote: Message = { ...m1, message_id: 'remote-1', seq: 999, client_msg_id: null };
  c.bus.publish('message.stored', { message: remote, transport: 'http' }, { origin: 'remote', instance_id: 'other-instance' });
  await a1.next(isMessage('remote-1'), 'remote message on a1');
  t.notOk(o1.frames.some(isMessage('remote-1')), 'not to non-members');
});

t.test('membership changes take effect at once', async (t) => {
  const { c, baseUrl } = await bootWs(t);
  await seedGroup(c, 'g1', ['pat1', 'doc1']);
  await seedGroup(c, 'g3', ['pat2', 'doc1']);
  const doc = await open(t, c, baseUrl, 'doc1');
  const p2a = await open(t, c, baseUrl, 'pat2');
  const p2b = await open(t, c, baseUrl, 'pat2');
  await indexed(c, doc, 'g1', 1);
  await indexed(c, doc, 'g3', 3);
  const adminApi = api(baseUrl, await tokenFor(c, 'admin', true));

  // added: member_joined to the group's members and to the new member's sockets; then it receives messages
  const add = await adminApi.post('/api/group/g1/members', { user_id: 'pat2' });
  t.equal(add.status, 201);
  const joined = (f: Frame) => f.type === 'member_joined' && f.data.user_id === 'pat2' && f.data.group_id === 'g1';
  t.match(await doc.next(joined, 'doc sees member_joined'), { data: { group_id: 'g1', user_id: 'pat2', user_role: 'PATIENT' } });
  await p2a.next(joined, 'pat2 socket a sees its own member_joined');
  await p2b.next(joined, 'pat2 socket b sees its own member_joined');
  const m = await c.chatService.send({ user_id: 'pat1', admin: false }, { group_id: 'g1', msg_content: 'welcome' }, { transport: 'test' });
  await p2a.next(isMessage(m.message.message_id), 'pat2 socket a receives g1 messages');
  await p2b.next(isMessage(m.message.message_id), 'pat2 socket b receives g1 messages');

  // removed: member_left to the group and to the member concerned; then nothing more of that group
  const del = await adminApi.del('/api/group/g1/members/pat2');
  t.equal(del.status, 204);
  const left = (f: Frame) => f.type === 'member_left' && f.data.user_id === 'pat2' && f.data.group_id === 'g1';
  await doc.next(left, 'doc sees member_left');
  await p2a.next(left, 'pat2 sees its own member_left');
  const leftAt = p2a.frames.length;
  await c.chatService.send({ user_id: 'pat1', admin: false }, { group_id: 'g1', msg_content: 'after removal' }, { transport: 'test' });
  const marker = await c.chatService.send({ user_id: 'doc1', admin: false }, { group_id: 'g3', msg_content: 'marker' }, { transport: 'test' });
  await p2a.next(isMessage(marker.message.message_id), 'pat2 still receives g3');
  t.notOk(
    p2a.frames.slice(leftAt).some((f) => f.type === 'message' && f.data.group_id === 'g1'),
    'no g1 message after removal',
  );
  t.equal(c.wsConnections.groupSocketCount('g1'), 1, 'only doc indexed under g1');

  // a user who leaves by itself (self-removal) stops at once as well
  await c.groupService.removeMember(admin, 'g3', 'pat2');
  await p2b.next((f) => f.type === 'member_left' && f.data.group_id === 'g3', 'member_left g3');
  t.equal(c.wsConnections.groupSocketCount('g3'), 1);
});

t.test('upgrade authentication and unknown paths', async (t) => {
  const { c, baseUrl } = await bootWs(t);
  await seedGroup(c, 'g1', ['pat1']);
  const wsBase = baseUrl.replace(/^http/, 'ws');
  const good = await tokenFor(c, 'pat1');

  const none = await tryUpgrade(`${wsBase}/ws/pat1`);
  t.equal(none.status, 401, 'no token');
  t.equal(none.body.error.code, 'UNAUTHENTICATED');
  const bad = await tryUpgrade(`${wsBase}/ws/pat1?token=${good.slice(0, -3)}abc`);
  t.equal(bad.status, 401, 'bad signature');
  const malformed = await tryUpgrade(`${wsBase}/ws/pat1?token=x.y.z`);
  t.equal(malformed.status, 401, 'malformed token');
  const other = await tryUpgrade(`${wsBase}/ws/pat1?token=${await tokenFor(c, 'doc9')}`);
  t.equal(other.status, 403, 'sub differs from the path');
  t.equal(other.body.error.code, 'FORBIDDEN');
  const adminOther = await tryUpgrade(`${wsBase}/ws/pat1?token=${await tokenFor(c, 'admin', true)}`);
  t.equal(adminOther.status, 403, 'even an admin token must name the path user');

  for (const path of ['/ws', '/ws/', '/ws/pat1/extra', '/other', '/api/user/pat1', '/ws/bad%20id']) {
    const r = await tryUpgrade(`${wsBase}${path}?token=${good}`);
    t.equal(r.status, 404, `unknown path ${path} refused`);
  }

  // the Authorization header works like the query parameter
  const viaHeader = await connectWs(t, baseUrl, 'pat1', null, { headers: { authorization: `Bearer ${good}` } });
  t.same(await viaHeader.request({ type: 'ping' }, (f) => f.type === 'pong', 'pong via header auth'), { type: 'pong' });

  // authFailure 'close': the upgrade completes, then the socket is closed with 4401 / 4403
  const closing = await bootWs(t, { authFailure: 'close' });
  const cb = closing.baseUrl.replace(/^http/, 'ws');
  t.same(await tryUpgrade(`${cb}/ws/pat1`), { closeCode: 4401 }, 'close 4401 without token');
  t.same(await tryUpgrade(`${cb}/ws/pat1?token=${await tokenFor(closing.c, 'doc9')}`), { closeCode: 4403 }, 'close 4403 for another sub');
  t.equal((await tryUpgrade(`${cb}/nowhere`)).status, 404, 'unknown path still refused with 404');
});

t.test('liveness: sockets that do not answer pings are terminated', async (t) => {
  const { c, baseUrl } = await bootWs(t, { pingIntervalMs: 50 });
  await seedGroup(c, 'g1', ['pat1']);
  const token = await tokenFor(c, 'pat1');
  const mute = await connectWs(t, baseUrl, 'pat1', token, { autoPong: false });
  const live = await connectWs(t, baseUrl, 'pat1', token);
  const closed = await mute.waitClosed('mute socket terminated');
  t.equal(closed.code, 1006, 'terminated (no close handshake)');
  await live.until(() => live.pings >= 4, 'live socket answered several pings');
  t.equal(live.closed, null, 'answering socket stays open');
  t.equal(c.wsConnections.count('pat1'), 1);
});

t.test('liveness: a round over many sockets is sliced, never one long stall', async (t) => {
  const hub = new WsHub({ maxBufferedBytes: 1 << 20 }, silentLogger, null);
  let pings = 0;
  const fakeSocket = () => ({ readyState: WebSocket.OPEN, ping: () => void pings++, terminate: () => undefined }) as unknown as WebSocket;
  for (let i = 0; i < 1000; i++) hub.add(`u${i % 100}`, fakeSocket());
  const round = hub.sweep(0);
  t.ok(pings > 0 && pings < 1000, `only the first slice is pinged before the loop is yielded (${pings} of 1000)`);
  t.equal(hub.sweep(0), round, 'a round still running is not started twice');
  await round;
  t.equal(pings, 1000, 'every socket pinged once by the end of the round');
  await hub.sweep(0);
  t.equal(hub.count(), 0, 'sockets that did not answer the previous round are terminated');
});

t.test('frames written to one socket in one tick leave in one write, in order', async (t) => {
  const hub = new WsHub({ maxBufferedBytes: 1 << 20 }, silentLogger, null);
  const writes: string[][] = [];
  const raw = new Writable({
    write(chunk: Buffer, _enc, cb) {
      writes.push([chunk.toString()]);
      cb();
    },
    writev(chunks, cb) {
      writes.push(chunks.map((c) => String(c.chunk)));
      cb();
    },
  });
  // the part of a ws socket the hub uses: readyState, bufferedAmount, send through the net socket
  const socket = {
    readyState: WebSocket.OPEN,
    _socket: raw,
    get bufferedAmount() {
      return raw.writableLength;
    },
    send: (data: Buffer) => raw.write(data),
  } as unknown as WebSocket;
  const conn = hub.add('u1', socket);
  hub.loaded(conn, ['g1']);
  for (let i = 0; i < 3; i++) hub.fanout('g1', { type: 'n', i });
  hub.sendTo(conn, { type: 'ack', i: 3 });
  t.same(writes, [], 'nothing written before the tick ends');
  await new Promise((r) => setImmediate(r));
  t.equal(writes.length, 1, 'one write for the tick');
  t.same(
    writes[0]!.map((w) => (JSON.parse(w) as { i: number }).i),
    [0, 1, 2, 3],
    'the four frames, in the order written',
  );
  hub.fanout('g1', { type: 'n', i: 4 });
  await new Promise((r) => setImmediate(r));
  t.equal(writes.length, 2, 'a later tick is its own write');
});

t.test('back-pressure: a client that does not read is cut off, the others are not delayed', async (t) => {
  const { c, baseUrl } = await bootWs(t, { maxBufferedBytes: 256 * 1024 }, [...WS_PLUGINS, 'metrics']);
  await seedGroup(c, 'g1', ['pat1', 'doc1']);
  const slow = await open(t, c, baseUrl, 'pat1');
  const fast = await open(t, c, baseUrl, 'doc1');
  await indexed(c, fast, 'g1', 2);

  // the slow client stops reading: its TCP window fills, then the server's buffer grows
  (slow.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
  const pad = 'x'.repeat(128 * 1024);
  let published = 0;
  // kernel socket buffers absorb several MB first; the cap only guards against a broken limit
  while (c.wsConnections.count('pat1') > 0 && published < 2000) {
    for (let i = 0; i < 8; i++) {
      c.bus.publish('group.notify', { group_id: 'g1', frame: { type: 'bulk', n: published++, pad } });
    }
    // let the fast client read what was sent so far before going on
    const target = published;
    await fast.until(() => fast.of('bulk').length === target, `fast client has ${target} bulk frames`);
  }
  t.equal(c.wsConnections.count('pat1'), 0, `slow socket terminated after ${published} frames of 128 KiB`);
  t.ok(published < 2000, 'cut off before the safety cap');
  t.equal(fast.of('bulk').length, published, 'the fast client got every frame');
  t.equal(fast.closed, null, 'fast client still connected');

  const m = await c.chatService.send({ user_id: 'pat1', admin: false }, { group_id: 'g1', msg_content: 'still flowing' }, { transport: 'test' });
  await fast.next(isMessage(m.message.message_id), 'fast client gets later messages');

  (slow.ws as unknown as { _socket: { resume(): void } })._socket.resume();
  await slow.waitClosed('slow client sees its socket closed');
  t.equal(slow.closed!.code, 1006);

  const metrics = await api(baseUrl).get('/metrics');
  t.equal(metrics.status, 200);
  const text = String(metrics.body);
  t.match(text, /im_ws_slow_disconnects_total 1\b/);
  t.match(text, /im_ws_connections 1\b/);
  t.match(text, /im_ws_frames_sent_total\{type="bulk"\} \d+/);
  t.match(text, /im_ws_frames_sent_total\{type="message"\} [1-9]/);
  t.match(text, /im_ws_fanout_latency_seconds_count [1-9]/);
});

t.test('stop closes every socket with 1001 and stops accepting', async (t) => {
  const { c, kernel, baseUrl } = await bootWs(t);
  await seedGroup(c, 'g1', ['pat1', 'doc1']);
  const a = await open(t, c, baseUrl, 'pat1');
  const b = await open(t, c, baseUrl, 'doc1');
  await indexed(c, a, 'g1', 2);
  const token = await tokenFor(c, 'pat1');
  const stopping = Promise.all([kernel.stop(), c.wsServer.stop()]);
  t.equal((await a.waitClosed()).code, 1001);
  t.equal((await b.waitClosed()).code, 1001);
  await stopping;
  await c.wsServer.stop();
  t.equal(c.wsConnections.count(), 0);
  await t.rejects(connectWs(t, baseUrl, 'pat1', token), 'no upgrade after stop');
});

t.test('close 1009: a frame over the hard limit (4 x maxFrameBytes, at least 1 MiB) ends only that socket', async (t) => {
  const { c, baseUrl } = await bootWs(t, { maxFrameBytes: 1024 });
  await seedGroup(c, 'g1', ['pat1', 'doc1']);
  const a = await open(t, c, baseUrl, 'pat1');
  const b = await open(t, c, baseUrl, 'doc1');
  await indexed(c, a, 'g1', 2);
  // between the two limits: an error frame, the socket stays open
  const e = await a.request({ type: 'send', group_id: 'g1', msg_content: 'x'.repeat(4096), client_msg_id: 'big' }, (f) => f.type === 'error', 'error frame');
  t.match(e, { code: 'PAYLOAD_TOO_LARGE', client_msg_id: undefined });
  t.ok((await a.request({ type: 'ping' }, (f) => f.type === 'pong', 'pong after the error')).type, 'still open');
  // exactly at the hard limit: still an error frame (the limit is inclusive)
  const atLimit = await a.request('x'.repeat(1024 * 1024), (f) => f.type === 'error', 'error frame at the hard limit');
  t.equal(atLimit.code, 'PAYLOAD_TOO_LARGE');
  // one byte over it: ws refuses the frame and closes with 1009
  a.send('x'.repeat(1024 * 1024 + 1));
  const closed = await a.waitClosed('closed after the oversized frame');
  t.equal(closed.code, 1009, 'close 1009 (message too big)');
  await b.until(() => c.wsConnections.count('pat1') === 0, 'the socket left the hub');
  // the other member's socket is untouched and still gets messages
  const { message } = await c.chatService.send(as('doc1'), { group_id: 'g1', msg_content: 'still here' }, { transport: 'http' });
  await b.next(isMessage(message.message_id), 'doc1 still gets messages');
  t.equal(b.closed, null);
});

t.test('close 1011: the groups of the user cannot be read from storage', async (t) => {
  const { c, baseUrl } = await bootWs(t);
  await seedGroup(c, 'g1', ['pat1']);
  const members = c.storage.members;
  const real = members.groupIdsOfUser.bind(members);
  let fault: Error | null = new UnavailableError('database unreachable');
  members.groupIdsOfUser = async (userId) => {
    if (fault) throw fault;
    return real(userId);
  };
  t.teardown(() => {
    members.groupIdsOfUser = real;
  });
  const a = await open(t, c, baseUrl, 'pat1');
  t.same(await a.waitClosed(), { code: 1011, reason: 'storage unavailable, retry later' }, 'storage down: 1011, retry later');
  fault = new Error('an unexpected driver fault');
  const b = await open(t, c, baseUrl, 'pat1');
  t.same(await b.waitClosed(), { code: 1011, reason: 'internal error' }, 'an internal fault: 1011 without its details');
  t.equal(c.wsConnections.count('pat1'), 0, 'neither socket stays in the hub');
  fault = null;
  const ok = await open(t, c, baseUrl, 'pat1');
  await indexed(c, ok, 'g1', 1);
  t.equal(ok.closed, null, 'storage back: a new socket is served');
});
