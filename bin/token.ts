import { loadConfig } from '../config/loader.js';
import { authOptionsSchema } from '../plugins/auth/auth.schema.js';
import { JwtAuthService } from '../plugins/auth/auth.service.js';
import { validateOptions } from '../lib/validate.js';

/** `npm run token -- <user_id> [--admin] [--expires <seconds>]`: prints a token signed with the configured secret. */
async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const userId = args.find((a) => !a.startsWith('--') && args[args.indexOf(a) - 1] !== '--expires');
  if (!userId) {
    process.stderr.write('usage: npm run token -- <user_id> [--admin] [--expires <seconds>]\n');
    process.exit(2);
  }
  const exp = args.includes('--expires') ? Number(args[args.indexOf('--expires') + 1]) : undefined;
  try {
    const config = loadConfig();
    const auth = new JwtAuthService(validateOptions(authOptionsSchema, config.auth));
    process.stdout.write(`${await auth.sign(userId, { admin: args.includes('--admin'), expiresInSeconds: exp })}\n`);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(1);
  }
}

void main();
