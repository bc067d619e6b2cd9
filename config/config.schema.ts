import Joi from 'joi';

export interface RootConfig {
  /** Cluster identity of this process; generated when absent. */
  instanceId?: string;
  log: { level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' };
  /** Enabled plugins, by registry name. */
  plugins: string[];
  /** Port slot -> implementation ('none' leaves the slot empty). */
  adapters: Record<string, string>;
  /** Plugins outside this code base: name -> module (a path, absolute or from the working directory, or a package name). */
  pluginModules: Record<string, string>;
  /** Adapters outside this code base: port slot -> implementation name -> module. */
  adapterModules: Record<string, Record<string, string>>;
  /** Per-step limits, and the whole shutdown's deadline (bin/main exits 1 past it). */
  kernel: { startTimeoutMs: number; stopTimeoutMs: number; shutdownDeadlineMs?: number };
  /** Sections of plugins and adapters, validated by each of them. */
  [section: string]: unknown;
}

/** The top level only: each plugin and adapter validates its own section. */
export const rootConfigSchema = Joi.object<RootConfig>({
  instanceId: Joi.string().pattern(/^[A-Za-z0-9_.-]{1,64}$/),
  log: Joi.object({
    level: Joi.string().valid('fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent').default('info'),
  }).default(),
  plugins: Joi.array().items(Joi.string().pattern(/^[a-z][a-z0-9-]*$/)).unique().required(),
  adapters: Joi.object().pattern(Joi.string(), Joi.string().pattern(/^[a-z][a-z0-9-]*$/)).default({}),
  pluginModules: Joi.object().pattern(Joi.string().pattern(/^[a-z][a-z0-9-]*$/), Joi.string().min(1).max(1000)).default({}),
  adapterModules: Joi.object()
    .pattern(Joi.string().pattern(/^[a-z][a-z0-9-]*$/), Joi.object().pattern(Joi.string().pattern(/^[a-z][a-z0-9-]*$/), Joi.string().min(1).max(1000)))
    .default({}),
  kernel: Joi.object({
    startTimeoutMs: Joi.number().integer().min(100).default(30_000),
    stopTimeoutMs: Joi.number().integer().min(100).default(15_000),
    shutdownDeadlineMs: Joi.number().integer().min(100),
  }).default(),
}).unknown(true);
