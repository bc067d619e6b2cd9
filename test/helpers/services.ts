import { connect } from 'node:net';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Test } from 'tap';

/** The machine's services (override with env for other machines). */
export const SERVICES = {
  postgres: { url: process.env.IM_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test', port: 5432 },
  amqp: { url: process.env.IM_TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672', port: 5672 },
  nats: { url: process.env.IM_TEST_NATS_URL ?? 'nats://127.0.0.1:4222', port: 4222 },
} as const;

export type ServiceName = keyof typeof SERVICES;

function reachable(port: number, host = '127.0.0.1', timeoutMs = 1500): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ port, host });
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/**
 * True when the service is reachable. Under CI=true an unreachable service fails
 * the test (never a silent skip); elsewhere the caller should skip.
 */
export async function requireService(t: Test, name: ServiceName): Promise<boolean> {
  if (await reachable(SERVICES[name].port)) return true;
  if (process.env.CI === 'true') {
    t.fail(`${name} is not reachable on port ${SERVICES[name].port} (mandatory under CI)`);
    return false;
  }
  t.comment(`${name} unreachable: skipping (set CI=true to make this a failure)`);
  return false;
}

/**
 * A fresh PostgreSQL database for this test (dropped at teardown), so test files
 * running in parallel never share tables. Returns its URL, or null when the
 * server is unreachable outside CI.
 */
export async function createTestDatabase(t: Test): Promise<string | null> {
  if (!(await requireService(t, 'postgres'))) return null;
  const name = `im_test_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client({ connectionString: SERVICES.postgres.url });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  t.teardown(async () => {
    const c = new pg.Client({ connectionString: SERVICES.postgres.url });
    await c.connect();
    await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await c.end();
  });
  const u = new URL(SERVICES.postgres.url);
  u.pathname = `/${name}`;
  return u.toString();
}

export type StorageBackend = 'memory' | 'sqlite' | 'postgresql';
export const STORAGE_BACKENDS: readonly StorageBackend[] = ['memory', 'sqlite', 'postgresql'];

/**
 * The bootKernel options that put a test on one storage backend (SQLite in
 * memory; PostgreSQL in a fresh database). Null when PostgreSQL is unreachable
 * outside CI (the caller returns: the test is skipped with a note).
 */
export async function storageBackend(
  t: Test,
  backend: StorageBackend,
): Promise<{ adapters: Record<string, string>; config: Record<string, unknown> } | null> {
  if (backend === 'memory') return { adapters: { storage: 'memory' }, config: {} };
  if (backend === 'sqlite') return { adapters: { storage: 'sequelize' }, config: { storage: { url: 'sqlite::memory:' } } };
  const url = await createTestDatabase(t);
  return url ? { adapters: { storage: 'sequelize' }, config: { storage: { url } } } : null;
}
