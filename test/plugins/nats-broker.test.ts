/**
 * nats-ingress (core subject and JetStream) and nats-egress against the
 * machine's real NATS server. Subjects, streams and consumers are unique per
 * test; the plugin connects through a TCP proxy so a test can cut it off.
 * The security settings (credentials, TLS) run against private nats-server
 * processes started by the tests themselves (test/helpers/nats-server.ts).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect as connectTcp, createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AckPolicy, jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, credsAuthenticator, nkeyAuthenticator, type ConnectionOptions, type Msg, type NatsConnection } from '@nats-io/transport-node';
import t from 'tap';
import type { Test } from 'tap';
import type { Cradle } from '../../kernel/container.js';
import { UnavailableError } from '../../kernel/errors.js';
import { loadConfig } from '../../config/loader.js';
import { holdAppends } from '../helpers/hold-appends.js';
import { admin, as, bootKernel, seedGroup, type BootOptions } from '../helpers/boot.js';
import { recordingLogger, type LogLine } from '../helpers/logger.js';
import { makeNkeySetup, makeOperatorSetup, makePki, requireTools, restartableNatsServer, startNatsServer, tempDir, type NatsServer } from '../helpers/nats-server.js';
import { api, bootWithOptionalHttp, tokenFor } from '../helpers/http.js';
import { SERVICES, requireService } from '../helpers/services.js';
import { startTcpProxy, waitFor, type TcpProxy } from '../helpers/tcp-proxy.js';
import { connectWs } from '../helpers/ws-client.js';
import '../../plugins/nats-ingress/nats-ingress.plugin.js';
import '../../plugins/nats-egress/nats-egress.plugin.js';
import { natsEgressOptions } from '../../plugins/nats-egress/nats-egress.schema.js';
import '../../plugins/ws/ws.public.js';
import '../../plugins/http/http.public.js';

const TEXT = 'the pain is worse at night';

const natsUp = await requireService(t, 'nats');
if (natsUp) {
  const nc: NatsConnection = await connect({ servers: SERVICES.nats.url, name: 'nats-broker-test' });
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  t.teardown(() => nc.close());

  interface Names {
    id: string;
    subject: string;
    dlq: string;
    prefix: string;
    stream: string;
    durable: string;
  }
  const names = (t: Test): Names => {
    const id = randomBytes(4).toString('hex');
    const n = {
      id,
      subject: `test.${id}.inbound`,
      dlq: `test.${id}.inbound.dlq`,
      prefix: `test.${id}.events`,
      stream: `TEST_${id}`,
      durable: `test-${id}`,
    };
    t.teardown(async () => {
      await jsm.streams.delete(n.stream).catch(() => undefined);
    });
    return n;
  };

  const boot = async (
    t: Test,
    n: Names,
    opts: { proxy?: TcpProxy; plugins?: string[]; ingress?: Record<string, unknown>; http?: boolean } = {},
  ) => {
    const url = opts.proxy ? `nats://127.0.0.1:${opts.proxy.port}` : SERVICES.nats.url;
    const bootOpts: BootOptions = {
      plugins: ['auth', 'users', 'groups', 'chat', ...(opts.plugins ?? ['nats-ingress'])],
      config: {
        nats: { url },
        'nats-ingress': {
          subject: n.subject,
          dlqSubject: n.dlq,
          queueGroup: `q-${n.id}`,
          retryDelayMs: 100,
          reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
          ...opts.ingress,
        },
        'nats-egress': { subjectPrefix: n.prefix, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } },
      },
    };
    return bootWithOptionalHttp(t, bootOpts, opts.http === true);
  };

  const payload = (over: Record<string, unknown> = {}) => ({
    from_user_id: 'pat1',
    group_id: 'g1',
    msg_content: TEXT,
    client_msg_id: `c-${randomBytes(4).toString('hex')}`,
    ...over,
  });
  const enc = (b: unknown): Uint8Array => Buffer.from(typeof b === 'string' ? b : JSON.stringify(b));
  const json = (m: { data: Uint8Array }) => JSON.parse(Buffer.from(m.data).toString());
  const listAll = async (c: Cradle) => (await c.chatService.list(as('pat1'), { group_id: 'g1', limit: 200 })).messages;

  /** Collects messages on a subject (flushed before returning). */
  const collect = async (t: Test, subject: string): Promise<Msg[]> => {
    const got: Msg[] = [];
    const sub = nc.subscribe(subject, {
      callback: (_e, m) => {
        got.push(m);
      },
    });
    await nc.flush();
    t.teardown(() => sub.unsubscribe());
    return got;
  };

  const bad: [string, unknown, string][] = [
    ['not json', 'this is not json', 'INVALID_JSON'],
    ['schema: missing from_user_id', { group_id: 'g1', msg_content: 'x', client_msg_id: 'z' }, 'VALIDATION_FAILED'],
    ['schema: AI_REPLY', payload({ msg_type: 'AI_REPLY' }), 'VALIDATION_FAILED'],
    ['unknown group', payload({ group_id: 'nope' }), 'NOT_FOUND'],
    ['non-member sender', payload({ from_user_id: 'out1' }), 'FORBIDDEN'],
  ];

  t.test('core subject: stored (with a reply), duplicates once, invalid payloads dead-lettered with the reason', async (t) => {
    const n = names(t);
    const { c } = await boot(t, n, { plugins: ['metrics', 'nats-ingress'] });
    t.ok(c.natsIngress.connected);
    await seedGroup(c, 'g1', ['pat1', 'doc1']);
    await c.userService.create(admin, { user_id: 'out1', username: 'outsider' });
    const dlq = await collect(t, n.dlq);

    const p = payload({ client_msg_id: 'n-1' });
    const r1 = json(await nc.request(n.subject, enc(p), { timeout: 20_000 }));
    t.match(r1, { status: 'stored', message: { group_id: 'g1', from_user_id: 'pat1', seq: 1, client_msg_id: 'n-1' } });
    const r2 = json(await nc.request(n.subject, enc(p), { timeout: 20_000 }));
    t.match(r2, { status: 'duplicate', message: { message_id: r1.message.message_id } }, 'a redelivery answers with the original');
    nc.publish(n.subject, enc(p)); // fire-and-forget publish works too
    await waitFor(() => c.natsIngress.stats.duplicate === 2, 'second duplicate');
    t.equal((await listAll(c)).length, 1, 'stored once');
    t.equal((await listAll(c))[0].msg_content, TEXT);

    for (const [what, body, code] of bad) {
      const r = json(await nc.request(n.subject, enc(body), { timeout: 20_000 }));
      t.equal(r.error?.code, code, `${what}: the requester gets ${code}`);
    }
    await waitFor(() => dlq.length === bad.length, 'dead letters received');
    for (const [what, body, code] of bad) {
      const raw = typeof body === 'string' ? body : JSON.stringify(body);
      const l = dlq.find((m) => json(m).payload === raw);
      t.ok(l, `${what}: dead-lettered`);
      if (!l) continue;
      t.match(json(l), { error: { code }, source: n.subject, transport: 'nats', payload_encoding: 'utf8' });
      t.equal(l.headers?.get('x-im-error-code'), code, 'reason in a header too');
    }
    t.equal(c.natsIngress.stats.dead_lettered, bad.length);
    t.equal((await listAll(c)).length, 1, 'no invalid payload stored');
    const text = await c.metricsRegistry.metrics();
    t.match(text, 'im_broker_deliveries_total{transport="nats",outcome="stored"} 1', 'metrics: stored');
    t.match(text, `im_broker_deliveries_total{transport="nats",outcome="dead_lettered"} ${bad.length}`, 'metrics: dead-lettered');
  });

  t.test('core subject: a storage outage is retried, never dead-lettered', async (t) => {
    const n = names(t);
    const { c } = await boot(t, n);
    await seedGroup(c, 'g1', ['pat1']);
    const dlq = await collect(t, n.dlq);
    const repo = c.storage.messages;
    const realAppend = repo.append.bind(repo);
    let down = true;
    repo.append = async (m) => {
      if (down) throw new UnavailableError();
      return realAppend(m);
    };
    t.teardown(() => {
      repo.append = realAppend;
    });
    const reply = nc.request(n.subject, enc(payload({ client_msg_id: 'o-1' })), { timeout: 30_000 });
    await waitFor(() => c.natsIngress.stats.requeued >= 2, 'retried');
    down = false;
    t.match(json(await reply), { status: 'stored', message: { client_msg_id: 'o-1' } });
    t.equal(dlq.length, 0, 'nothing dead-lettered');
  });

  t.test('core subject: connection cut, readiness red, the client reconnects and ingestion resumes', async (t) => {
    const n = names(t);
    const proxy = await startTcpProxy(t, SERVICES.nats.port);
    const { c, baseUrl } = await boot(t, n, { proxy, http: true });
    await seedGroup(c, 'g1', ['pat1']);
    const http = api(baseUrl);
    t.equal((await http.get('/readyz')).status, 200);
    proxy.refuse(true);
    proxy.dropAll();
    await waitFor(() => !c.natsIngress.connected, 'disconnected');
    const r = await http.get('/readyz');
    t.equal(r.status, 503, '/readyz reports NATS down');
    t.match(JSON.stringify(r.body), /nats/);
    proxy.refuse(false);
    await waitFor(() => c.natsIngress.connected, 'reconnected');
    const res = json(await nc.request(n.subject, enc(payload({ client_msg_id: 'after' })), { timeout: 20_000 }));
    t.equal(res.status, 'stored', 'ingests after reconnecting (queue subscription restored)');
    t.equal((await http.get('/readyz')).status, 200);
  });

  t.test('stop() while the server is unreachable returns promptly (no reconnect afterwards)', async (t) => {
    for (const jsMode of [false, true]) {
      const n = names(t);
      const proxy = await startTcpProxy(t, SERVICES.nats.port);
      const ingress = jsMode ? { jetstream: { stream: n.stream, durable: n.durable, createStream: true } } : {};
      const { c, kernel } = await boot(t, n, { proxy, ingress, plugins: ['nats-ingress', 'nats-egress'] });
      t.ok(c.natsIngress.connected);
      proxy.refuse(true);
      proxy.dropAll();
      await waitFor(() => !c.natsIngress.connected && !c.natsEgress.connected, 'disconnected');
      await kernel.stop();
      t.equal(kernel.state, 'stopped', `${jsMode ? 'JetStream' : 'core'} mode: stopped`);
      proxy.refuse(false);
      await new Promise((r) => setTimeout(r, 300));
      t.equal(proxy.connections, 0, 'no reconnect after stop');
    }
  });

  t.test('JetStream: durable consumer, ack after commit, nak on outages, term + DLQ, survives a connection cut', async (t) => {
    const n = names(t);
    const proxy = await startTcpProxy(t, SERVICES.nats.port);
    const { c } = await boot(t, n, { proxy, ingress: { jetstream: { stream: n.stream, durable: n.durable, createStream: true, ackWaitMs: 2000 }, maxInFlight: 5 } });
    await seedGroup(c, 'g1', ['pat1', 'doc1']);
    await c.userService.create(admin, { user_id: 'out1', username: 'outsider' });
    const info = await jsm.streams.info(n.stream);
    t.same(info.config.subjects, [n.subject, n.dlq], 'stream created with the inbound and DLQ subjects');
    const ci = await jsm.consumers.info(n.stream, n.durable);
    t.equal(ci.config.ack_policy, 'explicit');

    const p = payload({ client_msg_id: 'js-1' });
    await js.publish(n.subject, enc(p));
    await js.publish(n.subject, enc(p));
    await waitFor(() => c.natsIngress.stats.stored === 1 && c.natsIngress.stats.duplicate === 1, 'stored once, duplicate acked');
    t.equal((await listAll(c)).length, 1);

    for (const [, body] of bad) await js.publish(n.subject, enc(body));
    await waitFor(() => c.natsIngress.stats.dead_lettered === bad.length, 'dead-lettered');
    // the dead letters are persisted in the stream (DLQ subject)
    await jsm.consumers.add(n.stream, { durable_name: `${n.durable}-dlq`, filter_subject: n.dlq, ack_policy: AckPolicy.None });
    const dlqConsumer = await js.consumers.get(n.stream, `${n.durable}-dlq`);
    const letters: { error: { code: string }; payload: string }[] = [];
    const it = await dlqConsumer.fetch({ max_messages: bad.length, expires: 5000 });
    for await (const m of it) letters.push(m.json());
    for (const [what, body, code] of bad) {
      const raw = typeof body === 'string' ? body : JSON.stringify(body);
      t.equal(letters.find((l) => l.payload === raw)?.error.code, code, `${what}: ${code} in the DLQ`);
    }

    // storage outage: nak with a delay, then stored when storage is back
    const repo = c.storage.messages;
    const realAppend = repo.append.bind(repo);
    let down = true;
    repo.append = async (m) => {
      if (down) throw new UnavailableError();
      return realAppend(m);
    };
    t.teardown(() => {
      repo.append = realAppend;
    });
    await js.publish(n.subject, enc(payload({ client_msg_id: 'js-outage' })));
    await waitFor(() => c.natsIngress.stats.requeued >= 2, 'nak-ed and redelivered');
    down = false;
    await waitFor(() => c.natsIngress.stats.stored === 2, 'stored after the outage');
    t.equal(c.natsIngress.stats.dead_lettered, bad.length, 'the outage dead-lettered nothing');

    // connection cut: what is published meanwhile is persisted and ingested after the reconnect
    proxy.refuse(true);
    proxy.dropAll();
    await waitFor(() => !c.natsIngress.connected, 'disconnected');
    await js.publish(n.subject, enc(payload({ client_msg_id: 'js-while-down' })));
    proxy.refuse(false);
    await waitFor(() => c.natsIngress.stats.stored === 3, 'ingested after the reconnect', 60_000);
    const ids = (await listAll(c)).map((m) => m.client_msg_id);
    t.same(ids, ['js-1', 'js-outage', 'js-while-down']);
    await waitFor(async () => {
      const i = await jsm.consumers.info(n.stream, n.durable);
      return i.num_ack_pending === 0 && i.num_pending === 0;
    }, 'everything acknowledged');
  });

  t.test('JetStream: stop() finishes and acks in-flight deliveries before closing', async (t) => {
    const n = names(t);
    const { c, kernel } = await boot(t, n, { ingress: { jetstream: { stream: n.stream, durable: n.durable, createStream: true } } });
    await seedGroup(c, 'g1', ['pat1']);
    const release = holdAppends(t, c.storage.messages);
    await js.publish(n.subject, enc(payload({ client_msg_id: 'inflight' })));
    await waitFor(() => c.natsIngress.inFlight === 1, 'in flight');
    const stopping = kernel.stop();
    setTimeout(release, 200);
    await stopping;
    t.equal(c.natsIngress.stats.stored, 1);
    const i = await jsm.consumers.info(n.stream, n.durable);
    t.equal(i.num_ack_pending, 0, 'acknowledged before the connection closed');
    t.equal(i.num_pending, 0);
    t.equal(c.natsIngress.connected, false);
  });

  t.test('JetStream: a missing stream without createStream keeps readiness red (and start-up does not hang)', async (t) => {
    const n = names(t);
    const { c } = await boot(t, n, { ingress: { jetstream: { stream: n.stream, durable: n.durable }, startWaitMs: 300 } });
    t.equal(c.natsIngress.connected, false, 'not consuming');
  });

  t.test('egress: messages and membership changes on im.events.message.<group> / im.events.member.<group>', async (t) => {
    const n = names(t);
    const { c } = await boot(t, n, { plugins: ['nats-egress', 'nats-ingress'] });
    await waitFor(() => c.natsEgress.connected, 'egress connected');
    const got = await collect(t, `${n.prefix}.>`);
    await seedGroup(c, 'g1', ['pat1']);
    c.bus.publish(
      'message.stored',
      {
        message: { message_id: 'remote-1', group_id: 'g1', seq: 9, from_user_id: 'pat1', msg_type: 'TEXT', msg_content: 'x', client_msg_id: null, created_at: '2026-01-01T00:00:00.000Z' },
        transport: 'http',
      },
      { origin: 'remote', instance_id: 'other' },
    );
    const { message } = await c.chatService.send(as('pat1'), { group_id: 'g1', msg_content: 'hello' }, { transport: 'http' });
    await nc.request(n.subject, enc(payload({ client_msg_id: 'egress-via-nats' })), { timeout: 20_000 });
    await c.userService.create(admin, { user_id: 'doc9', username: 'doc9', user_role: 'DOCTOR' });
    await c.groupService.addMember(admin, 'g1', { user_id: 'doc9' });
    await c.groupService.removeMember(admin, 'g1', 'doc9');
    const on = (s: string) => got.filter((m) => m.subject === s).map(json);
    await waitFor(() => on(`${n.prefix}.member.g1`).length >= 3 && on(`${n.prefix}.message.g1`).length >= 2, 'events received');
    const msgs = on(`${n.prefix}.message.g1`);
    t.equal(msgs.length, 2, 'local messages only');
    t.match(msgs.find((e) => e.data.message_id === message.message_id), { event: 'message.stored', transport: 'http', data: { msg_content: 'hello' } });
    t.match(msgs.find((e) => e.data.client_msg_id === 'egress-via-nats'), { event: 'message.stored', transport: 'nats' });
    const members = on(`${n.prefix}.member.g1`);
    t.ok(members.some((e) => e.event === 'member.added' && e.data.user_id === 'doc9'));
    t.ok(members.some((e) => e.event === 'member.removed' && e.data.user_id === 'doc9'));
    const raw = got.find((m) => m.subject === `${n.prefix}.message.g1` && json(m).data.message_id === message.message_id)!;
    t.equal(raw.headers?.get('Nats-Msg-Id'), message.message_id);
  });

  t.test('a message ingested from NATS is pushed over WebSocket', async (t) => {
    const n = names(t);
    const { c, baseUrl } = await boot(t, n, { plugins: ['ws', 'nats-ingress'], http: true });
    await seedGroup(c, 'g1', ['pat1', 'doc1']);
    const ws = await connectWs(t, baseUrl, 'doc1', await tokenFor(c, 'doc1'));
    await waitFor(() => c.wsConnections.groupSocketCount('g1') >= 1, 'socket indexed under the group');
    nc.publish(n.subject, enc(payload({ client_msg_id: 'ws-1' })));
    const f = await ws.next((x) => x.type === 'message' && x.data.client_msg_id === 'ws-1', 'message frame');
    t.match(f.data, { group_id: 'g1', from_user_id: 'pat1', msg_content: TEXT });
  });
}

// ---- Securing NATS: credentials and TLS (private nats-server processes, not the shared server) ----

const PASSWORD = 'p@ss:w/rd-never-logged';
const secPayload = (client_msg_id: string) =>
  Buffer.from(JSON.stringify({ from_user_id: 'pat1', group_id: 'g1', msg_content: TEXT, client_msg_id }));

/** A kernel with nats-ingress + nats-egress on `nats` (the shared section: URL, credentials, TLS), recording its log. */
async function bootSecured(t: Test, nats: Record<string, unknown>, lines: LogLine[] = [], startWaitMs = 3000) {
  const id = randomBytes(4).toString('hex');
  const subject = `sec.${id}.inbound`;
  const prefix = `sec.${id}.events`;
  const { c, kernel } = await bootKernel(t, {
    plugins: ['auth', 'users', 'groups', 'chat', 'nats-egress', 'nats-ingress'],
    logger: recordingLogger(lines),
    config: {
      nats,
      'nats-ingress': { subject, dlqSubject: `${subject}.dlq`, queueGroup: `q-${id}`, startWaitMs, connectTimeoutMs: 1000, reconnect: { initialDelayMs: 50, maxDelayMs: 200 } },
      'nats-egress': { subjectPrefix: prefix, startWaitMs, connectTimeoutMs: 1000, reconnect: { initialDelayMs: 50, maxDelayMs: 200 } },
    },
  });
  return { c, kernel, subject, prefix };
}

/** Connected, and a message goes all the way: request on the inbound subject -> stored -> published by egress. */
async function assertDelivers(t: Test, server: NatsServer, clientOpts: Partial<ConnectionOptions>, nats: Record<string, unknown>, what: string) {
  const { c, subject, prefix } = await bootSecured(t, nats);
  await waitFor(() => c.natsIngress.connected && c.natsEgress.connected, `${what}: ingress and egress connected`, 10_000);
  await seedGroup(c, 'g1', ['pat1']);
  const client = await connect({ servers: server.url, ...clientOpts });
  t.teardown(() => client.close());
  const events: Msg[] = [];
  client.subscribe(`${prefix}.>`, { callback: (_e, m) => void events.push(m) });
  await client.flush();
  const reply = JSON.parse((await client.request(subject, secPayload(`sec-${what}`), { timeout: 10_000 })).string());
  t.match(reply, { status: 'stored', message: { client_msg_id: `sec-${what}` } }, `${what}: ingested`);
  await waitFor(() => events.some((m) => m.subject === `${prefix}.message.g1`), `${what}: egress event received`, 10_000);
}

/** Started (no crash), not connected, a line (error level unless told) saying which settings to check, no secret anywhere in the log. */
async function assertRefused(t: Test, nats: Record<string, unknown>, msg: RegExp, what: string, secret = PASSWORD, level = 'error') {
  const lines: LogLine[] = [];
  const { c, kernel } = await bootSecured(t, nats, lines, 100);
  t.equal(kernel.state, 'started', `${what}: the service starts anyway`);
  await waitFor(() => lines.some((l) => l.level === level && msg.test(l.msg ?? '') && l.plugin === 'nats-ingress'), `${what}: ${level} logged`, 10_000);
  t.equal(c.natsIngress.connected, false, `${what}: ingress not ready`);
  t.equal(c.natsEgress.connected, false, `${what}: egress not ready`);
  const line = lines.find((l) => l.level === level && msg.test(l.msg ?? ''))!;
  t.match(line, { url: /^nats:\/\/127\.0\.0\.1:\d+$|\*\*\*@/ }, `${what}: the line names the server`);
  t.notMatch(JSON.stringify(lines), secret, `${what}: the secret is never logged`);
  const began = Date.now();
  await kernel.stop();
  t.ok(Date.now() - began < 5000, `${what}: stops promptly while retrying`);
}

t.test('NATS security: bad settings stop start-up with one line naming the setting, before anything connects', async (t) => {
  if (!requireTools(t, ['openssl'])) return;
  const dir = tempDir(t);
  const pki = await makePki(dir);
  const { credsFile } = makeOperatorSetup(dir);
  // stands in for the NATS server: counts connection attempts (there must be none)
  let attempts = 0;
  const listener = createServer((s) => {
    attempts++;
    s.destroy();
  });
  await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => listener.close(() => r())));
  const port = (listener.address() as { port: number }).port;
  const url = `nats://127.0.0.1:${port}`;
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['user without password', { user: 'im' }, /^nats-ingress: nats: user and password go together: set both$/],
    ['token and user', { user: 'im', password: PASSWORD, token: 'tok' }, /^nats-ingress: nats: user \(\+ password\), token, credsFile and nkeySeedFile are exclusive: set one way to authenticate/],
    ['creds and nkey seed', { credsFile, nkeySeedFile: credsFile }, /nats: user \(\+ password\), token, credsFile and nkeySeedFile are exclusive/],
    ['creds file missing', { credsFile: join(dir, 'nope.creds') }, /^nats-ingress: nats\.credsFile: cannot read '.*nope\.creds' \(ENOENT\)$/],
    ['creds file that is not one', { credsFile: pki.caFile }, /^nats-ingress: nats\.credsFile: '.*ca\.pem' is not a NATS credentials file/],
    ['nkey seed file that is not one', { nkeySeedFile: pki.clientKey }, /^nats-ingress: nats\.nkeySeedFile: '.*client\.key' is not an NKey seed/],
    ['client certificate without its key', { tls: { certFile: pki.clientCert } }, /^nats-ingress: nats\.tls: certFile and keyFile go together/],
    ['key of another certificate', { tls: { certFile: pki.clientCert, keyFile: pki.otherKey } }, /^nats-ingress: nats\.tls\.keyFile: '.*other\.key' is not the private key of '.*client\.pem'/],
    ['CA file missing', { tls: { caFile: join(dir, 'nope.pem') } }, /^nats-ingress: nats\.tls\.caFile: cannot read '.*nope\.pem' \(ENOENT\)$/],
    ['CA file that is not a certificate', { tls: { caFile: pki.clientKey } }, /^nats-ingress: nats\.tls\.caFile: '.*client\.key' is not a PEM certificate$/],
    ['credentials in the URL and nats.user', { url: `nats://other:${encodeURIComponent(PASSWORD)}@127.0.0.1:${port}`, user: 'im', password: 'x' }, /^nats-ingress: nats\.url: carries credentials and nats\.user is set too/],
    ['a misspelt key', { pass: PASSWORD }, /^nats-ingress: nats\.pass: is not allowed$/],
    ['tls.required not a boolean', { tls: { required: 'yes' } }, /^nats-ingress: nats\.tls\.required: must be a boolean$/],
  ];
  for (const [what, nats, re] of cases) {
    const { kernel } = await bootKernel(t, { plugins: ['auth', 'users', 'groups', 'chat', 'nats-ingress'], config: { nats: { url, ...nats } }, noStart: true });
    const err = await kernel.start().then(
      () => null,
      (e: Error) => e,
    );
    t.match(err?.message, re, what);
    t.notMatch(err?.message ?? '', PASSWORD, `${what}: no secret in the message`);
    t.equal(kernel.state, 'failed', `${what}: not started`);
  }
  // nats-egress checks the same section the same way
  const egress = await bootKernel(t, { plugins: ['auth', 'users', 'groups', 'chat', 'nats-egress'], config: { nats: { url, token: 'a', user: 'b', password: 'c' } }, noStart: true });
  await t.rejects(egress.kernel.start(), /^nats-egress: nats: user \(\+ password\), token/);
  // empty strings are "not set" (placeholders in deployment files)
  const empty = await bootKernel(t, {
    plugins: ['auth', 'users', 'groups', 'chat', 'nats-ingress'],
    config: { nats: { url, user: '', password: '', token: '', tls: { caFile: '' } }, 'nats-ingress': { startWaitMs: 0 } },
  });
  t.equal(empty.kernel.state, 'started', 'empty settings are ignored');
  await empty.kernel.stop();
  t.equal(attempts > 0, true, 'that one did connect (the listener works)');
  attempts = 0;
  await bootKernel(t, { plugins: ['auth', 'users', 'groups', 'chat', 'nats-ingress'], config: { nats: { url, user: 'im' } }, noStart: true }).then((b) => b.kernel.start().catch(() => undefined));
  t.equal(attempts, 0, 'no connection was attempted by a kernel with bad settings');
});

t.test('NATS security: IM_NATS_* variables fill section nats; a bad one stops the process with one line naming the variable', async (t) => {
  const cfg = loadConfig({
    env: {
      IM_NATS_URL: 'tls://nats.internal:4222',
      IM_NATS_USER: 'im',
      IM_NATS_PASSWORD: PASSWORD,
      IM_NATS_TOKEN: 't',
      IM_NATS_CREDS_FILE: '/run/secrets/im.creds',
      IM_NATS_NKEY_SEED_FILE: '/run/secrets/im.nk',
      IM_NATS_TLS_REQUIRED: 'true',
      IM_NATS_TLS_CA_FILE: '/run/secrets/ca.pem',
      IM_NATS_TLS_CERT_FILE: '/run/secrets/im.pem',
      IM_NATS_TLS_KEY_FILE: '/run/secrets/im.key',
      IM_NATS_TLS_HANDSHAKE_FIRST: 'false',
    },
  });
  t.same(cfg.nats, {
    url: 'tls://nats.internal:4222',
    user: 'im',
    password: PASSWORD,
    token: 't',
    credsFile: '/run/secrets/im.creds',
    nkeySeedFile: '/run/secrets/im.nk',
    tls: { required: 'true', caFile: '/run/secrets/ca.pem', certFile: '/run/secrets/im.pem', keyFile: '/run/secrets/im.key', handshakeFirst: 'false' },
  });

  // the real process: a client certificate file that does not exist
  const dir = tempDir(t);
  const file = join(dir, 'config.json');
  writeFileSync(file, JSON.stringify({ adapters: { storage: 'memory', cluster: 'none', 'ai-provider': 'none' } }));
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('IM_')));
  const child = spawn(process.execPath, [fileURLToPath(new URL('../../bin/main.js', import.meta.url))], {
    cwd: dir,
    env: {
      ...clean,
      IM_CONFIG: file,
      IM_PLUGINS: 'auth,users,groups,chat,nats-ingress',
      IM_JWT_SECRET: 'nats-security-test-secret-0123456789',
      IM_NATS_URL: 'nats://127.0.0.1:1',
      IM_NATS_USER: 'im',
      IM_NATS_PASSWORD: PASSWORD,
      IM_NATS_TLS_CERT_FILE: join(dir, 'missing.pem'),
      IM_NATS_TLS_KEY_FILE: join(dir, 'missing.key'),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  t.equal(code, 1, 'exit code 1');
  const stderrLines = err.trim().split('\n');
  t.equal(stderrLines.length, 1, 'one line on stderr');
  t.match(stderrLines[0], /^(nats-ingress|cluster): nats\.tls\.certFile: cannot read '.*missing\.pem' \(ENOENT\) \(from IM_NATS_TLS_CERT_FILE\)$/);
  t.notMatch(out + err, PASSWORD, 'the password is in neither stdout nor stderr');
});

t.test('NATS security: user + password', async (t) => {
  if (!requireTools(t, ['nats-server'])) return;
  const server = await startNatsServer(t, ['--user', 'im', '--pass', PASSWORD]);
  const creds = { user: 'im', pass: PASSWORD };
  await t.test('nats.user / nats.password: connects and delivers', (t) => assertDelivers(t, server, creds, { url: server.url, user: 'im', password: PASSWORD }, 'userpass'));
  await t.test('credentials in nats.url (percent-encoded): connects and delivers', (t) =>
    assertDelivers(t, server, creds, { url: `nats://im:${encodeURIComponent(PASSWORD)}@127.0.0.1:${server.port}` }, 'url'));
  await t.test('a wrong password: unready, a clear error line, no crash', (t) =>
    assertRefused(t, { url: server.url, user: 'im', password: 'wrong-password-x' }, /^nats server refused the credentials: check nats\.user\/password/, 'wrong password', 'wrong-password-x'));
  await t.test('no credentials: unready, a clear error line', (t) => assertRefused(t, { url: server.url }, /^nats server refused the credentials/, 'none'));
});

t.test('NATS security: TLS (server certificate from a test CA) and client certificates', async (t) => {
  if (!requireTools(t, ['nats-server', 'openssl'])) return;
  const pki = await makePki(tempDir(t));
  const tls = await startNatsServer(t, ['--tls', '--tlscert', pki.serverCert, '--tlskey', pki.serverKey]);
  const mtls = await startNatsServer(t, ['--tlsverify', '--tlscert', pki.serverCert, '--tlskey', pki.serverKey, '--tlscacert', pki.caFile]);
  const plain = await startNatsServer(t, []);
  await t.test('tls.caFile: the server is verified against the test CA; connects and delivers', (t) =>
    assertDelivers(t, tls, { tls: { caFile: pki.caFile } }, { url: tls.url, tls: { caFile: pki.caFile } }, 'tls'));
  await t.test('tls:// URL with tls.caFile: connects and delivers', (t) =>
    assertDelivers(t, tls, { tls: { caFile: pki.caFile } }, { url: `tls://127.0.0.1:${tls.port}`, tls: { caFile: pki.caFile } }, 'tlsurl'));
  await t.test('without the CA the certificate is not trusted: unready, a clear error line', (t) =>
    assertRefused(t, { url: tls.url }, /^nats TLS failed: check nats\.tls/, 'untrusted'));
  await t.test('tls.required against a server without TLS: unready, a clear error line (no plaintext fallback)', (t) =>
    assertRefused(t, { url: plain.url, tls: { required: true } }, /^nats TLS failed: check nats\.tls/, 'required'));
  await t.test('client certificate (server with --tlsverify): connects and delivers', (t) =>
    assertDelivers(
      t,
      mtls,
      { tls: { caFile: pki.caFile, certFile: pki.clientCert, keyFile: pki.clientKey } },
      { url: mtls.url, tls: { caFile: pki.caFile, certFile: pki.clientCert, keyFile: pki.clientKey } },
      'mtls',
    ));
  // TLS 1.3: the server rejects the missing certificate after the handshake, which the client (reconnects on) reports as a timeout
  await t.test('no client certificate for a --tlsverify server: unready, a line pointing at tls.certFile', (t) =>
    assertRefused(t, { url: mtls.url, tls: { caFile: pki.caFile } }, /^nats connect timed out over TLS: if the server requires client certificates, set nats\.tls\.certFile/, 'no client cert', PASSWORD, 'warn'));
});

t.test('NATS security: NKey seed and .creds (decentralised JWT auth)', async (t) => {
  if (!requireTools(t, ['nats-server'])) return;
  const dir = tempDir(t);
  const nk = makeNkeySetup(dir);
  const op = makeOperatorSetup(dir);
  const nkServer = await startNatsServer(t, ['-c', nk.config]);
  const opServer = await startNatsServer(t, ['-c', op.config]);
  await t.test('nats.nkeySeedFile: connects and delivers', (t) =>
    assertDelivers(t, nkServer, { authenticator: nkeyAuthenticator(new TextEncoder().encode(readFileSync(nk.seedFile, 'utf8').trim())) }, { url: nkServer.url, nkeySeedFile: nk.seedFile }, 'nkey'));
  await t.test('nats.credsFile: connects and delivers', (t) =>
    assertDelivers(t, opServer, { authenticator: credsAuthenticator(readFileSync(op.credsFile)) }, { url: opServer.url, credsFile: op.credsFile }, 'creds'));
  await t.test('an NKey the server does not know: unready, a clear error line', (t) =>
    assertRefused(t, { url: nkServer.url, credsFile: op.credsFile }, /^nats server refused the credentials/, 'unknown nkey'));
});

// ---- A restart of the NATS server itself (private nats-server processes, killed and started again on the same port) ----

/** Short connection timings, so an outage and the reconnect after it take well under a second. */
const FAST = { startWaitMs: 3000, connectTimeoutMs: 1000, reconnect: { initialDelayMs: 20, maxDelayMs: 100 } };

async function bootOn(
  t: Test,
  url: string,
  plugins: string[],
  config: { ingress?: Record<string, unknown>; egress?: Record<string, unknown>; logs?: LogLine[] } = {},
) {
  const id = randomBytes(4).toString('hex');
  const subject = `rs.${id}.inbound`;
  const prefix = `rs.${id}.events`;
  const booted = await bootWithOptionalHttp(
    t,
    {
      plugins: ['auth', 'users', 'groups', 'chat', ...plugins],
      ...(config.logs ? { logger: recordingLogger(config.logs) } : {}),
      config: {
        nats: { url },
        'nats-ingress': { subject, dlqSubject: `${subject}.dlq`, queueGroup: `q-${id}`, retryDelayMs: 100, ...FAST, ...config.ingress },
        'nats-egress': { subjectPrefix: prefix, ...FAST, ...config.egress },
      },
    },
    true,
  );
  await seedGroup(booted.c, 'g1', ['pat1']);
  return { ...booted, http: api(booted.baseUrl), subject, prefix, id };
}

/** What a careful publisher does: retry (same payload, so same client_msg_id) until the server answers. */
async function untilAnswered<T>(what: string, attempt: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${what}: no answer within 15 s (${(err as Error).message})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** A client of the test itself that rides out the restart too. */
async function client(t: Test, url: string): Promise<NatsConnection> {
  const nc = await connect({ servers: url, reconnectTimeWait: 20, maxReconnectAttempts: -1, timeout: 1000 });
  t.teardown(() => nc.close());
  return nc;
}

const stored = async (c: Cradle) => (await c.chatService.list(as('pat1'), { group_id: 'g1', limit: 200 })).messages.map((m) => m.client_msg_id);

async function readyz(http: ReturnType<typeof api>): Promise<{ status: number; text: string }> {
  const r = await http.get('/readyz');
  return { status: r.status, text: JSON.stringify(r.body) };
}

t.test('NATS server restart (SIGKILL, same store): JetStream ingress stores every acknowledged payload exactly once; /readyz red during the outage', async (t) => {
  if (!requireTools(t, ['nats-server'])) return;
  const server = await restartableNatsServer(t, ['-js', '-sd', tempDir(t, 'im-nats-js-')]);
  const id = randomBytes(4).toString('hex');
  const stream = `RS_${id}`;
  const { c, http, subject } = await bootOn(t, server.url, ['nats-ingress'], {
    ingress: { maxInFlight: 2, jetstream: { stream, durable: `rs-${id}`, createStream: true, ackWaitMs: 1000 } },
  });
  t.equal((await readyz(http)).status, 200, 'ready before the restart');
  const pub = await client(t, server.url);
  const pjs = jetstream(pub);

  // storage holds the first deliveries: two in flight (committed only after the kill), three waiting in the stream
  const release = holdAppends(t, c.storage.messages);
  const before = ['before-1', 'before-2', 'before-3', 'before-4', 'before-5'];
  for (const id of before) await pjs.publish(subject, secPayload(id)); // acknowledged by JetStream
  await waitFor(() => c.natsIngress.inFlight === 2, 'two deliveries in flight');

  await server.kill('SIGKILL');
  await waitFor(() => !c.natsIngress.connected, 'ingress notices the server is gone');
  const down = await readyz(http);
  t.equal(down.status, 503, '/readyz red while the server is down');
  t.match(down.text, /nats/, '/readyz names nats');
  // the in-flight deliveries are committed now; their acks cannot reach the server
  release();
  await waitFor(async () => (await stored(c)).length === 2, 'the two in-flight deliveries committed');
  await waitFor(() => c.natsIngress.inFlight === 0, 'and settled as far as they can be');
  // what the publisher has during the outage is refused (not acknowledged): it keeps it and publishes it later
  await t.rejects(pjs.publish(subject, secPayload('during-1'), { timeout: 300 }), 'a publish while the server is down is not acknowledged');

  await server.start();
  await waitFor(() => c.natsIngress.connected, 'ingress consuming again', 15_000);
  t.equal((await readyz(http)).status, 200, '/readyz green after the restart');
  const during = ['during-1', 'during-2', 'during-3'];
  for (const id of during) await untilAnswered(id, () => pjs.publish(subject, secPayload(id), { timeout: 500 }));
  await pjs.publish(subject, secPayload('before-5')); // a publisher's retry of an acknowledged payload

  const all = [...before, ...during];
  await waitFor(async () => (await stored(c)).length === all.length && c.natsIngress.stats.duplicate >= 3, 'everything stored, redeliveries seen as duplicates', 15_000);
  const ids = await stored(c);
  t.same([...ids].sort(), [...all].sort(), 'every payload acknowledged before the kill, and every one published after it, stored');
  t.equal(new Set(ids).size, ids.length, 'each exactly once');
  t.ok(c.natsIngress.stats.duplicate >= 3, 'the unacknowledged in-flight deliveries came again and were acknowledged as duplicates, like the retry');
  const jsm2 = await jetstreamManager(pub);
  await waitFor(async () => {
    const i = await jsm2.consumers.info(stream, `rs-${id}`);
    return i.num_ack_pending === 0 && i.num_pending === 0;
  }, 'the stream is fully acknowledged');
});

t.test('NATS server restart (SIGTERM): core ingress subscribes again and resumes; publishes while no server is up are the publisher\'s to retry', async (t) => {
  if (!requireTools(t, ['nats-server'])) return;
  const server = await restartableNatsServer(t, []);
  const { c, http, subject } = await bootOn(t, server.url, ['nats-ingress']);
  const pub = await client(t, server.url);
  t.match(JSON.parse((await pub.request(subject, secPayload('core-before'), { timeout: 5000 })).string()), { status: 'stored' });

  await server.kill('SIGTERM');
  await waitFor(() => !c.natsIngress.connected, 'ingress notices the server is gone');
  t.equal((await readyz(http)).status, 503, '/readyz red while the server is down');
  // core NATS is at most once: nobody is there to take it, the requester learns it only from the failure
  await t.rejects(pub.request(subject, secPayload('core-during'), { timeout: 300 }), 'a request while the server is down fails for the publisher');

  await server.start();
  await waitFor(() => c.natsIngress.connected, 'ingress subscribed again', 15_000);
  t.equal((await readyz(http)).status, 200, '/readyz green after the restart');
  const after = await untilAnswered('core-after', () => pub.request(subject, secPayload('core-after'), { timeout: 500 }));
  t.match(JSON.parse(after.string()), { status: 'stored' }, 'ingests after the restart');
  t.same(await stored(c), ['core-before', 'core-after'], 'the payload published while no server was up is not stored (at most once)');
});

t.test('NATS server restart (SIGKILL): egress holds events of the outage (bounded by maxBuffer) and publishes them after the reconnect', async (t) => {
  if (!requireTools(t, ['nats-server'])) return;
  const server = await restartableNatsServer(t, ['-js', '-sd', tempDir(t, 'im-nats-js-')]);
  const admin2 = await client(t, server.url);
  const jsm2 = await jetstreamManager(admin2);
  // The service reaches the server through a proxy that the test keeps shut until the restarted
  // server has its JetStream stream back: events the egress republishes at the reconnect must find
  // the capturing stream (under load the service reconnected first, and what it sent was not kept).
  const proxy = await startTcpProxy(t, server.port);
  const lines: LogLine[] = [];
  const { c, http, prefix, id, baseUrl } = await bootOn(t, `nats://127.0.0.1:${proxy.port}`, ['metrics', 'nats-egress'], { egress: { maxBuffer: 3 }, logs: lines });
  await waitFor(() => c.natsEgress.stats.published === 1, "the seeding's member.added published (before the stream exists)");
  // a stream captures the egress subjects: what reaches the server is kept, whoever is subscribed
  const stream = `EV_${id}`;
  await jsm2.streams.add({ name: stream, subjects: [`${prefix}.>`] });
  const eventsInStream = async () => {
    const out: { event: string; id: string }[] = [];
    const js2 = jetstream(admin2);
    const consumer = await js2.consumers.get(stream); // ephemeral ordered consumer
    const info = await jsm2.streams.info(stream);
    if (info.state.messages === 0) return out;
    const it = await consumer.fetch({ max_messages: info.state.messages, expires: 2000 });
    for await (const m of it) {
      const b = m.json<{ event: string; data: { message_id?: string; user_id?: string } }>();
      out.push({ event: b.event, id: b.data.message_id ?? b.data.user_id ?? '' });
      if (out.length === info.state.messages) break;
    }
    // the seeding's member.added counts as published once handed to the client; it may still reach
    // the server after the stream was created: it is not part of what this test looks at
    return out.filter((e) => !(e.event === 'member.added' && e.id === 'pat1'));
  };
  const m1 = (await c.chatService.send(as('pat1'), { group_id: 'g1', msg_content: 'before' }, { transport: 'http' })).message;
  await waitFor(async () => (await eventsInStream()).some((e) => e.id === m1.message_id), 'the first event is in the stream');
  const inStreamBefore = (await jsm2.streams.info(stream)).state.messages;

  await server.kill('SIGKILL');
  await waitFor(() => !c.natsEgress.connected, 'egress notices the server is gone');
  const down = await readyz(http);
  t.equal(down.status, 503, '/readyz red while the server is down');
  t.match(down.text, /nats-egress|egress/);
  const during: string[] = [];
  for (const text of ['during-1', 'during-2']) during.push((await c.chatService.send(as('pat1'), { group_id: 'g1', msg_content: text }, { transport: 'http' })).message.message_id);
  await c.userService.create(admin, { user_id: 'doc7', username: 'doc7', user_role: 'DOCTOR' });
  await c.groupService.addMember(admin, 'g1', { user_id: 'doc7' });
  t.equal(c.natsEgress.pending, 3, 'three events held');
  // the event past the buffer is sent over HTTP: its drop line carries the request's ids
  const sentOver = await api(baseUrl, await tokenFor(c, 'pat1')).post('/api/message/send', { group_id: 'g1', msg_content: 'over the buffer' }, { 'x-request-id': 'req-over-1' });
  t.equal(sentOver.status, 201);
  const over = sentOver.body as { message_id: string };
  t.equal(c.natsEgress.pending, 3, 'the buffer is bounded');
  t.equal(c.natsEgress.stats.dropped, 1, 'the event past maxBuffer is dropped and counted');
  const full = lines.filter((l) => l.msg === 'nats egress buffer full: event dropped');
  t.equal(full.length, 1, 'one drop line');
  t.match(
    full[0],
    { level: 'error', plugin: 'nats-egress', req_id: 'req-over-1', user_id: 'pat1', event: 'message.stored', group_id: 'g1', id: over.message_id, buffered: 3 },
    "the drop line carries the dropped event's request id and user",
  );
  t.notOk(JSON.stringify(full[0]).includes('over the buffer'), 'no message content on the line');
  const heldMetrics = await c.metricsRegistry.metrics();
  t.match(heldMetrics, 'im_broker_egress_events_total{transport="nats",outcome="dropped"} 1', 'metrics: the dropped event');
  t.match(heldMetrics, 'im_broker_egress_pending{transport="nats"} 3', 'metrics: three events held');
  t.same(await stored(c), [null, null, null, null], 'storing never waited for NATS');

  proxy.refuse(true);
  await server.start();
  await waitFor(async () => {
    try {
      return (await jsm2.streams.info(stream)).state.messages === inStreamBefore;
    } catch {
      return false;
    }
  }, 'the restarted server has the stream back', 15_000);
  t.equal(c.natsEgress.pending, 3, 'still held while the service cannot reach the server');
  proxy.refuse(false);
  await waitFor(() => c.natsEgress.connected && c.natsEgress.pending === 0, 'egress reconnected and published what it held', 15_000);
  t.equal((await readyz(http)).status, 200, '/readyz green after the restart');
  const m5 = (await c.chatService.send(as('pat1'), { group_id: 'g1', msg_content: 'after' }, { transport: 'http' })).message;
  await waitFor(async () => {
    try {
      return (await eventsInStream()).length === 5;
    } catch {
      return false;
    }
  }, 'five events in the stream', 15_000);
  const got = await eventsInStream();
  t.same(
    got,
    [
      { event: 'message.stored', id: m1.message_id },
      { event: 'message.stored', id: during[0] },
      { event: 'message.stored', id: during[1] },
      { event: 'member.added', id: 'doc7' },
      { event: 'message.stored', id: m5.message_id },
    ],
    'the events of the outage are published after the reconnect, in order, before newer ones; the one past the buffer is not',
  );
  t.notOk(got.some((e) => e.id === over.message_id));
  t.equal(c.natsEgress.stats.published, 6, 'published: the seeding member.added, the 4 events above, the one after');
  const after = await c.metricsRegistry.metrics();
  t.match(after, 'im_broker_egress_events_total{transport="nats",outcome="published"} 6', 'metrics: published, as the stats say');
  t.match(after, 'im_broker_egress_pending{transport="nats"} 0', 'metrics: nothing held');
});

// ---- nats-egress in JetStream mode (the shared server; streams unique per test, deleted at teardown) ----

/**
 * A TCP proxy that can hold back what the server sends: while `hold(true)`,
 * the client's publishes reach the server but the acknowledgements wait here;
 * `hold(false)` passes them on, in order. Lost if the connection goes meanwhile.
 */
async function ackHoldingProxy(t: Test, targetPort: number): Promise<{ port: number; hold(on: boolean): void }> {
  let holding = false;
  const flushes = new Set<() => void>();
  const ends = new Set<() => void>();
  const server = createServer((client) => {
    const upstream = connectTcp({ port: targetPort, host: '127.0.0.1' });
    const held: Buffer[] = [];
    const flush = (): void => {
      for (const b of held.splice(0)) client.write(b);
    };
    const end = (): void => {
      flushes.delete(flush);
      ends.delete(end);
      held.length = 0;
      client.destroy();
      upstream.destroy();
    };
    flushes.add(flush);
    ends.add(end);
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.on('data', (b: Buffer) => (holding ? held.push(b) : client.write(b)));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const end of [...ends]) end();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return {
    port: (server.address() as { port: number }).port,
    hold(on) {
      holding = on;
      if (!on) for (const flush of [...flushes]) flush();
    },
  };
}

interface StoredEvent {
  subject: string;
  /** `Nats-Msg-Id` and `im-event` headers. */
  msgId: string;
  event: string;
  /** `message.stored:<message_id>`, `member.added:<user_id>`, ... */
  key: string;
  /** The id the event should carry as Nats-Msg-Id, from its body. */
  expectedId: string;
}

/** Every message of the stream, in stream order. */
async function storedEvents(jsm: JetStreamManager, stream: string): Promise<StoredEvent[]> {
  const { state } = await jsm.streams.info(stream);
  const out: StoredEvent[] = [];
  for (let seq = state.first_seq; state.messages > 0 && seq <= state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq });
    if (!m) continue;
    const b = m.json<{ event: string; data: { message_id?: string; group_id: string; user_id?: string; joined_at?: string } }>();
    const d = b.data;
    out.push({
      subject: m.subject,
      msgId: m.header.get('Nats-Msg-Id'),
      event: m.header.get('im-event'),
      key: `${b.event}:${d.message_id ?? d.user_id}`,
      expectedId: d.message_id ?? `${b.event}:${d.group_id}:${d.user_id}:${d.joined_at}`,
    });
  }
  return out;
}

/** Sends a message as pat1 in g1; returns the key of its event. */
async function say(c: Cradle, text: string): Promise<string> {
  return `message.stored:${(await c.chatService.send(as('pat1'), { group_id: 'g1', msg_content: text }, { transport: 'http' })).message.message_id}`;
}

/** `user` (a doctor) joins g1 and leaves again: the keys of the two member events. */
async function joinAndLeave(c: Cradle, user: string): Promise<string[]> {
  await c.userService.create(admin, { user_id: user, username: user, user_role: 'DOCTOR' });
  await c.groupService.addMember(admin, 'g1', { user_id: user });
  await c.groupService.removeMember(admin, 'g1', user);
  return [`member.added:${user}`, `member.removed:${user}`];
}

/** The event of bootOn's seeding. */
const SEEDED = 'member.added:pat1';

if (natsUp) {
  const ops = await connect({ servers: SERVICES.nats.url, name: 'nats-egress-js-test' });
  t.teardown(() => ops.close());
  const opsJsm = await jetstreamManager(ops);

  /** A unique stream name, deleted at teardown. */
  const streamName = (t: Test): string => {
    const name = `EGJS_${randomBytes(4).toString('hex')}`;
    t.teardown(() => opsJsm.streams.delete(name).catch(() => undefined));
    return name;
  };
  const inStream = (stream: string): Promise<StoredEvent[]> => storedEvents(opsJsm, stream);
  const streamCount = async (stream: string): Promise<number> => (await opsJsm.streams.info(stream)).state.messages;
  /** Egress into a new stream through an ack-holding proxy, the seeding's event acknowledged; then acknowledgements are held back. */
  const bootHoldingAcks = async (t: Test, jetstream: Record<string, unknown>) => {
    const stream = streamName(t);
    const acks = await ackHoldingProxy(t, SERVICES.nats.port);
    const lines: LogLine[] = [];
    const booted = await bootOn(t, `nats://127.0.0.1:${acks.port}`, ['nats-egress'], { egress: { jetstream: { stream, createStream: true, ...jetstream } }, logs: lines });
    await waitFor(() => booted.c.natsEgress.pending === 0 && booted.c.natsEgress.stats.published === 1, "the seeding's event acknowledged");
    acks.hold(true);
    return { ...booted, stream, acks, lines };
  };

  t.test('JetStream egress: messages and membership changes are stored in the stream, Nats-Msg-Id = the event id, counted once acknowledged', async (t) => {
    const stream = streamName(t);
    const { c, prefix } = await bootOn(t, SERVICES.nats.url, ['nats-egress'], { egress: { jetstream: { stream, createStream: true } } });
    t.ok(c.natsEgress.connected, 'connected, stream checked');
    const keys = [SEEDED, await say(c, 'hello'), ...(await joinAndLeave(c, 'doc9')), await say(c, 'bye')];
    await waitFor(() => c.natsEgress.pending === 0 && c.natsEgress.stats.published === keys.length, 'every event acknowledged');
    const got = await inStream(stream);
    t.same(got.map((e) => e.key), keys, 'every event stored once, in order');
    for (const e of got) {
      t.equal(e.msgId, e.expectedId, `${e.key}: Nats-Msg-Id is the event id`);
      t.equal(e.event, e.key.slice(0, e.key.indexOf(':')), `${e.key}: im-event header`);
      t.equal(e.subject, `${prefix}.${e.key.startsWith('message') ? 'message' : 'member'}.g1`, `${e.key}: subject as in core mode`);
    }
    t.same(c.natsEgress.stats, { published: keys.length, dropped: 0, failed: 0, duplicate: 0 });
  });

  t.test('JetStream egress: a missing stream fails start-up with one clear line unless createStream; createStream creates it (file storage, <prefix>.>)', async (t) => {
    const stream = streamName(t);
    const prefix = `egjs.${randomBytes(4).toString('hex')}.events`;
    const proxy = await startTcpProxy(t, SERVICES.nats.port);
    const { kernel } = await bootKernel(t, {
      plugins: ['auth', 'users', 'groups', 'chat', 'nats-egress'],
      config: { nats: { url: `nats://127.0.0.1:${proxy.port}` }, 'nats-egress': { subjectPrefix: prefix, ...FAST, jetstream: { stream } } },
      noStart: true,
    });
    const err = await kernel.start().then(
      () => null,
      (e: Error) => e,
    );
    t.equal(
      err?.message,
      `nats-egress: start failed: nats stream '${stream}' does not exist: create it (subjects '${prefix}.>') or set jetstream.createStream: true`,
      'start-up fails naming the stream, its subjects and the setting',
    );
    t.equal(kernel.state, 'failed');
    await waitFor(() => proxy.connections === 0, 'the connection of the failed start is closed');
    await t.rejects(opsJsm.streams.info(stream), 'nothing created');

    const { c } = await bootOn(t, SERVICES.nats.url, ['nats-egress'], { egress: { subjectPrefix: prefix, jetstream: { stream, createStream: true } } });
    const info = await opsJsm.streams.info(stream);
    t.same(info.config.subjects, [`${prefix}.>`], 'created capturing the egress subjects');
    t.equal(info.config.storage, 'file', 'file storage');
    await waitFor(() => c.natsEgress.stats.published === 1, "the seeding's event acknowledged");
    t.same((await inStream(stream)).map((e) => e.key), [SEEDED]);
  });

  t.test('JetStream egress: the stream is checked again after every reconnect (re-created with createStream; otherwise events are held, /readyz red, until it is back)', async (t) => {
    // createStream: deleted while connected, re-created at the reconnect
    const s1 = streamName(t);
    const p1 = await startTcpProxy(t, SERVICES.nats.port);
    const lines1: LogLine[] = [];
    const a = await bootOn(t, `nats://127.0.0.1:${p1.port}`, ['nats-egress'], { egress: { jetstream: { stream: s1, createStream: true } }, logs: lines1 });
    await waitFor(() => a.c.natsEgress.stats.published === 1, "the seeding's event acknowledged");
    await opsJsm.streams.delete(s1);
    p1.dropAll();
    await waitFor(() => lines1.filter((l) => l.msg === 'nats stream created' && l.stream === s1).length === 2, 'the stream is created again after the reconnect');
    const k1 = await say(a.c, 'after the reconnect');
    await waitFor(() => a.c.natsEgress.connected && a.c.natsEgress.pending === 0 && a.c.natsEgress.stats.published === 2, 'published into the new stream');
    t.same((await inStream(s1)).map((e) => e.key), [k1]);

    // no createStream: the stream made by its owner, deleted, then made again
    const s2 = streamName(t);
    const prefix = `egjs.${randomBytes(4).toString('hex')}.events`;
    await opsJsm.streams.add({ name: s2, subjects: [`${prefix}.>`] });
    const p2 = await startTcpProxy(t, SERVICES.nats.port);
    const lines2: LogLine[] = [];
    const b = await bootOn(t, `nats://127.0.0.1:${p2.port}`, ['nats-egress'], { egress: { subjectPrefix: prefix, jetstream: { stream: s2 } }, logs: lines2 });
    await waitFor(() => b.c.natsEgress.stats.published === 1, "the seeding's event acknowledged");
    await opsJsm.streams.delete(s2);
    p2.dropAll();
    await waitFor(() => lines2.some((l) => l.level === 'error' && l.msg?.startsWith('nats egress: stream check after the reconnect failed') && String(l.err).includes(`nats stream '${s2}' does not exist`)), 'an error line names the missing stream');
    await waitFor(() => !b.c.natsEgress.connected, 'not ready');
    const down = await readyz(b.http);
    t.equal(down.status, 503, '/readyz red while the stream is missing');
    t.match(down.text, new RegExp(`stream '${s2}'`), '/readyz names the stream');
    const k2 = await say(b.c, 'while the stream is missing');
    t.equal(b.c.natsEgress.pending, 1, 'the event is held');
    await opsJsm.streams.add({ name: s2, subjects: [`${prefix}.>`] });
    await waitFor(() => b.c.natsEgress.connected && b.c.natsEgress.pending === 0, 'the stream is back: connected, the event published');
    t.same((await inStream(s2)).map((e) => e.key), [k2], 'stored once');
    t.same(b.c.natsEgress.stats, { published: 2, dropped: 0, failed: 0, duplicate: 0 }, 'never retried: held until the stream was checked');
  });

  t.test('JetStream egress: connection lost mid-traffic (acknowledgements lost with it) and restored: every event in the stream exactly once, in order', async (t) => {
    const stream = streamName(t);
    const cut = await startTcpProxy(t, SERVICES.nats.port);
    const acks = await ackHoldingProxy(t, cut.port);
    const lines: LogLine[] = [];
    const { c } = await bootOn(t, `nats://127.0.0.1:${acks.port}`, ['nats-egress'], { egress: { jetstream: { stream, createStream: true, ackTimeoutMs: 3000 } }, logs: lines });
    const sent = [SEEDED];
    for (let i = 0; i < 10; i++) sent.push(await say(c, `before-${i}`));
    await waitFor(() => c.natsEgress.pending === 0, 'acknowledged');

    // stored by the server, acknowledgements not through yet ...
    acks.hold(true);
    const inFlight: string[] = [];
    for (let i = 0; i < 10; i++) inFlight.push(await say(c, `in-flight-${i}`));
    sent.push(...inFlight);
    await waitFor(async () => (await streamCount(stream)) === sent.length, 'the in-flight events stored by the server');
    t.equal(c.natsEgress.pending, 10, 'ten awaiting their acknowledgement');
    // ... when the connection breaks: those acknowledgements are lost
    cut.refuse(true);
    cut.dropAll();
    await waitFor(() => !c.natsEgress.connected, 'disconnected');
    acks.hold(false);
    const during: string[] = [];
    for (let i = 0; i < 10; i++) during.push(await say(c, `during-${i}`));
    during.push(...(await joinAndLeave(c, 'doc7')));
    sent.push(...during);
    t.equal(c.natsEgress.pending, 10 + during.length, 'held while disconnected: the unacknowledged and the new');

    cut.refuse(false);
    await waitFor(() => c.natsEgress.connected && c.natsEgress.pending === 0, 'reconnected, everything acknowledged', 30_000);
    const got = await inStream(stream);
    t.same(got.map((e) => e.key), sent, 'every event in the stream, in order: none lost');
    t.equal(new Set(got.map((e) => e.msgId)).size, got.length, 'none stored twice');
    t.same(c.natsEgress.stats, { published: sent.length, dropped: 0, failed: 0, duplicate: 10 }, 'the retries of the ten were recognised by the stream as duplicates');
    const retried = lines.filter((l) => l.msg === 'nats egress publish not acknowledged; will retry');
    t.same([...new Set(retried.map((l) => `message.stored:${String(l.id)}`))].sort(), [...inFlight].sort(), 'a warning for each event retried, and only those');
    t.match(retried[0], { level: 'warn', plugin: 'nats-egress', event: 'message.stored', attempt: Number });
  });

  t.test('JetStream egress: an event never acknowledged is retried up to maxAttempts, then dropped with an error line carrying the request ids', async (t) => {
    const { c, baseUrl, stream, acks, lines } = await bootHoldingAcks(t, { maxAttempts: 2, ackTimeoutMs: 300 });
    const res = await api(baseUrl, await tokenFor(c, 'pat1')).post('/api/message/send', { group_id: 'g1', msg_content: 'never acknowledged' }, { 'x-request-id': 'req-noack-1' });
    t.equal(res.status, 201);
    const id = (res.body as { message_id: string }).message_id;
    await waitFor(() => c.natsEgress.stats.failed === 1, 'dropped after two attempts');
    t.equal(c.natsEgress.pending, 0, 'no longer pending');
    const warn = lines.filter((l) => l.msg === 'nats egress publish not acknowledged; will retry');
    t.equal(warn.length, 1, 'one retry');
    t.match(warn[0], { level: 'warn', plugin: 'nats-egress', req_id: 'req-noack-1', user_id: 'pat1', event: 'message.stored', id, attempt: 1 });
    const dropped = lines.filter((l) => l.msg === 'nats egress publish failed: event dropped');
    t.equal(dropped.length, 1, 'one drop line');
    t.match(dropped[0], { level: 'error', plugin: 'nats-egress', req_id: 'req-noack-1', user_id: 'pat1', event: 'message.stored', group_id: 'g1', id, err: String });
    t.notOk(JSON.stringify(lines).includes('never acknowledged'), 'no message content in the log');
    const got = await inStream(stream);
    t.same(got.map((e) => e.key), [SEEDED, `message.stored:${id}`], 'the server had it (only the acknowledgements were missing), once: the retry was de-duplicated');
    acks.hold(false);
  });

  t.test('JetStream egress: stop() waits up to drainTimeoutMs for acknowledgements, then logs what has none', async (t) => {
    // acknowledged during the drain
    const one = await bootHoldingAcks(t, { ackTimeoutMs: 60_000, drainTimeoutMs: 60_000 });
    const keys = [SEEDED, await say(one.c, 'drain-1'), await say(one.c, 'drain-2')];
    await waitFor(async () => (await streamCount(one.stream)) === 3, 'stored, not acknowledged yet');
    t.equal(one.c.natsEgress.pending, 2);
    const stopping = one.kernel.stop();
    await new Promise((r) => setTimeout(r, 200));
    one.acks.hold(false);
    await stopping;
    t.equal(one.c.natsEgress.stats.published, 3, 'acknowledged before the connection closed');
    t.equal(one.c.natsEgress.pending, 0);
    t.notOk(one.lines.some((l) => l.msg === 'nats egress stopped with events not confirmed'), 'nothing reported missing');
    t.same((await inStream(one.stream)).map((e) => e.key), keys);

    // never acknowledged: reported after drainTimeoutMs
    const two = await bootHoldingAcks(t, { ackTimeoutMs: 60_000, drainTimeoutMs: 300 });
    const ids = [await say(two.c, 'lost-1'), await say(two.c, 'lost-2')].map((k) => k.slice('message.stored:'.length));
    await waitFor(async () => (await streamCount(two.stream)) === 3, 'stored, not acknowledged');
    const stopping2 = two.kernel.stop();
    await waitFor(() => two.lines.some((l) => l.msg === 'nats egress stopped with events not confirmed'), 'reported after the drain timeout');
    two.acks.hold(false); // lets the connection's drain finish; acknowledgements coming now are too late to count
    await stopping2;
    const line = two.lines.filter((l) => l.msg === 'nats egress stopped with events not confirmed');
    t.equal(line.length, 1);
    t.match(line[0], { level: 'error', plugin: 'nats-egress', unpublished: 2, unconfirmed: 2, ids }, 'one line with the count and the ids');
    t.equal(two.c.natsEgress.stats.published, 1, 'not counted as published');
  });

  t.test('JetStream egress: settings are checked at start-up (one line naming the setting); {} means the defaults', async (t) => {
    const cases: [string, unknown, string][] = [
      ['not an object', true, "jetstream: must be of type object"],
      ['a stream name with a dot', { stream: 'IM.EVENTS' }, "jetstream.stream: must be a stream name (no '.', '*', '>' or spaces)"],
      ['an empty stream name', { stream: '' }, 'jetstream.stream: is not allowed to be empty'],
      ['createStream not a boolean', { createStream: 'maybe' }, 'jetstream.createStream: must be a boolean'],
      ['maxUnconfirmed 0', { maxUnconfirmed: 0 }, 'jetstream.maxUnconfirmed: must be greater than or equal to 1'],
      ['maxAttempts 0', { maxAttempts: 0 }, 'jetstream.maxAttempts: must be greater than or equal to 1'],
      ['maxAttempts not an integer', { maxAttempts: 1.5 }, 'jetstream.maxAttempts: must be an integer'],
      ['ackTimeoutMs too small', { ackTimeoutMs: 10 }, 'jetstream.ackTimeoutMs: must be greater than or equal to 100'],
      ['drainTimeoutMs negative', { drainTimeoutMs: -1 }, 'jetstream.drainTimeoutMs: must be greater than or equal to 0'],
      ['a misspelt key', { create_stream: true }, 'jetstream.create_stream: is not allowed'],
    ];
    for (const [what, jetstream, msg] of cases) {
      const { kernel } = await bootKernel(t, { plugins: ['auth', 'users', 'groups', 'chat', 'nats-egress'], config: { nats: { url: SERVICES.nats.url }, 'nats-egress': { jetstream } }, noStart: true });
      await t.rejects(kernel.start(), { message: `nats-egress: ${msg}` }, what);
      t.equal(kernel.state, 'failed', `${what}: not started`);
    }
    const config = { nats: { url: SERVICES.nats.url } };
    t.same(natsEgressOptions({ jetstream: {} }, config).jetstream, { stream: 'IM_EVENTS', createStream: false, maxUnconfirmed: 1000, maxAttempts: 5, ackTimeoutMs: 5000, drainTimeoutMs: 5000 }, '{} = the defaults');
    t.equal(natsEgressOptions({}, config).jetstream, null, 'core mode by default');
    t.equal(natsEgressOptions({ jetstream: null }, config).jetstream, null, 'null = core mode');
  });
}

t.test('NATS server restart (SIGKILL, same store): JetStream egress ends with every event in the stream exactly once; /readyz red during the outage', async (t) => {
  if (!requireTools(t, ['nats-server'])) return;
  const server = await restartableNatsServer(t, ['-js', '-sd', tempDir(t, 'im-nats-js-')]);
  const stream = `EGRS_${randomBytes(4).toString('hex')}`;
  const { c, http } = await bootOn(t, server.url, ['nats-egress'], { egress: { jetstream: { stream, createStream: true, ackTimeoutMs: 1000 } } });
  const admin2 = await jetstreamManager(await client(t, server.url), { timeout: 1000 });
  const keys = [SEEDED];
  // traffic: the server dies in the middle of it
  const traffic = (async () => {
    for (let i = 0; i < 60; i++) {
      keys.push(await say(c, `traffic-${i}`));
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  await waitFor(async () => (await admin2.streams.info(stream)).state.messages >= 10, 'part of the traffic stored');
  await server.kill('SIGKILL');
  await waitFor(() => !c.natsEgress.connected, 'egress notices the server is gone');
  t.equal((await readyz(http)).status, 503, '/readyz red while the server is down');
  await traffic;
  keys.push(...(await joinAndLeave(c, 'doc7')));
  t.ok(c.natsEgress.pending >= 2, 'the events of the outage are held');

  await server.start();
  await waitFor(() => c.natsEgress.connected && c.natsEgress.pending === 0, 'reconnected, stream checked, everything acknowledged', 30_000);
  t.equal((await readyz(http)).status, 200, '/readyz green after the restart');
  // the test's own client may still be reconnecting
  const got = await untilAnswered('the stream read back', () => storedEvents(admin2, stream));
  t.same(got.map((e) => e.key).sort(), [...keys].sort(), 'every event in the stream: none lost');
  t.equal(new Set(got.map((e) => e.msgId)).size, got.length, 'none stored twice');
  t.equal(c.natsEgress.stats.published, keys.length, 'each acknowledged once');
  t.same({ dropped: c.natsEgress.stats.dropped, failed: c.natsEgress.stats.failed }, { dropped: 0, failed: 0 });
});
