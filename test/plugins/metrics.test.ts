import t, { type Test } from 'tap';
import { Counter } from 'prom-client';
import { as, bootKernel, seedGroup, type Booted } from '../helpers/boot.js';
import { metricRegistries } from '../../lib/metrics.js';

const CORE = ['auth', 'users', 'groups', 'chat'];

interface Http {
  base: string;
  get(path: string, headers?: Record<string, string>): Promise<{ status: number; text: string; headers: Headers }>;
  post(path: string, body: unknown, token: string): Promise<{ status: number; text: string }>;
}

async function bootHttp(t: Test, metrics: Record<string, unknown> = {}, http: Record<string, unknown> = {}): Promise<Booted & Http> {
  const booted = await bootKernel(t, {
    plugins: [...CORE, 'metrics', 'http'],
    config: { http: { port: 0, host: '127.0.0.1', ...http }, metrics },
  });
  const base = `http://127.0.0.1:${booted.c.httpAddress.port}`;
  return {
    ...booted,
    base,
    async get(path, headers = {}) {
      const r = await fetch(base + path, { headers });
      return { status: r.status, text: await r.text(), headers: r.headers };
    },
    async post(path, body, token) {
      const r = await fetch(base + path, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
      });
      return { status: r.status, text: await r.text() };
    },
  };
}

/** Polls /metrics until `pred` holds (bus subscribers run asynchronously). */
async function metricsWhen(h: Http, pred: (text: string) => boolean, timeoutMs = 10_000): Promise<string> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = await h.get('/metrics');
    if (r.status === 200 && pred(r.text)) return r.text;
    if (Date.now() > until) return r.text;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

function sampleValue(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name} `) && Object.keys(labels).length === 0) return Number(line.slice(name.length + 1));
    if (!line.startsWith(`${name}{`)) continue;
    const close = line.indexOf('} ');
    const got = Object.fromEntries([...line.slice(name.length + 1, close).matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(line.slice(close + 2));
  }
  return undefined;
}

t.test('/metrics: http histogram by route pattern, messages by transport, default process metrics', async (t) => {
  const h = await bootHttp(t);
  await seedGroup(h.c, 'g1', ['p1', 'doc1']);
  const token = await h.c.authService.sign('p1');
  for (const content of ['hello', 'again']) {
    const r = await h.post('/api/message/send', { group_id: 'g1', msg_content: content }, token);
    t.equal(r.status, 201, r.text);
  }
  t.equal((await h.get('/api/user/p1', { authorization: `Bearer ${token}` })).status, 200);
  t.equal((await h.get('/api/user/doc1', { authorization: `Bearer ${token}` })).status, 200);
  t.equal((await h.get('/no/such/path/xyz')).status, 404);
  t.equal((await h.get('/api/user/p1')).status, 401, 'no token');
  // a message stored through another transport (the service is transport-neutral)
  await h.c.chatService.send(as('doc1'), { group_id: 'g1', msg_content: 'from a socket' }, { transport: 'ws' });

  const text = await metricsWhen(h, (s) => sampleValue(s, 'im_messages_stored_total', { transport: 'ws' }) === 1);
  const r = await h.get('/metrics');
  t.equal(r.status, 200);
  t.match(r.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);

  t.equal(sampleValue(text, 'http_request_duration_seconds_count', { method: 'POST', route: '/api/message/send', status: '201' }), 2);
  t.equal(
    sampleValue(text, 'http_request_duration_seconds_count', { method: 'GET', route: '/api/user/:user_id', status: '200' }),
    2,
    'labelled by pattern: two users, one series',
  );
  t.equal(sampleValue(text, 'http_request_duration_seconds_count', { method: 'GET', route: '/api/user/:user_id', status: '401' }), 1);
  t.equal(sampleValue(text, 'http_request_duration_seconds_count', { method: 'GET', route: 'unmatched', status: '404' }), 1);
  t.ok(sampleValue(text, 'http_request_duration_seconds_bucket', { route: '/api/message/send', le: '+Inf' }), 'buckets');
  t.notMatch(text, '/no/such/path', 'raw paths never become labels');
  t.notMatch(text, 'route="/api/user/p1"');

  t.equal(sampleValue(text, 'im_messages_stored_total', { transport: 'http' }), 2);
  t.equal(sampleValue(text, 'im_messages_stored_total', { transport: 'ws' }), 1);

  for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds']) {
    t.match(text, new RegExp(`^${name} `, 'm'), `default metric ${name}`);
  }

  // the endpoint is in the OpenAPI document (API.md §4 lists it)
  const doc = await h.get('/openapi.json');
  if (doc.status === 200) t.ok((JSON.parse(doc.text) as { paths: Record<string, unknown> }).paths['/metrics'], '/metrics documented');
});

t.test('other plugins create metrics in the kernel registry through metricRegistries()', async (t) => {
  const h = await bootHttp(t);
  const regs = metricRegistries(h.kernel.container);
  t.equal(regs.length, 1);
  t.equal(regs[0], h.c.metricsRegistry);
  const c = new Counter({ name: 'im_test_things_total', help: 'things', registers: regs });
  c.inc(3);
  t.equal(sampleValue((await h.get('/metrics')).text, 'im_test_things_total', {}), 3);

  const without = await bootKernel(t, { plugins: CORE });
  t.same(metricRegistries(without.kernel.container), [], 'metrics disabled: no registry, nothing to export');
});

t.test('two kernels in one process keep separate registries', async (t) => {
  const a = await bootHttp(t);
  const b = await bootHttp(t);
  t.not(a.c.metricsRegistry, b.c.metricsRegistry);
  await seedGroup(a.c, 'ga', ['pa']);
  await a.c.chatService.send(as('pa'), { group_id: 'ga', msg_content: 'only in a' }, { transport: 'http' });
  const ta = await metricsWhen(a, (s) => sampleValue(s, 'im_messages_stored_total', { transport: 'http' }) === 1);
  t.equal(sampleValue(ta, 'im_messages_stored_total', { transport: 'http' }), 1);
  const tb = (await b.get('/metrics')).text;
  t.equal(sampleValue(tb, 'im_messages_stored_total', { transport: 'http' }), undefined, 'b saw nothing of a');
  t.match(tb, /^process_cpu_user_seconds_total /m, 'both have default metrics');
  // Counting a relayed (remote) event would double-count across a cluster.
  b.c.bus.publish(
    'message.stored',
    {
      message: {
        message_id: 'm',
        group_id: 'ga',
        seq: 1,
        from_user_id: 'pa',
        msg_type: 'TEXT',
        msg_content: 'x',
        client_msg_id: null,
        created_at: new Date().toISOString(),
      } as never,
      transport: 'http',
    },
    { origin: 'remote', instance_id: 'other' },
  );
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(sampleValue((await b.get('/metrics')).text, 'im_messages_stored_total', { transport: 'http' }), undefined, 'remote events not counted');
});

t.test('restriction: allow list of addresses', async (t) => {
  const denied = await bootHttp(t, { allow: ['10.0.0.0/8', 'fd00::/8'] });
  const r = await denied.get('/metrics');
  t.equal(r.status, 403);
  t.same(JSON.parse(r.text).error.code, 'FORBIDDEN');
  t.notMatch(r.text, 'process_cpu');
  t.equal((await denied.get('/healthz')).status, 200, 'other endpoints unaffected');

  const proxied = await bootHttp(t, { allow: ['10.0.0.0/8'] }, { trustProxy: true });
  t.equal(
    (await proxied.get('/metrics', { 'x-forwarded-for': '10.1.2.3' })).status,
    403,
    'the TCP peer counts, not a forgeable X-Forwarded-For (even with trustProxy)',
  );

  const allowed = await bootHttp(t, { allow: ['127.0.0.1/32', '::1'] });
  const ok = await allowed.get('/metrics');
  t.equal(ok.status, 200);
  t.match(ok.text, 'process_cpu_user_seconds_total');
});

t.test('restriction: bearer token', async (t) => {
  const token = 'scrape-token-0123456789';
  const h = await bootHttp(t, { token });
  const none = await h.get('/metrics');
  t.equal(none.status, 401);
  t.equal(none.headers.get('www-authenticate'), 'Bearer realm="metrics"');
  t.equal(JSON.parse(none.text).error.code, 'UNAUTHENTICATED');
  t.equal((await h.get('/metrics', { authorization: 'Bearer wrong-token-0123456789' })).status, 401);
  const ok = await h.get('/metrics', { authorization: `Bearer ${token}` });
  t.equal(ok.status, 200);
  t.match(ok.text, 'http_request_duration_seconds');
  t.equal(sampleValue(ok.text, 'http_request_duration_seconds_count', { route: '/metrics', status: '401' }), 2, 'refusals are measured too');
});

t.test('bad options fail start-up naming the setting', async (t) => {
  for (const [metrics, pattern] of [
    [{ allow: ['not-an-ip'] }, /^metrics: allow\[0\]|^metrics: allow\.0/],
    [{ allow: ['10.0.0.0/33'] }, /^metrics: allow/],
    [{ token: 'short' }, /^metrics: token/],
    [{ nope: 1 }, /^metrics: nope/],
  ] as const) {
    const b = await bootKernel(t, { plugins: [...CORE, 'metrics'], config: { metrics }, noStart: true });
    await t.rejects(b.kernel.start(), { message: pattern }, JSON.stringify(metrics));
  }
});
