import pg from 'pg';
import type { Logger } from '../../../kernel/logger.js';
import { toStorageError } from './sql-errors.js';
import type { QueryOptions, Row, SqlExecutor, TxHandle } from './sql-executor.js';

/** The pools: appends and other writes, background bookkeeping (on the primary), read replicas. */
export type PoolRole = 'write' | 'background' | 'read';

/** Connections of one kind of pool: in use, idle, callers waiting for one. */
export interface PoolStats {
  pool: PoolRole;
  using: number;
  idle: number;
  waiting: number;
}

/** Connection settings of one PostgreSQL pool (the primary's, the background one, or a read replica's). */
export interface PgPoolSettings {
  url: string;
  max: number;
  min: number;
  acquireMs: number;
  idleMs: number;
}

/** `?sslmode=require` (or `?ssl=true`): TLS; `verify-ca` / `verify-full`: TLS with certificate checks. */
export function sslOption(url: string): { ssl?: { rejectUnauthorized: boolean } } {
  const q = new URL(url).searchParams;
  const mode = q.get('sslmode') ?? (q.get('ssl') === 'true' ? 'require' : null);
  if (mode === null || mode === 'disable' || mode === 'allow' || mode === 'prefer') return {};
  return { ssl: { rejectUnauthorized: mode === 'verify-ca' || mode === 'verify-full' } };
}

/** Connection parameters of a postgres:// URL (the query string is ours: sslmode/ssl). */
export function pgConnection(url: string): { host: string; port: number; user?: string; password?: string; database: string } {
  const u = new URL(url);
  return {
    host: decodeURIComponent(u.hostname) || '127.0.0.1',
    port: u.port ? Number(u.port) : 5432,
    user: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    database: decodeURIComponent(u.pathname.replace(/^\//, '')) || 'postgres',
  };
}

/** Start-up `options` of every session: timestamps come back in UTC. */
const SESSION_UTC = '-c TimeZone=UTC';

const TIMESTAMPTZ_OID = 1184;
const parseTimestamptz = pg.types.getTypeParser(TIMESTAMPTZ_OID, 'text') as (s: string) => Date;
const UTC_TIMESTAMP = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?\+00$/;

/**
 * `timestamptz` text -> the ISO string the domain uses, without a Date round
 * trip: sessions run with TimeZone UTC, so PostgreSQL sends
 * `2026-11-24 02:17:53.9+00`, which becomes `2026-11-24T02:17:53.900Z`
 * (milliseconds, as stored). Anything else (another zone) goes through pg's
 * own parser.
 */
export function timestamptzToIso(text: string): string {
  const m = UTC_TIMESTAMP.exec(text);
  if (m) return `${m[1]}T${m[2]}.${((m[3] ?? '') + '000').slice(0, 3)}Z`;
  const d = parseTimestamptz(text);
  return Number.isNaN(d.getTime()) ? text : d.toISOString();
}

/** pg's parsers, except `timestamptz`, which stays an ISO string. */
const TYPES: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (oid === TIMESTAMPTZ_OID && format !== 'binary') return timestamptzToIso;
    return format === 'binary' ? pg.types.getTypeParser(oid, 'binary') : pg.types.getTypeParser(oid, 'text');
  }) as pg.CustomTypesConfig['getTypeParser'],
};

/** A transaction of PgExecutor: its pooled connection. */
class PgTx implements TxHandle {
  constructor(readonly client: pg.PoolClient) {}
}

/** Statement texts prepared per connection; past this many, statements run unnamed. */
const MAX_PREPARED = 200;

/**
 * PostgreSQL on node-postgres pools: the primary (writes, and reads that must
 * be fresh) and optional read replicas (history reads, round robin).
 *
 * Statements run as named prepared statements (parsed and planned once per
 * connection): the repositories' hot statements have constant text (batches
 * pass arrays, not growing VALUES lists). Texts beyond MAX_PREPARED run
 * unnamed. `prepare: false` (setting `storage.preparedStatements`) turns this
 * off, for poolers in transaction mode that do not keep prepared statements.
 */
export class PgExecutor implements SqlExecutor {
  readonly dialect = 'postgres' as const;
  private readonly primary: pg.Pool;
  /** Background work (QueryOptions.background) on the primary, on connections of its own. */
  private readonly background: pg.Pool;
  private readonly replicas: pg.Pool[];
  private nextReplica = 0;
  private readonly names = new Map<string, string>();

  private readonly prepare: boolean;
  private readonly logSql: boolean;

  constructor(
    opts: { primary: PgPoolSettings; background: PgPoolSettings; replicas: readonly PgPoolSettings[]; prepare: boolean; logSql: boolean },
    private readonly logger: Logger,
  ) {
    this.prepare = opts.prepare;
    this.logSql = opts.logSql;
    this.primary = this.pool(opts.primary, 'write');
    this.background = this.pool(opts.background, 'background');
    this.replicas = opts.replicas.map((r) => this.pool(r, 'read'));
  }

  private pool(s: PgPoolSettings, role: PoolRole): pg.Pool {
    const pool = new pg.Pool({
      ...pgConnection(s.url),
      ...sslOption(s.url),
      max: s.max,
      min: s.min,
      connectionTimeoutMillis: s.acquireMs,
      idleTimeoutMillis: s.idleMs,
      keepAlive: true,
      types: TYPES,
      // Session settings sent with the connection's start-up packet (no extra round trip, nothing
      // queued on a fresh client): timestamps in UTC (see timestamptzToIso); background work
      // committed without waiting for its WAL flush (see QueryOptions.background), and planned at
      // every execution: a generic plan of a prepared statement, made while ai_interaction_records
      // was young, went on scanning the whole table at every claim and update as it grew (S7 in
      // the benchmark: millions of rows read per second); planning these small statements costs less.
      options: role === 'background' ? `${SESSION_UTC} -c synchronous_commit=off -c plan_cache_mode=force_custom_plan` : SESSION_UTC,
    });
    // An idle connection that breaks (server restart, terminated backend) is
    // dropped by the pool; without a listener the error would end the process.
    pool.on('error', (err) => this.logger.warn({ err: { message: err.message, code: (err as { code?: string }).code }, pool: role }, 'storage: idle connection lost'));
    return pool;
  }

  private config(sql: string, bind: readonly unknown[]): pg.QueryConfig {
    // Debug level only: statements of this service carry medical data in their bind values, never in the text.
    if (this.logSql) this.logger.debug({ sql }, 'sql');
    if (!this.prepare) return { text: sql, values: bind as unknown[] };
    let name = this.names.get(sql);
    if (name === undefined && this.names.size < MAX_PREPARED) {
      name = `im${this.names.size + 1}`;
      this.names.set(sql, name);
    }
    return name === undefined ? { text: sql, values: bind as unknown[] } : { name, text: sql, values: bind as unknown[] };
  }

  private readPool(): pg.Pool {
    if (this.replicas.length === 0) return this.primary;
    this.nextReplica = (this.nextReplica + 1) % this.replicas.length;
    return this.replicas[this.nextReplica]!;
  }

  async query(sql: string, bind: readonly unknown[], opts: QueryOptions = {}): Promise<Row[]> {
    try {
      const config = this.config(sql, bind);
      if (opts.tx) return (await (opts.tx as PgTx).client.query<Row>(config)).rows;
      // history reads go to a replica when there is one; background work never to the primary's pool
      const pool = opts.read && this.replicas.length > 0 ? this.readPool() : opts.background ? this.background : this.primary;
      return (await pool.query<Row>(config)).rows;
    } catch (err) {
      throw toStorageError(err);
    }
  }

  async transaction<T>(work: (tx: TxHandle) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.primary.connect();
    } catch (err) {
      throw toStorageError(err);
    }
    // While checked out, a connection lost between two statements is reported
    // on the client (the pool only listens to idle ones): the next statement
    // then fails, and the connection is dropped on release.
    let lost = false;
    const onError = (): void => {
      lost = true;
    };
    client.on('error', onError);
    const release = (drop: boolean): void => {
      client.off('error', onError);
      client.release(drop || lost);
    };
    try {
      await client.query('BEGIN');
    } catch (err) {
      release(true);
      throw toStorageError(err);
    }
    let result: T;
    try {
      result = await work(new PgTx(client));
    } catch (err) {
      // What `work` throws comes out unchanged. A connection that cannot roll back is dropped.
      const broken = await client.query('ROLLBACK').then(
        () => false,
        () => true,
      );
      release(broken);
      throw err;
    }
    try {
      await client.query('COMMIT');
    } catch (err) {
      release(true);
      throw toStorageError(err);
    }
    release(false);
    return result;
  }

  /** Connections of the primary pool and of the replica pools together: in use, idle, callers waiting for one. */
  poolStats(): PoolStats[] {
    const one = (pool: PoolRole, ps: readonly pg.Pool[]) => ({
      pool,
      using: ps.reduce((n, p) => n + p.totalCount - p.idleCount, 0),
      idle: ps.reduce((n, p) => n + p.idleCount, 0),
      waiting: ps.reduce((n, p) => n + p.waitingCount, 0),
    });
    const stats = [one('write', [this.primary]), one('background', [this.background])];
    return this.replicas.length > 0 ? [...stats, one('read', this.replicas)] : stats;
  }

  async close(): Promise<void> {
    await Promise.all([this.primary, this.background, ...this.replicas].map((p) => p.end()));
  }
}
