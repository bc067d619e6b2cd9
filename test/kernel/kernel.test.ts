import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
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
import { api, bootHttp, tokenFor } from '../helpers/http.js';
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

  t.test('plugins and adapters from modules outside the code base (pluginModules, adapterModules)', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'im-units-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    // an adapter filling a new port slot, and a plugin that depends on it and on chat: plain
    // JavaScript with no import from this code base (a registration is any object with resolve())
    writeFileSync(
      join(dir, 'audit-sink.mjs'),
      `export const written = [];
       export default {
         name: 'audit-sink', kind: 'adapter', impl: 'list',
         register({ container }) { container.register('auditSink', { resolve: () => ({ write: (line) => written.push(line) }) }); },
       };`,
    );
    writeFileSync(
      join(dir, 'audit-log.mjs'),
      `import { written } from './audit-sink.mjs';
       export const life = [];
       export default {
         name: 'audit-log',
         dependsOn: ['chat', 'audit-sink'],
         options(raw) {
           if (typeof raw.tag !== 'string') throw new Error('tag: is required');
           return { tag: raw.tag };
         },
         register({ contributions }) {
           life.push('register');
           // an HTTP route of its own (contribution point 'http.routes'), behind a bearer token
           contributions.add('http.routes', {
             method: 'GET', path: '/api/audit/lines', auth: 'user', summary: 'Audit lines written so far',
             handler: async () => ({ status: 200, body: { lines: written } }),
           });
         },
         async start({ container, options }) {
           life.push('start');
           const sink = container.resolve('auditSink');
           this.off = container.resolve('bus').subscribe('message.stored', ({ message }) => sink.write(options.tag + ' ' + message.message_id));
         },
         async stop() { life.push('stop'); this.off?.(); },
       };`,
    );
    writeFileSync(join(dir, 'no-default.mjs'), 'export const unit = {};');
    writeFileSync(join(dir, 'not-a-unit.mjs'), "export default { name: 'odd' };");
    writeFileSync(join(dir, 'misnamed.mjs'), "export default { name: 'other', register() {} };");
    writeFileSync(join(dir, 'throws.mjs'), "throw new Error('boom at import');");

    const config = (overrides: Record<string, unknown>, plugins = 'auth,users,groups,chat,audit-log') =>
      loadConfig({
        env: { IM_PLUGINS: plugins, IM_JWT_SECRET: 'x'.repeat(32) },
        overrides: {
          adapters: { ...memoryOnly, 'audit-sink': 'list' },
          pluginModules: { 'audit-log': join(dir, 'audit-log.mjs') },
          adapterModules: { 'audit-sink': { list: join(dir, 'audit-sink.mjs') } },
          'audit-log': { tag: 'AUDIT' },
          ...overrides,
        },
      });
    const { booted, baseUrl } = await bootHttp(t, {
      plugins: ['auth', 'users', 'groups', 'chat', 'http', 'audit-log'],
      adapters: { storage: 'memory', 'audit-sink': 'list' },
      config: {
        pluginModules: { 'audit-log': join(dir, 'audit-log.mjs') },
        adapterModules: { 'audit-sink': { list: join(dir, 'audit-sink.mjs') } },
        'audit-log': { tag: 'AUDIT' },
      },
    });
    const { kernel: k, c } = booted;
    t.same(k.unitNames, ['storage', 'audit-sink', 'auth', 'users', 'groups', 'chat', 'http', 'audit-log']);
    await c.userService.create({ user_id: 'admin', admin: true }, { user_id: 'p1', username: 'p1', user_role: 'PATIENT' });
    await c.groupService.create({ user_id: 'admin', admin: true }, { group_id: 'g1', group_name: 'g1', members: ['p1'] });
    const sent = (await c.chatService.send({ user_id: 'p1', admin: false }, { group_id: 'g1', msg_content: 'hi' }, { transport: 'test' })).message;
    const plugin = (await import(pathToFileURL(join(dir, 'audit-log.mjs')).href)) as { life: string[] };
    const lines = async () => (await api(baseUrl, await tokenFor(c, 'p1')).get('/api/audit/lines')).body as { lines: string[] };
    for (let i = 0; i < 100 && (await lines()).lines.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    t.same(await lines(), { lines: [`AUDIT ${sent.message_id}`] }, 'the plugin saw the stored message, with its options, through the adapter, and serves it on its route');
    t.equal((await api(baseUrl).get('/api/audit/lines')).status, 401, 'its route asks for a token like the others');
    t.ok(((await api(baseUrl).get('/openapi.json')).body as { paths: Record<string, unknown> }).paths['/api/audit/lines'], 'and is in /openapi.json');
    await k.stop();
    t.same(plugin.life, ['register', 'start', 'stop'], 'the same lifecycle as a built-in unit');

    // its options() refuses its section like a built-in unit's
    const noTag = await composeKernel({ config: config({ 'audit-log': {} }), logger: silentLogger });
    await t.rejects(noTag.start(), { message: 'audit-log: tag: is required' }, 'bad options of a module unit: one line naming it');

    // a relative path is taken from the working directory
    const rel = relative(process.cwd(), join(dir, 'audit-log.mjs'));
    const byRelative = await resolveUnits(config({ pluginModules: { 'audit-log': rel.startsWith('..') ? rel : `./${rel}` } }));
    t.equal(byRelative.at(-1)!.name, 'audit-log', `a path from the working directory: ${rel}`);

    // a module that is configured but not enabled is never loaded
    const idle = await resolveUnits(config({ pluginModules: { 'audit-log': join(dir, 'throws.mjs') } }, 'auth'));
    t.same(idle.map((u) => u.name), ['storage', 'audit-sink', 'auth'], 'not enabled: not imported');

    // every mistake fails start-up with one line naming the setting
    const refused: Array<[string, Record<string, unknown>, RegExp]> = [
      ['no such file', { pluginModules: { 'audit-log': join(dir, 'missing.mjs') } }, /^pluginModules\.audit-log: cannot load '.*missing\.mjs': Cannot find module/],
      ['import throws', { pluginModules: { 'audit-log': join(dir, 'throws.mjs') } }, /^pluginModules\.audit-log: cannot load '.*throws\.mjs': boom at import$/],
      ['no default export', { pluginModules: { 'audit-log': join(dir, 'no-default.mjs') } }, /^pluginModules\.audit-log: '.*no-default\.mjs' has no default export/],
      ['not a unit', { pluginModules: { 'audit-log': join(dir, 'not-a-unit.mjs') } }, /^pluginModules\.audit-log: the default export of '.*not-a-unit\.mjs' is not a unit: 'register' is required$/],
      ['another name', { pluginModules: { 'audit-log': join(dir, 'misnamed.mjs') } }, /^pluginModules\.audit-log: the unit of '.*misnamed\.mjs' is named 'other', expected 'audit-log'$/],
      ['a built-in name', { pluginModules: { 'audit-log': join(dir, 'audit-log.mjs'), ws: join(dir, 'audit-log.mjs') } }, /^pluginModules\.ws: 'ws' is a built-in plugin: give yours another name$/],
      ['a top-level key', { pluginModules: { 'audit-log': join(dir, 'audit-log.mjs'), kernel: join(dir, 'audit-log.mjs') } }, /^pluginModules\.kernel: 'kernel' is a top-level config key/],
      ['a built-in adapter name', { adapterModules: { storage: { memory: join(dir, 'audit-sink.mjs') } } }, /^adapterModules\.storage\.memory: 'memory' is a built-in storage adapter/],
      ['an adapter of the wrong slot', { adapterModules: { 'audit-sink': { list: join(dir, 'audit-log.mjs') } } }, /^adapterModules\.audit-sink\.list: the unit of '.*audit-log\.mjs' is named 'audit-log', expected 'audit-sink'$/],
    ];
    for (const [what, overrides, message] of refused) await t.rejects(resolveUnits(config(overrides)), { name: 'ConfigError', message }, what);
    t.throws(() => config({ pluginModules: { 'Bad Name': './x.mjs' } }), { name: 'ConfigError', message: /^pluginModules\.Bad Name: / }, 'names follow the plugin name rule');
    t.throws(() => config({ pluginModules: { x: '' } }), { name: 'ConfigError', message: /^pluginModules\.x: / }, 'an empty module is refused');
    const unknown = config({}, 'auth,telepathy');
    await t.rejects(resolveUnits(unknown), { message: /^plugins: unknown plugin 'telepathy' \(known: .*, audit-log\)$/ }, 'the known list names the modules too');
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
