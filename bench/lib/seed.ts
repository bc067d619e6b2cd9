import type { BenchDb, Stmt } from './bench-db.js';

/**
 * Bulk seeding straight into the service's tables (schema of
 * adapters/storage/sequelize/migrations/0001), after the service migrated it:
 * multi-row statements instead of thousands of HTTP calls. The HTTP path is
 * still exercised for S1's users and groups; what the bench measures is
 * sending and reading, not account creation. PostgreSQL gets one statement
 * per table (unnest); SQLite gets batched multi-row INSERTs in one transaction.
 */
const chunk = <T>(xs: readonly T[], n: number): T[][] => Array.from({ length: Math.ceil(xs.length / n) }, (_, i) => xs.slice(i * n, i * n + n));

function sqliteRows(prefix: string, cols: number, rows: unknown[][], suffix = ''): Stmt[] {
  const per = Math.floor(30_000 / cols);
  return chunk(rows, per).map((part) => ({
    sql: `${prefix} VALUES ${part.map(() => `(${Array(cols).fill('?').join(',')})`).join(',')} ${suffix}`,
    params: part.flat(),
  }));
}

export async function seedUsers(db: BenchDb, users: readonly { user_id: string; user_role?: string }[]): Promise<void> {
  if (!users.length) return;
  if (db.kind === 'postgres') {
    await db.tx([
      {
        sql: `INSERT INTO users (user_id, username, user_role, created_at, updated_at)
              SELECT u, u, r, now(), now() FROM unnest($1::text[], $2::text[]) AS x(u, r)
              ON CONFLICT (user_id) DO NOTHING`,
        params: [users.map((u) => u.user_id), users.map((u) => u.user_role ?? 'PATIENT')],
      },
    ]);
    return;
  }
  const now = new Date().toISOString();
  await db.tx(
    sqliteRows(
      'INSERT OR IGNORE INTO users (user_id, username, user_role, created_at, updated_at)',
      5,
      users.map((u) => [u.user_id, u.user_id, u.user_role ?? 'PATIENT', now, now]),
    ),
  );
}

/** Groups (created by the bench admin), their seq counters and members (role copied from the user). */
export async function seedGroups(db: BenchDb, groups: Record<string, string[]>): Promise<void> {
  const ids = Object.keys(groups);
  if (!ids.length) return;
  const pairs = Object.entries(groups).flatMap(([g, members]) => members.map((u) => [g, u] as const));
  if (db.kind === 'postgres') {
    await db.tx([
      {
        sql: `INSERT INTO "groups" (group_id, group_name, description, created_by, created_at, updated_at)
              SELECT g, g, NULL, 'bench-admin', now(), now() FROM unnest($1::text[]) AS g ON CONFLICT (group_id) DO NOTHING`,
        params: [ids],
      },
      {
        sql: `INSERT INTO group_seq_counters (group_id, last_seq) SELECT g, 0 FROM unnest($1::text[]) AS g ON CONFLICT (group_id) DO NOTHING`,
        params: [ids],
      },
      {
        sql: `INSERT INTO group_members (group_id, user_id, user_role, joined_at)
              SELECT x.g, x.u, users.user_role, now()
              FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS x(g, u, n) JOIN users ON users.user_id = x.u
              ORDER BY x.n
              ON CONFLICT (group_id, user_id) DO NOTHING`,
        params: [pairs.map((p) => p[0]), pairs.map((p) => p[1])],
      },
    ]);
    return;
  }
  const now = new Date().toISOString();
  await db.tx([
    ...sqliteRows(
      'INSERT OR IGNORE INTO "groups" (group_id, group_name, description, created_by, created_at, updated_at)',
      6,
      ids.map((g) => [g, g, null, 'bench-admin', now, now]),
    ),
    ...sqliteRows('INSERT OR IGNORE INTO group_seq_counters (group_id, last_seq)', 2, ids.map((g) => [g, 0])),
    ...chunk(pairs, 5000).map((part) => ({
      sql: `INSERT OR IGNORE INTO group_members (group_id, user_id, user_role, joined_at)
            SELECT x.column1, x.column2, users.user_role, ? FROM (VALUES ${part.map(() => '(?,?)').join(',')}) AS x
            JOIN users ON users.user_id = x.column2`,
      params: [now, ...part.flat()],
    })),
  ]);
}

/** `perGroup` history messages in each group (seq 1..perGroup, one minute apart per 60 rows), and the seq counters. */
export async function seedHistory(db: BenchDb, groups: Record<string, string>, perGroup: number): Promise<void> {
  const names = Object.keys(groups);
  if (db.kind === 'postgres') {
    const statements: Stmt[] = chunk(names, 10).map((part) => ({
      sql: `INSERT INTO messages (message_id, group_id, seq, from_user_id, msg_type, msg_content, client_msg_id, created_at)
            SELECT x.g || '-' || s, x.g, s, x.u, 'TEXT',
                   'history message ' || s || ' of ' || x.g || ': some ordinary consultation text of a typical length',
                   NULL, now() - make_interval(secs => ${perGroup} - s)
            FROM (VALUES ${part.map((_, k) => `($${2 * k + 1}::text, $${2 * k + 2}::text)`).join(',')}) AS x(g, u), generate_series(1, ${perGroup}) AS s`,
      params: part.flatMap((g) => [g, groups[g]!]),
    }));
    statements.push({
      sql: `INSERT INTO group_seq_counters (group_id, last_seq) SELECT unnest($1::text[]), $2
            ON CONFLICT (group_id) DO UPDATE SET last_seq = EXCLUDED.last_seq`,
      params: [names, perGroup],
    });
    await db.tx(statements);
    return;
  }
  await db.tx([
    ...names.map((g) => ({
      sql: `WITH RECURSIVE n(s) AS (SELECT 1 UNION ALL SELECT s + 1 FROM n WHERE s < ?)
            INSERT INTO messages (message_id, group_id, seq, from_user_id, msg_type, msg_content, client_msg_id, created_at)
            SELECT ? || '-' || s, ?, s, ?, 'TEXT', 'history message ' || s || ' of ' || ? || ': some ordinary consultation text of a typical length', NULL,
                   strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || (? - s) || ' seconds')
            FROM n`,
      params: [perGroup, g, g, groups[g]!, g, perGroup],
    })),
    ...names.map((g) => ({
      sql: 'INSERT INTO group_seq_counters (group_id, last_seq) VALUES (?, ?) ON CONFLICT (group_id) DO UPDATE SET last_seq = excluded.last_seq',
      params: [g, perGroup],
    })),
  ]);
}
