import { asValue } from 'awilix';
import { definePlugin } from '../../kernel/plugin.js';
import { validateOptions } from '../../lib/validate.js';
import { authOptionsSchema, type AuthOptions } from './auth.schema.js';
import { JwtAuthService } from './auth.service.js';

/** Provides `authService`: verifies and signs the bearer tokens of API.md §2. */
export const authPlugin = definePlugin<AuthOptions>({
  name: 'auth',
  options: (raw) => validateOptions(authOptionsSchema, raw),
  register({ container, options }) {
    container.register({ authService: asValue(new JwtAuthService(options)) });
  },
});
