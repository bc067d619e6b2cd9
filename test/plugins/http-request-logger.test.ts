import t from 'tap';
import type { Cradle } from '../../kernel/container.js';
import { ContextLogger, withContext, type Logger } from '../../kernel/logger.js';
import { admin, seedGroup } from '../helpers/boot.js';
import { startFakeAi, waitFor } from '../helpers/fake-ai.js';
import { api, bootHttp, tokenFor } from '../helpers/http.js';
import { recordingLogger, type LogLine } from '../helpers/logger.js';
import { connectWs } from '../helpers/ws-client.js';
import '../../plugins/ai-router/ai-router.public.js';

/** A recording logger at `level` that counts the children made from it. */
function base(level: string): { logger: Logger; lines: LogLine[]; children: () => number } {
  const lines: LogLine[] = [];
  const rec = recordingLogger(lines);
  let children = 0;
  const logger: Logger = {
    ...rec,
    level,
    child: (b) => {
      children += 1;
      return rec.child(b);
    },
  };
  return { logger, lines, children: () => children };
}

t.test('request logger: one child per request, with req_id and user_id', async (t) => {
  const b = base('info');
  const log = new ContextLogger(b.logger, { req_id: 'req-1' });
  log.setUser('p1');
  log.info({ marker: 'handler' }, 'handler line');
  log.info({ method: 'GET', status: 200 }, 'request');
  t.equal(b.children(), 1, 'one child for every line of the request');
  t.match(b.lines, [
    { level: 'info', req_id: 'req-1', user_id: 'p1', marker: 'handler', msg: 'handler line' },
    { level: 'info', req_id: 'req-1', user_id: 'p1', method: 'GET', status: 200, msg: 'request' },
  ]);
  log.warn('plain text');
  t.match(b.lines[2], { level: 'warn', req_id: 'req-1', user_id: 'p1', msg: 'plain text' }, 'a message without fields');
  t.equal(log.level, 'info', 'the level is the base logger’s');
});

t.test('request logger: no child for lines below the level', async (t) => {
  const b = base('warn');
  const log = new ContextLogger(b.logger, { req_id: 'req-2' });
  log.setUser('p2');
  log.info({ status: 200 }, 'request');
  log.debug('details');
  t.equal(b.children(), 0, 'nothing written, no child made');
  t.same(b.lines, []);
  log.error({ route: '/x' }, 'request failed');
  t.equal(b.children(), 1);
  t.match(b.lines, [{ level: 'error', req_id: 'req-2', user_id: 'p2', route: '/x', msg: 'request failed' }]);

  const silent = base('silent');
  new ContextLogger(silent.logger, { req_id: 'req-3' }).fatal('never');
  t.equal(silent.children(), 0, 'silent writes nothing');
  t.same(silent.lines, []);
});

t.test('request logger: a line before the token is verified has req_id only; later lines add user_id', async (t) => {
  const b = base('trace');
  const log = new ContextLogger(b.logger, { req_id: 'req-4' });
  log.trace({ step: 1 }, 'before auth');
  log.setUser('doc1');
  log.info({ step: 2 }, 'after auth');
  t.match(b.lines, [
    { level: 'trace', req_id: 'req-4', step: 1 },
    { level: 'info', req_id: 'req-4', user_id: 'doc1', step: 2 },
  ]);
  t.notOk('user_id' in b.lines[0]!, 'no user_id before it is known');
  const sub = log.child({ component: 'x' });
  sub.info('from a child');
  t.match(b.lines[2], { req_id: 'req-4', user_id: 'doc1', component: 'x', msg: 'from a child' }, 'children keep both ids');
});

t.test('context logger: withContext binds only when there is a context', async (t) => {
  const b = base('info');
  t.equal(withContext(b.logger, undefined), b.logger, 'no context: the logger itself');
  withContext(b.logger, { conn: 7, user_id: 'u7' }).warn({ code: 'X' }, 'refused');
  t.match(b.lines, [{ level: 'warn', conn: 7, user_id: 'u7', code: 'X', msg: 'refused' }]);
});

/** The kernel's lines; `secret` is message content that must never appear in them. */
const secret = 'secret medical content 病历';

/** Makes every subscriber of `message.stored` and `member.added` fail, naming what it got. */
function failingSubscribers(c: Cradle): void {
  c.bus.subscribe('message.stored', ({ message }) => {
    throw new Error(`boom ${message.message_id}`);
  });
  c.bus.subscribe('member.added', ({ member }) => {
    throw new Error(`boom member ${member.user_id}`);
  });
}

function failureLine(lines: LogLine[], errMessage: string): LogLine | undefined {
  return lines.find((l) => l.msg === 'bus subscriber failed' && (l.err as Error | undefined)?.message === errMessage);
}

t.test('lines written for an HTTP request elsewhere (bus subscribers, AI intake) carry its req_id and user_id', async (t) => {
  const ai = await startFakeAi(t);
  const lines: LogLine[] = [];
  const { booted, baseUrl } = await bootHttp(t, {
    plugins: ['auth', 'users', 'groups', 'chat', 'ai-router'],
    adapters: { storage: 'memory', 'ai-provider': 'webhook' },
    config: { ai: { url: ai.url }, 'ai-router': { pollIntervalMs: 50, loadShedding: { maxEventLoopDelayMs: 0, maxSendP99Ms: 0 } } },
    logger: recordingLogger(lines),
  });
  const { c } = booted;
  await seedGroup(c, 'g1', ['p1', 'doc1', 'ai1']);
  await c.userService.create(admin, { user_id: 'p2', username: 'p2', user_role: 'PATIENT' });
  failingSubscribers(c);

  const P1 = api(baseUrl, await tokenFor(c, 'p1'));
  const sent = await P1.post('/api/message/send', { group_id: 'g1', msg_content: secret }, { 'x-request-id': 'req-send-1' });
  t.equal(sent.status, 201);
  const id = sent.body.message_id as string;
  const failed = await waitFor(() => failureLine(lines, `boom ${id}`), 'the failing subscriber’s line');
  t.match(failed, { level: 'error', req_id: 'req-send-1', user_id: 'p1', event: 'message.stored' }, 'a subscriber’s failure carries the request’s ids');
  const created = await waitFor(() => lines.find((l) => l.msg === 'AI record created' && l.message_id === id), 'the AI intake line');
  t.match(created, { level: 'debug', plugin: 'ai-router', req_id: 'req-send-1', user_id: 'p1' }, 'the AI intake line carries them, under its own plugin');

  // the AI reply is stored by the router, not by the request: its event has no request ids
  const reply = await waitFor(async () => (await c.storage.messages.list('g1', { limit: 10 })).messages.find((m) => m.msg_type === 'AI_REPLY'), 'the AI reply');
  const replyFailed = await waitFor(() => failureLine(lines, `boom ${reply.message_id}`), 'the reply’s subscriber line');
  t.notOk('req_id' in replyFailed, 'no request id on lines of work no request started');

  const ADMIN = api(baseUrl, await tokenFor(c, 'admin', true));
  const added = await ADMIN.post('/api/group/g1/members', { user_id: 'p2' }, { 'x-request-id': 'req-add-1' });
  t.equal(added.status, 201);
  t.match(await waitFor(() => failureLine(lines, 'boom member p2'), 'the member.added line'), { req_id: 'req-add-1', user_id: 'admin', event: 'member.added' });

  t.notOk(JSON.stringify(lines).includes(secret), 'no message content in any line');
});

t.test('lines written for a WebSocket frame carry the connection id and user id', async (t) => {
  const lines: LogLine[] = [];
  const { booted, baseUrl } = await bootHttp(t, {
    plugins: ['auth', 'users', 'groups', 'chat', 'ws'],
    logger: recordingLogger(lines),
  });
  const { c } = booted;
  await seedGroup(c, 'g1', ['p1', 'doc1']);
  failingSubscribers(c);
  const ws = await connectWs(t, baseUrl, 'p1', await tokenFor(c, 'p1'));
  const connected = await waitFor(() => lines.find((l) => l.msg === 'ws: connected' && l.user_id === 'p1'), 'the connected line');
  const conn = connected.conn;
  t.type(conn, 'number', 'the connection id');

  const ack = await ws.request({ type: 'send', group_id: 'g1', msg_content: secret, client_msg_id: 'w1' }, (f) => f.type === 'ack', 'ack');
  const failed = await waitFor(() => failureLine(lines, `boom ${ack.data.message_id}`), 'the failing subscriber’s line');
  t.match(failed, { level: 'error', conn, user_id: 'p1', event: 'message.stored' }, 'a subscriber’s failure carries the socket’s ids');
  t.notOk('req_id' in failed);

  await ws.request({ type: 'send', msg_content: 'no group' }, (f) => f.type === 'error', 'error frame');
  t.match(
    await waitFor(() => lines.find((l) => l.msg === 'ws: frame refused'), 'the refused line'),
    { level: 'debug', conn, user_id: 'p1', code: 'VALIDATION_FAILED' },
    'the session’s own line carries them',
  );
  t.notOk(JSON.stringify(lines).includes(secret), 'no message content in any line');
});
