import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { asValue } from 'awilix';
import { SignJWT } from 'jose';
import t from 'tap';
import { UnavailableError } from '../../kernel/errors.js';
import { definePlugin } from '../../kernel/plugin.js';
import type { Storage } from '../../kernel/ports/storage.port.js';
import {
  HTTP_MIDDLEWARE,
  HTTP_ROUTES,
  READINESS_CHECKS,
  type HttpMiddleware,
  type ReadinessCheck,
  type RouteDefinition,
} from '../../plugins/http/http.public.js';
import { TEST_JWT_SECRET } from '../helpers/boot.js';
import { api, bootHttp, tokenFor } from '../helpers/http.js';
import { STORAGE_BACKENDS, storageBackend } from '../helpers/services.js';
import { recordingLogger, type LogLine } from '../helpers/logger.js';

/** Wraps the memory storage so that every call throws UnavailableError while `down` is set. */
function faultyStorage(state: { down: boolean }) {
  return definePlugin({
    name: 'storage-fault',
    dependsOn: ['storage'],
    register({ container }) {
      const real = container.resolve('storage');
      const wrap = <T extends object>(target: T): T =>
        new Proxy(target, {
          get(obj, prop, receiver) {
            const v = Reflect.get(obj, prop, receiver) as unknown;
            if (typeof v === 'function') {
              return (...args: unknown[]) => {
                if (state.down) return Promise.reject(new UnavailableError('storage unavailable'));
                return (v as (...a: unknown[]) => unknown).apply(obj, args);
              };
            }
            if (typeof v === 'object' && v !== null) return wrap(v);
            return v;
          },
        });
      container.register({ storage: asValue(wrap(real) as Storage) });
    },
  });
}

interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A raw request (node:http, fresh connection) that tolerates the server closing while we still write. */
function rawRequest(
  baseUrl: string,
  opts: { method: string; path: string; headers?: Record<string, string>; chunks?: Buffer[] },
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const url = new URL(opts.path, baseUrl);
    const req = httpRequest(url, { method: opts.method, headers: opts.headers, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts).toString('utf8') }));
      res.on('error', reject);
    });
    let answered = false;
    req.on('response', () => (answered = true));
    req.on('error', (err) => {
      if (!answered) reject(err);
    });
    const chunks = opts.chunks ?? [];
    let i = 0;
    const writeNext = (): void => {
      if (answered || i >= chunks.length) {
        req.end();
        return;
      }
      const ok = req.write(chunks[i++]!);
      if (ok) setImmediate(writeNext);
      else req.once('drain', writeNext);
    };
    writeNext();
  });
}

const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');

for (const backend of STORAGE_BACKENDS) t.test(`http transport on ${backend} storage`, async (t) => {
  const storage = await storageBackend(t, backend);
  if (!storage) return;
  const lines: LogLine[] = [];
  const storageState = { down: false };
  const slow: { entered?: () => void; release?: () => void } = {};
  const extra = definePlugin({
    name: 'http-test-extra',
    register({ contributions }) {
      contributions.add<RouteDefinition>(HTTP_ROUTES, {
        method: 'GET',
        path: '/test/boom',
        auth: 'none',
        summary: 'throws an unknown error',
        handler: async () => {
          throw new Error('SELECT * FROM users WHERE secret');
        },
      });
      contributions.add<RouteDefinition>(HTTP_ROUTES, {
        method: 'POST',
        path: '/api/test/echo',
        auth: 'user',
        summary: 'echoes the body, the principal and the request id',
        handler: async (req) => {
          req.logger.info({ marker: 'echo' }, 'echo handler');
          return { status: 200, body: { body: req.body, principal: req.principal, request_id: req.requestId, query: req.query } };
        },
      });
      contributions.add<RouteDefinition>(HTTP_ROUTES, {
        method: 'GET',
        path: '/test/slow',
        auth: 'none',
        summary: 'waits until released',
        hidden: true,
        handler: async () => {
          await new Promise<void>((resolve) => {
            slow.release = resolve;
            slow.entered?.();
          });
          return { status: 200, body: { done: true } };
        },
      });
      contributions.add<HttpMiddleware>(HTTP_MIDDLEWARE, async (ctx, next) => {
        await next();
        ctx.set('X-Test-Middleware', `${String((ctx.state as { route?: string }).route)} ${ctx.status}`);
      });
      contributions.add<ReadinessCheck>(READINESS_CHECKS, { name: 'test-broker', check: async () => undefined });
    },
  });

  const { booted, baseUrl } = await bootHttp(t, {
    ...storage,
    logger: recordingLogger(lines),
    extraUnits: [extra, faultyStorage(storageState)],
  });
  const { c } = booted;
  const adminTok = await tokenFor(c, 'admin', true);
  const A = api(baseUrl, adminTok);
  const anon = api(baseUrl);

  // users used below: p1, p2 (PATIENT), doc1 (DOCTOR), out1 (PATIENT, in no group)
  for (const [id, role] of [
    ['p1', 'PATIENT'],
    ['p2', 'PATIENT'],
    ['doc1', 'DOCTOR'],
    ['out1', 'PATIENT'],
    ['p3', 'PATIENT'],
  ] as const) {
    const r = await A.post('/api/user', { user_id: id, username: `name ${id}`, user_role: role });
    t.equal(r.status, 201, `create ${id}`);
  }
  const tok = {
    p1: await tokenFor(c, 'p1'),
    p2: await tokenFor(c, 'p2'),
    p3: await tokenFor(c, 'p3'),
    doc1: await tokenFor(c, 'doc1'),
    out1: await tokenFor(c, 'out1'),
  };
  const P1 = api(baseUrl, tok.p1);
  const P2 = api(baseUrl, tok.p2);
  const DOC = api(baseUrl, tok.doc1);
  const OUT = api(baseUrl, tok.out1);

  const expectError = (res: { status: number; body: any }, status: number, code: string, name: string): void => {
    t.equal(res.status, status, `${name}: status ${status}`);
    t.equal(res.body?.error?.code, code, `${name}: code ${code}`);
    t.type(res.body?.error?.message, 'string', `${name}: message`);
    t.ok(Array.isArray(res.body?.error?.details), `${name}: details array`);
  };

  t.test('ops endpoints', async (t) => {
    const h = await anon.get('/healthz');
    t.equal(h.status, 200);
    t.same(h.body, { status: 'ok' });

    const r = await anon.get('/readyz');
    t.equal(r.status, 200);
    t.same(r.body, { status: 'ok', checks: { storage: 'ok', 'test-broker': 'ok' } });

    const doc = await anon.get('/openapi.json');
    t.equal(doc.status, 200);
    t.match(doc.body.openapi, /^3\./);
    const ops = Object.entries(doc.body.paths as Record<string, Record<string, unknown>>).flatMap(([p, m]) =>
      Object.keys(m).map((k) => `${k.toUpperCase()} ${p}`),
    );
    for (const want of [
      'POST /api/user',
      'GET /api/user/{user_id}',
      'PUT /api/user/{user_id}/role',
      'GET /api/user/{user_id}/groups',
      'POST /api/group/create',
      'GET /api/group/{group_id}',
      'POST /api/group/{group_id}/members',
      'GET /api/group/{group_id}/members',
      'DELETE /api/group/{group_id}/members/{user_id}',
      'POST /api/message/send',
      'GET /api/message/list',
      'GET /api/message/{message_id}',
      'GET /healthz',
      'GET /readyz',
      'GET /openapi.json',
      'POST /api/test/echo',
      'GET /test/boom',
    ]) {
      t.ok(ops.includes(want), `openapi lists ${want}`);
    }
    t.notOk(ops.includes('GET /test/slow'), 'hidden routes are left out');
    t.notOk(ops.some((o) => o.includes('/docs')), 'docs assets are left out');
    t.same(doc.body.components.securitySchemes.bearerAuth, { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' });
    t.ok(doc.body.components.schemas.Error.properties.error, 'error body schema');
    const send = doc.body.paths['/api/message/send'].post;
    t.same(send.security, [{ bearerAuth: [] }]);
    t.ok(send.responses['201'] && send.responses['200'] && send.responses['429'] && send.responses['413']);
    const sendBody = send.requestBody.content['application/json'].schema;
    t.equal(sendBody.properties.msg_content.maxLength, 8000, 'send schema built with the configured max length');
    t.equal(sendBody.additionalProperties, false, 'unknown fields rejected in the schema');
    t.same(doc.body.paths['/healthz'].get.security, []);
    const list = doc.body.paths['/api/message/list'].get;
    const groupParam = list.parameters.find((p: { name: string }) => p.name === 'group_id');
    t.match(groupParam, { in: 'query', required: true });
    t.match(list.parameters.find((p: { name: string }) => p.name === 'limit'), { in: 'query', required: false, schema: { maximum: 200 } });
    t.match(doc.body.paths['/api/user/{user_id}'].get.parameters[0], { name: 'user_id', in: 'path', required: true });

    const page = await anon.get('/docs');
    t.equal(page.status, 200);
    t.match(page.headers.get('content-type'), /text\/html/);
    t.match(page.body, /swagger-ui/);
    t.notMatch(page.body, /https?:\/\//, 'no CDN: every asset is local');
    for (const src of [...(page.body as string).matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!)) {
      const asset = await anon.get(src);
      t.equal(asset.status, 200, `asset ${src}`);
    }
    const init = await anon.get('/docs/docs-init.js');
    t.match(init.body, /\/openapi\.json/);
    expectError(await anon.get('/docs/package.json'), 404, 'NOT_FOUND', 'unknown docs file');
    expectError(await anon.get('/docs/..%2F..%2Fpackage.json'), 404, 'NOT_FOUND', 'docs path traversal');
  });

  t.test('request ids and logs', async (t) => {
    const given = await anon.get('/healthz', { 'x-request-id': 'trace-abc.123' });
    t.equal(given.headers.get('x-request-id'), 'trace-abc.123', 'incoming id echoed');
    const bad = await anon.get('/healthz', { 'x-request-id': 'bad id <script>' });
    t.not(bad.headers.get('x-request-id'), 'bad id <script>', 'unsafe id replaced');
    t.match(bad.headers.get('x-request-id'), /^[0-9a-f-]{36}$/);
    const long = await anon.get('/healthz', { 'x-request-id': 'x'.repeat(500) });
    t.equal(long.headers.get('x-request-id')!.length, 36, 'over-long id replaced');
    const gen = await anon.get('/healthz');
    t.match(gen.headers.get('x-request-id'), /^[0-9a-f-]{36}$/, 'generated when absent');

    lines.length = 0;
    const secret = 'secret medical content 病历';
    const r = await P1.post('/api/test/echo?x=1', { note: secret }, { 'x-request-id': 'req-echo-1' });
    t.equal(r.status, 200);
    t.equal(r.body.request_id, 'req-echo-1', 'handler sees the request id');
    t.same(r.body.principal, { user_id: 'p1', admin: false });
    t.same(r.body.query, { x: '1' });
    const handlerLine = lines.find((l) => l.marker === 'echo');
    t.match(handlerLine, { req_id: 'req-echo-1', user_id: 'p1' }, 'handler log line carries request id and user id');
    const access = lines.filter((l) => l.msg === 'request' && l.req_id === 'req-echo-1');
    t.equal(access.length, 1, 'one access-log line');
    t.match(access[0], { level: 'info', method: 'POST', route: '/api/test/echo', status: 200, user_id: 'p1' });
    t.type(access[0]!.duration_ms, 'number');
    const all = JSON.stringify(lines);
    t.notOk(all.includes(secret), 'no body in logs');
    t.notOk(all.includes(tok.p1), 'no token in logs');

    t.equal(r.headers.get('x-test-middleware'), '/api/test/echo 200', 'contributed middleware sees route and status');
    const nf = await anon.get('/nowhere');
    t.equal(nf.headers.get('x-test-middleware'), 'undefined 404', 'contributed middleware sees the final error status');
  });

  t.test('authentication', async (t) => {
    const key = new TextEncoder().encode(TEST_JWT_SECRET);
    const expired = await new SignJWT({ scope: 'admin' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('admin')
      .setExpirationTime(Math.floor(Date.now() / 1000) - 3600)
      .sign(key);
    const wrongKey = await new SignJWT({ scope: 'admin' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('admin')
      .sign(new TextEncoder().encode('another-secret-0123456789abcdef'));
    const hs512 = await new SignJWT({ scope: 'admin' }).setProtectedHeader({ alg: 'HS512' }).setSubject('admin').sign(key);
    const none = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'admin', scope: 'admin' })}.`;
    const noSub = await new SignJWT({ scope: 'admin' }).setProtectedHeader({ alg: 'HS256' }).sign(key);
    const cases: Array<[string, Record<string, string>]> = [
      ['no token', {}],
      ['not bearer', { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }],
      ['empty bearer', { authorization: 'Bearer ' }],
      ['garbage', { authorization: 'Bearer not.a.jwt' }],
      ['bad signature', { authorization: `Bearer ${wrongKey}` }],
      ['expired', { authorization: `Bearer ${expired}` }],
      ['alg none', { authorization: `Bearer ${none}` }],
      ['HS512 not configured', { authorization: `Bearer ${hs512}` }],
      ['no sub', { authorization: `Bearer ${noSub}` }],
    ];
    for (const [name, headers] of cases) {
      expectError(await anon.get('/api/user/p1', headers), 401, 'UNAUTHENTICATED', `GET user, ${name}`);
      expectError(await anon.post('/api/user', { user_id: 'zz', username: 'z' }, headers), 401, 'UNAUTHENTICATED', `POST user, ${name}`);
    }
    t.equal((await A.get('/api/user/zz')).status, 404, 'nothing was created by rejected calls');
    t.equal((await anon.get('/api/user/p1')).headers.get('www-authenticate'), 'Bearer', 'WWW-Authenticate on 401');
    const lower = await anon.get('/api/user/p1', { authorization: `bearer ${tok.p1}` });
    t.equal(lower.status, 200, 'scheme is case-insensitive');
    t.equal((await anon.get('/healthz')).status, 200, 'ops endpoints need no token');
  });

  t.test('users', async (t) => {
    const created = await A.post('/api/user', { user_id: 'u-new', username: 'New' });
    t.equal(created.status, 201);
    t.match(created.body, { user_id: 'u-new', username: 'New', user_role: 'PATIENT' });
    t.match(created.body.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expectError(await A.post('/api/user', { user_id: 'u-new', username: 'Again' }), 409, 'CONFLICT', 'duplicate user');
    expectError(await P1.post('/api/user', { user_id: 'u-x', username: 'X' }), 403, 'FORBIDDEN', 'non-admin creates user');
    const unknown = await A.post('/api/user', { user_id: 'u-y', username: 'Y', is_admin: true });
    expectError(unknown, 400, 'VALIDATION_FAILED', 'unknown field');
    t.ok(unknown.body.error.details.some((d: { path: string }) => d.path === 'is_admin'), 'details name the unknown field');
    const bad = await A.post('/api/user', { user_id: 'bad id!', user_role: 'KING' });
    expectError(bad, 400, 'VALIDATION_FAILED', 'bad fields');
    t.same(
      (bad.body.error.details as Array<{ path: string }>).map((d) => d.path).sort(),
      ['user_id', 'user_role', 'username'],
      'every bad field listed',
    );
    expectError(await A.post('/api/user'), 400, 'VALIDATION_FAILED', 'no body');

    const got = await OUT.get('/api/user/u-new');
    t.equal(got.status, 200, 'any authenticated user reads a user');
    t.same(got.body, created.body);
    expectError(await OUT.get('/api/user/nobody'), 404, 'NOT_FOUND', 'unknown user');

    const role = await A.put('/api/user/u-new/role', { user_role: 'DOCTOR' });
    t.equal(role.status, 200);
    t.equal(role.body.user_role, 'DOCTOR');
    expectError(await P1.put('/api/user/u-new/role', { user_role: 'PATIENT' }), 403, 'FORBIDDEN', 'non-admin sets role');
    expectError(await A.put('/api/user/u-new/role', { user_role: 'KING' }), 400, 'VALIDATION_FAILED', 'bad role');
    expectError(await A.put('/api/user/nobody/role', { user_role: 'PATIENT' }), 404, 'NOT_FOUND', 'role of unknown user');
  });

  let gid = '';
  t.test('groups and members', async (t) => {
    const g = await P1.post('/api/group/create', { group_name: '问诊 group', description: 'd', members: ['p2'] });
    t.equal(g.status, 201);
    t.match(g.body, { group_name: '问诊 group', description: 'd', created_by: 'p1' });
    gid = g.body.group_id as string;
    t.ok(gid, 'group id generated');
    const g2 = await A.post('/api/group/create', { group_id: 'g-admin', group_name: 'Admin made', members: ['p1', 'doc1'] });
    t.equal(g2.status, 201);
    t.same(g2.body.description, null);
    expectError(await A.post('/api/group/create', { group_id: 'g-admin', group_name: 'again' }), 409, 'CONFLICT', 'duplicate group id');
    expectError(await P1.post('/api/group/create', { group_name: 'x', members: ['ghost'] }), 400, 'VALIDATION_FAILED', 'unknown member');
    expectError(await P1.post('/api/group/create', { group_name: '' }), 400, 'VALIDATION_FAILED', 'empty name');
    expectError(await P1.post('/api/group/create', { group_name: 'x', owner: 'me' }), 400, 'VALIDATION_FAILED', 'unknown field');
    const unregistered = api(baseUrl, await tokenFor(c, 'not-registered'));
    expectError(await unregistered.post('/api/group/create', { group_name: 'x' }), 403, 'FORBIDDEN', 'unregistered caller creates group');

    t.equal((await P1.get(`/api/group/${gid}`)).status, 200, 'creator reads group');
    t.equal((await P2.get(`/api/group/${gid}`)).status, 200, 'member reads group');
    t.equal((await A.get(`/api/group/${gid}`)).status, 200, 'admin reads group');
    expectError(await OUT.get(`/api/group/${gid}`), 403, 'FORBIDDEN', 'non-member reads group');
    expectError(await A.get('/api/group/nope'), 404, 'NOT_FOUND', 'unknown group');

    const mine = await P1.get('/api/user/p1/groups');
    t.equal(mine.status, 200);
    t.same((mine.body.groups as Array<{ group_id: string }>).map((x) => x.group_id).sort(), [gid, 'g-admin'].sort());
    t.equal((await A.get('/api/user/p2/groups')).status, 200, 'admin lists any user groups');
    expectError(await P2.get('/api/user/p1/groups'), 403, 'FORBIDDEN', "other user's groups");
    expectError(await A.get('/api/user/nobody/groups'), 404, 'NOT_FOUND', 'groups of unknown user');

    // add members: the creator, a DOCTOR member, admin; not a plain member
    const byCreator = await P1.post(`/api/group/${gid}/members`, { user_id: 'doc1' });
    t.equal(byCreator.status, 201, 'creator adds a member');
    t.match(byCreator.body, { group_id: gid, user_id: 'doc1', user_role: 'DOCTOR' });
    const byDoctor = await DOC.post(`/api/group/${gid}/members`, { user_id: 'p3', user_role: 'AI_ASSISTANT' });
    t.equal(byDoctor.status, 201, 'doctor member adds a member');
    t.equal(byDoctor.body.user_role, 'AI_ASSISTANT', 'role in group given explicitly');
    expectError(await P2.post(`/api/group/${gid}/members`, { user_id: 'out1' }), 403, 'FORBIDDEN', 'patient member adds');
    expectError(await OUT.post(`/api/group/${gid}/members`, { user_id: 'out1' }), 403, 'FORBIDDEN', 'non-member adds');
    expectError(await P1.post(`/api/group/${gid}/members`, { user_id: 'p2' }), 409, 'CONFLICT', 'already a member');
    expectError(await P1.post(`/api/group/${gid}/members`, { user_id: 'ghost' }), 404, 'NOT_FOUND', 'unknown user added');
    expectError(await A.post('/api/group/nope/members', { user_id: 'p2' }), 404, 'NOT_FOUND', 'add to unknown group');
    expectError(await P1.post(`/api/group/${gid}/members`, { user_id: 'p2', extra: 1 }), 400, 'VALIDATION_FAILED', 'add: unknown field');
    t.equal((await A.post(`/api/group/${gid}/members`, { user_id: 'out1' })).status, 201, 'admin adds a member');

    const members = await P2.get(`/api/group/${gid}/members`);
    t.equal(members.status, 200, 'member lists members');
    t.same((members.body.members as Array<{ user_id: string }>).map((m) => m.user_id).sort(), ['doc1', 'out1', 'p1', 'p2', 'p3']);
    t.equal((await A.get(`/api/group/${gid}/members`)).status, 200, 'admin lists members');
    expectError(await api(baseUrl, await tokenFor(c, 'u-new')).get(`/api/group/${gid}/members`), 403, 'FORBIDDEN', 'non-member lists');

    // remove: the user itself (leave), a patient removing another (no), the creator, a doctor, admin
    expectError(await P2.del(`/api/group/${gid}/members/out1`), 403, 'FORBIDDEN', 'patient removes another');
    const leave = await OUT.del(`/api/group/${gid}/members/out1`);
    t.equal(leave.status, 204, 'leave');
    t.equal(leave.body, '', '204 has no body');
    expectError(await OUT.get(`/api/group/${gid}`), 403, 'FORBIDDEN', 'left member loses access');
    t.equal((await DOC.del(`/api/group/${gid}/members/p3`)).status, 204, 'doctor removes');
    t.equal((await A.post(`/api/group/${gid}/members`, { user_id: 'p3' })).status, 201);
    t.equal((await P1.del(`/api/group/${gid}/members/p3`)).status, 204, 'creator removes');
    t.equal((await A.post(`/api/group/${gid}/members`, { user_id: 'p3' })).status, 201);
    t.equal((await A.del(`/api/group/${gid}/members/p3`)).status, 204, 'admin removes');
    expectError(await A.del(`/api/group/${gid}/members/p3`), 404, 'NOT_FOUND', 'remove non-member');
    expectError(await A.del('/api/group/nope/members/p1'), 404, 'NOT_FOUND', 'remove from unknown group');
  });

  t.test('messages', async (t) => {
    const tricky = [
      '你好，医生！我头疼三天了。',
      'emoji 😀👍🏽🧑‍⚕️ and combining é',
      `quotes " ' \` and backslash \\ and \u2028 line sep`,
      '<script>alert("x")</script> & &amp; <b>bold</b>',
      "'; DROP TABLE messages; -- SELECT * FROM users WHERE '1'='1",
      '  leading and trailing spaces kept  \n\ttabs\r\n',
    ];
    const sent: Array<{ message_id: string; seq: number }> = [];
    for (const [i, content] of tricky.entries()) {
      const r = await P1.post('/api/message/send', { group_id: gid, msg_content: content, client_msg_id: `c-${i}` });
      t.equal(r.status, 201, `send ${i}`);
      t.equal(r.body.msg_content, content, `content ${i} round-trips on send`);
      t.equal(r.body.seq, i + 1, 'seq from 1, +1 each');
      sent.push(r.body);
    }
    // raw bytes: no HTML or unicode escaping on the wire
    const raw = await fetch(`${baseUrl}/api/message/${sent[3]!.message_id}`, { headers: { authorization: `Bearer ${tok.p2}` } });
    const rawText = await raw.text();
    t.ok(rawText.includes('"<script>alert(\\"x\\")</script> & &amp; <b>bold</b>"'), 'no HTML escaping');
    const raw0 = await (await fetch(`${baseUrl}/api/message/${sent[0]!.message_id}`, { headers: { authorization: `Bearer ${tok.p2}` } })).text();
    t.ok(raw0.includes('你好，医生！'), 'UTF-8, not \\u escapes');

    const page = await P2.get(`/api/message/list?group_id=${encodeURIComponent(gid)}`);
    t.equal(page.status, 200);
    t.same(
      (page.body.messages as Array<{ msg_content: string }>).map((m) => m.msg_content),
      tricky,
      'every content round-trips byte-for-byte through list',
    );
    t.equal(page.body.has_more, false);
    t.equal(page.headers.get('content-type'), 'application/json; charset=utf-8', 'the pre-serialised page is sent as JSON');

    // idempotent send: 201 then 200 with the original
    const first = await P2.post('/api/message/send', { group_id: gid, msg_content: 'once', client_msg_id: 'idem-1' });
    t.equal(first.status, 201);
    const again = await P2.post('/api/message/send', { group_id: gid, msg_content: 'once (retry)', client_msg_id: 'idem-1' });
    t.equal(again.status, 200, 'replay answers 200');
    t.same(again.body, first.body, 'replay returns the original message');
    const otherSender = await P1.post('/api/message/send', { group_id: gid, msg_content: 'mine', client_msg_id: 'idem-1' });
    t.equal(otherSender.status, 201, 'same client_msg_id from another sender is a new message');
    const noClientId = await P1.post('/api/message/send', { group_id: gid, msg_content: 'no id' });
    t.equal(noClientId.status, 201);
    t.equal(noClientId.body.client_msg_id, null);
    t.equal(noClientId.body.msg_type, 'TEXT');
    const image = await P1.post('/api/message/send', { group_id: gid, msg_type: 'IMAGE', msg_content: 'https://img.example/x.png' });
    t.equal(image.status, 201);
    t.equal(image.body.msg_type, 'IMAGE');

    // access rules
    expectError(await OUT.post('/api/message/send', { group_id: gid, msg_content: 'hi' }), 403, 'FORBIDDEN', 'non-member sends');
    expectError(await P1.post('/api/message/send', { group_id: 'nope', msg_content: 'hi' }), 404, 'NOT_FOUND', 'send to unknown group');
    expectError(
      await P1.post('/api/message/send', { group_id: gid, msg_content: 'as p2', from_user_id: 'p2' }),
      403,
      'FORBIDDEN',
      'non-admin sends as another user',
    );
    const asAdmin = await A.post('/api/message/send', { group_id: gid, msg_content: 'on behalf', from_user_id: 'doc1' });
    t.equal(asAdmin.status, 201, 'admin sends as a member');
    t.equal(asAdmin.body.from_user_id, 'doc1');
    expectError(
      await A.post('/api/message/send', { group_id: gid, msg_content: 'on behalf', from_user_id: 'out1' }),
      403,
      'FORBIDDEN',
      'admin sends as a non-member',
    );

    // validation
    expectError(await P1.post('/api/message/send', { group_id: gid, msg_type: 'AI_REPLY', msg_content: 'x' }), 400, 'VALIDATION_FAILED', 'AI_REPLY');
    expectError(await P1.post('/api/message/send', { group_id: gid, msg_content: '   \n ' }), 400, 'VALIDATION_FAILED', 'blank content');
    expectError(await P1.post('/api/message/send', { group_id: gid, msg_content: 'x'.repeat(8001) }), 400, 'VALIDATION_FAILED', 'content over 8000');
    t.equal((await P1.post('/api/message/send', { group_id: gid, msg_content: '字'.repeat(8000) })).status, 201, '8000 characters accepted');
    expectError(await P1.post('/api/message/send', { group_id: gid, msg_content: 'x', seq: 99 }), 400, 'VALIDATION_FAILED', 'unknown field');
    expectError(await P1.post('/api/message/send', { msg_content: 'x' }), 400, 'VALIDATION_FAILED', 'no group_id');

    // get
    const one = await P2.get(`/api/message/${sent[1]!.message_id}`);
    t.equal(one.status, 200);
    t.equal(one.body.msg_content, tricky[1]);
    t.equal((await A.get(`/api/message/${sent[1]!.message_id}`)).status, 200, 'admin reads a message');
    expectError(await OUT.get(`/api/message/${sent[1]!.message_id}`), 403, 'FORBIDDEN', 'non-member reads a message');
    expectError(await P1.get('/api/message/00000000-0000-0000-0000-000000000000'), 404, 'NOT_FOUND', 'unknown message');

    // list access
    expectError(await OUT.get(`/api/message/list?group_id=${gid}`), 403, 'FORBIDDEN', 'non-member lists');
    t.equal((await A.get(`/api/message/list?group_id=${gid}`)).status, 200, 'admin lists');
    expectError(await A.get('/api/message/list?group_id=nope'), 404, 'NOT_FOUND', 'list unknown group');
    expectError(await P1.get('/api/message/list'), 400, 'VALIDATION_FAILED', 'list without group_id');
    expectError(await P1.get(`/api/message/list?group_id=${gid}&limit=201`), 400, 'VALIDATION_FAILED', 'limit over 200');
    expectError(await P1.get(`/api/message/list?group_id=${gid}&limit=0`), 400, 'VALIDATION_FAILED', 'limit 0');
    expectError(await P1.get(`/api/message/list?group_id=${gid}&after_seq=x`), 400, 'VALIDATION_FAILED', 'bad after_seq');
    expectError(await P1.get(`/api/message/list?group_id=${gid}&sort=desc`), 400, 'VALIDATION_FAILED', 'unknown query field');
  });

  t.test('paging', async (t) => {
    const g = await A.post('/api/group/create', { group_id: 'g-page', group_name: 'paging', members: ['p1'] });
    t.equal(g.status, 201);
    for (let i = 1; i <= 7; i++) {
      t.equal((await P1.post('/api/message/send', { group_id: 'g-page', msg_content: `m${i}` })).status, 201);
    }
    const seqs = (b: { messages: Array<{ seq: number }> }): number[] => b.messages.map((m) => m.seq);
    const newest = await P1.get('/api/message/list?group_id=g-page&limit=3');
    t.same(seqs(newest.body), [5, 6, 7], 'without cursor: the newest, ascending');
    t.equal(newest.body.has_more, true);
    const older = await P1.get('/api/message/list?group_id=g-page&limit=3&before_seq=5');
    t.same(seqs(older.body), [2, 3, 4]);
    t.equal(older.body.has_more, true);
    const oldest = await P1.get('/api/message/list?group_id=g-page&limit=3&before_seq=2');
    t.same(seqs(oldest.body), [1]);
    t.equal(oldest.body.has_more, false);
    const fwd = await P1.get('/api/message/list?group_id=g-page&limit=3&after_seq=0');
    t.same(seqs(fwd.body), [1, 2, 3]);
    t.equal(fwd.body.has_more, true);
    const fwd2 = await P1.get('/api/message/list?group_id=g-page&limit=3&after_seq=6');
    t.same(seqs(fwd2.body), [7]);
    t.equal(fwd2.body.has_more, false);
    const all = await P1.get('/api/message/list?group_id=g-page');
    t.same(seqs(all.body), [1, 2, 3, 4, 5, 6, 7], 'default limit 50');
    t.equal(all.body.has_more, false);
  });

  t.test('transport errors', async (t) => {
    expectError(await anon.get('/nope'), 404, 'NOT_FOUND', 'unknown route');
    expectError(await P1.get('/api/nope'), 404, 'NOT_FOUND', 'unknown /api route');
    expectError(await anon.post('/nope', { a: 1 }), 404, 'NOT_FOUND', 'unknown route, POST');
    const wrong = await P1.del('/api/message/send');
    expectError(wrong, 405, 'NOT_FOUND', 'wrong method');
    t.match(wrong.headers.get('allow'), /POST/);
    expectError(await P1.put('/healthz', {}), 405, 'NOT_FOUND', 'wrong method on ops route');

    expectError(await P1.post('/api/message/send', '{"group_id": '), 400, 'INVALID_JSON', 'truncated JSON');
    expectError(await P1.post('/api/message/send', "{'a': 1}"), 400, 'INVALID_JSON', 'single quotes');
    const notJson = await P1.post('/api/message/send', 'group_id=x', { 'content-type': 'application/x-www-form-urlencoded' });
    expectError(notJson, 400, 'VALIDATION_FAILED', 'form body');
    t.equal(notJson.body.error.details[0].path, 'content-type');
    expectError(await P1.post('/api/message/send', 'hello', { 'content-type': 'text/plain' }), 400, 'VALIDATION_FAILED', 'text body');
    expectError(await P1.post('/api/message/send', '[1,2]'), 400, 'VALIDATION_FAILED', 'JSON array body');
    expectError(await P1.post('/api/message/send'), 400, 'VALIDATION_FAILED', 'send without body');
    expectError(await P1.post('/api/group/create'), 400, 'VALIDATION_FAILED', 'create group without body');
    expectError(await A.put('/api/user/p1/role'), 400, 'VALIDATION_FAILED', 'set role without body');
    expectError(await P1.post('/api/message/send', ''), 400, 'VALIDATION_FAILED', 'empty JSON body');
    expectError(await P1.post('/api/message/send', 'null'), 400, 'VALIDATION_FAILED', 'JSON null body');
    const badUtf8 = await rawRequest(baseUrl, {
      method: 'POST',
      path: '/api/message/send',
      headers: { authorization: `Bearer ${tok.p1}`, 'content-type': 'application/json' },
      chunks: [Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])],
    });
    t.equal(badUtf8.status, 400);
    t.equal(JSON.parse(badUtf8.body).error.code, 'INVALID_JSON', 'invalid UTF-8 is INVALID_JSON');

    // 413: declared length over the limit (answered before reading), and a streamed body passing it
    const big = JSON.stringify({ group_id: gid, msg_content: 'x'.repeat(70_000) });
    const declared = await rawRequest(baseUrl, {
      method: 'POST',
      path: '/api/message/send',
      headers: { authorization: `Bearer ${tok.p1}`, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(big)) },
      chunks: [Buffer.from(big)],
    });
    t.equal(declared.status, 413, 'declared length over limit');
    t.equal(JSON.parse(declared.body).error.code, 'PAYLOAD_TOO_LARGE');
    t.equal(declared.headers.connection, 'close', 'connection closed: the rest is not read');
    const chunks = Array.from({ length: 400 }, () => Buffer.alloc(1024, 0x20));
    const streamed = await rawRequest(baseUrl, {
      method: 'POST',
      path: '/api/message/send',
      headers: { authorization: `Bearer ${tok.p1}`, 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
      chunks,
    });
    t.equal(streamed.status, 413, 'chunked body over limit');
    t.equal(JSON.parse(streamed.body).error.code, 'PAYLOAD_TOO_LARGE');
    const under = await P1.post('/api/message/send', { group_id: gid, msg_content: 'y'.repeat(7000) });
    t.equal(under.status, 201, 'a body under the limit passes');
    expectError(await anon.post('/api/message/send', big), 401, 'UNAUTHENTICATED', 'auth is checked before the body is read');

    // unknown error -> 500 INTERNAL, logged with the request id, nothing leaked
    lines.length = 0;
    const boom = await anon.get('/test/boom', { 'x-request-id': 'boom-1' });
    expectError(boom, 500, 'INTERNAL', 'unknown error');
    t.notMatch(JSON.stringify(boom.body), /SELECT|at .*\.js|stack/i, 'no SQL or stack in the body');
    const errLine = lines.find((l) => l.level === 'error' && l.req_id === 'boom-1');
    t.ok(errLine, 'error logged with the request id');
  });

  t.test('storage unavailable: 503, readyz 503, then recovery', async (t) => {
    storageState.down = true;
    t.teardown(() => {
      storageState.down = false;
    });
    expectError(await P1.get('/api/user/p1'), 503, 'UNAVAILABLE', 'read while down');
    expectError(await P1.post('/api/message/send', { group_id: gid, msg_content: 'lost?', client_msg_id: 'down-1' }), 503, 'UNAVAILABLE', 'send while down');
    const ready = await anon.get('/readyz');
    expectError(ready, 503, 'UNAVAILABLE', 'readyz while down');
    t.same(ready.body.error.details.map((d: { path: string }) => d.path), ['storage'], 'failing check named');
    t.equal((await anon.get('/healthz')).status, 200, 'healthz stays 200');
    storageState.down = false;
    t.equal((await anon.get('/readyz')).status, 200, 'ready again');
    const r = await P1.post('/api/message/send', { group_id: gid, msg_content: 'back', client_msg_id: 'down-1' });
    t.equal(r.status, 201, 'the send that failed did not take effect');
  });
});

t.test('readyz: failing and hanging checks are named, never hang', async (t) => {
  const checks = definePlugin({
    name: 'checks',
    register({ contributions }) {
      contributions.add<ReadinessCheck>(READINESS_CHECKS, { name: 'ok-broker', check: async () => undefined });
      contributions.add<ReadinessCheck>(READINESS_CHECKS, {
        name: 'down-broker',
        check: async () => {
          throw new Error('ECONNREFUSED 10.0.0.1:5672 password=hunter2');
        },
      });
      contributions.add<ReadinessCheck>(READINESS_CHECKS, { name: 'hung-broker', check: () => new Promise<void>(() => undefined) });
    },
  });
  const { baseUrl } = await bootHttp(t, { extraUnits: [checks], config: { http: { readinessTimeoutMs: 200 } } });
  const r = await api(baseUrl).get('/readyz');
  t.equal(r.status, 503);
  t.equal(r.body.error.code, 'UNAVAILABLE');
  t.same(r.body.error.details.map((d: { path: string }) => d.path).sort(), ['down-broker', 'hung-broker']);
  t.notMatch(JSON.stringify(r.body), /hunter2|10\.0\.0\.1/, 'check errors are not leaked');
});

t.test('rate limit: 429 with Retry-After', async (t) => {
  const { booted, baseUrl } = await bootHttp(t, { config: { chat: { rateLimit: { points: 2, durationSeconds: 60 } } } });
  const A = api(baseUrl, await tokenFor(booted.c, 'admin', true));
  t.equal((await A.post('/api/user', { user_id: 'r1', username: 'r1' })).status, 201);
  const R = api(baseUrl, await tokenFor(booted.c, 'r1'));
  const g = await R.post('/api/group/create', { group_name: 'rl' });
  t.equal(g.status, 201);
  const send = (i: number) => R.post('/api/message/send', { group_id: g.body.group_id, msg_content: `m${i}` });
  t.equal((await send(1)).status, 201);
  t.equal((await send(2)).status, 201);
  const limited = await send(3);
  t.equal(limited.status, 429);
  t.equal(limited.body.error.code, 'RATE_LIMITED');
  const retry = Number(limited.headers.get('retry-after'));
  t.ok(Number.isInteger(retry) && retry >= 1 && retry <= 60, `Retry-After is whole seconds (${retry})`);
  const list = await R.get(`/api/message/list?group_id=${g.body.group_id}`);
  t.equal(list.body.messages.length, 2, 'the limited send stored nothing');
});

t.test('routing: exact paths are looked up, and answer as the router would', async (t) => {
  const routes = definePlugin({
    name: 'routing-test',
    register({ contributions }) {
      const echo = (name: string): RouteDefinition['handler'] => async (req) => ({ status: 200, body: { route: name, params: req.params } });
      // a pattern registered first takes a path that a later exact route also names
      contributions.add<RouteDefinition>(HTTP_ROUTES, { method: 'GET', path: '/rt/:name', auth: 'none', summary: 'pattern', handler: echo('pattern') });
      contributions.add<RouteDefinition>(HTTP_ROUTES, { method: 'GET', path: '/rt/fixed', auth: 'none', summary: 'shadowed', handler: echo('fixed') });
      contributions.add<RouteDefinition>(HTTP_ROUTES, { method: 'GET', path: '/rt2/fixed', auth: 'none', summary: 'exact', handler: echo('exact') });
      contributions.add<RouteDefinition>(HTTP_ROUTES, { method: 'GET', path: '/rt2/:name', auth: 'none', summary: 'pattern after', handler: echo('pattern2') });
    },
  });
  const { booted, baseUrl } = await bootHttp(t, { extraUnits: [routes] });
  const anon = api(baseUrl);
  t.same((await anon.get('/rt/fixed')).body, { route: 'pattern', params: { name: 'fixed' } }, 'the earlier pattern still wins');
  t.same((await anon.get('/rt2/fixed')).body, { route: 'exact', params: {} }, 'exact path');
  t.same((await anon.get('/rt2/other')).body, { route: 'pattern2', params: { name: 'other' } }, 'other paths go to the router');
  t.same((await anon.get('/RT2/FIXED')).body, { route: 'exact', params: {} }, 'paths match in any case');
  t.same((await anon.get('/rt2/fixed/')).body, { route: 'exact', params: {} }, 'a trailing slash matches');

  const head = await rawRequest(baseUrl, { method: 'HEAD', path: '/healthz' });
  t.equal(head.status, 200, 'HEAD answered by the GET route');
  t.equal(head.body, '', 'HEAD has no body');
  const options = await rawRequest(baseUrl, { method: 'OPTIONS', path: '/api/message/send' });
  t.equal(options.status, 200, 'OPTIONS answered by the router');
  t.match(options.headers.allow, /POST/);

  const A = api(baseUrl, await tokenFor(booted.c, 'admin', true));
  t.equal((await A.post('/api/user/', { user_id: 'rt1', username: 'rt1' })).status, 201, 'core route with a trailing slash');
  const wrong = await A.put('/api/message/send', {});
  t.equal(wrong.status, 405, 'another method on an exact path');
  t.match(wrong.headers.get('allow'), /POST/);
});

t.test('options are validated', async (t) => {
  await t.rejects(bootHttp(t, { config: { http: { port: 'eighty' } } }), /http: port/);
  await t.rejects(bootHttp(t, { config: { http: { bodyLimit: 0 } } }), /http: bodyLimit/);
  await t.rejects(bootHttp(t, { config: { http: { nope: 1 } } }), /http: nope/);
  const first = await bootHttp(t);
  const port = first.booted.c.httpAddress.port;
  t.ok(port > 0, 'port 0 binds an ephemeral port, published in httpAddress');
  await t.rejects(bootHttp(t, { config: { http: { port } } }), /http: start failed: cannot listen on 127\.0\.0\.1:\d+/, 'port in use fails start');
  t.equal((await api(first.baseUrl).get('/healthz')).status, 200, 'the first server still answers');
});

t.test('graceful stop: in-flight request completes, new connections refused, idempotent', async (t) => {
  const gate: { entered?: () => void; release?: () => void } = {};
  const slowRoute = definePlugin({
    name: 'slow-route',
    register({ contributions }) {
      contributions.add<RouteDefinition>(HTTP_ROUTES, {
        method: 'GET',
        path: '/test/slow',
        auth: 'none',
        summary: 'waits until released',
        handler: async () => {
          await new Promise<void>((resolve) => {
            gate.release = resolve;
            gate.entered?.();
          });
          return { status: 200, body: { done: true } };
        },
      });
    },
  });
  const { booted, baseUrl } = await bootHttp(t, { extraUnits: [slowRoute], config: { http: { shutdownGraceMs: 60_000 } } });
  // an idle keep-alive connection must not hold up stop
  t.equal((await rawRequest(baseUrl, { method: 'GET', path: '/healthz' })).status, 200);
  t.equal((await api(baseUrl).get('/healthz')).status, 200);

  const entered = new Promise<void>((resolve) => (gate.entered = resolve));
  const inFlight = rawRequest(baseUrl, { method: 'GET', path: '/test/slow' });
  await entered;
  const stopped = booted.kernel.stop();
  let stopDone = false;
  void stopped.then(() => (stopDone = true));
  t.equal(booted.kernel.stop(), stopped, 'concurrent stop shares one run');
  // wait until the server stopped listening
  for (let i = 0; i < 2000 && booted.c.httpServer.listening; i++) await new Promise((r) => setTimeout(r, 5));
  t.notOk(booted.c.httpServer.listening, 'stopped accepting');
  await t.rejects(rawRequest(baseUrl, { method: 'GET', path: '/healthz' }), { code: 'ECONNREFUSED' }, 'new connections refused');
  t.notOk(stopDone, 'stop waits for the in-flight request');
  gate.release!();
  const res = await inFlight;
  t.equal(res.status, 200, 'in-flight request completed');
  t.same(JSON.parse(res.body), { done: true });
  await stopped;
  t.equal(booted.kernel.state, 'stopped');
  await booted.kernel.stop();
});
