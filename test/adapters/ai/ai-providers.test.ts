import { createHmac } from 'node:crypto';
import { createServer } from 'node:net';
import t from 'tap';
import type { Message, User } from '../../../kernel/domain.js';
import { AiCallError, type AiCallInput } from '../../../kernel/ports/ai-provider.port.js';
import { DEFAULT_SYSTEM_PROMPT, type AiSection } from '../../../adapters/ai/shared/ai-section.schema.js';
import { parseRetryAfter } from '../../../adapters/ai/shared/http-call.js';
import { WebhookAiProvider, signWebhookBody } from '../../../adapters/ai/webhook/webhook.provider.js';
import { webhookAiProviderAdapter } from '../../../adapters/ai/webhook/webhook-provider.adapter.js';
import { OpenAiProvider, buildChatMessages } from '../../../adapters/ai/openai/openai.provider.js';
import { openAiProviderAdapter } from '../../../adapters/ai/openai/openai-provider.adapter.js';
import { startFakeAi } from '../../helpers/fake-ai.js';

const at = '2026-01-27T08:00:00.000Z';
const user = (user_id: string, user_role: User['user_role'], username = user_id): User => ({ user_id, username, user_role, created_at: at, updated_at: at });
const msg = (seq: number, from: string, content: string, msg_type: Message['msg_type'] = 'TEXT'): Message => ({
  message_id: `m${seq}`,
  group_id: 'g1',
  seq,
  from_user_id: from,
  msg_type,
  msg_content: content,
  client_msg_id: null,
  created_at: at,
});

const patient = user('p1', 'PATIENT', 'Pat Smith');
const doctor = user('doc1', 'DOCTOR', 'Dr. Who');
const assistant = user('ai1', 'AI_ASSISTANT', 'Assistant');
const history = [msg(1, 'doc1', 'Take rest'), msg(2, 'ai1', 'Anything else?', 'AI_REPLY'), msg(3, 'p1', 'https://img/x.png', 'IMAGE'), msg(4, 'p1', 'It hurts')];
const input: AiCallInput = {
  record_id: 'rec-1',
  group_id: 'g1',
  message: history[3]!,
  sender: patient,
  assistant,
  history,
  users: new Map([patient, doctor, assistant].map((u) => [u.user_id, u])),
};

const section = (o: Partial<AiSection>): AiSection => ({ url: '', apiKey: '', model: 'm', webhookSecret: '', systemPrompt: '', ...o });
const never = (): AbortSignal => new AbortController().signal;

async function callError(p: Promise<unknown>): Promise<AiCallError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof AiCallError) return err;
    throw err;
  }
  throw new Error('expected an AiCallError');
}

async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

t.test('Retry-After parsing (both copies)', async (t) => {
  for (const parse of [parseRetryAfter]) {
    t.equal(parse(null), undefined);
    t.equal(parse(''), undefined);
    t.equal(parse('3'), 3000);
    t.equal(parse('1.5'), 1500);
    t.equal(parse('Tue, 27 Jan 2026 08:00:10 GMT', Date.parse('2026-01-27T08:00:00Z')), 10_000);
    t.equal(parse('Tue, 27 Jan 2026 07:00:00 GMT', Date.parse('2026-01-27T08:00:00Z')), 0, 'a past date means now');
    t.equal(parse('soon'), undefined);
  }
});

t.test('the ai section is validated by the adapters, errors name the setting', async (t) => {
  for (const adapter of [webhookAiProviderAdapter, openAiProviderAdapter]) {
    t.same(adapter.options!({}, {}), { url: '', apiKey: '', model: 'gpt-4o-mini', webhookSecret: '', systemPrompt: DEFAULT_SYSTEM_PROMPT });
    t.throws(() => adapter.options!({}, { ai: { url: 'not a url' } }), /^ai\.url: /);
    t.throws(() => adapter.options!({}, { ai: { url: 'http://x', colour: 'red' } }), /^ai\.colour: /);
    t.equal(adapter.name, 'ai-provider');
    t.equal(adapter.kind, 'adapter');
  }
});

t.test('webhook provider: request contract, signature, answers', async (t) => {
  const fake = await startFakeAi(t, { body: { reply: 'hello', extra: 1 } });
  t.equal(new WebhookAiProvider(section({})).configured, false, 'not configured without a URL');
  const e0 = await callError(new WebhookAiProvider(section({})).call(input, never()));
  t.equal(e0.retryable, false);

  const p = new WebhookAiProvider(section({ url: `${fake.url}/hook`, apiKey: 'key-1', webhookSecret: 's3cret' }), () => 1_769_500_800);
  t.equal(p.url, `${fake.url}/hook`);
  t.equal(p.configured, true);
  const r = await p.call(input, never());
  t.equal(r.reply, 'hello');
  t.same(r.response, { reply: 'hello', extra: 1 });
  const req = fake.requests[0]!;
  t.equal(req.path, '/hook');
  t.equal(req.headers['content-type'], 'application/json');
  t.equal(req.headers.authorization, 'Bearer key-1');
  t.equal(req.headers['idempotency-key'], 'rec-1');
  t.equal(req.headers['x-im-timestamp'], '1769500800');
  const expected = `sha256=${createHmac('sha256', 's3cret').update(`1769500800.${req.rawBody}`).digest('hex')}`;
  t.equal(req.headers['x-im-signature'], expected);
  t.equal(signWebhookBody('s3cret', 1769500800, req.rawBody), expected);
  t.not(signWebhookBody('s3cret', 1769500800, req.rawBody.replace('It hurts', 'It is fine')), expected, 'a tampered body does not verify');
  t.not(signWebhookBody('s3cret', 1769500801, req.rawBody), expected, 'another timestamp does not verify');
  t.same(req.json, { record_id: 'rec-1', group_id: 'g1', message: input.message, sender: patient, assistant, history });
  t.same(r.request, req.json, 'the request is kept for the record');

  fake.enqueue({ body: { reply: null } });
  t.equal((await p.call(input, never())).reply, null);

  const unsigned = new WebhookAiProvider(section({ url: fake.url }));
  await unsigned.call(input, never());
  const last = fake.requests[fake.requests.length - 1]!;
  t.equal(last.headers.authorization, undefined, 'no key, no Authorization');
  t.equal(last.headers['x-im-signature'], undefined);
  t.equal(last.headers['x-im-timestamp'], undefined);

  const cases: Array<{ answer: Parameters<typeof fake.enqueue>[0]; retryable: boolean; match: RegExp; status?: number; retryAfterMs?: number }> = [
    { answer: { status: 500 }, retryable: true, match: /HTTP 500/, status: 500 },
    { answer: { status: 503, headers: { 'retry-after': '7' } }, retryable: true, match: /HTTP 503/, status: 503, retryAfterMs: 7000 },
    { answer: { status: 429, headers: { 'retry-after': '2' } }, retryable: true, match: /HTTP 429/, status: 429, retryAfterMs: 2000 },
    { answer: { status: 408 }, retryable: true, match: /HTTP 408/, status: 408 },
    { answer: { status: 404 }, retryable: false, match: /HTTP 404/, status: 404 },
    { answer: { status: 401 }, retryable: false, match: /HTTP 401/, status: 401 },
    { answer: { rawBody: 'oops' }, retryable: false, match: /malformed/ },
    { answer: { body: { answer: 'x' } }, retryable: false, match: /malformed/ },
    { answer: { body: { reply: 42 } }, retryable: false, match: /malformed/ },
    { answer: { body: [1] }, retryable: false, match: /malformed/ },
    { answer: { destroy: true }, retryable: true, match: /network error/ },
  ];
  for (const c of cases) {
    fake.enqueue(c.answer);
    const e = await callError(unsigned.call(input, never()));
    t.equal(e.retryable, c.retryable, `${e.message}: retryable=${c.retryable}`);
    t.match(e.message, c.match);
    if (c.status !== undefined) t.equal(e.opts.status, c.status);
    t.equal(e.opts.retryAfterMs, c.retryAfterMs);
    t.ok(e.opts.request, 'the request is attached to the error');
  }

  // Timeout (the caller's signal) and a plain abort.
  fake.enqueue({ hang: true });
  const te = await callError(unsigned.call(input, AbortSignal.timeout(100)));
  t.equal(te.retryable, true);
  t.match(te.message, /timeout/);
  fake.enqueue({ hang: true });
  const ctrl = new AbortController();
  const pending = unsigned.call(input, ctrl.signal);
  await fake.waitForRequests(fake.requests.length);
  ctrl.abort();
  const ae = await callError(pending);
  t.equal(ae.message, 'aborted');

  const down = new WebhookAiProvider(section({ url: `http://127.0.0.1:${await closedPort()}` }));
  const ne = await callError(down.call(input, never()));
  t.equal(ne.retryable, true);
  t.match(ne.message, /network error: ECONNREFUSED/);
});

t.test('openai provider: messages from the history, answers', async (t) => {
  const msgs = buildChatMessages(input, 'Be careful.');
  t.same(msgs, [
    { role: 'system', content: 'Be careful.' },
    { role: 'user', name: 'doctor_Dr__Who', content: '[Doctor Dr. Who] Take rest' },
    { role: 'assistant', content: 'Anything else?' },
    { role: 'user', name: 'Pat_Smith', content: '[image: https://img/x.png]' },
    { role: 'user', name: 'Pat_Smith', content: 'It hurts' },
  ]);
  t.equal(buildChatMessages({ ...input, history: [] }, '')[0]!.content, 'It hurts', 'no system prompt when empty; the message when no history');

  const fake = await startFakeAi(t, (req) =>
    req.path === '/v1/chat/completions' ? { body: { choices: [{ message: { role: 'assistant', content: 'Rest and water.' } }] } } : { status: 404 },
  );
  const p = new OpenAiProvider(section({ url: `${fake.url}/v1/`, apiKey: 'sk-1', model: 'llama3', systemPrompt: 'S' }));
  t.equal(p.url, `${fake.url}/v1/chat/completions`, 'trailing slash handled');
  t.equal(new OpenAiProvider(section({})).configured, false);
  const r = await p.call(input, never());
  t.equal(r.reply, 'Rest and water.');
  const req = fake.requests[0]!;
  t.equal(req.headers.authorization, 'Bearer sk-1');
  t.equal(req.headers['idempotency-key'], 'rec-1');
  t.equal(req.json.model, 'llama3');
  t.same(req.json.messages, buildChatMessages(input, 'S'));

  fake.enqueue({ body: { choices: [{ message: { role: 'assistant', content: null } }] } });
  t.equal((await p.call(input, never())).reply, null, 'null content = no reply');
  fake.enqueue({ body: { choices: [] } });
  t.match((await callError(p.call(input, never()))).message, /malformed/);
  fake.enqueue({ status: 429, headers: { 'retry-after': '3' } });
  const e = await callError(p.call(input, never()));
  t.equal(e.retryable, true);
  t.equal(e.opts.retryAfterMs, 3000);
  fake.enqueue({ status: 400, body: { error: { message: 'bad model' } } });
  const e2 = await callError(p.call(input, never()));
  t.equal(e2.retryable, false);
  t.same(e2.opts.response, { status: 400, body: { error: { message: 'bad model' } } });
});
