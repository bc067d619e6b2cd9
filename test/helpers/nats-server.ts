/**
 * Private nats-server processes for the NATS security tests (user/password,
 * TLS, client certificates, NKey and decentralised JWT auth), each on a
 * random port and killed at teardown, plus the keys and certificates they
 * need, made at test time (openssl, @nats-io/nkeys) in a temp dir.
 *
 * What a test needs and cannot find (the nats-server binary, openssl) fails
 * it under CI=true and skips it with a note elsewhere, like requireService.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { nkeys } from '@nats-io/transport-node';
import type { Test } from 'tap';

const run = promisify(execFile);

/** The nats-server binary: IM_TEST_NATS_SERVER, /usr/sbin/nats-server, or the PATH. */
function natsServerPath(): string | null {
  const candidates = [process.env.IM_TEST_NATS_SERVER, '/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server'];
  for (const c of candidates) if (c && existsSync(c)) return c;
  const which = spawnSync('sh', ['-c', 'command -v nats-server'], { encoding: 'utf8' });
  return which.status === 0 && which.stdout.trim() ? which.stdout.trim() : null;
}

function hasOpenssl(): boolean {
  return spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;
}

/** True when the tools are there; under CI=true a missing one fails the test, elsewhere it is skipped with a note. */
export function requireTools(t: Test, tools: Array<'nats-server' | 'openssl'>): boolean {
  const missing = tools.filter((x) => (x === 'nats-server' ? natsServerPath() === null : !hasOpenssl()));
  if (missing.length === 0) return true;
  if (process.env.CI === 'true') {
    t.fail(`${missing.join(' and ')} not found (mandatory under CI; Debian: apt-get install nats-server openssl)`);
    return false;
  }
  t.comment(`${missing.join(' and ')} not found: skipping (set CI=true to make this a failure)`);
  return false;
}

export function tempDir(t: Test, prefix = 'im-nats-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface NatsServer {
  port: number;
  url: string;
  /** Everything the server logged (stderr). */
  log(): string;
  stop(): Promise<void>;
  /** Ends the process with this signal (SIGKILL: a crash, SIGTERM: a clean shutdown) and waits for it to exit. */
  kill(signal: NodeJS.Signals): Promise<void>;
}

/**
 * Starts `nats-server -a 127.0.0.1 -p -1 <args>` (a random port, read from its
 * log) and stops it at teardown (SIGTERM, SIGKILL after 2 s). Pass a config
 * file with `-c` for what the command line cannot say (NKey users, operator mode).
 */
export async function startNatsServer(t: Test, args: string[]): Promise<NatsServer> {
  const bin = natsServerPath();
  if (!bin) throw new Error('nats-server not found');
  const child: ChildProcess = spawn(bin, ['-a', '127.0.0.1', '-p', '-1', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let out = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nats-server did not start within 10 s: ${out.slice(-500)}`)), 10_000);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      out += chunk;
      const m = /Listening for client connections on [^\s]*:(\d+)/.exec(out);
      if (m && /Server is ready/.test(out)) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`nats-server exited with ${code}: ${out.slice(-500)}`));
    });
  });
  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 2000);
      await exited;
      clearTimeout(killer);
    })();
    return stopping;
  };
  const kill = async (signal: NodeJS.Signals): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    await exited;
  };
  t.teardown(stop);
  return { port, url: `nats://127.0.0.1:${port}`, log: () => out, stop, kill };
}

/**
 * A server that can be killed and started again on the same port (and, with
 * `-js -sd <dir>` in `args`, the same JetStream store): the restart of the
 * NATS server itself, as opposed to a cut connection.
 */
export async function restartableNatsServer(t: Test, args: string[]) {
  let server = await startNatsServer(t, args);
  const port = server.port;
  return {
    port,
    url: server.url,
    get current(): NatsServer {
      return server;
    },
    /** Kills the running process (the port is free afterwards). */
    kill: (signal: NodeJS.Signals = 'SIGKILL') => server.kill(signal),
    /** Starts a new process on the same port with the same arguments. */
    async start(): Promise<void> {
      server = await startNatsServer(t, [...args, '-p', String(port)]);
    },
  };
}

/** Certificates made with openssl for one test: a CA, a server certificate for localhost / 127.0.0.1, a client certificate. */
export interface Pki {
  dir: string;
  caFile: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A key that is not the client certificate's. */
  otherKey: string;
}

export async function makePki(dir: string): Promise<Pki> {
  const f = (name: string) => join(dir, name);
  const ssl = (...args: string[]) => run('openssl', args, { cwd: dir });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await ssl('req', '-x509', ...ec, '-days', '1', '-subj', '/CN=im-test-ca', '-keyout', f('ca.key'), '-out', f('ca.pem'));
  writeFileSync(f('server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  writeFileSync(f('client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const [name, cn] of [
    ['server', 'localhost'],
    ['client', 'im-test-client'],
  ] as const) {
    await ssl('req', ...ec, '-subj', `/CN=${cn}`, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`));
    await ssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', f(`${name}.ext`), '-out', f(`${name}.pem`));
  }
  await ssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', f('other.key'));
  return {
    dir,
    caFile: f('ca.pem'),
    serverCert: f('server.pem'),
    serverKey: f('server.key'),
    clientCert: f('client.pem'),
    clientKey: f('client.key'),
    otherKey: f('other.key'),
  };
}

const te = new TextEncoder();
const td = new TextDecoder();
const b64url = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** A NATS JWT (ed25519-nkey), signed by `issuer`, about `subject`. */
function natsJwt(issuer: ReturnType<typeof nkeys.createOperator>, subject: string, name: string, nats: Record<string, unknown>): string {
  const claims: Record<string, unknown> = { iat: Math.floor(Date.now() / 1000), iss: issuer.getPublicKey(), name, sub: subject, nats: { ...nats, version: 2 } };
  claims.jti = createHash('sha256').update(JSON.stringify(claims)).digest('hex').slice(0, 52).toUpperCase();
  const signed = `${b64url({ typ: 'JWT', alg: 'ed25519-nkey' })}.${b64url(claims)}`;
  return `${signed}.${Buffer.from(issuer.sign(te.encode(signed))).toString('base64url')}`;
}

/**
 * Decentralised auth (operator mode): an operator, an account (preloaded in a
 * memory resolver) and a user; writes the server config and the user's .creds
 * file (the layout `nsc generate creds` writes).
 */
export function makeOperatorSetup(dir: string): { config: string; credsFile: string } {
  const operator = nkeys.createOperator();
  const account = nkeys.createAccount();
  const user = nkeys.createUser();
  const unlimited = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };
  const accountJwt = natsJwt(operator, account.getPublicKey(), 'im-test', { type: 'account', limits: unlimited });
  const userJwt = natsJwt(account, user.getPublicKey(), 'im-service', { type: 'user', pub: {}, sub: {}, subs: -1, data: -1, payload: -1 });
  const config = join(dir, 'operator.conf');
  writeFileSync(
    config,
    `operator: ${natsJwt(operator, operator.getPublicKey(), 'im-test-operator', { type: 'operator' })}\n` +
      `resolver: MEMORY\nresolver_preload: {\n  ${account.getPublicKey()}: ${accountJwt}\n}\n`,
  );
  const credsFile = join(dir, 'im.creds');
  writeFileSync(
    credsFile,
    `-----BEGIN NATS USER JWT-----\n${userJwt}\n------END NATS USER JWT------\n\n` +
      `************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\n\n` +
      `-----BEGIN USER NKEY SEED-----\n${td.decode(user.getSeed())}\n------END USER NKEY SEED------\n`,
    { mode: 0o600 },
  );
  return { config, credsFile };
}

/** An NKey user: the server config listing its public key, and the seed file. */
export function makeNkeySetup(dir: string): { config: string; seedFile: string } {
  const user = nkeys.createUser();
  const config = join(dir, 'nkey.conf');
  writeFileSync(config, `authorization {\n  users = [ { nkey: ${user.getPublicKey()} } ]\n}\n`);
  const seedFile = join(dir, 'im.nk');
  writeFileSync(seedFile, `${td.decode(user.getSeed())}\n`, { mode: 0o600 });
  return { config, seedFile };
}
