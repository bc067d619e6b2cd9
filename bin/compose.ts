import { ConfigError } from '../kernel/errors.js';
import { Kernel } from '../kernel/kernel.js';
import type { Clock, IdGenerator } from '../kernel/clock.js';
import type { Logger } from '../kernel/logger.js';
import type { Plugin } from '../kernel/plugin.js';
import type { RootConfig } from '../config/config.schema.js';
import { loadExternalUnit } from './external-units.js';
import { ADAPTERS, PLUGINS } from './registry.js';

export interface ComposeOptions {
  config: RootConfig;
  logger: Logger;
  clock?: Clock;
  ids?: IdGenerator;
  /** Units added by the caller (tests), after the configured ones. */
  extraUnits?: readonly Plugin<unknown>[];
}

/** Top-level config keys that follow the unit name rule: no unit of a module may take them as its name (its section). */
const ROOT_KEYS = new Set(['log', 'plugins', 'adapters', 'kernel']);

/**
 * Resolves the configured plugin and adapter names to units (one line naming
 * any unknown one): the registry's, then those of `pluginModules` /
 * `adapterModules`. Only enabled units are loaded.
 */
export async function resolveUnits(config: RootConfig): Promise<Plugin<unknown>[]> {
  const pluginModules = config.pluginModules ?? {};
  const adapterModules = config.adapterModules ?? {};
  for (const name of Object.keys(pluginModules)) {
    if (PLUGINS[name]) throw new ConfigError(`pluginModules.${name}: '${name}' is a built-in plugin: give yours another name`);
    if (ROOT_KEYS.has(name)) throw new ConfigError(`pluginModules.${name}: '${name}' is a top-level config key (its section would be that key): give yours another name`);
  }
  for (const [slot, impls] of Object.entries(adapterModules)) {
    if (ROOT_KEYS.has(slot)) throw new ConfigError(`adapterModules.${slot}: '${slot}' is a top-level config key (its section would be that key): give the slot another name`);
    for (const impl of Object.keys(impls)) {
      if (ADAPTERS[slot]?.[impl] || impl === 'none') throw new ConfigError(`adapterModules.${slot}.${impl}: '${impl}' is a built-in ${slot} adapter: give yours another name`);
    }
  }
  const units: Plugin<unknown>[] = [];
  for (const [slot, impl] of Object.entries(config.adapters)) {
    if (impl === 'none') continue;
    const external = adapterModules[slot]?.[impl];
    if (external !== undefined) {
      units.push(await loadExternalUnit(`adapterModules.${slot}.${impl}`, external, slot));
      continue;
    }
    const slotMap = ADAPTERS[slot];
    const known = [...Object.keys(slotMap ?? {}), ...Object.keys(adapterModules[slot] ?? {})];
    if (known.length === 0) throw new ConfigError(`adapters.${slot}: unknown port slot (known: ${[...new Set([...Object.keys(ADAPTERS), ...Object.keys(adapterModules)])].join(', ')})`);
    const load = slotMap?.[impl];
    if (!load) throw new ConfigError(`adapters.${slot}: unknown implementation '${impl}' (known: ${known.join(', ')})`);
    units.push(await load());
  }
  for (const name of config.plugins) {
    const external = pluginModules[name];
    if (external !== undefined) {
      units.push(await loadExternalUnit(`pluginModules.${name}`, external, name));
      continue;
    }
    const load = PLUGINS[name];
    if (!load) throw new ConfigError(`plugins: unknown plugin '${name}' (known: ${[...Object.keys(PLUGINS), ...Object.keys(pluginModules)].join(', ')})`);
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
