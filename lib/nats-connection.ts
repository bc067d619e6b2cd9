/**
 * NATS connections: the one set of connection security settings (credentials
 * and TLS) shared by every NATS connection of the service (nats-ingress,
 * nats-egress, the NATS cluster bus), validated at start-up, and the connection
 * manager of the broker plugins.
 *
 * The manager (broker plugins): the first connection is retried with
 * exponential backoff in the background (start-up does not hang on a broker
 * that is down), later drops are healed by the client's own reconnect
 * (subscriptions and consumers resume), and the status is tracked for /readyz
 * and logged.
 */
import { readFileSync } from 'node:fs';
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import Joi from 'joi';
import {
  connect,
  credsAuthenticator,
  errors as natsErrors,
  nkeyAuthenticator,
  type ConnectionOptions,
  type NatsConnection,
  type TlsOptions,
} from '@nats-io/transport-node';
import type { Logger } from '../kernel/logger.js';
import { settledWithin } from './settled-within.js';

/** TLS of a NATS connection. Any of these set (or a `tls://` URL) makes TLS mandatory. */
export interface NatsTlsSettings {
  /** Require TLS even when no file is set (the server is verified against the system's CAs). */
  required: boolean;
  /** PEM CA bundle the server's certificate is verified against (instead of the system's CAs). */
  caFile?: string;
  /** PEM client certificate (servers started with `--tlsverify`); needs keyFile. */
  certFile?: string;
  /** PEM private key of certFile (unencrypted). */
  keyFile?: string;
  /** TLS before the server's INFO (servers configured with `handshake_first`, nats-server 2.10.4+). */
  handshakeFirst: boolean;
}

/**
 * How a NATS connection authenticates, and its TLS. At most one of
 * user+password, token, credsFile, nkeySeedFile. Files are read at start-up
 * (checked) and again on every (re)connect, so rotated files are picked up.
 */
export interface NatsSecurity {
  user?: string;
  password?: string;
  token?: string;
  /** `.creds` file: a user JWT and its NKey seed (decentralised auth, `nsc generate creds`). */
  credsFile?: string;
  /** A file holding a user NKey seed (`SU...`), for servers that list the user's public nkey. */
  nkeySeedFile?: string;
  tls: NatsTlsSettings;
}

const file = Joi.string().min(1).max(4096);
const SECURITY_KEYS = ['user', 'password', 'token', 'credsFile', 'nkeySeedFile', 'tls'] as const;

/** The security settings as joi keys, for the sections that hold a NATS URL (`nats`, `cluster`). */
export const natsSecurityKeys = {
  user: Joi.string().min(1).max(1024),
  password: Joi.string().min(1).max(1024),
  token: Joi.string().min(1).max(4096),
  credsFile: file,
  nkeySeedFile: file,
  tls: Joi.object({
    required: Joi.boolean().default(false),
    caFile: file,
    certFile: file,
    keyFile: file,
    handshakeFirst: Joi.boolean().default(false),
  })
    .and('certFile', 'keyFile')
    .messages({ 'object.and': 'certFile and keyFile go together (a client certificate needs its private key): set both' })
    .default(),
};

/** The rules between the security keys, applied to a schema holding natsSecurityKeys. */
export function withNatsSecurityRules<T>(schema: Joi.ObjectSchema<T>): Joi.ObjectSchema<T> {
  return schema
    .and('user', 'password')
    .oxor('user', 'token', 'credsFile', 'nkeySeedFile')
    .messages({
      'object.and': 'user and password go together: set both',
      'object.oxor': 'user (+ password), token, credsFile and nkeySeedFile are exclusive: set one way to authenticate (got {{#present}})',
    });
}

/** The shared section `nats`: its URL (checked by the units that use it) and the security settings. */
const sharedSectionSchema = withNatsSecurityRules(Joi.object({ url: Joi.string().allow(''), ...natsSecurityKeys }));

/** Empty strings mean "not set" (placeholders in deployment files), at any depth. */
function dropEmpty(v: unknown): unknown {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) if (x !== '' && x !== undefined) out[k] = dropEmpty(x);
  return out;
}

/**
 * Validates a section holding NATS settings (empty strings = not set); errors
 * name the setting under `prefix` (`nats.tls.keyFile: ...`), and a rule between
 * settings (`user and password go together`) is named by the prefix alone, or
 * stands alone with an empty prefix (the kernel puts the unit's name before it).
 */
export function validateNatsSection<T>(schema: Joi.Schema<T>, raw: unknown, prefix: string): T {
  const { error, value } = schema.validate(dropEmpty(raw ?? {}), { abortEarly: true, allowUnknown: false, convert: true });
  if (error) {
    const d = error.details[0]!;
    const path = [prefix, ...d.path].filter(Boolean).join('.');
    const message = d.message.replace(/"[^"]*" /, '').replace(/"/g, "'");
    throw new Error(path ? `${path}: ${message}` : message);
  }
  return value;
}

/** The security keys of a validated section (other keys dropped). */
export function pickNatsSecurity(section: Readonly<Record<string, unknown>>): NatsSecurity {
  const out: Record<string, unknown> = {};
  for (const k of SECURITY_KEYS) if (section[k] !== undefined) out[k] = section[k];
  return out as unknown as NatsSecurity;
}

/** A raw section with empty security settings (placeholders such as `"token": ""`) removed. */
export function withoutEmptyNatsSecurity(section: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...section };
  for (const k of SECURITY_KEYS) {
    if (out[k] === '') delete out[k];
    else if (k === 'tls' && out[k] !== undefined) out[k] = dropEmpty(out[k]);
  }
  return out;
}

/** True when a raw section sets any security key (for "only with its own url" checks). */
export function hasNatsSecurity(section: Readonly<Record<string, unknown>>): boolean {
  const set = withoutEmptyNatsSecurity(section);
  return SECURITY_KEYS.some((k) => set[k] !== undefined);
}

/** A NATS URL list resolved for connecting: servers without credentials, the security to use, a redacted form for logs. */
export interface NatsEndpoint {
  /** Server URLs as given, without any `user:pass@` part. */
  servers: string[];
  /** The URL list with credentials masked, for logs and errors. */
  display: string;
  security: NatsSecurity;
  /** The TLS options for the client, or undefined (TLS only when the server offers it). */
  tls?: TlsOptions;
  /** How the connection authenticates, for logs: none, user, token, creds, nkey. */
  auth: 'none' | 'user' | 'token' | 'creds' | 'nkey';
  /** The config section the settings came from (named in log hints). */
  section: string;
}

/** The URL without credentials, for logs and errors. */
export function redactNatsUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/g, '//***@');
}

function readSetting(path: string, where: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(`${where}: cannot read '${path}' (${e.code ?? e.message})`);
  }
}

const NONCE = 'im-config-check';

function seedOf(buf: Buffer): Uint8Array {
  return new TextEncoder().encode(buf.toString('utf8').trim());
}

function checkCreds(path: string, where: string): void {
  const buf = readSetting(path, where);
  let auth: { jwt?: string; nkey?: string };
  try {
    auth = credsAuthenticator(new Uint8Array(buf))(NONCE) as { jwt?: string; nkey?: string };
  } catch {
    throw new Error(`${where}: '${path}' is not a NATS credentials file (expected a user JWT block and an NKEY seed block, as written by nsc)`);
  }
  if (typeof auth.jwt !== 'string' || auth.jwt.split('.').length !== 3) throw new Error(`${where}: '${path}' holds no user JWT`);
  if (typeof auth.nkey !== 'string' || !auth.nkey.startsWith('U')) throw new Error(`${where}: '${path}' holds no user NKey seed (SU...)`);
}

function checkSeed(path: string, where: string): void {
  const buf = readSetting(path, where);
  let nkey: string | undefined;
  try {
    nkey = (nkeyAuthenticator(seedOf(buf))(NONCE) as { nkey?: string }).nkey;
  } catch {
    throw new Error(`${where}: '${path}' is not an NKey seed (one line, SU...)`);
  }
  if (!nkey?.startsWith('U')) throw new Error(`${where}: '${path}' is not a user NKey seed (SU...)`);
}

function checkCertificate(path: string, where: string): X509Certificate {
  const buf = readSetting(path, where);
  try {
    return new X509Certificate(buf);
  } catch {
    throw new Error(`${where}: '${path}' is not a PEM certificate`);
  }
}

function checkKey(path: string, where: string): KeyObject {
  const buf = readSetting(path, where);
  try {
    return createPrivateKey(buf);
  } catch {
    throw new Error(`${where}: '${path}' is not an unencrypted PEM private key`);
  }
}

function tlsOptions(tls: NatsTlsSettings, forced: boolean, where: string): TlsOptions | undefined {
  const { caFile, certFile, keyFile, handshakeFirst, required } = tls;
  if (caFile) checkCertificate(caFile, `${where}tls.caFile`);
  if (certFile && keyFile) {
    const cert = checkCertificate(certFile, `${where}tls.certFile`);
    const key = checkKey(keyFile, `${where}tls.keyFile`);
    if (!cert.checkPrivateKey(key)) throw new Error(`${where}tls.keyFile: '${keyFile}' is not the private key of '${certFile}' (tls.certFile)`);
  }
  if (!required && !forced && !caFile && !certFile && !handshakeFirst) return undefined;
  const out: TlsOptions = {};
  if (caFile) out.caFile = caFile;
  if (certFile) out.certFile = certFile;
  if (keyFile) out.keyFile = keyFile;
  if (handshakeFirst) out.handshakeFirst = true;
  return out;
}

/** `user:pass@` (user and password) or `token@` (a token) of one server URL. */
function urlCredentials(userinfo: string): { user: string; password: string } | { token: string } {
  const i = userinfo.indexOf(':');
  const dec = (s: string) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  };
  return i < 0 ? { token: dec(userinfo) } : { user: dec(userinfo.slice(0, i)), password: dec(userinfo.slice(i + 1)) };
}

/**
 * Resolves a NATS URL list and its validated security settings into what a
 * connection needs, checking everything that can be checked before connecting
 * (files exist and parse, the client certificate matches its key, credentials
 * in the URL do not compete with configured ones). Throws one line naming the
 * setting; never puts a secret in it. `where` prefixes setting names in
 * errors (`nats.` for the shared section, '' for a unit's own section, which
 * the kernel prefixes with the unit's name); `section` is named in log hints.
 */
export function resolveNatsEndpoint(url: string, security: NatsSecurity, where: string, section = 'nats'): NatsEndpoint {
  const sec: NatsSecurity = { ...security, tls: security.tls ?? { required: false, handshakeFirst: false } };
  let fromUrl: string | null = null;
  let forceTls = false;
  const servers = url
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const m = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^@/]*)@(.*)$/.exec(s);
      if (/^tls:\/\//i.test(s)) forceTls = true;
      if (!m) return s;
      if (fromUrl !== null && fromUrl !== m[2]) throw new Error(`${where}url: the servers carry different credentials: use one set (or nats.user/password, token, credsFile)`);
      fromUrl = m[2]!;
      return `${m[1]}${m[3]}`;
    });
  if (fromUrl !== null) {
    const set = (['user', 'token', 'credsFile', 'nkeySeedFile'] as const).find((k) => sec[k] !== undefined);
    if (set) throw new Error(`${where}url: carries credentials and ${where}${set} is set too: use one way to authenticate`);
    Object.assign(sec, urlCredentials(fromUrl));
  }
  if (sec.credsFile) checkCreds(sec.credsFile, `${where}credsFile`);
  if (sec.nkeySeedFile) checkSeed(sec.nkeySeedFile, `${where}nkeySeedFile`);
  const tls = tlsOptions(sec.tls, forceTls, where);
  const auth = sec.user !== undefined ? 'user' : sec.token !== undefined ? 'token' : sec.credsFile ? 'creds' : sec.nkeySeedFile ? 'nkey' : 'none';
  return { servers, display: redactNatsUrl(url), security: sec, tls, auth, section };
}

/**
 * The shared section `nats` (IM_NATS_* variables) for a connection to `url`:
 * validated (unknown keys refused) and resolved. Errors name `nats.<setting>`.
 */
export function natsSharedEndpoint(config: Readonly<Record<string, unknown>>, url: string): NatsEndpoint {
  const section = validateNatsSection(sharedSectionSchema, config.nats, 'nats') as Record<string, unknown>;
  return resolveNatsEndpoint(url, pickNatsSecurity(section), 'nats.');
}

/** The client options of an endpoint: servers, credentials (files re-read on every connect) and TLS. */
export function natsConnectOptions(ep: NatsEndpoint): ConnectionOptions {
  const s = ep.security;
  const o: ConnectionOptions = { servers: ep.servers };
  if (s.user !== undefined) {
    o.user = s.user;
    o.pass = s.password;
  } else if (s.token !== undefined) {
    o.token = s.token;
  } else if (s.credsFile) {
    const path = s.credsFile;
    o.authenticator = credsAuthenticator(() => new Uint8Array(readFileSync(path)));
  } else if (s.nkeySeedFile) {
    const path = s.nkeySeedFile;
    o.authenticator = nkeyAuthenticator(() => seedOf(readFileSync(path)));
  }
  if (ep.tls) o.tls = { ...ep.tls };
  return o;
}

/** What to log about an endpoint's security (never a secret). */
export function natsSecurityFields(ep: NatsEndpoint): { auth: NatsEndpoint['auth']; tls: 'required' | 'when offered' } {
  return { auth: ep.auth, tls: ep.tls ? 'required' : 'when offered' };
}

/** A connect error caused by the credentials (the server said so), for a clearer log line. */
export function isNatsAuthError(err: unknown): boolean {
  if (err instanceof natsErrors.AuthorizationError || err instanceof natsErrors.UserAuthenticationExpiredError) return true;
  const cause = (err as { cause?: unknown } | null)?.cause;
  if (cause && cause !== err && isNatsAuthError(cause)) return true;
  return /authori[sz]ation violation|authentication/i.test((err as Error | null)?.message ?? '');
}

function isNatsTimeout(err: unknown): boolean {
  return err instanceof natsErrors.TimeoutError || (err as Error | null)?.message === 'timeout';
}

/** A connect error caused by TLS (no TLS on the server, certificate not trusted, handshake failed). */
export function isNatsTlsError(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown; cause?: unknown } | null;
  if (!e) return false;
  const code = typeof e.code === 'string' ? e.code : '';
  const msg = typeof e.message === 'string' ? e.message : '';
  if (/^(ERR_TLS|ERR_SSL|CERT_|UNABLE_TO_|DEPTH_ZERO|SELF_SIGNED|ERR_OSSL)/.test(code) || /\btls\b|ssl|certificate/i.test(msg)) return true;
  return e.cause !== undefined && e.cause !== err && isNatsTlsError(e.cause);
}

/** One log line for a failed connect: what failed and which settings to look at. */
export function natsConnectFailure(err: unknown, ep: NatsEndpoint): { fields: Record<string, unknown>; msg: string; misconfigured: boolean } {
  const fields = { err: (err as Error)?.message, url: ep.display, ...natsSecurityFields(ep) };
  const s = ep.section;
  if (isNatsAuthError(err)) {
    return { fields, msg: `nats server refused the credentials: check ${s}.user/password, ${s}.token, ${s}.credsFile or ${s}.nkeySeedFile`, misconfigured: true };
  }
  if (isNatsTlsError(err)) return { fields, msg: `nats TLS failed: check ${s}.tls (caFile, certFile/keyFile) and the server's certificate`, misconfigured: true };
  if (ep.tls && !ep.tls.certFile && isNatsTimeout(err)) {
    // A server that requires client certificates (--tlsverify) rejects the client after the TLS 1.3
    // handshake; with reconnects on, the client then reports a timeout, not the TLS alert.
    return { fields, msg: `nats connect timed out over TLS: if the server requires client certificates, set ${s}.tls.certFile and ${s}.tls.keyFile`, misconfigured: false };
  }
  return { fields, msg: 'nats connect or setup failed', misconfigured: false };
}

export interface NatsConnectionSettings {
  /** Client name shown by the server (`/connz`). */
  connectionName: string;
  reconnect: { initialDelayMs: number; maxDelayMs: number };
  /** How long start() waits for the first connection before going on (readiness stays red meanwhile). */
  startWaitMs: number;
  /** Limit for each connection handshake (TCP, TLS, CONNECT/PONG). */
  connectTimeoutMs: number;
}

export const natsConnectionKeys = {
  connectionName: Joi.string().max(200),
  reconnect: Joi.object({
    initialDelayMs: Joi.number().integer().min(10).max(60_000).default(250),
    maxDelayMs: Joi.number().integer().min(10).max(600_000).default(10_000),
  }).default(),
  startWaitMs: Joi.number().integer().min(0).max(120_000).default(5000),
  connectTimeoutMs: Joi.number().integer().min(100).max(120_000).default(10_000),
};

export class NatsConnectionManager {
  private nc: NatsConnection | null = null;
  private up = false;
  private closed = false;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private reconnectAttempts = 0;
  /** Bumped on every disconnect/reconnect, so a late flush cannot mark a newer outage as up. */
  private generation = 0;

  constructor(
    private readonly endpoint: NatsEndpoint,
    private readonly settings: NatsConnectionSettings,
    private readonly logger: Logger,
    /** Runs once per connection (subscriptions survive the client's reconnects); a throw closes it and retries. */
    private readonly setup: (nc: NatsConnection) => Promise<void>,
    /** Called each time the connection becomes usable: after setup on a new connection, and after every reconnect. */
    private readonly onUp?: (nc: NatsConnection) => void,
  ) {}

  get connected(): boolean {
    return this.up && !this.closed && this.nc !== null && !this.nc.isClosed();
  }

  get connection(): NatsConnection | null {
    return this.nc;
  }

  private delay(attempt: number): number {
    const { initialDelayMs, maxDelayMs } = this.settings.reconnect;
    const base = Math.min(maxDelayMs, initialDelayMs * 2 ** Math.min(attempt, 20));
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done(): void {
        clearTimeout(timer);
        self.wake = null;
        resolve();
      }
      this.wake = done;
    });
  }

  async open(): Promise<void> {
    let first!: () => void;
    const connectedOnce = new Promise<void>((resolve) => (first = resolve));
    this.loop = this.run(first);
    if (this.settings.startWaitMs <= 0) return;
    const ok = await settledWithin(connectedOnce, this.settings.startWaitMs);
    if (!ok && !this.closed) {
      this.logger.warn({ url: this.endpoint.display, waited_ms: this.settings.startWaitMs }, 'nats server not reachable yet; still trying in the background');
    }
  }

  private async run(first: () => void): Promise<void> {
    let attempt = 0;
    while (!this.closed) {
      let nc: NatsConnection | null = null;
      try {
        nc = await connect({
          ...natsConnectOptions(this.endpoint),
          name: this.settings.connectionName,
          reconnect: true,
          maxReconnectAttempts: -1,
          reconnectDelayHandler: () => this.delay(this.reconnectAttempts++),
          waitOnFirstConnect: false,
          timeout: this.settings.connectTimeoutMs,
        });
        if (this.closed) {
          await nc.close().catch(() => undefined);
          return;
        }
        this.nc = nc;
        this.watch(nc);
        await this.setup(nc);
        attempt = 0;
        this.reconnectAttempts = 0;
        this.up = true;
        this.logger.info({ url: this.endpoint.display, server: nc.getServer(), ...natsSecurityFields(this.endpoint) }, 'nats connected');
        first();
        this.onUp?.(nc);
        const err = await nc.closed();
        this.up = false;
        if (this.closed) return;
        this.logger.error({ err: err instanceof Error ? err.message : undefined }, 'nats connection closed; opening a new one');
      } catch (err) {
        this.up = false;
        if (this.closed) return;
        const f = natsConnectFailure(err, this.endpoint);
        // Wrong credentials or TLS settings do not heal by themselves: error level, naming the settings to check.
        if (f.misconfigured) this.logger.error(f.fields, `${f.msg}; retrying`);
        else this.logger.warn(f.fields, f.msg);
        if (nc) await nc.close().catch(() => undefined);
      }
      if (this.nc === nc) this.nc = null;
      if (this.closed) return;
      await this.sleep(this.delay(attempt++));
    }
  }

  private watch(nc: NatsConnection): void {
    void (async () => {
      for await (const s of nc.status()) {
        if (this.nc !== nc) return;
        switch (s.type) {
          case 'disconnect':
            this.up = false;
            this.generation++;
            if (!this.closed) this.logger.warn({ server: s.server }, 'nats disconnected; reconnecting');
            break;
          case 'reconnect': {
            this.reconnectAttempts = 0;
            // The client re-sends its subscriptions on reconnect; count as up only once the
            // server has answered a PING sent after them, so readiness never runs ahead of them.
            const generation = ++this.generation;
            nc.flush().then(
              () => {
                if (this.generation !== generation || this.nc !== nc) return;
                this.up = true;
                this.logger.info({ server: s.server }, 'nats reconnected');
                this.onUp?.(nc);
              },
              () => undefined,
            );
            break;
          }
          case 'error': {
            const f = natsConnectFailure(s.error, this.endpoint);
            if (f.misconfigured) this.logger.error(f.fields, f.msg);
            else this.logger.warn({ err: s.error.message }, 'nats server error');
            break;
          }
          case 'slowConsumer':
            this.logger.warn({ pending: s.pending }, 'nats slow consumer');
            break;
          case 'staleConnection':
            this.logger.warn('nats stale connection');
            break;
          default:
            this.logger.debug({ status: s.type }, 'nats status');
        }
      }
    })().catch(() => undefined);
  }

  /**
   * Stops retrying. With drain: unsubscribes, lets the client deliver what it
   * holds, flushes and closes; otherwise closes at once. Idempotent.
   */
  async close(drain = true): Promise<void> {
    const wasUp = this.connected;
    this.closed = true;
    this.wake?.();
    const nc = this.nc;
    if (nc && !nc.isClosed()) {
      if (drain && wasUp && !nc.isDraining()) {
        await settledWithin(nc.drain(), 5000);
      }
      if (!nc.isClosed()) await nc.close().catch(() => undefined);
    }
    this.up = false;
    await this.loop?.catch(() => undefined);
  }
}
