import { ConfigError } from '../kernel/errors.js';
import { Kernel } from '../kernel/kernel.js';
import type { Clock, IdGenerator } from '../kernel/clock.js';
import type { Logger } from '../kernel/logger.js';
import type { Plugin } from '../kernel/plugin.js';
import type { RootConfig } from '../config/config.schema.js';
import { ADAPTERS, PLUGINS } from './registry.js';

export interface ComposeOptions {
  config: RootConfig;
  logger: Logger;
  clock?: Clock;
  ids?: IdGenerator;
  /** Units added by the caller (tests), after the configured ones. */
  extraUnits?: readonly Plugin<unknown>[];
}

/** Resolves the configured plugin and adapter names to units (one line naming any unknown one). */
export async function resolveUnits(config: RootConfig): Promise<Plugin<unknown>[]> {
  const units: Plugin<unknown>[] = [];
  for (const [slot, impl] of Object.entries(config.adapters)) {
    if (impl === 'none') continue;
    const slotMap = ADAPTERS[slot];
    if (!slotMap) throw new ConfigError(`adapters.${slot}: unknown port slot (known: ${Object.keys(ADAPTERS).join(', ')})`);
    const load = slotMap[impl];
    if (!load) throw new ConfigError(`adapters.${slot}: unknown implementation '${impl}' (known: ${Object.keys(slotMap).join(', ')})`);
    units.push(await load());
  }
  for (const name of config.plugins) {
    const load = PLUGINS[name];
    if (!load) throw new ConfigError(`plugins: unknown plugin '${name}' (known: ${Object.keys(PLUGINS).join(', ')})`);
    units.push(await load());
  }
  return units;
}

/** The composition root: config -> a kernel holding the enabled units (not started). */
export async function composeKernel(opts: ComposeOptions): Promise<Kernel> {
  const units = [...(await resolveUnits(opts.config)), ...(opts.extraUnits ?? [])];
  return new Kernel({
    units,
    config: opts.config,
    logger: opts.logger,
    clock: opts.clock,
    ids: opts.ids,
    instanceId: opts.config.instanceId,
    startTimeoutMs: opts.config.kernel.startTimeoutMs,
    stopTimeoutMs: opts.config.kernel.stopTimeoutMs,
  });
}
