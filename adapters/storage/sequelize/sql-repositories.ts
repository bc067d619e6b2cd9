import { ConflictError, InternalError, NotFoundError, UnavailableError } from '../../../kernel/errors.js';
import type { AiInteractionRecord, AiRecordStatus, Group, Member, Message, MsgType, User, UserRole } from '../../../kernel/domain.js';
import type {
  AiRecordPatch,
  AppendResult,
  MessagePage,
  MessageQuery,
  NewAiRecord,
  NewMessage,
  Repositories,
} from '../../../kernel/ports/storage.port.js';
import { toStorageError } from './sql-errors.js';
import type { Dialect, Row, SqlExecutor, TxHandle } from './sql-executor.js';

/*
 * Raw SQL shared by both dialects (PostgreSQL and SQLite >= 3.35: ON CONFLICT
 * and RETURNING). "groups" is quoted everywhere (a keyword in SQLite).
 */

const USER_COLS = 'user_id, username, user_role, created_at, updated_at';
const GROUP_COLS = 'group_id, group_name, description, created_by, created_at, updated_at';
const MEMBER_COLS = 'group_id, user_id, user_role, joined_at';
const MSG_COLS = 'message_id, group_id, seq, from_user_id, msg_type, msg_content, client_msg_id, created_at';
const RECORD_COLS =
  'record_id, group_id, user_message_id, ai_message_id, ai_service_url, request_content, response_content, status, duration_ms, error_message, attempts, next_attempt_at, lease_owner, lease_until, created_at, updated_at';

/** PostgreSQL returns Date for TIMESTAMPTZ; SQLite returns the ISO text it stored. */
function iso(v: unknown): string {
  if (v instanceof Date) return v.toISOString();
  return String(v);
}
function isoOrNull(v: unknown): string | null {
  return v === null || v === undefined ? null : iso(v);
}
function strOrNull(v: unknown): string | null {
  return v === null || v === undefined ? null : String(v);
}
function numOrNull(v: unknown): number | null {
  return v === null || v === undefined ? null : Number(v);
}

export function toUser(r: Row): User {
  return {
    user_id: String(r.user_id),
    username: String(r.username),
    user_role: String(r.user_role) as UserRole,
    created_at: iso(r.created_at),
    updated_at: iso(r.updated_at),
  };
}
export function toGroup(r: Row): Group {
  return {
    group_id: String(r.group_id),
    group_name: String(r.group_name),
    description: strOrNull(r.description),
    created_by: String(r.created_by),
    created_at: iso(r.created_at),
    updated_at: iso(r.updated_at),
  };
}
export function toMember(r: Row): Member {
  return { group_id: String(r.group_id), user_id: String(r.user_id), user_role: String(r.user_role) as UserRole, joined_at: iso(r.joined_at) };
}
/**
 * AiRecordRepository.claimDue's statement (binds: owner, lease_until, now,
 * limit): due pending records, oldest first, leased to `owner`. PostgreSQL
 * reads them through the partial index ai_records_pending_idx (migration
 * 0002) and skips rows another instance is claiming.
 */
export function claimDueSql(dialect: Dialect): string {
  return `UPDATE ai_interaction_records SET lease_owner = $1, lease_until = $2, updated_at = $3
   WHERE record_id IN (
     SELECT record_id FROM ai_interaction_records
     WHERE status = 0
       AND (next_attempt_at IS NULL OR next_attempt_at <= $3)
       AND (lease_until IS NULL OR lease_until < $3 OR lease_owner = $1)
     ORDER BY created_at, record_id LIMIT $4${dialect === 'postgres' ? ' FOR UPDATE SKIP LOCKED' : ''})
   RETURNING ${RECORD_COLS}`;
}

/** The WHERE clause of a history page (MessageRepository.list's rules) and its binds. */
function pageWhere(groupId: string, query: MessageQuery): { where: string; bind: unknown[]; ascending: boolean } {
  const bind: unknown[] = [groupId];
  const conds = ['group_id = $1'];
  if (query.after_seq !== undefined) {
    bind.push(query.after_seq);
    conds.push(`seq > $${bind.length}`);
  }
  if (query.before_seq !== undefined) {
    bind.push(query.before_seq);
    conds.push(`seq < $${bind.length}`);
  }
  return { where: conds.join(' AND '), bind, ascending: query.after_seq !== undefined };
}

export function toMessage(r: Row): Message {
  return {
    message_id: String(r.message_id),
    group_id: String(r.group_id),
    seq: Number(r.seq),
    from_user_id: String(r.from_user_id),
    msg_type: String(r.msg_type) as MsgType,
    msg_content: String(r.msg_content),
    client_msg_id: strOrNull(r.client_msg_id),
    created_at: iso(r.created_at),
  };
}
export function toRecord(r: Row): AiInteractionRecord {
  return {
    record_id: String(r.record_id),
    group_id: String(r.group_id),
    user_message_id: String(r.user_message_id),
    ai_message_id: strOrNull(r.ai_message_id),
    ai_service_url: String(r.ai_service_url),
    request_content: strOrNull(r.request_content),
    response_content: strOrNull(r.response_content),
    status: Number(r.status) as AiRecordStatus,
    duration_ms: numOrNull(r.duration_ms),
    error_message: strOrNull(r.error_message),
    attempts: Number(r.attempts),
    next_attempt_at: isoOrNull(r.next_attempt_at),
    lease_owner: strOrNull(r.lease_owner),
    lease_until: isoOrNull(r.lease_until),
    created_at: iso(r.created_at),
    updated_at: iso(r.updated_at),
  };
}

/** `($1, $2), ($3, $4)` for rows of `width` parameters, appending the values to `bind`. */
function valuesList(bind: unknown[], rows: readonly (readonly unknown[])[]): string {
  return rows
    .map((vals) => {
      const start = bind.length;
      bind.push(...vals);
      return `(${vals.map((_, i) => `$${start + i + 1}`).join(', ')})`;
    })
    .join(', ');
}

/**
 * Some rows were not inserted because their (group, sender, client_msg_id) is
 * already stored (a replay, or another process stored it meanwhile): the
 * transaction is rolled back and redone with those keys looked up first, so no
 * seq is ever skipped.
 */
export class ReplayDetectedError extends Error {
  constructor(readonly keys: readonly string[]) {
    super('some appends are replays of stored messages');
    this.name = 'ReplayDetectedError';
  }
}

const clientKey = (m: { group_id: string; from_user_id: string; client_msg_id: string | null }): string | null =>
  m.client_msg_id === null ? null : `${m.group_id}\u0000${m.from_user_id}\u0000${m.client_msg_id}`;

/**
 * Appends a batch of messages inside transaction `tx` (the group-commit write):
 * 1. replays (same group, sender and client_msg_id) inside the batch share the first one's result;
 * 2. keys in `suspects` (known or likely replays) are looked up by the unique
 *    index (one equality lookup each): found ones return the original, created=false;
 * 3. one upsert advances each group's counter once by its number of new messages
 *    (groups in sorted order, so concurrent writers lock counters in the same
 *    order; the row lock is held to commit, so seq follows commit order), and
 *    seq is handed out in queue order;
 * 4. one multi-row INSERT ... ON CONFLICT (group_id, from_user_id, client_msg_id)
 *    DO NOTHING RETURNING; a missing row means a replay that was not looked up:
 *    ReplayDetectedError with its key (the caller rolls back and redoes).
 * The common case (no replay) costs two statements for the whole batch.
 */
export async function appendBatch(
  db: SqlExecutor,
  tx: TxHandle,
  items: readonly NewMessage[],
  suspects: ReadonlySet<string> = new Set(),
): Promise<AppendResult[]> {
  const results: Array<AppendResult | undefined> = new Array(items.length);
  const firstByKey = new Map<string, number>();
  const dupOf = new Array<number>(items.length).fill(-1);
  items.forEach((m, i) => {
    const k = clientKey(m);
    if (k === null) return;
    const first = firstByKey.get(k);
    if (first === undefined) firstByKey.set(k, i);
    else dupOf[i] = first;
  });

  const lookups = [...firstByKey.entries()].filter(([k]) => suspects.has(k)).map(([, i]) => items[i]!);
  if (lookups.length > 0) {
    const bind: unknown[] = [];
    const parts = lookups.map((m) => {
      bind.push(m.group_id, m.from_user_id, m.client_msg_id);
      const n = bind.length;
      return `SELECT ${MSG_COLS} FROM messages WHERE group_id = $${n - 2} AND from_user_id = $${n - 1} AND client_msg_id = $${n}`;
    });
    const rows = await db.query(parts.join(' UNION ALL '), bind, { tx });
    for (const r of rows) {
      const original = toMessage(r);
      const i = firstByKey.get(clientKey(original)!);
      if (i !== undefined) results[i] = { message: original, created: false };
    }
  }

  const fresh = items.map((_, i) => i).filter((i) => dupOf[i] === -1 && results[i] === undefined);
  if (fresh.length > 0) {
    const perGroup = new Map<string, number>();
    for (const i of fresh) perGroup.set(items[i]!.group_id, (perGroup.get(items[i]!.group_id) ?? 0) + 1);
    const groups = [...perGroup.keys()].sort();
    const cbind: unknown[] = [];
    const counters = await db.query(
      `INSERT INTO group_seq_counters (group_id, last_seq) VALUES ${valuesList(cbind, groups.map((g) => [g, perGroup.get(g)!]))}
       ON CONFLICT (group_id) DO UPDATE SET last_seq = group_seq_counters.last_seq + excluded.last_seq
       RETURNING group_id, last_seq`,
      cbind,
      { tx },
    );
    const nextSeq = new Map<string, number>();
    for (const r of counters) {
      const g = String(r.group_id);
      nextSeq.set(g, Number(r.last_seq) - perGroup.get(g)! + 1);
    }
    const stored: Message[] = fresh.map((i) => {
      const m = items[i]!;
      const seq = nextSeq.get(m.group_id)!;
      nextSeq.set(m.group_id, seq + 1);
      return {
        message_id: m.message_id,
        group_id: m.group_id,
        seq,
        from_user_id: m.from_user_id,
        msg_type: m.msg_type,
        msg_content: m.msg_content,
        client_msg_id: m.client_msg_id,
        created_at: m.created_at,
      };
    });
    const bind: unknown[] = [];
    const values = valuesList(
      bind,
      stored.map((m) => [m.message_id, m.group_id, m.seq, m.from_user_id, m.msg_type, m.msg_content, m.client_msg_id, m.created_at]),
    );
    const inserted = await db.query(
      `INSERT INTO messages (${MSG_COLS}) VALUES ${values}
       ON CONFLICT (group_id, from_user_id, client_msg_id) DO NOTHING RETURNING message_id`,
      bind,
      { tx },
    );
    if (inserted.length !== stored.length) {
      const got = new Set(inserted.map((r) => String(r.message_id)));
      throw new ReplayDetectedError(stored.filter((m) => !got.has(m.message_id)).map((m) => clientKey(m)!));
    }
    fresh.forEach((i, k) => {
      results[i] = { message: stored[k]!, created: true };
    });
  }
  items.forEach((_, i) => {
    if (dupOf[i] !== -1) results[i] = { message: results[dupOf[i]!]!.message, created: false };
  });
  return results as AppendResult[];
}

/** Runs appendBatch in its own transaction; when replays show up, rolls back and redoes it looking them up first. */
export async function appendInOwnTransaction(db: SqlExecutor, items: readonly NewMessage[]): Promise<AppendResult[]> {
  const suspects = new Set<string>();
  for (let attempt = 1; ; attempt++) {
    try {
      return await db.transaction((tx) => appendBatch(db, tx, items, suspects));
    } catch (err) {
      if (err instanceof ReplayDetectedError) {
        for (const k of err.keys) suspects.add(k);
        if (attempt < 5) continue;
        throw new UnavailableError('concurrent appends kept colliding; retry');
      }
      throw mapAppendError(err, items);
    }
  }
}

/**
 * The group-commit write. On PostgreSQL the common case (no client_msg_id
 * repeated inside the batch) is ONE statement in autocommit: a data-modifying
 * CTE advances each group's counter (groups in sorted order, row locks held to
 * commit, so seq follows commit order) and inserts the messages with their
 * seq, one round trip instead of four (BEGIN, upsert, insert, COMMIT). It has
 * no ON CONFLICT: a replay nobody knew of raises a unique violation that
 * aborts the whole statement, counters included, and the batch is redone by
 * appendInOwnTransaction, which looks replays up. Any other failure is
 * redone there too (so every caller gets that path's errors), except
 * unavailability, which fails the batch as it is.
 */
export async function appendGroupCommit(db: SqlExecutor, items: readonly NewMessage[]): Promise<AppendResult[]> {
  const keys = items.map(clientKey).filter((k): k is string => k !== null);
  if (db.dialect !== 'postgres' || new Set(keys).size !== keys.length) return appendInOwnTransaction(db, items);
  let seqById: Map<string, number>;
  try {
    seqById = await appendInOneStatement(db, items);
  } catch (err) {
    if (err instanceof UnavailableError) throw err;
    return appendInOwnTransaction(db, items);
  }
  // Committed: every row is there (an INSERT without ON CONFLICT either inserts all or fails).
  return items.map((m) => {
    const seq = seqById.get(m.message_id);
    if (seq === undefined) throw new InternalError('append: a committed row was not returned');
    return { message: { ...m, seq }, created: true };
  });
}

/**
 * Message id -> assigned seq. The batch travels as one array per column
 * (`unnest`), so the statement text is the same for every batch size and is
 * prepared once per connection.
 */
async function appendInOneStatement(db: SqlExecutor, items: readonly NewMessage[]): Promise<Map<string, number>> {
  const cols: unknown[][] = [[], [], [], [], [], [], []];
  for (const m of items) {
    cols[0]!.push(m.message_id);
    cols[1]!.push(m.group_id);
    cols[2]!.push(m.from_user_id);
    cols[3]!.push(m.msg_type);
    cols[4]!.push(m.msg_content);
    cols[5]!.push(m.client_msg_id);
    cols[6]!.push(m.created_at);
  }
  const inserted = await db.query(APPEND_BATCH_SQL, cols);
  return new Map(inserted.map((r) => [String(r.message_id), Number(r.seq)]));
}

const APPEND_BATCH_SQL = `WITH v AS (
       SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::text[], $6::varchar[], $7::timestamptz[])
         WITH ORDINALITY AS v (message_id, group_id, from_user_id, msg_type, msg_content, client_msg_id, created_at, ord)
     ),
     n AS (SELECT group_id, count(*)::int AS n FROM v GROUP BY group_id),
     c AS (
       INSERT INTO group_seq_counters (group_id, last_seq)
       SELECT group_id, n FROM n ORDER BY group_id
       ON CONFLICT (group_id) DO UPDATE SET last_seq = group_seq_counters.last_seq + excluded.last_seq
       RETURNING group_id, last_seq
     )
     INSERT INTO messages (${MSG_COLS})
     SELECT v.message_id, v.group_id, c.last_seq - n.n + (row_number() OVER (PARTITION BY v.group_id ORDER BY v.ord))::int,
            v.from_user_id, v.msg_type, v.msg_content, v.client_msg_id, v.created_at
       FROM v JOIN n USING (group_id) JOIN c USING (group_id)
     RETURNING message_id, seq`;

function mapAppendError(err: unknown, items: readonly NewMessage[]): Error {
  const one = items.length === 1 ? items[0]! : null;
  return refine(err, {
    conflict: one ? `message '${one.message_id}' already exists` : 'a message of the batch already exists',
    missing: one ? `group '${one.group_id}' or user '${one.from_user_id}' not found` : 'a group or user of the batch was not found',
  });
}

/** db.query types errors without context: give conflicts and missing references a readable message. */
function refine(err: unknown, ctx: { conflict?: string; missing?: string }): Error {
  if (err instanceof ConflictError && ctx.conflict) return new ConflictError(ctx.conflict);
  if (err instanceof NotFoundError && ctx.missing) return new NotFoundError(ctx.missing);
  return toStorageError(err);
}

/**
 * Membership lookups of many callers in one statement (members.get is on every
 * send): the pairs go through the unique (group_id, user_id) index and the
 * rows are matched to the asked pairs.
 */
export async function getMembers(db: SqlExecutor, keys: ReadonlyArray<readonly [string, string]>): Promise<Array<Member | null>> {
  let rows: Row[];
  if (db.dialect === 'postgres') {
    // The pairs as two arrays: one statement text for any number of pairs (prepared once).
    rows = await db.query(
      `SELECT m.group_id, m.user_id, m.user_role, m.joined_at
         FROM unnest($1::varchar[], $2::varchar[]) AS k (group_id, user_id)
         JOIN group_members m ON m.group_id = k.group_id AND m.user_id = k.user_id`,
      [keys.map((k) => k[0]), keys.map((k) => k[1])],
    );
  } else {
    const groups = [...new Set(keys.map((k) => k[0]))];
    const users = [...new Set(keys.map((k) => k[1]))];
    const g = groups.map((_, i) => `$${i + 1}`).join(', ');
    const u = users.map((_, i) => `$${groups.length + i + 1}`).join(', ');
    rows = await db.query(`SELECT ${MEMBER_COLS} FROM group_members WHERE group_id IN (${g}) AND user_id IN (${u})`, [...groups, ...users]);
  }
  const found = new Map(rows.map((r) => [`${String(r.group_id)}\u0000${String(r.user_id)}`, r]));
  return keys.map(([gid, uid]) => {
    const r = found.get(`${gid}\u0000${uid}`);
    return r ? toMember(r) : null;
  });
}

const PATCH_COLUMNS: ReadonlySet<string> = new Set([
  'ai_message_id',
  'request_content',
  'response_content',
  'status',
  'duration_ms',
  'error_message',
  'attempts',
  'next_attempt_at',
  'lease_owner',
  'lease_until',
  'ai_service_url',
  'updated_at',
]);

/**
 * The repositories on one executor. With `tx`, every call runs in that
 * transaction (primary); without it, each call is its own statement and
 * `append` goes through `append` (the group-commit queue).
 */
export function sqlRepositories(
  db: SqlExecutor,
  tx: TxHandle | null,
  append: (m: NewMessage) => Promise<AppendResult>,
  memberLookup?: (groupId: string, userId: string) => Promise<Member | null>,
  background = false,
): Repositories {
  const q = (sql: string, bind: readonly unknown[], read = false): Promise<Row[]> =>
    db.query(sql, bind, { tx, read: read && !tx, background: background && !tx });
  const guard = async <T>(p: Promise<T>, ctx: { conflict?: string; missing?: string }): Promise<T> => {
    try {
      return await p;
    } catch (err) {
      throw refine(err, ctx);
    }
  };

  const listPage = async (groupId: string, query: MessageQuery): Promise<MessagePage> => {
    const { where, bind, ascending } = pageWhere(groupId, query);
    bind.push(query.limit + 1);
    const rows = await q(
      `SELECT ${MSG_COLS} FROM messages WHERE ${where} ORDER BY seq ${ascending ? 'ASC' : 'DESC'} LIMIT $${bind.length}`,
      bind,
      true,
    );
    const has_more = rows.length > query.limit;
    const page = rows.slice(0, query.limit).map(toMessage);
    if (!ascending) page.reverse();
    return { messages: page, has_more };
  };

  return {
    users: {
      async create(user) {
        await guard(
          q(`INSERT INTO users (${USER_COLS}) VALUES ($1, $2, $3, $4, $5) RETURNING user_id`, [
            user.user_id,
            user.username,
            user.user_role,
            user.created_at,
            user.updated_at,
          ]),
          { conflict: `user '${user.user_id}' already exists` },
        );
        return { ...user };
      },
      async get(userId) {
        const rows = await q(`SELECT ${USER_COLS} FROM users WHERE user_id = $1`, [userId]);
        return rows[0] ? toUser(rows[0]) : null;
      },
      async getMany(userIds) {
        if (userIds.length === 0) return [];
        const ids = [...new Set(userIds)];
        const rows = await q(`SELECT ${USER_COLS} FROM users WHERE user_id IN (${ids.map((_, i) => `$${i + 1}`).join(', ')})`, ids);
        const byId = new Map(rows.map((r) => [String(r.user_id), toUser(r)]));
        return userIds.flatMap((id) => (byId.has(id) ? [{ ...byId.get(id)! }] : []));
      },
      async updateRole(userId, role, updatedAt) {
        const rows = await q(`UPDATE users SET user_role = $2, updated_at = $3 WHERE user_id = $1 RETURNING ${USER_COLS}`, [userId, role, updatedAt]);
        return rows[0] ? toUser(rows[0]) : null;
      },
    },
    groups: {
      async create(group) {
        const run = async (t: TxHandle): Promise<void> => {
          await db.query(`INSERT INTO "groups" (${GROUP_COLS}) VALUES ($1, $2, $3, $4, $5, $6) RETURNING group_id`, [
            group.group_id,
            group.group_name,
            group.description,
            group.created_by,
            group.created_at,
            group.updated_at,
          ], { tx: t });
          await db.query(`INSERT INTO group_seq_counters (group_id, last_seq) VALUES ($1, 0) RETURNING group_id`, [group.group_id], { tx: t });
        };
        await guard(tx ? run(tx) : db.transaction(run), { conflict: `group '${group.group_id}' already exists` });
        return { ...group };
      },
      async get(groupId) {
        const rows = await q(`SELECT ${GROUP_COLS} FROM "groups" WHERE group_id = $1`, [groupId]);
        return rows[0] ? toGroup(rows[0]) : null;
      },
      async listForUser(userId) {
        const rows = await q(
          `SELECT g.group_id, g.group_name, g.description, g.created_by, g.created_at, g.updated_at
           FROM group_members m JOIN "groups" g ON g.group_id = m.group_id
           WHERE m.user_id = $1 ORDER BY m.joined_at, m.id`,
          [userId],
        );
        return rows.map(toGroup);
      },
    },
    members: {
      async add(member) {
        await guard(
          q(`INSERT INTO group_members (${MEMBER_COLS}) VALUES ($1, $2, $3, $4) RETURNING id`, [
            member.group_id,
            member.user_id,
            member.user_role,
            member.joined_at,
          ]),
          {
            conflict: `user '${member.user_id}' is already a member of '${member.group_id}'`,
            missing: `group '${member.group_id}' or user '${member.user_id}' not found`,
          },
        );
        return { ...member };
      },
      async get(groupId, userId) {
        if (!tx && memberLookup) return memberLookup(groupId, userId);
        const rows = await q(`SELECT ${MEMBER_COLS} FROM group_members WHERE group_id = $1 AND user_id = $2`, [groupId, userId]);
        return rows[0] ? toMember(rows[0]) : null;
      },
      async list(groupId) {
        const rows = await q(`SELECT ${MEMBER_COLS} FROM group_members WHERE group_id = $1 ORDER BY id`, [groupId]);
        return rows.map(toMember);
      },
      async remove(groupId, userId) {
        const rows = await q(`DELETE FROM group_members WHERE group_id = $1 AND user_id = $2 RETURNING id`, [groupId, userId]);
        return rows.length > 0;
      },
      async groupIdsOfUser(userId) {
        const rows = await q(`SELECT group_id FROM group_members WHERE user_id = $1 ORDER BY id`, [userId]);
        return rows.map((r) => String(r.group_id));
      },
    },
    messages: {
      async append(message) {
        if (!tx) return append(message);
        try {
          // Inside a caller's transaction there is no redo: look the key up first.
          const key = clientKey(message);
          return (await appendBatch(db, tx, [message], new Set(key === null ? [] : [key])))[0]!;
        } catch (err) {
          if (err instanceof ReplayDetectedError) {
            throw new ConflictError(`client_msg_id '${message.client_msg_id}' was stored concurrently; retry`);
          }
          throw mapAppendError(err, [message]);
        }
      },
      async get(messageId) {
        const rows = await q(`SELECT ${MSG_COLS} FROM messages WHERE message_id = $1`, [messageId], true);
        return rows[0] ? toMessage(rows[0]) : null;
      },
      list: listPage,
      async listRecent(since, limit) {
        const rows = await q(
          `SELECT ${MSG_COLS} FROM messages WHERE created_at >= $1 ORDER BY created_at, message_id LIMIT $2`,
          [since, limit],
        );
        return rows.map(toMessage);
      },
    },
    aiRecords: {
      async createIfAbsent(r: NewAiRecord) {
        const rows = await guard(
          q(
            `INSERT INTO ai_interaction_records (record_id, group_id, user_message_id, ai_service_url, status, attempts, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 0, 0, $5, $5)
             ON CONFLICT (user_message_id) DO NOTHING RETURNING ${RECORD_COLS}`,
            [r.record_id, r.group_id, r.user_message_id, r.ai_service_url, r.created_at],
          ),
          { conflict: `AI record '${r.record_id}' already exists`, missing: `group '${r.group_id}' not found` },
        );
        if (rows[0]) return { record: toRecord(rows[0]), created: true };
        const existing = await q(`SELECT ${RECORD_COLS} FROM ai_interaction_records WHERE user_message_id = $1`, [r.user_message_id]);
        if (!existing[0]) throw new ConflictError(`AI record for message '${r.user_message_id}' could not be created`);
        return { record: toRecord(existing[0]), created: false };
      },
      async get(recordId) {
        const rows = await q(`SELECT ${RECORD_COLS} FROM ai_interaction_records WHERE record_id = $1`, [recordId]);
        return rows[0] ? toRecord(rows[0]) : null;
      },
      async update(recordId, patch: AiRecordPatch) {
        const bind: unknown[] = [recordId];
        const sets: string[] = [];
        for (const [k, v] of Object.entries(patch)) {
          if (v === undefined || !PATCH_COLUMNS.has(k)) continue;
          bind.push(v);
          sets.push(`${k} = $${bind.length}`);
        }
        const rows =
          sets.length === 0
            ? await q(`SELECT ${RECORD_COLS} FROM ai_interaction_records WHERE record_id = $1`, bind)
            : await q(`UPDATE ai_interaction_records SET ${sets.join(', ')} WHERE record_id = $1 RETURNING ${RECORD_COLS}`, bind);
        return rows[0] ? toRecord(rows[0]) : null;
      },
      async claimDue(req) {
        const rows = await q(claimDueSql(db.dialect), [req.owner, req.lease_until, req.now, req.limit]);
        return rows
          .map(toRecord)
          .sort((a, b) => a.created_at.localeCompare(b.created_at) || a.record_id.localeCompare(b.record_id));
      },
      async list(query) {
        const bind: unknown[] = [];
        const conds: string[] = [];
        if (query.group_id !== undefined) {
          bind.push(query.group_id);
          conds.push(`group_id = $${bind.length}`);
        }
        if (query.status !== undefined) {
          bind.push(query.status);
          conds.push(`status = $${bind.length}`);
        }
        bind.push(query.limit);
        const rows = await q(
          `SELECT ${RECORD_COLS} FROM ai_interaction_records ${conds.length ? `WHERE ${conds.join(' AND ')}` : ''}
           ORDER BY created_at DESC, record_id DESC LIMIT $${bind.length}`,
          bind,
        );
        return rows.map(toRecord);
      },
    },
  };
}
