import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import t, { type Test } from 'tap';
import { parseStorageOptions, type SequelizeStorageOptions } from '../../../adapters/storage/sequelize/sequelize.schema.js';
import { SequelizeStorage } from '../../../adapters/storage/sequelize/sequelize.storage.js';
import { PgExecutor, sslOption, timestamptzToIso } from '../../../adapters/storage/sequelize/pg-executor.js';
import { claimDueSql } from '../../../adapters/storage/sequelize/sql-repositories.js';
import { ConflictError, UnavailableError } from '../../../kernel/errors.js';
import { silentLogger } from '../../../kernel/logger.js';
import { as, bootKernel, seedGroup } from '../../helpers/boot.js';
import { createTestDatabase, SERVICES } from '../../helpers/services.js';
import { group, member, msg, seed, storageContract, user } from '../../contracts/storage.contract.js';

t.setTimeout(240_000);

const ROOT = resolve(fileURLToPath(import.meta.url), '..', '..', '..', '..', '..');

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'im-storage-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function openStorage(t: Test, url: string, extra: Partial<Record<keyof SequelizeStorageOptions, unknown>> = {}): Promise<SequelizeStorage> {
  const s = new SequelizeStorage(parseStorageOptions({ url, ...extra }), silentLogger);
  t.teardown(() => s.stop());
  await s.open();
  return s;
}

/** A port nobody listens on. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** A TCP proxy in front of PostgreSQL that the test can take down and bring back (same port). */
class PgProxy {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  port = 0;
  async up(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(SERVICES.postgres.port, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r, j) => {
      server.once('error', j);
      server.listen(this.port, '127.0.0.1', () => r());
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }
  async down(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const srv = this.server;
    this.server = null;
    if (srv) await new Promise<void>((r) => srv.close(() => r()));
  }
}

function viaPort(url: string, port: number): string {
  const u = new URL(url);
  u.port = String(port);
  return u.toString();
}

/** Retries `fn` until it resolves (generous limit: never a timed assertion). */
async function eventually<T>(fn: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > until) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolveRun) => {
    const child = spawn(cmd, args, { cwd: ROOT, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolveRun({ code, stdout, stderr }));
  });
}

const cleanEnv = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME };
  return env;
};

// ---------------------------------------------------------------- contract

await storageContract(t, 'sqlite ::memory:', async (st) => openStorage(st, 'sqlite::memory:'));
await storageContract(t, 'sqlite file', async (st) => openStorage(st, `sqlite:${join(tempDir(st), 'nested', 'dir', 'im.sqlite')}`));

const pgProbe = await createTestDatabase(t);
if (pgProbe) {
  // One database for the contract (migrated once), emptied before each subtest.
  await openStorage(t, pgProbe);
  const admin = new pg.Client({ connectionString: pgProbe });
  await admin.connect();
  t.teardown(() => admin.end());
  await storageContract(t, 'postgresql', async (st) => {
    const s = await openStorage(st, pgProbe);
    await admin.query('TRUNCATE ai_interaction_records, messages, group_members, group_seq_counters, "groups", users CASCADE');
    return s;
  });
}

// ---------------------------------------------------------------- options

t.test('options: validated, errors name the setting', async (t) => {
  t.throws(() => parseStorageOptions({}), /^url: .*required/);
  t.throws(() => parseStorageOptions({ url: 'mysql://x' }), /^url: must be 'sqlite:<path>'/);
  t.throws(() => parseStorageOptions({ url: 'sqlite::memory:', replicas: ['postgres://h/db'] }), /^replicas: read replicas need PostgreSQL/);
  t.throws(() => parseStorageOptions({ url: 'postgres://h/db', replicas: ['http://x'] }), /^replicas\.0: must be a 'postgres:\/\/' URL/);
  t.throws(() => parseStorageOptions({ url: 'sqlite::memory:', pool: { max: 2, min: 3 } }), /^pool\.min/);
  t.throws(() => parseStorageOptions({ url: 'sqlite::memory:', batch: { maxSize: 0 } }), /^batch\.maxSize/);
  t.throws(() => parseStorageOptions({ url: 'sqlite::memory:', colour: 'red' }), /^colour: is not allowed/);
  t.throws(() => parseStorageOptions({ url: 'postgres://h/db', pool: { max: 2 }, batch: { concurrency: 3 } }), /^batch\.concurrency: must not exceed pool\.max/);
  t.same(sslOption('postgres://h/db'), {});
  t.same(sslOption('postgres://h/db?sslmode=require'), { ssl: { rejectUnauthorized: false } });
  t.same(sslOption('postgres://h/db?sslmode=verify-full'), { ssl: { rejectUnauthorized: true } });
  const o = parseStorageOptions({ url: 'postgres://u:p@h:5433/db', replicas: ['postgres://h2/db'] });
  t.same(
    { migrate: o.migrate, logSql: o.logSql, pool: o.pool, batch: o.batch },
    { migrate: true, logSql: false, pool: { max: 10, min: 0, acquireMs: 10_000, idleMs: 10_000, backgroundMax: 2 }, batch: { maxSize: 256, concurrency: 2 } },
    'defaults',
  );
  const { c } = await bootKernel(t, { adapters: { storage: 'sequelize' }, config: { storage: { url: 'sqlite::memory:' } } });
  t.ok(c.storage instanceof SequelizeStorage, 'the registry maps adapters.storage=sequelize');
  await t.rejects(
    bootKernel(t, { adapters: { storage: 'sequelize' }, config: { storage: { url: 'sqlite::memory:', replicas: ['postgres://h/db'] } } }),
    /storage: replicas: read replicas need PostgreSQL/,
    'a bad option fails the start with one line naming the setting',
  );
});

// ---------------------------------------------------------------- migrations

t.test('migrations: versioned, applied once, by start-up and by npm run migrate', async (t) => {
  const dir = tempDir(t);
  const url = `sqlite:${join(dir, 'm.sqlite')}`;
  const first = new SequelizeStorage(parseStorageOptions({ url }), silentLogger);
  t.same(await first.open(), ['0001-initial-schema', '0002-ai-records-pending-index'], 'start-up applies pending migrations');
  await first.stop();
  await first.stop();
  t.pass('stop is idempotent');
  const second = await openStorage(t, url);
  t.same(await second.open(), [], 'nothing left to apply');
  const sqlite = second.sequelize!;
  const rows = await sqlite.query<{ name: string }>('SELECT name FROM schema_migrations', { type: 'SELECT' as never });
  t.same(rows.map((r) => r.name), ['0001-initial-schema', '0002-ai-records-pending-index'], 'recorded in schema_migrations');
  const pragma = await sqlite.query<{ journal_mode: string }>('PRAGMA journal_mode', { type: 'SELECT' as never });
  t.equal(pragma[0]?.journal_mode, 'wal', 'SQLite files use WAL');
  const busy = await sqlite.query<{ timeout: number }>('PRAGMA busy_timeout', { type: 'SELECT' as never });
  t.equal(busy[0]?.timeout, 5000, 'busy timeout set');
  const noMigrate = await openStorage(t, `sqlite:${join(dir, 'empty.sqlite')}`, { migrate: false });
  t.same(await noMigrate.open(), [], 'migrate: false applies nothing');

  const migrateJs = join(ROOT, 'build', 'bin', 'migrate.js');
  const fresh = `sqlite:${join(dir, 'cli.sqlite')}`;
  const cli = (url: string) => run(process.execPath, [migrateJs], { ...cleanEnv(), IM_DATABASE_URL: url });
  const [[r1, r2], r3, r4] = await Promise.all([
    cli(fresh).then(async (a) => [a, await cli(fresh)] as const),
    closedPort().then((port) => cli(`postgres://postgres@127.0.0.1:${port}/x`)),
    cli('nonsense'),
  ]);
  t.equal(r1.code, 0, `migrate exits 0 (${r1.stderr.trim()})`);
  t.match(r1.stdout, /applied 0001-initial-schema\napplied 0002-ai-records-pending-index\n/, 'prints what ran');
  t.equal(r2.code, 0);
  t.match(r2.stdout, /up to date/, 'second run: nothing to do');
  t.equal(r3.code, 1, 'unreachable database: exit 1');
  t.equal(r3.stderr.trim().split('\n').length, 1, 'one line');
  t.match(r3.stderr, /^migrate failed: storage unavailable/);
  t.notMatch(r3.stderr, /SELECT|INSERT|CREATE/, 'no SQL');
  t.equal(r4.code, 1, 'bad url: exit 1');
  t.match(r4.stderr, /^migrate failed: storage\.url: must be/);
});

// ---------------------------------------------------------------- kernel

t.test('whole kernel on sequelize storage (SQLite file): send, replay, list through chatService', async (t) => {
  const url = `sqlite:${join(tempDir(t), 'kernel.sqlite')}`;
  const { c } = await bootKernel(t, { adapters: { storage: 'sequelize' }, config: { storage: { url } } });
  await seedGroup(c, 'kg', ['p1', 'doc1']);
  const stored: unknown[] = [];
  c.bus.subscribe('message.stored', (e) => void stored.push(e));
  const sends = await Promise.all(
    Array.from({ length: 20 }, (_, i) => c.chatService.send(as(i % 2 ? 'p1' : 'doc1'), { group_id: 'kg', msg_content: `m${i} 你好 😀` }, { transport: 'test' })),
  );
  t.same(sends.map((s) => s.message.seq).sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i + 1));
  const a = await c.chatService.send(as('p1'), { group_id: 'kg', msg_content: 'x', client_msg_id: 'k-1' }, { transport: 'test' });
  const b = await c.chatService.send(as('p1'), { group_id: 'kg', msg_content: 'x', client_msg_id: 'k-1' }, { transport: 'test' });
  t.equal(a.created, true);
  t.equal(b.created, false);
  t.same(b.message, a.message);
  const page = await c.chatService.list(as('doc1'), { group_id: 'kg', limit: 5 });
  t.same(page.messages.map((m) => m.seq), [17, 18, 19, 20, 21]);
  t.equal(page.has_more, true);
  t.same(await c.chatService.get(as('p1'), a.message.message_id), a.message);
  await c.storage.ping();
});

// ---------------------------------------------------------------- PostgreSQL only

t.test('timestamptz text -> ISO string without a Date round trip', async (t) => {
  t.equal(timestamptzToIso('2026-11-24 02:17:53.9+00'), '2026-11-24T02:17:53.900Z');
  t.equal(timestamptzToIso('2026-11-24 02:17:53+00'), '2026-11-24T02:17:53.000Z');
  t.equal(timestamptzToIso('2026-11-24 02:17:53.123456+00'), '2026-11-24T02:17:53.123Z', 'microseconds cut to milliseconds');
  t.equal(timestamptzToIso('2026-11-24 03:17:53.5+01'), '2026-11-24T02:17:53.500Z', 'another zone goes through pg\'s parser');
});

t.test('postgresql', { skip: pgProbe ? false : 'PostgreSQL unreachable' }, async (t) => {
  t.test('batches carry any text; prepared statements can be turned off', async (t) => {
    const url = (await createTestDatabase(t))!;
    for (const preparedStatements of [true, false]) {
      const s = await openStorage(t, url, { preparedStatements });
      if (preparedStatements) await seed(s);
      const contents = ['{"a\\b",}', 'quote " and \\ backslash', 'NULL', '', 'ünïcødé ✓ 病历', '{}', ' spaces '];
      const stored = await Promise.all(contents.map((c, i) => s.messages.append(msg('g1', 'u1', { msg_content: c, client_msg_id: i % 2 ? null : `k${preparedStatements}${i}` }))));
      t.ok(s.batchStats.largestBatch > 1, 'written as a batch');
      const page = await s.messages.list('g1', { limit: 50 });
      const got = page.messages.slice(-contents.length);
      t.same(got.map((m) => m.msg_content), contents, `contents round-trip (preparedStatements ${preparedStatements})`);
      t.same(got.map((m) => m.client_msg_id), stored.map((r) => r.message.client_msg_id));
      t.same(got.map((m) => m.created_at), stored.map((r) => r.message.created_at), 'created_at comes back as the ISO string stored');
      t.same(await s.members.get('g1', 'u1'), (await s.members.list('g1')).find((m) => m.user_id === 'u1'));
    }
  });

  t.test('whole kernel on PostgreSQL', async (t) => {
    const url = await createTestDatabase(t);
    const { c } = await bootKernel(t, {
      plugins: ['auth', 'users', 'groups', 'chat', 'metrics'],
      adapters: { storage: 'sequelize' },
      config: { storage: { url } },
    });
    await seedGroup(c, 'pg', ['p1', 'doc1']);
    const r = await c.chatService.send(as('p1'), { group_id: 'pg', msg_content: 'hello', client_msg_id: 'c' }, { transport: 'test' });
    t.equal(r.message.seq, 1);
    t.same((await c.chatService.list(as('doc1'), { group_id: 'pg', after_seq: 0 })).messages, [r.message]);
    const text = await c.metricsRegistry.metrics();
    t.match(text, /im_storage_pool_connections\{pool="write",state="in_use"\} \d+/, 'pool gauge exported');
    t.match(text, /im_storage_pool_connections\{pool="write",state="idle"\} [1-9]/, 'the pool holds idle connections after use');
  });

  t.test('errors: typed, readable, without SQL or bind values', async (t) => {
    const url = (await createTestDatabase(t))!;
    const s = await openStorage(t, url);
    await seed(s);
    const err = await s.messages.append(msg('g1', 'u1', { msg_type: 'X'.repeat(40) as never, msg_content: 'secret-medical-text' })).catch((e: unknown) => e);
    t.ok(err instanceof Error && (err as { code?: string }).code === 'INTERNAL', 'driver error -> INTERNAL');
    const dump = JSON.stringify({ message: (err as Error).message, cause: String((err as Error).cause), all: err, causeProps: { ...((err as Error).cause as object) } });
    t.notMatch(dump, /INSERT|SELECT|secret-medical-text/, 'neither SQL nor values in the error or its cause');
    await t.rejects(s.members.add(member('g1', 'nobody')), { code: 'NOT_FOUND', message: "group 'g1' or user 'nobody' not found" });
    await t.rejects(s.members.add(member('g1', 'u1')), { code: 'CONFLICT', message: "user 'u1' is already a member of 'g1'" });
    await t.rejects(s.groups.create(group('g1', 'u1')), { code: 'CONFLICT', message: "group 'g1' already exists" });
  });

  t.test('schema: tables and indexes of the migration', async (t) => {
    const url = (await createTestDatabase(t))!;
    await openStorage(t, url);
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    t.teardown(() => c.end());
    const idx = (await c.query<{ indexname: string }>("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")).rows.map((r) => r.indexname);
    for (const name of [
      'messages_group_seq_uq',
      'messages_client_msg_uq',
      'messages_created_idx',
      'group_members_group_user_uq',
      'group_members_user_idx',
      'ai_records_user_message_uq',
      'ai_records_status_due_idx',
      'ai_records_group_created_idx',
      'ai_records_pending_idx',
    ]) {
      t.ok(idx.includes(name), `index ${name}`);
    }
    const cols = (await c.query<{ column_name: string }>("SELECT column_name FROM information_schema.columns WHERE table_name = 'ai_interaction_records'")).rows.map((r) => r.column_name);
    for (const col of ['attempts', 'next_attempt_at', 'lease_owner', 'lease_until']) t.ok(cols.includes(col), `column ${col}`);
  });

  t.test('claimDue reads the pending records only, whatever the statistics say (partial index)', async (t) => {
    const url = (await createTestDatabase(t))!;
    const s = await openStorage(t, url);
    await seed(s);
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    t.teardown(() => c.end());
    const insert = (from: number, to: number, status: number) =>
      c.query(
        `INSERT INTO ai_interaction_records (record_id, group_id, user_message_id, ai_service_url, status, attempts, created_at, updated_at)
         SELECT 'r' || g, 'g1', 'm' || g, 'http://ai', $3, 0, now() - (($2::int - g) || ' ms')::interval, now() FROM generate_series($1::int, $2::int) g`,
        [from, to, status],
      );
    // statistics taken while the table was young and all pending, then many finished records
    await insert(1, 50, 0);
    await c.query('ANALYZE ai_interaction_records');
    await c.query('UPDATE ai_interaction_records SET status = 1');
    await insert(51, 20_000, 1);
    await insert(20_001, 20_010, 0);
    const now = new Date().toISOString();
    const plan = await c.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${claimDueSql('postgres')}`, ['x', now, now, 32]);
    const text = JSON.stringify(plan.rows[0]!['QUERY PLAN']);
    t.match(text, /"Index Name":"ai_records_pending_idx"/, 'the claim reads ai_records_pending_idx');
    t.notMatch(text, /"Node Type":"Seq Scan"/, 'no sequential scan of the records');
    const claimed = await s.aiRecords.claimDue({ owner: 'o', now, lease_until: new Date(Date.now() + 60_000).toISOString(), limit: 32 });
    t.same(claimed.map((r) => r.record_id), Array.from({ length: 10 }, (_, i) => `r${20_001 + i}`), 'the pending ones, oldest first');
  });

  t.test('100 concurrent appends into one group (two instances): seq gap-free, in commit order; group commit batches', async (t) => {
    const url = (await createTestDatabase(t))!;
    // small batches: many commits from two instances race for the same group
    const s1 = await openStorage(t, url, { batch: { maxSize: 8 } });
    const s2 = await openStorage(t, url, { batch: { maxSize: 8, concurrency: 3 } });
    await seed(s1);
    // A reader polling with after_seq while the appends commit must never see a gap
    // (seeing seq n means every seq <= n is visible: commit order).
    let seen = 0;
    let gapSeen = false;
    let writing = true;
    const poller = (async () => {
      while (writing || seen < 100) {
        const page = await s1.messages.list('g1', { after_seq: seen, limit: 200 });
        for (const m of page.messages) {
          if (m.seq !== seen + 1) gapSeen = true;
          seen = m.seq;
        }
        await new Promise((r) => setImmediate(r));
      }
    })();
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 ? s1 : s2).messages.append(msg('g1', i % 3 ? 'u1' : 'doc1'))));
    writing = false;
    await poller;
    t.equal(gapSeen, false, 'a concurrent reader never saw a gap');
    t.ok(results.every((r) => r.created));
    t.same(
      results.map((r) => r.message.seq).sort((a, b) => a - b),
      Array.from({ length: 100 }, (_, i) => i + 1),
      'seq 1..100, no gap, no duplicate',
    );
    const page = await s1.messages.list('g1', { after_seq: 0, limit: 200 });
    t.same(page.messages.map((m) => m.seq), Array.from({ length: 100 }, (_, i) => i + 1));
    t.same(new Set(page.messages.map((m) => m.message_id)), new Set(results.map((r) => r.message.message_id)));
    t.ok(s1.batchStats.batches < s1.batchStats.items, `instance 1 grouped ${s1.batchStats.items} appends into ${s1.batchStats.batches} commits`);
    t.ok(s1.batchStats.largestBatch <= 8 && s2.batchStats.largestBatch <= 8, 'batch.maxSize holds');

    // concurrent membership checks are answered by one coalesced statement: each gets its own answer
    const pairs = [['g1', 'u1'], ['g1', 'u2'], ['g2', 'u2'], ['g2', 'doc1'], ['nope', 'u1'], ['g1', 'doc1']] as const;
    const got = await Promise.all(pairs.map(([g, u]) => s1.members.get(g, u)));
    t.same(
      got.map((m) => (m ? `${m.group_id}/${m.user_id}/${m.user_role}` : null)),
      ['g1/u1/PATIENT', null, 'g2/u2/PATIENT', null, null, 'g1/doc1/DOCTOR'],
      'coalesced members.get',
    );

    const same = msg('g2', 'u2', { client_msg_id: 'storm' });
    const storm = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? s1 : s2).messages.append({ ...same })));
    t.equal(storm.filter((r) => r.created).length, 1, '20 identical concurrent appends over two instances: one created');
    t.equal(new Set(storm.map((r) => r.message.message_id)).size, 1, 'all return the same message');
    t.equal(storm[0]!.message.seq, 1);

    // a bad item in a batch: only its caller fails
    const dup = msg('g1', 'u1');
    await s1.messages.append(dup);
    const mixed = await Promise.allSettled([
      s1.messages.append(msg('g1', 'u1')),
      s1.messages.append({ ...dup, client_msg_id: 'other' }),
      s1.messages.append(msg('g1', 'u1')),
    ]);
    t.equal(mixed[0]!.status, 'fulfilled');
    t.equal(mixed[2]!.status, 'fulfilled');
    t.ok(mixed[1]!.status === 'rejected' && mixed[1]!.reason instanceof ConflictError, 'the duplicate message_id gets its own ConflictError');
    const seqAll = (await s1.messages.list('g1', { after_seq: 0, limit: 200 })).messages.map((m) => m.seq);
    t.same(seqAll, Array.from({ length: 103 }, (_, i) => i + 1), 'still gap-free after the failed item');
  });

  t.test('read replicas: history reads use them, everything else the primary', async (t) => {
    const url = (await createTestDatabase(t))!;
    const good = await openStorage(t, url, { replicas: [url] });
    await seed(good);
    const m = (await good.messages.append(msg('g1', 'u1'))).message;
    t.same((await good.messages.list('g1', { limit: 5 })).messages, [m]);
    t.same(await good.messages.get(m.message_id), m);
    t.ok(good.poolStats()!.some((p) => p.pool === 'read'), 'a read pool exists');

    // replica down: list/get fail as unavailable; sends, membership and transactions still work on the primary
    const dead = await openStorage(t, url, { replicas: [viaPort(url, await closedPort())] });
    await t.rejects(dead.messages.list('g1', { limit: 5 }), UnavailableError, 'messages.list goes to the replica');
    await t.rejects(dead.messages.get(m.message_id), UnavailableError, 'messages.get goes to the replica');
    t.ok(await dead.members.get('g1', 'u1'), 'members.get uses the primary');
    t.equal((await dead.messages.append(msg('g1', 'u1'))).message.seq, 2, 'append uses the primary');
    t.ok(await dead.transaction((tx) => tx.messages.list('g1', { limit: 1 })), 'reads inside a transaction use the primary');
    await dead.ping();
  });

  t.test('background view: work no user waits on never waits for a write connection', async (t) => {
    const url = (await createTestDatabase(t))!;
    const s = await openStorage(t, url, { pool: { max: 1, backgroundMax: 1 }, batch: { concurrency: 1 } });
    await seed(s);
    const m = (await s.messages.append(msg('g1', 'u1'))).message;
    // hold the only write connection, as a burst of appends would
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let holding!: () => void;
    const isHolding = new Promise<void>((r) => (holding = r));
    const tx = s.transaction(async () => {
      holding();
      await held;
    });
    await isHolding;
    try {
      const pending = s.users.get('u1');
      const bg = s.background;
      const record = await bg.aiRecords.createIfAbsent({
        record_id: 'rec-bg',
        group_id: 'g1',
        user_message_id: m.message_id,
        ai_service_url: 'http://ai.local/reply',
        created_at: m.created_at,
      });
      t.ok(record.created, 'an AI record is written while the write pool is taken');
      t.equal((await bg.aiRecords.get('rec-bg'))?.status, 0, 'and read back');
      t.equal((await bg.members.list('g1')).length, 2, 'members are read');
      t.equal((await bg.users.getMany(['u1', 'doc1'])).length, 2, 'users are read');
      t.same((await bg.messages.list('g1', { limit: 5 })).messages, [m], 'history is read');
      t.equal((await bg.messages.listRecent(m.created_at, 10)).length, 1, 'recovery scans read');
      const stats = s.poolStats()!;
      t.match(stats.find((p) => p.pool === 'write'), { using: 1, waiting: 1 }, 'meanwhile a plain read waits for the write pool');
      t.ok(stats.some((p) => p.pool === 'background'), 'the background pool is listed');
      release();
      t.ok(await pending, 'the waiting read completes once the connection is free');
    } finally {
      release();
      await tx;
    }
  });

  t.test('sessions: UTC everywhere; background commits do not wait for the WAL flush and plan with their values', async (t) => {
    const url = (await createTestDatabase(t))!;
    const pool = { url, max: 1, min: 0, acquireMs: 5000, idleMs: 1000 };
    const x = new PgExecutor({ primary: pool, background: pool, replicas: [], prepare: false, logSql: false }, silentLogger);
    t.teardown(() => x.close());
    t.same(await x.query('SHOW TimeZone', []), [{ TimeZone: 'UTC' }]);
    t.same(await x.query('SHOW synchronous_commit', []), [{ synchronous_commit: 'on' }], 'appends and every user request: durable at commit');
    t.same(await x.query('SHOW TimeZone', [], { background: true }), [{ TimeZone: 'UTC' }]);
    t.same(await x.query('SHOW synchronous_commit', [], { background: true }), [{ synchronous_commit: 'off' }], 'background work: asynchronous commit');
    t.same(await x.query('SHOW plan_cache_mode', []), [{ plan_cache_mode: 'auto' }], 'appends: prepared statements may use a generic plan');
    t.same(await x.query('SHOW plan_cache_mode', [], { background: true }), [{ plan_cache_mode: 'force_custom_plan' }], 'background work: planned for its values and the tables as they are now');
  });

  t.test('outage: UnavailableError, nothing half-written, recovery without restart', async (t) => {
    const url = (await createTestDatabase(t))!;
    const dbName = new URL(url).pathname.slice(1);
    const s = await openStorage(t, url);
    await seed(s);
    // A fresh admin connection per kill (with an error listener), so a hiccup of
    // the admin session itself can never surface as an uncaught error.
    const killBackends = async (): Promise<void> => {
      const admin = new pg.Client({ connectionString: SERVICES.postgres.url });
      admin.on('error', () => undefined);
      await admin.connect();
      try {
        await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [dbName]);
      } finally {
        await admin.end();
      }
    };

    // backend killed in the middle of a transaction
    const err = await s
      .transaction(async (tx) => {
        await tx.groups.create(group('half', 'u1'));
        await tx.members.add(member('half', 'u1'));
        await killBackends();
        await tx.members.add(member('half', 'u2'));
      })
      .catch((e: unknown) => e);
    t.ok(err instanceof UnavailableError, 'a transaction whose connection dies -> UnavailableError');
    t.notMatch((err as Error).message, /INSERT|SELECT|group_members/, 'no SQL in the message');
    const afterKill = await eventually(() => s.groups.get('half'));
    t.equal(afterKill, null, 'nothing of it was written; the pool replaced the dead connection');
    await killBackends();
    await eventually(() => s.ping());
    t.equal((await s.messages.append(msg('g1', 'u1'))).message.seq, 1, 'appends work again');

    // the database goes away entirely (proxy down), then comes back on the same address
    const proxy = new PgProxy();
    await proxy.up();
    t.teardown(() => proxy.down());
    const viaProxy = await openStorage(t, viaPort(url, proxy.port), { pool: { acquireMs: 2000 } });
    t.equal((await viaProxy.messages.append(msg('g1', 'u1'))).message.seq, 2);
    await proxy.down();
    const outage = await Promise.allSettled(Array.from({ length: 10 }, () => viaProxy.messages.append(msg('g1', 'u1'))));
    t.ok(
      outage.every((r) => r.status === 'rejected' && r.reason instanceof UnavailableError),
      'every caller of the failed batch gets UnavailableError',
    );
    await t.rejects(viaProxy.ping(), UnavailableError, 'ping -> UnavailableError');
    await t.rejects(viaProxy.users.create(user('late')), UnavailableError);
    t.equal(await s.users.get('late'), null, 'nothing written during the outage');
    t.same(
      (await s.messages.list('g1', { after_seq: 0, limit: 50 })).messages.map((m) => m.seq),
      [1, 2],
      'no message and no seq consumed by the failed batch',
    );
    await proxy.up();
    await eventually(() => viaProxy.ping());
    t.equal((await viaProxy.messages.append(msg('g1', 'u1'))).message.seq, 3, 'recovered by itself: seq continues without gap');
  });

  t.test('unreachable at start: start fails with UnavailableError', async (t) => {
    const s = new SequelizeStorage(parseStorageOptions({ url: `postgres://postgres@127.0.0.1:${await closedPort()}/x` }), silentLogger);
    t.teardown(() => s.stop());
    await t.rejects(s.open(), UnavailableError);
    await t.rejects(s.messages.append(msg('g', 'u')), UnavailableError);
  });
});
