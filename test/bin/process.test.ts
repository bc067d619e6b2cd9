/**
 * The real process (node build/bin/main.js): start-up errors, graceful
 * shutdown on SIGTERM with a request in flight, a second signal, JSON logs.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import t, { type Test } from 'tap';
import { readdirSync } from 'node:fs';
import { resolveUnits } from '../../bin/compose.js';
import { ADAPTERS } from '../../bin/registry.js';
import { CONFIG_DIR, loadConfig, validateRootConfig } from '../../config/loader.js';

// Spawning real processes is slow on a busy 2-core machine: the tap config's limit, also for direct runs.
t.setTimeout(120_000);

const MAIN = fileURLToPath(new URL('../../bin/main.js', import.meta.url));
const SECRET = 'process-test-secret-0123456789abcdef';
const PLUGINS = 'auth,users,groups,chat,metrics,http';
const WAIT_MS = 30_000;

type LogLine = Record<string, unknown>;

interface Service {
  child: ChildProcess;
  lines: LogLine[];
  /** stdout lines that are not JSON (must stay empty). */
  notJson: string[];
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first log line (past or future) matching `pred`. */
  waitLog(pred: (l: LogLine) => boolean, what: string): Promise<LogLine>;
}

function tmpDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'im-process-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Storage for the process: SQLite in a temp file when the sequelize adapter is registered, else memory. */
function storageEnv(dir: string): Record<string, string> {
  const sequelize = ADAPTERS.storage?.sequelize !== undefined;
  const config = { adapters: { storage: sequelize ? 'sequelize' : 'memory', cluster: 'none', 'ai-provider': 'none' } };
  const file = join(dir, 'config.json');
  writeFileSync(file, JSON.stringify(config));
  return { IM_CONFIG: file, ...(sequelize ? { IM_DATABASE_URL: `sqlite:${join(dir, 'im.sqlite')}` } : {}) };
}

function start(t: Test, env: Record<string, string>, cwd: string): Service {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('IM_')));
  const child = spawn(process.execPath, ['--enable-source-maps', MAIN], {
    cwd,
    env: { ...clean, IM_JWT_SECRET: SECRET, IM_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: LogLine[] = [];
  const notJson: string[] = [];
  const waiters: Array<{ pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = [];
  let buf = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const text = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let line: LogLine;
      try {
        line = JSON.parse(text) as LogLine;
      } catch {
        notJson.push(text);
        continue;
      }
      lines.push(line);
      for (const w of [...waiters]) {
        if (w.pred(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      // let the last stdout chunks arrive
      child.stdout!.once('close', () => resolve({ code, signal }));
      if (child.stdout!.closed) resolve({ code, signal });
    }),
  );
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return {
    child,
    lines,
    notJson,
    stderr: () => err,
    exited,
    waitLog(pred, what) {
      const found = lines.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise<LogLine>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for log: ${what}; stderr: ${err}`)), WAIT_MS);
        const w = {
          pred,
          resolve: (l: LogLine) => {
            clearTimeout(timer);
            resolve(l);
          },
        };
        waiters.push(w);
        void exited.then(() => {
          if (waiters.includes(w)) {
            clearTimeout(timer);
            reject(new Error(`process exited before log: ${what}; stderr: ${err}`));
          }
        });
      });
    },
  };
}

/** Starts a healthy service on an ephemeral port; resolves once it logs 'started'. */
async function startService(t: Test, extraEnv: Record<string, string> = {}): Promise<Service & { port: number }> {
  const dir = tmpDir(t);
  const svc = start(t, { ...storageEnv(dir), IM_HTTP_PORT: '0', IM_PLUGINS: PLUGINS, ...extraEnv }, dir);
  const listening = await svc.waitLog((l) => l.plugin === 'http' && typeof l.port === 'number' && l.port > 0, 'http listening');
  await svc.waitLog((l) => l.msg === 'started', 'started');
  return { ...svc, port: listening.port as number };
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
    }),
  ]);
}

async function adminToken(): Promise<string> {
  return new SignJWT({ scope: 'admin' }).setProtectedHeader({ alg: 'HS256' }).setSubject('admin').sign(new TextEncoder().encode(SECRET));
}

/** A raw HTTP/1.1 client connection, to hold a request half-sent. */
interface Raw {
  socket: Socket;
  /** Everything received so far. */
  received(): string;
  /** Resolves once the received bytes match `re`. */
  until(re: RegExp, what: string): Promise<string>;
  closed: Promise<void>;
}

async function rawConnect(port: number): Promise<Raw> {
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let data = '';
  const listeners: Array<() => void> = [];
  socket.setEncoding('utf8').on('data', (chunk: string) => {
    data += chunk;
    listeners.forEach((l) => l());
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => undefined);
  return {
    socket,
    received: () => data,
    closed,
    until(re, what) {
      return within(
        new Promise<string>((resolve, reject) => {
          const check = (): void => {
            if (re.test(data)) resolve(data);
          };
          listeners.push(check);
          void closed.then(() => (re.test(data) ? resolve(data) : reject(new Error(`connection closed before ${what}: ${data}`))));
          check();
        }),
        WAIT_MS,
        what,
      );
    },
  };
}

/** Sends the headers and the first half of a JSON POST; resolves once the server has begun the request (100 Continue). */
async function halfSentPost(port: number, path: string, body: unknown, token: string): Promise<{ raw: Raw; finish(): void }> {
  const text = JSON.stringify(body);
  const raw = await rawConnect(port);
  raw.socket.write(
    `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n` +
      `Authorization: Bearer ${token}\r\nExpect: 100-continue\r\n\r\n`,
  );
  // Node answers 100 Continue as it hands the request to the app: from here on it is in flight.
  await raw.until(/^HTTP\/1\.1 100 Continue\r\n\r\n/, '100 Continue');
  const half = Math.floor(text.length / 2);
  raw.socket.write(text.slice(0, half));
  return { raw, finish: () => raw.socket.write(text.slice(half)) };
}

async function refused(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

async function waitUntil(pred: () => Promise<boolean>, what: string): Promise<void> {
  const until = Date.now() + WAIT_MS;
  while (!(await pred())) {
    if (Date.now() > until) throw new Error(`timed out: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

t.test('a bad config exits non-zero with one line on stderr naming the setting', async (t) => {
  const dir = tmpDir(t);
  const base = storageEnv(dir);
  const cases: Array<[string, Record<string, string>, RegExp]> = [
    ['port not a number', { IM_HTTP_PORT: 'abc', IM_PLUGINS: PLUGINS }, /port.*(number|integer).*IM_HTTP_PORT|IM_HTTP_PORT.*port/],
    ['unknown plugin', { IM_PLUGINS: 'auth,users,groups,chat,no-such-plugin' }, /plugins: unknown plugin 'no-such-plugin'.*IM_PLUGINS/],
    ['bad log level', { IM_LOG_LEVEL: 'loud', IM_PLUGINS: PLUGINS }, /log\.level.*IM_LOG_LEVEL/],
    ['missing config file', { IM_CONFIG: join(dir, 'nope.json') }, /IM_CONFIG: cannot read/],
  ];
  const runs = cases.map(([name, env]) => {
    const svc = start(t, { ...base, ...env }, dir);
    return { svc, exited: within(svc.exited, WAIT_MS, name) };
  });
  for (const [i, [name, , pattern]] of cases.entries()) {
    const { svc, exited } = runs[i]!;
    const { code } = await exited;
    t.not(code, 0, `${name}: exit code ${code}`);
    const lines = svc.stderr().trim().split('\n');
    t.equal(lines.length, 1, `${name}: one line: ${svc.stderr()}`);
    t.match(lines[0], pattern, name);
    t.same(svc.notJson, [], `${name}: stdout holds only JSON lines`);
  }
});

t.test('--check: the config and every enabled unit\'s settings checked without starting or connecting', async (t) => {
  const dir = tmpDir(t);
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('IM_')));
  const check = (env: Record<string, string>) =>
    spawnSync(process.execPath, [MAIN, '--check'], { cwd: dir, env: { ...clean, ...storageEnv(dir), IM_JWT_SECRET: SECRET, ...env }, encoding: 'utf8', timeout: WAIT_MS });
  const ok = check({ IM_PLUGINS: PLUGINS, IM_HTTP_PORT: '1' });
  t.equal(ok.status, 0, `a good config: exit 0 (${ok.stderr})`);
  t.match(ok.stdout, /^config ok: 7 units, in start order: metrics, storage, auth, users, groups, chat, http\n$/, 'one line naming the units in start order');
  t.equal(ok.stderr, '');
  t.notOk(readdirSync(dir).includes('im.sqlite'), 'nothing was opened: no database file');
  const cases: Array<[string, Record<string, string>, RegExp]> = [
    ['a unit\'s own setting', { IM_PLUGINS: PLUGINS, IM_HTTP_PORT: 'abc' }, /^config error: http: port: must be a number \(from IM_HTTP_PORT\)\n$/],
    ['a short secret', { IM_PLUGINS: PLUGINS, IM_JWT_SECRET: 'short' }, /^config error: auth: jwtSecret: must be at least 16 characters \(from IM_JWT_SECRET\)\n$/],
    ['a missing dependency', { IM_PLUGINS: 'chat,http' }, /^config error: '\w+' depends on '\w+', which is not enabled\n$/],
    ['an unknown plugin', { IM_PLUGINS: 'auth,telepathy' }, /^config error: plugins: unknown plugin 'telepathy'/],
  ];
  for (const [what, env, pattern] of cases) {
    const r = check(env);
    t.equal(r.status, 1, `${what}: exit 1`);
    t.match(r.stderr, pattern, `${what}: one line`);
    t.equal(r.stdout, '');
  }
});

t.test('SIGTERM: the request in flight completes, new connections are refused, exit 0', async (t) => {
  const svc = await startService(t);
  const token = await adminToken();
  const { raw, finish } = await halfSentPost(svc.port, '/api/user', { user_id: 'late_user', username: 'Late' }, token);

  svc.child.kill('SIGTERM');
  await svc.waitLog((l) => l.msg === 'shutting down', 'shutting down');
  await waitUntil(() => refused(svc.port), 'listener closed');
  t.equal(svc.child.exitCode, null, 'still running while a request is in flight');

  finish();
  const response = await raw.until(/\r\n\r\n\{.*\}$/s, 'response');
  t.match(response, /HTTP\/1\.1 201 Created/, 'the in-flight request got its answer');
  t.match(response, /"user_id":"late_user"/);

  const { code, signal } = await within(svc.exited, WAIT_MS, 'exit');
  t.equal(signal, null);
  t.equal(code, 0, 'exit 0');
  t.ok(svc.lines.some((l) => l.msg === 'stopped'), "'stopped' logged (logs flushed before exit)");
  t.same(svc.notJson, []);
});

t.test('a second signal exits at once with 1', async (t) => {
  const svc = await startService(t);
  const { raw } = await halfSentPost(svc.port, '/api/user', { user_id: 'never', username: 'Never' }, await adminToken());
  svc.child.kill('SIGTERM');
  await svc.waitLog((l) => l.msg === 'shutting down', 'shutting down');
  svc.child.kill('SIGINT');
  const { code } = await within(svc.exited, WAIT_MS, 'exit after second signal');
  t.equal(code, 1);
  t.ok(svc.lines.some((l) => l.msg === 'second signal: exiting now'));
  t.notMatch(raw.received(), /201/, 'the held request never completed');
});

t.test('logs: JSON lines with request ids, no message content at info', async (t) => {
  const svc = await startService(t);
  const base = `http://127.0.0.1:${svc.port}`;
  const admin = await adminToken();
  const headers = (token: string, extra: Record<string, string> = {}) => ({
    'content-type': 'application/json',
    authorization: `Bearer ${token}`,
    ...extra,
  });
  const post = async (path: string, body: unknown, token: string, extra?: Record<string, string>) => {
    const r = await fetch(base + path, { method: 'POST', headers: headers(token, extra), body: JSON.stringify(body) });
    await r.text();
    return r;
  };
  t.equal((await post('/api/user', { user_id: 'pat1', username: 'Pat' }, admin)).status, 201);
  t.equal((await post('/api/group/create', { group_id: 'g1', group_name: 'G', members: ['pat1'] }, admin)).status, 201);
  const secret = 'SECRET-SYMPTOM-4711 chest pain';
  const patient = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('pat1').sign(new TextEncoder().encode(SECRET));
  const sent = await post('/api/message/send', { group_id: 'g1', msg_content: secret }, patient, { 'X-Request-Id': 'trace-abc-123' });
  t.equal(sent.status, 201);
  t.equal(sent.headers.get('x-request-id'), 'trace-abc-123');
  const m = await fetch(`${base}/metrics`);
  t.equal(m.status, 200);
  t.match(await m.text(), 'im_messages_stored_total{transport="http"} 1');

  await svc.waitLog((l) => l.req_id === 'trace-abc-123', 'a log line with the incoming request id');
  svc.child.kill('SIGTERM');
  t.equal((await within(svc.exited, WAIT_MS, 'exit')).code, 0);

  t.same(svc.notJson, [], 'every stdout line is JSON');
  for (const l of svc.lines) {
    t.ok(typeof l.level === 'string' && typeof l.time === 'string' && typeof l.msg === 'string' && typeof l.pid === 'number', `shape: ${JSON.stringify(l)}`);
  }
  const ofRequest = svc.lines.filter((l) => l.req_id === 'trace-abc-123');
  t.ok(ofRequest.length >= 1, 'lines of the request carry its id');
  t.ok(
    ofRequest.some((l) => l.user_id === 'pat1' && l.route === '/api/message/send' && l.status === 201 && typeof l.duration_ms === 'number'),
    'the access line names the user, the route pattern and the status',
  );
  t.notMatch(JSON.stringify(svc.lines), 'SECRET-SYMPTOM', 'message content never logged at info');
  t.notMatch(JSON.stringify(svc.lines), SECRET, 'the JWT secret never logged');
});

/** The deadline needs the `kernel.shutdownDeadlineMs` config key (config/config.schema.ts). */
function deadlineKeySupported(): boolean {
  try {
    validateRootConfig({ plugins: [], kernel: { shutdownDeadlineMs: 500 } });
    return true;
  } catch {
    return false;
  }
}

t.test('the shutdown deadline forces exit 1', { skip: deadlineKeySupported() ? false : 'kernel.shutdownDeadlineMs is not in the config schema yet' }, async (t) => {
  const dir = tmpDir(t);
  const file = join(dir, 'deadline.json');
  const sequelize = ADAPTERS.storage?.sequelize !== undefined;
  writeFileSync(
    file,
    JSON.stringify({
      adapters: { storage: sequelize ? 'sequelize' : 'memory', cluster: 'none', 'ai-provider': 'none' },
      kernel: { stopTimeoutMs: 60_000, shutdownDeadlineMs: 500 },
      http: { shutdownGraceMs: 60_000 },
    }),
  );
  const svc = await startService(t, { IM_CONFIG: file, ...(sequelize ? { IM_DATABASE_URL: `sqlite:${join(dir, 'im.sqlite')}` } : {}) });
  await halfSentPost(svc.port, '/api/user', { user_id: 'stuck', username: 'Stuck' }, await adminToken());
  svc.child.kill('SIGTERM');
  const { code } = await within(svc.exited, WAIT_MS, 'exit at the deadline');
  t.equal(code, 1);
  t.ok(svc.lines.some((l) => l.msg === 'shutdown deadline passed: exiting'));
});

t.test('every deployment recipe in config/deployments is valid for every unit it enables', async (t) => {
  const names = readdirSync(join(CONFIG_DIR, 'deployments'))
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -'.json'.length));
  t.ok(names.includes('single-node') && names.includes('cluster') && names.includes('production'));
  for (const name of names) {
    const config = loadConfig({ env: { IM_CONFIG: name, IM_JWT_SECRET: SECRET } });
    const units = await resolveUnits(config);
    for (const unit of units) {
      t.doesNotThrow(() => unit.options?.(config[unit.name] ?? {}, config), `${name}: ${unit.name} options`);
    }
  }
  const single = loadConfig({ env: { IM_CONFIG: 'single-node' } });
  t.match(single.storage, { url: /^sqlite:/ }, 'single node: SQLite');
  t.equal(single.adapters.cluster, 'none');
  for (const name of ['cluster', 'production']) {
    const c = loadConfig({ env: { IM_CONFIG: name, IM_JWT_SECRET: SECRET } });
    t.match(c.storage, { url: /^postgres:\/\// }, `${name}: PostgreSQL`);
    t.equal(c.adapters.cluster, 'nats', `${name}: NATS cluster bus`);
    t.match(c.console, { devTokens: false }, `${name}: no console dev tokens`);
    t.equal(c.log.level, 'info');
    // no secret in the file: start-up refuses until IM_JWT_SECRET is set
    const auth = (await resolveUnits(loadConfig({ env: { IM_CONFIG: name } }))).find((u) => u.name === 'auth')!;
    t.throws(() => auth.options?.(loadConfig({ env: { IM_CONFIG: name } }).auth, {}), /jwtSecret/, `${name}: requires IM_JWT_SECRET`);
  }
});
