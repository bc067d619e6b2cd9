import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { asValue } from 'awilix';
import t, { type Test } from 'tap';
import WebSocket from 'ws';
import { ADAPTERS, PLUGINS } from '../../bin/registry.js';
import type { Cradle } from '../../kernel/container.js';
import type { AiInteractionRecord, Message } from '../../kernel/domain.js';
import { definePlugin, type Plugin } from '../../kernel/plugin.js';
import type { Storage } from '../../kernel/ports/storage.port.js';
import { MemoryStorage } from '../../adapters/storage/memory/memory.storage.js';
import type { Logger } from '../../kernel/logger.js';
import '../../plugins/ai-router/ai-router.public.js';
import { aiRouterOptionsSchema } from '../../plugins/ai-router/ai-router.schema.js';
import { CircuitBreaker, retryDelayMs } from '../../plugins/ai-router/circuit-breaker.js';
import { AdaptiveLimit, eventLoopDelaySampler, type EventLoopDelaySampler } from '../../plugins/ai-router/load-shedding.js';
import { fitReply } from '../../plugins/ai-router/reply-fit.js';
import { WindowedP99 } from '../../lib/windowed-p99.js';
import { validateOptions } from '../../lib/validate.js';
import { admin, as, bootKernel, seedGroup, type Booted } from '../helpers/boot.js';
import { FAST_ROUTER, finalRecord, recordOf, startFakeAi, waitFor, type FakeAi, type FakeAiAnswer } from '../helpers/fake-ai.js';
import { api, bootHttp, tokenFor } from '../helpers/http.js';
import { recordingLogger, type LogLine } from '../helpers/logger.js';
import { createTestDatabase } from '../helpers/services.js';

type Frame = { type: string; status?: string; group_id?: string; user_message_id?: string } & Record<string, unknown>;

// Same limit as the tap runner's config (package.json): this file runs ~25 s on a busy 2-core machine.
t.setTimeout(120_000);

const CORE = ['auth', 'users', 'groups', 'chat'];

interface AiBoot {
  plugins?: string[];
  provider?: 'webhook' | 'openai';
  ai?: Record<string, unknown>;
  router?: Record<string, unknown>;
  storageUnit?: Plugin<unknown>;
  /** More units (after the configured ones). */
  units?: Plugin<unknown>[];
  logger?: Logger;
  http?: boolean;
  config?: Record<string, unknown>;
}

/** A storage unit sharing one MemoryStorage between kernels (a restart on the same store). */
function sharedStorageUnit(storage: Storage): Plugin<unknown> {
  return definePlugin({
    name: 'storage',
    kind: 'adapter',
    impl: 'shared-memory',
    register({ container }) {
      container.register({ storage: asValue(storage) });
    },
  });
}

async function boot(t: Test, fake: FakeAi | null, o: AiBoot = {}): Promise<Booted & { frames: Frame[]; baseUrl?: string }> {
  const plugins = o.plugins ?? [...CORE, 'ai-router'];
  const adapters: Record<string, string> = o.storageUnit ? {} : { storage: 'memory' };
  if (o.provider !== undefined || plugins.includes('ai-router')) adapters['ai-provider'] = o.provider ?? 'webhook';
  const config = {
    ai: { url: fake ? fake.url : '', ...(o.ai ?? {}) },
    'ai-router': { ...FAST_ROUTER, ...(o.router ?? {}) },
    ...(o.config ?? {}),
  };
  const opts = { plugins, adapters, config, logger: o.logger, extraUnits: [...(o.storageUnit ? [o.storageUnit] : []), ...(o.units ?? [])] };
  let booted: Booted;
  let baseUrl: string | undefined;
  if (o.http) {
    const h = await bootHttp(t, opts);
    booted = h.booted;
    baseUrl = h.baseUrl;
  } else booted = await bootKernel(t, opts);
  const frames: Frame[] = [];
  booted.c.bus.subscribe('group.notify', ({ frame }) => {
    frames.push(frame as Frame);
  });
  return { ...booted, frames, baseUrl };
}

async function send(c: Cradle, from: string, group: string, text: string, extra: Record<string, unknown> = {}): Promise<Message> {
  return (await c.chatService.send(as(from), { group_id: group, msg_content: text, ...extra }, { transport: 'test' })).message;
}


/**
 * A crash after the reply was stored but before the record was updated: the
 * record goes back to pending, is worked again, and its final state is returned.
 */
async function workAgainAfterCrash(c: Cradle, rec: AiInteractionRecord): Promise<AiInteractionRecord> {
  await c.storage.aiRecords.update(rec.record_id, { status: 0, ai_message_id: null, updated_at: new Date().toISOString() });
  c.aiRouter.kick();
  return finalRecord(c, rec.user_message_id);
}

async function aiReplies(c: Cradle, group: string): Promise<Message[]> {
  const page = await c.chatService.list(admin, { group_id: group, limit: 200 });
  return page.messages.filter((m) => m.msg_type === 'AI_REPLY');
}

t.test('circuit breaker and retry delays', async (t) => {
  let now = 0;
  const changes: string[] = [];
  const b = new CircuitBreaker({ failureThreshold: 2, resetMs: 100 }, () => now, (s) => changes.push(s));
  t.ok(b.tryAcquire());
  b.failure();
  t.equal(b.state, 'closed', 'one failure keeps it closed');
  t.ok(b.tryAcquire());
  b.failure();
  t.equal(b.state, 'open', 'threshold reached: open');
  t.notOk(b.canCall());
  t.notOk(b.tryAcquire(), 'open refuses calls');
  t.equal(b.retryAt, 100);
  now = 100;
  t.equal(b.state, 'half-open');
  t.ok(b.tryAcquire(), 'one trial once half-open');
  t.notOk(b.tryAcquire(), 'only one trial at a time');
  b.failure();
  t.equal(b.state, 'open', 'failed trial reopens');
  now = 250;
  t.ok(b.tryAcquire());
  b.release();
  t.ok(b.tryAcquire(), 'a released trial frees the slot');
  b.success();
  t.equal(b.state, 'closed', 'successful trial closes');
  t.same(changes, ['open', 'half-open', 'open', 'half-open', 'closed']);
  b.failure();
  b.success();
  b.failure();
  t.equal(b.state, 'closed', 'a success resets the consecutive count');

  const backoff = { baseMs: 100, factor: 2, maxMs: 1000, jitter: 0.5 };
  t.equal(retryDelayMs(1, backoff, undefined, 5000, () => 0), 100);
  t.equal(retryDelayMs(3, backoff, undefined, 5000, () => 0), 400);
  t.equal(retryDelayMs(10, backoff, undefined, 5000, () => 0), 1000, 'capped at maxMs');
  t.equal(retryDelayMs(3, backoff, undefined, 5000, () => 1), 200, 'jitter takes off up to half');
  t.equal(retryDelayMs(1, backoff, 3000, 5000, () => 0), 3000, 'Retry-After wins when longer');
  t.equal(retryDelayMs(1, backoff, 60_000, 5000, () => 0), 5000, 'Retry-After capped');
});

t.test('success: reply stored as AI_REPLY from the assistant, published, recorded', async (t) => {
  const fake = await startFakeAi(t, (req) => ({ body: { reply: `echo: ${req.json.message.msg_content}` } }));
  const { c, frames } = await boot(t, fake, { ai: { apiKey: 'k-123' } });
  const stored: Array<{ message: Message; transport: string }> = [];
  c.bus.subscribe('message.stored', (p) => {
    stored.push(p);
  });
  await seedGroup(c, 'g1', ['p1', 'doc1', 'ai1']);
  await send(c, 'doc1', 'g1', 'Hello, I am your doctor');
  const m = await send(c, 'p1', 'g1', 'I have a headache');
  const rec = await finalRecord(c, m.message_id);
  const replies = await aiReplies(c, 'g1');
  t.equal(replies.length, 1, 'one reply');
  const reply = replies[0]!;
  t.equal(reply.from_user_id, 'ai1', 'from the AI_ASSISTANT member');
  t.equal(reply.msg_content, 'echo: I have a headache');
  t.equal(reply.client_msg_id, `ai:${rec.record_id}`);
  t.equal(reply.seq, m.seq + 1);
  t.equal(rec.ai_message_id, reply.message_id);
  t.equal(rec.attempts, 1);
  t.equal(rec.error_message, null);
  t.equal(rec.ai_service_url, fake.url);
  t.type(rec.duration_ms, 'number');
  t.equal(rec.lease_owner, null, 'lease released');
  const reqContent = JSON.parse(rec.request_content!);
  t.equal(reqContent.record_id, rec.record_id);
  t.same(JSON.parse(rec.response_content!), { reply: 'echo: I have a headache' });
  await waitFor(() => stored.some((s) => s.message.message_id === reply.message_id), 'reply published');
  t.equal(stored.find((s) => s.message.message_id === reply.message_id)!.transport, 'ai');

  t.equal(fake.requests.length, 1, 'one request: neither the doctor message nor the reply is forwarded');
  const req = fake.requests[0]!;
  t.equal(req.method, 'POST');
  t.equal(req.headers['idempotency-key'], rec.record_id);
  t.equal(req.headers.authorization, 'Bearer k-123');
  t.same(Object.keys(req.json).sort(), ['assistant', 'group_id', 'history', 'message', 'record_id', 'sender']);
  t.equal(req.json.group_id, 'g1');
  t.equal(req.json.message.message_id, m.message_id);
  t.equal(req.json.sender.user_id, 'p1');
  t.equal(req.json.sender.user_role, 'PATIENT');
  t.equal(req.json.assistant.user_id, 'ai1');
  t.same(
    req.json.history.map((h: Message) => h.msg_content),
    ['Hello, I am your doctor', 'I have a headache'],
    'history ascending, the message included',
  );
  t.equal(req.headers['x-im-signature'], undefined, 'unsigned without a secret');
  t.ok(
    frames.some((f) => f.type === 'ai_status' && f.status === 'thinking' && f.user_message_id === m.message_id && f.group_id === 'g1'),
    'thinking pushed',
  );
});

t.test('reply null: record succeeds without a message', async (t) => {
  const fake = await startFakeAi(t, { body: { reply: null } });
  const { c } = await boot(t, fake);
  await seedGroup(c, 'g1', ['p1', 'ai1']);
  const m = await send(c, 'p1', 'g1', 'thanks, that is all');
  const rec = await finalRecord(c, m.message_id);
  t.equal(rec.ai_message_id, null);
  t.equal(rec.error_message, null);
  t.same(await aiReplies(c, 'g1'), []);
});

t.test('routing: doctors, assistants, groups without assistant, doctor pause', async (t) => {
  const fake = await startFakeAi(t);
  const { c, frames } = await boot(t, fake, { router: { doctorPauseMs: 3_600_000 } });
  await seedGroup(c, 'g1', ['p1', 'doc1', 'ai1']);
  await seedGroup(c, 'noai', ['p2', 'doc2']);
  await seedGroup(c, 'quiet', ['p3', 'ai3', 'doc3']);

  const docMsg = await send(c, 'doc1', 'g1', 'I will take it from here');
  const aiMsg = await send(c, 'ai1', 'g1', 'assistant says hi');
  t.same(await c.aiRouter.decide(docMsg), { forward: false, reason: 'role' }, 'DOCTOR never forwarded');
  t.same(await c.aiRouter.decide(aiMsg), { forward: false, reason: 'assistant-sender' }, 'AI_ASSISTANT never forwarded');
  const noAi = await send(c, 'p2', 'noai', 'anyone?');
  t.same(await c.aiRouter.decide(noAi), { forward: false, reason: 'no-assistant' }, 'group without assistant');

  // Doctor takeover: the patient's next message is held back and 'paused' is pushed.
  const paused = await send(c, 'p1', 'g1', 'ok doctor');
  await waitFor(() => frames.some((f) => f.status === 'paused' && f.user_message_id === paused.message_id), 'paused frame');
  t.same(await c.aiRouter.decide(paused), { forward: false, reason: 'paused' });

  // A group where no doctor spoke is forwarded (and it is the only request).
  const fwd = await send(c, 'p3', 'quiet', 'forward me');
  await finalRecord(c, fwd.message_id);
  t.equal(fake.requests.length, 1, 'only the eligible message was sent to the AI');
  t.equal(fake.requests[0]!.json.message.message_id, fwd.message_id);
  const records = await c.storage.aiRecords.list({ limit: 100 });
  t.same(
    records.map((r) => r.user_message_id),
    [fwd.message_id],
    'no record for doctor, assistant, no-assistant, paused or AI_REPLY messages',
  );
  t.notOk(frames.some((f) => f.status === 'paused' && f.user_message_id === fwd.message_id));

  // After the pause window the patient is forwarded again (pause measured from the doctor's message).
  const { c: c2 } = await boot(t, fake, { router: { doctorPauseMs: 1 } });
  await seedGroup(c2, 'g9', ['p9', 'doc9', 'ai9']);
  await send(c2, 'doc9', 'g9', 'doctor here');
  await waitFor(async () => Date.now() - Date.parse((await c2.chatService.list(admin, { group_id: 'g9' })).messages[0]!.created_at) > 5, 'pause over');
  const after = await send(c2, 'p9', 'g9', 'hello again');
  await finalRecord(c2, after.message_id);
});

t.test('role rules are config: forwardRoles and requireAssistant', async (t) => {
  const fake = await startFakeAi(t, { body: { reply: 'posted?' } });
  const { c } = await boot(t, fake, { router: { forwardRoles: ['PATIENT', 'DOCTOR'], requireAssistant: false } });
  await seedGroup(c, 'g1', ['p1', 'doc1', 'ai1']);
  await seedGroup(c, 'noai', ['p2']);
  const d = await send(c, 'doc1', 'g1', 'doctor question');
  t.match(await c.aiRouter.decide(d), { forward: true });
  await finalRecord(c, d.message_id);
  const p = await send(c, 'p2', 'noai', 'no assistant here');
  const rec = await finalRecord(c, p.message_id);
  t.equal(rec.ai_message_id, null, 'no assistant member: nobody to post the reply');
  t.match(rec.error_message, /no AI_ASSISTANT/);
  t.same(await aiReplies(c, 'noai'), []);
  const ai = await send(c, 'ai1', 'g1', 'assistant text');
  t.same(await c.aiRouter.decide(ai), { forward: false, reason: 'assistant-sender' }, 'assistants never, whatever the config');
});

t.test('500s and timeouts are retried, then the record fails and "failed" is pushed', async (t) => {
  const fake = await startFakeAi(t, { status: 500 });
  const { c, frames } = await boot(t, fake, { router: { maxAttempts: 3 } });
  await seedGroup(c, 'g1', ['p1', 'doc1', 'ai1']);
  const m = await send(c, 'p1', 'g1', 'help');
  const rec = await finalRecord(c, m.message_id, 2);
  t.equal(rec.attempts, 3);
  t.equal(rec.error_message, 'AI service answered HTTP 500');
  t.same(JSON.parse(rec.response_content!), { status: 500, body: { error: 'fake error 500' } });
  t.equal(fake.requests.length, 3, 'three attempts');
  t.same(new Set(fake.requests.map((r) => r.headers['idempotency-key'])), new Set([rec.record_id]), 'same Idempotency-Key each time');
  await waitFor(() => frames.some((f) => f.status === 'failed' && f.user_message_id === m.message_id), 'failed frame');
  t.equal(frames.filter((f) => f.status === 'thinking' && f.user_message_id === m.message_id).length, 3, 'thinking per attempt');
  t.same(await aiReplies(c, 'g1'), []);

  // Timeouts: the service never answers within attemptTimeoutMs.
  const slow = await startFakeAi(t, { hang: true });
  const { c: c2 } = await boot(t, slow, { router: { maxAttempts: 2, attemptTimeoutMs: 200 } });
  await seedGroup(c2, 'g2', ['p2', 'ai2']);
  const m2 = await send(c2, 'p2', 'g2', 'anyone?');
  const rec2 = await finalRecord(c2, m2.message_id, 2);
  t.equal(rec2.attempts, 2);
  t.match(rec2.error_message, /timeout/);
  t.equal(slow.requests.length, 2);

  // A non-retryable answer (4xx, malformed) fails at once.
  const bad = await startFakeAi(t, { status: 400 });
  const { c: c3 } = await boot(t, bad, { router: { maxAttempts: 5 } });
  await seedGroup(c3, 'g3', ['p3', 'ai3']);
  const m3 = await send(c3, 'p3', 'g3', 'bad request?');
  const rec3 = await finalRecord(c3, m3.message_id, 2);
  t.equal(rec3.attempts, 1, '400 is not retried');
  bad.respond({ rawBody: 'not json' });
  const m4 = await send(c3, 'p3', 'g3', 'malformed?');
  const rec4 = await finalRecord(c3, m4.message_id, 2);
  t.match(rec4.error_message, /malformed/);
  t.equal(rec4.attempts, 1);
  // A network error (connection dropped) is retried.
  bad.respond({ destroy: true });
  const m5 = await send(c3, 'p3', 'g3', 'dropped?');
  const rec5 = await finalRecord(c3, m5.message_id, 2);
  t.equal(rec5.attempts, 5);
  t.match(rec5.error_message, /network error/);
});

t.test('fail twice then succeed: exactly one reply', async (t) => {
  const fake = await startFakeAi(t, { body: { reply: 'third time lucky' } });
  fake.enqueue({ status: 502 }, { status: 503 });
  const { c } = await boot(t, fake, { router: { maxAttempts: 4 } });
  await seedGroup(c, 'g1', ['p1', 'ai1']);
  const m = await send(c, 'p1', 'g1', 'hello');
  const rec = await finalRecord(c, m.message_id);
  t.equal(rec.attempts, 3);
  const replies = await aiReplies(c, 'g1');
  t.equal(replies.length, 1);
  t.equal(replies[0]!.msg_content, 'third time lucky');
  t.equal(fake.requests.length, 3);
});

t.test('a lost post is retried without a second reply (client_msg_id ai:<record_id>)', async (t) => {
  const fake = await startFakeAi(t, { body: { reply: 'same answer' } });
  const { c } = await boot(t, fake);
  await seedGroup(c, 'g1', ['p1', 'ai1']);
  const m = await send(c, 'p1', 'g1', 'hello');
  const rec = await finalRecord(c, m.message_id);
  const again = await workAgainAfterCrash(c, rec);
  t.equal(again.attempts, 2, 'worked again');
  t.equal(again.ai_message_id, rec.ai_message_id, 'the original reply is found, not a new one');
  t.equal((await aiReplies(c, 'g1')).length, 1, 'still exactly one reply');
});

/** True when `s` has no lone surrogate (no surrogate pair was split). */
const wellFormed = (s: string): boolean => !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);

t.test('fitReply: cut to the limit in UTF-16 code units, never inside a surrogate pair or a grapheme cluster, marker last', async (t) => {
  t.same(fitReply('abc', 3, '…'), { content: 'abc', truncated: false }, 'a reply of exactly the limit is posted as it is');
  t.same(fitReply('🤕', 2, '…'), { content: '🤕', truncated: false }, 'the limit counts code units, as the chat validation does');
  t.same(fitReply('abcdef', 4, '…'), { content: 'abc…', truncated: true }, 'cut to exactly the limit, the marker last');
  t.same(fitReply('abcdef', 5, '[cut]'), { content: 'abcde', truncated: true }, 'a marker that leaves no room for the reply is not used');
  t.same(fitReply('abcdefghij', 8, ' [cut]'), { content: 'ab [cut]', truncated: true }, 'a longer marker');

  // 'a' + U+1F915 (two code units) + 'bc': a cut after 2 units would keep half the emoji.
  const pair = fitReply('a🤕bc', 3, '…');
  t.same(pair, { content: 'a…', truncated: true }, 'the pair is dropped whole');
  t.ok(wellFormed(pair.content));
  t.equal(fitReply('a🤕bc', 4, '…').content, 'a🤕…', 'kept whole when it fits');

  const family = '👨\u200d👩\u200d👧'; // one grapheme cluster of 8 code units
  t.equal(fitReply(`ok ${family} more`, 8, '…').content, 'ok …', 'an emoji ZWJ sequence is not cut in the middle');
  t.equal(fitReply('cafe\u0301 au lait', 5, '…').content, 'caf…', 'a letter keeps its combining accent or goes with it');
  t.equal(fitReply('ok👍🏽👍🏽', 6, '…').content, 'ok…', 'a skin-tone modifier stays with its emoji');
  t.equal(fitReply('👍🏽👍🏽', 4, '…').content, '👍…', 'a first cluster longer than the room is cut between code points (rather than posting only the marker)');

  // A run of flags longer than the look-back window: pairs of regional indicators counted from the run's start.
  const flags = '🇨🇳'.repeat(40); // 80 regional indicators, 160 code units
  t.equal(fitReply(flags, 100, '…').content, '🇨🇳'.repeat(24) + '…', 'flags are paired as in the whole text');
  t.equal(fitReply(`x${flags}`, 100, '…').content, `x${'🇨🇳'.repeat(24)}…`, 'whatever the run starts at');
  t.equal(fitReply(`x${flags}`, 102, '…').content, `x${'🇨🇳'.repeat(25)}…`);

  // One cluster longer than the look-back (a letter with 200 combining marks): the code-point cut.
  const zalgo = fitReply(`a${'\u0301'.repeat(200)}`, 100, '…');
  t.equal(zalgo.content.length, 100);
  t.ok(zalgo.content.endsWith('…'));

  // The cut everywhere around an emoji and CJK text: never over the limit, never a lone surrogate, deterministic.
  const bad: string[] = [];
  for (let max = 10; max < 40; max++) {
    const reply = `${'头疼'.repeat(3)}🤕🤕 ${'x'.repeat(max)}`;
    const fit = fitReply(reply, max, '…');
    const ok = fit.truncated && fit.content.length <= max && fit.content.length >= max - 2 && wellFormed(fit.content);
    if (!ok || !fit.content.endsWith('…') || !reply.startsWith(fit.content.slice(0, -1))) bad.push(`max ${max}: ${JSON.stringify(fit)}`);
    if (fitReply(reply, max, '…').content !== fit.content) bad.push(`max ${max}: not deterministic`);
  }
  t.same(bad, [], 'every cut from 10 to 39 code units: a prefix of the reply and the marker, within the limit, well formed, the same each time');
});

t.test('a reply over chat.maxContentLength is posted cut to fit, the record succeeds with the full reply', async (t) => {
  const MAX = 50;
  const long = 'a'.repeat(MAX + 30);
  // The cut (MAX - 1 units before the marker) falls inside the emoji: it is dropped whole.
  const splitEmoji = `${'b'.repeat(MAX - 2)}🤕 and the rest of a long answer`;
  const fake = await startFakeAi(t, (req) => ({ body: { reply: req.json.message.msg_content === 'emoji' ? splitEmoji : long } }));
  const logs: LogLine[] = [];
  const { c } = await boot(t, fake, {
    plugins: [...CORE, 'metrics', 'ai-router'],
    config: { chat: { maxContentLength: MAX } },
    logger: recordingLogger(logs),
  });
  await seedGroup(c, 'g1', ['p1', 'doc1', 'ai1']);

  const m = await send(c, 'p1', 'g1', 'tell me everything');
  const rec = await finalRecord(c, m.message_id);
  let replies = await aiReplies(c, 'g1');
  t.equal(replies.length, 1, 'one reply reaches the group');
  const reply = replies[0]!;
  t.equal(reply.msg_content.length, MAX, 'exactly the allowed length');
  t.equal(reply.msg_content, `${'a'.repeat(MAX - 1)}…`, 'the beginning of the reply and the marker');
  t.equal(reply.from_user_id, 'ai1');
  t.equal(reply.client_msg_id, `ai:${rec.record_id}`);
  t.equal(rec.status, 1, 'succeeded');
  t.equal(rec.ai_message_id, reply.message_id);
  t.equal(rec.attempts, 1);
  t.same(JSON.parse(rec.response_content!), { reply: long }, 'the full reply is kept in the record');
  t.match(rec.error_message, /^reply truncated: 80 characters, chat\.maxContentLength is 50/, 'the record shows the cut');

  const m2 = await send(c, 'p1', 'g1', 'emoji');
  const rec2 = await finalRecord(c, m2.message_id);
  replies = await aiReplies(c, 'g1');
  t.equal(replies.length, 2);
  const cut = replies.find((r) => r.message_id === rec2.ai_message_id)!;
  t.equal(cut.msg_content, `${'b'.repeat(MAX - 2)}…`, 'the emoji is not split: dropped whole');
  t.equal(cut.msg_content.length, MAX - 1);
  t.ok(wellFormed(cut.msg_content), 'no lone surrogate');
  t.same(JSON.parse(rec2.response_content!), { reply: splitEmoji });

  // Operators see it: a counter and a warn line naming the record, without the content.
  t.match(await c.metricsRegistry.metrics(), /im_ai_replies_truncated_total 2\b/);
  const warns = logs.filter((l) => l.level === 'warn' && /posted truncated/.test(l.msg ?? ''));
  t.equal(warns.length, 2, 'one warn line per cut reply');
  t.match(warns[0], { record_id: rec.record_id, group_id: 'g1', ai_message_id: reply.message_id, reply_length: MAX + 30, posted_length: MAX, max_content_length: MAX });
  t.notOk(JSON.stringify(logs).includes('aaaa') || JSON.stringify(logs).includes('rest of a long answer'), 'no message content in the logs');

  // A retried post of the same record (crash between the reply and the record update): no second reply, not counted again.
  const again = await workAgainAfterCrash(c, rec);
  t.equal(again.attempts, 2, 'worked again');
  t.equal(again.ai_message_id, reply.message_id, 'the original reply is found');
  t.equal((await aiReplies(c, 'g1')).length, 2, 'still one reply per record');
  t.match(await c.metricsRegistry.metrics(), /im_ai_replies_truncated_total 2\b/, 'the retried post is not counted again');
  t.equal(logs.filter((l) => l.level === 'warn' && /posted truncated/.test(l.msg ?? '')).length, 2);

  // A reply that fits is posted as it is, without a note.
  fake.respond({ body: { reply: 'x'.repeat(MAX) } });
  const m3 = await send(c, 'p1', 'g1', 'short please');
  const rec3 = await finalRecord(c, m3.message_id);
  t.equal((await c.chatService.get(admin, rec3.ai_message_id!)).msg_content, 'x'.repeat(MAX));
  t.equal(rec3.error_message, null);
});

t.test('replyTruncationMarker: configurable, not blank, shorter than chat.maxContentLength', async (t) => {
  const fake = await startFakeAi(t, { body: { reply: 'a long answer that does not fit' } });
  const { c } = await boot(t, fake, { router: { replyTruncationMarker: ' [回复过长]' }, config: { chat: { maxContentLength: 20 } } });
  await seedGroup(c, 'g1', ['p1', 'ai1']);
  const m = await send(c, 'p1', 'g1', 'hello');
  const rec = await finalRecord(c, m.message_id);
  t.equal((await c.chatService.get(admin, rec.ai_message_id!)).msg_content, 'a long answer [回复过长]');
  t.equal(validateOptions(aiRouterOptionsSchema, {}).replyTruncationMarker, '…', 'default');
  const start = (marker: unknown, max?: number): Promise<Booted> =>
    bootKernel(t, {
      plugins: [...CORE, 'ai-router'],
      adapters: { storage: 'memory' },
      config: { 'ai-router': { replyTruncationMarker: marker }, ...(max ? { chat: { maxContentLength: max } } : {}) },
    });
  await t.rejects(start('   '), { message: 'ai-router: replyTruncationMarker: must not be blank' });
  await t.rejects(start(''), { message: 'ai-router: replyTruncationMarker: is not allowed to be empty' });
  await t.rejects(start('[cut]', 5), { message: 'ai-router: replyTruncationMarker: must be shorter than chat.maxContentLength (5)' });
});

t.test('Retry-After is honoured', async (t) => {
  const fake = await startFakeAi(t, { body: { reply: 'later' } });
  fake.enqueue({ status: 429, headers: { 'retry-after': '1' } });
  const { c } = await boot(t, fake, { router: { backoff: { baseMs: 10, maxMs: 10, factor: 1, jitter: 0 } } });
  await seedGroup(c, 'g1', ['p1', 'ai1']);
  const m = await send(c, 'p1', 'g1', 'hello');
  await waitFor(async () => (await recordOf(c, m.message_id))?.attempts === 1, 'first attempt recorded');
  const pending = (await recordOf(c, m.message_id))!;
  if (pending.status === 0) {
    t.ok(Date.parse(pending.next_attempt_at!) - Date.parse(pending.updated_at) >= 950, 'next_attempt_at is at least Retry-After away');
  }
  const rec = await finalRecord(c, m.message_id);
  t.equal(rec.attempts, 2);
  const [first, second] = fake.requests;
  t.ok(second!.receivedAt - first!.receivedAt >= 950, `second attempt waited for Retry-After (${second!.receivedAt - first!.receivedAt} ms)`);
});

t.test('signed webhook requests are verifiable by the service', async (t) => {
  const secret = 'whsec-test-1';
  const fake = await startFakeAi(t);
  const { c } = await boot(t, fake, { ai: { webhookSecret: secret } });
  await seedGroup(c, 'g1', ['p1', 'ai1']);
  const m = await send(c, 'p1', 'g1', 'sign me');
  await finalRecord(c, m.message_id);
  const req = fake.requests[0]!;
  const ts = String(req.headers['x-im-timestamp']);
  t.match(ts, /^\d+$/);
  t.ok(Math.abs(Number(ts) - Date.now() / 1000) < 300, 'current unix seconds');
  const expected = `sha256=${createHmac('sha256', secret).update(`${ts}.${req.rawBody}`).digest('hex')}`;
  t.equal(req.headers['x-im-signature'], expected, 'HMAC-SHA256 of "{timestamp}.{raw body}"');
});

t.test('openai provider against a fake /chat/completions', async (t) => {
  const fake = await startFakeAi(t, (req) =>
    req.path === '/v1/chat/completions'
      ? { body: { id: 'x', choices: [{ index: 0, message: { role: 'assistant', content: `seen ${req.json.messages.length} messages` } }] } }
      : { status: 404 },
  );
  const { c } = await boot(t, null, { provider: 'openai', ai: { url: `${fake.url}/v1/`, model: 'test-model', apiKey: 'sk-x', systemPrompt: 'Be kind.' } });
  await seedGroup(c, 'g1', ['p1', 'doc1', 'ai1']);
  await send(c, 'doc1', 'g1', 'Take paracetamol');
  const m = await send(c, 'p1', 'g1', 'How much?');
  const rec = await finalRecord(c, m.message_id);
  t.equal(rec.ai_service_url, `${fake.url}/v1/chat/completions`);
  const req = fake.requests[0]!;
  t.equal(req.path, '/v1/chat/completions');
  t.equal(req.headers.authorization, 'Bearer sk-x');
  t.equal(req.headers['idempotency-key'], rec.record_id);
  t.equal(req.json.model, 'test-model');
  t.same(req.json.messages[0], { role: 'system', content: 'Be kind.' });
  t.match(req.json.messages[1], { role: 'user', name: 'doctor_doc1', content: '[Doctor doc1] Take paracetamol' });
  t.match(req.json.messages[2], { role: 'user', content: 'How much?' });
  const replies = await aiReplies(c, 'g1');
  t.equal(replies.length, 1);
  t.equal(replies[0]!.msg_content, 'seen 3 messages');
  // The reply appears as 'assistant' in the next request's history.
  const m2 = await send(c, 'p1', 'g1', 'thanks');
  await finalRecord(c, m2.message_id);
  t.match(fake.requests[1]!.json.messages[3], { role: 'assistant', content: 'seen 3 messages' });
});

t.test('AI down while hundreds of messages are sent: every send succeeds', async (t) => {
  const fake = await startFakeAi(t, { status: 503 });
  const { c } = await boot(t, fake, {
    router: { maxAttempts: 3, breaker: { failureThreshold: 5, resetMs: 600_000 }, concurrency: 4 },
  });
  const groups = ['d1', 'd2', 'd3'];
  for (const g of groups) await seedGroup(c, g, [`${g}p`, `ai-${g}`]);
  const sends: Array<Promise<Message>> = [];
  for (let i = 0; i < 100; i++) for (const g of groups) sends.push(send(c, `${g}p`, g, `msg ${i}`));
  const results = await Promise.allSettled(sends);
  t.equal(results.filter((r) => r.status === 'fulfilled').length, 300, 'all 300 sends resolved');
  const ids = new Set(results.map((r) => (r as PromiseFulfilledResult<Message>).value.message_id));
  await waitFor(async () => (await c.storage.aiRecords.list({ limit: 1000 })).length === 300, '300 records');
  await waitFor(() => c.aiRouter.breakerState === 'open', 'breaker open');
  const records = await c.storage.aiRecords.list({ limit: 1000 });
  t.ok(records.every((r) => ids.has(r.user_message_id) && (r.status === 0 || r.status === 2)), 'records end failed or pending');
  t.ok(fake.requests.length < 60, `the dead service is not hammered (${fake.requests.length} requests for 300 messages)`);
  // The core is unaffected: more sends still work at once.
  const more = await send(c, 'd1p', 'd1', 'still here');
  t.equal(more.seq, 101);
});

t.test('crash-recovery scan creates the missing record; restart resumes pending records', async (t) => {
  const sqlite = ADAPTERS.storage?.sequelize !== undefined;
  let storageUnit: Plugin<unknown> | undefined;
  let storageConfig: Record<string, unknown> = {};
  if (sqlite) {
    const dir = mkdtempSync(join(tmpdir(), 'ai-router-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    storageConfig = { storage: { url: `sqlite:${join(dir, 'im.sqlite')}`, migrate: true } };
    t.comment('restart test on a shared SQLite file (sequelize adapter)');
  } else {
    storageUnit = sharedStorageUnit(new MemoryStorage());
    t.comment('restart test on a shared in-memory store (sequelize adapter not registered)');
  }
  const withStorage = (o: AiBoot): AiBoot =>
    sqlite
      ? { ...o, config: { ...storageConfig, ...(o.config ?? {}) }, storageUnit: undefined, plugins: o.plugins }
      : { ...o, storageUnit };
  const bootOn = async (fake: FakeAi | null, o: AiBoot): Promise<Booted & { frames: Frame[] }> => {
    const opts = withStorage(o);
    if (sqlite) {
      // boot() would pick memory: set the adapter explicitly.
      const plugins = opts.plugins ?? [...CORE, 'ai-router'];
      const booted = await bootKernel(t, {
        plugins,
        adapters: { storage: 'sequelize', 'ai-provider': 'webhook' },
        config: { ai: { url: fake ? fake.url : '' }, 'ai-router': { ...FAST_ROUTER, ...(opts.router ?? {}) }, ...storageConfig },
      });
      return { ...booted, frames: [] };
    }
    return boot(t, fake, opts);
  };

  // Kernel A has no AI router: the message is stored but no record exists (as after a crash).
  const a = await bootOn(null, { plugins: CORE });
  await seedGroup(a.c, 'g1', ['p1', 'ai1']);
  await seedGroup(a.c, 'g2', ['p2', 'ai2']);
  const lost = await send(a.c, 'p1', 'g1', 'stored before the crash');
  await a.kernel.stop();

  // Kernel B: its recovery scan finds the message and works it.
  const fake = await startFakeAi(t, (req) => ({ body: { reply: `re: ${req.json.message.msg_content}` } }));
  fake.enqueue({ status: 503, headers: { 'retry-after': '1' } });
  const b = await bootOn(fake, { router: { maxAttempts: 5 } });
  await b.c.aiRouter.recovery;
  const recovered = await waitFor(async () => recordOf(b.c, lost.message_id), 'recovered record');
  t.ok(recovered, 'the scan created the missing record');
  // Now the service hangs: kernel B is stopped with one record in flight and one waiting for its retry.
  const rec1 = await waitFor(async () => {
    const r = await recordOf(b.c, lost.message_id);
    return r && r.attempts === 1 && r.status === 0 ? r : undefined;
  }, 'first attempt failed with Retry-After');
  fake.respond({ hang: true });
  const inflight = await send(b.c, 'p2', 'g2', 'in flight at shutdown');
  await waitFor(() => fake.requests.some((r) => r.json.message.message_id === inflight.message_id), 'call in flight');
  await b.kernel.stop();
  const pendingAfterStop = await (async () => {
    const c = await bootOn(null, { plugins: CORE });
    const list = await c.c.storage.aiRecords.list({ limit: 10 });
    await c.kernel.stop();
    return list;
  })();
  t.equal(pendingAfterStop.length, 2);
  t.ok(pendingAfterStop.every((r) => r.status === 0 && r.lease_owner === null), 'both pending, no lease held after a clean stop');
  t.equal(pendingAfterStop.find((r) => r.user_message_id === inflight.message_id)!.attempts, 0, 'the aborted attempt is not counted');

  // Kernel C on the same store resumes both: exactly one reply each.
  fake.respond((req) => ({ body: { reply: `re: ${req.json.message.msg_content}` } }));
  const cK = await bootOn(fake, { router: { maxAttempts: 5 } });
  const done1 = await finalRecord(cK.c, lost.message_id);
  const done2 = await finalRecord(cK.c, inflight.message_id);
  t.equal(done1.record_id, rec1.record_id);
  t.equal(done1.attempts, 2, 'the retry count continued from the stored record');
  t.equal(done2.attempts, 1);
  t.same((await aiReplies(cK.c, 'g1')).map((m) => m.msg_content), ['re: stored before the crash']);
  t.same((await aiReplies(cK.c, 'g2')).map((m) => m.msg_content), ['re: in flight at shutdown']);

  // A lease left by a crashed instance is honoured until it expires, then the record is taken over.
  const orphanMsg = await send(cK.c, 'p2', 'g2', 'orphan');
  await finalRecord(cK.c, orphanMsg.message_id);
  const now = Date.now();
  const msg3 = await (async () => {
    await cK.kernel.stop();
    const plain = await bootOn(null, { plugins: CORE });
    const m = await send(plain.c, 'p1', 'g1', 'leased by a dead instance');
    await plain.c.storage.aiRecords.createIfAbsent({
      record_id: 'rec-dead-lease',
      group_id: 'g1',
      user_message_id: m.message_id,
      ai_service_url: fake.url,
      created_at: new Date(now).toISOString(),
    });
    await plain.c.storage.aiRecords.update('rec-dead-lease', {
      lease_owner: 'dead-instance',
      lease_until: new Date(Date.now() + 500).toISOString(),
      updated_at: new Date().toISOString(),
    });
    await plain.kernel.stop();
    return m;
  })();
  const dK = await bootOn(fake, {});
  const taken = await finalRecord(dK.c, msg3.message_id);
  t.equal(taken.record_id, 'rec-dead-lease');
  t.ok(Date.now() - now >= 450, 'taken over only after the dead lease expired');
});

t.test('two instances on one store: each record is worked once (leases)', async (t) => {
  const store = new MemoryStorage();
  const fake = await startFakeAi(t, (req) => ({ delayMs: 5, body: { reply: `re ${req.json.record_id}` } }));
  const a = await boot(t, fake, { storageUnit: sharedStorageUnit(store), config: { instanceId: 'inst-a' } });
  const b = await boot(t, fake, { storageUnit: sharedStorageUnit(store), config: { instanceId: 'inst-b' } });
  await seedGroup(a.c, 'g1', ['p1', 'ai1']);
  const sends: Array<Promise<Message>> = [];
  for (let i = 0; i < 20; i++) sends.push(send(i % 2 ? a.c : b.c, 'p1', 'g1', `m${i}`));
  const msgs = await Promise.all(sends);
  for (const m of msgs) await finalRecord(a.c, m.message_id);
  const keys = fake.requests.map((r) => String(r.headers['idempotency-key']));
  t.equal(keys.length, 20, 'one call per record');
  t.equal(new Set(keys).size, 20);
  t.equal((await aiReplies(a.c, 'g1')).length, 20, 'exactly one reply per message');
});

t.test('two instances on one PostgreSQL database: each record is worked once', { skip: ADAPTERS.storage?.sequelize ? false : 'sequelize adapter not registered' }, async (t) => {
  const tb = Date.now();
  const url = await createTestDatabase(t);
  if (!url) return;
  t.comment(`database ${Date.now() - tb} ms`);
  const fake = await startFakeAi(t, (req) => ({ delayMs: 5, body: { reply: `re ${req.json.record_id}` } }));
  const bootPg = (instanceId: string): Promise<Booted> =>
    bootKernel(t, {
      plugins: [...CORE, 'ai-router'],
      adapters: { storage: 'sequelize', 'ai-provider': 'webhook' },
      config: { instanceId, storage: { url, migrate: true }, ai: { url: fake.url }, 'ai-router': { ...FAST_ROUTER, concurrency: 3 } },
    });
  const tk = Date.now();
  const a = await bootPg('pg-a');
  const b = await bootPg('pg-b');
  t.comment(`boot ${Date.now() - tk} ms`);
  await seedGroup(a.c, 'g1', ['p1', 'ai1']);
  const t0 = Date.now();
  await Promise.all(Array.from({ length: 30 }, (_, i) => send(i % 2 ? a.c : b.c, 'p1', 'g1', `m${i}`)));
  const t1 = Date.now();
  await waitFor(async () => (await a.c.storage.aiRecords.list({ status: 1, limit: 100 })).length === 30, '30 records succeeded');
  t.comment(`sends ${t1 - t0} ms, AI work ${Date.now() - t1} ms`);
  const keys = fake.requests.map((r) => String(r.headers['idempotency-key']));
  t.equal(keys.length, 30, 'one call per record');
  t.equal(new Set(keys).size, 30);
  const replies = await aiReplies(b.c, 'g1');
  t.equal(replies.length, 30, 'exactly one reply per message');
  t.equal(new Set(replies.map((r) => r.client_msg_id)).size, 30);
});

t.test('idle while no AI URL is configured', async (t) => {
  const { c } = await boot(t, null);
  await seedGroup(c, 'g1', ['p1', 'ai1']);
  t.equal(c.aiRouter.active, false);
  const m = await send(c, 'p1', 'g1', 'nobody listening');
  t.equal(m.seq, 1);
  t.same(await c.storage.aiRecords.list({ limit: 10 }), [], 'no record while idle');
  t.same(await c.aiRouter.testCall(admin), { ok: false, duration_ms: 0, error: 'AI service not configured (set IM_AI_URL)' });
});

t.test('bad settings fail the start with the setting named', async (t) => {
  await t.rejects(
    bootKernel(t, { plugins: [...CORE, 'ai-router'], adapters: { storage: 'memory' }, config: { 'ai-router': { concurrency: 0 } } }),
    /ai-router: concurrency/,
  );
  await t.rejects(
    bootKernel(t, { plugins: [...CORE, 'ai-router'], adapters: { storage: 'memory' }, config: { 'ai-router': { attemptTimeoutMs: 5000, leaseMs: 1000 } } }),
    /ai-router: leaseMs/,
  );
  await t.rejects(
    bootKernel(t, { plugins: [...CORE, 'ai-router'], adapters: { storage: 'memory', 'ai-provider': 'webhook' }, config: { ai: { url: 'ftp://x' } } }),
    /ai-provider: ai\.url/,
  );
});

t.test('HTTP: GET /api/ai/interactions access rules and POST /api/ai/test', { skip: PLUGINS.http ? false : 'http plugin not registered' }, async (t) => {
  const fake = await startFakeAi(t, { body: { reply: 'hi' } });
  const { c, baseUrl } = await boot(t, fake, { http: true });
  await seedGroup(c, 'g1', ['p1', 'doc1', 'ai1']);
  await seedGroup(c, 'g2', ['p2', 'doc2', 'ai2']);
  const m1 = await send(c, 'p1', 'g1', 'first');
  await finalRecord(c, m1.message_id);
  fake.respond({ status: 400 });
  const m2 = await send(c, 'p1', 'g1', 'second');
  await finalRecord(c, m2.message_id, 2);
  fake.respond({ body: { reply: 'hi' } });
  const m3 = await send(c, 'p2', 'g2', 'other group');
  await finalRecord(c, m3.message_id);

  const adminApi = api(baseUrl!, await tokenFor(c, 'admin', true));
  const doc1 = api(baseUrl!, await tokenFor(c, 'doc1'));
  const p1 = api(baseUrl!, await tokenFor(c, 'p1'));
  const doc2 = api(baseUrl!, await tokenFor(c, 'doc2'));

  const all = await adminApi.get('/api/ai/interactions');
  t.equal(all.status, 200);
  t.equal(all.body.records.length, 3, 'admin sees every group');
  t.same(
    all.body.records.map((r: AiInteractionRecord) => r.user_message_id),
    [m3.message_id, m2.message_id, m1.message_id],
    'newest first',
  );
  t.notOk('lease_owner' in all.body.records[0], 'internal lease fields not exposed');
  const mine = await doc1.get('/api/ai/interactions?group_id=g1');
  t.equal(mine.status, 200, 'DOCTOR member of the group');
  t.equal(mine.body.records.length, 2);
  const failed = await doc1.get('/api/ai/interactions?group_id=g1&status=2&limit=5');
  t.same(failed.body.records.map((r: AiInteractionRecord) => r.user_message_id), [m2.message_id]);
  t.equal(failed.body.records[0].error_message, 'AI service answered HTTP 400');
  t.equal((await p1.get('/api/ai/interactions?group_id=g1')).status, 403, 'patient member refused');
  t.equal((await doc2.get('/api/ai/interactions?group_id=g1')).status, 403, 'doctor of another group refused');
  t.equal((await doc1.get('/api/ai/interactions')).status, 403, 'non-admin must name a group');
  t.equal((await doc1.get('/api/ai/interactions?group_id=nope')).status, 404);
  const bad = await adminApi.get('/api/ai/interactions?status=7&limit=0');
  t.equal(bad.status, 400);
  t.equal(bad.body.error.code, 'VALIDATION_FAILED');
  t.same(bad.body.error.details.map((d: { path: string }) => d.path).sort(), ['limit', 'status']);
  t.equal((await api(baseUrl!).get('/api/ai/interactions')).status, 401, 'no token');

  const before = fake.requests.length;
  const ok = await adminApi.post('/api/ai/test');
  t.equal(ok.status, 200);
  t.equal(ok.body.ok, true);
  t.type(ok.body.duration_ms, 'number');
  t.equal(fake.requests.length, before + 1, 'one real call');
  t.match(fake.requests[before]!.headers['idempotency-key'], /^test-/);
  fake.respond({ status: 500 });
  const down = await adminApi.post('/api/ai/test');
  t.equal(down.status, 200);
  t.same({ ok: down.body.ok, error: down.body.error }, { ok: false, error: 'AI service answered HTTP 500' });
  t.equal((await doc1.post('/api/ai/test')).status, 403, 'admin only');
});

t.test('WebSocket: every member sees the AI reply and the ai_status frames', { skip: PLUGINS.ws ? false : 'ws plugin not registered' }, async (t) => {
  const fake = await startFakeAi(t, { delayMs: 50, body: { reply: 'answer for everyone' } });
  const { c, baseUrl } = await boot(t, fake, { http: true, plugins: [...CORE, 'http', 'ws', 'ai-router'] });
  await seedGroup(c, 'g1', ['p1', 'doc1', 'ai1']);
  const wsBase = baseUrl!.replace(/^http/, 'ws');
  const clients = new Map<string, { ws: WebSocket; frames: Frame[] }>();
  for (const u of ['p1', 'doc1', 'ai1']) {
    const ws = new WebSocket(`${wsBase}/ws/${u}?token=${await tokenFor(c, u)}`);
    const frames: Frame[] = [];
    ws.on('message', (data) => frames.push(JSON.parse(String(data)) as Frame));
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    t.teardown(() => ws.terminate());
    clients.set(u, { ws, frames });
  }
  // Wait until each socket's membership is loaded (a ping round trip, then the group is indexed).
  await waitFor(() => c.wsConnections.groupSocketCount('g1') === 3, 'sockets indexed for g1');
  const m = await send(c, 'p1', 'g1', 'hello everyone');
  for (const [u, { frames }] of clients) {
    const reply = await waitFor(
      () => frames.find((f) => f.type === 'message' && (f.data as Message).msg_type === 'AI_REPLY'),
      `AI reply pushed to ${u}`,
    );
    t.equal((reply.data as Message).msg_content, 'answer for everyone', `${u} got the reply`);
    t.ok(
      frames.some((f) => f.type === 'ai_status' && f.status === 'thinking' && f.user_message_id === m.message_id && f.group_id === 'g1'),
      `${u} got ai_status thinking`,
    );
  }
  // A failure is visible to the doctor too.
  fake.respond({ status: 400 });
  const m2 = await send(c, 'p1', 'g1', 'this one fails');
  const doc = clients.get('doc1')!;
  await waitFor(() => doc.frames.some((f) => f.type === 'ai_status' && f.status === 'failed' && f.user_message_id === m2.message_id), 'failed frame to the doctor');
});

t.test('metrics: AI calls by outcome and latency', { skip: PLUGINS.metrics ? false : 'metrics plugin not registered' }, async (t) => {
  const fake = await startFakeAi(t);
  const { c } = await boot(t, fake, { plugins: [...CORE, 'metrics', 'ai-router'] });
  await seedGroup(c, 'g1', ['p1', 'ai1']);
  const m = await send(c, 'p1', 'g1', 'count me');
  await finalRecord(c, m.message_id);
  const text = await c.metricsRegistry.metrics();
  t.match(text, /im_ai_calls_total\{outcome="succeeded"\} 1/);
  t.match(text, /im_ai_call_duration_seconds_count\{outcome="succeeded"\} 1/);
});

/** A Storage whose repository calls are counted by `repo.method` (each is one round trip on a SQL store). */
function countingStorage(inner: Storage): { storage: Storage; counts: Map<string, number>; reset(): void } {
  const counts = new Map<string, number>();
  const wrap = <T extends object>(repo: T, name: string): T =>
    new Proxy(repo, {
      get(target, prop, receiver) {
        const v: unknown = Reflect.get(target, prop, receiver);
        if (typeof v !== 'function') return v;
        const key = `${name}.${String(prop)}`;
        return (...args: unknown[]) => {
          counts.set(key, (counts.get(key) ?? 0) + 1);
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
  const storage: Storage = {
    users: wrap(inner.users, 'users'),
    groups: wrap(inner.groups, 'groups'),
    members: wrap(inner.members, 'members'),
    messages: wrap(inner.messages, 'messages'),
    aiRecords: wrap(inner.aiRecords, 'aiRecords'),
    transaction: (work) => {
      counts.set('transaction', (counts.get('transaction') ?? 0) + 1);
      return inner.transaction(work);
    },
    ping: () => inner.ping(),
    get background() {
      return storage;
    },
  };
  return { storage, counts, reset: () => counts.clear() };
}

t.test('storage calls per forwarded message in steady state', async (t) => {
  const counted = countingStorage(new MemoryStorage());
  const fake = await startFakeAi(t, (req) => ({ delayMs: 5, body: { reply: `re: ${req.json.message.msg_content}` } }));
  const { c } = await boot(t, fake, { storageUnit: sharedStorageUnit(counted.storage), router: { membersCacheMs: 60_000 } });
  const groups = ['s1', 's2', 's3', 's4'];
  for (const g of groups) await seedGroup(c, g, [`${g}p`, `doc-${g}`, `ai-${g}`]);
  // Warm-up: one forwarded message per group (first reads of members, users and history).
  for (const m of await Promise.all(groups.map((g) => send(c, `${g}p`, g, 'warm-up')))) await finalRecord(c, m.message_id);
  counted.reset();
  const msgs: Message[] = [];
  for (let i = 0; i < 5; i++) msgs.push(...(await Promise.all(groups.map((g) => send(c, `${g}p`, g, `m${i}`)))));
  for (const m of msgs) await finalRecord(c, m.message_id);
  // The patients' sends and the AI replies (chatService.send) are the core's; the rest is the router's.
  const core = new Set(['members.get', 'messages.append', 'groups.get']);
  const aiRecordsList = counted.counts.get('aiRecords.list') ?? 0; // the test's own polling (finalRecord)
  const router = [...counted.counts].filter(([k]) => !core.has(k) && k !== 'aiRecords.list');
  const total = router.reduce((s, [, n]) => s + n, 0);
  t.comment(`router storage calls for ${msgs.length} forwarded messages: ${JSON.stringify(Object.fromEntries(router))} (test polling: ${aiRecordsList})`);
  t.comment(`per forwarded message: ${(total / msgs.length).toFixed(2)}`);
  const snapshot = new Map(counted.counts);
  const n = (k: string): number => snapshot.get(k) ?? 0;
  t.equal((await Promise.all(groups.map((g) => aiReplies(c, g)))).flat().length, 24, 'one reply per message');
  t.equal(n('aiRecords.createIfAbsent'), msgs.length, 'one record insert per message');
  t.equal(n('aiRecords.update'), msgs.length, 'one record update per message');
  t.ok(n('aiRecords.claimDue') <= msgs.length + 5, `claims (${n('aiRecords.claimDue')}) at most about one per message`);
  t.same(
    { get: n('aiRecords.get'), messageGet: n('messages.get'), history: n('messages.list'), members: n('members.list'), users: n('users.getMany') },
    { get: 0, messageGet: 0, history: 0, members: 0, users: 0 },
    'no re-read of the record or the message; members, users and history from the caches',
  );
});

t.test('members cache: a member added or removed, on any instance, is seen by the next decision', async (t) => {
  const fake = await startFakeAi(t);
  // A long TTL: only the events can end a cached member list here.
  const { c } = await boot(t, fake, { router: { membersCacheMs: 600_000 } });
  await seedGroup(c, 'g1', ['p1', 'p2', 'ai1']);
  const m = await send(c, 'p1', 'g1', 'hello');
  const m2 = await send(c, 'p2', 'g1', 'me too');
  t.match(await c.aiRouter.decide(m), { forward: true });
  await c.groupService.removeMember(admin, 'g1', 'ai1');
  t.same(await c.aiRouter.decide(m), { forward: false, reason: 'no-assistant' }, 'a removed assistant: seen at once');
  await c.groupService.addMember(admin, 'g1', { user_id: 'ai1' });
  t.match(await c.aiRouter.decide(m), { forward: true, assistant: { user_id: 'ai1' } }, 'an added assistant: seen at once');
  await c.groupService.removeMember(admin, 'g1', 'p1');
  t.same(await c.aiRouter.decide(m), { forward: false, reason: 'not-member' }, 'a removed sender: seen at once');

  // A change made by another instance: storage changed there, the event arrives through the cluster bus.
  t.match(await c.aiRouter.decide(m2), { forward: true });
  const ai1 = (await c.storage.members.get('g1', 'ai1'))!;
  await c.storage.members.remove('g1', 'ai1');
  c.bus.publish('member.removed', { member: ai1 }, { origin: 'remote', instance_id: 'other' });
  await new Promise((r) => setImmediate(r)); // the event is handled
  t.same(await c.aiRouter.decide(m2), { forward: false, reason: 'no-assistant' }, 'a remote removal: seen at once');
  await c.storage.members.add(ai1);
  c.bus.publish('member.added', { member: ai1 }, { origin: 'remote', instance_id: 'other' });
  await new Promise((r) => setImmediate(r));
  t.match(await c.aiRouter.decide(m2), { forward: true }, 'a remote addition: seen at once');

  // Without an event (one lost on the way), the TTL ends the cached list.
  const { c: c2 } = await boot(t, fake, { router: { membersCacheMs: 100 } });
  await seedGroup(c2, 'g2', ['p3', 'ai3']);
  const m3 = await send(c2, 'p3', 'g2', 'hi');
  t.match(await c2.aiRouter.decide(m3), { forward: true });
  await c2.storage.members.remove('g2', 'ai3');
  await waitFor(async () => (await c2.aiRouter.decide(m3)).forward === false, 'the change seen after the TTL');
  t.same(await c2.aiRouter.decide(m3), { forward: false, reason: 'no-assistant' });

  // membersCacheMs 0: storage every time.
  const { c: c3 } = await boot(t, fake, { router: { membersCacheMs: 0 } });
  await seedGroup(c3, 'g3', ['p4', 'ai4']);
  const m4 = await send(c3, 'p4', 'g3', 'hi');
  t.match(await c3.aiRouter.decide(m4), { forward: true });
  await c3.storage.members.remove('g3', 'ai4');
  t.same(await c3.aiRouter.decide(m4), { forward: false, reason: 'no-assistant' }, 'no cache: seen at once');
});

t.test("history: always the group's last N messages as storage has them (cached, partly cached or not)", async (t) => {
  const fake = await startFakeAi(t, (req) => ({ body: { reply: `re ${req.json.message.msg_content}` } }));
  const { c } = await boot(t, fake, { router: { historySize: 4 } });
  await seedGroup(c, 'g1', ['p1', 'doc1', 'ai1']);
  const raw = (from: string, text: string) => ({
    message_id: `raw-${text}`,
    group_id: 'g1',
    from_user_id: from,
    msg_type: 'TEXT' as const,
    msg_content: text,
    client_msg_id: null,
    created_at: new Date().toISOString(),
  });
  await send(c, 'doc1', 'g1', 'd0'); // before the router tracks the group: read from storage
  const m1 = await send(c, 'p1', 'g1', 'p-1');
  await finalRecord(c, m1.message_id);
  await send(c, 'doc1', 'g1', 'd1'); // through the bus into the cache
  // Stored by another instance, its event arriving through the cluster bus (forwarded there, not here).
  const { message: remote } = await c.storage.messages.append(raw('p1', 'remote'));
  c.bus.publish('message.stored', { message: remote, transport: 'ws' }, { origin: 'remote', instance_id: 'other' });
  const m2 = await send(c, 'p1', 'g1', 'p-2'); // history all from the cache
  await finalRecord(c, m2.message_id);
  await c.storage.messages.append(raw('doc1', 'lost')); // its event never arrives: only storage has it
  const m3 = await send(c, 'p1', 'g1', 'p-3'); // a gap in the cache: read from storage
  await finalRecord(c, m3.message_id);
  const m4 = await send(c, 'p1', 'g1', 'p-4');
  await finalRecord(c, m4.message_id);
  t.equal(fake.requests.length, 4, 'the remote message is not forwarded by this instance');
  for (const req of fake.requests) {
    const seq = req.json.message.seq as number;
    const page = await c.storage.messages.list('g1', { before_seq: seq + 1, limit: 4 });
    t.same(req.json.history, page.messages, `history of ${req.json.message.msg_content} (seq ${seq})`);
  }
  t.same(
    fake.requests[3]!.json.history.map((m: Message) => m.msg_content),
    ['re p-2', 'lost', 'p-3', 're p-3', 'p-4'].slice(-4),
    'the lost message and the AI replies are in the history',
  );
});

t.test('doctor pause decided from the cached history', async (t) => {
  const fake = await startFakeAi(t);
  const { c, frames } = await boot(t, fake, { router: { doctorPauseMs: 3_600_000 } });
  await seedGroup(c, 'g1', ['p1', 'doc1', 'ai1']);
  const first = await send(c, 'p1', 'g1', 'before the doctor');
  await finalRecord(c, first.message_id); // forwarded: the group's messages are cached from now on
  await send(c, 'doc1', 'g1', 'doctor here');
  const held = await send(c, 'p1', 'g1', 'after the doctor');
  await waitFor(() => frames.some((f) => f.status === 'paused' && f.user_message_id === held.message_id), 'paused frame');
  t.same(await c.aiRouter.decide(held), { forward: false, reason: 'paused' });
  t.equal(fake.requests.length, 1, 'only the message before the doctor spoke');
});

t.test('an attempt that waited long for a slot re-reads its record first', async (t) => {
  // The admin test call holds the only slot for 400 ms; re-read after (leaseMs - attemptTimeoutMs) / 2 = 50 ms.
  const fake = await startFakeAi(t, (req) =>
    String(req.json.record_id).startsWith('test-') ? { delayMs: 400, body: { reply: null } } : { body: { reply: 'too late' } },
  );
  const { c } = await boot(t, fake, { router: { concurrency: 1, attemptTimeoutMs: 900, leaseMs: 1000 } });
  await seedGroup(c, 'g1', ['p1', 'ai1']);
  const test = c.aiRouter.testCall(admin);
  await fake.waitForRequests(1);
  const m = await send(c, 'p1', 'g1', 'waiting for a slot');
  const rec = await waitFor(async () => {
    const r = await recordOf(c, m.message_id);
    return r?.lease_owner ? r : undefined;
  }, 'record claimed');
  // Meanwhile the record was finished elsewhere (as by another instance after the lease ran out).
  await c.storage.aiRecords.update(rec.record_id, { status: 1, lease_owner: null, lease_until: null, updated_at: new Date().toISOString() });
  t.equal((await test).ok, true);
  await new Promise((r) => setTimeout(r, 200));
  t.equal(fake.requests.length, 1, 'only the test call: the record was re-read and left alone');
  t.same(await aiReplies(c, 'g1'), []);
});

t.test('a record in flight is not started again by later claims', async (t) => {
  const fake = await startFakeAi(t, (req) => ({ delayMs: req.json.message.msg_content === 'slow' ? 300 : 0, body: { reply: 'ok' } }));
  const { c } = await boot(t, fake);
  await seedGroup(c, 'g1', ['p1', 'ai1']);
  const slow = await send(c, 'p1', 'g1', 'slow');
  await fake.waitForRequests(1);
  const others = await Promise.all([1, 2, 3].map((i) => send(c, 'p1', 'g1', `fast ${i}`)));
  for (let i = 0; i < 5; i++) c.aiRouter.kick();
  for (const m of [slow, ...others]) await finalRecord(c, m.message_id);
  const keys = fake.requests.map((r) => String(r.headers['idempotency-key']));
  t.equal(keys.length, 4, 'one call per record');
  t.equal(new Set(keys).size, 4);
  t.equal((await aiReplies(c, 'g1')).length, 4);
  const records = await c.storage.aiRecords.list({ limit: 10 });
  t.ok(records.every((r) => r.lease_owner === null && r.lease_until === null), 'no lease left behind');
});

// ---------------------------------------------------------------- load shedding

/** An event-loop delay the test sets by hand. */
class ManualDelay implements EventLoopDelaySampler {
  ms = 0;
  sample(): number {
    return this.ms;
  }
}

/** Registers the router's event-loop delay source (as `aiEventLoopDelay`). */
function loadSheddingUnit(sampler: EventLoopDelaySampler): Plugin<unknown> {
  return definePlugin({
    name: 'test-event-loop-delay',
    register({ container }) {
      container.register({ aiEventLoopDelay: asValue(sampler) });
    },
  });
}

/** On, with the router's own timer out of the way (a minute): the tests call evaluateLoad() themselves. */
const SHEDDING = { maxEventLoopDelayMs: 50, maxSendP99Ms: 0, intervalMs: 60_000 };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('load shedding: AdaptiveLimit halves and raises; the default sampler sees a blocked event loop', async (t) => {
  const l = new AdaptiveLimit(8);
  t.equal(l.step, 1, '5 % of 8, at least 1');
  t.same(
    [51, 100, 100, 100, 50, 0, 0, 0, 0, 0, 0, 0].map((d) => l.next(d > 50)),
    [4, 2, 1, 1, 2, 3, 4, 5, 6, 7, 8, 8],
    'above the threshold: halved, never below 1; at or below: +1, never above concurrency',
  );
  const big = new AdaptiveLimit(1000);
  t.equal(big.step, 50, '5 % of 1000: back from the floor in about 20 intervals');
  t.same(
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map(() => big.next(true)),
    [500, 250, 125, 62, 31, 15, 7, 3, 1, 1],
  );
  t.same([big.next(false), big.next(false)], [51, 101]);

  const sampler = eventLoopDelaySampler();
  t.teardown(() => sampler.close?.());
  t.equal(sampler.sample(), 0, 'nothing measured yet: 0');
  await sleep(50);
  sampler.sample(); // a new interval starts here
  const until = performance.now() + 150;
  while (performance.now() < until); // the event loop blocked for 150 ms
  await sleep(30);
  const ms = sampler.sample();
  t.ok(ms >= 100, `a 150 ms block is measured (${ms.toFixed(1)} ms)`);
  t.equal(sampler.sample(), 0, 'the next interval starts empty');

  // Without an injected source the router measures this process.
  const fake = await startFakeAi(t);
  const { c } = await boot(t, fake, { router: { loadShedding: { maxEventLoopDelayMs: 50, intervalMs: 60_000 } } });
  const limit = c.aiRouter.evaluateLoad();
  t.ok(limit >= 1 && limit <= 8, `a limit within 1..concurrency (${limit})`);
  t.type(c.aiRouter.load.eventLoopDelayMs, 'number', 'the measured delay is exposed');
});

t.test('load shedding: a delayed event loop cuts the records worked at once; the rest wait pending and are worked when it falls', async (t) => {
  const delay = new ManualDelay();
  const logs: LogLine[] = [];
  const fake = await startFakeAi(t);
  const plugins = PLUGINS.metrics ? [...CORE, 'metrics', 'ai-router'] : [...CORE, 'ai-router'];
  const { c } = await boot(t, fake, {
    plugins,
    router: { concurrency: 4, loadShedding: SHEDDING },
    units: [loadSheddingUnit(delay)],
    logger: recordingLogger(logs),
  });
  // The AI holds every call until the test lets it answer; each arrival notes the calls held then (itself included) and the limit.
  const held: Array<() => void> = [];
  let open = false;
  const arrivals: Array<{ calls: number; limit: number }> = [];
  fake.respond((req) => {
    arrivals.push({ calls: fake.pending, limit: c.aiRouter.load.limit });
    const answer: FakeAiAnswer = { body: { reply: `re: ${req.json.message.msg_content}` } };
    return open ? answer : new Promise<FakeAiAnswer>((resolve) => held.push(() => resolve(answer)));
  });
  t.same(c.aiRouter.load, { limit: 4, concurrency: 4, eventLoopDelayMs: null, sendP99Ms: null, shedding: false, intakeDeferred: 0 }, 'full concurrency at start');

  delay.ms = 200;
  t.equal(c.aiRouter.evaluateLoad(), 2, 'a delay above maxEventLoopDelayMs halves the limit');
  t.equal(c.aiRouter.evaluateLoad(), 1, 'and halves it again');
  t.equal(c.aiRouter.evaluateLoad(), 1, 'never below 1');
  t.match(c.aiRouter.load, { limit: 1, eventLoopDelayMs: 200, shedding: true });

  await seedGroup(c, 'g1', ['p1', 'ai1']);
  const msgs: Message[] = [];
  for (let i = 0; i < 6; i++) msgs.push(await send(c, 'p1', 'g1', `m${i}`));
  await waitFor(async () => (await c.storage.aiRecords.list({ limit: 100 })).length === 6, 'a record per message (at once or by the rescan)');
  await fake.waitForRequests(1);
  const leased = async (): Promise<number> => (await c.storage.aiRecords.list({ limit: 100 })).filter((r) => r.lease_owner !== null).length;
  const records = await c.storage.aiRecords.list({ limit: 100 });
  t.equal(records.filter((r) => r.status === 0).length, 6, 'all six pending');
  t.equal(await leased(), 1, 'one worked, five wait unclaimed in storage');
  t.equal(fake.requests.length, 1, 'one call');

  delay.ms = 5;
  t.equal(c.aiRouter.evaluateLoad(), 2, 'a delay at or below the threshold raises the limit (by 5 % of concurrency, at least 1)');
  await fake.waitForRequests(2);
  t.equal(await leased(), 2, 'the new slot takes a pending record at once');
  t.equal(c.aiRouter.evaluateLoad(), 3);
  t.equal(c.aiRouter.evaluateLoad(), 4, 'back to concurrency');
  t.equal(c.aiRouter.evaluateLoad(), 4, 'never above it');
  await fake.waitForRequests(4);
  t.equal(fake.pending, 4, 'four calls at once again');
  t.match(c.aiRouter.load, { limit: 4, eventLoopDelayMs: 5, shedding: false });

  open = true;
  for (const release of held.splice(0)) release();
  for (const m of msgs) await finalRecord(c, m.message_id);
  t.ok(
    arrivals.every((a) => a.calls <= a.limit),
    `never more calls at once than the limit (${JSON.stringify(arrivals)})`,
  );
  t.equal((await aiReplies(c, 'g1')).length, 6, 'every message answered once');
  t.equal(new Set(fake.requests.map((r) => r.headers['idempotency-key'])).size, 6, 'one call per record');

  const shedding = logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('AI load shedding'));
  t.same(
    shedding.filter((l) => l.level === 'info').map((l) => ({ limit: l.limit, concurrency: l.concurrency, lowest_limit: l.lowest_limit })),
    [
      { limit: 2, concurrency: 4, lowest_limit: undefined },
      { limit: 4, concurrency: 4, lowest_limit: 1 },
    ],
    'info when shedding begins and ends, not at every change',
  );
  t.match(shedding.find((l) => l.level === 'info'), { plugin: 'ai-router', event_loop_delay_ms: 200, max_event_loop_delay_ms: 50 });
  t.equal(shedding.filter((l) => l.level === 'debug').length, 3, 'the changes in between at debug');
  if (PLUGINS.metrics) {
    const text = await c.metricsRegistry.metrics();
    t.match(text, /\nim_ai_concurrency_limit 4\n/);
    t.match(text, /\nim_ai_event_loop_delay_seconds 0\.005\n/);
    t.match(text, /\nim_ai_intake_deferred_total \d+\n/);
  }
});

t.test('load shedding: nothing is lost: events over the cut intake limit are recorded by the rescan, every record ends done', async (t) => {
  // The first record insert (the first message's intake) waits until the test lets it go.
  const inner = new MemoryStorage();
  let insertHeld!: () => void;
  const held = new Promise<void>((r) => (insertHeld = r));
  let releaseInsert!: () => void;
  const gate = new Promise<void>((r) => (releaseInsert = r));
  let first = true;
  const aiRecords = new Proxy(inner.aiRecords, {
    get(target, prop, receiver) {
      const v: unknown = Reflect.get(target, prop, receiver);
      if (typeof v !== 'function') return v;
      if (prop === 'createIfAbsent') {
        return async (...args: Parameters<typeof target.createIfAbsent>) => {
          if (first) {
            first = false;
            insertHeld();
            await gate;
          }
          return target.createIfAbsent(...args);
        };
      }
      return (...args: unknown[]) => (v as (...a: unknown[]) => unknown).apply(target, args);
    },
  });
  const storage: Storage = {
    users: inner.users,
    groups: inner.groups,
    members: inner.members,
    messages: inner.messages,
    aiRecords,
    transaction: (work) => inner.transaction(work),
    ping: () => inner.ping(),
    get background() {
      return storage;
    },
  };
  const delay = new ManualDelay();
  const fake = await startFakeAi(t);
  let most = 0;
  fake.respond((req) => {
    most = Math.max(most, fake.pending);
    return { delayMs: 2, body: { reply: `re: ${req.json.message.msg_content}` } };
  });
  const { c } = await boot(t, fake, {
    storageUnit: sharedStorageUnit(storage),
    // A rescan examines at most 5 messages: the rest is left to the next poll's.
    router: { concurrency: 4, loadShedding: SHEDDING, recovery: { windowMs: 60_000, maxMessages: 5, batchSize: 2 } },
    units: [loadSheddingUnit(delay)],
  });
  delay.ms = 500;
  c.aiRouter.evaluateLoad();
  c.aiRouter.evaluateLoad();
  t.equal(c.aiRouter.load.limit, 1, 'cut to 1: one record worked and one event recorded at once');

  await seedGroup(c, 'g1', ['p1', 'p2', 'ai1']);
  const m0 = await send(c, 'p1', 'g1', 'first');
  await held; // m0's intake holds the one intake slot
  const rest: Message[] = [];
  for (let i = 1; i <= 20; i++) rest.push(await send(c, i % 2 === 1 ? 'p1' : 'p2', 'g1', `m${i}`));
  await waitFor(() => c.aiRouter.load.intakeDeferred === 20, 'the other 20 events left to the rescan');
  // Still shedding: the rescans record them (in passes of 5) and they are worked one at a time.
  for (const m of rest) await finalRecord(c, m.message_id);
  t.equal(c.aiRouter.load.limit, 1, 'all while the limit stayed at 1');
  releaseInsert();
  await finalRecord(c, m0.message_id);

  const records = await c.storage.aiRecords.list({ limit: 100 });
  t.equal(records.length, 21, 'one record per message');
  t.ok(records.every((r) => r.status === 1 && r.lease_owner === null), 'every record done, no lease left');
  t.equal((await aiReplies(c, 'g1')).length, 21, 'every message answered once');
  t.equal(new Set(fake.requests.map((r) => r.headers['idempotency-key'])).size, 21, 'one call per record');
  t.equal(most, 1, 'never more than one call at once');

  delay.ms = 0;
  for (let i = 0; i < 3; i++) c.aiRouter.evaluateLoad();
  t.match(c.aiRouter.load, { limit: 4, shedding: false, intakeDeferred: 20 });
});

t.test("load shedding: users' slow sends cut the AI work too", async (t) => {
  let sendP99 = 0;
  const fake = await startFakeAi(t);
  const { c } = await boot(t, fake, {
    router: { concurrency: 8, loadShedding: { maxEventLoopDelayMs: 0, maxSendP99Ms: 30, intervalMs: 60_000 } },
    units: [
      definePlugin({
        name: 'test-send-p99',
        register({ container }) {
          container.register({ aiSendP99Ms: asValue(() => sendP99) });
        },
      }),
    ],
  });
  sendP99 = 45;
  t.equal(c.aiRouter.evaluateLoad(), 4, 'send p99 above maxSendP99Ms halves the limit');
  t.match(c.aiRouter.load, { limit: 4, sendP99Ms: 45, eventLoopDelayMs: null, shedding: true });
  sendP99 = 30;
  t.equal(c.aiRouter.evaluateLoad(), 5, 'at or below it the limit rises again');
});

t.test('WindowedP99: the last complete window answers, the same for every reader', async (t) => {
  let now = 0;
  const w = new WindowedP99(500, () => now);
  for (let i = 1; i <= 100; i++) w.record(i);
  t.same(w.last(), { p99Ms: 0, count: 0 }, 'the window in progress is not reported');
  now = 600;
  const first = w.last();
  t.equal(first.count, 100);
  t.ok(first.p99Ms >= 98 && first.p99Ms <= 100, `p99 of 1..100 ms (${first.p99Ms})`);
  t.same(w.last(), first, 'asked again: the same answer');
  w.record(7);
  now = 1050;
  t.match(w.last(), { count: 1 }, 'the next window');
  now = 2600;
  t.same(w.last(), { p99Ms: 0, count: 0 }, 'after windows without records: 0');
});

t.test('load shedding settings: on by default, and bad values fail the start with the setting named', async (t) => {
  t.same(validateOptions(aiRouterOptionsSchema, {}).loadShedding, { maxEventLoopDelayMs: 50, maxSendP99Ms: 20, intervalMs: 500 }, 'defaults: 50 ms loop delay, 20 ms send p99, every 500 ms');
  t.same(
    validateOptions(aiRouterOptionsSchema, { loadShedding: { maxEventLoopDelayMs: 0, maxSendP99Ms: 0 } }).loadShedding,
    { maxEventLoopDelayMs: 0, maxSendP99Ms: 0, intervalMs: 500 },
    '0 = off',
  );
  const start = (loadShedding: unknown): Promise<Booted> =>
    bootKernel(t, { plugins: [...CORE, 'ai-router'], adapters: { storage: 'memory' }, config: { 'ai-router': { loadShedding } } });
  await t.rejects(start({ maxEventLoopDelayMs: -1 }), { message: 'ai-router: loadShedding.maxEventLoopDelayMs: must be greater than or equal to 0' });
  await t.rejects(start({ maxEventLoopDelayMs: 'fast' }), { message: 'ai-router: loadShedding.maxEventLoopDelayMs: must be a number' });
  await t.rejects(start({ maxEventLoopDelayMs: 2.5 }), { message: 'ai-router: loadShedding.maxEventLoopDelayMs: must be an integer' });
  await t.rejects(start({ maxSendP99Ms: -5 }), { message: 'ai-router: loadShedding.maxSendP99Ms: must be greater than or equal to 0' });
  await t.rejects(start({ intervalMs: 10 }), { message: 'ai-router: loadShedding.intervalMs: must be greater than or equal to 50' });
  await t.rejects(start({ intervalMs: 600_000 }), { message: 'ai-router: loadShedding.intervalMs: must be less than or equal to 60000' });
  await t.rejects(start({ thresholdMs: 50 }), { message: 'ai-router: loadShedding.thresholdMs: is not allowed' });
  await t.rejects(start(true), { message: 'ai-router: loadShedding: must be of type object' });
});
