import { QueryTypes, type Sequelize } from 'sequelize';
import { toStorageError } from './sql-errors.js';

export type Row = Record<string, unknown>;
export type Dialect = 'postgres' | 'sqlite';

/** An open transaction of an executor (opaque to the repositories; each executor has its own). */
export interface TxHandle {}

export interface QueryOptions {
  /** Run inside this transaction (always on the primary). */
  tx?: TxHandle | null;
  /** May be served by a read replica (only history reads: messages.list/get). */
  read?: boolean;
  /**
   * Bookkeeping that must never delay sends (the AI router's records): on
   * PostgreSQL it runs on a small pool of its own (`storage.pool.backgroundMax`),
   * so a burst of it never queues ahead of appends for a connection.
   */
  background?: boolean;
}

/**
 * Runs raw SQL with bind parameters (`$1`, `$2`, ...) and returns raw rows, on
 * either dialect (PostgreSQL: pg-executor.ts; SQLite: below). Statements that write use `RETURNING` so that every call is
 * a row-returning query.
 */
export interface SqlExecutor {
  readonly dialect: Dialect;
  query(sql: string, bind: readonly unknown[], opts?: QueryOptions): Promise<Row[]>;
  /** Runs `work` in one transaction on the primary; rolls back when it throws. Errors come out typed. */
  transaction<T>(work: (tx: TxHandle) => Promise<T>): Promise<T>;
}

/**
 * SQLite: Sequelize keeps one connection for plain queries (and, for
 * `:memory:`, shares it with transactions), so concurrent Sequelize
 * transactions would interleave on it. SQLite allows one writer at a time
 * anyway: every statement and transaction of this process runs through one
 * queue on the default connection, and a transaction is
 * `BEGIN IMMEDIATE ... COMMIT` on it. Other processes (e.g. `npm run migrate`)
 * wait on the busy timeout.
 */
export class SqliteExecutor implements SqlExecutor {
  readonly dialect = 'sqlite' as const;
  private chain: Promise<unknown> = Promise.resolve();
  private static readonly IN_TX: TxHandle = Object.freeze({});

  constructor(private readonly sequelize: Sequelize) {}

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => undefined);
    return p;
  }

  private async raw(sql: string, bind: readonly unknown[]): Promise<Row[]> {
    // Sequelize's SQLite driver runs (trimmed) statements starting with "insert into"
    // with `run`, which returns no rows: a leading comment keeps RETURNING rows coming back.
    return this.sequelize.query<Row>(`/* im */ ${sql}`, {
      bind: bind.length > 0 ? (bind as unknown[]) : undefined,
      type: QueryTypes.SELECT,
      raw: true,
    });
  }

  async query(sql: string, bind: readonly unknown[], opts: QueryOptions = {}): Promise<Row[]> {
    try {
      if (opts.tx) return await this.raw(sql, bind);
      return await this.exclusive(() => this.raw(sql, bind));
    } catch (err) {
      throw toStorageError(err);
    }
  }

  transaction<T>(work: (tx: TxHandle) => Promise<T>): Promise<T> {
    return this.exclusive(async () => {
      try {
        await this.raw('BEGIN IMMEDIATE', []);
      } catch (err) {
        throw toStorageError(err);
      }
      let result: T;
      try {
        result = await work(SqliteExecutor.IN_TX);
      } catch (err) {
        await this.raw('ROLLBACK', []).catch(() => undefined);
        throw err;
      }
      try {
        await this.raw('COMMIT', []);
      } catch (err) {
        await this.raw('ROLLBACK', []).catch(() => undefined);
        throw toStorageError(err);
      }
      return result;
    });
  }

  /** Connection settings: WAL (file databases), busy timeout, foreign keys. */
  async configure(file: boolean, busyTimeoutMs: number): Promise<void> {
    await this.exclusive(async () => {
      if (file) await this.raw('PRAGMA journal_mode = WAL', []);
      if (file) await this.raw('PRAGMA synchronous = NORMAL', []);
      await this.raw(`PRAGMA busy_timeout = ${Math.trunc(busyTimeoutMs)}`, []);
      await this.raw('PRAGMA foreign_keys = ON', []);
    });
  }
}
