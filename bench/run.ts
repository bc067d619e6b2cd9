/**
 * `npm run bench [-- --quick] [--profile] [--only S1,S4] [--targets service,bare-ws,socketio]`
 *
 * Starts the IM service (PostgreSQL, a fresh database dropped at the end), the
 * bare-ws and Socket.IO peers, each as a separate process bound to 127.0.0.1,
 * drives them from a separate load-generator process, and writes
 * bench/results/<date>.json and .md. Everything it starts, it stops.
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { PLUGINS } from '../bin/registry.js';
import { AdminApi } from './lib/admin.js';
import { BUILD_DIR, Loadgen, freePort, killAllChildren, startPeer, startService, type ServerProc } from './lib/children.js';
import { postgresVersion } from './lib/db.js';
import { postgresDb, sqliteDb, type BenchDb } from './lib/bench-db.js';
import { CLK_TCK, fdSoftLimit, listProcesses, machineInfo, machineTicks, round } from './lib/proc.js';
import { fmt, writeReport, type BenchReport } from './lib/report.js';
import { seedGroups, seedUsers } from './lib/seed.js';
import { addRatios, firstRate, type Options, type ScenarioReport, type Target, type TargetName, type TargetResult } from './scenarios/common.js';
import { closeSockets, runFanout } from './scenarios/fanout.scenario.js';
import { AI_USER, MAX_USERS, s1Groups, s2Groups, user } from './scenarios/fixtures.js';
import { runS3, runS4 } from './scenarios/http.scenario.js';
import { runS5 } from './scenarios/idle.scenario.js';
import { FakeAi, runS6, runS7 } from './scenarios/ingress.scenario.js';

/** A TCP connect to the URL's host:port answers within 2 s. */
async function tcpReachable(url: string): Promise<boolean> {
  const u = new URL(url);
  const { connect } = await import('node:net');
  return new Promise((resolve) => {
    const s = connect({ host: u.hostname, port: Number(u.port) });
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.setTimeout(2000, () => done(false));
  });
}

const AMQP_URL = process.env.BENCH_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const NATS_URL = process.env.BENCH_NATS_URL ?? 'nats://127.0.0.1:4222';
const RESULTS_DIR = join(BUILD_DIR, '..', 'bench', 'results');

/** A bad command-line option: reported in one line, without a stack. */
class UsageError extends Error {}

function parseArgs(argv: string[]): Options {
  const has = (f: string): boolean => argv.includes(f);
  const val = (f: string): string | undefined => {
    const i = argv.indexOf(f);
    if (i >= 0) return argv[i + 1];
    const eq = argv.find((a) => a.startsWith(`${f}=`));
    return eq?.slice(f.length + 1);
  };
  /** A positive number, or null when the option is absent; anything else stops the run with its name. */
  const positive = (f: string, v: string | undefined): number | null => {
    if (v === undefined) return null;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${f} must be a positive number (got '${v}')`);
    return n;
  };
  const quick = has('--quick');
  const only = val('--only');
  const targets = (val('--targets') ?? 'service,bare-ws,socketio').split(',').map((s) => s.trim()) as TargetName[];
  return {
    quick,
    profile: has('--profile'),
    stepMs: Number(val('--step-ms') ?? (quick ? 1200 : 5000)),
    drainMs: quick ? 1200 : 2500,
    maxSteps: Number(val('--max-steps') ?? (quick ? 3 : 10)),
    startRate: positive('--start-rate', val('--start-rate')),
    s4Rows: Number(val('--s4-rows') ?? (quick ? 100_000 : 1_000_000)),
    s5Connections: Number(val('--s5-connections') ?? (quick ? 2000 : 15_000)),
    only: only ? new Set(only.split(',').map((s) => s.trim().toUpperCase())) : null,
    targets: new Set(targets),
    storage: val('--storage') === 'sqlite' ? 'sqlite' : 'postgres',
  };
}

const t0 = performance.now();
const log = (s: string): void => {
  process.stdout.write(`[${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${s}\n`);
};

function baseReports(o: Options): ScenarioReport[] {
  const q = o.quick ? ' (quick)' : '';
  return [
    { id: 'S1', title: 'fan-out, 10 groups × 100 members online, WS sends', target_text: '≥ 100,000 deliveries/s at p99 ≤ 50 ms; ≥ 0.5× bare ws, ≥ 2× Socket.IO', met: null, results: {}, notes: [] },
    { id: 'S2', title: 'persisted sends, 1,000 groups × 10 members, 1,000 senders', target_text: '≥ 5,000 messages/s stored and delivered, p99 ≤ 50 ms', met: null, results: {}, notes: [] },
    { id: 'S3', title: 'HTTP send, 100 concurrent users', target_text: 'p99 ≤ 20 ms at 2,000 sends/s', met: null, results: {}, notes: [] },
    { id: 'S4', title: `history page (limit 50) on a ${o.s4Rows.toLocaleString('en-US')}-message table${q}`, target_text: '≥ 5,000 requests/s, p99 ≤ 20 ms', met: null, results: {}, notes: [] },
    { id: 'S5', title: `idle authenticated WS connections (${o.s5Connections.toLocaleString('en-US')}${q})`, target_text: '15,000 connections, ≤ 20 KB RSS each', met: null, results: {}, notes: [] },
    { id: 'S6-amqp', title: 'AMQP ingress, persisted and delivered', target_text: '≥ 10,000 messages/s', met: null, results: {}, notes: [] },
    { id: 'S6-nats', title: 'NATS ingress, persisted and delivered', target_text: '≥ 10,000 messages/s', met: null, results: {}, notes: [] },
    { id: 'S7', title: 'AI layer on, fake AI answering in 200 ms', target_text: "S2's rate with every patient message forwarded; send p99 within 20 %", met: null, results: {}, notes: [] },
  ];
}

function rolesFor(getServer: () => ServerProc | null, loadgen: () => Loadgen | null, dbName: string | undefined, brokers: () => boolean) {
  return (): Record<string, number[]> => {
    const procs = listProcesses();
    const pg = procs
      .filter((p) => p.comm === 'postgres')
      .filter((p) => (dbName && p.cmdline.includes(` ${dbName} `)) || !/\(\d+\)|\[local\]/.test(p.cmdline))
      .map((p) => p.pid);
    const br = brokers() ? procs.filter((p) => p.comm === 'beam.smp' || p.comm === 'nats-server').map((p) => p.pid) : [];
    const s = getServer();
    const l = loadgen();
    return { server: s ? [s.pid] : [], loadgen: l ? [l.pid] : [], harness: [process.pid], postgres: pg, brokers: br };
  };
}

async function guard(rep: ScenarioReport, name: TargetName, fn: () => Promise<TargetResult>): Promise<TargetResult | undefined> {
  try {
    const r = await fn();
    rep.results[name] = r;
    return r;
  } catch (err) {
    const msg = (err as Error).message.split('\n')[0]!;
    log(`  ${rep.id} ${name} failed: ${msg}`);
    rep.results[name] = { figure: 0, unit: '', error: msg };
    return undefined;
  }
}

async function runService(o: Options, reports: Map<string, ScenarioReport>, want: (id: string) => boolean, notes: string[]): Promise<void> {
  const dbName = `bench_${Date.now()}_${randomBytes(2).toString('hex')}`;
  const tmp = mkdtempSync(join(tmpdir(), 'im-bench-'));
  currentTmp = tmp;
  const db = o.storage === 'sqlite' ? sqliteDb(join(tmp, `${dbName}.sqlite`)) : postgresDb(dbName);
  const secret = randomBytes(32).toString('hex');
  const profileDir = join(RESULTS_DIR, 'profiles');
  await db.create();
  currentDb = db;
  log(`service: ${db.kind} database ${db.name}`);
  let server: ServerProc | null = null;
  let loadgen: Loadgen | null = null;
  let brokersOn = false;
  const roles = rolesFor(() => server, () => loadgen, dbName, () => brokersOn);
  const core = ['auth', 'users', 'groups', 'chat', 'http', 'ws'];
  let usersMade = 0;
  let s2Made = false;
  /** S1's 1,000 users through the HTTP API (the real path), the rest bulk-seeded (see bench/lib/seed.ts). */
  const ensureUsers = async (t: Target, n: number): Promise<void> => {
    if (n <= usersMade) return;
    const ts = performance.now();
    const viaHttp = Math.max(0, Math.min(n, 1000) - usersMade);
    if (viaHttp) await t.admin!.createUsers(Array.from({ length: viaHttp }, (_, i) => ({ user_id: user(usersMade + i) })), 64);
    const from = usersMade + viaHttp;
    await seedUsers(db, [
      ...Array.from({ length: Math.max(0, n - from) }, (_, i) => ({ user_id: user(from + i) })),
      { user_id: AI_USER, user_role: 'AI_ASSISTANT' },
    ]);
    log(`  created ${n - usersMade} users (${viaHttp} through POST /api/user) in ${Math.round(performance.now() - ts)} ms`);
    usersMade = n;
  };
  const ensureS2 = async (): Promise<void> => {
    if (s2Made) return;
    const ts = performance.now();
    await seedGroups(db, s2Groups());
    log(`  seeded the 1,000 S2 groups in ${Math.round(performance.now() - ts)} ms`);
    s2Made = true;
  };
  const start = async (phase: string, plugins: string[], extraCfg: Record<string, unknown>, extraEnv: Record<string, string> = {}): Promise<Target> => {
    const cfgPath = join(tmp, `${phase}.json`);
    writeFileSync(
      cfgPath,
      JSON.stringify({
        http: { host: '127.0.0.1' },
        chat: { rateLimit: { points: 0 } },
        ...extraCfg,
      }),
    );
    const nodeArgs = o.profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=service-${phase}-${Date.now()}.cpuprofile`] : [];
    if (o.profile) mkdirSync(profileDir, { recursive: true });
    server = await startService({
      port: await freePort(),
      nodeArgs,
      env: {
        IM_DATABASE_URL: db.url,
        IM_JWT_SECRET: secret,
        IM_PLUGINS: plugins.join(','),
        IM_LOG_LEVEL: 'warn',
        IM_CONFIG: cfgPath,
        ...extraEnv,
      },
    });
    loadgen = new Loadgen();
    const admin = await AdminApi.create(server.baseUrl, secret);
    log(`service (${phase}): pid ${server.pid} on ${server.baseUrl}, plugins ${plugins.join(',')}`);
    return {
      name: 'service',
      kind: 'ws',
      server,
      loadgen,
      secret,
      admin,
      db,
      roles,
      // a few groups through POST /api/group/create (the real path); large sets bulk-seeded
      setGroups: (groups) => (Object.keys(groups).length <= 20 ? admin.createGroups(groups) : seedGroups(db, groups)),
    };
  };
  const stop = async (): Promise<void> => {
    await loadgen?.stop();
    loadgen = null;
    await server?.stop();
    server = null;
  };
  try {
    // ---- phase A: core + http + ws (+ the broker ingress plugins, idle until S6)
    const wantS6 = (k: 'amqp' | 'nats'): boolean => want(`S6-${k.toUpperCase()}`) || want('S6');
    const ing: ('amqp' | 'nats')[] = [];
    for (const k of ['amqp', 'nats'] as const) {
      if (!wantS6(k)) continue;
      const why = !PLUGINS[`${k}-ingress`]
        ? `the ${k}-ingress plugin is not in bin/registry.ts`
        : !(await tcpReachable(k === 'amqp' ? AMQP_URL : NATS_URL))
          ? `no broker at ${k === 'amqp' ? AMQP_URL : NATS_URL}`
          : null;
      if (why) reports.get(`S6-${k}`)!.notes.push(`not measured: ${why}`);
      else ing.push(k);
    }
    const aIds = ['S1', 'S2', 'S3', 'S4', 'S5'].filter(want);
    if (aIds.length || ing.length) {
      // nats.url via the config file: IM_NATS_URL would also switch on the NATS cluster bus, which no scenario measures
      const t = await start('core', [...core, ...ing.map((k) => `${k}-ingress`)], { amqp: { url: AMQP_URL }, nats: { url: NATS_URL } });
      await ensureUsers(t, Math.min(MAX_USERS, want('S5') ? Math.max(o.s5Connections, 11_100) : 11_100));
      if (want('S1')) await guard(reports.get('S1')!, 'service', () => runFanout('S1', t, o, log));
      await ensureS2();
      if (want('S3')) await guard(reports.get('S3')!, 'service', () => runS3(t, o, log));
      // S2 leaves its 10,000 sockets open for S6, which publishes to the same groups
      if (want('S2')) await guard(reports.get('S2')!, 'service', () => runFanout('S2', t, o, log, ing.length > 0));
      brokersOn = true;
      for (const k of ing) await guard(reports.get(`S6-${k}`)!, 'service', () => runS6(k, k === 'amqp' ? AMQP_URL : NATS_URL, t, o, log));
      brokersOn = false;
      await closeSockets(t);
      if (want('S4')) await guard(reports.get('S4')!, 'service', () => runS4(t, o, log));
      await stop();
    }
    // ---- S5 on a fresh process, so RSS growth is the connections' and not garbage of earlier scenarios
    if (want('S5')) {
      const t = await start('idle', core, {});
      await ensureUsers(t, Math.min(MAX_USERS, Math.max(o.s5Connections, 11_100)));
      await guard(reports.get('S5')!, 'service', () => runS5(t, o, log));
      await stop();
    }
    // ---- phase C: AI router + fake AI
    if (want('S7')) {
      const rep = reports.get('S7')!;
      const fake = new FakeAi(200);
      const aiUrl = await fake.start();
      try {
        const startAi = (): Promise<Target> =>
          start('ai', [...core, 'ai-router'], { 'ai-router': { concurrency: 1000, maxIntakeInFlight: 5000, recovery: { windowMs: 0 } } }, { IM_AI_URL: aiUrl });
        // a fresh service for each further step: the earlier step's pending AI records are abandoned (status 2)
        const restartAi = async (): Promise<Target> => {
          await stop();
          await db.tx([{ sql: 'UPDATE ai_interaction_records SET status = 2 WHERE status = 0', params: [] }]);
          return startAi();
        };
        const t = await startAi();
        await ensureUsers(t, 11_100);
        await ensureS2();
        const s2 = reports.get('S2')!.results.service;
        const rate = firstRate(o, s2?.knee?.rate ?? 1311);
        if (o.startRate) rep.notes.push(`S7 ran at --start-rate ${o.startRate}/s`);
        else if (!s2?.knee) rep.notes.push(`S2 had no passing step in this run: S7 ran at ${rate}/s`);
        await guard(rep, 'service', () => runS7(t, restartAi, o, log, rate, fake, s2));
        if (o.quick) rep.notes.push('quick run: S7 uses the first 200 of the 1,000 S2 groups (2,000 sockets) at the same rate');
        rep.notes.push('ai-router settings for the bench: concurrency 1000 (200 ms answers × the send rate need that many calls in flight), recovery scan off');
        await stop();
      } finally {
        await fake.stop();
      }
    }
  } finally {
    await stop().catch(() => undefined);
    await db.drop().catch((err: unknown) => notes.push(`could not drop ${db.name}: ${(err as Error).message}`));
    rmSync(tmp, { recursive: true, force: true });
    currentDb = null;
    log(`service: stopped, database ${db.name} dropped`);
  }
}

async function runPeer(name: 'bare-ws' | 'socketio', o: Options, reports: Map<string, ScenarioReport>, want: (id: string) => boolean): Promise<void> {
  const ids = ['S1', 'S2', 'S5'].filter(want);
  if (!ids.length) return;
  const nodeArgs = o.profile ? ['--cpu-prof', `--cpu-prof-dir=${join(RESULTS_DIR, 'profiles')}`, `--cpu-prof-name=${name}-${Date.now()}.cpuprofile`] : [];
  let server = await startPeer(name, name === 'bare-ws' ? 'bare-ws.js' : 'socketio.js', nodeArgs);
  let loadgen = new Loadgen();
  log(`${name}: pid ${server.pid} on ${server.baseUrl}`);
  const t: Target = {
    name,
    kind: name === 'bare-ws' ? 'ws' : 'socketio',
    server,
    loadgen,
    roles: rolesFor(() => server, () => loadgen, undefined, () => false),
    setGroups: async (groups) => {
      const r = await fetch(`${server.baseUrl}/bench/groups`, { method: 'PUT', body: JSON.stringify({ groups }) });
      if (r.status !== 204) throw new Error(`${name}: PUT /bench/groups -> ${r.status}`);
    },
  };
  try {
    if (want('S1')) await guard(reports.get('S1')!, name, () => runFanout('S1', t, o, log));
    if (want('S2')) await guard(reports.get('S2')!, name, () => runFanout('S2', t, o, log));
    if (want('S5')) {
      // a fresh peer process, as for the service
      await loadgen.stop();
      await server.stop();
      server = await startPeer(name, name === 'bare-ws' ? 'bare-ws.js' : 'socketio.js', nodeArgs);
      loadgen = new Loadgen();
      const t5: Target = { ...t, server, loadgen };
      await t5.setGroups({ ...s1Groups(), ...s2Groups() });
      await guard(reports.get('S5')!, name, () => runS5(t5, o, log));
    }
  } finally {
    await loadgen.stop();
    await server.stop();
    log(`${name}: stopped`);
  }
}

/** Notes on what a knee means: one the load generator, not the server, may have set (it shares the 2 cores), or one the sweep never got past. */
export function kneeNotes(rep: ScenarioReport): void {
  for (const [name, r] of Object.entries(rep.results)) {
    if (!r?.steps?.length) continue;
    const kneeRate = r.knee?.rate ?? 0;
    const above = r.steps.filter((st) => !st.pass && st.rate > kneeRate).sort((a, b) => a.rate - b.rate)[0];
    if (above && above.loadgen_cores >= 0.85) {
      rep.notes.push(
        `${name}: at the first failing rate (${above.rate}/s) the load generator used ${above.loadgen_cores} of a core (server ${above.server_cores}): this knee is bounded by the load generator sharing the 2 cores, so the server's real ceiling is higher`,
      );
    }
    if (r.knee?.pass && !above && r.knee.rate === Math.max(...r.steps.map((st) => st.rate))) {
      rep.notes.push(`${name}: the sweep's highest step (${r.knee.rate}/s) passed: the knee is above this figure (more steps: --max-steps)`);
    }
  }
}

/** The targets' headline rates and what one unit of them is (S5 and S7 are not rates). */
const TARGET_RATE: Record<string, { rate: number; one: string; many: string }> = {
  S1: { rate: 100_000, one: 'delivery', many: 'deliveries/s' },
  S2: { rate: 5000, one: 'message', many: 'messages/s' },
  S3: { rate: 2000, one: 'send', many: 'sends/s' },
  S4: { rate: 5000, one: 'request', many: 'requests/s' },
  'S6-amqp': { rate: 10_000, one: 'message', many: 'messages/s' },
  'S6-nats': { rate: 10_000, one: 'message', many: 'messages/s' },
};

/**
 * The machine's budget at the service's knee: every process of the mix
 * (service, load generator, PostgreSQL, brokers, harness) costs CPU per
 * message; if the whole mix at this efficiency cannot reach the target on
 * all the machine's cores, no server-side change alone reaches it here.
 */
export function machineBudgetNote(rep: ScenarioReport): void {
  const s = rep.results.service;
  const target = TARGET_RATE[rep.id];
  const k = s?.knee;
  if (!s || !k || target === undefined || s.figure <= 0) return;
  const wall = Math.max(0.001, k.cpu.wallSeconds);
  const cores = Object.fromEntries(Object.entries(k.cpu.cpuSeconds).map(([role, sec]) => [role, sec / wall]));
  const used = Object.values(cores).reduce((a, b) => a + b, 0);
  if (used <= 0) return;
  const nproc = cpus().length;
  const ceiling = Math.round((s.figure * nproc) / used);
  const perUnit = (c: number): string => `${fmt((1e6 * c) / s.figure, 1)} µs`;
  const parts = Object.entries(cores)
    .filter(([, c]) => c >= 0.01)
    .sort((a, b) => b[1] - a[1])
    .map(([role, c]) => `${role} ${perUnit(c)}`)
    .join(', ');
  // What the rest of the mix (load generator, PostgreSQL, brokers) alone allows: the ceiling even for a server that cost nothing.
  const others = used - (cores.server ?? 0);
  const serverFree = others > 0 ? Math.round((s.figure * nproc) / others) : Infinity;
  rep.notes.push(
    `machine budget at the knee: ${perUnit(used)} of CPU per ${target.one} across all processes (${parts}); ` +
      `at this mix ${nproc} fully busy cores carry at most ~${fmt(ceiling)} ${target.many}` +
      (ceiling < target.rate ? `, below the target of ${fmt(target.rate)}: out of reach on this machine unless the whole mix gets cheaper` : '') +
      (Number.isFinite(serverFree)
        ? `; the other processes alone cap it at ~${fmt(serverFree)} ${target.many} even for a server that cost nothing` +
          (serverFree < target.rate ? ' (below the target)' : '')
        : ''),
  );
}

function judge(rep: ScenarioReport, o: Options): void {
  kneeNotes(rep);
  machineBudgetNote(rep);
  const s = rep.results.service;
  addRatios(rep);
  if (!s || s.error) {
    rep.met = s ? false : null;
    return;
  }
  switch (rep.id) {
    case 'S1': {
      const rb = rep.ratios?.['bare-ws']?.figure;
      const rs = rep.ratios?.socketio?.figure;
      rep.met = s.figure >= 100_000 && (rb === undefined || (rb ?? 0) >= 0.5) && (rs === undefined || (rs ?? 0) >= 2);
      break;
    }
    case 'S2':
      rep.met = s.figure >= 5000;
      break;
    case 'S3':
      rep.met = s.figure >= 2000;
      break;
    case 'S4':
      rep.met = s.figure >= 5000;
      break;
    case 'S5':
      rep.met = Number(s.extra?.connections ?? 0) >= 15_000 && s.figure <= 20;
      if (o.s5Connections < 15_000) {
        rep.met = null;
        rep.met_note = `(${o.s5Connections.toLocaleString('en-US')} connections only: needs a full run)`;
        rep.notes.push(`${o.s5Connections} connections instead of 15,000, so the target is not judged`);
      }
      break;
    case 'S6-amqp':
    case 'S6-nats':
      rep.met = s.figure >= 10_000;
      break;
    case 'S7':
      rep.met = Boolean(s.extra?.all_forwarded) && s.extra?.send_p99_within_20pct === true && Boolean(s.knee?.pass);
      break;
  }
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const want = (id: string): boolean => !o.only || o.only.has(id.toUpperCase()) || (id.startsWith('S6') && o.only.has('S6'));
  const notes: string[] = [];
  const pgv = await postgresVersion();
  const machine = machineInfo(pgv);
  log(`machine: ${machine.nproc} × ${machine.cpuModel}, ${machine.memoryGiB} GiB, node ${machine.node}, PostgreSQL ${pgv}, fd ${machine.fdLimit}`);
  if (fdSoftLimit() < 4096) notes.push(`open-files limit ${fdSoftLimit()} is low: S2/S5 need ~11,000+ sockets per side (raise ulimit -n)`);
  if (o.quick) {
    notes.push(
      `quick run: ${o.stepMs} ms steps, at most ${o.maxSteps} steps per sweep (same start rates as a full run), S4 table ${o.s4Rows.toLocaleString('en-US')} rows, S5 ${o.s5Connections.toLocaleString('en-US')} connections: knees are coarser than a full run's`,
    );
  }
  const reports = new Map(baseReports(o).map((r) => [r.id, r]));
  mkdirSync(RESULTS_DIR, { recursive: true });
  if (o.profile) {
    mkdirSync(join(RESULTS_DIR, 'profiles'), { recursive: true });
    Loadgen.extraExecArgv = ['--cpu-prof', `--cpu-prof-dir=${join(RESULTS_DIR, 'profiles')}`];
  }
  const started = new Date();
  const ticks0 = machineTicks();
  if (o.targets.has('service')) await runService(o, reports, want, notes);
  if (o.targets.has('bare-ws')) await runPeer('bare-ws', o, reports, want);
  if (o.targets.has('socketio')) await runPeer('socketio', o, reports, want);
  const scenarios = [...reports.values()].filter((r) => want(r.id) || (r.id.startsWith('S6') && want('S6')));
  for (const r of scenarios) judge(r, o);
  for (const r of scenarios) {
    if (!['S1', 'S2', 'S5'].includes(r.id)) r.notes.push('peers not applicable (no storage, HTTP API or broker ingress in a bare fan-out server)');
  }
  notes.push(
    'Latency = intended send time (open-loop schedule) -> receipt on every member socket, all deliveries recorded (1 % buckets); one process-independent monotonic clock (CLOCK_MONOTONIC) for senders and receivers.',
    'noise = machine busy time (/proc/stat) not used by the server, the load generator, the harness, PostgreSQL (bench database backends and shared background processes) or, in S6, the brokers; shown as a share of all cores.',
  );
  if (o.profile) notes.push(`CPU profiles (node --cpu-prof) in bench/results/profiles/`);
  const report: BenchReport = {
    date: started.toISOString(),
    mode: o.quick ? 'quick' : 'full',
    duration_s: round((performance.now() - t0) / 1000, 1),
    machine,
    steal_share: round((machineTicks().steal - ticks0.steal) / CLK_TCK / Math.max(0.001, ((Date.now() - started.getTime()) / 1000) * machine.nproc), 3),
    settings: { storage: o.storage, stepMs: o.stepMs, drainMs: o.drainMs, maxSteps: o.maxSteps, s4Rows: o.s4Rows, s5Connections: o.s5Connections, factor: 1.25 },
    scenarios,
    notes,
  };
  const files = writeReport(RESULTS_DIR, report);
  log(`report: ${files.json}\n${files.md}`);
}

/** The bench database of the running service phase, dropped on Ctrl-C too. */
let currentDb: BenchDb | null = null;
let currentTmp: string | null = null;
let exiting = false;
const bail = (why: string): void => {
  if (exiting) return;
  exiting = true;
  process.stderr.write(`bench: ${why}: stopping children\n`);
  killAllChildren();
  if (currentTmp) rmSync(currentTmp, { recursive: true, force: true });
  const db = currentDb;
  if (db) void db.drop().finally(() => process.exit(1));
  else process.exit(1);
  setTimeout(() => process.exit(1), 5000).unref();
};
process.on('SIGINT', () => bail('SIGINT'));
process.on('SIGTERM', () => bail('SIGTERM'));

main().then(
  () => {
    killAllChildren();
    process.exit(0);
  },
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof UsageError ? err.message : ((err as Error).stack ?? String(err))}\n`);
    killAllChildren();
    process.exit(1);
  },
);
