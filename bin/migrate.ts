import { loadConfig } from '../config/loader.js';
import { parseStorageOptions, type SequelizeStorageOptions } from '../adapters/storage/sequelize/sequelize.schema.js';
import { SequelizeStorage } from '../adapters/storage/sequelize/sequelize.storage.js';
import { silentLogger } from '../kernel/logger.js';

/**
 * `npm run migrate`: loads the config (default.json, IM_CONFIG, IM_* env such
 * as IM_DATABASE_URL), applies the pending migrations of the sequelize storage,
 * prints what ran. Exit 0 on success, 1 with one line on stderr otherwise.
 */

/** The URL without its password (for messages). */
function safeUrl(url: string): string {
  if (!url.startsWith('postgres')) return url;
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'postgres://…';
  }
}

function fail(line: string): never {
  process.stderr.write(`migrate failed: ${line.replace(/\s*\n\s*/g, ' ')}\n`);
  process.exit(1);
}

async function main(): Promise<void> {
  let options: SequelizeStorageOptions;
  try {
    const config = loadConfig();
    const impl = config.adapters.storage;
    if (impl !== 'sequelize') {
      process.stdout.write(`storage adapter is '${impl ?? 'none'}': nothing to migrate\n`);
      process.exit(0);
    }
    try {
      options = { ...parseStorageOptions(config.storage), migrate: true };
    } catch (err) {
      fail(`storage.${(err as Error).message}`);
    }
  } catch (err) {
    fail((err as Error).message);
  }
  const storage = new SequelizeStorage(options, silentLogger);
  try {
    const ran = await storage.open();
    for (const name of ran) process.stdout.write(`applied ${name}\n`);
    process.stdout.write(
      ran.length > 0
        ? `migrations: ${ran.length} applied to ${safeUrl(options.url)}\n`
        : `migrations: schema of ${safeUrl(options.url)} is up to date\n`,
    );
    await storage.stop();
    process.exit(0);
  } catch (err) {
    await storage.stop().catch(() => undefined);
    fail(`${(err as Error).message} (${safeUrl(options.url)})`);
  }
}

await main();
