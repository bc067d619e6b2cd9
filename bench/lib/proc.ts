import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';

/** Clock ticks per second of /proc CPU counters (CLK_TCK, 100 on Linux x86). */
export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** Busy and total jiffies of the whole machine (/proc/stat first line). */
export function machineTicks(): { busy: number; total: number; steal: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice (guest is already inside user)
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
  const busy = user + nice + system + irq + softirq + steal;
  // steal: time the hypervisor ran something else while this machine's vCPUs wanted to run
  return { busy, total: busy + idle + iowait, steal };
}

/** utime+stime of one process in ticks, or null when it is gone. */
export function processTicks(pid: number): number | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); utime = field 14, stime = field 15
    return Number(rest[11]) + Number(rest[12]);
  } catch {
    return null;
  }
}

/**
 * Nanoseconds the process has spent runnable but waiting for a CPU (second
 * field of /proc/<pid>/schedstat: the run queue's delay), or null when it is
 * gone or the kernel does not report it.
 */
export function processRunQueueWaitNs(pid: number): number | null {
  try {
    const v = Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]);
    return Number.isFinite(v) ? v : null;
  } catch {
    return null;
  }
}

/** Resident set size of a process in bytes (VmRSS), or null. */
export function processRss(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

export interface ProcGroups {
  /** pid lists by role; CPU of each role is summed. */
  [role: string]: number[];
}

/** Every pid whose comm matches, with its command line. */
export function listProcesses(): { pid: number; comm: string; cmdline: string }[] {
  const out: { pid: number; comm: string; cmdline: string }[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const comm = readFileSync(`/proc/${d}/comm`, 'utf8').trim();
      const cmdline = readFileSync(`/proc/${d}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      out.push({ pid: Number(d), comm, cmdline });
    } catch {
      /* gone */
    }
  }
  return out;
}

/** A CPU snapshot: machine busy ticks + ticks per role (roles resolved by the caller's function at each snapshot). */
export interface CpuSnapshot {
  at: number;
  busy: number;
  total: number;
  steal: number;
  roles: Record<string, number>;
  /** ticks (and run-queue wait, ns) per pid, so processes that exit between snapshots are not counted as negative */
  perPid: Map<number, { role: string; ticks: number; waitNs: number | null }>;
}

export type RoleResolver = () => Record<string, number[]>;

export function cpuSnapshot(resolve: RoleResolver): CpuSnapshot {
  const m = machineTicks();
  const perPid = new Map<number, { role: string; ticks: number; waitNs: number | null }>();
  const roles: Record<string, number> = {};
  for (const [role, pids] of Object.entries(resolve())) {
    roles[role] = 0;
    for (const pid of pids) {
      const t = processTicks(pid);
      if (t === null) continue;
      perPid.set(pid, { role, ticks: t, waitNs: processRunQueueWaitNs(pid) });
      roles[role] += t;
    }
  }
  return { at: performance.now(), busy: m.busy, total: m.total, steal: m.steal, roles, perPid };
}

export interface CpuUsage {
  wallSeconds: number;
  /** CPU seconds per role (server, loadgen, postgres, broker, harness). */
  cpuSeconds: Record<string, number>;
  /** Busy CPU seconds of the whole machine. */
  machineBusySeconds: number;
  /** Busy seconds not used by any listed role: other processes on the machine (noise). */
  noiseSeconds: number;
  /** noise as a fraction of the machine's capacity (nproc cores) over the interval. */
  noiseShare: number;
  /**
   * CPU steal (counted in the machine's busy time, so mostly inside the noise) as a fraction of the machine's capacity: on a
   * virtual machine, time its vCPUs were ready to run but the host ran
   * something else. Work is delayed by it, and a busy host makes every figure
   * worse without any process here using more CPU.
   */
  stealShare: number;
  /**
   * Milliseconds per second of wall time that each role's processes spent
   * runnable but waiting for a CPU (/proc/<pid>/schedstat), summed over the
   * role's processes. Latency the CPU figures do not show: a frame that
   * waits 5 ms for the load generator, the service and a PostgreSQL backend
   * in turn is 15 ms late with no process busy.
   */
  runQueueWaitMsPerS: Record<string, number>;
}

/** CPU used between two snapshots; a pid present in both counts its delta, a new pid counts fully. */
export function cpuBetween(a: CpuSnapshot, b: CpuSnapshot): CpuUsage {
  const perRole: Record<string, number> = {};
  const waitNs: Record<string, number> = {};
  for (const [pid, v] of b.perPid) {
    const before = a.perPid.get(pid);
    const d = before ? v.ticks - before.ticks : v.ticks;
    perRole[v.role] = (perRole[v.role] ?? 0) + Math.max(0, d);
    // a process that started between the snapshots counts from its start
    if (v.waitNs !== null) waitNs[v.role] = (waitNs[v.role] ?? 0) + Math.max(0, v.waitNs - (before?.waitNs ?? 0));
  }
  const busy = b.busy - a.busy;
  const attributed = Object.values(perRole).reduce((s, x) => s + x, 0);
  const wallSeconds = (b.at - a.at) / 1000;
  const cpuSeconds: Record<string, number> = {};
  for (const r of Object.keys(b.roles)) cpuSeconds[r] = round((perRole[r] ?? 0) / CLK_TCK, 3);
  const noise = Math.max(0, busy - attributed) / CLK_TCK;
  return {
    wallSeconds: round(wallSeconds, 3),
    cpuSeconds,
    machineBusySeconds: round(busy / CLK_TCK, 3),
    noiseSeconds: round(noise, 3),
    noiseShare: round(noise / Math.max(0.001, wallSeconds * cpus().length), 3),
    stealShare: round((b.steal - a.steal) / CLK_TCK / Math.max(0.001, wallSeconds * cpus().length), 3),
    runQueueWaitMsPerS: Object.fromEntries(Object.keys(b.roles).map((r) => [r, round((waitNs[r] ?? 0) / 1e6 / Math.max(0.001, wallSeconds), 1)])),
  };
}

export function round(x: number, d = 2): number {
  const k = 10 ** d;
  return Math.round(x * k) / k;
}

export interface MachineInfo {
  nproc: number;
  cpuModel: string;
  memoryGiB: number;
  node: string;
  postgres: string;
  kernel: string;
  fdLimit: string;
}

export function machineInfo(postgresVersion: string): MachineInfo {
  let kernel = '';
  try {
    kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  } catch {
    /* not linux */
  }
  let fdLimit = '';
  try {
    const m = /Max open files\s+(\S+)\s+(\S+)/.exec(readFileSync('/proc/self/limits', 'utf8'));
    fdLimit = m ? `${m[1]} soft / ${m[2]} hard` : '';
  } catch {
    /* not linux */
  }
  return {
    nproc: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryGiB: round(totalmem() / 2 ** 30, 1),
    node: process.version,
    postgres: postgresVersion,
    kernel,
    fdLimit,
  };
}

/** Soft limit of open files of this process. */
export function fdSoftLimit(): number {
  try {
    const m = /Max open files\s+(\S+)/.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m && m[1] !== 'unlimited' ? Number(m[1]) : 1 << 20;
  } catch {
    return 1024;
  }
}
