import pg from 'pg';
import type { Sequelize } from 'sequelize';
import { SequelizeStorage, Umzug } from 'umzug';
import { MIGRATIONS, type Migration } from './migrations/migration-list.js';

/** The table umzug records applied migrations in. */
export const MIGRATIONS_TABLE = 'schema_migrations';
/** pg_advisory_lock key: one migrator at a time across instances. */
const LOCK_KEY = 7_310_442_001;

export function createMigrator(sequelize: Sequelize, migrations: readonly Migration[] = MIGRATIONS): Umzug<ReturnType<Sequelize['getQueryInterface']>> {
  const qi = sequelize.getQueryInterface();
  return new Umzug({
    migrations: migrations.map((m) => ({ name: m.name, up: () => m.up(qi), down: () => m.down(qi) })),
    context: qi,
    storage: new SequelizeStorage({ sequelize, tableName: MIGRATIONS_TABLE }),
    logger: undefined,
  });
}

/**
 * Applies pending migrations and returns their names. On PostgreSQL a session
 * advisory lock (on its own connection) keeps two instances starting at once
 * from migrating concurrently.
 */
export async function runMigrations(sequelize: Sequelize, pgUrl: string | null, migrations: readonly Migration[] = MIGRATIONS): Promise<string[]> {
  const umzug = createMigrator(sequelize, migrations);
  if (!pgUrl) return (await umzug.up()).map((m) => m.name);
  const lock = new pg.Client({ connectionString: pgUrl });
  lock.on('error', () => undefined);
  await lock.connect();
  try {
    await lock.query('SELECT pg_advisory_lock($1)', [LOCK_KEY]);
    return (await umzug.up()).map((m) => m.name);
  } finally {
    await lock.end().catch(() => undefined);
  }
}

export async function pendingMigrations(sequelize: Sequelize, migrations: readonly Migration[] = MIGRATIONS): Promise<string[]> {
  return (await createMigrator(sequelize, migrations).pending()).map((m) => m.name);
}
