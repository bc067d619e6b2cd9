/**
 * ai-router.role: the AI layer in a process of its own. An `intake` instance
 * (http, ws, chat) creates the records of the messages it stores and wakes the
 * workers with 'ai.record.created'; a `worker` instance (chat + ai-router only)
 * claims and works them. Real PostgreSQL and NATS (SERVICES); under CI=true an
 * unreachable server fails the test.
 */
import { randomBytes } from 'node:crypto';
import t, { type Test } from 'tap';
import type { EventMeta } from '../../kernel/bus.js';
import type { Cradle } from '../../kernel/container.js';
import type { Message } from '../../kernel/domain.js';
import '../../plugins/ai-router/ai-router.public.js';
import '../../plugins/ws/ws.public.js';
import '../../adapters/cluster/nats/nats-cluster.adapter.js';
import { admin, as, bootKernel, seedGroup, type Booted } from '../helpers/boot.js';
import { FAST_ROUTER, finalRecord, recordOf, startFakeAi, waitFor, type FakeAi } from '../helpers/fake-ai.js';
import { api, bootHttp, tokenFor } from '../helpers/http.js';
import { createTestDatabase, requireService, SERVICES } from '../helpers/services.js';
import { connectWs, type Frame, type WsTestClient } from '../helpers/ws-client.js';

t.setTimeout(120_000);

/** Fast retries; load shedding off, on the users' send p99 too (a busy test machine must not change these tests). */
const FAST = { ...FAST_ROUTER, loadShedding: { ...FAST_ROUTER.loadShedding, maxSendP99Ms: 0 } };

/** A poll far beyond the test's length: only the event (or a start) can wake a worker. */
const NEVER_POLL = 600_000;

/** The worker's minimal plugin list (docs/ai.md, "Running the AI layer in its own process"). */
const WORKER_PLUGINS = ['chat', 'ai-router'];
const INTAKE_PLUGINS = ['auth', 'users', 'groups', 'chat', 'http', 'ws', 'metrics', 'ai-router'];

interface Shared {
  dbUrl: string;
  prefix: string;
}

async function shared(t: Test): Promise<Shared | null> {
  if (!(await requireService(t, 'nats'))) return null;
  const dbUrl = await createTestDatabase(t);
  if (!dbUrl) return null;
  return { dbUrl, prefix: `im.test.${randomBytes(4).toString('hex')}` };
}

/** The IM instance: http, ws, chat, and the AI router as `intake`. `trap` is its AI URL: it must never be called. */
async function intake(t: Test, s: Shared, trap: FakeAi, router: Record<string, unknown> = {}): Promise<Booted & { baseUrl: string }> {
  const { booted, baseUrl } = await bootHttp(t, {
    plugins: INTAKE_PLUGINS,
    adapters: { storage: 'sequelize', cluster: 'nats', 'ai-provider': 'webhook' },
    config: {
      instanceId: 'im-1',
      storage: { url: s.dbUrl },
      cluster: { url: SERVICES.nats.url, subjectPrefix: s.prefix },
      ai: { url: trap.url },
      'ai-router': { ...FAST, pollIntervalMs: 100, role: 'intake', ...router },
    },
  });
  return { ...booted, baseUrl };
}

/** The AI worker: storage, chat, the cluster bus, the AI provider, the router as `worker`. */
async function worker(
  t: Test,
  s: Shared,
  ai: FakeAi,
  o: { id?: string; router?: Record<string, unknown>; cluster?: boolean } = {},
): Promise<Booted> {
  return bootKernel(t, {
    plugins: WORKER_PLUGINS,
    adapters: { storage: 'sequelize', 'ai-provider': 'webhook', ...(o.cluster === false ? {} : { cluster: 'nats' }) },
    config: {
      instanceId: o.id ?? 'ai-worker-1',
      storage: { url: s.dbUrl },
      ...(o.cluster === false ? {} : { cluster: { url: SERVICES.nats.url, subjectPrefix: s.prefix } }),
      ai: { url: ai.url },
      'ai-router': { ...FAST, pollIntervalMs: NEVER_POLL, role: 'worker', ...(o.router ?? {}) },
    },
  });
}


const isReply = (f: Frame): boolean => f.type === 'message' && f.data.msg_type === 'AI_REPLY';
const status = (s: string, messageId: string) => (f: Frame) => f.type === 'ai_status' && f.status === s && f.user_message_id === messageId;

async function patientSocket(t: Test, I: Booted & { baseUrl: string }, user = 'p1', group = 'g1'): Promise<WsTestClient> {
  const ws = await connectWs(t, I.baseUrl, user, await tokenFor(I.c, user));
  await waitFor(() => I.c.wsConnections.groupSocketCount(group) >= 1 || undefined, 'socket indexed');
  return ws;
}

t.test('intake + worker: the reply and ai_status frames reach the intake socket; the intake makes no AI call', async (t) => {
  const s = await shared(t);
  if (!s) return;
  const trap = await startFakeAi(t, { body: { reply: 'the intake must never call' } });
  const ai = await startFakeAi(t, (req) => ({ delayMs: 30, body: { reply: `answer to: ${req.json.message.msg_content}` } }));
  const I = await intake(t, s, trap, { doctorPauseMs: 60_000 });
  const W = await worker(t, s, ai);
  t.equal(W.c.aiRouter.options.role, 'worker');
  await seedGroup(I.c, 'g1', ['p1', 'doc1', 'ai1']);
  const ws = await patientSocket(t, I);

  // The patient writes on the intake instance; the worker (poll 10 min) is woken by ai.record.created.
  const t0 = Date.now();
  const sent = await api(I.baseUrl, await tokenFor(I.c, 'p1')).post('/api/message/send', { group_id: 'g1', msg_content: 'I have a headache' });
  t.equal(sent.status, 201);
  const mid = sent.body.message_id as string;
  const thinking = await ws.next(status('thinking', mid), 'ai_status thinking from the worker, on the intake socket');
  const reply = await ws.next(isReply, 'the AI reply posted by the worker, on the intake socket');
  const elapsed = Date.now() - t0;
  t.ok(elapsed < 10_000, `answered in ${elapsed} ms, long before the worker's poll (${NEVER_POLL} ms): the event woke it`);
  t.equal(reply.data.msg_content, 'answer to: I have a headache');
  t.equal(reply.data.from_user_id, 'ai1');
  const rec = await finalRecord(I.c, mid);
  t.equal(rec.ai_message_id, reply.data.message_id, 'the record names the reply');
  t.equal(rec.attempts, 1);
  t.equal(thinking.record_id, rec.record_id);
  t.equal(ai.requests.length, 1, 'one call, by the worker');
  t.equal(ai.requests[0]!.headers['idempotency-key'], rec.record_id);
  t.equal(trap.requests.length, 0, 'the intake instance made no AI call');
  t.equal(rec.ai_service_url, ai.url, "the worker's AI service is on the record");

  // A failure: the worker's 'failed' frame reaches the intake socket too.
  ai.respond({ status: 400 });
  const m2 = (await I.c.chatService.send(as('p1'), { group_id: 'g1', msg_content: 'this one fails' }, { transport: 'test' })).message;
  await ws.next(status('failed', m2.message_id), 'ai_status failed from the worker');
  await finalRecord(I.c, m2.message_id, 2);

  // The doctor pause is decided by the intake: 'paused', no record.
  await I.c.chatService.send(as('doc1'), { group_id: 'g1', msg_content: 'doctor here' }, { transport: 'test' });
  const m3 = (await I.c.chatService.send(as('p1'), { group_id: 'g1', msg_content: 'thanks' }, { transport: 'test' })).message;
  await ws.next(status('paused', m3.message_id), 'ai_status paused from the intake');
  t.equal(await recordOf(I.c, m3.message_id), undefined, 'no record for a paused message');

  t.equal(trap.requests.length, 0, 'still no AI call from the intake instance');
  t.equal(ai.requests.length, 2);
  const metrics = (await api(I.baseUrl).get('/metrics')).body as string;
  t.match(metrics, /im_ai_router_role\{role="intake"\} 1/, 'the role on /metrics');
  t.match(metrics, /im_ai_records_created_total 2/, 'records created by the intake');
  t.notMatch(metrics, /im_ai_calls_total\{/, 'no AI call counted on the intake');
  t.equal((await api(I.baseUrl).get('/readyz')).status, 200, 'the intake is ready');
});

t.test('a worker that is down when the message arrives picks the record up when it starts', async (t) => {
  const s = await shared(t);
  if (!s) return;
  const trap = await startFakeAi(t);
  const ai = await startFakeAi(t, { body: { reply: 'late but here' } });
  const I = await intake(t, s, trap);
  await seedGroup(I.c, 'g1', ['p1', 'doc1', 'ai1']);
  const ws = await patientSocket(t, I);

  // No worker yet: the record waits pending (its ai.record.created reached nobody).
  const m1 = (await I.c.chatService.send(as('p1'), { group_id: 'g1', msg_content: 'anyone there?' }, { transport: 'test' })).message;
  const pending = await waitFor(() => recordOf(I.c, m1.message_id), 'record created by the intake');
  t.equal(pending.status, 0, 'pending');
  await new Promise((r) => setTimeout(r, 300));
  t.equal((await recordOf(I.c, m1.message_id))!.status, 0, 'still pending: the intake does not work it');
  t.equal(trap.requests.length + ai.requests.length, 0, 'no AI call while no worker runs');

  // The worker starts (poll 10 min): it claims the due record at start.
  await worker(t, s, ai);
  const reply = await ws.next(isReply, 'the reply reaches the intake socket once the worker runs');
  t.equal(reply.data.msg_content, 'late but here');
  t.equal((await finalRecord(I.c, m1.message_id)).ai_message_id, reply.data.message_id);

  t.equal(ai.requests.length, 1, 'one call');
  t.equal(trap.requests.length, 0, 'never the intake');
});

t.test('poll backstop: a lost ai.record.created is made up for by the poll', async (t) => {
  const s = await shared(t);
  if (!s) return;
  const trap = await startFakeAi(t);
  const ai = await startFakeAi(t, { body: { reply: 'from the poll' } });
  const I = await intake(t, s, trap);
  // This worker shares the database but not the cluster bus: every event is lost for it.
  const W = await worker(t, s, ai, { cluster: false, router: { pollIntervalMs: 300 } });
  await seedGroup(I.c, 'g1', ['p1', 'ai1']);
  const m = (await I.c.chatService.send(as('p1'), { group_id: 'g1', msg_content: 'hello' }, { transport: 'test' })).message;
  const rec = await finalRecord(W.c, m.message_id);
  t.ok(rec.ai_message_id, 'the reply was posted');
  t.equal(ai.requests.length, 1);
  t.equal(trap.requests.length, 0);
});

t.test('roles on one kernel (memory storage): intake creates and announces, worker creates none, all is unchanged', async (t) => {
  const ai = await startFakeAi(t);
  const boot = (role: string, url = ai.url) =>
    bootKernel(t, {
      plugins: ['auth', 'users', 'groups', 'chat', 'ai-router'],
      adapters: { storage: 'memory', 'ai-provider': 'webhook' },
      config: { ai: { url }, 'ai-router': { ...FAST, pollIntervalMs: 50, role } },
    });
  const events = (c: Cradle) => {
    const seen: Array<{ payload: unknown; meta: EventMeta }> = [];
    c.bus.subscribe('ai.record.created', (payload, meta) => {
      seen.push({ payload, meta });
    });
    return seen;
  };

  // intake: a record, pending, announced; never worked (no AI URL needed).
  const I = await boot('intake', '');
  const seenI = events(I.c);
  await seedGroup(I.c, 'g1', ['p1', 'ai1']);
  const m = (await I.c.chatService.send(as('p1'), { group_id: 'g1', msg_content: 'x' }, { transport: 'test' })).message;
  const rec = await waitFor(() => recordOf(I.c, m.message_id), 'record');
  await waitFor(() => seenI.length === 1 || undefined, 'ai.record.created published');
  t.same(seenI[0]!.payload, { record_id: rec.record_id, group_id: 'g1' });
  t.equal(seenI[0]!.meta.origin, 'local');
  await new Promise((r) => setTimeout(r, 200));
  t.equal((await recordOf(I.c, m.message_id))!.status, 0, 'the intake never works it');
  t.equal(ai.requests.length, 0);

  // worker: messages stored on its own kernel make no record.
  const W = await boot('worker');
  await seedGroup(W.c, 'g1', ['p1', 'ai1']);
  const mw = (await W.c.chatService.send(as('p1'), { group_id: 'g1', msg_content: 'y' }, { transport: 'test' })).message;
  await new Promise((r) => setTimeout(r, 200));
  t.equal(await recordOf(W.c, mw.message_id), undefined, 'a worker creates no record');
  t.equal(ai.requests.length, 0);

  // all: creates and works, and announces nothing.
  const A = await boot('all');
  const seenA = events(A.c);
  await seedGroup(A.c, 'g1', ['p1', 'ai1']);
  const ma = (await A.c.chatService.send(as('p1'), { group_id: 'g1', msg_content: 'z' }, { transport: 'test' })).message;
  await finalRecord(A.c, ma.message_id);
  const replies = (await A.c.chatService.list(admin, { group_id: 'g1', limit: 50 })).messages.filter((x: Message) => x.msg_type === 'AI_REPLY');
  t.equal(replies.length, 1);
  t.equal(seenA.length, 0, 'role all publishes no ai.record.created');
});

t.test('role settings: a bad role, or a worker without an AI service, fail the start with one clear line', async (t) => {
  const boot = (router: Record<string, unknown>, ai: Record<string, unknown> = { url: 'http://127.0.0.1:9' }, provider = 'webhook') =>
    bootKernel(t, {
      plugins: ['chat', 'ai-router'],
      adapters: { storage: 'memory', 'ai-provider': provider },
      config: { ai, 'ai-router': router },
      noStart: true,
    });
  const bad = await boot({ role: 'both' });
  await t.rejects(bad.kernel.start(), /^ai-router: role: must be one of all, intake, worker$/);
  const noUrl = await boot({ role: 'worker' }, { url: '' });
  await t.rejects(noUrl.kernel.start(), /^ai-router: start failed: ai-router.role is worker but no AI service is configured: set ai.url \(IM_AI_URL\)/);
  const ok = await boot({ role: 'worker' });
  await ok.kernel.start();
  t.equal(ok.c.aiRouter.options.role, 'worker', 'chat + ai-router is enough for a worker');
  t.equal(ok.c.aiRouter.active, true);
  await ok.kernel.stop();
  const def = await boot({});
  t.equal((await (async () => (await def.kernel.start(), def.c.aiRouter.options.role))()), 'all', 'all by default');
});
