import { Histogram, type LatencySummary } from '../lib/hist.js';
import { CLK_TCK, cpuBetween, cpuSnapshot, processTicks, round, type CpuSnapshot, type CpuUsage, type RoleResolver } from '../lib/proc.js';
import type { Loadgen, ServerProc } from '../lib/children.js';
import type { AdminApi } from '../lib/admin.js';
import type { BenchDb } from '../lib/bench-db.js';
import type { ClientKind, StepResult } from '../lib/protocol.js';

export type TargetName = 'service' | 'bare-ws' | 'socketio';

export interface Options {
  quick: boolean;
  profile: boolean;
  /** send window per sweep step */
  stepMs: number;
  /** how long to wait for the last deliveries after a step */
  drainMs: number;
  maxSteps: number;
  /** First rate of every sweep instead of the scenario's own (`--start-rate`: A/B runs at one fixed rate with `--max-steps 1`). */
  startRate: number | null;
  s4Rows: number;
  s5Connections: number;
  only: Set<string> | null;
  targets: Set<TargetName>;
  storage: 'postgres' | 'sqlite';
}

/** The server a scenario runs against, with what the harness knows about it. */
export interface Target {
  name: TargetName;
  kind: ClientKind;
  server: ServerProc;
  loadgen: Loadgen;
  /** JWT secret (service only) */
  secret?: string;
  admin?: AdminApi;
  /** the service's database, for seeding */
  db?: BenchDb;
  /** Make these groups exist with these members (service: HTTP API; peers: control endpoint). */
  setGroups(groups: Record<string, string[]>): Promise<void>;
  /** pids by role for CPU accounting */
  roles: RoleResolver;
}

export interface StepRecord {
  rate: number;
  sent: number;
  achieved_rate: number;
  /** deliveries (or successful requests) per second of send window */
  deliveries_per_s: number;
  delivery_pct: number;
  latency: LatencySummary;
  ack_latency?: LatencySummary;
  pass: boolean;
  why_not?: string;
  errors: Record<string, number>;
  first_error?: string;
  duplicates: number;
  late: number;
  ai_replies?: number;
  cpu: CpuUsage;
  server_cores: number;
  /** deliveries per CPU-second of the server process: comparable across busy and idle machines */
  deliveries_per_server_cpu_s: number;
  loadgen_cores: number;
  loadgen_lag_p99_ms: number;
  loadgen_lag_max_ms: number;
}

export interface TargetResult {
  /** the headline figure (e.g. deliveries/s at the knee) */
  figure: number;
  unit: string;
  /** efficiency figure next to the raw rate */
  per_server_cpu_s?: number;
  knee?: StepRecord | null;
  steps?: StepRecord[];
  extra?: Record<string, unknown>;
  error?: string;
}

export interface ScenarioReport {
  id: string;
  title: string;
  target_text: string;
  /** ours vs target: true/false, or null when not measured */
  met: boolean | null;
  /** why `met` is null */
  met_note?: string;
  results: Partial<Record<TargetName, TargetResult>>;
  /** ours / peer, for the headline figure and per server CPU-second */
  ratios?: Partial<Record<'bare-ws' | 'socketio', { figure: number | null; per_cpu: number | null }>>;
  notes: string[];
}

export function snapshot(t: Target): CpuSnapshot {
  return cpuSnapshot(t.roles);
}

export function stepRecord(r: StepResult, cpu: CpuUsage, p99LimitMs: number, wantAcks: boolean): StepRecord {
  const lat = new Histogram();
  lat.merge(r.latency);
  const ack = new Histogram();
  ack.merge(r.ackLatency);
  const latency = lat.summary();
  const delivery_pct = r.expectedDeliveries ? round((100 * r.deliveries) / r.expectedDeliveries, 3) : 0;
  const reasons: string[] = [];
  if (r.deliveries < r.expectedDeliveries) reasons.push(`delivery ${delivery_pct} %`);
  if (wantAcks && r.acks < r.sent) reasons.push(`acks ${r.acks}/${r.sent}`);
  if (latency.p99_ms > p99LimitMs) reasons.push(`p99 ${latency.p99_ms} ms > ${p99LimitMs} ms`);
  if (r.duplicates > 0) reasons.push(`${r.duplicates} duplicate deliveries`);
  const errCount = Object.values(r.errors).reduce((s, x) => s + x, 0);
  if (errCount > 0) reasons.push(`${errCount} errors`);
  const serverCpu = cpu.cpuSeconds.server ?? 0;
  const windowS = r.durationMs / 1000;
  return {
    rate: r.rate,
    sent: r.sent,
    achieved_rate: r.achievedRate,
    deliveries_per_s: Math.round(r.deliveries / windowS),
    delivery_pct,
    latency,
    ack_latency: wantAcks ? ack.summary() : undefined,
    pass: reasons.length === 0,
    why_not: reasons.length ? reasons.join('; ') : undefined,
    errors: r.errors,
    first_error: r.firstError,
    duplicates: r.duplicates,
    late: r.late,
    ai_replies: r.aiReplies || undefined,
    cpu,
    server_cores: round(serverCpu / Math.max(0.001, cpu.wallSeconds), 2),
    deliveries_per_server_cpu_s: serverCpu > 0 ? Math.round(r.deliveries / serverCpu) : 0,
    loadgen_cores: round((cpu.cpuSeconds.loadgen ?? 0) / Math.max(0.001, cpu.wallSeconds), 2),
    loadgen_lag_p99_ms: r.loadgenLagP99Ms,
    loadgen_lag_max_ms: r.loadgenLagMaxMs,
  };
}

/**
 * Open-loop sweep: start at `start` and go up ×1.25 per step while steps
 * pass. When a step fails before any has passed, halve the rate until one
 * passes, then climb again ×1.25 from there. Bounded by `maxSteps`. The knee
 * is the highest passing rate.
 */
export async function sweep(opts: {
  target: Target;
  start: number;
  maxSteps: number;
  run: (rate: number) => Promise<StepResult>;
  p99LimitMs: number;
  wantAcks: boolean;
  log: (s: string) => void;
  label: string;
}): Promise<{ steps: StepRecord[]; knee: StepRecord | null }> {
  const steps: StepRecord[] = [];
  let rate = opts.start;
  let knee: StepRecord | null = null;
  let lowestFail = Infinity;
  for (let i = 0; i < opts.maxSteps; i++) {
    await waitServerIdle(opts.target, 20_000);
    const a = snapshot(opts.target);
    const r = await opts.run(Math.round(rate));
    const b = snapshot(opts.target);
    const rec = stepRecord(r, cpuBetween(a, b), opts.p99LimitMs, opts.wantAcks);
    steps.push(rec);
    opts.log(
      `  ${opts.label} rate ${rec.rate}/s: ${rec.deliveries_per_s} deliveries/s, p99 ${rec.latency.p99_ms} ms, ` +
        `delivered ${rec.delivery_pct} %, server ${rec.server_cores} cores, loadgen ${rec.loadgen_cores}, noise ${Math.round(rec.cpu.noiseShare * 100)} % (steal ${Math.round(rec.cpu.stealShare * 100)} %), ` +
        `waiting for a CPU: server ${rec.cpu.runQueueWaitMsPerS.server ?? 0} ms/s, loadgen ${rec.cpu.runQueueWaitMsPerS.loadgen ?? 0} ms/s ` +
        (rec.pass ? 'PASS' : `FAIL (${rec.why_not})`),
    );
    if (rec.pass) {
      if (!knee || rec.rate > knee.rate) knee = rec;
      rate *= 1.25;
      if (rate >= lowestFail) break; // the next step up already failed
    } else {
      lowestFail = Math.min(lowestFail, rec.rate);
      if (knee) break;
      rate /= 2;
    }
  }
  return { steps, knee };
}

/**
 * Wait (bounded) until the server process uses < 15 % of a core over 250 ms:
 * the backlog of an overloaded step (queued frames, abandoned HTTP requests)
 * must not spill into the next step's figures.
 */
export async function waitServerIdle(t: Target, maxMs: number): Promise<void> {
  const end = performance.now() + maxMs;
  let prev = processTicks(t.server.pid);
  while (prev !== null && performance.now() < end) {
    await new Promise((r) => setTimeout(r, 250));
    const now = processTicks(t.server.pid);
    if (now === null) return;
    if ((now - prev) / CLK_TCK / 0.25 < 0.15) return;
    prev = now;
  }
}

/** The best throughput seen in any step, passing or not (to show what a failing sweep reached). */
/**
 * A rate sweep's result: the figure (the knee's rate unless given), deliveries
 * per server CPU-second at the knee (or at the best step when none passed),
 * and every step.
 */
export function sweepResult(
  sw: { steps: StepRecord[]; knee: StepRecord | null },
  unit: string,
  more: { figure?: number; extra?: Record<string, unknown> } = {},
): TargetResult {
  return {
    figure: more.figure ?? sw.knee?.rate ?? 0,
    unit,
    per_server_cpu_s: (sw.knee ?? bestStep(sw.steps))?.deliveries_per_server_cpu_s,
    knee: sw.knee,
    steps: sw.steps,
    ...(more.extra ? { extra: more.extra } : {}),
  };
}

export function bestStep(steps: StepRecord[] | undefined): StepRecord | null {
  if (!steps?.length) return null;
  return steps.reduce((b, s) => (s.deliveries_per_s > b.deliveries_per_s ? s : b));
}

export function ratio(a: number | undefined | null, b: number | undefined | null): number | null {
  if (!a || !b) return null;
  return round(a / b, 2);
}

/** Fill `ratios` of a report from the service's and peers' results. */
export function addRatios(rep: ScenarioReport): void {
  const ours = rep.results.service;
  if (!ours) return;
  rep.ratios = {};
  for (const peer of ['bare-ws', 'socketio'] as const) {
    const p = rep.results[peer];
    if (!p) continue;
    rep.ratios[peer] = { figure: ratio(ours.figure, p.figure), per_cpu: ratio(ours.per_server_cpu_s, p.per_server_cpu_s) };
  }
}

export type Log = (s: string) => void;

/** A sweep's first rate: `--start-rate` when given, else the scenario's. */
export function firstRate(o: Options, scenarioStart: number): number {
  return o.startRate ?? scenarioStart;
}
