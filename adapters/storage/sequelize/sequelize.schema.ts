import Joi from 'joi';
import { validateOptions } from '../../../lib/validate.js';

/** Options of the `storage` section when `adapters.storage` is `sequelize` (docs/storage.md). */
export interface SequelizeStorageOptions {
  /** `sqlite:<path>`, `sqlite::memory:` or `postgres://user:pass@host:port/db`. */
  url: string;
  /** Run pending migrations at start-up. */
  migrate: boolean;
  /** PostgreSQL read replicas (URLs) used for history reads. */
  replicas: string[];
  /** `backgroundMax`: PostgreSQL connections of their own for the AI router's records, so they never queue ahead of appends. */
  pool: { max: number; min: number; acquireMs: number; idleMs: number; backgroundMax: number };
  /** Log every SQL statement at debug level (never at info: statements carry medical data). */
  logSql: boolean;
  /** PostgreSQL: run statements as named prepared statements (turn off behind a pooler in transaction mode). */
  preparedStatements: boolean;
  /** Group commit: most appends written by one transaction. */
  batch: { maxSize: number; concurrency: number };
}

const PG_URL = /^postgres(ql)?:\/\/[^\s]+$/;

export const sequelizeStorageOptionsSchema = Joi.object<SequelizeStorageOptions>({
  url: Joi.string()
    .pattern(/^(sqlite:.+|postgres(ql)?:\/\/[^\s]+)$/)
    .required()
    .messages({ 'string.pattern.base': "must be 'sqlite:<path>', 'sqlite::memory:' or 'postgres://user@host:port/database'" }),
  migrate: Joi.boolean().default(true),
  replicas: Joi.array()
    .items(Joi.string().pattern(PG_URL).messages({ 'string.pattern.base': "must be a 'postgres://' URL" }))
    .default([]),
  pool: Joi.object({
    max: Joi.number().integer().min(1).max(1000).default(10),
    min: Joi.number().integer().min(0).default(0),
    acquireMs: Joi.number().integer().min(100).default(10_000),
    idleMs: Joi.number().integer().min(100).default(10_000),
    backgroundMax: Joi.number().integer().min(1).max(100).default(2),
  }).default(),
  logSql: Joi.boolean().default(false),
  preparedStatements: Joi.boolean().default(true),
  batch: Joi.object({
    maxSize: Joi.number().integer().min(1).max(1000).default(256),
    concurrency: Joi.number().integer().min(1).max(16).default(2),
  }).default(),
});

/** Validates the `storage` section; errors name the setting (`url: must be ...`). */
export function parseStorageOptions(raw: unknown): SequelizeStorageOptions {
  const o = validateOptions(sequelizeStorageOptionsSchema, raw);
  if (o.pool.min > o.pool.max) throw new Error('pool.min: must not exceed pool.max');
  if (o.batch.concurrency > o.pool.max && isPostgresUrl(o.url)) {
    throw new Error('batch.concurrency: must not exceed pool.max');
  }
  if (o.replicas.length > 0 && !isPostgresUrl(o.url)) {
    throw new Error('replicas: read replicas need PostgreSQL (url is SQLite); remove replicas or use a postgres:// url');
  }
  return o;
}

export function isPostgresUrl(url: string): boolean {
  return PG_URL.test(url);
}

/** `sqlite:./data/im.sqlite` -> `./data/im.sqlite`; `sqlite::memory:` -> `:memory:`. */
export function sqlitePath(url: string): string {
  let p = url.slice('sqlite:'.length);
  if (p.startsWith('//')) p = p.slice(2);
  return p;
}
