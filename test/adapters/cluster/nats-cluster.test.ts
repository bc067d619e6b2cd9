import { randomBytes } from 'node:crypto';
import t from 'tap';
import type { Test } from 'tap';
import { connect } from '@nats-io/transport-node';
import { admin, as, bootKernel, seedGroup } from '../../helpers/boot.js';
import { api, bootHttp, tokenFor } from '../../helpers/http.js';
import { createTestDatabase, requireService, SERVICES } from '../../helpers/services.js';
import { startTcpProxy, waitFor } from '../../helpers/tcp-proxy.js';
import { connectWs, type Frame, type WsTestClient } from '../../helpers/ws-client.js';
import { makePki, requireTools, restartableNatsServer, startNatsServer, tempDir } from '../../helpers/nats-server.js';
import { recordingLogger, type LogLine } from '../../helpers/logger.js';
import type { EventMeta } from '../../../kernel/bus.js';
import type { Cradle } from '../../../kernel/container.js';
import type { Message } from '../../../kernel/domain.js';
import '../../../plugins/ws/ws.public.js';
import '../../../adapters/cluster/nats/nats-cluster.adapter.js';

const PLUGINS = ['auth', 'users', 'groups', 'chat', 'http', 'ws'];
const isMessage = (id: string) => (f: Frame) => f.type === 'message' && f.data.message_id === id;

async function instance(t: Test, id: string, dbUrl: string, cluster: Record<string, unknown>) {
  const { booted, baseUrl } = await bootHttp(t, {
    plugins: PLUGINS,
    adapters: { storage: 'sequelize', cluster: 'nats' },
    config: { instanceId: id, storage: { url: dbUrl }, cluster },
  });
  return { c: booted.c, kernel: booted.kernel, baseUrl };
}

async function open(t: Test, c: Cradle, baseUrl: string, userId: string): Promise<WsTestClient> {
  return connectWs(t, baseUrl, userId, await tokenFor(c, userId));
}

/** A sample without labels from this kernel's registry (undefined when absent). */
async function metric(c: Cradle, name: string): Promise<number | undefined> {
  const line = (await c.metricsRegistry.metrics()).split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

const send = (c: Cradle, from: string, group: string, text: string): Promise<Message> =>
  c.chatService.send(as(from), { group_id: group, msg_content: text }, { transport: 'test' }).then((r) => r.message);

t.test('options: the URL comes from cluster.url or nats.url and is required', async (t) => {
  const missing = await bootKernel(t, { adapters: { storage: 'memory', cluster: 'nats' }, noStart: true });
  await t.rejects(missing.kernel.start(), /cluster: url: is required: set cluster.url, nats.url or IM_NATS_URL/);
  const bad = await bootKernel(t, { adapters: { storage: 'memory', cluster: 'nats' }, config: { cluster: { url: 'http://x' } }, noStart: true });
  await t.rejects(bad.kernel.start(), /cluster: url: 'http:\/\/x' is not a NATS URL/);
  if (!(await requireService(t, 'nats'))) return;
  const shared = await bootKernel(t, {
    adapters: { storage: 'memory', cluster: 'nats' },
    config: { nats: { url: SERVICES.nats.url }, cluster: { subjectPrefix: `im.test.${randomBytes(4).toString('hex')}` } },
  });
  t.equal(shared.c.clusterBus.connected, true, 'connected with nats.url');
  await shared.kernel.stop();
  t.equal(shared.c.clusterBus.connected, false, 'disconnected after stop');
  const down = await bootKernel(t, {
    adapters: { storage: 'memory', cluster: 'nats' },
    config: { cluster: { url: 'nats://127.0.0.1:1', connectTimeoutMs: 500 } },
    noStart: true,
  });
  await t.rejects(down.kernel.start(), /cannot connect to NATS at nats:\/\/127\.0\.0\.1:1/, 'unreachable NATS fails start with one clear line');
});

t.test('two instances, one PostgreSQL, one NATS', async (t) => {
  if (!(await requireService(t, 'nats'))) return;
  const dbUrl = await createTestDatabase(t);
  if (!dbUrl) return;
  const prefix = `im.test.${randomBytes(4).toString('hex')}`;
  // B reaches NATS through a proxy, so the test can cut its connection without touching the shared server
  const proxy = await startTcpProxy(t, SERVICES.nats.port);
  const A = await instance(t, 'inst-a', dbUrl, { url: SERVICES.nats.url, subjectPrefix: prefix });
  const B = await instance(t, 'inst-b', dbUrl, {
    url: `nats://127.0.0.1:${proxy.port}`,
    subjectPrefix: prefix,
    reconnectMinMs: 50,
    reconnectMaxMs: 200,
  });
  await seedGroup(A.c, 'g1', ['pat1', 'doc1']);
  await seedGroup(A.c, 'g2', ['doc2']);

  const onA = await open(t, A.c, A.baseUrl, 'pat1');
  const onB = await open(t, B.c, B.baseUrl, 'doc1');
  await waitFor(() => A.c.wsConnections.groupSocketCount('g1') === 1 && B.c.wsConnections.groupSocketCount('g1') === 1, 'sockets indexed');

  // A -> B (sent over WS on A) and B -> A (sent over HTTP on B)
  const ack = await onA.request({ type: 'send', group_id: 'g1', msg_content: 'from A', client_msg_id: 'a-1' }, (f) => f.type === 'ack', 'ack on A');
  const fromA = await onB.next(isMessage(ack.data.message_id), 'the message sent on A reaches the socket on B');
  t.same(fromA.data, ack.data, 'same message, same seq');
  const res = await api(B.baseUrl, await tokenFor(B.c, 'doc1')).post('/api/message/send', { group_id: 'g1', msg_content: 'from B' });
  t.equal(res.status, 201);
  await onA.next(isMessage(res.body.message_id), 'the message sent on B reaches the socket on A');
  t.equal(res.body.seq, ack.data.seq + 1, 'one seq sequence across instances (shared database)');

  // membership changes made on A take effect on B's index at once
  await A.c.userService.create(admin, { user_id: 'pat2', username: 'pat2' });
  const p2 = await open(t, B.c, B.baseUrl, 'pat2');
  await A.c.groupService.addMember(admin, 'g1', { user_id: 'pat2' });
  await p2.next((f) => f.type === 'member_joined' && f.data.user_id === 'pat2', 'member_joined relayed to B');
  await onB.next((f) => f.type === 'member_joined' && f.data.user_id === 'pat2', 'other members on B see it');
  const welcome = await send(A.c, 'pat1', 'g1', 'welcome');
  await p2.next(isMessage(welcome.message_id), 'the added member on B receives messages of A');
  await A.c.groupService.removeMember(admin, 'g1', 'pat2');
  await p2.next((f) => f.type === 'member_left' && f.data.user_id === 'pat2', 'member_left relayed to B');
  await waitFor(() => B.c.wsConnections.groupSocketCount('g1') === 1, 'B stopped indexing pat2 under g1');

  // group.notify (the AI layer's ai_status) crosses instances too
  const frame = { type: 'ai_status', group_id: 'g1', user_message_id: welcome.message_id, status: 'thinking' };
  A.c.bus.publish('group.notify', { group_id: 'g1', frame });
  t.same(await onB.next((f) => f.type === 'ai_status', 'ai_status on B'), frame);

  // no echo: A's sockets got each of A's messages exactly once
  const markerA = await send(A.c, 'pat1', 'g1', 'marker');
  await onA.next(isMessage(markerA.message_id), 'marker on A');
  await onB.next(isMessage(markerA.message_id), 'marker on B');
  for (const id of [ack.data.message_id, welcome.message_id, markerA.message_id]) {
    t.equal(onA.frames.filter(isMessage(id)).length, 1, `one frame on A for ${id}`);
    t.equal(onB.frames.filter(isMessage(id)).length, 1, `one frame on B for ${id}`);
  }

  // broker payloads are validated; own-instance events and garbage are dropped
  const raw = await connect({ servers: SERVICES.nats.url });
  t.teardown(() => raw.close());
  const fake = (instance_id: string, message_id: string) =>
    JSON.stringify({ v: 1, instance_id, name: 'message.stored', payload: { message: { ...markerA, message_id, seq: 999 }, transport: 'x' } });
  raw.publish(`${prefix}.message.stored`, fake('inst-b', 'own-echo'));
  raw.publish(`${prefix}.message.stored`, '{not json');
  raw.publish(`${prefix}.message.stored`, JSON.stringify({ v: 1, instance_id: 'x', name: 'message.stored', payload: { message: { seq: 'one' } } }));
  raw.publish(`${prefix}.message.stored`, fake('inst-z', 'from-z'));
  await raw.flush();
  await onB.next(isMessage('from-z'), 'a valid event of another instance is delivered');
  t.notOk(onB.frames.some(isMessage('own-echo')), 'an event carrying B’s own instance id is ignored');

  // readiness includes the cluster bus
  t.equal((await api(B.baseUrl).get('/readyz')).status, 200, 'B ready');

  // NATS connection loss on B: /readyz says so, events published meanwhile are lost for B
  // (NATS core keeps nothing) and the client closes the gap with sync; B's own sends are
  // buffered by the client and go out after the reconnect; delivery resumes.
  proxy.refuse(true);
  proxy.dropAll();
  await waitFor(() => !B.c.clusterBus.connected, 'B notices the connection loss');
  t.equal((await api(B.baseUrl).get('/readyz')).status, 503, 'B not ready while NATS is unreachable');
  const lost = await send(A.c, 'pat1', 'g1', 'while B is cut off');
  const buffered = await send(B.c, 'doc1', 'g1', 'sent on B while cut off');
  proxy.refuse(false);
  await waitFor(() => B.c.clusterBus.connected, 'B reconnects (backoff)', 30_000);
  await onA.next(isMessage(buffered.message_id), "B's send made during the outage reaches A after the reconnect");
  // B's subscription is re-established with the reconnect; probe until an event from A arrives
  let probes = 0;
  await waitFor(
    () => {
      A.c.bus.publish('group.notify', { group_id: 'g1', frame: { type: 'probe', n: probes++ } });
      return onB.of('probe').length > 0;
    },
    'events from A reach B again',
    30_000,
    100,
  );
  const after = await send(A.c, 'pat1', 'g1', 'after the reconnect');
  const seen = await onB.next(isMessage(after.message_id), 'delivery from A to B resumed');
  t.notOk(onB.frames.some(isMessage(lost.message_id)), 'the message published during the outage was not relayed');
  const lastBefore = Math.max(...onB.of('message').filter((f) => f.data.seq < lost.seq).map((f) => f.data.seq as number));
  t.ok(seen.data.seq > lastBefore + 1, 'the client sees a seq gap');
  const sync = await onB.request({ type: 'sync', group_id: 'g1', after_seq: lastBefore }, (f) => f.type === 'sync', 'sync closes the gap');
  t.ok(
    sync.data.some((m: Message) => m.message_id === lost.message_id),
    'sync returns the missed message',
  );
  t.equal((await api(B.baseUrl).get('/readyz')).status, 200, 'B ready again');

  // stop drains and does not reconnect
  await B.kernel.stop();
  t.equal(B.c.clusterBus.connected, false);
  await waitFor(() => proxy.connections === 0, 'B closed its NATS connection');
  const afterStop = await send(A.c, 'pat1', 'g1', 'B is gone');
  await onA.next(isMessage(afterStop.message_id), 'A keeps working alone');
  t.equal(proxy.connections, 0, 'no reconnect after stop');
  await A.kernel.stop();
  t.equal(A.c.clusterBus.connected, false);
});

t.test('secured NATS (TLS from a test CA + user/password): the bus relays; bad settings fail start-up with one clear line', async (t) => {
  if (!requireTools(t, ['nats-server', 'openssl'])) return;
  const pki = await makePki(tempDir(t));
  const PASSWORD = 'cluster-pw-never-shown';
  const server = await startNatsServer(t, ['--tls', '--tlscert', pki.serverCert, '--tlskey', pki.serverKey, '--user', 'im', '--pass', PASSWORD]);
  const prefix = `im.test.${randomBytes(4).toString('hex')}`;
  const secured = { url: server.url, user: 'im', password: PASSWORD, tls: { caFile: pki.caFile } };
  const boot = (id: string, config: Record<string, unknown>, noStart = false) =>
    bootKernel(t, { adapters: { storage: 'memory', cluster: 'nats' }, config: { instanceId: id, ...config }, noStart });

  // A: the shared section nats (IM_NATS_*); B: its own cluster.url with its own settings
  const A = await boot('sec-a', { nats: secured, cluster: { subjectPrefix: prefix } });
  const B = await boot('sec-b', { cluster: { ...secured, subjectPrefix: prefix } });
  t.equal(A.c.clusterBus.connected, true, 'A connected with the settings of section nats');
  t.equal(B.c.clusterBus.connected, true, 'B connected with its own cluster.* settings');
  const got: EventMeta[] = [];
  B.c.bus.subscribe('group.notify', (_p, meta) => void got.push(meta));
  A.c.bus.publish('group.notify', { group_id: 'g1', frame: { type: 'probe' } });
  await waitFor(() => got.some((m) => m.origin === 'remote' && m.instance_id === 'sec-a'), 'an event of A reaches B');

  const fails: [string, Record<string, unknown>, RegExp][] = [
    ['a wrong password', { nats: { ...secured, password: 'wrong-pw-x' } }, /^cannot connect to NATS at nats:\/\/127\.0\.0\.1:\d+: Authorization Violation \(server refused the credentials: check nats\.user\/password/],
    ['no CA (certificate not trusted)', { nats: { ...secured, tls: {} } }, /^cannot connect to NATS at .*\(TLS failed: check nats\.tls/],
    ['tls.required against the plain shared server', { cluster: { url: SERVICES.nats.url, tls: { required: true } } }, /^cannot connect to NATS at .*(TLS failed: check cluster\.tls|does not support 'tls')/],
    ['security keys in cluster without cluster.url', { nats: { url: server.url }, cluster: { user: 'im', password: PASSWORD } }, /^cluster: user, password, token, credsFile, nkeySeedFile and tls apply only with cluster\.url/],
    ['a missing CA file in cluster', { cluster: { url: server.url, tls: { caFile: '/nonexistent/ca.pem' } } }, /^cluster: tls\.caFile: cannot read '\/nonexistent\/ca\.pem' \(ENOENT\)$/],
    ['a missing CA file in nats', { nats: { url: server.url, tls: { caFile: '/nonexistent/ca.pem' } } }, /^cluster: nats\.tls\.caFile: cannot read/],
    ['token and user in cluster', { cluster: { url: server.url, token: 't', user: 'im', password: PASSWORD } }, /^cluster: user \(\+ password\), token, credsFile and nkeySeedFile are exclusive/],
  ];
  for (const [what, config, re] of fails) {
    const k = await boot('sec-x', { ...config, cluster: { connectTimeoutMs: 2000, ...(config.cluster as object) } }, true);
    const err = await k.kernel.start().then(
      () => null,
      (e: Error) => e,
    );
    t.match(err?.message, re, what);
    t.notMatch(err?.message ?? '', PASSWORD, `${what}: no secret in the message`);
    t.equal(k.kernel.state, 'failed', `${what}: not started`);
  }
  await B.kernel.stop();
  await A.kernel.stop();
});

/**
 * Two kernels on a private nats-server that the test kills and starts again on
 * the same port. A reaches it through a TCP proxy, so the test decides when A
 * may reconnect: after B has subscribed again (NATS core keeps nothing for a
 * subscriber that is not there yet).
 */
async function restartPair(t: Test, outboxMaxEvents = 10_000) {
  const server = await restartableNatsServer(t, []);
  const proxy = await startTcpProxy(t, server.port);
  const prefix = `im.test.${randomBytes(4).toString('hex')}`;
  const fast = { subjectPrefix: prefix, reconnectMinMs: 20, reconnectMaxMs: 100, connectTimeoutMs: 1000 };
  const linesA: LogLine[] = [];
  // A with the metrics plugin, B without (its outbox works without metrics)
  const A = await bootKernel(t, {
    plugins: ['auth', 'users', 'groups', 'chat', 'metrics'],
    adapters: { storage: 'memory', cluster: 'nats' },
    logger: recordingLogger(linesA),
    config: { instanceId: 'rs-a', cluster: { ...fast, url: `nats://127.0.0.1:${proxy.port}`, outboxMaxEvents } },
  });
  const B = await bootKernel(t, { adapters: { storage: 'memory', cluster: 'nats' }, config: { instanceId: 'rs-b', cluster: { ...fast, url: server.url } } });
  const onA: number[] = [];
  const onB: number[] = [];
  const probes = (into: number[]) => (p: { frame: Record<string, unknown> }, meta: EventMeta) => {
    if (p.frame.type === 'probe') into.push((meta.origin === 'remote' ? 1 : -1) * (p.frame.n as number));
  };
  A.c.bus.subscribe('group.notify', probes(onA));
  B.c.bus.subscribe('group.notify', probes(onB));
  const probe = (k: typeof A, n: number) => k.c.bus.publish('group.notify', { group_id: 'g1', frame: { type: 'probe', n } });
  /** Kills the server; both notice; the proxy keeps A away until release(). */
  const outage = async () => {
    proxy.refuse(true);
    await server.kill('SIGKILL');
    await waitFor(() => !A.c.clusterBus.connected && !B.c.clusterBus.connected, 'both instances notice the server is gone');
  };
  const restart = async () => {
    await server.start();
    await waitFor(() => B.c.clusterBus.connected, 'B reconnected (and subscribed again)', 15_000);
    proxy.refuse(false);
    await waitFor(() => A.c.clusterBus.connected, 'A reconnected', 15_000);
  };
  return { A, B, onA, onB, probe, outage, restart, linesA };
}

t.test('NATS server restart (SIGKILL): the bus reconnects and relays again both ways; A\'s events of the outage are sent after the reconnect', async (t) => {
  if (!requireTools(t, ['nats-server'])) return;
  const { A, B, onA, onB, probe, outage, restart } = await restartPair(t);
  probe(A, 1);
  await waitFor(() => onB.includes(1), 'relayed before the restart');

  await outage();
  probe(A, 2); // waits in A's outbox
  probe(B, 3); // B's, too
  await waitFor(() => onA.includes(-2) && onB.includes(-3), 'local delivery goes on while NATS is down');
  t.same(onA, [-1, -2], 'A: its own events only, nothing relayed');
  t.equal(await metric(A.c, 'im_cluster_outbox_queued'), 1, 'metrics: one event queued in the outbox');
  t.equal(await metric(A.c, 'im_cluster_outbox_dropped_total'), 0, 'metrics: nothing dropped');
  await restart();
  await waitFor(() => onB.includes(2), "A's event of the outage reaches B after the reconnect");
  t.equal(await metric(A.c, 'im_cluster_outbox_queued'), 0, 'metrics: the outbox is empty after the reconnect');
  let n = 100;
  await waitFor(
    () => {
      probe(B, n++);
      return onA.some((x) => x >= 100);
    },
    'B relays to A again',
    15_000,
    100,
  );
  probe(A, 4);
  await waitFor(() => onB.includes(4), 'A relays to B again');
  t.equal(onB.filter((x) => x === 2).length, 1, 'the held event arrives once');
  t.ok(A.c.clusterBus.connected && B.c.clusterBus.connected, 'both ready again');
});

t.test('cluster outbox overflow: past outboxMaxEvents the oldest events of the outage are dropped and logged; local delivery goes on', async (t) => {
  if (!requireTools(t, ['nats-server'])) return;
  const { A, onA, onB, probe, outage, restart, linesA } = await restartPair(t, 3);
  await outage();
  for (const n of [1, 2, 3, 4, 5]) probe(A, n);
  await waitFor(() => onA.length === 5, 'local delivery on A');
  t.same(onA, [-1, -2, -3, -4, -5], "every event is delivered on A's own bus, whatever the outbox holds");
  const full = linesA.filter((l) => /outbox full/.test(l.msg ?? ''));
  t.equal(full.length, 1, 'one line when the outbox first overflows (not one per event)');
  t.match(full[0], { level: 'warn', max: 3 });
  t.equal(await metric(A.c, 'im_cluster_outbox_queued'), 3, 'metrics: the outbox holds outboxMaxEvents');
  t.equal(await metric(A.c, 'im_cluster_outbox_dropped_total'), 2, 'metrics: every dropped event is counted');
  await restart();
  await waitFor(() => onB.length >= 3, 'the outbox is sent after the reconnect');
  await new Promise((r) => setTimeout(r, 200));
  t.same(onB, [3, 4, 5], 'the newest outboxMaxEvents events are sent, in order; the oldest were dropped');
  const dropped = linesA.find((l) => /events dropped while disconnected \(outbox full\)/.test(l.msg ?? ''));
  t.match(dropped, { level: 'warn', dropped: 2 }, 'the reconnect logs how many were dropped');
  t.match(linesA.find((l) => /reconnected to NATS/.test(l.msg ?? '')), { queued: 3, dropped: 2 });
  t.equal(await metric(A.c, 'im_cluster_outbox_queued'), 0, 'metrics: the outbox is empty after the reconnect');
  t.equal(await metric(A.c, 'im_cluster_outbox_dropped_total'), 2, 'metrics: the drop count stays (a counter; the log count restarts per outage)');
});

t.test('stop during an outage: the events still in the outbox are logged and counted as dropped', async (t) => {
  if (!requireTools(t, ['nats-server'])) return;
  const { A, probe, outage, linesA } = await restartPair(t);
  await outage();
  probe(A, 1);
  probe(A, 2);
  await waitFor(async () => (await metric(A.c, 'im_cluster_outbox_queued')) === 2, 'two events wait in the outbox');
  await A.kernel.stop();
  t.match(
    linesA.find((l) => /stopped while disconnected, events of the outbox dropped/.test(l.msg ?? '')),
    { level: 'warn', dropped: 2 },
    'the stop says how many events were never relayed',
  );
  t.equal(await metric(A.c, 'im_cluster_outbox_dropped_total'), 2, 'and counts them as dropped');
  t.equal(await metric(A.c, 'im_cluster_outbox_queued'), 0, 'the outbox is empty');
});
