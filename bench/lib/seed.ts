import { withDb } from './db.js';

/**
 * Bulk seeding straight into the service's tables (schema of
 * adapters/storage/sequelize/migrations/0001), after the service migrated it:
 * one multi-row statement per table instead of thousands of HTTP calls. The
 * HTTP path is still exercised for S1's users and groups; what the bench
 * measures is sending and reading, not account creation.
 */
export async function seedUsers(dbName: string, users: readonly { user_id: string; user_role?: string }[]): Promise<void> {
  if (!users.length) return;
  await withDb(dbName, (c) =>
    c.query(
      `INSERT INTO users (user_id, username, user_role, created_at, updated_at)
       SELECT u, u, r, now(), now() FROM unnest($1::text[], $2::text[]) AS x(u, r)
       ON CONFLICT (user_id) DO NOTHING`,
      [users.map((u) => u.user_id), users.map((u) => u.user_role ?? 'PATIENT')],
    ),
  );
}

/** Groups (created by the bench admin), their seq counters and members (role copied from the user, or given). */
export async function seedGroups(dbName: string, groups: Record<string, string[]>, roles: Record<string, string> = {}): Promise<void> {
  const ids = Object.keys(groups);
  if (!ids.length) return;
  const mg: string[] = [];
  const mu: string[] = [];
  for (const [g, members] of Object.entries(groups)) {
    for (const u of members) {
      mg.push(g);
      mu.push(u);
    }
  }
  await withDb(dbName, async (c) => {
    await c.query('BEGIN');
    await c.query(
      `INSERT INTO "groups" (group_id, group_name, description, created_by, created_at, updated_at)
       SELECT g, g, NULL, 'bench-admin', now(), now() FROM unnest($1::text[]) AS g ON CONFLICT (group_id) DO NOTHING`,
      [ids],
    );
    await c.query(
      `INSERT INTO group_seq_counters (group_id, last_seq) SELECT g, 0 FROM unnest($1::text[]) AS g ON CONFLICT (group_id) DO NOTHING`,
      [ids],
    );
    await c.query(
      `INSERT INTO group_members (group_id, user_id, user_role, joined_at)
       SELECT x.g, x.u, COALESCE(x.r, users.user_role), now()
       FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS x(g, u, r, n) JOIN users ON users.user_id = x.u
       ORDER BY x.n
       ON CONFLICT (group_id, user_id) DO NOTHING`,
      [mg, mu, mu.map((u) => roles[u] ?? null)],
    );
    await c.query('COMMIT');
    await c.query('ANALYZE');
  });
}
