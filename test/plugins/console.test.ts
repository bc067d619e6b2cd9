import t from 'tap';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { api, bootHttp, tokenFor } from '../helpers/http.js';
import { admin, bootKernel } from '../helpers/boot.js';
import { startFakeAi, waitFor } from '../helpers/fake-ai.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';

const PUBLIC = new URL('../../../plugins/console/public/', import.meta.url);

// A real browser on a busy 2-core machine: allow what the tap config allows (run directly with node, the default is 30 s).
t.setTimeout(120_000);

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
});

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * The browser test needs Debian's chromium and playwright-core (.ci/run installs both).
 * Under CI a missing browser is a failure; on a developer machine without it the test is skipped.
 */
async function loadPlaywright(): Promise<{ pw: typeof import('playwright-core') | null; missing: string | null }> {
  let pw: typeof import('playwright-core') | null = null;
  try {
    pw = await import('playwright-core');
  } catch {
    return { pw: null, missing: 'playwright-core is not installed' };
  }
  if (!existsSync(CHROMIUM)) return { pw, missing: `${CHROMIUM} is missing (apt-get install chromium)` };
  return { pw, missing: null };
}
const { pw: playwright, missing: browserMissing } = await loadPlaywright();
const skipBrowser = browserMissing !== null && process.env.CI !== 'true' ? `browser test skipped outside CI: ${browserMissing}` : false;

t.test('end to end in headless Chromium: patient and doctor pages, live messages, AI replies, text only, reconnect + sync', { skip: skipBrowser }, async (t) => {
  if (!playwright || browserMissing) {
    t.fail(`browser test cannot run under CI: ${browserMissing}`);
    return;
  }

  const ai = await startFakeAi(t);
  ai.respond((req) => ({ delayMs: 300, body: { reply: `AI: noted "${req.json?.message?.msg_content}"` } }));
  const { baseUrl, booted } = await bootHttp(t, {
    plugins: ['auth', 'users', 'groups', 'chat', 'http', 'ws', 'ai-router', 'console'],
    adapters: { storage: 'memory', 'ai-provider': 'webhook' },
    config: {
      ai: { url: ai.url },
      'ai-router': { maxAttempts: 1 },
      console: { devTokens: true },
    },
  });
  const c = booted.c;
  await c.userService.create(admin, { user_id: 'pat-1', username: 'Pat Patient', user_role: 'PATIENT' });
  await c.userService.create(admin, { user_id: 'doc-1', username: 'Dr. Doe', user_role: 'DOCTOR' });
  await c.userService.create(admin, { user_id: 'ai-1', username: 'Assistant', user_role: 'AI_ASSISTANT' });
  await c.groupService.create(admin, { group_id: 'consult-1', group_name: 'Consultation #1', description: 'Knee pain', members: ['pat-1', 'doc-1', 'ai-1'] });
  const patToken = await tokenFor(c, 'pat-1');
  const serverMessages = async (): Promise<Array<{ seq: number; msg_content: string; msg_type: string }>> =>
    (await c.chatService.list(admin, { group_id: 'consult-1', limit: 200 })).messages;

  // the doctor's page goes through a TCP proxy, so the test can cut its connections
  const proxy = await startTcpProxy(t, Number(new URL(baseUrl).port));
  const doctorBase = `http://127.0.0.1:${proxy.port}`;

  const browser = await playwright.chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  t.teardown(() => browser.close());
  const pageErrors: string[] = [];
  const newPage = async () => {
    const context = await browser.newContext({ viewport: { width: 1200, height: 760 } });
    const page = await context.newPage();
    page.setDefaultTimeout(20_000);
    page.on('pageerror', (err) => pageErrors.push(err.message));
    page.on('dialog', (d) => {
      pageErrors.push(`dialog: ${d.message()}`);
      void d.dismiss();
    });
    return page;
  };
  type Page = Awaited<ReturnType<typeof newPage>>;
  const contents = (page: Page) => page.$$eval('#messages .msg .content', (els) => els.map((e) => e.textContent ?? ''));
  const seqs = (page: Page) => page.$$eval('#messages .msg', (els) => els.map((e) => Number((e as HTMLElement).dataset.seq)));
  const hasText = (page: Page, text: string) =>
    page.waitForFunction((txt) => Array.from(document.querySelectorAll('#messages .msg .content')).some((e) => e.textContent === txt), text);

  // patient: pastes a token
  const patient = await newPage();
  const patientAiCalls: string[] = [];
  patient.on('request', (req) => {
    if (req.url().includes('/api/ai/')) patientAiCalls.push(req.url());
  });
  await patient.goto(`${baseUrl}/console`);
  await patient.fill('#token-input', patToken);
  await patient.click('#token-form button[type=submit]');
  await patient.waitForSelector('#conn[data-state=online]');
  t.match(await patient.textContent('#whoami'), /Pat Patient \(pat-1\)\s*patient/, 'patient signed in, role badge shown');

  // doctor: the development sign-in (config console.devTokens)
  const doctor = await newPage();
  await doctor.goto(`${doctorBase}/console`);
  await doctor.waitForSelector('#dev-form:not([hidden])');
  await doctor.fill('#dev-user', 'doc-1');
  await doctor.click('#dev-form button[type=submit]');
  await doctor.waitForSelector('#conn[data-state=online]');
  t.match(await doctor.textContent('#whoami'), /Dr\. Doe \(doc-1\)\s*doctor/, 'doctor signed in with a dev token');

  for (const page of [patient, doctor]) {
    await page.click('button.group[data-group-id="consult-1"]');
    await page.waitForSelector('#room-members .member[data-user-id="ai-1"]');
    const roles = await page.$$eval('#room-members .member', (els) => els.map((e) => `${(e as HTMLElement).dataset.userId}:${e.querySelector('.badge')?.textContent}`));
    t.same(roles.sort(), ['ai-1:AI assistant', 'doc-1:doctor', 'pat-1:patient'], 'role badges from the members list');
  }

  // patient -> doctor, and the fake AI's reply on both pages
  await patient.fill('#composer-input', 'Hello doctor, my knee hurts');
  await patient.press('#composer-input', 'Enter');
  await hasText(doctor, 'Hello doctor, my knee hurts');
  const reply = 'AI: noted "Hello doctor, my knee hurts"';
  for (const page of [patient, doctor]) {
    await hasText(page, reply);
    const ai = page.locator('#messages .msg.ai-reply');
    t.equal(await ai.count(), 1, 'the AI reply is shown distinctly');
    t.match(await ai.locator('.meta').textContent(), /ai-1\s*AI assistant\s*AI reply/);
  }
  await patient.waitForSelector('#messages .msg.mine[data-seq="1"] .ack');
  t.equal(await patient.locator('#pending li').count(), 0, 'nothing left unacknowledged');
  t.equal(ai.requests.length, 1, 'one AI call');

  // doctor -> patient: markup is shown as text, never run or parsed
  const evil = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>bold?</b>';
  await doctor.fill('#composer-input', evil);
  await doctor.click('#send');
  await hasText(patient, evil);
  for (const page of [patient, doctor]) {
    t.equal(await page.locator('#messages script, #messages img, #messages b').count(), 0, 'no element made from message content');
    t.equal(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned), undefined, 'nothing ran');
  }

  // the doctor's connection drops (and stays down for a while): the page shows it and reconnects by itself
  proxy.refuse(true);
  proxy.dropAll();
  await doctor.waitForSelector('#conn[data-state="offline"], #conn[data-state="reconnecting"]');
  t.match(await doctor.textContent('#conn'), /offline|reconnecting/, 'the drop is visible');
  for (const text of ['while you were away 1', 'while you were away 2']) {
    await patient.fill('#composer-input', text);
    await patient.press('#composer-input', 'Enter');
    await hasText(patient, text);
  }
  // both messages and both AI replies are stored before the doctor comes back
  await waitFor(async () => (await serverMessages()).length === 7, 'seven messages stored', 20_000);
  proxy.refuse(false);
  await doctor.waitForSelector('#conn[data-state=online]', { timeout: 30_000 });
  await hasText(doctor, 'AI: noted "while you were away 2"');
  const expected = (await serverMessages()).map((m) => m.msg_content);
  await waitFor(async () => (await contents(doctor)).length === expected.length, 'doctor caught up');
  t.same(await contents(doctor), expected, 'after reconnect + sync: every message once, in seq order');
  t.same(await seqs(doctor), [1, 2, 3, 4, 5, 6, 7], 'no gap, no duplicate');
  await waitFor(async () => (await contents(patient)).length === expected.length, 'patient has everything');
  t.same(await contents(patient), expected);
  t.same(await seqs(patient), [1, 2, 3, 4, 5, 6, 7]);

  // and the doctor can send again on the new connection
  await doctor.fill('#composer-input', 'Back online');
  await doctor.press('#composer-input', 'Enter');
  await hasText(patient, 'Back online');

  // the AI service fails (ai-router maxAttempts 1): both pages show that the AI did not answer
  ai.enqueue({ status: 500 });
  await patient.fill('#composer-input', 'This one gets no answer');
  await patient.press('#composer-input', 'Enter');
  for (const page of [patient, doctor]) {
    await page.waitForSelector('#messages .msg[data-seq="9"] [data-ai-status="failed"]');
    await page.waitForSelector('#ai-status[data-status="failed"]:not([hidden])');
    t.match(await page.textContent('#ai-status'), /did not answer/, 'AI failure shown');
  }

  await waitFor(async () => (await c.storage.aiRecords.list({ limit: 10 })).filter((r) => r.status !== 0).length === 4, 'four AI records final');
  const records = await c.storage.aiRecords.list({ group_id: 'consult-1', limit: 10 });
  // untrusted text in a record (here its error message) must come out as text
  const evilError = '<img src=x onerror="window.__pwned = 3"><b>AI down</b>';
  await c.storage.aiRecords.update(records[0]!.record_id, { error_message: evilError, updated_at: records[0]!.updated_at });

  // the doctor's AI records panel of the group: a DOCTOR member sees it, a patient neither sees nor asks for it
  t.equal(await patient.$eval('#group-records', (e) => (e as HTMLElement).hidden), true, 'no AI records panel for a patient');
  await doctor.waitForSelector('#group-records:not([hidden])');
  // the panel sits above the timeline and takes its height: the newest message must stay in view
  const timeline = (page: Page) =>
    page.evaluate(
      () =>
        new Promise<{ overflows: boolean; scrollTop: number; fromBottom: number; newestInView: boolean }>((resolve) =>
          // after layout and the resize observers of the next frame
          requestAnimationFrame(() =>
            requestAnimationFrame(() => {
              const tl = document.getElementById('timeline')!;
              const box = tl.getBoundingClientRect();
              const msgs = document.querySelectorAll('#messages .msg');
              const newest = msgs[msgs.length - 1]!.getBoundingClientRect();
              resolve({
                overflows: tl.scrollHeight > tl.clientHeight,
                scrollTop: tl.scrollTop,
                fromBottom: tl.scrollHeight - tl.scrollTop - tl.clientHeight,
                newestInView: newest.top >= box.top && newest.bottom <= box.bottom,
              });
            }),
          ),
        ),
    );
  const toggleDoctorRecords = async (open: boolean) => {
    const loaded = open ? doctor.waitForResponse((res) => res.url().includes('/api/ai/interactions?')) : null;
    await doctor.click('#group-records summary');
    await doctor.waitForFunction((want) => (document.getElementById('group-records') as HTMLDetailsElement).open === want, open);
    if (loaded) {
      await loaded;
      await doctor.waitForSelector('#group-records-form .result.ok');
    }
  };
  const before = await timeline(doctor);
  t.ok(before.overflows, 'the doctor\'s timeline is longer than its view');
  t.ok(before.fromBottom < 2 && before.newestInView, 'scrolled to the newest message');
  await toggleDoctorRecords(true);
  let after = await timeline(doctor);
  t.ok(after.newestInView, `the open panel leaves the newest message in view (${after.fromBottom} px from the bottom)`);
  await toggleDoctorRecords(false);
  t.ok((await timeline(doctor)).newestInView, 'closing the panel too');
  // a reader of older messages keeps the place: the page does not jump to the bottom
  await doctor.$eval('#timeline', (tl) => (tl.scrollTop = 0));
  await toggleDoctorRecords(true);
  after = await timeline(doctor);
  t.equal(after.scrollTop, 0, 'opening the panel leaves a reader of older messages where they were');
  await doctor.$eval('#timeline', (tl) => (tl.scrollTop = tl.scrollHeight));
  const recordRows = (page: Page, table: string) =>
    page.$$eval(`#${table} tbody tr`, (trs) => trs.map((tr) => ({ id: (tr as HTMLElement).dataset.recordId, cells: Array.from(tr.querySelectorAll('td'), (td) => td.textContent ?? '') })));
  await doctor.waitForSelector('#group-records-form .result.ok');
  const docRows = await recordRows(doctor, 'group-records-table');
  t.same(docRows.map((r) => r.id), records.map((r) => r.record_id), 'the group\'s records, newest first');
  t.same(docRows.map((r) => r.cells[1]), ['failed', 'succeeded', 'succeeded', 'succeeded'], 'status');
  for (const [i, row] of docRows.entries()) {
    const r = records[i]!;
    t.equal(row.cells.length, 7, 'no group column in a group\'s panel');
    t.match(row.cells[2], /^\d+(\.\d+)? (ms|s)$/, 'duration');
    t.equal(row.cells[3], String(r.attempts), 'attempts');
    t.equal(row.cells[4], r.user_message_id, 'the user message id');
    t.equal(row.cells[5], r.ai_message_id ?? '—', 'the AI reply id');
  }
  t.equal(docRows[0]!.cells[5], '—', 'the failed record has no AI reply');
  t.equal(docRows[0]!.cells[6], evilError, 'markup in a record is shown as text');
  t.equal(await doctor.locator('#group-records img, #group-records b').count(), 0, 'no element made from record content');
  t.equal(await doctor.evaluate(() => (window as unknown as { __pwned?: number }).__pwned), undefined, 'nothing ran');
  t.equal(await doctor.textContent('#group-records-form .result'), '4 record(s), newest first.');

  // the status filter and Refresh
  const refreshDoctorRecords = async (outcome: 'ok' | 'error'): Promise<string> => {
    await doctor.click('#group-records-form button[type=submit]');
    await doctor.waitForSelector(`#group-records-form .result.${outcome}`);
    return (await doctor.textContent('#group-records-form .result')) ?? '';
  };
  await doctor.selectOption('#group-records-form [name=status]', '2');
  t.equal(await refreshDoctorRecords('ok'), '1 record(s), newest first.');
  t.same((await recordRows(doctor, 'group-records-table')).map((r) => r.id), [records[0]!.record_id], 'only the failed record');
  await doctor.selectOption('#group-records-form [name=status]', '');

  // API errors in words, and no rows left over: the page is answered with what the real servers answer
  // (a patient asking, an unknown group, a server without the AI layer)
  const refused = await api(baseUrl, patToken).get('/api/ai/interactions?group_id=consult-1');
  t.equal(refused.status, 403, 'the server refuses a patient');
  const unknown = await api(baseUrl, await tokenFor(c, 'doc-1')).get('/api/ai/interactions?group_id=no-such-group');
  t.equal(unknown.status, 404);
  const noAi = await bootHttp(t, { plugins: ['auth', 'users', 'groups', 'chat', 'http'], adapters: { storage: 'memory' } });
  const off = await api(noAi.baseUrl, await tokenFor(noAi.booted.c, 'doc-1')).get('/api/ai/interactions?group_id=consult-1');
  t.equal(off.status, 404, 'no AI layer, no route');
  for (const [answer, expected] of [
    [refused, /^Not allowed: .*DOCTOR member/],
    [unknown, /^Not found: .*no-such-group/],
    [off, /^The AI layer is not enabled on this server/],
  ] as const) {
    await t.resolves(refreshDoctorRecords('ok'), 'rows back');
    t.equal((await recordRows(doctor, 'group-records-table')).length, 4);
    await doctor.route('**/api/ai/interactions?*', (route) => route.fulfill({ status: answer.status, contentType: 'application/json', body: JSON.stringify(answer.body) }));
    t.match(await refreshDoctorRecords('error'), expected, `HTTP ${answer.status}: ${answer.body.error.message}`);
    t.equal(await doctor.locator('#group-records-table tbody tr').count(), 0, 'an error empties the table');
    await doctor.unroute('**/api/ai/interactions?*');
  }
  t.equal(await refreshDoctorRecords('ok'), '4 record(s), newest first.');
  t.same(patientAiCalls, [], 'the patient\'s page never asked for AI records');

  // admin view (an admin dev token): AI interaction records, create a user and a group, add a member
  const adminPage = await newPage();
  await adminPage.goto(`${baseUrl}/console`);
  await adminPage.waitForSelector('#dev-form:not([hidden])');
  await adminPage.fill('#dev-user', 'ops');
  await adminPage.check('#dev-admin');
  await adminPage.click('#dev-form button[type=submit]');
  await adminPage.waitForSelector('#admin-view:not([hidden])');
  await adminPage.waitForFunction(() => document.querySelectorAll('#records-table tbody tr').length === 4);
  await adminPage.waitForSelector('#ai-records .result.ok');
  t.equal(await adminPage.textContent('#ai-records .result'), '4 record(s), newest first.', 'the records loaded on opening say so, as on Refresh');
  const rows = await adminPage.$$eval('#records-table tbody tr', (trs) => trs.map((tr) => Array.from(tr.querySelectorAll('td'), (td) => td.textContent ?? '')));
  t.same(rows.map((r) => r[2]), ['failed', 'succeeded', 'succeeded', 'succeeded'], 'record statuses, newest first');
  for (const row of rows) {
    t.equal(row[1], 'consult-1');
    t.match(row[3], /^\d+(\.\d+)? (ms|s)$/, 'record duration');
  }
  t.not(rows[0]![7], '', 'the failed record shows its error message');
  t.equal(await adminPage.locator('#records-table img, #records-table b').count(), 0, 'record content shown as text here too');
  // opening the Admin tab loads the records as Refresh does: an error is said in words and empties the table
  const openAdminTab = async (outcome: 'ok' | 'error'): Promise<string> => {
    await adminPage.click('.tab[data-view="chat"]');
    await adminPage.click('#admin-tab');
    await adminPage.waitForSelector(`#ai-records .result.${outcome}`);
    return (await adminPage.textContent('#ai-records .result')) ?? '';
  };
  for (const [answer, expected] of [
    [refused, /^Not allowed: /],
    [unknown, /^Not found: .*no-such-group/],
    [off, /^The AI layer is not enabled on this server/],
    ['network', /^Network error: the service cannot be reached/],
  ] as const) {
    await adminPage.route('**/api/ai/interactions?*', (route) =>
      answer === 'network' ? route.abort('connectionrefused') : route.fulfill({ status: answer.status, contentType: 'application/json', body: JSON.stringify(answer.body) }),
    );
    t.match(await openAdminTab('error'), expected, `on opening, ${answer === 'network' ? 'a network failure' : `HTTP ${answer.status}`} is said in words`);
    t.equal(await adminPage.locator('#records-table tbody tr').count(), 0, 'and no earlier rows are left');
    await adminPage.unroute('**/api/ai/interactions?*');
    t.equal(await openAdminTab('ok'), '4 record(s), newest first.', 'rows back on the next opening');
    t.equal(await adminPage.locator('#records-table tbody tr').count(), 4);
  }
  // two loads overlap (the tab opened again during a Refresh): the earlier, slower answer never overwrites the later one's rows
  let releaseFirst!: () => void;
  const firstHeld = new Promise<void>((r) => (releaseFirst = r));
  let requests = 0;
  await adminPage.route('**/api/ai/interactions?*', async (route) => {
    if (requests++ === 0) await firstHeld;
    await route.continue();
  });
  const firstAnswer = adminPage.waitForResponse((r) => r.url().includes('/api/ai/interactions') && !r.url().includes('status=2'));
  await adminPage.evaluate(() => (document.getElementById('ai-records') as HTMLFormElement).requestSubmit());
  await adminPage.locator('#ai-records [name="status"]').selectOption('2');
  await adminPage.evaluate(() => (document.getElementById('ai-records') as HTMLFormElement).requestSubmit());
  await adminPage.waitForFunction(() => document.querySelector('#ai-records .result.ok')?.textContent === '1 record(s), newest first.');
  releaseFirst();
  await firstAnswer;
  await adminPage.waitForTimeout(300); // room for the page to handle the late answer
  t.equal(await adminPage.locator('#records-table tbody tr').count(), 1, 'the table keeps the latest submission\'s rows (the failed record), not the late answer\'s four');
  t.equal(await adminPage.textContent('#ai-records .result'), '1 record(s), newest first.');
  await adminPage.unroute('**/api/ai/interactions?*');
  await adminPage.locator('#ai-records [name="status"]').selectOption('');
  const submit = async (form: string, fields: Record<string, string>, outcome: 'ok' | 'error'): Promise<string> => {
    for (const [name, value] of Object.entries(fields)) {
      const field = adminPage.locator(`#${form} [name="${name}"]`);
      if ((await field.evaluate((e) => e.tagName)) === 'SELECT') await field.selectOption(value);
      else await field.fill(value);
    }
    await adminPage.click(`#${form} button[type=submit]`);
    await adminPage.waitForSelector(`#${form} .result.${outcome}`);
    return (await adminPage.textContent(`#${form} .result`)) ?? '';
  };
  t.equal(await submit('create-user', { user_id: 'pat-2', username: 'Second Patient', user_role: 'PATIENT' }, 'ok'), 'Created pat-2 (patient).');
  t.match(await submit('create-user', { user_id: 'pat-2', username: 'Again', user_role: 'DOCTOR' }, 'error'), /^Already exists: .*pat-2/, 'API errors are shown readably');
  t.equal(await submit('create-group', { group_name: 'Follow-up', group_id: 'consult-2', members: 'pat-2, doc-1' }, 'ok'), 'Created group consult-2 (Follow-up).');
  await doctor.waitForSelector('button.group[data-group-id="consult-2"]');
  t.pass('the new group appears in the doctor\'s list by itself (member_joined)');
  t.equal(await submit('add-member', { group_id: 'consult-2', user_id: 'ai-1' }, 'ok'), 'Added ai-1 to consult-2 as AI assistant.');
  t.equal((await c.groupService.listMembers(admin, 'consult-2')).length, 3);
  // the doctor opens the new group with the records panel open: it follows the group
  await doctor.click('button.group[data-group-id="consult-2"]');
  await doctor.waitForFunction(() => document.querySelector('#group-records-form .result.ok')?.textContent === 'No records.');
  t.equal(await doctor.locator('#group-records-table tbody tr').count(), 0, 'consult-2 has no AI records');
  await doctor.click('button.group[data-group-id="consult-1"]');
  await doctor.waitForFunction(() => document.querySelectorAll('#group-records-table tbody tr').length === 4);
  t.pass('back in consult-1: its records again');
  t.equal(await submit('user-groups', { user_id: 'doc-1' }, 'ok'), '2 group(s).');
  await adminPage.screenshot({ path: '/tmp/console-admin.png' });

  // sign-out leaves nothing of the admin's work behind: forms, their lines, tables, lists;
  // a records load still running when the admin signs out shows its answer nowhere
  let releaseLate: () => void = () => undefined;
  const lateHeld = new Promise<void>((resolve) => (releaseLate = resolve));
  await adminPage.route('**/api/ai/interactions?*', async (route) => {
    await lateHeld;
    await route.continue();
  });
  await adminPage.fill('#create-user [name="user_id"]', 'half-typed');
  await adminPage.evaluate(() => (document.getElementById('ai-records') as HTMLFormElement).requestSubmit());
  await adminPage.waitForFunction(() => document.querySelector('#ai-records .result')?.textContent === 'working…');
  const lateAnswer = adminPage.waitForResponse((r) => r.url().includes('/api/ai/interactions'));
  await adminPage.click('#signout');
  await adminPage.waitForSelector('#signin-view:not([hidden])');
  releaseLate();
  await lateAnswer;
  await adminPage.waitForTimeout(300); // room for the page to handle the late answer
  await adminPage.unroute('**/api/ai/interactions?*');
  const leftovers = await adminPage.evaluate(() => ({
    lines: Array.from(document.querySelectorAll('#admin-view .result'), (e) => e.textContent ?? '').filter(Boolean),
    fields: Array.from(document.querySelectorAll<HTMLInputElement>('#admin-view input[type=text], #admin-view input:not([type])'), (e) => e.value).filter(Boolean),
    rows: document.querySelectorAll('#admin-view tbody tr').length,
    groups: document.querySelectorAll('#user-groups-list li').length,
    disabled: document.querySelectorAll('#admin-view button[type=submit]:disabled').length,
  }));
  t.same(leftovers, { lines: [], fields: [], rows: 0, groups: 0, disabled: 0 }, 'signed out: the admin forms, their lines and tables are empty');

  t.same(pageErrors, [], 'no page errors');
  await patient.screenshot({ path: '/tmp/console.png' });
  await doctor.screenshot({ path: '/tmp/console-doctor.png' });
});
