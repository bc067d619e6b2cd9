import t from 'tap';
import { readFile } from 'node:fs/promises';
import { api, bootHttp, tokenFor } from '../helpers/http.js';
import { bootKernel } from '../helpers/boot.js';

const PUBLIC = new URL('../../../plugins/console/public/', import.meta.url);

t.test('static files: page, assets, content types, caching, no traversal, hidden from OpenAPI', async (t) => {
  const { baseUrl } = await bootHttp(t, { plugins: ['auth', 'users', 'groups', 'chat', 'http', 'console'] });

  const page = await fetch(`${baseUrl}/console`);
  t.equal(page.status, 200);
  t.match(page.headers.get('content-type'), /^text\/html; charset=utf-8/);
  t.equal(page.headers.get('cache-control'), 'no-cache');
  t.match(page.headers.get('content-security-policy'), /script-src 'self'/);
  t.equal(page.headers.get('x-content-type-options'), 'nosniff');
  const html = await page.text();
  t.equal(html, await readFile(new URL('index.html', PUBLIC), 'utf8'), 'serves the source file as it is');
  t.match(html, '<script type="module" src="/console/app.js">');

  const slash = await fetch(`${baseUrl}/console/`);
  t.equal(slash.status, 200, '/console/ is the page too');
  t.match(slash.headers.get('content-type'), /text\/html/);
  await slash.arrayBuffer();

  for (const [file, type] of [
    ['app.js', /^text\/javascript; charset=utf-8/],
    ['api.js', /^text\/javascript/],
    ['live.js', /^text\/javascript/],
    ['style.css', /^text\/css; charset=utf-8/],
    ['index.html', /^text\/html/],
  ] as const) {
    const res = await fetch(`${baseUrl}/console/${file}`);
    t.equal(res.status, 200, file);
    t.match(res.headers.get('content-type'), type, `${file} content type`);
    t.equal(await res.text(), await readFile(new URL(file, PUBLIC), 'utf8'), `${file} body`);
    const etag = res.headers.get('etag');
    t.ok(etag, `${file} has an ETag`);
    const again = await fetch(`${baseUrl}/console/${file}`, { headers: { 'if-none-match': etag! } });
    t.equal(again.status, 304, `${file} revalidates with 304`);
    t.equal(await again.text(), '');
  }

  for (const bad of [
    '/console/..%2Fpackage.json',
    '/console/..%2F..%2Fpackage.json',
    '/console/%2e%2e/%2e%2e/package.json',
    '/console/../package.json',
    '/console/..%5Cconsole.plugin.ts',
    '/console/%2Fetc%2Fpasswd',
    '/console/app.js%00.css',
    '/console/nope.js',
    '/console/.hidden',
    '/console/public/app.js',
  ]) {
    const res = await fetch(`${baseUrl}${bad}`);
    t.equal(res.status, 404, `${bad} is 404`);
    const body = await res.text();
    t.notMatch(body, /"name":\s*"im-service"|root:/, `${bad} leaks nothing`);
    if (res.headers.get('content-type')?.includes('json')) t.equal(JSON.parse(body).error.code, 'NOT_FOUND');
  }

  const cfg = await api(baseUrl).get('/console/config.json');
  t.equal(cfg.status, 200);
  t.same(cfg.body, { dev_tokens: false });

  const dev = await api(baseUrl).post('/console/dev-token', { user_id: 'p1' });
  t.not(dev.status, 201, 'no dev tokens unless enabled');
  t.not(dev.status, 200);

  const doc = await api(baseUrl).get('/openapi.json');
  t.equal(doc.status, 200);
  t.notOk(Object.keys(doc.body.paths).some((p) => p.startsWith('/console')), 'console routes are not in OpenAPI');
});

t.test('dev tokens: signed by authService when enabled, validated, refused under NODE_ENV=production', async (t) => {
  const { baseUrl, booted } = await bootHttp(t, {
    plugins: ['auth', 'users', 'groups', 'chat', 'http', 'console'],
    config: { console: { devTokens: true } },
  });
  const c = booted.c;
  t.same((await api(baseUrl).get('/console/config.json')).body, { dev_tokens: true });

  const res = await api(baseUrl).post('/console/dev-token', { user_id: 'doc-1' });
  t.equal(res.status, 201);
  t.equal(res.body.user_id, 'doc-1');
  t.equal(res.body.admin, false);
  t.same(await c.authService.verify(res.body.token), { user_id: 'doc-1', admin: false }, 'a real token of the configured secret');

  const adm = await api(baseUrl).post('/console/dev-token', { user_id: 'ops', admin: true });
  t.equal(adm.status, 201);
  t.same(await c.authService.verify(adm.body.token), { user_id: 'ops', admin: true });
  const created = await api(baseUrl, adm.body.token).post('/api/user', { user_id: 'p-1', username: 'Pat' });
  t.equal(created.status, 201, 'the admin dev token works on the API');

  const bad = await api(baseUrl).post('/console/dev-token', { user_id: '../x', extra: 1 });
  t.equal(bad.status, 400);
  t.equal(bad.body.error.code, 'VALIDATION_FAILED');
  t.ok(bad.body.error.details.some((d: { path: string }) => d.path === 'user_id'));
  t.ok(bad.body.error.details.some((d: { path: string }) => d.path === 'extra'));

  const badOpt = await bootKernel(t, { plugins: ['auth', 'users', 'groups', 'chat', 'http', 'console'], config: { console: { devTokens: 'yes' } }, noStart: true });
  await t.rejects(badOpt.kernel.start(), /console: devTokens/, 'a bad option names the setting');

  const saved = process.env.NODE_ENV;
  process.env.NODE_ENV = 'production';
  t.teardown(() => {
    if (saved === undefined) delete process.env.NODE_ENV;
    else process.env.NODE_ENV = saved;
  });
  const prod = await bootKernel(t, {
    plugins: ['auth', 'users', 'groups', 'chat', 'http', 'console'],
    config: { http: { port: 0, host: '127.0.0.1' }, console: { devTokens: true } },
    noStart: true,
  });
  await t.rejects(prod.kernel.start(), /console: devTokens: must not be enabled when NODE_ENV=production/);
  const prodOff = await bootKernel(t, {
    plugins: ['auth', 'users', 'groups', 'chat', 'http', 'console'],
    config: { http: { port: 0, host: '127.0.0.1' } },
  });
  t.equal(prodOff.kernel.state, 'started', 'production without devTokens starts');
  void tokenFor;
});
