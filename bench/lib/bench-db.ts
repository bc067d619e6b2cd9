import { rmSync } from 'node:fs';
import pg from 'pg';
import { createDatabase, dbUrl, dropDatabase, withDb } from './db.js';

/** One SQL statement with positional parameters ($1.. on PostgreSQL, ? on SQLite). */
export interface Stmt {
  sql: string;
  params?: unknown[];
}

/** The bench's own handle on the service's database, for seeding and counting (never used by the service). */
export interface BenchDb {
  kind: 'postgres' | 'sqlite';
  /** PostgreSQL database name, or the SQLite file */
  name: string;
  /** IM_DATABASE_URL for the service */
  url: string;
  create(): Promise<void>;
  drop(): Promise<void>;
  /** Run the statements in one transaction. */
  tx(statements: Stmt[]): Promise<void>;
  count(table: string): Promise<number>;
}

export function postgresDb(name: string): BenchDb {
  return {
    kind: 'postgres',
    name,
    url: dbUrl(name),
    create: () => createDatabase(name),
    drop: () => dropDatabase(name),
    tx: (statements) =>
      withDb(name, async (c: pg.Client) => {
        await c.query('BEGIN');
        try {
          for (const s of statements) await c.query(s.sql, s.params);
          await c.query('COMMIT');
        } catch (err) {
          await c.query('ROLLBACK').catch(() => undefined);
          throw err;
        }
        await c.query('ANALYZE');
      }),
    count: (table) => withDb(name, async (c) => Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`)).rows[0]!.n)),
  };
}

export function sqliteDb(file: string): BenchDb {
  const open = async (): Promise<import('sqlite3').Database> => {
    const sqlite3 = (await import('sqlite3')).default;
    return new Promise((resolve, reject) => {
      const db = new sqlite3.Database(file, (err) => (err ? reject(err) : resolve(db)));
      db.configure('busyTimeout', 30_000);
    });
  };
  const run = (db: import('sqlite3').Database, sql: string, params: unknown[] = []): Promise<void> =>
    new Promise((resolve, reject) => db.run(sql, params, (err) => (err ? reject(err) : resolve())));
  const close = (db: import('sqlite3').Database): Promise<void> => new Promise((r) => db.close(() => r()));
  return {
    kind: 'sqlite',
    name: file,
    url: `sqlite:${file}`,
    create: async () => undefined, // the service creates the file and migrates it
    drop: async () => {
      for (const f of [file, `${file}-wal`, `${file}-shm`, `${file}-journal`]) rmSync(f, { force: true });
    },
    tx: async (statements) => {
      const db = await open();
      try {
        await run(db, 'BEGIN IMMEDIATE');
        try {
          for (const s of statements) await run(db, s.sql, s.params);
          await run(db, 'COMMIT');
        } catch (err) {
          await run(db, 'ROLLBACK').catch(() => undefined);
          throw err;
        }
        await run(db, 'ANALYZE');
      } finally {
        await close(db);
      }
    },
    count: async (table) => {
      const db = await open();
      try {
        return await new Promise<number>((resolve, reject) =>
          db.get(`SELECT count(*) AS n FROM ${table}`, (err: Error | null, row: { n: number }) => (err ? reject(err) : resolve(Number(row.n)))),
        );
      } finally {
        await close(db);
      }
    },
  };
}
