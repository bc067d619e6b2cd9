import type Joi from 'joi';
import { ValidationError } from '../kernel/errors.js';

const EDGE_PREFS: Joi.ValidationOptions = { abortEarly: false, allowUnknown: false, convert: true };

/**
 * Each schema with EDGE_PREFS set on it, made on first use. joi merges
 * options passed to validate() into its defaults on every call; preferences
 * set on the schema are merged once and cached by joi.
 */
const edgeSchemas = new WeakMap<Joi.Schema, Joi.Schema>();

function edgeSchema<T>(schema: Joi.Schema<T>): Joi.Schema<T> {
  let s = edgeSchemas.get(schema);
  if (!s) {
    s = schema.prefs(EDGE_PREFS);
    edgeSchemas.set(schema, s);
  }
  return s as Joi.Schema<T>;
}

/**
 * The one way to validate input at an edge: joi with every error collected and
 * unknown keys rejected. Returns the converted value or throws ValidationError
 * whose details list each bad field (path, message). Pass schemas built once
 * (module constants), not per call.
 */
export function validate<T>(schema: Joi.Schema<T>, value: unknown, what = 'request'): T {
  // joi lets `undefined` through unless the schema says required(); an absent input is never valid here.
  if (value === undefined) throw new ValidationError(`${what} is required`, [{ path: what, message: `'${what}' is required` }]);
  const { error, value: out } = edgeSchema(schema).validate(value);
  if (error) {
    const details = error.details.map((d) => ({
      path: d.path.join('.') || what,
      message: d.message.replace(/"/g, "'"),
    }));
    throw new ValidationError(`${what} is invalid: ${details.map((d) => d.message).join('; ')}`, details);
  }
  return out as T;
}

/** Validates plugin/adapter options; errors name the setting (`http.port: must be a number`). */
export function validateOptions<T>(schema: Joi.Schema<T>, raw: unknown): T {
  const { error, value } = schema.validate(raw ?? {}, { abortEarly: true, allowUnknown: false, convert: true });
  if (error) {
    const d = error.details[0]!;
    throw new Error(`${d.path.join('.') || '(root)'}: ${d.message.replace(/"[^"]*" /, '').replace(/"/g, "'")}`);
  }
  return value as T;
}
