import type { StepResult } from '../lib/protocol.js';
import type { BenchDb } from '../lib/bench-db.js';
import { seedHistory } from '../lib/seed.js';
import { S4, s2Groups, s4Groups } from './fixtures.js';
import { firstRate, sweep, sweepResult, type Log, type Options, type Target, type TargetResult } from './common.js';

/**
 * S3: POST /api/message/send from 100 users (each in its own group), open loop,
 * keep-alive sockets; latency = intended send time -> 201 received.
 * Knee = highest rate with p99 ≤ 20 ms and every request 2xx; target: the knee ≥ 2,000/s.
 */
export async function runS3(t: Target, o: Options, log: Log): Promise<TargetResult> {
  const groups = s2Groups();
  const users = Object.entries(groups)
    .slice(0, 100)
    .map(([group_id, members]) => ({ user_id: members[1]!, group_id }));
  const call = (rate: number, durationMs: number): Promise<StepResult> =>
    t.loadgen.call<StepResult>({
      cmd: 'httpStep',
      baseUrl: t.server.baseUrl,
      secret: t.secret!,
      mode: 'send',
      rate,
      durationMs,
      drainMs: o.drainMs + 2000,
      maxSockets: 100,
      users,
    });
  await call(200, 1000); // warm-up
  const sw = await sweep({
    target: t,
    start: firstRate(o, 1024), // 2,000 ÷ 1.25^3
    maxSteps: o.maxSteps,
    p99LimitMs: 20,
    wantAcks: false,
    label: 'S3 service',
    log,
    run: (rate) => call(rate, o.stepMs),
  });
  return sweepResult(sw, 'sends/s at p99 ≤ 20 ms');
}

/**
 * Bulk-loads `rows` messages into the S4 groups straight into the service's
 * tables (multi-row INSERT … SELECT generate_series on PostgreSQL, a recursive
 * CTE per group on SQLite), after the service migrated the schema, and sets
 * each group's seq counter.
 */
export async function loadHistory(db: BenchDb, rows: number, log: Log): Promise<Record<string, number>> {
  const groups = s4Groups();
  const names = Object.keys(groups);
  const perGroup = Math.floor(rows / names.length);
  const t0 = performance.now();
  await seedHistory(db, Object.fromEntries(names.map((g) => [g, groups[g]![0]!])), perGroup);
  const count = await db.count('messages');
  log(`  S4: loaded ${names.length * perGroup} history rows in ${Math.round(performance.now() - t0)} ms (messages table: ${count} rows)`);
  return Object.fromEntries(names.map((g) => [g, perGroup]));
}

/**
 * S4: GET /api/message/list?group_id&limit=50 (half newest page, half a random
 * older page via before_seq) by 100 readers on a table of `o.s4Rows` messages.
 * Knee = highest rate with p99 ≤ 20 ms and every request 2xx; target ≥ 5,000/s.
 */
export async function runS4(t: Target, o: Options, log: Log): Promise<TargetResult> {
  const groups = s4Groups();
  await t.setGroups(groups);
  const maxSeq = await loadHistory(t.db!, o.s4Rows, log);
  const tableRows = await t.db!.count('messages');
  const users = Object.entries(groups).map(([group_id, m]) => ({ user_id: m[0]!, group_id, maxSeq: maxSeq[group_id] }));
  const call = (rate: number, durationMs: number): Promise<StepResult> =>
    t.loadgen.call<StepResult>({
      cmd: 'httpStep',
      baseUrl: t.server.baseUrl,
      secret: t.secret!,
      mode: 'list',
      rate,
      durationMs,
      drainMs: o.drainMs + 2000,
      maxSockets: 64,
      users,
    });
  // warm-up (JIT, connection pools, and the freshly loaded table's pages: the first pass over them sets hint bits)
  await call(800, 3000);
  const sw = await sweep({
    target: t,
    start: firstRate(o, 1638), // 5,000 ÷ 1.25^5
    maxSteps: o.maxSteps,
    p99LimitMs: 20,
    wantAcks: false,
    label: 'S4 service',
    log,
    run: (rate) => call(rate, o.stepMs),
  });
  return sweepResult(sw, 'requests/s at p99 ≤ 20 ms', {
    extra: { table_rows: tableRows, groups: S4.groups, rows_per_group: Math.floor(o.s4Rows / S4.groups) },
  });
}
