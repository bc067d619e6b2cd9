import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Sequelize, type Options, type PoolOptions } from 'sequelize';
import { InternalError, UnavailableError } from '../../../kernel/errors.js';
import type { Logger } from '../../../kernel/logger.js';
import type { Member } from '../../../kernel/domain.js';
import type { AppendResult, NewMessage, Repositories, Storage } from '../../../kernel/ports/storage.port.js';
import { GroupCommit, type GroupCommitStats } from './group-commit.js';
import { runMigrations } from './migrator.js';
import { isPostgresUrl, sqlitePath, type SequelizeStorageOptions } from './sequelize.schema.js';
import { isUnavailable, toStorageError } from './sql-errors.js';
import { PgExecutor, pgConnection, sslOption, type PoolStats } from './pg-executor.js';
import { SqliteExecutor, type SqlExecutor } from './sql-executor.js';
import { appendGroupCommit, appendInOwnTransaction, getMembers, sqlRepositories } from './sql-repositories.js';

/**
 * Sequelize options for a storage URL: SQLite (queries and migrations), or
 * PostgreSQL (migrations only, on the primary: queries run on PgExecutor).
 */
export function sequelizeOptions(options: SequelizeStorageOptions, logger: Logger): Options {
  const logging = options.logSql ? (sql: string) => logger.debug({ sql }, 'sql') : false;
  const pool: PoolOptions = {
    max: options.pool.max,
    min: options.pool.min,
    acquire: options.pool.acquireMs,
    idle: options.pool.idleMs,
    evict: Math.min(options.pool.idleMs, 1000),
  };
  if (isPostgresUrl(options.url)) {
    const { user, ...primary } = pgConnection(options.url);
    return {
      dialect: 'postgres',
      ...primary,
      username: user,
      logging,
      pool: { ...pool, min: 0 },
      benchmark: false,
      // Fail fast when the server is down; TLS from ?sslmode= / ?ssl=true.
      dialectOptions: { connectionTimeoutMillis: options.pool.acquireMs, ...sslOption(options.url) },
      // Sequelize retries only SQLITE_BUSY by default; this adapter decides about retries itself.
      retry: { max: 1 },
    };
  }
  const path = sqlitePath(options.url);
  const storage = path === ':memory:' ? ':memory:' : resolve(path);
  return { dialect: 'sqlite', storage, logging, retry: { max: 1 } };
}

/**
 * The storage port on PostgreSQL or SQLite (one code path of raw SQL, see
 * sql-repositories.ts). PostgreSQL queries run on node-postgres pools
 * (pg-executor.ts), SQLite's on Sequelize; migrations run through Sequelize
 * (umzug) on both. Appends go through group commit.
 */
export class SequelizeStorage implements Storage {
  /** The SQLite connection (null on PostgreSQL, where Sequelize is only opened to migrate). */
  readonly sequelize: Sequelize | null;
  readonly dialect: 'postgres' | 'sqlite';
  private readonly db: SqlExecutor;
  private readonly commit: GroupCommit<NewMessage, AppendResult>;
  private readonly memberReads: GroupCommit<readonly [string, string], Member | null>;
  private readonly repos: Repositories;
  private stopped: Promise<void> | null = null;
  readonly users: Repositories['users'];
  readonly groups: Repositories['groups'];
  readonly members: Repositories['members'];
  readonly messages: Repositories['messages'];
  readonly aiRecords: Repositories['aiRecords'];
  readonly background: Repositories;

  constructor(
    private readonly options: SequelizeStorageOptions,
    private readonly logger: Logger,
  ) {
    this.dialect = isPostgresUrl(options.url) ? 'postgres' : 'sqlite';
    if (this.dialect === 'postgres') {
      const pool = { max: options.pool.max, min: options.pool.min, acquireMs: options.pool.acquireMs, idleMs: options.pool.idleMs };
      this.sequelize = null;
      this.db = new PgExecutor(
        {
          primary: { url: options.url, ...pool },
          background: { url: options.url, ...pool, max: options.pool.backgroundMax, min: 0 },
          replicas: options.replicas.map((url) => ({ url, ...pool })),
          prepare: options.preparedStatements,
          logSql: options.logSql,
        },
        logger,
      );
    } else {
      const sqlOptions = sequelizeOptions(options, logger);
      if (sqlOptions.storage !== ':memory:') mkdirSync(dirname(sqlOptions.storage!), { recursive: true });
      this.sequelize = new Sequelize(sqlOptions);
      this.db = new SqliteExecutor(this.sequelize);
    }
    this.commit = new GroupCommit<NewMessage, AppendResult>({
      maxSize: options.batch.maxSize,
      // SQLite has one writer: overlapping batches would only queue.
      concurrency: this.dialect === 'postgres' ? options.batch.concurrency : 1,
      writeBatch: (items) => appendGroupCommit(this.db, items),
      writeOne: async (item) => (await appendInOwnTransaction(this.db, [item]))[0]!,
      isUnavailable,
    });
    // Reads on the send path are coalesced the same way (one statement for the
    // membership checks of concurrent sends).
    this.memberReads = new GroupCommit<readonly [string, string], Member | null>({
      maxSize: 500,
      concurrency: this.dialect === 'postgres' ? Math.max(1, Math.min(4, options.pool.max - options.batch.concurrency - 1)) : 1,
      writeBatch: (keys) => getMembers(this.db, keys),
      writeOne: async (key) => (await getMembers(this.db, [key]))[0]!,
      isUnavailable,
    });
    this.repos = sqlRepositories(
      this.db,
      null,
      (m) => this.commit.submit(m),
      (g, u) => this.memberReads.submit([g, u] as const),
    );
    this.users = this.repos.users;
    this.groups = this.repos.groups;
    this.members = this.repos.members;
    this.messages = this.repos.messages;
    this.aiRecords = this.repos.aiRecords;
    // the same repositories on the background pool (QueryOptions.background); appends join the same group commit
    this.background = sqlRepositories(this.db, null, (m) => this.commit.submit(m), undefined, true);
  }

  /** Connects, sets SQLite pragmas, and applies pending migrations when `migrate` is on. Returns what ran. */
  async open(): Promise<string[]> {
    try {
      if (this.db instanceof SqliteExecutor) await this.db.configure(this.options.url !== 'sqlite::memory:', 5000);
      await this.ping();
      if (!this.options.migrate) return [];
      // On PostgreSQL, migrations run on a short-lived Sequelize instance on the primary.
      const migrator = this.sequelize ?? new Sequelize(sequelizeOptions(this.options, this.logger));
      let ran: string[];
      try {
        ran = await runMigrations(migrator, this.dialect === 'postgres' ? this.options.url : null);
      } finally {
        if (migrator !== this.sequelize) await migrator.close();
      }
      if (ran.length > 0) this.logger.info({ migrations: ran }, 'storage migrations applied');
      return ran;
    } catch (err) {
      // At start-up the operator needs the driver's reason (refused, bad password, ...): never SQL.
      const e = toStorageError(err);
      const reason = e.cause instanceof Error && e.cause.message ? `: ${e.cause.message.replace(/\s+/g, ' ').slice(0, 200)}` : '';
      if (e instanceof UnavailableError) throw new UnavailableError(`${e.message}${reason}`, e.cause);
      if (e instanceof InternalError) throw new InternalError(`${e.message}${reason}`, e.cause);
      throw e;
    }
  }

  async ping(): Promise<void> {
    const rows = await this.db.query('SELECT 1 AS ok', []);
    if (rows.length !== 1) throw new UnavailableError('storage did not answer');
  }

  transaction<T>(work: (tx: Repositories) => Promise<T>): Promise<T> {
    return this.db.transaction((tx) => work(sqlRepositories(this.db, tx, () => Promise.reject(new Error('unreachable')))));
  }

  /** Group-commit counters (batches written, items, largest batch). */
  get batchStats(): Readonly<GroupCommitStats> {
    return this.commit.stats;
  }

  /** Connections of the pool(s): in use, idle, waiting; null for SQLite. */
  poolStats(): PoolStats[] | null {
    return this.db instanceof PgExecutor ? this.db.poolStats() : null;
  }

  /** Finishes queued appends, then closes the pool. Idempotent. */
  stop(): Promise<void> {
    if (!this.stopped) {
      this.stopped = (async () => {
        await Promise.all([this.commit.close(), this.memberReads.close()]);
        const close = this.db instanceof PgExecutor ? this.db.close() : this.sequelize?.close();
        await close?.catch((err: unknown) => this.logger.warn({ err }, 'closing the storage pool failed'));
      })();
    }
    return this.stopped;
  }
}
