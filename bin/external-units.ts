import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import Joi from 'joi';
import { ConfigError } from '../kernel/errors.js';
import type { Plugin } from '../kernel/plugin.js';

/**
 * Units that live outside this code base (config `pluginModules`,
 * `adapterModules`): a platform team adds its own plugin or adapter without
 * editing the registry. The module's default export is the unit, an object of
 * the shape of kernel/plugin.ts; it is checked here, so a wrong module fails
 * start-up with one line naming the setting.
 */

/** The unit's shape, as far as it can be checked before it runs. */
const unitSchema = Joi.object({
  name: Joi.string().required(),
  kind: Joi.string().valid('plugin', 'adapter'),
  impl: Joi.string(),
  dependsOn: Joi.array().items(Joi.string()),
  after: Joi.array().items(Joi.string()),
  options: Joi.function(),
  register: Joi.function().required(),
  start: Joi.function(),
  stop: Joi.function(),
}).unknown(true);

/** A path (`./x.js`, `../x.js`, `/abs/x.js`) from the working directory, else a package name resolved from the service's own node_modules. */
function importTarget(specifier: string): string {
  const isPath = specifier.startsWith('./') || specifier.startsWith('../') || isAbsolute(specifier);
  return isPath ? pathToFileURL(resolve(process.cwd(), specifier)).href : specifier;
}

/**
 * Imports the unit configured at `setting` (e.g. `pluginModules.audit-log`)
 * and checks that it is a unit named `expectedName`.
 */
export async function loadExternalUnit(setting: string, specifier: string, expectedName: string): Promise<Plugin<unknown>> {
  let mod: { default?: unknown };
  try {
    mod = (await import(importTarget(specifier))) as { default?: unknown };
  } catch (err) {
    throw new ConfigError(`${setting}: cannot load '${specifier}': ${(err as Error).message.split('\n')[0]}`);
  }
  if (mod.default === undefined) throw new ConfigError(`${setting}: '${specifier}' has no default export (export the unit as default)`);
  const { error } = unitSchema.validate(mod.default);
  if (error) {
    throw new ConfigError(`${setting}: the default export of '${specifier}' is not a unit: ${error.details[0]!.message.replace(/"/g, "'")}`);
  }
  const unit = mod.default as Plugin<unknown>;
  if (unit.name !== expectedName) throw new ConfigError(`${setting}: the unit of '${specifier}' is named '${unit.name}', expected '${expectedName}'`);
  return unit;
}
