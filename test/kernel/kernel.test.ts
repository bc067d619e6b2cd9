import t from 'tap';
import { asValue } from 'awilix';
import { Kernel } from '../../kernel/kernel.js';
import { MessageBus } from '../../kernel/bus.js';
import { KernelError, ConfigError, NotFoundError, RateLimitedError, toAppError, HTTP_STATUS } from '../../kernel/errors.js';
import { silentLogger, type Logger } from '../../kernel/logger.js';
import { definePlugin, type Plugin } from '../../kernel/plugin.js';
import { uuidV7Generator, type Clock } from '../../kernel/clock.js';
import { loadConfig } from '../../config/loader.js';
import { composeKernel, resolveUnits } from '../../bin/compose.js';
import type { Message } from '../../kernel/domain.js';

function recorder(): { log: string[]; unit: (name: string, deps?: string[], extra?: Partial<Plugin<unknown>>) => Plugin<unknown> } {
  const log: string[] = [];
  return {
    log,
    unit: (name, deps = [], extra = {}) =>
      definePlugin<unknown>({
        name,
        dependsOn: deps,
        register: () => {
          log.push(`register:${name}`);
        },
        start: async () => {
          log.push(`start:${name}`);
        },
        stop: async () => {
          log.push(`stop:${name}`);
        },
        ...extra,
      }),
  };
}

function capturingLogger(): { logger: Logger; errors: unknown[] } {
  const errors: unknown[] = [];
  const logger: Logger = { ...silentLogger, error: ((o: unknown) => errors.push(o)) as Logger['error'], child: () => logger };
  return { logger, errors };
}

const message: Message = {
  message_id: 'm1', group_id: 'g1', seq: 1, from_user_id: 'u1', msg_type: 'TEXT',
  msg_content: 'hi', client_msg_id: null, created_at: '2026-01-01T00:00:00.000Z',
};

t.test('lifecycle', async (t) => {
  t.test('starts in dependency order and stops in reverse', async (t) => {
    const { log, unit } = recorder();
    const k = new Kernel({ units: [unit('c', ['b']), unit('a'), unit('b', ['a'])], config: {}, logger: silentLogger });
    t.same(k.unitNames, ['a', 'b', 'c']);
    await k.start();
    t.equal(k.state, 'started');
    t.same(log, ['register:a', 'register:b', 'register:c', 'start:a', 'start:b', 'start:c']);
    await k.stop();
    await k.stop(); // idempotent
    t.same(log.slice(6), ['stop:c', 'stop:b', 'stop:a']);
    t.equal(k.state, 'stopped');
  });

  t.test('`after` orders only when the other unit is enabled', async (t) => {
    const { unit } = recorder();
    const k = new Kernel({ units: [unit('ws', [], { after: ['metrics', 'cluster'] }), unit('metrics')], config: {}, logger: silentLogger });
    t.same(k.unitNames, ['metrics', 'ws']);
  });

  t.test('a missing dependency fails with one line naming it', async (t) => {
    const { unit } = recorder();
    t.throws(() => new Kernel({ units: [unit('chat', ['storage'])], config: {}, logger: silentLogger }), {
      message: "'chat' depends on 'storage', which is not enabled",
    });
  });

  t.test('a cycle fails with the cycle named', async (t) => {
    const { unit } = recorder();
    const err = t.throws(() => new Kernel({ units: [unit('a', ['c']), unit('b', ['a']), unit('c', ['b'])], config: {}, logger: silentLogger }));
    t.type(err, KernelError);
    t.match((err as Error).message, /^dependency cycle: a -> c -> b -> a$/);
  });

  t.test('a unit enabled twice is refused', async (t) => {
    const { unit } = recorder();
    t.throws(() => new Kernel({ units: [unit('a'), unit('a')], config: {}, logger: silentLogger }), { message: "unit 'a' is enabled twice" });
  });

  t.test('a failing start stops the units already started, in reverse', async (t) => {
    const { log, unit } = recorder();
    const bad = unit('c', ['b'], { start: async () => { throw new Error('port in use'); } });
    const k = new Kernel({ units: [unit('a'), unit('b', ['a']), bad], config: {}, logger: silentLogger });
    await t.rejects(k.start(), { message: 'c: start failed: port in use' });
    t.same(log, ['register:a', 'register:b', 'register:c', 'start:a', 'start:b', 'stop:b', 'stop:a']);
    t.equal(k.state, 'failed');
  });

  t.test('a start step that hangs times out', async (t) => {
    const { unit } = recorder();
    const k = new Kernel({ units: [unit('slow', [], { start: () => new Promise(() => undefined) })], config: {}, logger: silentLogger, startTimeoutMs: 50 });
    await t.rejects(k.start(), { message: 'slow: start timed out after 50 ms' });
  });

  t.test('a failing stop is logged and the others still stop', async (t) => {
    const { log, unit } = recorder();
    const { logger, errors } = capturingLogger();
    const k = new Kernel({ units: [unit('a'), unit('b', [], { stop: async () => { throw new Error('boom'); } })], config: {}, logger });
    await k.start();
    await k.stop();
    t.ok(log.includes('stop:a'));
    t.equal(errors.length, 1);
  });

  t.test('bad plugin options fail start-up naming the plugin', async (t) => {
    const p = definePlugin<number>({ name: 'http', options: () => { throw new Error('port: must be a number'); }, register: () => undefined });
    const k = new Kernel({ units: [p], config: { http: { port: 'x' } }, logger: silentLogger });
    await t.rejects(k.start(), { message: 'http: port: must be a number' });
  });

  t.test('units share one container; contributions collected in register, read in start', async (t) => {
    let seen: readonly string[] = [];
    const provider = definePlugin({ name: 'p', register: ({ container, contributions }) => {
      container.register({ instanceId: asValue('overridden') });
      contributions.add('x.routes', 'from-p');
    } });
    const consumer = definePlugin({ name: 'q', register: ({ contributions }) => contributions.add('x.routes', 'from-q'), start: async ({ contributions }) => {
      seen = contributions.list<string>('x.routes');
    } });
    const k = new Kernel({ units: [consumer, provider], config: {}, logger: silentLogger, instanceId: 'i1' });
    await k.start();
    t.same(seen, ['from-q', 'from-p']);
    t.equal(k.container.resolve('instanceId'), 'overridden');
    await k.stop();
  });

  t.test('two kernels in one process do not share state', async (t) => {
    const a = new Kernel({ units: [], config: {}, logger: silentLogger });
    const b = new Kernel({ units: [], config: {}, logger: silentLogger });
    t.not(a.container, b.container);
    t.not(a.bus, b.bus);
    t.not(a.instanceId, b.instanceId);
  });
});

t.test('bus', async (t) => {
  t.test('publish returns before handlers run; every handler gets the event', async (t) => {
    const bus = new MessageBus(silentLogger, 'i1');
    const got: string[] = [];
    bus.subscribe('message.stored', (e, meta) => { got.push(`a:${e.message.seq}:${meta.origin}:${meta.instance_id}`); });
    bus.subscribe('message.stored', () => { got.push('b'); });
    bus.subscribeAll((name) => { got.push(`all:${name}`); });
    bus.publish('message.stored', { message, transport: 'http' });
    t.same(got, [], 'nothing ran synchronously');
    await new Promise((r) => setImmediate(r));
    t.same(got, ['a:1:local:i1', 'b', 'all:message.stored']);
  });

  t.test('a throwing or rejecting subscriber is logged and isolates', async (t) => {
    const { logger, errors } = capturingLogger();
    const bus = new MessageBus(logger, 'i1');
    let delivered = 0;
    bus.subscribe('member.added', () => { throw new Error('sync boom'); });
    bus.subscribe('member.added', async () => { throw new Error('async boom'); });
    bus.subscribe('member.added', () => { delivered++; });
    t.doesNotThrow(() => bus.publish('member.added', { member: { group_id: 'g', user_id: 'u', user_role: 'PATIENT', joined_at: message.created_at } }));
    await new Promise((r) => setImmediate(r));
    t.equal(delivered, 1);
    t.equal(errors.length, 2);
  });

  t.test('a slow subscriber does not block the publisher or the others', async (t) => {
    const bus = new MessageBus(silentLogger, 'i1');
    let release!: () => void;
    const slow = new Promise<void>((r) => { release = r; });
    let fast = 0;
    bus.subscribe('message.stored', () => slow);
    bus.subscribe('message.stored', () => { fast++; });
    for (let i = 0; i < 3; i++) bus.publish('message.stored', { message, transport: 'ws' });
    await new Promise((r) => setImmediate(r));
    t.equal(fast, 3);
    release();
  });

  t.test('unsubscribe and remote origin', async (t) => {
    const bus = new MessageBus(silentLogger, 'i1');
    const origins: string[] = [];
    const off = bus.subscribe('group.notify', (_e, meta) => { origins.push(meta.origin); });
    bus.publish('group.notify', { group_id: 'g', frame: { type: 'x' } }, { origin: 'remote', instance_id: 'i2' });
    await new Promise((r) => setImmediate(r));
    off();
    bus.publish('group.notify', { group_id: 'g', frame: { type: 'x' } });
    await new Promise((r) => setImmediate(r));
    t.same(origins, ['remote']);
    t.equal(bus.listenerCount('group.notify'), 0);
  });
});

t.test('config', async (t) => {
  const memoryOnly = { storage: 'memory', cluster: 'none', 'ai-provider': 'none' };
  t.test('defaults load and validate', async (t) => {
    const c = loadConfig({ env: {} });
    t.equal(c.log.level, 'info');
    t.ok(c.plugins.includes('chat'));
    t.equal(c.adapters.storage, 'sequelize');
    t.equal((c.http as { port: number }).port, 8000);
  });

  t.test('environment overrides of API.md §8', async (t) => {
    const c = loadConfig({
      env: {
        IM_HTTP_PORT: '9001', IM_DATABASE_URL: 'postgres://x@h/db', IM_JWT_SECRET: 's'.repeat(20), IM_LOG_LEVEL: 'debug',
        IM_AI_PROVIDER: 'openai', IM_AI_URL: 'http://ai', IM_AMQP_URL: 'amqp://h', IM_NATS_URL: 'nats://h', IM_AI_ROLE: 'worker',
      },
    });
    t.equal((c['ai-router'] as { role: string }).role, 'worker', 'IM_AI_ROLE');
    t.equal((c.http as { port: string }).port, '9001', 'plugins convert their own options');
    t.equal((c.storage as { url: string }).url, 'postgres://x@h/db');
    t.equal(c.log.level, 'debug');
    t.equal(c.adapters['ai-provider'], 'openai');
    t.equal(c.adapters.cluster, 'nats');
    t.ok(c.plugins.includes('amqp-ingress') && c.plugins.includes('nats-ingress'));
  });

  t.test('IM_PLUGINS replaces the list entirely', async (t) => {
    const c = loadConfig({ env: { IM_PLUGINS: 'auth, users ,chat', IM_AMQP_URL: 'amqp://h' } });
    t.same(c.plugins, ['auth', 'users', 'chat']);
  });

  t.test('IM_CONFIG selects a deployment file', async (t) => {
    const dir = t.testdir({ 'default.json': JSON.stringify({ plugins: ['auth'], http: { port: 1 } }), deployments: { 'x.json': JSON.stringify({ http: { port: 2 } }) } });
    const c = loadConfig({ env: { IM_CONFIG: 'x' }, configDir: dir });
    t.same(c.http, { port: 2 });
    t.throws(() => loadConfig({ env: { IM_CONFIG: 'nope' }, configDir: dir }), ConfigError);
  });

  t.test('bad values fail with one line naming the setting', async (t) => {
    t.throws(() => loadConfig({ env: { IM_LOG_LEVEL: 'loud' } }), { message: /^log\.level: must be one of/ });
    t.throws(() => loadConfig({ env: {}, overrides: { plugins: 'chat' } }), { message: /^plugins: must be an array/ });
    t.throws(() => loadConfig({ env: {}, overrides: { kernel: { startTimeoutMs: -1 } } }), { message: /^kernel\.startTimeoutMs: / });
  });

  t.test('unknown plugins and adapters are named', async (t) => {
    const c = loadConfig({ env: { IM_PLUGINS: 'auth,telepathy' }, overrides: { adapters: memoryOnly } });
    await t.rejects(resolveUnits(c), { message: /^plugins: unknown plugin 'telepathy' \(known: / });
    const d = loadConfig({ env: {}, overrides: { adapters: { storage: 'mongo' } } });
    await t.rejects(resolveUnits(d), { message: /^adapters\.storage: unknown implementation 'mongo'/ });
  });

  t.test('the composition root builds a kernel from config alone', async (t) => {
    const c = loadConfig({ env: { IM_PLUGINS: 'auth,users,groups,chat', IM_JWT_SECRET: 'x'.repeat(32) }, overrides: { adapters: memoryOnly } });
    const k = await composeKernel({ config: c, logger: silentLogger });
    t.same(k.unitNames, ['storage', 'auth', 'users', 'groups', 'chat']);
    await k.start();
    t.ok(k.container.resolve('chatService'));
    await k.stop();
  });

  t.test('a plugin rejects its own bad options with the setting named', async (t) => {
    const c = loadConfig({ env: { IM_PLUGINS: 'auth', IM_JWT_SECRET: 'short' }, overrides: { adapters: memoryOnly } });
    const k = await composeKernel({ config: c, logger: silentLogger });
    await t.rejects(k.start(), { message: 'auth: jwtSecret: must be at least 16 characters' });
  });
});

t.test('errors and ids', async (t) => {
  t.equal(new NotFoundError('x').status, 404);
  t.same(new NotFoundError('no user').toJSON(), { error: { code: 'NOT_FOUND', message: 'no user', details: [] } });
  t.equal(new RateLimitedError(0.2).retryAfterSeconds, 1);
  const internal = toAppError(new Error('SELECT * FROM secret'));
  t.equal(internal.code, 'INTERNAL');
  t.notMatch(JSON.stringify(internal.toJSON()), /SELECT/);
  t.equal(Object.keys(HTTP_STATUS).length, 10);
  const fixed: Clock = { now: () => new Date(1_700_000_000_000), nowIso: () => new Date(1_700_000_000_000).toISOString() };
  const ids = uuidV7Generator(fixed);
  const many = Array.from({ length: 1000 }, () => ids.next());
  t.equal(new Set(many).size, 1000);
  t.same([...many].sort(), many, 'ids are time-ordered even within one millisecond');
  t.match(many[0], /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});
