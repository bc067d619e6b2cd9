import Joi from 'joi';
import { USER_ROLES } from '../kernel/domain.js';

/**
 * Identifiers appear in URL paths: letters, digits and _ . : @ - only, 1–64 characters.
 * The message is the pattern rule's own (`.message()`, compiled once): `.messages()`
 * would be merged into the preferences again on every validation.
 */
export const idSchema = Joi.string()
  .pattern(/^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$/)
  .message('{{#label}} must be 1-64 characters of letters, digits and _ . : @ - (starting with a letter or digit)');
export const roleSchema = Joi.string().valid(...USER_ROLES);
