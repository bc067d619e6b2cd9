import type { Container } from './container.js';
import type { Logger } from './logger.js';

export interface PluginContext<O> {
  /** The shared awilix container (resolve what you depend on, register what you provide). */
  container: Container;
  /** This unit's options, as returned by its `options` validator. */
  options: O;
  /** A child logger bound to the unit's name. */
  logger: Logger;
  /** Named multi-valued extension points (e.g. 'http.routes'): plugins contribute in register, consumers read in start. */
  contributions: Contributions;
}

export interface Contributions {
  add<T>(point: string, value: T): void;
  list<T>(point: string): readonly T[];
}

/**
 * The unit of composition: a feature plugin, a transport, or an adapter
 * implementing a port. Adapters are named after the port slot they fill
 * (`storage`, `cluster`, `ai-provider`) so plugins can depend on the slot.
 */
export interface Plugin<O = unknown> {
  readonly name: string;
  readonly kind?: 'plugin' | 'adapter';
  /** For adapters: which implementation this is (e.g. 'sequelize'). */
  readonly impl?: string;
  /** Units that must be registered and started before this one. */
  readonly dependsOn?: readonly string[];
  /** Units that, when enabled, start before this one. */
  readonly after?: readonly string[];
  /**
   * Validates this unit's config section (`config[name]`, `{}` when absent) and
   * returns typed options; throw with a message naming the bad setting.
   */
  options?(raw: unknown, config: Readonly<Record<string, unknown>>): O;
  /** Registers what the unit provides into the container. Runs for every unit before any start. */
  register(ctx: PluginContext<O>): void | Promise<void>;
  start?(ctx: PluginContext<O>): Promise<void>;
  /** Must be idempotent; called in reverse start order. */
  stop?(ctx: PluginContext<O>): Promise<void>;
}

/** Identity helper that keeps the options type tied to the plugin. */
export function definePlugin<O>(plugin: Plugin<O>): Plugin<O> {
  return plugin;
}
