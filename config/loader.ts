import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../kernel/errors.js';
import { rootConfigSchema, type RootConfig } from './config.schema.js';

/** The source tree's config/ folder (works from build/config too). */
export const CONFIG_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'config');

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deep merge: objects merge key by key, everything else (arrays included) replaces. */
export function mergeConfig(base: Obj, over: Obj): Obj {
  const out: Obj = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    out[k] = isObj(v) && isObj(out[k]) ? mergeConfig(out[k] as Obj, v) : v;
  }
  return out;
}

function readJson(path: string): Obj {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new ConfigError(`IM_CONFIG: cannot read config file ${path}`);
  }
  try {
    const v: unknown = JSON.parse(text);
    if (!isObj(v)) throw new Error('not an object');
    return v;
  } catch (err) {
    throw new ConfigError(`IM_CONFIG: ${path} is not a JSON object (${(err as Error).message})`);
  }
}

function setPath(target: Obj, path: string, value: unknown): void {
  const keys = path.split('.');
  let o = target;
  for (const k of keys.slice(0, -1)) {
    if (!isObj(o[k])) o[k] = {};
    o = o[k] as Obj;
  }
  o[keys[keys.length - 1]!] = value;
}

/** API.md §8 (and the project's own additions, README "Environment variables"): environment variable -> config path. */
export const ENV_MAP: Readonly<Record<string, string>> = {
  IM_HTTP_PORT: 'http.port',
  IM_DATABASE_URL: 'storage.url',
  IM_JWT_SECRET: 'auth.jwtSecret',
  IM_AI_PROVIDER: 'adapters.ai-provider',
  IM_AI_URL: 'ai.url',
  IM_AI_API_KEY: 'ai.apiKey',
  IM_AI_MODEL: 'ai.model',
  IM_AI_WEBHOOK_SECRET: 'ai.webhookSecret',
  IM_AI_ROLE: 'ai-router.role',
  IM_AMQP_URL: 'amqp.url',
  IM_NATS_URL: 'nats.url',
  // NATS credentials and TLS (section `nats`, shared by nats-ingress, nats-egress and the NATS cluster bus)
  IM_NATS_USER: 'nats.user',
  IM_NATS_PASSWORD: 'nats.password',
  IM_NATS_TOKEN: 'nats.token',
  IM_NATS_CREDS_FILE: 'nats.credsFile',
  IM_NATS_NKEY_SEED_FILE: 'nats.nkeySeedFile',
  IM_NATS_TLS_REQUIRED: 'nats.tls.required',
  IM_NATS_TLS_CA_FILE: 'nats.tls.caFile',
  IM_NATS_TLS_CERT_FILE: 'nats.tls.certFile',
  IM_NATS_TLS_KEY_FILE: 'nats.tls.keyFile',
  IM_NATS_TLS_HANDSHAKE_FIRST: 'nats.tls.handshakeFirst',
  IM_LOG_LEVEL: 'log.level',
  IM_INSTANCE_ID: 'instanceId',
};

/** Plugins and adapters that a broker URL switches on when IM_PLUGINS is not set. */
function envOverrides(env: NodeJS.ProcessEnv, base: Obj): Obj {
  const over: Obj = {};
  for (const [name, path] of Object.entries(ENV_MAP)) {
    const v = env[name];
    if (v !== undefined && v !== '') setPath(over, path, v);
  }
  const plugins = [...((base.plugins as string[] | undefined) ?? [])];
  if (env.IM_PLUGINS !== undefined && env.IM_PLUGINS !== '') {
    over.plugins = env.IM_PLUGINS.split(',').map((s) => s.trim()).filter(Boolean);
  } else {
    let changed = false;
    if (env.IM_AMQP_URL && !plugins.includes('amqp-ingress')) {
      plugins.push('amqp-ingress');
      changed = true;
    }
    if (env.IM_NATS_URL && !plugins.includes('nats-ingress')) {
      plugins.push('nats-ingress');
      changed = true;
    }
    if (changed) over.plugins = plugins;
  }
  if (env.IM_NATS_URL) setPath(over, 'adapters.cluster', 'nats');
  return over;
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** Extra config merged last (tests). */
  overrides?: Obj;
  configDir?: string;
}

/**
 * config/default.json, then the deployment file named by IM_CONFIG (a name in
 * config/deployments/ or a path), then IM_* environment overrides, then
 * `overrides`; validated. Throws ConfigError with one line naming the setting.
 */
export function loadConfig(opts: LoadOptions = {}): RootConfig {
  const env = opts.env ?? process.env;
  const dir = opts.configDir ?? CONFIG_DIR;
  let cfg = readJson(join(dir, 'default.json'));
  const deployment = env.IM_CONFIG;
  if (deployment) {
    const path =
      deployment.endsWith('.json') || deployment.includes('/')
        ? isAbsolute(deployment)
          ? deployment
          : resolve(deployment)
        : join(dir, 'deployments', `${deployment}.json`);
    cfg = mergeConfig(cfg, readJson(path));
  }
  cfg = mergeConfig(cfg, envOverrides(env, cfg));
  if (opts.overrides) cfg = mergeConfig(cfg, opts.overrides);
  return validateRootConfig(cfg);
}

export function validateRootConfig(cfg: unknown): RootConfig {
  const { error, value } = rootConfigSchema.validate(cfg, { abortEarly: true, convert: true });
  if (error) {
    const d = error.details[0]!;
    throw new ConfigError(`${d.path.join('.') || 'config'}: ${d.message.replace(/"[^"]*" /, '').replace(/"/g, "'")}`);
  }
  return value;
}
